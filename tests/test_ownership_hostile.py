"""Hostile files and other users: vmmem uses, lists and deletes only what it provably made.

Real files, a real other user (uid 65534, `nobody`: files chowned to it, and a writer process
that runs as it), real hard links, symlinks and FIFOs. Each refusal is checked to leave the
user's bytes as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli_run import ROOT, fast_scenario

from vmmem.cli.main import EXIT_REFUSED, EXIT_USAGE, cli
from vmmem.errors import VirtualDiskError
from vmmem.memory import FramePool, GuestMemory
from vmmem.vdisk import MARKER_BYTES, VirtualDisk, disk_problem, find_kept_disks
from vmmem.workspace import (
    SharedFolderWarning,
    UnsafeFolderError,
    Workspace,
    clean,
    earlier_runs,
    is_paging_file_name,
)

MB = 2**20
NOBODY = 65534
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


def _digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _users_file(path, size: int) -> str:
    """A user's file of `size` random bytes; returns its digest."""
    path.write_bytes(os.urandom(size))
    return _digest(path)


def _write_as_nobody(path, data: bytes) -> None:
    """Create `path` (O_EXCL) holding `data` from a process running as uid/gid 65534: a real
    other user writing a file (a forked child, as that user's Python may not be reachable)."""
    pid = os.fork()
    if pid == 0:  # the child: only system calls, then _exit whatever happens
        code = 1
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            os.write(fd, data)
            os.close(fd)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# -- virtual disks ------------------------------------------------------------------------------


def test_a_hard_link_to_a_users_file_is_refused_and_left_unchanged(disk_dir):
    users = disk_dir / "thesis.img"
    before = _users_file(users, 4 * MB + MARKER_BYTES)  # the size a 4 MB disk would have
    disk = disk_dir / "vm1-4MB.vmdisk"
    os.link(users, disk)
    with pytest.raises(VirtualDiskError, match="has 2 names") as info:
        VirtualDisk(disk, 4 * MB)
    assert info.value.filename == str(disk)
    assert _digest(users) == before


def test_a_hard_link_to_a_vmmem_disk_is_refused_too(disk_dir):
    VirtualDisk(disk_dir / "vm1-4MB.vmdisk", 4 * MB).close()
    os.link(disk_dir / "vm1-4MB.vmdisk", disk_dir / "elsewhere.img")
    with pytest.raises(VirtualDiskError, match="has 2 names"):
        VirtualDisk(disk_dir / "vm1-4MB.vmdisk", 4 * MB)


def test_a_disk_owned_by_another_user_is_refused_and_left_unchanged(disk_dir):
    disk = disk_dir / "vm1-4MB.vmdisk"
    VirtualDisk(disk, 4 * MB).close()  # even a real vmmem disk, with its marker
    os.chown(disk, NOBODY, NOBODY)
    before = _digest(disk)
    with pytest.raises(VirtualDiskError, match=f"owned by uid {NOBODY}, not by you"):
        VirtualDisk(disk, 4 * MB)
    assert _digest(disk) == before and os.stat(disk).st_uid == NOBODY


def test_a_users_file_of_the_right_size_without_the_marker_is_refused(disk_dir):
    disk = disk_dir / "vm1-4MB.vmdisk"
    before = _users_file(disk, 4 * MB + MARKER_BYTES)
    with pytest.raises(VirtualDiskError, match="no vmmem marker"):
        VirtualDisk(disk, 4 * MB)
    assert _digest(disk) == before


def test_an_older_disk_without_a_marker_and_a_wrong_size_are_refused(disk_dir):
    old = disk_dir / "vm1-4MB.vmdisk"
    before = _users_file(old, 4 * MB)  # what vmmem made before the marker existed
    with pytest.raises(VirtualDiskError, match="older vmmem"):
        VirtualDisk(old, 4 * MB)
    VirtualDisk(disk_dir / "vm2-4MB.vmdisk", 4 * MB).close()
    with pytest.raises(VirtualDiskError, match="not the 8392704 of a 8 MB vmmem disk"):
        VirtualDisk(disk_dir / "vm2-4MB.vmdisk", 8 * MB)
    assert _digest(old) == before


def test_a_symlink_and_a_fifo_are_refused_without_following_or_hanging(disk_dir):
    users = disk_dir / "notes.img"
    before = _users_file(users, 4 * MB + MARKER_BYTES)
    (disk_dir / "vm1-4MB.vmdisk").symlink_to(users)
    with pytest.raises(VirtualDiskError, match="symbolic link"):
        VirtualDisk(disk_dir / "vm1-4MB.vmdisk", 4 * MB)
    assert "symbolic link" in (disk_problem(disk_dir / "vm1-4MB.vmdisk", 4 * MB) or "")
    os.mkfifo(disk_dir / "vm2-4MB.vmdisk")
    with pytest.raises(VirtualDiskError, match="not a regular file"):
        VirtualDisk(disk_dir / "vm2-4MB.vmdisk", 4 * MB)
    assert _digest(users) == before


def test_a_damaged_marker_is_refused(disk_dir):
    disk = disk_dir / "vm1-4MB.vmdisk"
    VirtualDisk(disk, 4 * MB).close()
    with open(disk, "r+b") as f:  # one byte of the marker's record changed
        f.seek(4 * MB + 30)
        byte = f.read(1)
        f.seek(4 * MB + 30)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(VirtualDiskError, match="no vmmem marker"):
        VirtualDisk(disk, 4 * MB)


def test_a_run_refuses_a_disk_it_did_not_make_before_anything_runs(disk_dir, monkeypatch):
    """Through the command line: exit 3 naming the file and why; the user's bytes stay."""
    monkeypatch.chdir(disk_dir)
    vhds = disk_dir / "vhds"
    vhds.mkdir()
    users = disk_dir / "data.bin"
    # The size busybox's disk gets at --scale 8, found by letting vmmem make it once.
    r = CliRunner().invoke(
        cli, ["run", "--scale", "8", "--guest", "busybox", "--vhd-dir", str(vhds), "-q"]
    )
    assert r.exit_code == 0, r.output
    (made,) = find_kept_disks(vhds)[:1]
    size = os.path.getsize(made.path)
    before = _users_file(users, size)
    for d in find_kept_disks(vhds):
        os.unlink(d.path)
        os.link(users, d.path)
    r = CliRunner().invoke(
        cli, ["run", "--scale", "8", "--guest", "busybox", "--vhd-dir", str(vhds), "-q"]
    )
    assert r.exit_code == EXIT_REFUSED, r.output
    assert f"virtual disk {made.path}" in r.stderr and "names (hard links)" in r.stderr
    assert _digest(users) == before


def test_clean_lists_kept_disks_and_deletes_only_vmmems(disk_dir):
    host = disk_dir / "vmmem-vms"
    for vm in ("vm1", "vm2", "vm3", "vm4", "vm5"):
        (host / vm).mkdir(parents=True)
    ours = host / "vm1" / "vm1-4MB.vmdisk"
    VirtualDisk(ours, 4 * MB).close()
    foreign = host / "vm2" / "vm2-4MB.vmdisk"
    VirtualDisk(foreign, 4 * MB).close()
    os.chown(foreign, NOBODY, NOBODY)
    users = disk_dir / "users.img"
    users_digest = _users_file(users, 4 * MB + MARKER_BYTES)
    os.link(users, host / "vm3" / "vm3-4MB.vmdisk")
    plain = host / "vm4" / "vm4-4MB.vmdisk"
    plain_digest = _users_file(plain, 4 * MB + MARKER_BYTES)
    (host / "vm5" / "vm5-4MB.vmdisk").symlink_to(users)

    listed = CliRunner().invoke(cli, ["clean", str(host)])
    assert listed.exit_code == 0, listed.output
    (line,) = [x for x in listed.stdout.splitlines() if str(ours) in x]
    assert line.endswith("kept for later runs (vmmem clean --disks deletes it)"), line
    assert ours.exists()

    r = CliRunner().invoke(cli, ["clean", str(host), "--disks", "--json"])
    assert r.exit_code == 0, r.output
    disks = {d["path"]: d for d in json.loads(r.stdout)["disks"]}
    assert disks[str(ours)]["removed"] and not ours.exists()
    for path in (foreign, host / "vm3" / "vm3-4MB.vmdisk", plain, host / "vm5" / "vm5-4MB.vmdisk"):
        assert not disks[str(path)]["removed"] and not disks[str(path)]["vmmem_made"]
        assert os.path.lexists(path)
    assert _digest(users) == users_digest and _digest(plain) == plain_digest


def test_clean_leaves_the_disks_of_a_folder_a_live_run_holds(disk_dir):
    folder = disk_dir / "vm1"
    w = Workspace()
    w.claim(folder)
    VirtualDisk(folder / "vm1-4MB.vmdisk", 4 * MB).close()
    try:
        r = CliRunner().invoke(cli, ["clean", str(folder), "--disks"])
        assert "in use by a live run: left alone" in r.stdout
        assert (folder / "vm1-4MB.vmdisk").exists()
    finally:
        w.close()


# -- manifests --------------------------------------------------------------------------------


def _manifest(files: list[str], run_id: str = "e") -> str:
    """A lock file's text as a run writes it (head, then one line per file)."""
    lines = [{"tool": "vmmem", "run_id": run_id, "pid": 999999, "started": 1.0}]
    lines += [{"file": f} for f in files]
    return "".join(json.dumps(x) + "\n" for x in lines)


@pytest.fixture
def shared_dir():
    """A sticky 0777 folder that another user can reach (pytest's tmp_path is 0700)."""
    path = tempfile.mkdtemp(prefix="vmmem-test-shared-", dir="/var/tmp")
    os.chmod(path, 0o1777)
    yield Path(path)
    shutil.rmtree(path)


def test_a_manifest_another_user_wrote_deletes_nothing(shared_dir):
    """The report's case: in a sticky 0777 folder another user writes vmmem-run-e.lock
    listing root's own files; a clean-up as root must delete none of them."""
    shared = shared_dir
    notes = shared / "notes.slp"
    notes.write_bytes(b"root's notes")
    lookalike = shared / "vm1-0123456789ab.slp"  # even a name vmmem could have given
    lookalike.write_bytes(b"root's data")
    text = _manifest([str(notes), str(lookalike)])
    _write_as_nobody(shared / "vmmem-run-e.lock", text.encode())
    assert os.stat(shared / "vmmem-run-e.lock").st_uid == NOBODY
    (run,) = earlier_runs(shared)
    assert run.distrust is not None and f"uid {NOBODY}" in run.distrust
    r = CliRunner().invoke(cli, ["clean", str(shared)])
    assert r.exit_code == 0, r.output
    assert "not trusted" in r.stdout and "removed" not in r.stdout
    assert notes.read_bytes() == b"root's notes" and lookalike.read_bytes() == b"root's data"
    assert (shared / "vmmem-run-e.lock").exists()  # not ours to delete either


def test_a_manifest_of_yours_deletes_only_vmmem_names_with_one_name(tmp_path):
    folder = tmp_path / "sp"
    folder.mkdir()
    notes = folder / "notes.slp"
    notes.write_bytes(b"keep")
    linked = folder / "vm2-0123456789ab.slp"
    linked.write_bytes(b"a user's file under a vmmem name")
    os.link(linked, tmp_path / "users-name.bin")
    theirs = folder / "vm3-0123456789ab.slp"
    theirs.write_bytes(b"another user's")
    os.chown(theirs, NOBODY, NOBODY)
    ours = folder / "vm1-0123456789ab.slp"
    ours.write_bytes(b"\0" * 4096)
    (folder / "vmmem-run-e.lock").write_text(
        _manifest([str(notes), str(linked), str(theirs), str(ours)])
    )
    (rep,) = clean(folder)
    assert rep.removed == [str(ours)]
    assert notes.exists() and linked.exists() and theirs.exists()
    assert not (folder / "vmmem-run-e.lock").exists()


@pytest.mark.parametrize("how", ["hard link", "wrong name", "symlink"])
def test_a_lock_file_that_is_not_plainly_a_runs_is_not_trusted(tmp_path, how):
    folder = tmp_path / "sp"
    folder.mkdir()
    victim = folder / "vm1-0123456789ab.slp"
    victim.write_bytes(b"data")
    text = _manifest([str(victim)])
    if how == "hard link":
        (folder / "vmmem-run-e.lock").write_text(text)
        os.link(folder / "vmmem-run-e.lock", tmp_path / "other-name")
    elif how == "wrong name":
        (folder / "vmmem-run-f.lock").write_text(text)  # records run "e"
    else:
        (tmp_path / "elsewhere.lock").write_text(text)
        (folder / "vmmem-run-e.lock").symlink_to(tmp_path / "elsewhere.lock")
    clean(folder)
    assert victim.read_bytes() == b"data"


def test_the_names_vmmem_gives_its_files_are_the_ones_it_trusts(tmp_path):
    with FramePool(4 * MB) as pool:
        for name in ("vm1", "a VM with spaces/and:odd*chars", "x" * 200):
            with GuestMemory(pool, 4 * MB, 0, tmp_path, name=name) as mem:
                assert is_paging_file_name(os.path.basename(mem.paging_file.path))
                for stem in ("pagefile", f"{name}-savedstate"):
                    path = mem.move_paging_file(tmp_path, stem)
                    assert is_paging_file_name(os.path.basename(path)), path
    for name in (
        "notes.slp",
        "vm1.slp",
        "vm1-0123456789ab.slp.bak",
        ".slp",
        "a/b-0123456789ab.slp",
    ):
        assert not is_paging_file_name(name)


# -- folders others can write -------------------------------------------------------------------


def test_a_folder_everyone_can_write_without_the_sticky_bit_is_refused(tmp_path, monkeypatch):
    open_ = tmp_path / "open"
    open_.mkdir()
    os.chmod(open_, 0o777)
    with pytest.raises(UnsafeFolderError, match="no sticky bit"):
        Workspace().claim(open_)
    with pytest.raises(UnsafeFolderError, match="no sticky bit"):
        Workspace().claim(open_ / "sp")  # nor a folder made in it
    assert os.listdir(open_) == []
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["run", "--scale", "8", "--paging-dir", str(open_)])
    assert r.exit_code == EXIT_REFUSED and "no sticky bit" in r.stderr, r.output
    assert os.listdir(open_) == []


def test_a_shared_sticky_folder_is_used_with_a_typed_warning(disk_dir, monkeypatch):
    shared = disk_dir / "shared"
    shared.mkdir()
    os.chown(shared, NOBODY, NOBODY)
    os.chmod(shared, 0o1777)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        w = Workspace()
        w.claim(shared)
        w.close()
    assert [type(x.message) for x in seen] == [SharedFolderWarning]
    assert "can be written by every user" in str(seen[0].message)
    owned = disk_dir / "owned"
    owned.mkdir()
    os.chown(owned, NOBODY, NOBODY)
    other = Workspace()
    with pytest.warns(SharedFolderWarning, match="belongs to another user"):
        other.claim(owned)
    other.close()
    monkeypatch.chdir(disk_dir)
    r = CliRunner().invoke(
        cli, ["run", fast_scenario(disk_dir, boot=0.3), "--scale", "8", "--paging-dir", str(shared)]
    )
    assert r.exit_code == 0, r.output
    err = " ".join(r.stderr.split())
    assert err.count("can be written by every user") == 1  # shown once, as a warning
    assert "SharedFolderWarning" not in err
    assert os.listdir(shared) == []


# -- a leaked manifest ------------------------------------------------------------------------


def test_a_process_that_ends_without_closing_its_workspace_leaves_no_manifest(tmp_path):
    """A finished run's lock was found in each VM folder: a Workspace nobody closed (an
    exception on the way out, a Host never closed) must still release what it holds."""
    code = textwrap.dedent(f"""
        from vmmem.workspace import Workspace
        w = Workspace()
        w.claim({str(tmp_path / "host" / "vm1")!r})
        w.claim({str(tmp_path / "host" / "vm2")!r})
        raise SystemExit(0)
    """)
    subprocess.run([sys.executable, "-c", code], check=True, env=ENV)
    assert os.listdir(tmp_path) == []  # no lock files, and the folders it made are gone


def test_a_run_sharing_a_vm_folder_with_a_live_run_is_refused_and_leaves_nothing(
    disk_dir, monkeypatch
):
    """Another process holds a VM's folder (where its disk is) while a run with its Smart
    Paging files elsewhere starts: it is refused (exit 3), before making anything."""
    monkeypatch.chdir(disk_dir)
    vm2 = disk_dir / "vmmem-vms" / "vm2"
    code = textwrap.dedent(f"""
        import sys, time
        from vmmem.workspace import Workspace
        w = Workspace()
        w.claim({str(vm2)!r})
        print("ready", flush=True)
        sys.stdin.read()
    """)
    holder = subprocess.Popen(
        [sys.executable, "-c", code],
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        sp = disk_dir / "sp"
        r = CliRunner().invoke(
            cli, ["run", "--scale", "8", "--guest", "busybox", "--paging-dir", str(sp), "-q"]
        )
        assert r.exit_code == EXIT_REFUSED, r.output
        assert f"{vm2} is in use by another vmmem run: pid {holder.pid}" in r.stderr
        assert not sp.exists()
        locks = [p for p in (disk_dir / "vmmem-vms").rglob("vmmem-run-*.lock")]
        assert len(locks) == 1 and locks[0].parent == vm2  # only the holder's
    finally:
        holder.communicate("")
    assert not vm2.exists()


# -- disks --probe ----------------------------------------------------------------------------


def test_probe_writes_only_in_the_current_folder_unless_all(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["disks", "--probe", "--seconds", "0.1", "--json"])
    assert r.exit_code == 0, r.output
    (loc,) = json.loads(r.stdout)["locations"]
    assert loc["path"] == str(tmp_path) and loc["probe"]["error"] is None
    assert os.listdir(tmp_path) == []
    bad = CliRunner().invoke(cli, ["disks", "--all"])
    assert bad.exit_code == EXIT_USAGE and "--all goes with --probe" in bad.stderr


# -- folders the run is given -----------------------------------------------------------------


def test_a_missing_folder_given_is_made_and_removed(disk_dir, monkeypatch):
    """The README's HDD command names folders on a file system made a moment before."""
    monkeypatch.chdir(disk_dir)
    (disk_dir / "fresh").mkdir()
    # The Smart Paging folder with a missing parent too: both are made, and both go.
    sp, vhds = disk_dir / "fresh" / "new" / "sp", disk_dir / "fresh" / "vhds"
    r = CliRunner().invoke(
        cli,
        [
            "compare",
            str(sp),
            fast_scenario(disk_dir, boot=0.3),
            "--vhd-dir",
            str(vhds),
            "--scale",
            "8",
            "--no-baseline",
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    # Both made; the Smart Paging folder, empty again, removed; the disks kept, as always.
    assert os.listdir(disk_dir / "fresh") == ["vhds"]
    assert all(n.endswith(".vmdisk") for n in os.listdir(vhds))


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--paging-dir", "{tmp}/file/sp"],
        ["run", "--vhd-dir", "{tmp}/file/vhds"],
        ["compare", "{tmp}/file/sp"],
        ["run", "--paging-dir", "{tmp}/file"],
    ],
)
def test_a_folder_that_cannot_be_made_exits_3_everywhere(tmp_path, args):
    """docs/CLI.md: a location refused is exit 3, from every option and command."""
    (tmp_path / "file").write_text("not a folder")
    args = [a.format(tmp=tmp_path) for a in args]
    r = CliRunner().invoke(cli, [*args, "--scale", "8"])
    assert r.exit_code == EXIT_REFUSED, r.output
    assert "is not a folder" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["file"]
    assert (tmp_path / "file").read_text() == "not a folder"


def test_folder_modes_are_checked_on_the_folder_itself(tmp_path):
    # A sticky 1777 folder of root's (as /tmp) makes no warning for a folder made in it.
    parent = tmp_path / "tmp"
    parent.mkdir()
    os.chmod(parent, 0o1777)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = Workspace()
        made = w.claim(parent / "mine")
        assert stat.S_IMODE(os.stat(made).st_mode) == 0o700
        w.close()
    assert os.listdir(parent) == []


# -- fuzzing what another user can write --------------------------------------------------------


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.one_of(
        st.binary(max_size=2048),
        st.lists(
            st.dictionaries(
                st.sampled_from(["tool", "run_id", "pid", "started", "file", "made_folder"]),
                st.one_of(st.text(max_size=40), st.integers(), st.floats(), st.none()),
            ),
            max_size=5,
        ).map(lambda xs: "".join(json.dumps(x) + "\n" for x in xs).encode()),
    )
)
def test_any_lock_file_text_is_read_without_error_and_deletes_only_vmmems_files(tmp_path, data):
    folder = tmp_path / "fuzz"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "notes.slp").write_bytes(b"keep")
    (folder / "vmmem-run-e.lock").write_bytes(data)
    for rep in clean(folder):
        assert all(is_paging_file_name(os.path.basename(f)) for f in rep.removed)
    assert (folder / "notes.slp").read_bytes() == b"keep"


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(block=st.binary(max_size=MARKER_BYTES))
def test_any_last_block_is_judged_without_error(tmp_path, block):
    disk = tmp_path / "vm1-4MB.vmdisk"
    with open(disk, "wb") as f:
        f.truncate(4 * MB)
        f.write(block.ljust(MARKER_BYTES, b"\0"))  # at 0: a marker must be at the end
        f.seek(4 * MB)
        f.write(block.ljust(MARKER_BYTES, b"\0"))
    problem = disk_problem(disk, 4 * MB)
    assert problem is not None and "marker" in problem


def test_compare_refuses_a_disk_it_did_not_make_before_the_baseline(tmp_path, monkeypatch):
    """compare checks the VMs' own folders (./vmmem-vms/<vm>), where each run puts its disk,
    before the baseline runs."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vmmem-vms" / "vm1").mkdir(parents=True)
    users = tmp_path / "users.img"
    before = _users_file(users, 16 * MB + MARKER_BYTES)
    os.link(users, tmp_path / "vmmem-vms" / "vm1" / "vm1-16MB.vmdisk")
    r = CliRunner().invoke(
        cli, ["compare", str(tmp_path / "sp"), "--guest", "busybox", "--scale", "8", "-q"]
    )
    assert r.exit_code == EXIT_REFUSED, r.output
    assert "vm1-16MB.vmdisk (VM vm1) has 2 names" in " ".join(r.stderr.split())
    assert "baseline" not in r.stdout and not (tmp_path / "sp").exists()
    assert _digest(users) == before
