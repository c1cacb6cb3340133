"""What the emulator itself costs in host memory: process RSS stays within the pool + 16 bytes
per guest page + a few MB, and a 64 GiB guest is created in well under a second.

    pytest benchmarks/bench_memory.py
"""

from __future__ import annotations

import gc
import time

import numpy as np
import psutil
import pytest

import vmmem

PAGE = 4096
MiB = 2**20
FEW_MB = 8 * MiB
META_PER_PAGE = 16


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def touch_every_page(mem: vmmem.GuestMemory, chunk: int = 65536) -> None:
    """Faults every guest page once (reads: zero-fills and clean drops, no I/O), in chunks so
    the trace itself stays small."""
    for start in range(0, mem.pages, chunk):
        mem.replay(np.arange(start, min(start + chunk, mem.pages), dtype=np.uint32))


@pytest.mark.parametrize("guest_gib", [1, 16])
def test_rss_stays_within_pool_plus_metadata(benchmark, disk_dir, guest_gib):
    pool_bytes = 256 * MiB
    baseline = rss()
    with vmmem.FramePool(pool_bytes) as pool:
        after_pool = rss()
        with vmmem.GuestMemory(pool, guest_gib * 2**30, paging_dir=disk_dir) as mem:
            benchmark.pedantic(touch_every_page, args=(mem,), rounds=1, iterations=1)
            assert mem.stats.zero_fills == mem.pages
            peak = rss()
            budget = pool_bytes + META_PER_PAGE * mem.pages + FEW_MB
            used = peak - baseline
            benchmark.extra_info.update(
                {
                    "guest_bytes": mem.size,
                    "guest_pages": mem.pages,
                    "pool_bytes": pool_bytes,
                    "rss_growth_bytes": used,
                    "budget_bytes": budget,
                    "pool_rss_bytes": after_pool - baseline,
                    "metadata_bytes_per_page": (used - (after_pool - baseline)) / mem.pages,
                }
            )
            print(
                f"\n{guest_gib} GiB guest on a 256 MiB pool: RSS grew {used / MiB:.1f} MiB "
                f"(budget {budget / MiB:.1f} MiB; pool {(after_pool - baseline) / MiB:.1f} "
                f"MiB, metadata {(used - (after_pool - baseline)) / mem.pages:.1f} B/page)"
            )
            assert used <= budget
            assert after_pool - baseline >= 0.95 * pool_bytes  # the pool is really committed


def test_64_gib_guest_created_in_well_under_a_second(benchmark, disk_dir):
    with vmmem.FramePool(16 * MiB) as pool:
        baseline = rss()

        def create_and_close() -> None:
            vmmem.GuestMemory(pool, "64GiB", paging_dir=disk_dir).close()

        benchmark.pedantic(create_and_close, rounds=5, iterations=1)
        start = time.perf_counter()
        mem = vmmem.GuestMemory(pool, "64GiB", paging_dir=disk_dir)
        created = time.perf_counter() - start
        grown = rss() - baseline
        mem.write(64 * 2**30 - 8, b"the end.")  # the last page works
        assert mem.read(64 * 2**30 - 8, 8) == b"the end."
        mem.close()
        benchmark.extra_info.update({"create_seconds": created, "rss_growth_bytes": grown})
        print(
            f"\n64 GiB guest: created in {created * 1e3:.2f} ms "
            f"(median create+close {benchmark.stats.stats.median * 1e3:.2f} ms), "
            f"RSS grew {grown / MiB:.2f} MiB"
        )
        assert grown < FEW_MB
