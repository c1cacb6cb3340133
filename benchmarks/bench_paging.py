"""Page-in and page-out rates of both backends, 4 KiB, random, one thread, through
pytest-benchmark (few rounds: every round is real disk I/O).

For the side-by-side comparison with fio on the same folder, run benchmarks/compare_fio.py.

    pytest benchmarks/bench_paging.py
"""

from __future__ import annotations

import numpy as np
import pytest

import vmmem
from vmmem import devices

PAGE = 4096
PAGES = 32768  # a 128 MiB paging file
BATCH = 4096  # transfers timed per round


def laid_out(pool: vmmem.FramePool, folder, backend: str) -> vmmem.GuestMemory:
    """A guest whose every page was written and paged out once: a full paging file."""
    mem = vmmem.GuestMemory(
        pool,
        PAGES * PAGE,
        frame_limit=PAGES,
        paging_dir=folder,
        backend=backend,
        name=f"bench-{backend}",
    )
    mem.replay(np.arange(PAGES, dtype=np.uint32), np.ones(PAGES, dtype=bool))
    mem.frame_limit = 0
    return mem


def _record(
    benchmark,
    kind: str,
    s: vmmem.MemoryStats,
    hist: vmmem.LatencyHistogram,
    ios: int,
    device: devices.IOCounters | None,
) -> None:
    rate = ios / benchmark.stats.stats.median
    benchmark.extra_info.update(
        {
            f"{kind}_per_s": rate,
            f"{kind}_p50_us": hist.percentile(50) * 1e6,
            f"{kind}_p99_us": hist.percentile(99) * 1e6,
            "device_read_bytes": None if device is None else device.read_bytes,
            "device_write_bytes": None if device is None else device.write_bytes,
            "paged_bytes": s.bytes_read + s.bytes_written,
        }
    )
    print(
        f"\n{kind} ({benchmark.extra_info['backend']}): {rate:,.0f}/s, "
        f"p50 {hist.percentile(50) * 1e6:.0f} us, p99 {hist.percentile(99) * 1e6:.0f} us"
    )


@pytest.mark.parametrize("backend", ["direct", "mmap"])
def test_page_in_rate(benchmark, disk_dir, backend):
    benchmark.extra_info["backend"] = backend
    rng = np.random.default_rng(1)
    info = devices.device_for_path(disk_dir)
    with vmmem.FramePool(PAGES * PAGE) as pool:
        mem = laid_out(pool, disk_dir, backend)

        def setup():
            mem.frame_limit = 0  # everything out again; clean pages go without I/O
            mem.frame_limit = 256
            return (rng.permutation(PAGES)[:BATCH].astype(np.uint32),), {}

        mem.reset_stats()
        before = devices.io_counters(info)
        benchmark.pedantic(mem.replay, setup=setup, rounds=5, iterations=1)
        after = devices.io_counters(info)
        s = mem.stats
        assert s.page_ins == 5 * BATCH and s.page_outs == 0
        _record(
            benchmark,
            "page_ins",
            s,
            s.page_in_latency,
            BATCH,
            None if before is None else after - before,
        )
        mem.close()


@pytest.mark.parametrize("backend", ["direct", "mmap"])
def test_page_out_rate(benchmark, disk_dir, backend):
    benchmark.extra_info["backend"] = backend
    rng = np.random.default_rng(2)
    info = devices.device_for_path(disk_dir)
    with vmmem.FramePool(PAGES * PAGE) as pool:
        mem = laid_out(pool, disk_dir, backend)

        def setup():
            # A random batch, faulted in and dirtied: evicting it rewrites existing slots.
            mem.frame_limit = BATCH
            batch = rng.permutation(PAGES)[:BATCH].astype(np.uint32)
            mem.replay(batch, np.ones(BATCH, dtype=bool))
            return (), {}

        def evict_all():
            mem.frame_limit = 0

        mem.reset_stats()
        before = devices.io_counters(info)
        benchmark.pedantic(evict_all, setup=setup, rounds=5, iterations=1)
        after = devices.io_counters(info)
        s = mem.stats
        assert s.page_outs == 5 * BATCH
        _record(
            benchmark,
            "page_outs",
            s,
            s.page_out_latency,
            BATCH,
            None if before is None else after - before,
        )
        mem.close()
