"""The hit path against the reference cache simulator, in one run, on one trace.

libCacheSim replays the same Zipf trace (50,000 pages, 10 M reads) with its LRU and Clock;
vmmem replays it with the working set resident. Goal: exact LRU clearly ahead of libCacheSim's
LRU (>= 1.5 x) and >= 30 M accesses/s.

    pip install libcachesim && pytest benchmarks/bench_vs_libcachesim.py -s
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import vmmem
from vmmem.traces import write_oracle_general, zipf_trace

lcs = pytest.importorskip("libcachesim")

PAGE = 4096
WORKING_SET = 50_000
ACCESSES = 10_000_000
SIMULATORS = {"lru": "LRU", "clock": "Clock"}


@pytest.fixture(scope="module")
def trace() -> np.ndarray:
    return zipf_trace(ACCESSES, WORKING_SET, 1.1, seed=42)


def _libcachesim_rate(path: str, simulator: str, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        reader = lcs.TraceReader(path, lcs.TraceType.ORACLE_GENERAL_TRACE)
        cache = getattr(lcs, simulator)(cache_size=WORKING_SET * PAGE)
        start = time.perf_counter()
        cache.process_trace(reader)
        best = min(best, time.perf_counter() - start)
    return ACCESSES / best


@pytest.mark.parametrize("policy", ["lru", "clock"])
def test_hit_path_vs_libcachesim(benchmark, disk_dir, tmp_path, trace, policy):
    path = str(tmp_path / "trace.oracleGeneral.bin")
    write_oracle_general(path, trace, PAGE)
    reference = _libcachesim_rate(path, SIMULATORS[policy])
    with (
        vmmem.FramePool(WORKING_SET * PAGE) as pool,
        vmmem.GuestMemory(pool, WORKING_SET * PAGE, paging_dir=disk_dir, policy=policy) as mem,
    ):
        mem.replay(np.arange(WORKING_SET, dtype=np.uint32))
        benchmark.pedantic(mem.replay, args=(trace,), rounds=5, iterations=1, warmup_rounds=1)
    rate = ACCESSES / benchmark.stats.stats.min
    benchmark.extra_info.update(
        {"vmmem_per_s": rate, "libcachesim_per_s": reference, "ratio": rate / reference}
    )
    print(
        f"\n{policy}: vmmem {rate / 1e6:.1f} M/s, libCacheSim {SIMULATORS[policy]} "
        f"{reference / 1e6:.1f} M/s: {rate / reference:.1f} x"
    )
    assert rate >= 1.5 * reference
    if policy == "lru":
        assert rate >= 30e6
