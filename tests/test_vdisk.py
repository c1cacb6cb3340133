"""VirtualDisk: created once (0600, O_EXCL, preallocated and zero-filled), reused, never
through a symlink, clear errors; its reads reach the device; the Python cost per request is
small against the device's."""

from __future__ import annotations

import errno
import os
import stat
from unittest import mock

import numpy as np
import pytest
from conftest import small_ext4

from vmmem import devices
from vmmem.errors import SettingsError, VirtualDiskError, VmmemError
from vmmem.vdisk import MARKER_BYTES, VirtualDisk

MB = 2**20


def test_created_0600_then_reused(disk_dir):
    path = disk_dir / "vm.vhd"
    with VirtualDisk(path, 4 * MB) as d:
        assert d.created
        st = os.stat(path)
        # The guest's 4 MB and vmmem's marker block after it (the guest never reaches it).
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == 4 * MB + MARKER_BYTES
        assert st.st_blocks * 512 >= 4 * MB, "preallocated"
        assert d.read(0, 512) == 4096  # aligned up to the 4 KiB O_DIRECT unit
        assert d.write(8192, 100) == 4096
    ino = os.stat(path).st_ino
    with VirtualDisk(path, "4MB") as again:
        assert not again.created and os.stat(path).st_ino == ino
    assert path.exists(), "vmmem never deletes a disk unless asked"
    VirtualDisk(path, 4 * MB).delete()
    assert not path.exists()


def test_delete_leaves_a_file_put_in_the_disks_place(disk_dir):
    path = disk_dir / "vm.vhd"
    disk = VirtualDisk(path, 4 * MB)
    path.rename(disk_dir / "moved.vhd")
    path.write_bytes(b"someone else's")
    disk.delete()
    assert path.read_bytes() == b"someone else's"
    assert (disk_dir / "moved.vhd").exists()
    closed = VirtualDisk(disk_dir / "other.vhd", 4 * MB)
    closed.close()
    closed.delete()
    assert (disk_dir / "other.vhd").exists(), "a closed disk deletes nothing"


def test_refuses_a_symlink_and_a_wrong_size(disk_dir):
    target = disk_dir / "target"
    target.write_bytes(b"")
    link = disk_dir / "link.vhd"
    link.symlink_to(target)
    with pytest.raises(VirtualDiskError, match="symbolic link") as info:
        VirtualDisk(link, 4 * MB)
    assert info.value.errno == errno.ELOOP and info.value.filename == str(link)
    assert target.stat().st_size == 0
    VirtualDisk(disk_dir / "a.vhd", 4 * MB).close()
    with pytest.raises(VirtualDiskError, match="not the 8392704 of a 8 MB vmmem disk"):
        VirtualDisk(disk_dir / "a.vhd", 8 * MB)
    assert (disk_dir / "a.vhd").stat().st_size == 4 * MB + MARKER_BYTES


def test_clear_errors(disk_dir):
    with pytest.raises(VirtualDiskError, match="folder does not exist") as info:
        VirtualDisk(disk_dir / "missing" / "a.vhd", 4 * MB)
    assert isinstance(info.value, VmmemError) and isinstance(info.value, OSError)
    with pytest.raises(SettingsError):
        VirtualDisk(disk_dir / "b.vhd", 1000)
    with VirtualDisk(disk_dir / "c.vhd", 4 * MB) as d, pytest.raises(SettingsError):
        d.read(4 * MB - 512, 1024)


def test_no_space_is_a_clear_error_and_leaves_no_file(tmp_path):
    with small_ext4(16 * MB, tmp_path) as mnt:
        with pytest.raises(VirtualDiskError, match="no space left") as info:
            VirtualDisk(mnt / "big.vhd", 64 * MB)
        assert info.value.errno == errno.ENOSPC
        assert not (mnt / "big.vhd").exists()


def test_reads_reach_a_private_loop_device(tmp_path):
    with small_ext4(48 * MB, tmp_path) as mnt, VirtualDisk(mnt / "d.vhd", 32 * MB) as d:
        info = devices.device_for_path(mnt)
        assert info.device.startswith("loop")
        offsets = np.random.default_rng(1).permutation(32 * MB // 65536)[:200] * 65536
        before = devices.io_counters(info)
        io = d.issue(offsets, np.full(200, 65536 - 1000))  # unaligned lengths round up
        delta = devices.io_counters(info) - before
        assert io.requests == 200 and io.bytes_read == 200 * 65536
        assert io.bytes_read <= delta.read_bytes <= io.bytes_read + 2 * MB


def test_one_preadv_per_request_in_order(disk_dir):
    """One preadv per request from Python, in order, counted on the real reads. (What the
    Python around them costs is a speed goal: benchmarks/bench_vdisk.py.)"""
    n = 2000
    offsets = np.random.default_rng(2).integers(0, 64 * MB // 4096, n) * 4096
    lengths = np.full(n, 4096)
    calls: list[tuple[int, int]] = []
    preadv = os.preadv

    def counted(fd: int, bufs: list, off: int) -> int:
        calls.append((off, len(bufs[0])))
        return preadv(fd, bufs, off)

    with VirtualDisk(disk_dir / "p.vhd", 64 * MB) as d:
        with mock.patch("os.preadv", counted):
            done = d.issue(offsets, lengths)
    assert calls == [(int(o), 4096) for o in offsets]
    assert done.seconds > 0
