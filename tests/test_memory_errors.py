"""Every error of the paging core's API: bad settings, guest addresses out of range, no frames,
and paging-file failures (ENOENT, EROFS, EACCES, ENOSPC, no O_DIRECT), each with the path and
the OS reason, and nothing lost when a page-out fails."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import mounted, small_ext4

import vmmem

PAGE = 4096


# ---- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, -4096, 4095, 4097, "0MB", "-1MB", "1.5KiB", "lots", None, 2**70]
)
def test_bad_pool_size(size):
    with pytest.raises(vmmem.SettingsError) as info:
        vmmem.FramePool(size)
    assert isinstance(info.value, ValueError)
    assert str(info.value)


@pytest.mark.parametrize("page_size", [0, 1000, 4095, 6144, 2048, -4096])
def test_bad_page_size(page_size):
    with pytest.raises(vmmem.SettingsError, match="page size"):
        vmmem.FramePool(64 * 1024, page_size=page_size)


def test_larger_page_size_works(disk_dir):
    with (
        vmmem.FramePool("256KiB", page_size=16384) as pool,
        vmmem.GuestMemory(pool, "1MiB", frame_limit=2, paging_dir=disk_dir) as mem,
    ):
        mem.write(3 * 16384 + 5, b"big pages")
        mem.replay(np.arange(10, dtype=np.uint32), np.ones(10, dtype=bool))
        assert mem.stats.bytes_written == mem.stats.page_outs * 16384
        assert mem.read(3 * 16384 + 8, 6) == b" pages"


@pytest.mark.parametrize("size", [0, -PAGE, PAGE + 1, PAGE // 2, "3KiB", "x"])
def test_bad_guest_size(pool, disk_dir, size):
    with pytest.raises(vmmem.SettingsError) as info:
        vmmem.GuestMemory(pool, size, paging_dir=disk_dir)
    assert str(info.value)


def test_guest_too_large_for_page_table(pool, disk_dir):
    with pytest.raises(vmmem.SettingsError, match="too large"):
        vmmem.GuestMemory(pool, 2**32 * PAGE, paging_dir=disk_dir)


@pytest.mark.parametrize("limit", [-1, 17, 10**12, 1.5, "8", True])
def test_bad_frame_limit(pool, disk_dir, limit):
    with pytest.raises(vmmem.SettingsError):
        vmmem.GuestMemory(pool, 64 * PAGE, frame_limit=limit, paging_dir=disk_dir)
    with vmmem.GuestMemory(pool, 64 * PAGE, frame_limit=4, paging_dir=disk_dir) as mem:
        with pytest.raises(vmmem.SettingsError):
            mem.frame_limit = limit
        assert mem.frame_limit == 4


def test_frame_limit_above_pool_says_what_is_allowed(pool, disk_dir):
    with vmmem.GuestMemory(pool, 64 * PAGE, frame_limit=4, paging_dir=disk_dir) as mem:
        with pytest.raises(vmmem.SettingsError, match="0..16"):
            mem.frame_limit = 17
        mem.frame_limit = 16  # the whole pool is allowed
        assert mem.frame_limit == 16


def test_default_frame_limit_is_what_fits(pool, disk_dir):
    with (
        vmmem.GuestMemory(pool, 8 * PAGE, paging_dir=disk_dir) as small,
        vmmem.GuestMemory(pool, 64 * PAGE, paging_dir=disk_dir) as large,
    ):
        assert small.frame_limit == 8
        assert large.frame_limit == 16


@pytest.mark.parametrize(
    "kwargs", [{"backend": "o_direct"}, {"backend": ""}, {"policy": "fifo"}, {"policy": "LRU "}]
)
def test_bad_backend_or_policy_names_the_choices(pool, disk_dir, kwargs):
    with pytest.raises(vmmem.SettingsError) as info:
        vmmem.GuestMemory(pool, 8 * PAGE, paging_dir=disk_dir, **kwargs)
    message = str(info.value)
    assert ("direct" in message and "mmap" in message) or ("lru" in message and "clock" in message)


def test_pool_must_be_a_pool(disk_dir):
    with pytest.raises(vmmem.SettingsError):
        vmmem.GuestMemory("1MiB", 8 * PAGE, paging_dir=disk_dir)


def test_pool_larger_than_host_ram():
    with pytest.raises(vmmem.SettingsError, match="RAM"):
        vmmem.FramePool("4TiB")


# ---- guest addresses -------------------------------------------------------------------------


@pytest.fixture
def mem(pool, disk_dir):
    with vmmem.GuestMemory(pool, 8 * PAGE, frame_limit=4, paging_dir=disk_dir) as m:
        yield m


@pytest.mark.parametrize(
    "gpa,n", [(8 * PAGE, 1), (8 * PAGE - 1, 2), (-1, 1), (0, 8 * PAGE + 1), (2**64, 1)]
)
def test_read_out_of_range(mem, gpa, n):
    with pytest.raises(vmmem.GuestAddressError) as info:
        mem.read(gpa, n)
    assert isinstance(info.value, IndexError)
    assert mem.stats.accesses == 0


def test_write_out_of_range_changes_nothing(mem):
    with pytest.raises(IndexError):
        mem.write(8 * PAGE - 2, b"abc")
    with pytest.raises(IndexError):
        mem.write(-1, b"a")
    assert mem.stats.accesses == 0
    mem.write(8 * PAGE - 3, b"abc")  # the last bytes are fine
    assert mem.read(8 * PAGE - 3, 3) == b"abc"
    assert mem.read(8 * PAGE, 0) == b""  # an empty read at the end is fine too


@pytest.mark.parametrize(
    "trace",
    [
        np.array([0, 8], dtype=np.int64),
        np.array([-1], np.int64),
        np.array([1, 2, 2**31], dtype=np.uint32),
    ],
)
def test_replay_out_of_range(mem, trace):
    with pytest.raises(vmmem.GuestAddressError, match="outside"):
        mem.replay(trace)


def test_replay_stops_at_the_bad_page_having_done_the_ones_before(mem):
    with pytest.raises(vmmem.GuestAddressError, match="99"):
        mem.replay(np.array([0, 1, 99, 2], dtype=np.uint32), np.array([1, 1, 1, 1], np.uint8))
    assert mem.stats.accesses == 2
    assert mem.read(0, 1) == b"\x01" and mem.read(PAGE, 1) == b"\x01"
    assert mem.page_state(2) == vmmem.PageState.ZERO


@pytest.mark.parametrize(
    "bad", [np.zeros((2, 2), np.uint32), np.array([0.5, 1.0]), np.array(["1"])]
)
def test_replay_needs_a_flat_integer_array(mem, bad):
    with pytest.raises(vmmem.SettingsError):
        mem.replay(bad)


def test_replay_writes_must_match(mem):
    with pytest.raises(vmmem.SettingsError):
        mem.replay(np.array([0, 1], np.uint32), np.array([1], np.uint8))


@pytest.mark.parametrize("first,count", [(8, 1), (7, 2), (-1, 1), (0, -1), (0, 9)])
def test_release_out_of_range(mem, first, count):
    with pytest.raises(IndexError):
        mem.release(first, count)


@pytest.mark.parametrize("page", [-1, 8, 2**40])
def test_page_state_out_of_range(mem, page):
    with pytest.raises(vmmem.GuestAddressError):
        mem.page_state(page)


def test_closed_guest_and_pool_refuse_calls(pool, disk_dir):
    m = vmmem.GuestMemory(pool, 8 * PAGE, paging_dir=disk_dir)
    with pytest.raises(vmmem.VmmemError):
        pool.close()  # a guest is still open
    m.close()
    with pytest.raises(vmmem.VmmemError):
        m.read(0, 1)
    with pytest.raises(vmmem.VmmemError):
        _ = m.stats


# ---- no frames -------------------------------------------------------------------------------


def test_frame_limit_zero_gives_no_frame(mem):
    mem.frame_limit = 0
    with pytest.raises(vmmem.OutOfFramesError):
        mem.read(0, 1)
    with pytest.raises(vmmem.OutOfFramesError):
        mem.replay(np.array([3], np.uint32))
    assert mem.stats.accesses == 0 and mem.stats.resident == 0


def test_pool_exhausted_by_others(pool, disk_dir):
    with (
        vmmem.GuestMemory(pool, 32 * PAGE, paging_dir=disk_dir, name="hog") as hog,
        vmmem.GuestMemory(pool, 8 * PAGE, frame_limit=8, paging_dir=disk_dir) as guest,
    ):
        hog.replay(np.arange(16, dtype=np.uint32))
        assert pool.free_frames == 0
        with pytest.raises(vmmem.OutOfFramesError) as info:
            guest.write(0, b"x")
        assert "pool" in str(info.value)
        hog.release(0, 1)
        guest.write(0, b"x")  # one frame back: the guest can run, evicting its own page
        guest.write(PAGE, b"y")
        assert guest.stats.resident == 1 and guest.stats.clean_drops == 0
        assert guest.read(0, 1) == b"x"  # paged out and back in


def test_drain_without_room_changes_nothing(pool, disk_dir):
    with vmmem.GuestMemory(pool, 32 * PAGE, frame_limit=4, paging_dir=disk_dir) as m:
        m.replay(np.arange(8, dtype=np.uint32), np.ones(8, dtype=bool))
        before = m.stats
        with pytest.raises(vmmem.OutOfFramesError, match="frame limit"):
            m.drain()
        after = m.stats
        assert (after.resident, after.file_pages, after.page_ins) == (
            before.resident,
            before.file_pages,
            before.page_ins,
        )
        assert m.paging_file.exists


# ---- paging-file failures --------------------------------------------------------------------


def test_missing_folder(pool, tmp_path):
    missing = tmp_path / "not" / "there"
    with pytest.raises(vmmem.PagingFileError) as info:
        vmmem.GuestMemory(pool, 8 * PAGE, paging_dir=missing)
    e = info.value
    assert e.errno == errno.ENOENT and isinstance(e, OSError)
    assert e.filename == str(missing)
    assert pool.free_frames == pool.frames


def test_folder_deleted_after_creation(pool, tmp_path):
    folder = tmp_path / "gone"
    folder.mkdir()
    with vmmem.GuestMemory(pool, 8 * PAGE, frame_limit=2, paging_dir=folder) as m:
        m.write(0, b"keep me")
        m.write(PAGE, b"and me")
        folder.rmdir()
        with pytest.raises(vmmem.PagingFileError) as info:
            m.write(2 * PAGE, b"z")  # needs a page-out: no folder to put the file in
        assert info.value.errno == errno.ENOENT
        assert info.value.filename == m.paging_file.path
        assert m.read(0, 7) == b"keep me" and m.read(PAGE, 6) == b"and me"


def test_not_a_folder(pool, tmp_path):
    f = tmp_path / "file"
    f.write_bytes(b"")
    with pytest.raises(vmmem.PagingFileError) as info:
        vmmem.GuestMemory(pool, 8 * PAGE, paging_dir=f)
    assert info.value.errno == errno.ENOTDIR


def _read_only_bind(source: Path, target: Path):
    """A read-only bind mount of source at target (two steps: bind, then remount ro)."""
    return mounted(["--bind"], str(source), target)


def test_read_only_folder_refused_with_erofs(pool, tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    with _read_only_bind(source, tmp_path / "ro") as ro:
        r = subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], capture_output=True)
        if r.returncode:
            pytest.skip("cannot remount read-only here")
        with pytest.raises(vmmem.PagingFileError) as info:
            vmmem.GuestMemory(pool, 8 * PAGE, paging_dir=ro)
        assert info.value.errno == errno.EROFS
        assert info.value.filename == str(ro)


@pytest.mark.parametrize("backend", ["direct", "mmap"])
def test_folder_turned_read_only_fails_the_page_out_and_keeps_the_page(pool, tmp_path, backend):
    source = tmp_path / "src"
    source.mkdir()
    with _read_only_bind(source, tmp_path / "rw") as mnt:
        with vmmem.GuestMemory(pool, 8 * PAGE, frame_limit=2, paging_dir=mnt, backend=backend) as m:
            m.write(0, b"A" * PAGE)
            m.write(PAGE, b"B" * PAGE)
            r = subprocess.run(["mount", "-o", "remount,ro,bind", str(mnt)], capture_output=True)
            if r.returncode:
                pytest.skip("cannot remount read-only here")
            with pytest.raises(vmmem.PagingFileError) as info:
                m.frame_limit = 0
            assert info.value.errno == errno.EROFS
            assert info.value.filename == m.paging_file.path
            assert "read-only" in str(info.value).lower()
            assert m.frame_limit == 2 and m.stats.resident == 2  # nothing left
            assert m.read(0, PAGE) == b"A" * PAGE and m.read(PAGE, PAGE) == b"B" * PAGE
            assert not m.paging_file.exists


_EACCES_CHILD = r"""
import ctypes, errno, json, os, sys

# Root ignores mode bits through CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH: give both up, so
# this process meets permissions as any user would.
class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
class Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]
libc = ctypes.CDLL(None, use_errno=True)
header, data = Header(0x20080522, 0), (Data * 2)()
if libc.capget(ctypes.byref(header), data) != 0:
    sys.exit(3)
for bit in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    data[0].effective &= ~(1 << bit)
    data[0].permitted &= ~(1 << bit)
if libc.capset(ctypes.byref(header), data) != 0:
    sys.exit(3)

import vmmem
folder = sys.argv[1]
out = {}
with vmmem.FramePool(8 * 4096) as pool:
    m = vmmem.GuestMemory(pool, 8 * 4096, frame_limit=2, paging_dir=folder)
    m.write(0, b"first")
    m.write(4096, b"second")
    os.chmod(folder, 0o555)   # no longer writable: the first page-out cannot make the file
    try:
        m.write(2 * 4096, b"third")
    except vmmem.PagingFileError as e:
        out["errno"], out["filename"], out["message"] = e.errno, e.filename, str(e)
    out["path"] = m.paging_file.path
    out["kept"] = [m.read(0, 5).decode(), m.read(4096, 6).decode()]
    m.close()
    try:
        vmmem.GuestMemory(pool, 8 * 4096, paging_dir=folder)
    except vmmem.PagingFileError as e:
        out["create_errno"], out["create_filename"] = e.errno, e.filename
print(json.dumps(out))
"""


def test_permission_denied(tmp_path):
    """EACCES, in a child process that gives up root's power to ignore permissions."""
    folder = tmp_path / "paging"
    folder.mkdir()
    try:
        r = subprocess.run(
            [sys.executable, "-c", _EACCES_CHILD, str(folder)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if r.returncode == 3:
            pytest.skip("cannot drop capabilities here")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        if "errno" not in out:
            pytest.skip("permissions are not enforced for this process (still privileged)")
        assert out["errno"] == errno.EACCES
        assert out["filename"] == out["path"]
        assert "denied" in out["message"].lower()
        assert out["kept"] == ["first", "second"]
        assert out["create_errno"] == errno.EACCES
        assert out["create_filename"] == str(folder)
        assert os.listdir(folder) == []
    finally:
        os.chmod(folder, 0o755)


def _fill_until_full(full: vmmem.GuestMemory, pages: int) -> list[bytes]:
    """Distinct content in every page; returns what each page holds."""
    contents = []
    for p in range(pages):
        data = p.to_bytes(4, "little") * (PAGE // 4)
        full.write(p * PAGE, data)
        contents.append(data)
    return contents


def _check_enospc(
    pool: vmmem.FramePool, full_dir: Path, healthy_dir: Path, backend: str, pages: int
) -> None:
    healthy = vmmem.GuestMemory(
        pool, 64 * PAGE, frame_limit=8, paging_dir=healthy_dir, backend=backend, name="healthy"
    )
    healthy.replay(np.arange(64, dtype=np.uint32), np.ones(64, dtype=bool))
    healthy_before = healthy.stats
    full = vmmem.GuestMemory(
        pool, pages * PAGE, frame_limit=pages, paging_dir=full_dir, backend=backend, name="full"
    )
    try:
        contents = _fill_until_full(full, pages)
        with pytest.raises(vmmem.PagingFileError) as info:
            full.frame_limit = 0  # more than the filesystem can hold
        e = info.value
        assert e.errno == errno.ENOSPC
        assert e.filename == full.paging_file.path
        assert "space" in str(e).lower()
        s = full.stats
        assert 0 < s.resident < pages
        assert s.frame_limit == s.resident  # the limit stays at what could not go out
        assert s.page_outs + s.resident == pages
        assert full.page_state(pages - 1) in (vmmem.PageState.DIRTY, vmmem.PageState.PAGED_OUT)
        # Nothing lost: give the frames back and read every page, paged out or not.
        full.frame_limit = pages
        for p in range(pages):
            assert full.read(p * PAGE, PAGE) == contents[p], f"page {p}"
        # The other guest on the same pool saw nothing of it.
        after = healthy.stats
        assert (after.accesses, after.page_outs, after.page_ins, after.resident) == (
            healthy_before.accesses,
            healthy_before.page_outs,
            healthy_before.page_ins,
            healthy_before.resident,
        )
        assert int.from_bytes(healthy.read(0, 8), "little") == 1
    finally:
        full.close()
        healthy.close()
    assert os.listdir(full_dir) in ([], ["lost+found"])


@pytest.mark.parametrize("backend", ["direct", "mmap"])
def test_enospc_on_a_tiny_ext4_keeps_memory_intact(tmp_path, disk_dir, backend):
    work = tmp_path / "rig"
    work.mkdir()
    healthy = disk_dir / "healthy"
    healthy.mkdir()
    with small_ext4(2 * 1024 * 1024, work) as mnt, vmmem.FramePool(700 * PAGE) as pool:
        free_pages = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize // PAGE
        _check_enospc(pool, mnt, healthy, backend, pages=free_pages + 100)


@pytest.mark.parametrize("backend", ["direct", "mmap"])
def test_enospc_on_a_tiny_tmpfs_keeps_memory_intact(tmp_path, disk_dir, backend):
    healthy = disk_dir / "healthy"
    healthy.mkdir()
    with (
        mounted(["-t", "tmpfs", "-o", "size=64k"], "tmpfs", tmp_path / "tiny") as mnt,
        vmmem.FramePool(128 * PAGE) as pool,
    ):
        _check_enospc(pool, mnt, healthy, backend, pages=40)


def test_no_direct_io_suggests_mmap(pool, tmp_path):
    """ramfs has no O_DIRECT: the direct backend says so, names the folder, suggests mmap."""
    with mounted(["-t", "ramfs"], "ramfs", tmp_path / "ramfs") as mnt:
        with vmmem.GuestMemory(pool, 8 * PAGE, frame_limit=1, paging_dir=mnt) as m:
            m.write(0, b"a")
            try:
                m.write(PAGE, b"b")
            except vmmem.PagingFileError as e:
                assert "mmap" in str(e) and str(mnt) in str(e)
                assert m.read(0, 1) == b"a"
                assert os.listdir(mnt) == []
            else:
                pytest.skip("this kernel's ramfs accepts O_DIRECT")
        with vmmem.GuestMemory(pool, 8 * PAGE, frame_limit=1, paging_dir=mnt, backend="mmap") as m:
            m.write(0, b"a")
            m.write(PAGE, b"b")  # the mmap backend works there
            assert m.read(0, 1) == b"a"
