"""Several threads replaying into ONE GuestMemory at once: the core drops its lock across paging
I/O, so faults overlap. Contents are never lost (each page's write counter equals the write
accesses to it over all threads), the counters add up, no transfer of a page ever overlaps
another transfer of it (the core counts that outside its lock: io_overlaps), frame-limit
changes and drains stay correct meanwhile, and counters, hits and frame-limit changes do not
wait for a transfer that is stuck (a frozen filesystem holds a page-out)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import small_ext4
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vmmem
from vmmem._core import ffi, lib
from vmmem.errors import OutOfFramesError, VmmemError

PAGE = 4096


def core_counters(mem: vmmem.GuestMemory) -> Any:
    """The core's scalar counters, with the two that MemoryStats leaves out (shared_faults,
    io_overlaps)."""
    raw = ffi.new("vmm_counters *")
    mem._call(lib.vmm_mem_counters, raw, doing="reading counters")
    return raw


def run_in_threads(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Runs the jobs in threads started together; returns their results, re-raises the first
    error."""
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def wrap(i: int) -> None:
        try:
            start.wait()
            results[i] = jobs[i]()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def vcpu_traces(threads: int, pages: int, n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per thread: a hot set shared by all threads (so they meet on pages in flight) mixed
    with cold pages, half the accesses writes."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(threads):
        hot = rng.integers(0, pages // 4, n)
        cold = rng.integers(0, pages, n)
        trace = np.where(rng.random(n) < 0.6, hot, cold).astype(np.uint32)
        out.append((trace, (rng.random(n) < 0.5).astype(np.uint8)))
    return out


def replay_in_chunks(mem: vmmem.GuestMemory, trace: np.ndarray, writes: np.ndarray) -> int:
    """Many calls per thread, so calls interleave; returns the summed per-call wait."""
    waited = 0
    for at in range(0, len(trace), 250):
        waited += mem.replay(trace[at : at + 250], writes[at : at + 250])
    return waited


def expected_counters(traces: list[tuple[np.ndarray, np.ndarray]], pages: int) -> np.ndarray:
    expect = np.zeros(pages, np.int64)
    for trace, writes in traces:
        np.add.at(expect, trace, writes.astype(np.int64))
    return expect


def page_counters(mem: vmmem.GuestMemory) -> np.ndarray:
    return np.array(
        [int.from_bytes(mem.read(p * PAGE, 8), "little") for p in range(mem.pages)], np.int64
    )


@pytest.mark.parametrize(
    "threads, backend, policy", [(2, "direct", "lru"), (4, "mmap", "clock"), (8, "direct", "lru")]
)
def test_threads_on_one_guest_lose_nothing_and_counters_add_up(disk_dir, threads, backend, policy):
    pages, limit, n = 128, 12, 1200
    traces = vcpu_traces(threads, pages, n, seed=threads)
    with (
        vmmem.FramePool(32 * PAGE) as pool,
        vmmem.GuestMemory(
            pool, pages * PAGE, limit, paging_dir=disk_dir, backend=backend, policy=policy
        ) as mem,
    ):
        waits = run_in_threads(
            [lambda t=t, w=w: replay_in_chunks(mem, t, w) for t, w in traces]  # type: ignore[misc]
        )
        s, raw = mem.stats, core_counters(mem)
        touched = len(np.unique(np.concatenate([t for t, _ in traces])))
        assert s.accesses == threads * n
        assert s.hits + s.zero_fills + s.page_ins == s.accesses  # each access counted once
        assert raw.io_overlaps == 0  # no page-out of a page overlapped its page-in
        assert raw.shared_faults <= s.accesses
        assert sum(waits) == s.fault_ns  # the per-call waits are the whole of fault_ns
        assert int(s.fault_latency.counts.sum()) == s.disk_faults
        assert s.bytes_read == s.page_ins * PAGE and s.bytes_written == s.page_outs * PAGE
        assert s.resident <= limit and s.resident + s.paged_out <= touched  # clean zero pages drop
        assert s.paged_out <= s.file_pages <= s.page_outs
        np.testing.assert_array_equal(page_counters(mem), expected_counters(traces, pages))


Step = tuple[str, int]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("limit"), st.integers(1, 160)),  # 160 > pages: the limit may exceed
        st.tuples(st.just("drain"), st.integers(0, 40)),  # max_pages (0: all)
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=8, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schedule=steps, seed=st.integers(0, 2**16))
def test_limit_changes_and_drains_while_threads_fault(disk_dir, schedule: list[Step], seed: int):
    """A balancer thread moves the frame limit and drains while three vCPUs fault."""
    pages, threads, n = 128, 3, 600
    traces = vcpu_traces(threads, pages, n, seed)
    with (
        vmmem.FramePool(160 * PAGE) as pool,
        vmmem.GuestMemory(pool, pages * PAGE, 8, paging_dir=disk_dir) as mem,
    ):

        def balancer() -> None:
            for kind, value in schedule:
                if kind == "limit":
                    mem.frame_limit = value
                    assert mem.resident_pages <= value  # faults in flight count toward it
                else:
                    try:
                        mem.drain(value or None)
                    except OutOfFramesError:
                        pass  # the limit cannot hold every page now: nothing changed

        jobs = [lambda t=t, w=w: replay_in_chunks(mem, t, w) for t, w in traces]
        run_in_threads([*jobs, balancer])  # type: ignore[list-item]
        s, raw = mem.stats, core_counters(mem)
        assert raw.io_overlaps == 0
        assert s.accesses == threads * n
        assert s.hits + s.zero_fills + s.page_ins >= s.accesses  # drains page in too
        assert s.resident <= s.frame_limit  # nobody faults now: the limit holds exactly
        np.testing.assert_array_equal(page_counters(mem), expected_counters(traces, pages))
        mem.frame_limit = pages
        assert mem.drain() == 0 and not mem.paging_file.exists
        np.testing.assert_array_equal(page_counters(mem), expected_counters(traces, pages))


def test_one_thread_waits_are_the_fault_time(disk_dir):
    """One thread: each call's wait is exactly what it added to fault_ns; hits wait nothing."""
    with (
        vmmem.FramePool(64 * PAGE) as pool,
        vmmem.GuestMemory(pool, 256 * PAGE, 16, paging_dir=disk_dir) as mem,
    ):
        rng = np.random.default_rng(3)
        assert mem.replay(np.array([], np.uint32)) == 0
        for _ in range(4):
            before = mem.stats.fault_ns
            trace = rng.integers(0, 256, 300, dtype=np.uint32)
            waited = mem.replay(trace, np.ones(300, np.uint8))
            assert waited == mem.stats.fault_ns - before
            assert waited > 0  # evictions wrote dirty pages back
        resident = [p for p in range(256) if mem.page_state(p) != vmmem.PageState.PAGED_OUT]
        resident = [p for p in resident if mem.page_state(p) != vmmem.PageState.ZERO]
        before = mem.stats.fault_ns
        assert mem.replay(np.array(resident * 10, np.uint32)) == 0
        assert mem.stats.fault_ns == before
        assert core_counters(mem).shared_faults == 0  # nobody else to wait for


def _task_state(tid: int) -> str:
    with open(f"/proc/self/task/{tid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _wait_until(what: str, done: Callable[[], bool], alive: threading.Thread) -> None:
    """Waits for a condition another thread brings about (a guard, not a pace: it fails
    only if the thread ended first or nothing happened for a very long time)."""
    give_up = time.monotonic() + 120
    while not done():
        assert alive.is_alive(), f"the thread ended before {what}"
        assert time.monotonic() < give_up, f"gave up waiting for {what}"
        time.sleep(0.005)


@pytest.fixture
def freezable_dir(tmp_path: Path):
    """A tiny ext4 of its own that fsfreeze can stop: writes to it then block in the kernel
    until it is thawed (reads go on)."""
    if shutil.which("fsfreeze") is None:
        pytest.skip("fsfreeze(8) missing")
    with small_ext4(32 * 2**20, tmp_path) as mnt:
        yield mnt
        subprocess.run(["fsfreeze", "-u", str(mnt)], capture_output=True)


def test_a_stuck_page_out_blocks_only_its_own_access(freezable_dir):
    """While one thread's page-out is stuck in the kernel: counters read, other threads hit,
    the frame limit goes down (counting the stuck fault's frame) and close() waits for it."""
    mnt = freezable_dir
    pool = vmmem.FramePool(8 * PAGE)
    mem = vmmem.GuestMemory(pool, 16 * PAGE, 4, paging_dir=mnt, backend="direct")
    # The paging file exists before the freeze (its creation is the one step under the lock).
    mem.write(5 * PAGE, b"x")
    mem.frame_limit = 0
    mem.frame_limit = 4
    mem.write(0, b"V")  # page 0: dirty, and the least recent of four
    for p in (1, 2, 3):
        mem.read(p * PAGE, 1)  # clean
    if subprocess.run(["fsfreeze", "-f", str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem cannot be frozen here")
    before = mem.counters
    tid: list[int] = []
    result: list[int] = []

    def faulter() -> None:
        tid.append(threading.get_native_id())
        result.append(mem.replay(np.array([4], np.uint32)))  # evicts page 0: a page-out

    stuck = threading.Thread(target=faulter)
    stuck.start()
    _wait_until(
        "the page-out to block",
        # its victim unhooked (the fault's first step) and the thread asleep in the kernel
        lambda: mem.resident_pages == 3 and bool(tid) and _task_state(tid[0]) == "D",
        stuck,
    )

    now = mem.counters  # returns although a fault's write is stuck
    assert now["page_outs"] == before["page_outs"] and now["accesses"] == before["accesses"]
    assert now["resident"] == 3  # page 0's frame is held by the stuck fault
    assert mem.replay(np.array([1, 2, 3] * 100, np.uint32)) == 0  # hits go on, wait nothing
    mem.frame_limit = 2  # two clean pages go; the held frame counts toward the 2
    assert mem.resident_pages == 1 and stuck.is_alive()

    closer = threading.Thread(target=mem.close)
    closer.start()
    _wait_until("close() to start waiting", lambda: mem._closing, closer)
    with pytest.raises(VmmemError, match="closed"):
        _ = mem.counters
    assert stuck.is_alive() and not mem.closed  # close waits for the call in flight

    subprocess.run(["fsfreeze", "-u", str(mnt)], check=True, capture_output=True)
    stuck.join()
    closer.join()
    assert result and result[0] > 0 and mem.closed
    assert pool.free_frames == 8 and not [f for f in os.listdir(mnt) if f.endswith(".slp")]
    pool.close()


@pytest.mark.parametrize("backend", ["direct", "mmap"])
def test_a_full_disk_under_several_threads_loses_no_write(tmp_path, backend):
    """Four threads write-fault into one guest on a tiny ext4 until page-outs fail (ENOSPC):
    each failed page-out puts its page back, so the pages' write counters still add up to
    every write access that completed."""
    with small_ext4(2 * 2**20, tmp_path) as mnt, vmmem.FramePool(1024 * PAGE) as pool:
        free_pages = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize // PAGE
        pages = free_pages + 200  # more than the disk holds
        with vmmem.GuestMemory(pool, pages * PAGE, 16, paging_dir=mnt, backend=backend) as mem:
            failures: list[int] = []

            def writer(seed: int) -> None:
                rng = np.random.default_rng(seed)
                while True:
                    chunk = rng.integers(0, pages, 64, dtype=np.uint32)
                    try:
                        mem.replay(chunk, np.ones(64, np.uint8))  # every access a write
                    except vmmem.PagingFileError as e:
                        failures.append(e.errno)
                        return

            run_in_threads([lambda s=s: writer(s) for s in range(4)])  # type: ignore[misc]
            assert set(failures) == {errno.ENOSPC}
            s = mem.stats
            assert core_counters(mem).io_overlaps == 0
            assert s.resident <= 16 and s.hits + s.zero_fills + s.page_ins == s.accesses
            mem.frame_limit = pages  # room for every page: reading faults in, evicts nothing
            assert int(page_counters(mem).sum()) == s.accesses  # each completed write is kept
