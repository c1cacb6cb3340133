"""A run touches only what it made: foreign files and symlinks in its folders, two runs on one
folder, a run killed with SIGKILL and the run after it, `vmmem clean`, folder and file modes."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest
from click.testing import CliRunner
from test_cli_run import ROOT, fast_scenario, paging_files

from vmmem.cli.main import EXIT_REFUSED, cli
from vmmem.workspace import Workspace, active_runs, clean, earlier_runs, remove_earlier_run

ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _holder(folder, *, create: bool, then: str) -> subprocess.Popen[str]:
    """A process that claims `folder` as a run would, makes a paging file, says 'ready', and
    then holds the folder until the test kills it or closes its stdin ('sleep'), or kills
    itself ('kill')."""
    code = textwrap.dedent(f"""
        import os, signal, sys, time
        from vmmem.workspace import Workspace
        w = Workspace()
        folder = w.claim({str(folder)!r})
        path = os.path.join(folder, "vm1-abcdef012345.slp")
        w.record_file(path)
        if {create!r}:
            with open(path, "wb") as f:
                f.write(b"\\0" * 8192)
        print("ready", flush=True)
        if {then!r} == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        sys.stdin.read()  # however long the test takes: no timer to outlive
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_folders_are_0700_and_lock_files_0600_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        w = Workspace()
        folder = w.claim(tmp_path / "host" / "vm1")
    finally:
        os.umask(old)
    for made in (tmp_path / "host", tmp_path / "host" / "vm1"):
        assert stat.S_IMODE(os.stat(made).st_mode) == 0o700
    (lock,) = os.listdir(folder)
    assert stat.S_IMODE(os.stat(os.path.join(folder, lock)).st_mode) == 0o600
    w.close()
    assert os.listdir(tmp_path) == []  # the folders it made, empty again, are gone


def test_release_deletes_exactly_the_listed_files(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "important.slp").write_bytes(b"keep me")
    folder = tmp_path / "sp"
    folder.mkdir()
    (folder / "keep.slp").write_bytes(b"the user's")
    w = Workspace()
    w.claim(folder)
    ours = folder / "vm1-000000000000.slp"
    w.record_file(ours)
    ours.write_bytes(b"\0" * 4096)
    # A listed name that someone replaced by a symlink is neither followed nor deleted.
    swapped = folder / "vm2-000000000000.slp"
    w.record_file(swapped)
    swapped.symlink_to(outside / "important.slp")
    assert w.close() == [str(ours)]
    assert sorted(os.listdir(folder)) == ["keep.slp", "vm2-000000000000.slp"]
    assert (outside / "important.slp").read_bytes() == b"keep me"
    assert folder.is_dir()  # not made by the run: stays


def test_a_file_outside_the_claimed_folders_cannot_be_recorded(tmp_path):
    w = Workspace()
    w.claim(tmp_path / "a")
    from vmmem.errors import VmmemError

    with pytest.raises(VmmemError, match="not in a folder this run has claimed"):
        w.record_file(tmp_path / "b" / "x.slp")
    w.close()


def test_a_live_run_is_seen_and_left_alone(tmp_path):
    proc = _holder(tmp_path, create=True, then="sleep")
    try:
        (live,) = active_runs(tmp_path)
        assert live.pid == proc.pid
        assert earlier_runs(tmp_path) == []
        assert remove_earlier_run(live) == []
        assert len(paging_files(tmp_path)) == 1
        # The command line refuses the folder, naming the other run's pid.
        r = CliRunner().invoke(cli, ["run", "--scale", "8", "--paging-dir", str(tmp_path)])
        assert r.exit_code == EXIT_REFUSED, r.output
        assert f"in use by another vmmem run: pid {proc.pid}" in r.stderr
        assert len(paging_files(tmp_path)) == 1
        rep = CliRunner().invoke(cli, ["clean", str(tmp_path)])
        assert f"in use by a live run, pid {proc.pid}" in rep.stdout
        assert len(paging_files(tmp_path)) == 1
    finally:
        proc.kill()
        proc.wait()


def test_sigkilled_run_is_recognised_and_cleaned(tmp_path):
    folder = tmp_path / "host" / "vm1"
    proc = _holder(folder, create=True, then="kill")
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    (folder / "mine.slp").write_bytes(b"the user's")
    (dead,) = earlier_runs(folder)
    assert dead.pid == proc.pid and "that did not finish" in dead.describe()
    r = CliRunner().invoke(cli, ["clean", str(tmp_path / "host"), "--json"])
    assert r.exit_code == 0, r.output
    (rep,) = json.loads(r.stdout)["folders"]
    assert rep["earlier_runs"][0]["pid"] == proc.pid
    assert rep["removed"] == [str(folder / "vm1-abcdef012345.slp")]
    assert os.listdir(folder) == ["mine.slp"]  # the user's file, and nothing else, is left
    assert clean(tmp_path / "host") == []


def test_a_run_keeps_foreign_files_and_symlinked_folders_intact(disk_dir, monkeypatch):
    monkeypatch.chdir(disk_dir)
    outside = disk_dir / "outside"
    outside.mkdir()
    (outside / "important.slp").write_bytes(b"keep me")
    host = disk_dir / "vmmem-vms"
    host.mkdir()
    (host / "vm1").symlink_to(outside)  # a VM folder that is a symlink to elsewhere
    (host / "vm2").mkdir()
    (host / "vm2" / "keep.slp").write_bytes(b"the user's")
    (host / "vm2" / "link.slp").symlink_to(outside / "important.slp")
    r = CliRunner().invoke(cli, ["run", fast_scenario(disk_dir, boot=0.5), "--scale", "8", "-q"])
    assert r.exit_code == 0, r.output
    assert "every Smart Paging file is gone" in r.stdout
    assert (outside / "important.slp").read_bytes() == b"keep me"
    # The VMs' virtual disks are kept beside their files (vm1's through the symlink).
    assert sorted(os.listdir(outside)) == ["important.slp", "vm1-16MB.vmdisk"]
    assert sorted(os.listdir(host / "vm2")) == ["keep.slp", "link.slp", "vm2-16MB.vmdisk"]
    assert os.path.islink(host / "vm1") and os.path.islink(host / "vm2" / "link.slp")
    assert os.listdir(host / "vm3") == ["vm3-16MB.vmdisk"]  # the run's own files are gone


def test_the_run_after_a_sigkill_names_the_earlier_run(disk_dir):
    paging = disk_dir / "sp"
    paging.mkdir()
    (paging / "keep.slp").write_bytes(b"the user's")
    cmd = [sys.executable, "-m", "vmmem.cli", "run", fast_scenario(disk_dir, boot=4.0)]
    cmd += ["--scale", "8", "--paging-dir", str(paging), "-q"]
    proc = subprocess.Popen(cmd, cwd=disk_dir, env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(paging_files(paging)) < 2:  # the user's file and one of the storm's
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no Smart Paging file appeared"
            time.sleep(0.01)
        proc.kill()
    finally:
        proc.wait()
    left = [f for f in paging_files(paging) if not f.endswith("keep.slp")]
    assert left  # SIGKILL leaves the files: nothing can delete them then
    r = CliRunner().invoke(
        cli,
        [
            "run",
            fast_scenario(disk_dir, boot=0.5),
            "--scale",
            "8",
            "--paging-dir",
            str(paging),
            "--json",
            str(disk_dir / "after.json"),
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    data = json.loads((disk_dir / "after.json").read_text())
    (note,) = data["earlier_runs"]
    assert f"left by an earlier run, pid {proc.pid}" in note and "did not finish" in note
    assert data["leftover_files"] == []  # its own host is not blamed
    assert paging_files(paging) == [str(paging / "keep.slp")]
