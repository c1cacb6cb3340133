"""Exact miss counts on fixed traces, checked against independent textbook implementations
(an OrderedDict LRU and a circular-buffer CLOCK with a hand), not against the reference model."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

import vmmem
from vmmem.traces import zipf_trace

PAGE = 4096


def lru_simulate(trace: np.ndarray, writes: np.ndarray | None, frames: int) -> dict[str, int]:
    """Misses and dirty write-backs of LRU with `frames` frames."""
    cache: OrderedDict[int, bool] = OrderedDict()  # page -> dirty
    in_file: set[int] = set()
    misses = write_backs = file_hits = 0
    for i, page in enumerate(trace.tolist()):
        w = bool(writes[i]) if writes is not None else False
        if page in cache:
            cache.move_to_end(page)
            cache[page] = cache[page] or w
            continue
        misses += 1
        if page in in_file:
            file_hits += 1
        if len(cache) == frames:
            old, dirty = cache.popitem(last=False)
            if dirty:
                write_backs += 1
                in_file.add(old)
        cache[page] = w
    return {"misses": misses, "page_outs": write_backs, "page_ins": file_hits}


def clock_simulate(trace: np.ndarray, frames: int) -> int:
    """Misses of CLOCK: frames in a ring, a hand, one referenced bit per frame; a new page gets
    its bit clear and the hand moves past it."""
    ring: list[int] = []
    ref: list[bool] = []
    where: dict[int, int] = {}
    hand = 0
    misses = 0
    for page in trace.tolist():
        slot = where.get(page)
        if slot is not None:
            ref[slot] = True
            continue
        misses += 1
        if len(ring) < frames:
            where[page] = len(ring)
            ring.append(page)
            ref.append(False)
            continue
        while ref[hand]:
            ref[hand] = False
            hand = (hand + 1) % frames
        del where[ring[hand]]
        ring[hand] = page
        ref[hand] = False
        where[page] = hand
        hand = (hand + 1) % frames
    return misses


GUEST_PAGES = 2000
READ_TRACE = zipf_trace(100_000, GUEST_PAGES, 1.2, seed=20240601)


@pytest.mark.parametrize("frames", [1, 7, 100, 600, 1999, 2000])
def test_lru_read_trace_miss_count_is_exact(disk_dir, frames):
    expected = lru_simulate(READ_TRACE, None, frames)
    with (
        vmmem.FramePool(GUEST_PAGES * PAGE) as pool,
        vmmem.GuestMemory(
            pool, GUEST_PAGES * PAGE, frame_limit=frames, paging_dir=disk_dir, policy="lru"
        ) as mem,
    ):
        mem.replay(READ_TRACE)
        s = mem.stats
    assert s.accesses == len(READ_TRACE)
    # Read-only: every miss zero-fills, every eviction is a clean drop, no file ever.
    assert s.zero_fills == expected["misses"]
    assert s.hits == len(READ_TRACE) - expected["misses"]
    assert s.clean_drops == expected["misses"] - s.resident
    assert s.page_ins == s.page_outs == s.bytes_written == 0
    assert s.file_pages_peak == 0


@pytest.mark.parametrize("frames", [1, 7, 100, 600, 1999, 2000])
def test_clock_read_trace_miss_count_is_exact(disk_dir, frames):
    misses = clock_simulate(READ_TRACE, frames)
    with (
        vmmem.FramePool(GUEST_PAGES * PAGE) as pool,
        vmmem.GuestMemory(
            pool, GUEST_PAGES * PAGE, frame_limit=frames, paging_dir=disk_dir, policy="clock"
        ) as mem,
    ):
        mem.replay(READ_TRACE)
        s = mem.stats
    assert s.zero_fills == misses
    assert s.hits == len(READ_TRACE) - misses


def test_clock_differs_from_lru_on_this_trace():
    # Guards the two simulators against being the same algorithm by mistake.
    assert clock_simulate(READ_TRACE, 100) != lru_simulate(READ_TRACE, None, 100)["misses"]


@pytest.mark.parametrize("backend", ["direct", "mmap"])
@pytest.mark.parametrize("frames", [16, 120])
def test_lru_write_trace_page_ins_and_outs_are_exact(disk_dir, backend, frames):
    pages = 400
    trace = zipf_trace(6_000, pages, 1.1, seed=7)
    writes = (np.random.default_rng(8).random(len(trace)) < 0.3).astype(np.uint8)
    expected = lru_simulate(trace, writes, frames)
    with (
        vmmem.FramePool(frames * PAGE) as pool,
        vmmem.GuestMemory(
            pool,
            pages * PAGE,
            frame_limit=frames,
            paging_dir=disk_dir,
            backend=backend,
            policy="lru",
        ) as mem,
    ):
        mem.replay(trace, writes)
        s = mem.stats
        # Every write incremented its page's first 8 bytes: the counts must all be there.
        counts = np.bincount(trace[writes.astype(bool)], minlength=pages)
        for page in np.flatnonzero(counts)[:50]:
            first8 = mem.read(int(page) * PAGE, 8)
            assert int.from_bytes(first8, "little") == counts[page]
    assert s.zero_fills + s.page_ins == expected["misses"]
    assert s.page_ins == expected["page_ins"]
    assert s.page_outs == expected["page_outs"]
    assert s.bytes_written == expected["page_outs"] * PAGE
    assert s.bytes_read == expected["page_ins"] * PAGE
