"""Shared fixtures: paging folders on the real disk, small frame pools, and throwaway mounts."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

import vmmem
from vmmem import devices

PAGE = 4096

# Hypothesis's per-example deadline is wall-clock time, which a loaded CI machine stretches:
# examples are bounded by their count, never by how long they took.
settings.register_profile("vmmem", deadline=None)
settings.load_profile("vmmem")


@pytest.fixture
def disk_dir(tmp_path: Path) -> Path:
    """A fresh folder on a real block device whose I/O counters can be read.

    tmp_path lives under /tmp, which here is the ext4 root disk; a machine where it is RAM
    would make every device-I/O claim meaningless, so that is a failure, not a skip.
    """
    info = devices.device_for_path(tmp_path)
    assert not info.ram_backed, f"{tmp_path} is RAM-backed ({info.describe()}); tests need a disk"
    assert info.has_counters, f"{tmp_path}: {info.describe()}"
    return tmp_path


@pytest.fixture
def pool() -> Iterator[vmmem.FramePool]:
    """A small pool, so that guests run out of frames and evict often."""
    p = vmmem.FramePool(16 * PAGE)
    yield p
    p.close()


def is_root() -> bool:
    return os.geteuid() == 0


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, capture_output=True, text=True)


@contextlib.contextmanager
def mounted(fstype_args: list[str], source: str, mountpoint: Path) -> Iterator[Path]:
    """Mounts, yields the mountpoint, and always unmounts; skips where mount is refused."""
    if not is_root() or shutil.which("mount") is None:
        pytest.skip("mounting needs root and mount(8)")
    mountpoint.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", *fstype_args, source, str(mountpoint)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount here: {result.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


@contextlib.contextmanager
def loop_device(image: Path) -> Iterator[str]:
    """Attaches image to a free loop device, yields /dev/loopN, always detaches."""
    if not is_root() or shutil.which("losetup") is None:
        pytest.skip("loop devices need root and losetup(8)")
    result = subprocess.run(
        ["losetup", "--find", "--show", str(image)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot attach a loop device: {result.stderr.strip()}")
    dev = result.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True)


@contextlib.contextmanager
def small_ext4(size_bytes: int, workdir: Path) -> Iterator[Path]:
    """A loop-mounted ext4 filesystem of size_bytes: a real, tiny block device."""
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 missing")
    image = workdir / "small.img"
    with open(image, "wb") as f:
        f.truncate(size_bytes)
    # No journal and no reserved blocks: every free block can hold paging-file data.
    mk = subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-m", "0", "-b", "4096", str(image)],
        capture_output=True,
        text=True,
    )
    if mk.returncode != 0:
        pytest.skip(f"mkfs.ext4 failed: {mk.stderr.strip()}")
    with loop_device(image) as dev, mounted([], dev, workdir / "mnt") as mnt:
        yield mnt
    image.unlink(missing_ok=True)


@pytest.fixture
def quiet_loop_fs(tmp_path: Path) -> Iterator[Path]:
    """An ext4 filesystem on a loop device of its own: nothing else does I/O to it, so its
    counters show exactly what the VMs did. Skips where it cannot be made; always torn down."""
    if os.geteuid() != 0 or not all(map(shutil.which, ("losetup", "mkfs.ext4", "mount"))):
        pytest.skip("a loop-mounted filesystem needs root, losetup, mkfs.ext4 and mount")
    image, mnt = tmp_path / "quiet.img", tmp_path / "mnt"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(96 * 2**20)
    # Inode tables and journal written now, not by a background thread during the test.
    mk = subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image)],
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
            ["mount", "-o", "noatime", dev, str(mnt)], capture_output=True, text=True
        )
        if mount.returncode != 0:
            pytest.skip(f"cannot mount {dev}: {mount.stderr.strip()}")
        try:
            yield mnt
        finally:
            subprocess.run(["umount", str(mnt)], capture_output=True)
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True)


def settled_delta(
    info: devices.DeviceInfo, before: devices.IOCounters, reads: int = 0, writes: int = 0
) -> devices.IOCounters:
    """Counters since `before`, once the request counts have caught up.

    The block layer adds a request's bytes before it wakes the waiting task but counts the
    request itself just after, so a read of /proc/diskstats right after the last transfer
    may miss its count (never its bytes): wait for the counts we expect (a generous deadline:
    a loaded machine may be slow to account; the caller's assertions then say what is missing).
    """
    deadline = time.monotonic() + 30.0
    while True:
        delta = devices.io_counters(info) - before
        if (delta.read_count >= reads and delta.write_count >= writes) or (
            time.monotonic() > deadline
        ):
            return delta
        time.sleep(0.01)
