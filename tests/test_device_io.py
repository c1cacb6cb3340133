"""Paging I/O reaches the block device: the device's own counters (/proc/diskstats, via
vmmem.devices) grow by at least the bytes the core says it paged, for both backends.

Other processes may add I/O to the same device meanwhile, so the checks are ">=": what cannot
happen is the page cache absorbing the paging, which would leave the device counters short.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import settled_delta, small_ext4

import vmmem
from vmmem import devices

PAGE = 4096
GUEST_PAGES = 2048  # 8 MiB, far more than the pool
POOL_FRAMES = 64


@pytest.mark.parametrize("backend", ["direct", "mmap"])
def test_page_outs_and_page_ins_reach_the_device(disk_dir, backend):
    info = devices.device_for_path(disk_dir)
    rng = np.random.default_rng(1)
    with (
        vmmem.FramePool(POOL_FRAMES * PAGE) as pool,
        vmmem.GuestMemory(
            pool, GUEST_PAGES * PAGE, frame_limit=POOL_FRAMES, paging_dir=disk_dir, backend=backend
        ) as mem,
    ):
        before = devices.io_counters(info)
        mem.replay(np.arange(GUEST_PAGES, dtype=np.uint32), np.ones(GUEST_PAGES, dtype=bool))
        mem.frame_limit = 0  # every page out
        after_writes = devices.io_counters(info)
        s = mem.stats
        assert s.page_outs == GUEST_PAGES
        written = after_writes - before
        assert written.write_bytes >= s.bytes_written == GUEST_PAGES * PAGE
        assert written.write_count > 0

        mem.frame_limit = POOL_FRAMES
        order = rng.permutation(GUEST_PAGES).astype(np.uint32)
        mem.replay(order)  # random page-ins of clean copies, clean drops in between
        after_reads = devices.io_counters(info)
        s = mem.stats
        assert s.page_ins == GUEST_PAGES
        assert s.page_outs == GUEST_PAGES  # clean pages were dropped, not written again
        read = after_reads - after_writes
        assert read.read_bytes >= s.bytes_read == GUEST_PAGES * PAGE
        assert read.read_count > 0
        # Latency was timed for every transfer.
        assert s.page_in_latency.count == GUEST_PAGES
        assert s.page_out_latency.count == GUEST_PAGES
        assert 0 < s.page_in_latency.percentile(50) <= s.page_in_latency.percentile(99)

        # And what came back is what was written: each page's counter is 1.
        for page in rng.choice(GUEST_PAGES, 32, replace=False):
            assert int.from_bytes(mem.read(int(page) * PAGE, 8), "little") == 1


@pytest.mark.parametrize("backend", ["direct", "mmap"])
def test_rewrites_of_dirty_pages_reach_the_device_again(disk_dir, backend):
    """A page written, paged out, faulted in, written again and evicted is written again."""
    info = devices.device_for_path(disk_dir)
    pages = 512
    with (
        vmmem.FramePool(POOL_FRAMES * PAGE) as pool,
        vmmem.GuestMemory(
            pool, pages * PAGE, frame_limit=POOL_FRAMES, paging_dir=disk_dir, backend=backend
        ) as mem,
    ):
        all_pages = np.arange(pages, dtype=np.uint32)
        mem.replay(all_pages, np.ones(pages, dtype=bool))
        mem.frame_limit = 0
        mem.frame_limit = POOL_FRAMES
        mem.reset_stats()
        before = devices.io_counters(info)
        mem.replay(all_pages[::-1].copy(), np.ones(pages, dtype=bool))
        mem.frame_limit = 0
        delta = devices.io_counters(info) - before
        s = mem.stats
        assert s.page_ins == pages and s.page_outs == pages
        assert delta.read_bytes >= s.bytes_read
        assert delta.write_bytes >= s.bytes_written
        assert s.file_pages == pages  # rewrites reuse each page's slot
        mem.frame_limit = POOL_FRAMES
        assert int.from_bytes(mem.read(0, 8), "little") == 2


def test_release_and_clean_drops_cost_no_paging_io(disk_dir, pool):
    """Ballooning (release) and dropping clean pages write nothing to the paging file."""
    with vmmem.GuestMemory(pool, 256 * PAGE, frame_limit=16, paging_dir=disk_dir) as mem:
        mem.replay(np.arange(256, dtype=np.uint32))
        mem.release(0, 256)
        s = mem.stats
        assert s.bytes_written == s.bytes_read == 0
        assert s.clean_drops == 240 and s.releases == 16
        assert not mem.paging_file.exists


@pytest.mark.parametrize("backend", ["direct", "mmap"])
def test_exact_device_io_on_a_private_loop_device(tmp_path, backend):
    """On a loop device no other process uses, the counters can be held to the core's figures:
    every page-in is at least one device read request, and neither direction moves much more
    than it paged (read-ahead or a page cache serving page-ins would break one or the other)."""
    pages = 1024
    slack = 2 * 2**20  # filesystem metadata
    with (
        small_ext4(64 * 2**20, tmp_path) as mnt,
        vmmem.FramePool(pages * PAGE) as pool,
        vmmem.GuestMemory(
            pool, pages * PAGE, frame_limit=pages, paging_dir=mnt, backend=backend
        ) as mem,
    ):
        info = devices.device_for_path(mnt)
        assert info.device.startswith("loop") and info.has_counters
        mem.replay(np.arange(pages, dtype=np.uint32), np.ones(pages, dtype=bool))
        before = devices.io_counters(info)
        mem.frame_limit = 0
        wrote = settled_delta(info, before, writes=pages)
        assert mem.stats.page_outs == pages
        assert wrote.write_count >= pages
        assert pages * PAGE <= wrote.write_bytes <= pages * PAGE + slack

        mem.frame_limit = 16
        mem.reset_stats()
        order = np.random.default_rng(3).permutation(pages).astype(np.uint32)
        before = devices.io_counters(info)
        mem.replay(order)
        read = settled_delta(info, before, reads=pages)
        s = mem.stats
        assert s.page_ins == pages
        assert read.read_count >= s.page_ins, "page-ins were served without device reads"
        assert s.bytes_read <= read.read_bytes <= s.bytes_read + slack

        # Rewrites into the slots the pages already hold: again one page written per page-out.
        mem.frame_limit = pages
        mem.replay(order, np.ones(pages, dtype=bool))
        mem.reset_stats()
        before = devices.io_counters(info)
        mem.frame_limit = 0
        rewrote = settled_delta(info, before, writes=pages)
        s = mem.stats
        assert s.page_outs == pages and s.file_pages == pages
        assert pages * PAGE <= rewrote.write_bytes <= pages * PAGE + slack
        # The slots' old blocks are not cached (every page-in dropped its page): a rewrite
        # that read the old block first (a store into the mmap backend's mapping did) would
        # read as much as it writes. Under 1 % of the bytes written may be read.
        assert rewrote.read_bytes <= 0.01 * rewrote.write_bytes, (
            f"page-outs read {rewrote.read_bytes} bytes from the device while writing "
            f"{rewrote.write_bytes}"
        )


@pytest.mark.parametrize("backend", ["direct", "mmap"])
def test_page_outs_read_nothing_from_a_private_loop_device(tmp_path, backend):
    """Random dirty evictions into slots whose blocks are on the device only: one write
    request per page-out, and no read, round after round (the mmap backend's page-out used to
    read each old block before rewriting it)."""
    pages, batch = 2048, 256
    rng = np.random.default_rng(11)
    with (
        small_ext4(64 * 2**20, tmp_path) as mnt,
        vmmem.FramePool(batch * PAGE) as pool,
        vmmem.GuestMemory(
            pool, pages * PAGE, frame_limit=batch, paging_dir=mnt, backend=backend
        ) as mem,
    ):
        info = devices.device_for_path(mnt)
        mem.replay(np.arange(pages, dtype=np.uint32), np.ones(pages, dtype=bool))
        mem.frame_limit = 0  # a full file: every slot written once
        written = read = outs = 0
        for _ in range(4):
            mem.frame_limit = batch
            chosen = rng.choice(pages, batch, replace=False).astype(np.uint32)
            mem.replay(chosen, np.ones(batch, dtype=bool))  # page-ins, then dirty
            mem.reset_stats()
            before = devices.io_counters(info)
            mem.frame_limit = 0
            delta = settled_delta(info, before, writes=batch)
            outs += mem.stats.page_outs
            written += delta.write_bytes
            read += delta.read_bytes
            assert delta.write_count >= batch
        assert outs == 4 * batch and mem.stats.file_pages == pages
        assert written >= outs * PAGE
        assert read <= 0.01 * written, f"page-outs read {read} bytes while writing {written}"
