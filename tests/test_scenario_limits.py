"""Scenario files a real host never has: too large, nested too deep, too many VMs, not a file.
Each is refused with a message naming the file (exit 2), quickly and without a traceback."""

from __future__ import annotations

import os
import threading

import pytest
from click.testing import CliRunner

from vmmem.cli.main import EXIT_USAGE, cli
from vmmem.lab.scenario import (
    MAX_DEPTH,
    MAX_SCENARIO_BYTES,
    MAX_VMS,
    ScenarioError,
    load_scenario,
)

HEAD = '[host]\nmemory = "1400MB"\n'


def vm(name: str, count: int = 1) -> str:
    return f'[[vm]]\nname = "{name}"\ncount = {count}\nstartup = "512MB"\n'


def write(tmp_path, text: str, name: str = "s.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def refused(path: str, match: str) -> ScenarioError:
    with pytest.raises(ScenarioError, match=match) as info:
        load_scenario(path)
    assert info.value.source == path
    return info.value


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path):
    # tomllib recurses once per level: 5,000 levels was a RecursionError and a traceback.
    path = write(tmp_path, "a = " + "[" * 5000 + "]" * 5000 + "\n")
    refused(path, f"nested deeper than a scenario can be \\(at most {MAX_DEPTH} levels\\)")


def test_nesting_tomllib_parses_is_refused_with_its_key(tmp_path):
    deep = "[" * (MAX_DEPTH + 2) + "1" + "]" * (MAX_DEPTH + 2)
    path = write(tmp_path, HEAD + vm("a") + f"[vm.workload]\nboot = {{ x = {deep} }}\n")
    err = refused(path, "nested deeper")
    assert err.key.startswith("vm[0].workload.boot.x[0]")


def test_a_real_depth_still_loads(tmp_path):
    path = write(tmp_path, HEAD + vm("a") + "[vm.workload.boot]\nhot_ratio = 1.0\n")
    assert [v.name for v in load_scenario(path).vms] == ["a"]


def test_a_file_over_the_size_limit_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "huge.toml"
    # Valid TOML up to the limit, then a byte too many: only the size can refuse it, and a
    # sparse tail proves the file is never read (the parse of 56 MB took over a minute).
    with open(path, "w") as f:
        f.write(HEAD + vm("a"))
        f.write("# " + "x" * 100 + "\n")
    os.truncate(path, MAX_SCENARIO_BYTES + 1)
    err = refused(str(path), f"is {MAX_SCENARIO_BYTES + 1:,} bytes; a scenario file may have")
    assert err.key == ""


def test_more_vms_than_hyperv_runs_on_a_host_are_refused(tmp_path):
    text = HEAD + "".join(vm(f"v{i}") for i in range(MAX_VMS + 1))
    assert len(text) < MAX_SCENARIO_BYTES
    err = refused(write(tmp_path, text), "more than 1,024 VMs; Hyper-V runs at most 1,024")
    assert err.key == f"vm[{MAX_VMS}]"


def test_count_blocks_add_up_to_the_limit(tmp_path):
    ok = write(tmp_path, HEAD + vm("a", 1000) + vm("b", MAX_VMS - 1000), "ok.toml")
    assert len(load_scenario(ok).vms) == MAX_VMS
    refused(write(tmp_path, HEAD + vm("a", 1000) + vm("b", 25)), "more than 1,024 VMs")
    refused(write(tmp_path, HEAD + vm("a", MAX_VMS + 1), "c.toml"), "count: expected a whole")


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "s.toml"
    os.mkfifo(fifo)
    done = threading.Event()
    errors: list[BaseException] = []

    def load() -> None:
        try:
            load_scenario(str(fifo))
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            errors.append(e)
        done.set()

    threading.Thread(target=load, daemon=True).start()
    if not done.wait(60):
        # Unblock the hung open so the thread ends, then fail: it waited for a writer.
        with open(fifo, "w"):
            pass
        pytest.fail("load_scenario waited on a FIFO")
    assert len(errors) == 1 and isinstance(errors[0], ScenarioError)
    assert "is a FIFO, not a regular file" in str(errors[0]) and str(fifo) in str(errors[0])


def test_a_device_is_refused():
    with pytest.raises(ScenarioError, match="/dev/zero: is a character device"):
        load_scenario("/dev/zero")


def test_a_symlink_to_a_scenario_is_read(tmp_path):
    target = write(tmp_path, HEAD + vm("a"), "real.toml")
    link = tmp_path / "link.toml"
    link.symlink_to(target)
    assert [v.name for v in load_scenario(str(link)).vms] == ["a"]


@pytest.mark.parametrize(
    "text, match",
    [
        ("a = " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper"),
        (HEAD + "".join(vm(f"v{i}") for i in range(MAX_VMS + 1)), "more than 1,024 VMs"),
    ],
    ids=["deep", "many"],
)
def test_cli_exits_2_naming_the_file(tmp_path, text, match):
    path = write(tmp_path, text)
    result = CliRunner().invoke(cli, ["scenario", path])
    assert result.exit_code == EXIT_USAGE, result.output
    assert path in result.output and match in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
