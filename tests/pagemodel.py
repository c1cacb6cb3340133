"""A small pure-Python model of the paging core, written from the semantics in docs/DESIGN.md.

It predicts, for any sequence of operations, every page's contents and state, and the counters
accesses, hits, zero_fills, page_ins, page_outs, clean_drops, bytes_read, bytes_written,
releases, resident, file_pages and file_pages_peak. It is deliberately slow and plain: clarity
over speed, nothing shared with the C code.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

ZERO, CLEAN, DIRTY, PAGED_OUT = "ZERO", "CLEAN", "DIRTY", "PAGED_OUT"

COUNTERS = (
    "accesses",
    "hits",
    "zero_fills",
    "page_ins",
    "page_outs",
    "clean_drops",
    "bytes_read",
    "bytes_written",
    "releases",
    "disk_faults",
)


class ModelOutOfFrames(Exception):
    """The model predicts OutOfFramesError."""


class ModelCannotDrain(Exception):
    """The model predicts that drain() refuses (not enough frames)."""


@dataclass
class ModelPool:
    frames: int
    free: int = -1

    def __post_init__(self) -> None:
        if self.free < 0:
            self.free = self.frames


@dataclass
class ModelMemory:
    pool: ModelPool
    pages: int
    page_size: int
    policy: str = "lru"
    frame_limit: int = 0
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    file_pages_peak: int = 0
    file_exists: bool = False
    file_created: int = 0  # times the paging file was created
    file_deleted: int = 0  # times it was deleted because it became empty

    def __post_init__(self) -> None:
        assert self.policy in ("lru", "clock")
        self.state = [ZERO] * self.pages
        self.slot = [False] * self.pages  # holds a slot in the paging file (copy current or not)
        self.data: dict[int, bytearray] = {}  # page -> contents; absent = all zeros
        # Resident pages, oldest first. LRU: order of use. CLOCK: order of insertion into the
        # head, with the second-chance bit alongside.
        self.order: OrderedDict[int, None] = OrderedDict()
        self.referenced: dict[int, bool] = {}

    # ---- observations -------------------------------------------------------------------
    @property
    def resident(self) -> int:
        return len(self.order)

    @property
    def file_pages(self) -> int:
        return sum(self.slot)

    def contents(self, page: int) -> bytes:
        d = self.data.get(page)
        return bytes(d) if d is not None else bytes(self.page_size)

    def read_bytes(self, gpa: int, n: int) -> bytes:
        out = bytearray()
        for page in range(gpa // self.page_size, (gpa + n - 1) // self.page_size + 1):
            out += self.contents(page)
        start = gpa % self.page_size
        return bytes(out[start : start + n])

    # ---- the mechanism ------------------------------------------------------------------
    def _victim(self) -> int:
        if self.policy == "lru":
            return next(iter(self.order))
        while True:
            tail = next(iter(self.order))
            if self.referenced[tail]:
                self.referenced[tail] = False
                self.order.move_to_end(tail)
            else:
                return tail

    def _evict(self, page: int) -> None:
        del self.order[page]
        self.referenced.pop(page, None)
        if self.state[page] == DIRTY:
            self.counters["page_outs"] += 1
            self.counters["bytes_written"] += self.page_size
            if not self.file_exists:
                self.file_exists = True
                self.file_created += 1
            self.slot[page] = True
            self.file_pages_peak = max(self.file_pages_peak, self.file_pages)
            self.state[page] = PAGED_OUT
        elif self.slot[page]:
            self.counters["clean_drops"] += 1
            self.state[page] = PAGED_OUT
        else:
            self.counters["clean_drops"] += 1
            self.state[page] = ZERO

    def access(self, page: int, write: bool) -> None:
        """One guest access; raises ModelOutOfFrames (changing nothing) where the core would."""
        assert 0 <= page < self.pages
        if page in self.order:
            self.counters["accesses"] += 1
            self.counters["hits"] += 1
            if self.policy == "lru":
                self.order.move_to_end(page)
            else:
                self.referenced[page] = True
        else:
            outs_before = self.counters["page_outs"]
            if self.resident < self.frame_limit and self.pool.free > 0:
                self.pool.free -= 1
            elif self.resident > 0:
                self._evict(self._victim())
            else:
                raise ModelOutOfFrames(page)
            self.counters["accesses"] += 1
            if self.slot[page]:
                self.counters["page_ins"] += 1
                self.counters["bytes_read"] += self.page_size
            else:
                self.counters["zero_fills"] += 1
            # A fault waits on the disk if it wrote its victim back or read its page in.
            if self.slot[page] or self.counters["page_outs"] != outs_before:
                self.counters["disk_faults"] += 1
            self.state[page] = CLEAN
            self.order[page] = None
            self.referenced[page] = False
        if write:
            self.state[page] = DIRTY

    def replay(self, pages: list[int], writes: list[bool] | None = None) -> int:
        """Replays accesses; returns how many completed, raising ModelOutOfFrames at a failure
        after applying the ones before it (the exception carries ``done``)."""
        for i, page in enumerate(pages):
            write = bool(writes[i]) if writes is not None else False
            try:
                self.access(page, write)
            except ModelOutOfFrames as e:
                e.done = i  # type: ignore[attr-defined]
                raise
            if write:
                d = self.data.setdefault(page, bytearray(self.page_size))
                value = (int.from_bytes(d[:8], "little") + 1) % 2**64
                d[:8] = value.to_bytes(8, "little")
        return len(pages)

    def _touched(self, gpa: int, n: int) -> range:
        if n == 0:
            return range(0)
        return range(gpa // self.page_size, (gpa + n - 1) // self.page_size + 1)

    def read(self, gpa: int, n: int) -> bytes:
        for page in self._touched(gpa, n):
            self.access(page, False)
        return self.read_bytes(gpa, n)

    def write(self, gpa: int, data: bytes) -> None:
        pos = 0
        for page in self._touched(gpa, len(data)):
            self.access(page, True)
            start = (gpa + pos) % self.page_size
            chunk = data[pos : pos + self.page_size - start]
            d = self.data.setdefault(page, bytearray(self.page_size))
            d[start : start + len(chunk)] = chunk
            pos += len(chunk)

    def set_frame_limit(self, n: int) -> None:
        assert 0 <= n <= self.pool.frames
        self.frame_limit = n
        while self.resident > n:
            self._evict(self._victim())
            self.pool.free += 1

    def release(self, first: int, count: int) -> None:
        for page in range(first, first + count):
            held = page in self.order or self.slot[page]
            if page in self.order:
                del self.order[page]
                self.referenced.pop(page, None)
                self.pool.free += 1
            self.slot[page] = False
            self.state[page] = ZERO
            self.data.pop(page, None)
            if held:
                self.counters["releases"] += 1
        self._delete_file_if_empty()

    def _delete_file_if_empty(self) -> None:
        if self.file_exists and self.file_pages == 0:
            self.file_exists = False
            self.file_deleted += 1

    def drain(self) -> None:
        paged_out = [p for p in range(self.pages) if self.state[p] == PAGED_OUT]
        if self.resident + len(paged_out) > self.frame_limit or len(paged_out) > self.pool.free:
            raise ModelCannotDrain
        for page in paged_out:
            self.pool.free -= 1
            self.counters["page_ins"] += 1
            self.counters["bytes_read"] += self.page_size
            self.order[page] = None
            self.referenced[page] = False
            self.state[page] = DIRTY
        for page in self.order:
            if self.slot[page]:
                self.state[page] = DIRTY
                self.slot[page] = False
                # The core rewrites the frame's flags to just "dirty" here, which also clears
                # CLOCK's referenced bit.
                self.referenced[page] = False
        self._delete_file_if_empty()

    def reset_stats(self) -> None:
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.file_pages_peak = self.file_pages
        self.file_created = self.file_deleted = 0

    def page_states(self) -> list[str]:
        return list(self.state)
