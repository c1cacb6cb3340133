"""`disks --probe` works in a private scratch folder it removes, also on SIGINT and SIGTERM,
and every command ends with exit 130 and a message when interrupted."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vmmem.cli.main import EXIT_INTERRUPTED
from vmmem.lab import disks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTICLE = os.path.join(ROOT, "examples", "article.toml")


def scratch_folders(folder: Path) -> list[Path]:
    return sorted(folder.glob(disks.SCRATCH_PREFIX + "*"))


def vmmem(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, "-m", "vmmem.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_probe_uses_its_own_scratch_folder_and_leaves_the_rest(disk_dir):
    (disk_dir / "mine.slp").write_text("the user's")
    (disk_dir / "sub").mkdir()
    result = disks.probe(str(disk_dir), seconds=0.2)
    assert result.error is None and result.read_iops
    assert result.path == str(disk_dir)
    assert sorted(p.name for p in disk_dir.iterdir()) == ["mine.slp", "sub"]
    assert (disk_dir / "mine.slp").read_text() == "the user's"


def test_scratch_removal_removes_only_what_the_probe_made(disk_dir, monkeypatch):
    """A file that appears in the probe's scratch folder while it runs (here: when the probe
    first reads the device counters, its paging file made) is not the probe's: it stays, and
    so does the folder; the probe's own file is gone."""
    read_counters = disks.io_counters

    def someone_writes_there(info):
        (scratch,) = disk_dir.glob(disks.SCRATCH_PREFIX + "*")
        if not (scratch / "theirs").exists():
            (scratch / "theirs").write_text("someone else's")
        return read_counters(info)

    monkeypatch.setattr(disks, "io_counters", someone_writes_there)
    result = disks.probe(str(disk_dir), seconds=0.1)
    assert result.error is None
    (scratch,) = disk_dir.glob(disks.SCRATCH_PREFIX + "*")
    assert [p.name for p in scratch.iterdir()] == ["theirs"]
    assert (scratch / "theirs").read_text() == "someone else's"


def test_probe_in_a_read_only_place_reports_an_error(tmp_path):
    from conftest import mounted

    with mounted(["-t", "tmpfs", "-o", "ro,size=64k"], "tmpfs", tmp_path / "ro") as ro:
        result = disks.probe(str(ro), seconds=0.1)
    assert result.error and "scratch folder" in result.error


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_probe_exits_130_and_leaves_no_scratch_folder(disk_dir, signum):
    proc = vmmem("disks", str(disk_dir), "--probe", "--seconds", "30", cwd=disk_dir)
    try:
        deadline = time.monotonic() + 30
        while not scratch_folders(disk_dir):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the probe made no scratch folder"
            time.sleep(0.01)
        (scratch,) = scratch_folders(disk_dir)
        assert stat.S_IMODE(scratch.stat().st_mode) == 0o700
        while not any(scratch.glob("*.slp")):  # its paging file made: into the paging
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the probe made no paging file"
            time.sleep(0.01)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "interrupted" in err and "Aborted!" not in err and "Traceback" not in err
    assert scratch_folders(disk_dir) == []
    assert list(disk_dir.iterdir()) == []


@pytest.mark.parametrize("command", [["plan"], ["scenario"], ["disks"]])
def test_ctrl_c_in_any_command_exits_130_not_aborted(monkeypatch, capsys, command):
    """Click's standalone mode turns Ctrl-C into "Aborted!" and exit 1; main() says what
    happened and exits 130, whichever command was running."""
    from vmmem.cli import main as main_module
    from vmmem.cli import render

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    for name in ("plan", "scenario", "disks"):
        monkeypatch.setattr(render, name, interrupted)
    with pytest.raises(SystemExit) as e:
        main_module.main(command)
    assert e.value.code == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "vmmem: interrupted" in err and "Aborted!" not in err


def test_main_keeps_click_exit_codes(capsys):
    from vmmem.cli.main import EXIT_USAGE, main

    for argv, code in ((["--version"], 0), (["nope"], EXIT_USAGE), (["plan", "--scale", "0"], 2)):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == code, argv
    assert "No such command" in capsys.readouterr().err


def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    """`vmmem disks --json | head -c 5`: the reader stops early; no traceback, no
    "Exception ignored" noise."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        # Far more than a pipe holds, so vmmem is still writing when the reader goes away.
        [sys.executable, "-m", "vmmem.cli", "scenario", "--json"] + [ARTICLE] * 300,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout.read(5)
    proc.stdout.close()  # the reader goes away before vmmem has written everything
    err = proc.stderr.read().decode()
    proc.wait(timeout=30)
    assert "Traceback" not in err and "Exception ignored" not in err
