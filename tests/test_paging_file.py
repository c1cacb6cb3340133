"""The Smart Paging file's life: made at the first page-out and not before, deleted as soon as it
holds no page, on close, and when a forgotten GuestMemory is collected."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

import vmmem

PAGE = 4096


def files_in(folder) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("backend", ["direct", "mmap"])
def test_file_appears_at_first_page_out_and_not_before(disk_dir, pool, backend):
    with vmmem.GuestMemory(
        pool, 64 * PAGE, frame_limit=4, paging_dir=disk_dir, backend=backend
    ) as mem:
        # Reads fault in zero pages; evicting those is a clean drop: still no file.
        mem.replay(np.arange(64, dtype=np.uint32))
        assert mem.stats.clean_drops == 60
        assert not mem.paging_file.exists
        assert files_in(disk_dir) == []
        # Dirty pages within the limit: no file either.
        mem.replay(np.arange(4, dtype=np.uint32), np.ones(4, dtype=bool))
        assert not mem.paging_file.exists
        # One more page faults, evicting a dirty one: the file is made, in the paging folder.
        mem.replay(np.array([10], dtype=np.uint32))
        s = mem.stats
        assert s.page_outs == 1 and s.file_pages == 1 and s.file_created == 1
        assert mem.paging_file.exists
        assert os.path.dirname(mem.paging_file.path) == str(disk_dir)
        assert files_in(disk_dir) == [os.path.basename(mem.paging_file.path)]
        assert os.path.getsize(mem.paging_file.path) >= PAGE


@pytest.mark.parametrize("backend", ["direct", "mmap"])
def test_file_deleted_when_release_empties_it(disk_dir, pool, backend):
    with vmmem.GuestMemory(
        pool, 64 * PAGE, frame_limit=8, paging_dir=disk_dir, backend=backend
    ) as mem:
        mem.replay(np.arange(16, dtype=np.uint32), np.ones(16, dtype=bool))
        assert mem.stats.file_pages == 8
        path = mem.paging_file.path
        mem.release(0, 4)
        assert mem.paging_file.exists and os.path.exists(path)
        mem.release(4, 4)  # the last pages with a copy
        assert not mem.paging_file.exists
        assert not os.path.exists(path)
        s = mem.stats
        assert s.file_pages == 0 and s.file_size == 0 and s.file_deleted == 1
        # The resident half is untouched; its counters are intact.
        for page in range(8, 16):
            assert int.from_bytes(mem.read(page * PAGE, 8), "little") == 1
        # A new page-out makes a new file.
        mem.frame_limit = 0
        assert mem.paging_file.exists
        assert mem.stats.file_created == 2


def test_file_deleted_by_drain_and_pages_come_back(disk_dir, pool):
    with vmmem.GuestMemory(pool, 32 * PAGE, frame_limit=8, paging_dir=disk_dir) as mem:
        mem.replay(np.arange(12, dtype=np.uint32), np.ones(12, dtype=bool))
        assert mem.paging_file.exists
        mem.frame_limit = 12
        mem.drain()
        assert not mem.paging_file.exists
        assert files_in(disk_dir) == []
        assert mem.stats.resident == 12
        assert all(mem.page_state(p) == vmmem.PageState.DIRTY for p in range(12))
        assert [int.from_bytes(mem.read(p * PAGE, 8), "little") for p in range(12)] == [1] * 12


def test_file_deleted_on_close(disk_dir, pool):
    mem = vmmem.GuestMemory(pool, 32 * PAGE, frame_limit=2, paging_dir=disk_dir)
    mem.replay(np.arange(8, dtype=np.uint32), np.ones(8, dtype=bool))
    path = mem.paging_file.path
    assert os.path.exists(path)
    mem.close()
    assert not os.path.exists(path)
    assert files_in(disk_dir) == []
    mem.close()  # twice is harmless
    assert pool.free_frames == pool.frames


def test_context_manager_deletes_file_even_on_error(disk_dir, pool):
    with (
        pytest.raises(RuntimeError),
        vmmem.GuestMemory(pool, 32 * PAGE, frame_limit=2, paging_dir=disk_dir) as mem,
    ):
        mem.replay(np.arange(8, dtype=np.uint32), np.ones(8, dtype=bool))
        assert mem.paging_file.exists
        raise RuntimeError("the guest crashed")
    assert files_in(disk_dir) == []


@pytest.mark.parametrize("backend", ["direct", "mmap"])
def test_forgotten_guest_leaves_no_file(disk_dir, pool, backend):
    def forget() -> str:
        mem = vmmem.GuestMemory(
            pool, 32 * PAGE, frame_limit=2, paging_dir=disk_dir, backend=backend
        )
        mem.replay(np.arange(8, dtype=np.uint32), np.ones(8, dtype=bool))
        assert os.path.exists(mem.paging_file.path)
        return mem.paging_file.path

    path = forget()
    gc.collect()
    assert not os.path.exists(path)
    assert files_in(disk_dir) == []
    assert pool.free_frames == pool.frames


def test_file_size_follows_pages_and_peak(disk_dir, pool):
    with vmmem.GuestMemory(pool, 64 * PAGE, frame_limit=16, paging_dir=disk_dir) as mem:
        mem.replay(np.arange(40, dtype=np.uint32), np.ones(40, dtype=bool))
        s = mem.stats
        assert s.file_pages == 24 == s.file_pages_peak
        assert mem.paging_file.pages == 24
        assert mem.paging_file.bytes == 24 * PAGE
        assert mem.paging_file.size == s.file_size >= 24 * PAGE
        assert os.path.getsize(mem.paging_file.path) >= 24 * PAGE
        mem.release(0, 20)
        s = mem.stats
        assert s.file_pages == 4 and s.file_pages_peak == 24


@pytest.mark.parametrize("backend", ["direct", "mmap"])
def test_the_file_is_allocated_ahead_of_its_page_outs(disk_dir, pool, backend):
    """2 MiB at a time, so that page-outs write into allocated blocks within the file's size
    (ext4 lets such O_DIRECT writes run side by side; writes that extend a file take its inode
    lock one at a time); the file really occupies what is allocated, and file_size says so."""
    ahead = 2 * 2**20
    with vmmem.GuestMemory(
        pool, 1024 * PAGE, frame_limit=8, paging_dir=disk_dir, backend=backend
    ) as mem:
        mem.replay(np.arange(9, dtype=np.uint32), np.ones(9, dtype=bool))  # one page-out
        st = os.stat(mem.paging_file.path)
        assert mem.stats.page_outs == 1
        assert st.st_size == mem.paging_file.size == ahead
        assert st.st_blocks * 512 >= ahead  # allocated, not a hole
        # the 513th slot is past the first 2 MiB: the next step is allocated
        mem.replay(np.arange(9, 8 + 513 + 8, dtype=np.uint32), np.ones(512 + 8, dtype=bool))
        assert mem.stats.file_pages > ahead // PAGE
        assert os.path.getsize(mem.paging_file.path) == mem.paging_file.size == 2 * ahead
        path = mem.paging_file.path
        mem.release(0, 1024)
        assert not os.path.exists(path) and mem.paging_file.size == 0


def test_each_guest_has_its_own_file(disk_dir, pool):
    with (
        vmmem.GuestMemory(pool, 32 * PAGE, frame_limit=2, paging_dir=disk_dir, name="vm1") as a,
        vmmem.GuestMemory(pool, 32 * PAGE, frame_limit=2, paging_dir=disk_dir, name="vm1") as b,
    ):
        for mem in (a, b):
            mem.replay(np.arange(4, dtype=np.uint32), np.ones(4, dtype=bool))
        assert a.paging_file.path != b.paging_file.path
        assert len(files_in(disk_dir)) == 2
        a.close()
        assert files_in(disk_dir) == [os.path.basename(b.paging_file.path)]


def test_fault_latency_is_what_the_guest_waits_write_back_and_page_in(disk_dir):
    """A fault's time covers its victim's write-back and its own page-in, nested inside it."""
    frames, pages = 16, 64
    trace = np.tile(np.arange(pages, dtype=np.uint32), 2)  # pass 2: write back + page in
    with (
        vmmem.FramePool(frames * PAGE) as pool,
        vmmem.GuestMemory(pool, pages * PAGE, frame_limit=frames, paging_dir=disk_dir) as mem,
    ):
        mem.replay(trace, np.ones(trace.size, dtype=bool))
        s = mem.stats
    assert s.page_outs == 2 * pages - frames and s.page_ins == pages
    # Pass 1's first 16 faults found free frames (no I/O); every later fault wrote or read.
    assert s.disk_faults == s.fault_latency.count == 2 * pages - frames
    assert s.fault_ns >= s.page_in_ns + s.page_out_ns


def test_drain_in_chunks_resumes_and_deletes_the_file_at_the_end(disk_dir):
    frames, pages = 16, 64
    with (
        vmmem.FramePool(pages * PAGE) as pool,
        vmmem.GuestMemory(pool, pages * PAGE, frame_limit=frames, paging_dir=disk_dir) as mem,
    ):
        for page in range(pages):
            mem.write(page * PAGE, page.to_bytes(4, "little") * 8)
        assert mem.stats.file_pages == pages - frames
        with pytest.raises(vmmem.OutOfFramesError):
            mem.drain(max_pages=10)  # the limit cannot hold every page: nothing changes
        assert mem.stats.file_pages == pages - frames and mem.stats.page_ins == 0

        mem.frame_limit = pages
        lefts = []
        while not lefts or lefts[-1]:
            lefts.append(mem.drain(max_pages=10))
            assert mem.paging_file.exists == (lefts[-1] > 0)
        assert lefts == [38, 28, 18, 8, 0]
        assert mem.stats.page_ins == pages - frames and not os.path.exists(mem.paging_file.path)
        for page in range(pages):
            assert mem.read(page * PAGE, 32) == page.to_bytes(4, "little") * 8
            assert mem.page_state(page) is vmmem.PageState.DIRTY  # the frame is the only copy
        with pytest.raises(vmmem.SettingsError):
            mem.drain(max_pages=0)


@pytest.mark.parametrize("backend", ["direct", "mmap"])
def test_large_pages_page_out_and_back_whole(disk_dir, backend):
    """2 MB pages (the x86 large page) go to the file and back whole, on both backends."""
    large = 2 * 2**20
    with (
        vmmem.FramePool("4MB", page_size="2MB") as pool,
        vmmem.GuestMemory(pool, "16MB", paging_dir=disk_dir, backend=backend) as mem,
    ):
        assert (mem.page_size, mem.pages, mem.frame_limit) == (large, 8, 2)
        pattern = [bytes([page + 1]) * 4096 + os.urandom(64) for page in range(8)]
        for page, data in enumerate(pattern):
            mem.write(page * large + large - len(data), data)  # the page's last bytes
        s = mem.stats
        assert s.page_outs == 6 and s.bytes_written == 6 * large
        for page, data in enumerate(pattern):
            assert mem.read(page * large + large - len(data), len(data)) == data
        assert mem.stats.bytes_read == mem.stats.page_ins * large > 0


def test_mmap_backend_pages_through_a_filesystem_without_direct_io(tmp_path):
    """ramfs refuses O_DIRECT: the mmap backend's page-outs fall back to pwrite +
    sync_file_range there, and every page comes back intact (ramfs is RAM: only the data
    path is checked here, the device proofs are in test_device_io.py)."""
    import warnings

    from conftest import mounted

    with mounted(["-t", "ramfs"], "ramfs", tmp_path / "ramfs") as mnt:
        probe = mnt / "probe"
        try:
            fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o600)
        except OSError:
            pass
        else:
            os.close(fd)
            pytest.skip("this kernel's ramfs accepts O_DIRECT: no fallback to exercise")
        finally:
            probe.unlink(missing_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", vmmem.RamBackedWarning)
            with (
                vmmem.FramePool(256 * PAGE) as pool,
                vmmem.GuestMemory(
                    pool, 256 * PAGE, frame_limit=16, paging_dir=mnt, backend="mmap"
                ) as mem,
            ):
                for rounds in range(3):
                    for page in range(256):
                        mem.write(page * PAGE, (page * 7 + rounds).to_bytes(8, "little"))
                    for page in np.random.default_rng(rounds).permutation(256):
                        got = int.from_bytes(mem.read(int(page) * PAGE, 8), "little")
                        assert got == int(page) * 7 + rounds
                s = mem.stats
                assert s.page_outs >= 3 * 240 and s.page_ins >= 3 * 240
                mem.frame_limit = 256
                assert mem.drain() == 0 and not mem.paging_file.exists


def test_core_counts_paged_out_pages_and_the_file_exactly_across_a_reset(disk_dir, pool):
    """paged_out and file_exists come from the core's own state: a reset of the counters
    (which zeroes file_created/file_deleted and zero_fills) changes neither."""
    with vmmem.GuestMemory(pool, 64 * PAGE, frame_limit=4, paging_dir=disk_dir) as mem:
        mem.replay(np.arange(20, dtype=np.uint32), np.ones(20, dtype=bool))
        mem.release(0, 4)  # four paged-out pages given back: no longer counted
        mem.reset_stats()
        for c in (mem.counters, mem.stats.as_dict()):
            assert c["file_exists"] == 1 and c["file_created"] == c["file_deleted"] == 0
            assert c["paged_out"] == len(list(mem.pages_in_state(vmmem.PageState.PAGED_OUT)))
            assert c["paged_out"] == 12 and c["zero_fills"] == 0
        mem.frame_limit = 16
        mem.drain()
        c = mem.counters
        assert c["paged_out"] == 0 and c["file_exists"] == 0


def test_a_session_sees_its_file_after_a_counter_reset(disk_dir, pool):
    """The VM's session asks the core whether the Smart Paging file exists and how many pages
    it holds: after reset_stats a live file is still in use, with its pages."""
    import threading

    from vmmem.hyperv.session import BootRecord, GuestSession

    with vmmem.GuestMemory(pool, 64 * PAGE, frame_limit=4, paging_dir=disk_dir) as mem:
        lock = threading.RLock()
        session = GuestSession(mem, BootRecord("boot"), 64, lock, threading.Condition(lock))
        mem.replay(np.arange(20, dtype=np.uint32), np.ones(20, dtype=bool))
        mem.reset_stats()
        assert session.observe_file()
        assert session.record.peak_paged_out == 16
