"""--json and --plot destinations are checked before anything runs (exit 2, the option named,
nothing created), and written atomically."""

from __future__ import annotations

import json
import os
import stat

import pytest
from click.testing import CliRunner
from conftest import mounted
from test_cli_run import fast_scenario

from vmmem.cli.main import EXIT_USAGE, cli
from vmmem.cli.outputs import plot_formats, write_atomically


def invoke(args: list[str]) -> object:
    return CliRunner().invoke(cli, args)


def command_args(command: str, tmp_path, work) -> list[str]:
    scenario = fast_scenario(tmp_path)
    if command == "run":
        return ["run", scenario, "--paging-dir", str(work)]
    if command == "compare":
        return ["compare", str(work), scenario]
    # Any existing file: the destination is checked before the result is read.
    return ["show", scenario]


def assert_refused_before_running(result, option: str, words: str, work) -> None:
    """Refused with exit 2 naming the option, before anything ran: the `work` fixture makes
    running fail the test, and nothing is created (ordering, not time, so load cannot move it)."""
    assert result.exit_code == EXIT_USAGE, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"vmmem: error: {option} " in result.output
    assert words in result.output
    assert sorted(os.listdir(work)) == [], "nothing may be created before the check"


@pytest.fixture
def work(tmp_path, monkeypatch):
    """An empty paging folder that is also the current folder (where vmmem-vms would go).
    A run or a comparison started here fails the test: each destination is checked first."""
    from vmmem.lab import compare, runner

    def ran(*args: object, **kwargs: object) -> None:
        raise AssertionError("the command started its work before checking its outputs")

    for module, name in ((runner, "run_scenario"), (compare, "check_compare_locations"),
                         (compare, "compare_locations")):  # fmt: skip
        monkeypatch.setattr(module, name, ran)
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


@pytest.mark.parametrize("command", ["run", "compare"])
def test_json_into_a_missing_folder_refused_before_running(command, tmp_path, work):
    target = tmp_path / "missing" / "r.json"
    result = invoke(command_args(command, tmp_path, work) + ["--json", str(target)])
    assert_refused_before_running(result, "--json", "does not exist", work)
    assert not target.parent.exists()


@pytest.mark.parametrize("command", ["run", "compare", "show"])
def test_plot_into_a_missing_folder_refused_before_running(command, tmp_path, work):
    target = tmp_path / "missing" / "r.png"
    result = invoke(command_args(command, tmp_path, work) + ["--plot", str(target)])
    assert_refused_before_running(result, "--plot", "does not exist", work)


@pytest.mark.parametrize("command", ["run", "compare", "show"])
@pytest.mark.parametrize("name", ["r.xyz", "r", "r.png.bak"])
def test_plot_format_matplotlib_cannot_write_refused_before_running(command, name, tmp_path, work):
    target = tmp_path / name
    result = invoke(command_args(command, tmp_path, work) + ["--plot", str(target)])
    assert_refused_before_running(result, "--plot", ".png", work)
    assert not target.exists()


@pytest.mark.parametrize("command", ["run", "compare"])
@pytest.mark.parametrize("option", ["--json", "--plot"])
def test_read_only_destination_refused_before_running(command, option, tmp_path, work):
    with mounted(["-t", "tmpfs", "-o", "ro,size=64k"], "tmpfs", tmp_path / "ro") as ro:
        target = ro / ("r.json" if option == "--json" else "r.png")
        result = invoke(command_args(command, tmp_path, work) + [option, str(target)])
        assert_refused_before_running(result, option, "is not writable", work)


def test_destination_that_is_a_folder_refused(tmp_path, work):
    (tmp_path / "out.json").mkdir()
    result = invoke(command_args("run", tmp_path, work) + ["--json", str(tmp_path / "out.json")])
    assert result.exit_code == EXIT_USAGE and "'--json'" in result.output  # click's own check
    assert "is a directory" in result.output and not os.listdir(work)


def test_same_file_for_json_and_plot_refused(tmp_path, work):
    out = str(tmp_path / "r.png")
    result = invoke(command_args("run", tmp_path, work) + ["--json", out, "--plot", out])
    assert_refused_before_running(result, "--json", "give two files", work)


def test_every_format_matplotlib_lists_is_accepted(tmp_path):
    from vmmem.cli.outputs import check_output

    for ext in plot_formats():
        check_output("--plot", str(tmp_path / f"r.{ext}"), plot=True)


def test_json_written_atomically_over_an_old_file(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    target = tmp_path / "r.json"
    target.write_text("old")
    old_umask = os.umask(0o022)
    try:
        result = invoke(
            ["run", fast_scenario(tmp_path, boot=0.3), "--scale", "8", "--paging-dir", str(work)]
            + ["-q"]
            + ["--json", str(target)]
        )
    finally:
        os.umask(old_umask)
    assert result.exit_code == 0, result.output
    assert json.loads(target.read_text())["kind"] == "vmmem-run"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # as open() would under umask 022
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")

    def fail(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_atomically(str(target), fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
