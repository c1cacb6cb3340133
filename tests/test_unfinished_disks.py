"""A virtual disk whose making a SIGKILL cut short: the run's manifest names it by its inode, so
a clean-up (or the next run's) removes that very file, and nothing else of the same name."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from vmmem.vdisk import VirtualDisk
from vmmem.workspace import clean, earlier_runs

SIZE = 4 * 2**20
NAME = "vm1-4MB.vmdisk"


def _die_while_making(folder: Path, when: str) -> None:
    """A process that claims `folder`, makes a disk there and SIGKILLs itself `when`
    ("created": just after the file exists, "made": just after it is whole)."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from vmmem.vdisk import VirtualDisk
        from vmmem.workspace import Workspace

        ws = Workspace()
        ws.claim({str(folder)!r})

        def created(path, st):
            ws.record_new_disk(path, st)
            if {when!r} == "created":
                os.kill(os.getpid(), signal.SIGKILL)

        def made(path):
            ws.record_disk_made(path)
            os.kill(os.getpid(), signal.SIGKILL)

        VirtualDisk(os.path.join({str(folder)!r}, {NAME!r}), {SIZE}, on_create=created,
                    on_made=made)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, r.stderr


def test_a_disk_cut_short_by_sigkill_is_removed_by_the_clean_up(tmp_path):
    _die_while_making(tmp_path, "created")
    disk = tmp_path / NAME
    assert disk.exists()  # no marker: VirtualDisk refuses it from now on
    (run,) = earlier_runs(tmp_path)
    assert run.existing_files == [str(disk)]
    (report,) = clean(tmp_path)
    assert report.removed == [str(disk)]
    assert not disk.exists() and not list(tmp_path.iterdir())


def test_a_disk_made_whole_is_kept_after_its_run_died(tmp_path):
    _die_while_making(tmp_path, "made")
    disk = tmp_path / NAME
    clean(tmp_path)
    assert disk.exists()
    with VirtualDisk(disk, SIZE) as d:  # vmmem's own, reused
        assert not d.created


def test_a_file_put_in_its_place_is_never_removed(tmp_path):
    """The manifest names the disk by device and inode: a user's file of the same name (the
    unfinished disk deleted and replaced) is left alone."""
    _die_while_making(tmp_path, "created")
    disk = tmp_path / NAME
    disk.unlink()
    disk.write_bytes(b"a user's bytes")
    clean(tmp_path)
    assert disk.read_bytes() == b"a user's bytes"


def test_a_hard_link_to_the_unfinished_disk_keeps_it(tmp_path):
    """Another name for the file (link count 2): it may be someone's, so it stays."""
    _die_while_making(tmp_path, "created")
    disk = tmp_path / NAME
    other = tmp_path / "elsewhere"
    other.mkdir()
    os.link(disk, other / "mine")
    clean(tmp_path)
    assert disk.exists() and (other / "mine").exists()
