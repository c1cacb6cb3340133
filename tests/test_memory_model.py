"""Page contents, page states and every counter follow the reference model, for any sequence of
writes, reads, replays, frame-limit changes, releases and drains (hypothesis stateful test).

The pool is small and shared with a neighbour guest that grabs and returns frames, so faults
evict constantly and sometimes find the pool empty below the frame limit.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from pagemodel import COUNTERS, ModelCannotDrain, ModelMemory, ModelOutOfFrames, ModelPool

import vmmem

PAGE = 4096
POOL_FRAMES = 12
GUEST_PAGES = 32
NEIGHBOUR_PAGES = 8
GUEST_BYTES = GUEST_PAGES * PAGE

# A write of a few bytes anywhere, often straddling a page boundary.
write_at = st.one_of(
    st.integers(0, GUEST_BYTES - 1),
    st.integers(1, GUEST_PAGES - 1).map(lambda p: p * PAGE - 3),
)


class PagingMachine(RuleBasedStateMachine):
    backend = "direct"
    policy = "lru"

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.mkdtemp(prefix="vmmem-model-")
        self.pool = vmmem.FramePool(POOL_FRAMES * PAGE)
        self.mem = vmmem.GuestMemory(
            self.pool,
            GUEST_PAGES * PAGE,
            frame_limit=POOL_FRAMES // 2,
            paging_dir=self.folder,
            backend=self.backend,
            policy=self.policy,
            name="guest",
        )
        self.neighbour = vmmem.GuestMemory(
            self.pool,
            NEIGHBOUR_PAGES * PAGE,
            frame_limit=NEIGHBOUR_PAGES,
            paging_dir=self.folder,
            backend=self.backend,
            policy=self.policy,
            name="neighbour",
        )
        self.model_pool = ModelPool(POOL_FRAMES)
        self.model = ModelMemory(
            self.model_pool, GUEST_PAGES, PAGE, self.policy, frame_limit=POOL_FRAMES // 2
        )
        self.neighbour_model = ModelMemory(
            self.model_pool, NEIGHBOUR_PAGES, PAGE, self.policy, frame_limit=NEIGHBOUR_PAGES
        )

    @initialize()
    def start(self) -> None:
        assert not self.mem.paging_file.exists

    # ---- rules --------------------------------------------------------------------------
    @rule(gpa=write_at, data=st.binary(min_size=0, max_size=24))
    def write(self, gpa: int, data: bytes) -> None:
        data = data[: GUEST_BYTES - gpa]
        try:
            self.model.write(gpa, data)
        except ModelOutOfFrames:
            with pytest.raises(vmmem.OutOfFramesError):
                self.mem.write(gpa, data)
        else:
            self.mem.write(gpa, data)

    @rule(gpa=write_at, n=st.integers(0, PAGE + 16))
    def read(self, gpa: int, n: int) -> None:
        n = min(n, GUEST_BYTES - gpa)
        try:
            expected = self.model.read(gpa, n)
        except ModelOutOfFrames:
            with pytest.raises(vmmem.OutOfFramesError):
                self.mem.read(gpa, n)
        else:
            assert self.mem.read(gpa, n) == expected

    @rule(
        accesses=st.lists(
            st.tuples(st.integers(0, GUEST_PAGES - 1), st.booleans()), min_size=1, max_size=40
        ),
        with_flags=st.booleans(),
    )
    def replay(self, accesses: list[tuple[int, bool]], with_flags: bool) -> None:
        pages = np.array([p for p, _ in accesses], dtype=np.uint32)
        writes = np.array([w for _, w in accesses], dtype=np.uint8) if with_flags else None
        try:
            self.model.replay(pages.tolist(), None if writes is None else writes.tolist())
        except ModelOutOfFrames:
            with pytest.raises(vmmem.OutOfFramesError):
                self.mem.replay(pages, writes)
        else:
            self.mem.replay(pages, writes)

    @rule(limit=st.one_of(st.integers(0, POOL_FRAMES), st.sampled_from([0, 1, POOL_FRAMES])))
    def set_frame_limit(self, limit: int) -> None:
        self.model.set_frame_limit(limit)
        self.mem.frame_limit = limit
        assert self.mem.frame_limit == limit

    @rule(first=st.integers(0, GUEST_PAGES - 1), count=st.integers(0, 8))
    def release(self, first: int, count: int) -> None:
        count = min(count, GUEST_PAGES - first)
        self.model.release(first, count)
        self.mem.release(first, count)

    @rule()
    def drain(self) -> None:
        try:
            self.model.drain()
        except ModelCannotDrain:
            with pytest.raises(vmmem.VmmemError) as info:
                self.mem.drain()
            assert not isinstance(info.value, vmmem.PagingFileError)
        else:
            self.mem.drain()
            assert not self.mem.paging_file.exists

    @rule(count=st.integers(1, NEIGHBOUR_PAGES))
    def neighbour_takes_frames(self, count: int) -> None:
        pages = np.arange(count, dtype=np.uint32)
        try:
            self.neighbour_model.replay(pages.tolist())
        except ModelOutOfFrames:
            with pytest.raises(vmmem.OutOfFramesError):
                self.neighbour.replay(pages)
        else:
            self.neighbour.replay(pages)

    @rule(count=st.integers(1, NEIGHBOUR_PAGES))
    def neighbour_gives_frames_back(self, count: int) -> None:
        self.neighbour_model.release(0, count)
        self.neighbour.release(0, count)

    @rule()
    def reset_stats(self) -> None:
        self.model.reset_stats()
        self.mem.reset_stats()

    @precondition(lambda self: self.model.frame_limit > 0)
    @rule()
    def read_every_page(self) -> None:
        """Contents equal the model's, page by page (each read is an access the model makes)."""
        for page in range(GUEST_PAGES):
            try:
                expected = self.model.read(page * PAGE, PAGE)
            except ModelOutOfFrames:
                with pytest.raises(vmmem.OutOfFramesError):
                    self.mem.read(page * PAGE, PAGE)
            else:
                assert self.mem.read(page * PAGE, PAGE) == expected, f"page {page}"

    # ---- invariants ---------------------------------------------------------------------
    @invariant()
    def counters_match(self) -> None:
        stats = self.mem.stats
        got = {name: getattr(stats, name) for name in COUNTERS}
        assert got == self.model.counters
        assert stats.resident == self.model.resident
        assert stats.frame_limit == self.model.frame_limit
        assert stats.file_pages == self.model.file_pages
        assert stats.file_pages_peak == self.model.file_pages_peak
        assert stats.page_in_latency.count == self.model.counters["page_ins"]
        assert stats.page_out_latency.count == self.model.counters["page_outs"]
        assert stats.fault_latency.count == self.model.counters["disk_faults"]
        if self.model.file_exists:
            assert stats.file_size >= self.model.file_pages * PAGE
        else:
            assert stats.file_size == 0

    @invariant()
    def page_states_match(self) -> None:
        got = [self.mem.page_state(p).name for p in range(GUEST_PAGES)]
        assert got == self.model.page_states()

    @invariant()
    def paging_file_matches(self) -> None:
        f = self.mem.paging_file
        assert f.exists == self.model.file_exists
        assert os.path.exists(f.path) == self.model.file_exists
        stats = self.mem.stats
        assert stats.file_created == self.model.file_created
        assert stats.file_deleted == self.model.file_deleted

    @invariant()
    def pool_frames_match(self) -> None:
        assert self.pool.free_frames == self.model_pool.free
        assert self.neighbour.stats.resident == self.neighbour_model.resident

    def teardown(self) -> None:
        path = self.mem.paging_file.path
        self.mem.close()
        self.neighbour.close()
        self.pool.close()
        assert not os.path.exists(path), "close() must delete the paging file"
        shutil.rmtree(self.folder, ignore_errors=True)


MODEL_SETTINGS = settings(
    max_examples=60,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _machine(backend: str, policy: str) -> type[RuleBasedStateMachine]:
    return type(
        f"Paging_{backend}_{policy}", (PagingMachine,), {"backend": backend, "policy": policy}
    )


TestLruDirect = MODEL_SETTINGS(_machine("direct", "lru")).TestCase
TestLruMmap = MODEL_SETTINGS(_machine("mmap", "lru")).TestCase
TestClockDirect = MODEL_SETTINGS(_machine("direct", "clock")).TestCase
TestClockMmap = MODEL_SETTINGS(_machine("mmap", "clock")).TestCase
