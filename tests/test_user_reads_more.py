"""What the user reads, continued: a host reboot's failed starts (outcome and exit code), the
top-level help, `--guest synthetic-boot`, the reboot plan's figures and whole-second stagger
(and `start_delay_step` to write it), the run table's labels and states, the plot, the
table at 80 columns, the final state after an interrupt, and the README's library example."""

from __future__ import annotations

import io
import json
import os
import tomllib

import pytest
from click.testing import CliRunner
from rich.console import Console

from vmmem.cli import render
from vmmem.cli.experiments import apply_guest_options
from vmmem.cli.main import EXIT_VMS_FAILED, cli
from vmmem.lab.plan import plan_scenario
from vmmem.lab.results import RunResult
from vmmem.lab.scenario import ScenarioError, article_scenario, parse_scenario
from vmmem.sizes import MB

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# The article's four VMs shut down by a host reboot and started from Off together: at 1/8
# size two start and two fail ("Not enough memory in the system to start the virtual machine").
REBOOT = """
name = "article-reboot"
[host]
memory = "1400MB"
balancer_interval = 0.05
[[vm]]
name = "vm"
count = 4
startup = "512MB"
minimum = "32MB"
maximum = "2048MB"
automatic_stop_action = "ShutDown"
%(extra)s
[vm.workload]
idle_demand = "250MB"
boot_seconds = 1.6
[vm.workload.idle]
touch_interval = 0.05
[[event]]
action = "start"
[[event]]
action = "reboot-host"
"""


def reboot_scenario(extra: str = ""):
    return parse_scenario(tomllib.loads(REBOOT % {"extra": extra}))


def render_text(fn, *args, width: int = 120, **kwargs) -> str:
    out = io.StringIO()
    fn(Console(width=width, file=out, highlight=False, color_system=None), *args, **kwargs)
    return out.getvalue()


# --- a host reboot that cannot start every VM -------------------------------------------------


def test_a_reboot_with_failed_starts_is_its_own_outcome(disk_dir, monkeypatch):
    """The run is complete (every event played and measured) but two VMs are down: outcome
    vms_failed, exit code 4 (not 0, which would hide it; not 1, a failure of the tool); a
    comparison goes on past it and says the same."""
    from vmmem.lab.compare import compare_locations

    monkeypatch.chdir(disk_dir)
    s = reboot_scenario().scaled(8)
    cmp = compare_locations(s, [str(disk_dir)])
    # No Smart Paging to avoid, so the baseline is the same host: its starts fail too, and
    # the comparison still goes on to the folder.
    assert cmp.baseline is not None and cmp.baseline.outcome == "vms_failed"
    run = cmp.runs[str(disk_dir)]
    assert run.outcome == "vms_failed" and run.error is None
    assert run.failed_starts() == ["vm3", "vm4"]
    assert cmp.outcome == "vms_failed"
    assert "vm3, vm4 failed" in run.verdict()
    (disk_dir / "r.toml").write_text(REBOOT % {"extra": ""})
    r = CliRunner().invoke(cli, ["run", "r.toml", "--scale", "8", "-q"])
    assert r.exit_code == EXIT_VMS_FAILED == 4, r.output


def test_exit_code_4_is_documented_where_the_others_are():
    help_text = CliRunner().invoke(cli, ["--help"]).output
    assert "  4 " in help_text and "vms_failed" in help_text
    with open(os.path.join(ROOT, "docs", "CLI.md"), encoding="utf-8") as f:
        doc = f.read()
    assert "| 4 |" in doc and "`vms_failed`" in doc
    with open(os.path.join(ROOT, "docs", "json-schema.json"), encoding="utf-8") as f:
        assert "vms_failed" in f.read()


# --- the top-level help -----------------------------------------------------------------------


def test_top_level_help_teaches_what_the_commands_do_now():
    text = CliRunner().invoke(cli, ["--help"]).output
    assert "reboot storm" not in text  # the article's storm is a restart of the VMs
    assert "will a host restart need Smart Paging" not in text
    assert "restart storm" in text and "host reboot" in text
    start_here = text.split("Start here:")[1].split("Options:")[0]
    for command in ("plan", "disks", "run", "compare", "guests", "scenario", "show", "clean"):
        assert f"vmmem {command}" in start_here, command


# --- --guest NAME takes every name `vmmem guests` lists ----------------------------------------


def test_every_listed_guest_is_accepted_by_guest():
    r = CliRunner().invoke(cli, ["guests", "--json"])
    names = [g["name"] for g in json.loads(r.output)["guests"]]
    assert "synthetic-boot" in names
    s = article_scenario().scaled(8)
    for name in names:
        apply_guest_options(s, name, None, None)  # raises CliFailure if refused


def test_guest_synthetic_boot_replaces_a_scenarios_recorded_guest():
    s = article_scenario().scaled(8).with_guest("debian-12")
    out = apply_guest_options(s, "synthetic-boot", None, None)
    assert all(v.workload.guest is None for v in out.vms)
    r = CliRunner().invoke(cli, ["run", "--guest", "synthetic-boot", "--guest-ips", "3e9"])
    assert r.exit_code == 2 and "--guest-ips is for a recorded guest" in r.output
    # A scenario file may name it too.
    s2 = parse_scenario(
        tomllib.loads(
            REBOOT.replace("[vm.workload]", "[vm.workload]\nguest = 'synthetic-boot'")
            % {"extra": ""}
        )
    )
    assert all(v.workload.guest is None for v in s2.vms)


# --- the reboot plan ---------------------------------------------------------------------------


def test_the_reboot_plan_says_what_the_starts_need():
    p = plan_scenario(reboot_scenario().scaled(8))
    reboot = p.events[1]
    assert reboot.needed == 4 * 64 * MB  # four starts from Off, 64 MB Startup RAM each
    assert "0 MB" not in render_text(render.plan, p).split("reboot the host")[1].split("\n")[0]
    saved = parse_scenario(
        tomllib.loads((REBOOT % {"extra": ""}).replace('"ShutDown"', '"Save"'))
    ).scaled(8)
    ps = plan_scenario(saved)
    assert ps.events[1].needed == sum(ps.idle_assigned.values())  # restored as they were


def test_the_suggested_stagger_is_whole_seconds_and_start_delay_step_expresses_it():
    for scale in (1, 8):
        p = plan_scenario(reboot_scenario().scaled(scale))
        delay = p.events[1].suggested_delay
        assert delay is not None and delay == int(delay), delay
        assert f"start_delay_step = {delay:g}" in p.verdict()
        staggered = reboot_scenario(f"start_delay_step = {delay:g}").scaled(scale)
        assert [v.automatic_start_delay for v in staggered.vms] == [i * delay for i in range(4)]
        fixed = plan_scenario(staggered)
        assert not fixed.start_failures, fixed.verdict()
        assert set(fixed.events[1].outcomes.values()) == {"started"}


def test_start_delay_step_adds_to_the_first_delay():
    s = reboot_scenario("automatic_start_delay = 5\nstart_delay_step = 2")
    assert [v.automatic_start_delay for v in s.vms] == [5, 7, 9, 11]
    assert s.to_dict()["vms"][3]["automatic_start_delay"] == 11


@pytest.mark.parametrize(
    "extra, message",
    [
        ("start_delay_step = -1", "start_delay_step: expected a number of seconds >= 0"),
        ('start_delay_step = "2s"', "start_delay_step: expected a number of seconds >= 0"),
        ("start_delay_step = 40000", "start_delay_step: expected the last VM's delay"),
    ],
)
def test_start_delay_step_is_checked(extra, message):
    with pytest.raises(ScenarioError, match=message):
        reboot_scenario(extra)


def test_start_delay_step_needs_a_count_block():
    text = (REBOOT % {"extra": "start_delay_step = 2"}).replace("count = 4\n", "")
    with pytest.raises(ScenarioError, match="start_delay_step: only used with count of 2"):
        parse_scenario(tomllib.loads(text))
