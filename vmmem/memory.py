"""Guest memory on real host RAM, with a real Smart Paging file: the paging core's public API.

`FramePool` is host RAM cut into page frames; `GuestMemory` is one VM's guest-physical page
array backed by frames of a pool up to its frame limit, the overflow paged to a
`SmartPagingFile`. All per-access work happens in C (csrc/); these classes validate
arguments, own the C handles, and translate results.
"""

from __future__ import annotations

import enum
import os
import re
import threading
import uuid
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import psutil

from ._core import ffi, lib, raise_for
from .errors import (
    GuestAddressError,
    SettingsError,
    VmmemError,
)
from .sizes import SizeLike, format_size, parse_size
from .stats import LatencyHistogram, MemoryStats
from .validate import check_choice, check_name, check_path

__all__ = [
    "BACKENDS",
    "POLICIES",
    "FramePool",
    "GuestMemory",
    "folder_problem",
    "LatencyHistogram",
    "MemoryStats",
    "PageState",
    "SmartPagingFile",
]

BACKENDS = {"direct": lib.VMM_BACKEND_DIRECT, "mmap": lib.VMM_BACKEND_MMAP}
POLICIES = {"lru": lib.VMM_POLICY_LRU, "clock": lib.VMM_POLICY_CLOCK}
MAX_GUEST_PAGES = 2**32 - 2


class PageState(enum.IntEnum):
    ZERO = 0  # untouched or released: reads as zeros, holds nothing
    CLEAN = 1  # in a frame, same as its file copy (or never written)
    DIRTY = 2  # in a frame, written since it was last paged out
    PAGED_OUT = 3  # only in the Smart Paging file


def _as_count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SettingsError(f"{what} must be a whole number, got {value!r}")
    return int(value)


def _page_size(value: SizeLike) -> int:
    size = parse_size(value, "page size")
    if size < 4096 or size & (size - 1):
        raise SettingsError(
            f"page size {size} bytes is not allowed: use a power of two of at least 4096 "
            "(4 KB, the x86 page; 2 MB for large pages)"
        )
    return size


class FramePool:
    """Host RAM as page frames: one page-aligned mapping, committed (resident) up front.

    Several GuestMemory objects, in several threads, may share one pool.
    """

    def __init__(self, size: SizeLike, page_size: SizeLike = 4096) -> None:
        self.page_size = _page_size(page_size)
        self.size = parse_size(size, "frame pool size")
        if self.size <= 0:
            raise SettingsError(f"frame pool size must be positive, got {format_size(self.size)}")
        if self.size % self.page_size:
            raise SettingsError(
                f"frame pool size {self.size} bytes is not a multiple of the page size "
                f"({self.page_size} bytes)"
            )
        frames = self.size // self.page_size
        if frames > MAX_GUEST_PAGES:
            raise SettingsError(
                f"frame pool of {frames} frames is too large (max {MAX_GUEST_PAGES})"
            )
        available = psutil.virtual_memory().available
        if self.size > available:
            raise SettingsError(
                f"a frame pool of {format_size(self.size)} does not fit: this host has "
                f"{format_size(available)} of RAM available"
            )
        handle = ffi.new("vmm_pool **")
        raise_for(lib.vmm_pool_create(frames, self.page_size, handle), doing="creating the pool")
        self._ptr = handle[0]
        self._guests: weakref.WeakSet[GuestMemory] = weakref.WeakSet()
        self._finalizer = weakref.finalize(self, lib.vmm_pool_destroy, self._ptr)

    @property
    def frames(self) -> int:
        return int(lib.vmm_pool_frames(self._handle()))

    @property
    def free_frames(self) -> int:
        return int(lib.vmm_pool_free_frames(self._handle()))

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def _handle(self) -> Any:
        if not self._finalizer.alive:
            raise VmmemError("this frame pool is closed")
        return self._ptr

    def close(self) -> None:
        """Give the RAM back. Every guest on the pool must be closed first."""
        if any(not guest.closed for guest in self._guests):
            raise VmmemError("close every GuestMemory on this frame pool before the pool")
        self._finalizer()

    def __enter__(self) -> FramePool:
        return self

    def __exit__(self, *exc: object) -> None:
        for guest in list(self._guests):
            guest.close()
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.free_frames}/{self.frames} frames free"
        return f"FramePool({format_size(self.size)}, page_size={self.page_size}, {state})"


_COUNTERS = [name for name in MemoryStats.__dataclass_fields__ if not name.endswith("_latency")]


class SmartPagingFile:
    """Live view of a guest's paging file: made at the first page-out, deleted when empty."""

    def __init__(self, memory: GuestMemory) -> None:
        self._memory = memory

    @property
    def path(self) -> str:
        return self._memory._path

    @property
    def exists(self) -> bool:
        return self._memory._call(lib.vmm_mem_file_exists) == 1

    @property
    def pages(self) -> int:
        """Pages with a copy in the file now."""
        return int(self._memory._counters().file_pages)

    @property
    def bytes(self) -> int:
        """Guest memory held in the file now, in bytes."""
        return self.pages * self._memory.page_size

    @property
    def size(self) -> int:
        """Bytes the file occupies on disk now (0 when it does not exist)."""
        return int(self._memory._counters().file_size)

    @property
    def peak_pages(self) -> int:
        return int(self._memory._counters().file_pages_peak)

    def __repr__(self) -> str:
        state = f"{format_size(self.bytes)} in use" if self.exists else "not in use"
        return f"SmartPagingFile({self.path!r}, {state})"


_NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")


class GuestMemory:
    """One VM's guest-physical memory: a page table over `size` bytes, in frames up to
    `frame_limit` pages, the rest in a Smart Paging file in `paging_dir`.

    backend: "direct" (O_DIRECT pread/pwrite) or "mmap" (sync_file_range + page-cache drop); both
    reach the device. policy: "lru" (exact) or "clock" (second chance).
    """

    def __init__(
        self,
        pool: FramePool,
        size: SizeLike,
        frame_limit: int | None = None,
        paging_dir: str | os.PathLike[str] = ".",
        backend: str = "direct",
        policy: str = "lru",
        name: str = "guest",
    ) -> None:
        if not isinstance(pool, FramePool):
            raise SettingsError(f"pool must be a FramePool, got {type(pool).__name__}")
        paging_dir = check_path("paging_dir", paging_dir) or "."
        name = check_name("name", name)
        backend = check_choice("backend", backend, BACKENDS)
        policy = check_choice("policy", policy, POLICIES)
        pool_handle = pool._handle()
        self.pool = pool
        self.page_size = pool.page_size
        self.size = parse_size(size, "guest memory size")
        if self.size <= 0:
            raise SettingsError(f"guest memory size must be positive, got {self.size} bytes")
        if self.size % self.page_size:
            raise SettingsError(
                f"guest memory size {self.size} bytes is not a multiple of the page size "
                f"({self.page_size} bytes)"
            )
        self.pages = self.size // self.page_size
        if self.pages > MAX_GUEST_PAGES:
            raise SettingsError(
                f"guest memory of {format_size(self.size)} is too large for "
                f"{self.page_size}-byte pages (at most {MAX_GUEST_PAGES} pages)"
            )
        if backend not in BACKENDS:
            raise SettingsError(f"backend {backend!r} is not known; use one of {sorted(BACKENDS)}")
        if policy not in POLICIES:
            raise SettingsError(f"policy {policy!r} is not known; use one of {sorted(POLICIES)}")
        self.backend, self.policy, self.name = backend, policy, str(name)
        self.paging_dir = os.path.abspath(os.fspath(paging_dir))
        _check_paging_dir(self.paging_dir)
        safe = _NAME_RE.sub("_", self.name)[:64] or "guest"
        self._path = os.path.join(self.paging_dir, f"{safe}-{uuid.uuid4().hex[:12]}.slp")

        handle = ffi.new("vmm_mem **")
        rc = lib.vmm_mem_create(
            pool_handle,
            self.pages,
            self._path.encode(),
            BACKENDS[backend],
            POLICIES[policy],
            handle,
        )
        raise_for(rc, self._path, "creating the guest memory")
        self._ptr = handle[0]
        # Calls run concurrently (the core has its own lock and cffi releases the GIL);
        # close() waits for the calls in progress and turns new ones away.
        self._calls_in_flight = 0
        self._calls_changed = threading.Condition(threading.Lock())
        self._closing = False
        # The finalizer holds the pool, so the pool's RAM outlives every guest on it.
        self._finalizer = weakref.finalize(self, _destroy_guest, self._ptr, pool)
        pool._guests.add(self)
        self.paging_file = SmartPagingFile(self)
        try:
            self.frame_limit = min(self.pages, pool.frames) if frame_limit is None else frame_limit
        except BaseException:
            self.close()
            raise

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def _call(self, fn: Any, *args: Any, doing: str = "") -> int:
        """Call fn(handle, *args), counted in flight so that close() cannot race it. Calls
        from several threads run at once: the core serialises what it must."""
        counted = False  # set in the same block as the count, so a Ctrl-C cannot leak it
        try:
            with self._calls_changed:
                if self._closing or not self._finalizer.alive:
                    raise VmmemError(f"guest memory {self.name!r} is closed")
                self._calls_in_flight += 1
                counted = True
            rc = fn(self._ptr, *args)
        finally:
            if counted:
                with self._calls_changed:
                    self._calls_in_flight -= 1
                    if not self._calls_in_flight:
                        self._calls_changed.notify_all()
        if doing:
            raise_for(rc, self._path, doing)
        return int(rc)

    def close(self) -> None:
        """Give every frame back to the pool and delete the paging file. Calls in progress
        in other threads finish first; calls after it raise VmmemError."""
        with self._calls_changed:
            self._closing = True
            self._calls_changed.wait_for(lambda: not self._calls_in_flight)
            self._finalizer()

    def __enter__(self) -> GuestMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return f"GuestMemory({self.name!r}, closed)"
        return (
            f"GuestMemory({self.name!r}, {format_size(self.size)}, "
            f"frame_limit={self.frame_limit}, backend={self.backend!r}, policy={self.policy!r})"
        )

    # -- settings ---------------------------------------------------------------------------

    @property
    def frame_limit(self) -> int:
        """How many frames (pages of host RAM) the guest may hold: its assigned memory."""
        return int(self._counters().frame_limit)

    @frame_limit.setter
    def frame_limit(self, frames: int) -> None:
        frames = _as_count(frames, "frame limit")
        pool_frames = self.pool.frames
        if frames < 0 or frames > pool_frames:
            raise SettingsError(
                f"frame limit {frames} is not allowed: it must be within 0..{pool_frames} "
                f"(the frame pool holds {format_size(pool_frames * self.page_size)})"
            )
        self._call(lib.vmm_mem_set_frame_limit, frames, doing="paging out to lower the frame limit")

    # -- guest accesses ---------------------------------------------------------------------

    def _check_range(self, gpa: int, n: int) -> None:
        gpa = _as_count(gpa, "guest address")
        if gpa < 0 or n < 0 or gpa + n > self.size:
            raise GuestAddressError(
                f"guest address range {gpa:#x}..{gpa + n:#x} lies outside guest memory "
                f"0..{self.size:#x} ({format_size(self.size)})"
            )

    def read(self, gpa: int, n: int) -> bytes:
        """Read n bytes at guest-physical address gpa (faults pages in as needed)."""
        n = _as_count(n, "byte count")
        self._check_range(gpa, n)
        buf = bytearray(n)
        self._call(lib.vmm_mem_read, gpa, ffi.from_buffer(buf), n, doing="reading guest memory")
        return bytes(buf)

    def write(self, gpa: int, data: bytes | bytearray | memoryview) -> None:
        """Write data at guest-physical address gpa; written pages become dirty. `data` is
        bytes-like: bytes, bytearray, memoryview, array.array or a NumPy array."""
        try:
            view = memoryview(data)
        except TypeError:
            hint = "; encode text first, e.g. text.encode()" if isinstance(data, str) else ""
            raise SettingsError(
                "write data must be bytes-like (bytes, bytearray, memoryview, a NumPy array), "
                f"got {type(data).__name__}{hint}"
            ) from None
        if not view.c_contiguous:  # a strided view: copy it to one run of bytes
            view = memoryview(view.tobytes())
        view = view.cast("B")
        self._check_range(gpa, view.nbytes)
        src = ffi.from_buffer(view)
        self._call(lib.vmm_mem_write, gpa, src, view.nbytes, doing="writing guest memory")

    def replay(self, pages: Any, writes: Any = None) -> int:
        """Run a trace of guest page accesses in C: pages is an integer array of guest page
        numbers, writes an optional same-length array of write flags. A write access
        increments the little-endian uint64 in the page's first 8 bytes.

        Several threads may replay into one guest at once. Returns the nanoseconds this
        call's faults were blocked on paging (its own page-ins and page-outs, another
        thread's transfer of the same page, a frame held by a transfer): what the vCPU
        replaying it waited, its share of `stats.fault_latency`."""
        trace = np.asarray(pages)
        if trace.ndim != 1 or trace.dtype.kind not in "iu":
            raise SettingsError("replay: pages must be a 1-D integer array of guest page numbers")
        if trace.size == 0:
            return 0
        if trace.dtype != np.uint32:
            low, high = int(trace.min()), int(trace.max())
            if low < 0 or high >= self.pages:
                bad = low if low < 0 else high
                raise GuestAddressError(
                    f"replay: guest page {bad} lies outside 0..{self.pages - 1}"
                )
        trace = np.ascontiguousarray(trace, dtype=np.uint32)
        flags = ffi.NULL
        if writes is not None:
            w = np.asarray(writes)
            if w.shape != trace.shape:
                raise SettingsError("replay: writes must have one flag per page access")
            w = np.ascontiguousarray(
                w.view(np.uint8) if w.dtype == np.bool_ else w != 0, dtype=np.uint8
            )
            flags = ffi.from_buffer("uint8_t[]", w)
        done = ffi.new("uint64_t *")
        wait_ns = ffi.new("uint64_t *")
        rc = self._call(
            lib.vmm_mem_replay_timed,
            ffi.from_buffer("uint32_t[]", trace),
            flags,
            trace.size,
            done,
            wait_ns,
        )
        if rc == lib.VMM_ERANGE:
            raise GuestAddressError(
                f"replay: guest page {int(trace[done[0]])} lies outside 0..{self.pages - 1}"
            )
        raise_for(rc, self._path, f"replaying access {done[0]} of the trace")
        return int(wait_ns[0])

    def move_paging_file(self, folder: str | os.PathLike[str], stem: str | None = None) -> str:
        """Make the next paging file in `folder` (named `stem`-<random>.slp, default the
        guest's name), e.g. a guest page file on its virtual disk after a Smart Paging file.
        Only while no paging file exists (VmmemError otherwise): pages in a file stay in it.
        Returns the new path (not created yet)."""
        folder = os.path.abspath(os.fspath(folder))
        _check_paging_dir(folder)
        safe = _NAME_RE.sub("_", stem if stem is not None else self.name)[:64] or "guest"
        path = os.path.join(folder, f"{safe}-{uuid.uuid4().hex[:12]}.slp")
        self._call(lib.vmm_mem_set_path, path.encode(), doing="moving the paging file")
        self._path = path
        self.paging_dir = folder
        return path

    def release(self, first_page: int, count: int) -> None:
        """The guest gives pages back (the balloon's path): no I/O, frames return to the
        pool, file copies are discarded; the pages read as zeros again."""
        first_page = _as_count(first_page, "first page")
        count = _as_count(count, "page count")
        if first_page < 0 or count < 0 or first_page + count > self.pages:
            raise GuestAddressError(
                f"release: pages {first_page}..{first_page + count - 1} lie outside "
                f"0..{self.pages - 1}"
            )
        self._call(lib.vmm_mem_release, first_page, count, doing="releasing pages")

    def drain(self, max_pages: int | None = None) -> int:
        """Bring every paged-out page back into frames and delete the paging file; returns the
        pages left in the file (0: it is gone). Raises OutOfFramesError, changing nothing, if
        the frame limit or the pool cannot hold every page. With max_pages, stop after that
        many pages (the next call resumes), so other threads get at this guest in between."""
        limit = 0 if max_pages is None else _as_count(max_pages, "max_pages")
        if limit < 0 or max_pages == 0:
            raise SettingsError(f"max_pages must be a positive number of pages, got {max_pages}")
        left = ffi.new("uint64_t *")
        self._call(lib.vmm_mem_drain, limit, left, doing="draining the Smart Paging file")
        return int(left[0])

    def page_state(self, page: int) -> PageState:
        page = _as_count(page, "page")
        if not 0 <= page < self.pages:
            raise GuestAddressError(f"guest page {page} lies outside 0..{self.pages - 1}")
        state = ffi.new("int *")
        self._call(lib.vmm_mem_page_state, page, state, doing="reading a page's state")
        return PageState(state[0])

    # -- counters ---------------------------------------------------------------------------

    @property
    def stats(self) -> MemoryStats:
        raw = ffi.new("vmm_stats *")
        self._call(lib.vmm_mem_stats, raw, doing="reading counters")
        values = {name: int(getattr(raw, name)) for name in _COUNTERS}

        def histogram(counts: Any, total_ns: int) -> LatencyHistogram:
            return LatencyHistogram(np.frombuffer(ffi.buffer(counts), np.uint64).copy(), total_ns)

        return MemoryStats(
            **values,
            page_in_latency=histogram(raw.page_in_hist, values["page_in_ns"]),
            page_out_latency=histogram(raw.page_out_hist, values["page_out_ns"]),
            fault_latency=histogram(raw.fault_hist, values["fault_ns"]),
        )

    def _counters(self) -> Any:
        """The scalar counters only (a C struct, no histograms copied): for properties."""
        raw = ffi.new("vmm_counters *")
        self._call(lib.vmm_mem_counters, raw, doing="reading counters")
        return raw

    @property
    def counters(self) -> dict[str, int]:
        """The scalar counters of `stats` (same names), without copying its three latency
        histograms: the cheap read for polling in a loop."""
        raw = self._counters()
        return {name: int(getattr(raw, name)) for name in _COUNTERS}

    def reset_stats(self) -> None:
        self._call(lib.vmm_mem_reset_stats, doing="resetting counters")

    @property
    def resident_pages(self) -> int:
        return int(self._counters().resident)

    def pages_in_state(self, state: PageState) -> Iterator[int]:
        """Page numbers in the given state (walks the page table: for tests and inspection)."""
        for page in range(self.pages):
            if self.page_state(page) == state:
                yield page


def _destroy_guest(ptr: Any, pool: FramePool) -> None:
    del pool  # held only so the pool outlives the guest
    lib.vmm_mem_destroy(ptr)


def folder_problem(folder: str) -> tuple[int, str] | None:
    """Why a paging file could not be made in `folder` (errno, and what to say after the
    folder's name), or None: it does not exist, is not a folder, or is not writable. The one
    wording of these problems: the lab's location checks say it too."""
    import errno

    if not os.path.exists(folder):
        return errno.ENOENT, "does not exist"
    if not os.path.isdir(folder):
        return errno.ENOTDIR, "is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        try:
            code = errno.EROFS if os.statvfs(folder).f_flag & os.ST_RDONLY else errno.EACCES
        except OSError:
            code = errno.EACCES
        return code, f"is not writable ({os.strerror(code)})"
    return None


def _check_paging_dir(folder: str) -> None:
    """Fail early, with the folder named, where a paging file could never be made (what the
    library must enforce; where files should go is the lab's policy: vmmem.lab.locations)."""
    from .errors import PagingFolderError

    problem = folder_problem(folder)
    if problem is not None:
        code, text = problem
        raise PagingFolderError(code, f"the paging folder {text}", folder)
