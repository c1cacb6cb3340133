"""Several guests on one pool, replaying in threads at once (the C core runs without the GIL):
contents and counters stay exactly right."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from pagemodel import COUNTERS, ModelMemory, ModelPool

import vmmem

PAGE = 4096


def run_in_threads(jobs) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def wrap(job):
        try:
            start.wait()
            job()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def traces(seed: int, pages: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    hot = rng.integers(0, pages // 8, size=n)
    cold = rng.integers(0, pages, size=n)
    trace = np.where(rng.random(n) < 0.7, hot, cold).astype(np.uint32)
    writes = (rng.random(n) < 0.25).astype(np.uint8)
    return trace, writes


@pytest.mark.parametrize("policy", ["lru", "clock"])
@pytest.mark.parametrize("backend", ["direct", "mmap"])
def test_guests_replaying_in_threads_match_the_model(disk_dir, backend, policy):
    guests = 3
    pages, limit, n, chunks = 600, 48, 12_000, 6
    with vmmem.FramePool(guests * limit * PAGE) as pool:
        mems = [
            vmmem.GuestMemory(
                pool,
                pages * PAGE,
                frame_limit=limit,
                paging_dir=disk_dir,
                backend=backend,
                policy=policy,
                name=f"vm{i}",
            )
            for i in range(guests)
        ]
        work = [traces(seed, pages, n) for seed in range(guests)]

        def job(mem, trace, writes):
            def run():
                # Several calls, so the threads interleave between calls as well as within.
                for part, flags in zip(
                    np.array_split(trace, chunks), np.array_split(writes, chunks), strict=True
                ):
                    mem.replay(part, flags)

            return run

        run_in_threads([job(m, t, w) for m, (t, w) in zip(mems, work, strict=True)])

        # Frame limits add up to the pool: no guest ever waited on another, so each one's
        # history is exactly the model's.
        for mem, (trace, writes) in zip(mems, work, strict=True):
            model = ModelMemory(ModelPool(limit), pages, PAGE, policy, frame_limit=limit)
            model.replay(trace.tolist(), writes.tolist())
            s = mem.stats
            assert {c: getattr(s, c) for c in COUNTERS} == model.counters
            assert s.resident == model.resident and s.file_pages == model.file_pages
            counts = np.bincount(trace[writes.astype(bool)], minlength=pages)
            mem.frame_limit = limit
            got = [int.from_bytes(mem.read(p * PAGE, 8), "little") for p in range(pages)]
            assert got == counts.tolist()
        for mem in mems:
            mem.close()
        assert pool.free_frames == pool.frames


@pytest.mark.parametrize("backend", ["direct", "mmap"])
def test_guests_competing_for_a_short_pool(disk_dir, backend):
    """Frame limits add up to more than the pool: guests evict their own pages when the pool is
    empty. Counts then depend on timing, but contents and the books must still balance."""
    guests, pages, n = 3, 400, 10_000
    with vmmem.FramePool(64 * PAGE) as pool:
        mems = [
            vmmem.GuestMemory(
                pool,
                pages * PAGE,
                frame_limit=48,
                paging_dir=disk_dir,
                backend=backend,
                name=f"vm{i}",
            )
            for i in range(guests)
        ]
        # Each guest first holds one page, so none can ever find itself without a frame.
        for mem in mems:
            mem.replay(np.array([0], np.uint32))
        work = [traces(seed + 10, pages, n) for seed in range(guests)]
        run_in_threads(
            [lambda m=m, t=t, w=w: m.replay(t, w) for m, (t, w) in zip(mems, work, strict=True)]
        )
        resident = 0
        for mem, (trace, writes) in zip(mems, work, strict=True):
            s = mem.stats
            assert s.accesses == n + 1
            assert s.hits + s.zero_fills + s.page_ins == s.accesses
            assert s.page_outs + s.clean_drops == s.zero_fills + s.page_ins - s.resident
            assert s.resident <= 48
            resident += s.resident
            counts = np.bincount(trace[writes.astype(bool)], minlength=pages)
            for p in np.flatnonzero(counts)[:40]:
                assert int.from_bytes(mem.read(int(p) * PAGE, 8), "little") == counts[p]
        assert pool.free_frames == pool.frames - sum(m.stats.resident for m in mems)
        for mem in mems:
            mem.close()
        assert pool.free_frames == pool.frames
