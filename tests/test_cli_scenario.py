"""Scenario files: the built-in article, the examples, --scale, and located errors."""

from __future__ import annotations

import glob
import os

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from vmmem.cli.main import EXIT_USAGE, cli
from vmmem.lab.scenario import (
    ARTICLE_SCENARIO_TOML,
    MB,
    ScenarioError,
    article_scenario,
    load_scenario,
    scale_size,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "*.toml")))

GOOD_VM = """
[host]
balancer_start_delay = 0
memory = "1400MB"
[[vm]]
name = "vm1"
startup = "512MB"
"""


def test_article_is_the_domain_scenario():
    s = article_scenario()
    assert s.host_memory == 1400 * MB and s.host_reserve == 0
    assert [v.name for v in s.vms] == ["vm1", "vm2", "vm3", "vm4"]
    for v in s.vms:
        assert (v.startup, v.minimum, v.maximum, v.buffer) == (512 * MB, 32 * MB, 2048 * MB, 20)
        assert v.idle_target == 300 * MB  # 250 MB + 20 %, the article's "about 300 MB"
    assert [e.action for e in s.events] == ["start", "idle", "restart-vms", "settle"]


def test_examples_hold_the_article_and_two_more():
    names = {os.path.basename(p) for p in EXAMPLES}
    assert {"article.toml", "mixed-priority.toml", "static-and-dynamic.toml"} <= names
    with open(os.path.join(ROOT, "examples", "article.toml"), encoding="utf-8") as f:
        assert f.read() == ARTICLE_SCENARIO_TOML
    for path in EXAMPLES:
        s = load_scenario(path)
        assert s.vms and s.events
    mixed = load_scenario(os.path.join(ROOT, "examples", "mixed-priority.toml"))
    assert len({v.priority for v in mixed.vms}) >= 3
    static = load_scenario(os.path.join(ROOT, "examples", "static-and-dynamic.toml"))
    assert {v.dynamic for v in static.vms} == {True, False}


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
@pytest.mark.parametrize("factor", [2, 4, 8, 16])
def test_scaled_sizes_follow_hyperv_rules(path, factor):
    s = load_scenario(path).scaled(factor)
    assert s.scale == factor
    assert s.host_memory % (2 * MB) == 0
    for v in s.vms:
        assert v.startup % (2 * MB) == 0 and v.startup >= 32 * MB
        if v.minimum is not None:
            assert v.minimum % (2 * MB) == 0 and 32 * MB <= v.minimum <= v.startup
        if v.maximum is not None:
            assert v.maximum % (2 * MB) == 0 and v.maximum >= v.startup


@given(value_mb=st.integers(2, 1 << 20), factor=st.floats(1, 64))
def test_scale_size_rounds_to_2mb_and_keeps_the_floor(value_mb, factor):
    got = scale_size(value_mb * MB, factor, floor=32 * MB)
    assert got % (2 * MB) == 0 and got >= 32 * MB
    if value_mb / factor >= 33:
        assert abs(got - value_mb * MB / factor) <= MB


def test_article_at_scale_8_keeps_the_ratio():
    s = article_scenario().scaled(8)
    assert s.host_memory == 176 * MB
    assert all(v.startup == 64 * MB and v.minimum == 32 * MB for v in s.vms)


def write_output(tmp_path, text, name="s.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


BAD = [
    ('startup = "511MB"', "vm[0].startup", "multiple of 2 MB"),
    ("startup = 512", "vm[0].startup", "bare number is bytes"),
    ('startup = "16MB"', "vm[0].startup", "at least 32 MB"),
    ('startup = "big"', "vm[0].startup", 'such as "512MB"'),
    ('startup = "512MB"\nminimum = "1024MB"', "vm[0].minimum", "at most Startup RAM"),
    ('startup = "512MB"\nmaximum = "256MB"', "vm[0].maximum", "at least 512 MB"),
    ('startup = "512MB"\nbuffer = 3', "vm[0].buffer", "from 5 to 2000"),
    ('startup = "512MB"\npriority = 101', "vm[0].priority", "from 0 to 100"),
    ('startup = "512MB"\ndynamic = false\nminimum = "256MB"', "vm[0].minimum", "static VM"),
    ('startup = "512MB"\nmemory = "1GB"', "vm[0].memory", "unknown key"),
    (
        'startup = "512MB"\n[vm.workload]\nidle_demand = "1GB"',
        "vm[0].workload.idle_demand",
        "at most Startup RAM",
    ),
    (
        'startup = "512MB"\n[vm.workload.boot]\nhot_fraction = "x"',
        "vm[0].workload.boot.hot_fraction",
        "a number",
    ),
]


@pytest.mark.parametrize("vm_body,key,expected", BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_vm_settings_are_located(tmp_path, vm_body, key, expected):
    path = write_output(tmp_path, f'[host]\nmemory = "1400MB"\n[[vm]]\nname = "vm1"\n{vm_body}\n')
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    msg = str(err.value)
    assert msg.startswith(path + ": ") and f": {key}: " in msg and expected in msg, msg
    assert err.value.key == key


BAD_WHOLE = [
    ('[[vm]]\nname = "a"\nstartup = "512MB"\n', "host", "missing"),
    (
        '[host]\nmemory = "1401MB"\n' + GOOD_VM.split("[[vm]]")[1].join(["[[vm]]", ""]),
        "host.memory",
        "multiple of 2 MB",
    ),
    (
        '[host]\nmemory = "1400MB"\nreserve = "2000MB"\n[[vm]]\nname="a"\nstartup="512MB"\n',
        "host.reserve",
        "less than host.memory",
    ),
    ('[host]\nmemory = "1400MB"\n', "vm", "at least one [[vm]]"),
    (GOOD_VM + '[[vm]]\nname = "vm1"\nstartup = "512MB"\n', "vm", "unique"),
    (GOOD_VM + '[[event]]\naction = "reboot"\n', "event[0].action", "expected one of"),
    (GOOD_VM + '[[event]]\naction = "start"\nvms = ["vm9"]\n', "event[0].vms", "unknown VM"),
    (GOOD_VM + '[[event]]\naction = "restart"\nvms = ["vm1"]\n', "event[0].vms", "not running yet"),
    (GOOD_VM + '[[event]]\naction = "idle"\n', "event[0].seconds", "missing"),
    (GOOD_VM + '[[event]]\naction = "idle"\nseconds = -1\n', "event[0].seconds", ">= 0"),
    (GOOD_VM + '[[event]]\naction = "restart-host"\n', "event[0].action", "no VM is running"),
]


@pytest.mark.parametrize("text,key,expected", BAD_WHOLE, ids=[b[1] + ":" + b[2] for b in BAD_WHOLE])
def test_bad_scenarios_are_located(tmp_path, text, key, expected):
    path = write_output(tmp_path, text)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    msg = str(err.value)
    assert msg.startswith(path + ": ") and f": {key}: " in msg and expected in msg, msg


def test_not_toml_and_missing_file(tmp_path):
    path = write_output(tmp_path, '[host]\nmemory = "1400MB\n')
    with pytest.raises(ScenarioError, match=r"not valid TOML: .*line 2"):
        load_scenario(path)
    with pytest.raises(ScenarioError, match="no such file"):
        load_scenario(str(tmp_path / "nope.toml"))


def test_count_makes_numbered_vms_and_default_events(tmp_path):
    path = write_output(tmp_path, GOOD_VM.replace('name = "vm1"', 'name = "web"\ncount = 3'))
    s = load_scenario(path)
    assert [v.name for v in s.vms] == ["web1", "web2", "web3"]
    assert [e.action for e in s.events] == ["start", "idle", "restart-vms", "settle"]
    assert s.events[0].vms == ("web1", "web2", "web3")


def test_cli_scenario_error_exit_code_and_message(tmp_path):
    path = write_output(tmp_path, GOOD_VM.replace('"512MB"', '"511MB"'))
    r = CliRunner().invoke(cli, ["scenario", path])
    assert r.exit_code == EXIT_USAGE
    assert f"{path}: vm[0].startup: " in r.stderr and "multiple of 2 MB" in r.stderr


def test_cli_scenario_shows_and_exports(tmp_path):
    r = CliRunner().invoke(cli, ["scenario", "--scale", "8"])
    assert r.exit_code == 0, r.output
    assert "176 MB" in r.stdout and "64 MB" in r.stdout
    r = CliRunner().invoke(cli, ["scenario", "--toml"])
    assert r.exit_code == 0 and r.stdout == ARTICLE_SCENARIO_TOML
    r = CliRunner().invoke(cli, ["scenario", "--scale", "0.5"])
    assert r.exit_code == EXIT_USAGE


LAYER_BAD = [
    ('name = "a/b"\nstartup = "512MB"', "vm[0]", "cannot be used"),
    (
        'name = "x"\nstartup = "512MB"\n[vm.workload.boot]\nhot_fraction = 2.0',
        "vm[0].workload.boot",
        "hot_fraction",
    ),
    (
        'name = "x"\nstartup = "512MB"\n[vm.workload.boot]\nchunk_pages = 0',
        "vm[0].workload.boot",
        "chunk_pages",
    ),
]


@pytest.mark.parametrize("vm_body,key,expected", LAYER_BAD, ids=[b[2] for b in LAYER_BAD])
def test_the_hyperv_layers_own_checks_run_at_load_time(tmp_path, vm_body, key, expected):
    path = write_output(tmp_path, f'[host]\nmemory = "1400MB"\n[[vm]]\n{vm_body}\n')
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert str(err.value).startswith(f"{path}: {key}: ") and expected in str(err.value)


def test_scenario_shows_the_boot_the_disk_and_the_host_reboot_actions(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        """
[host]
balancer_start_delay = 0
memory = "1400MB"
[[vm]]
name = "db"
startup = "512MB"
generation = 1
maximum = "1TB"
automatic_stop_action = "ShutDown"
automatic_start_action = "Start"
automatic_start_delay = 30
vhd_path = "/srv/vhds"
[vm.workload]
guest = "debian-12"
guest_ips = 3e9
[[event]]
action = "start"
[[event]]
action = "reboot-host"
"""
    )
    r = CliRunner().invoke(cli, ["scenario", str(path)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert (
        "db: recorded guest debian-12 at 3e+09 instructions/s; virtual disk in /srv/vhds; at a "
        "host reboot ShutDown, then Start after 30 s; generation 1" in r.stdout
    )
    assert "reboot the host (each VM's automatic stop and start actions)" in r.stdout
