"""The core's replacement against libCacheSim's, on the same trace: exact miss counts.

libCacheSim is the reference cache simulator; its LRU and Clock (FIFO with one reference bit)
are the policies the core implements, so every miss must agree, not just the ratio.
"""

import numpy as np
import pytest

import vmmem
from vmmem.traces import write_oracle_general, zipf_trace

lcs = pytest.importorskip("libcachesim")

PAGE = 4096
PAGES = 5_000
TRACE = zipf_trace(200_000, PAGES, 1.05, seed=3)


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("lcs") / "trace.oracleGeneral.bin"
    write_oracle_general(path, TRACE, PAGE)
    return path


@pytest.mark.parametrize("frames", [100, 1_000, 3_000])
@pytest.mark.parametrize(("policy", "simulator"), [("lru", "LRU"), ("clock", "Clock")])
def test_miss_counts_equal_libcachesims(disk_dir, trace_file, frames, policy, simulator):
    reader = lcs.TraceReader(str(trace_file), lcs.TraceType.ORACLE_GENERAL_TRACE)
    miss_ratio, _ = getattr(lcs, simulator)(cache_size=frames * PAGE).process_trace(reader)
    with vmmem.FramePool(frames * PAGE) as pool:
        mem = vmmem.GuestMemory(pool, PAGES * PAGE, paging_dir=disk_dir, policy=policy)
        mem.replay(TRACE)
        s = mem.stats
        mem.close()
    assert s.faults == round(miss_ratio * TRACE.size)
    # A read-only trace never dirties a page: every eviction is a drop, no paging-file I/O.
    assert s.page_outs == s.page_ins == 0 and s.clean_drops == s.faults - frames


def test_trace_file_holds_the_trace(trace_file):
    records = np.fromfile(trace_file, dtype=vmmem.traces.ORACLE_GENERAL_DTYPE)
    assert np.array_equal(records["obj_id"] - 1, TRACE)
    assert (records["size"] == PAGE).all()
