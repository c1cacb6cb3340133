"""Guests of any size Hyper-V allows: metadata costs what the pages touched cost, drain costs
what the file holds. (Counts and RSS only: the timings are in benchmarks/.)"""

from __future__ import annotations

import gc

import numpy as np
import psutil
import pytest

import vmmem

PAGE = 4096
TiB = 2**40
MiB = 2**20


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def test_a_12_tib_guest_is_created_on_a_small_host_and_costs_nothing_untouched(disk_dir):
    """Hyper-V's maximum (12 TB): 3.2 G pages, whose page table alone would be 24 GiB."""
    with vmmem.FramePool(16 * PAGE) as pool:
        before = rss()
        mem = vmmem.GuestMemory(pool, 12 * TiB, paging_dir=disk_dir)
        grown = rss() - before
        assert mem.pages == 3 * 2**30 and mem.frame_limit == 16
        assert grown < 1 * MiB, f"creating a 12 TiB guest grew RSS by {grown} bytes"
        mem.write(12 * TiB - 8, b"the end.")
        mem.write(0, b"start")
        assert mem.read(12 * TiB - 8, 8) == b"the end."
        assert mem.read(0, 5) == b"start"
        mem.close()


def test_metadata_follows_the_pages_touched_not_the_guest_size(disk_dir):
    """1 TiB guest, 64 MiB of it touched: RSS grows by the touched pages' page-table share,
    not by the 2 GiB a full page table of 1 TiB would take."""
    touched = 16384  # 64 MiB
    with vmmem.FramePool(256 * PAGE) as pool:
        before = rss()
        with vmmem.GuestMemory(pool, 1 * TiB, paging_dir=disk_dir) as mem:
            mem.replay(np.arange(touched, dtype=np.uint32))  # zero-fills and clean drops
            assert mem.stats.zero_fills == touched
            grown = rss() - before
        # 8 bytes of page table per touched page (128 KiB) plus the process's noise.
        assert grown < 4 * MiB, f"touching 64 MiB of a 1 TiB guest grew RSS by {grown} bytes"


def sparse_pages(npages: int) -> list[int]:
    """Pages at the bitmap's word and level edges, and the last page, in page order."""
    edges = {0, 1, 63, 64, 65, 4095, 4096, 4097, 262143, 262144, 2**24 - 1, 2**24, 2**30 + 5}
    edges |= {npages - 1, npages - 64, npages // 2}
    return sorted(p for p in edges if 0 <= p < npages)


@pytest.mark.parametrize("backend", ["direct", "mmap"])
def test_drain_finds_every_page_of_a_huge_sparse_guest(disk_dir, backend):
    """Pages scattered over a 12 TiB guest: drain brings each back, in page order, resuming
    across calls, and deletes the file."""
    npages = 3 * 2**30
    pages = sparse_pages(npages)
    with (
        vmmem.FramePool(len(pages) * PAGE) as pool,
        vmmem.GuestMemory(pool, npages * PAGE, paging_dir=disk_dir, backend=backend) as mem,
    ):
        for p in pages:
            mem.write(p * PAGE, p.to_bytes(8, "little"))
        mem.frame_limit = 0
        s = mem.stats
        assert s.page_outs == len(pages) == s.file_pages
        assert all(mem.page_state(p) is vmmem.PageState.PAGED_OUT for p in pages)
        mem.frame_limit = len(pages)
        lefts = []
        while not lefts or lefts[-1]:
            lefts.append(mem.drain(max_pages=4))
        assert lefts[-1] == 0 and len(lefts) == -(-len(pages) // 4)
        assert not mem.paging_file.exists
        assert mem.stats.page_ins == len(pages)
        for p in pages:
            assert mem.page_state(p) is vmmem.PageState.DIRTY
            assert mem.read(p * PAGE, 8) == p.to_bytes(8, "little")


def test_drain_resumes_at_its_cursor_and_wraps(disk_dir):
    """A partial drain, then pages paged out below the cursor: the next calls wrap round and
    find them too."""
    npages = 1 << 20
    with (
        vmmem.FramePool(64 * PAGE) as pool,
        vmmem.GuestMemory(pool, npages * PAGE, paging_dir=disk_dir) as mem,
    ):
        high = [npages - 10, npages - 5, npages - 1]
        for p in [5, 70_000, *high]:
            mem.write(p * PAGE, b"x")
        mem.frame_limit = 0
        mem.frame_limit = 64
        assert mem.drain(max_pages=2) == 3  # pages 5 and 70,000 came back
        mem.write(3 * PAGE, b"y")  # resident, dirty
        mem.frame_limit = 0  # 3, 5, 70,000 go out again (below the cursor)
        mem.frame_limit = 64
        assert mem.drain() == 0
        assert not mem.paging_file.exists
        for p in [3, 5, 70_000, *high]:
            assert mem.page_state(p) is vmmem.PageState.DIRTY


def test_counters_match_the_stats_snapshot(disk_dir, pool):
    with vmmem.GuestMemory(pool, 256 * PAGE, frame_limit=8, paging_dir=disk_dir) as mem:
        mem.replay(np.arange(256, dtype=np.uint32), np.ones(256, dtype=bool))
        counters = mem.counters
        stats = mem.stats.as_dict()
        assert counters == {name: stats[name] for name in counters}
        assert counters["page_outs"] == 248 and counters["resident"] == 8
        assert mem.resident_pages == 8 and mem.frame_limit == 8
        assert mem.paging_file.pages == 248 == mem.paging_file.peak_pages
        assert mem.paging_file.size >= 248 * PAGE
