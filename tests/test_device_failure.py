"""A paging device that fails under a run: both backends end with PagingFileError EIO naming
the file, through the library and through `vmmem run`, and leave nothing behind.

The failing device is real: ext4 on a loop device over a sparse file. Every free block of the
filesystem is first confined to its tail (the rest is taken by a filler file), so the paging
files land there; cutting the backing file and `losetup -c` then shrink the device under the
mounted filesystem, and every read or write past its new end fails with EIO in the block
layer. The filesystem's metadata all lies before the cut (no journal; flex_bg keeps the group
bitmaps and inode tables at the start), so it can still delete the files. (device-mapper's
`error` target would be simpler, but these kernels have no device-mapper.)

A load from a mapping that meets such an error raises SIGBUS; each case runs in a child
process, so a crash is a failed test rather than the end of the test run.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BLOCK = 4096
IMAGE = 1024 * 2**20
# The article at 1/8 needs room for 4 x 64 MB + 64 MB before it starts: the tail holds it.
TAIL = 400 * 2**20
FS_IOC_FIEMAP = 0xC020660B
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def _extents(path: Path) -> list[tuple[int, int, int]]:
    """(logical, physical, length) in bytes of every extent of path (FIEMAP)."""
    found: list[tuple[int, int, int]] = []
    start, count = 0, 256
    with open(path, "rb") as f:
        while True:
            head = struct.pack("=QQIIII", start, 2**64 - 1 - start, 1, 0, count, 0)
            buf = bytearray(head + bytes(56 * count))
            fcntl.ioctl(f.fileno(), FS_IOC_FIEMAP, buf)
            mapped = struct.unpack_from("=I", buf, 20)[0]
            last = mapped == 0
            for i in range(mapped):
                logical, physical, length, _, _, flags = struct.unpack_from(
                    "=QQQQQI", buf, 32 + 56 * i
                )
                found.append((logical, physical, length))
                last = bool(flags & 1)  # FIEMAP_EXTENT_LAST
            if last:
                return found
            start = found[-1][0] + found[-1][2]


def _punch(path: Path, offset: int, length: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        if _libc.fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, offset, length):
            raise OSError(ctypes.get_errno(), "punching a hole", str(path))
    finally:
        os.close(fd)


def _fill(path: Path) -> None:
    """Allocate every free block of path's filesystem to path (unwritten extents: no data)."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        offset = os.fstat(fd).st_size
        step = os.statvfs(path).f_bfree * BLOCK
        while step >= BLOCK:
            try:
                os.posix_fallocate(fd, offset, step)
                offset += step
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                step //= 2  # the extent tree needs blocks too: take what is left in halves
    finally:
        os.close(fd)


@dataclass
class TailFs:
    """ext4 whose free space lies only past `cut`, on a loop device that can be cut there."""

    image: Path
    dev: str
    mnt: Path
    cut: int

    def free_bytes(self) -> int:
        return os.statvfs(self.mnt).f_bfree * BLOCK

    def fill_tail(self) -> None:
        """Take what is still free (all of it past the cut) with a second filler: ext4 gives
        back the blocks it had set aside for files still growing, so none is left there."""
        _fill(self.mnt / "filler-tail")
        assert self.free_bytes() == 0

    def free_before_cut(self, nbytes: int) -> None:
        """Free nbytes of the filler's blocks before the cut: new blocks go there, and work."""
        filler = self.mnt / "filler"
        for logical, physical, length in _extents(filler):
            if physical + length <= self.cut and length >= nbytes:
                _punch(filler, logical, nbytes)
                return
        raise AssertionError("no extent of the filler before the cut is large enough")

    def fail_past_cut(self) -> None:
        """Shrink the device under the mounted filesystem: past the cut, I/O gives EIO."""
        # Written back first: a late write-back past the cut would grow the file again.
        fd = os.open(self.mnt, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if _libc.syncfs(fd):
                raise OSError(ctypes.get_errno(), "syncfs", str(self.mnt))
        finally:
            os.close(fd)
        # A write-back that lands between the truncate and the loop device learning its new
        # size grows the image past the cut again (the run is live): cut it again, until the
        # device's size is the cut.
        for _ in range(5):
            os.truncate(self.image, self.cut)
            _run("losetup", "-c", self.dev)
            with open(f"/sys/class/block/{os.path.basename(self.dev)}/size") as f:
                if int(f.read()) * 512 == self.cut and os.path.getsize(self.image) == self.cut:
                    break
        else:
            raise AssertionError(f"{self.dev} kept growing past the cut at {self.cut}")

    def leftovers(self) -> list[str]:
        return sorted(set(os.listdir(self.mnt)) - {"lost+found", "filler", "filler-tail"})


@pytest.fixture
def tail_fs(tmp_path: Path) -> Iterator[TailFs]:
    if os.geteuid() != 0 or not all(map(shutil.which, ("losetup", "mkfs.ext4", "mount"))):
        pytest.skip("a loop-mounted filesystem needs root, losetup, mkfs.ext4 and mount")
    image, mnt = tmp_path / "failing.img", tmp_path / "mnt"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(IMAGE)
    # No journal (it would sit mid-disk, past the cut); inode tables written now, not by a
    # background thread later; no blocks reserved for root.
    mk = subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-m", "0", "-b", str(BLOCK)]
        + ["-E", "lazy_itable_init=0", str(image)],
        capture_output=True,
        text=True,
    )
    if mk.returncode != 0:
        pytest.skip(f"mkfs.ext4 failed: {mk.stderr.strip()}")
    attach = subprocess.run(
        ["losetup", "--find", "--show", str(image)], capture_output=True, text=True
    )
    if attach.returncode != 0:
        pytest.skip(f"cannot attach a loop device: {attach.stderr.strip()}")
    dev = attach.stdout.strip()
    try:
        mount = subprocess.run(
            ["mount", "-o", "noatime,errors=continue", dev, str(mnt)],
            capture_output=True,
            text=True,
        )
        if mount.returncode != 0:
            pytest.skip(f"cannot mount {dev}: {mount.stderr.strip()}")
        try:
            # ext4 keeps some clusters back for itself: let the filler take them too, or
            # the paging files would get them, before the cut.
            reserved = Path(f"/sys/fs/ext4/{os.path.basename(dev)}/reserved_clusters")
            if not reserved.exists():
                pytest.skip(f"{reserved} is missing: cannot confine the free space")
            reserved.write_text("0")
            fs = TailFs(image, dev, mnt, IMAGE - TAIL)
            filler = mnt / "filler"
            _fill(filler)
            for logical, physical, length in _extents(filler):
                if physical + length > fs.cut:
                    start = max(physical, fs.cut)
                    _punch(filler, logical + start - physical, physical + length - start)
            assert fs.free_bytes() > 320 * 2**20
            yield fs
        finally:
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode:
                subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True)
        image.unlink(missing_ok=True)


def _signal_name(rc: int) -> str:
    return f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit {rc}"


# ---------------------------------------------------------------------------------------------
# through the library

_LIBRARY_CHILD = r"""
import json, os, subprocess, sys
import vmmem

mnt, backend, image, dev, cut = sys.argv[1:6]
PAGE = 4096
out = {}
with vmmem.FramePool(16 * PAGE) as pool:
    mem = vmmem.GuestMemory(pool, 64 * PAGE, paging_dir=mnt, backend=backend, name="failing")
    for p in range(64):
        mem.write(p * PAGE, bytes([p + 1]) * PAGE)
    mem.frame_limit = 1          # every page but the last goes to the file, past the cut
    mem.read(0, PAGE)            # page 0 comes back clean: the next fault writes nothing
    out["path"] = mem.paging_file.path
    os.truncate(image, int(cut))
    subprocess.run(["losetup", "-c", dev], check=True)
    try:
        mem.read(PAGE, PAGE)     # page 1: a page-in from past the cut
    except vmmem.PagingFileError as e:
        out["errno"], out["filename"], out["message"] = e.errno, e.filename, str(e)
    out["states"] = [mem.page_state(p).name for p in (0, 1)]
    mem.close()
print(json.dumps(out))
"""


@pytest.mark.parametrize("backend", ["direct", "mmap"])
def test_a_failed_page_in_is_paging_file_error_eio(tail_fs, tmp_path, backend):
    r = subprocess.run(
        [sys.executable, "-c", _LIBRARY_CHILD, str(tail_fs.mnt), backend]
        + [str(tail_fs.image), tail_fs.dev, str(tail_fs.cut)],
        cwd=tmp_path,  # vmmem as the environment gives it, not from the current folder
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, f"{_signal_name(r.returncode)}: {r.stderr[-2000:]}"
    out = json.loads(r.stdout)
    assert out.get("errno") == errno.EIO, out
    assert out["filename"] == out["path"] and out["path"].startswith(str(tail_fs.mnt))
    assert "Input/output error" in out["message"]
    # Nothing lost: page 1 is still in the file, and page 0 (the clean victim) is there too.
    assert out["states"] == ["PAGED_OUT", "PAGED_OUT"]
    assert tail_fs.leftovers() == []


# ---------------------------------------------------------------------------------------------
# through `vmmem run`

# The article's storm at 1/8 (4 x 64 MB on 176 MB: 80 MB of Smart Paging) with short boots.
# No re-touch writes: every page-out is then a page's first, to a new slot at the file's end,
# so once the free blocks past the cut are used up, later page-outs land before it and work,
# and the first I/O that fails is a page-in (the case that raised SIGBUS).
STORM = """
name = "failing-disk"
[host]
balancer_start_delay = 0
memory = "1400MB"
balancer_interval = 0.05
[[vm]]
name = "vm"
count = 4
startup = "512MB"
minimum = "32MB"
maximum = "2048MB"
buffer = 20
[vm.workload]
idle_demand = "250MB"
boot_seconds = 2.0
[vm.workload.boot]
write_ratio = 0.0
[vm.workload.idle]
touch_interval = 0.05
[[event]]
action = "start"
vms = "all"
[[event]]
action = "restart-vms"
[[event]]
action = "settle"
timeout = 60
"""


def _paging_bytes(folder: Path) -> int:
    total = 0
    for entry in os.scandir(folder):
        if entry.name.endswith(".slp"):
            with contextlib.suppress(FileNotFoundError):
                total += entry.stat().st_size
    return total


@pytest.mark.parametrize("backend", ["direct", "mmap"])
def test_run_on_a_failing_disk_exits_1_and_leaves_nothing(tail_fs, tmp_path, backend):
    scenario = tmp_path / "storm.toml"
    scenario.write_text(STORM)
    work = tmp_path / "work"  # the virtual disks: on the root disk, not the failing one
    work.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmmem.cli", "run", str(scenario), "--scale", "8"]
        + ["--backend", backend, "--paging-dir", str(tail_fs.mnt), "--json", "run.json", "-q"],
        cwd=work,
        env={**os.environ, "COLUMNS": "1000"},  # the message on one line
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait until the storm's files hold 4 MB (of 80), then freeze the run while the
        # device fails under it. Polling the folder is the event; no time is asserted.
        while True:
            if _paging_bytes(tail_fs.mnt) >= 4 * 2**20:
                proc.send_signal(signal.SIGSTOP)
                if _paging_bytes(tail_fs.mnt) >= 4 * 2**20:
                    break
                proc.send_signal(signal.SIGCONT)
            assert proc.poll() is None, "the run ended before its Smart Paging files grew"
            time.sleep(0.002)
        tail_fs.fill_tail()
        tail_fs.free_before_cut(128 * 2**20)
        tail_fs.fail_past_cut()
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()
    said = f"{_signal_name(proc.returncode)}\n{out[-3000:]}\n{err[-3000:]}"
    assert proc.returncode == 1, said
    # docs/CLI.md: exit 1, the run failed; the message is the PagingFileError, naming the
    # file. Its errno is EIO when a page-in comes first (almost always); a page-out that
    # ext4 could not place after the cut has been seen to give ENOSPC instead.
    named = rf"\[Errno (5|28)\] [^\n]*'{tail_fs.mnt}/vm\d-\w+\.slp'"
    assert re.search(named, out), said
    data = json.loads((work / "run.json").read_text())
    assert data["outcome"] == "failed"
    assert re.search(named, data["error"]), data["error"]
    assert tail_fs.leftovers() == []  # no Smart Paging file, no manifest
    assert not [p for p in work.rglob("*") if p.suffix in (".slp", ".lock")]
