"""Guest workloads: what a VM's guest does with its memory, phase by phase.

A VM runs its list of phases on its own thread at every boot. Each phase drives the paging
core through `Guest.replay` with numpy arrays, a chunk at a time (never per access in
Python), declares its committed memory (demand) before touching it, and releases what it
frees. The boot is complete when the leading boot phases have finished.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import SettingsError
from ..sizes import MB, SizeLike, parse_size
from ..validate import check_flag, check_name, check_number, check_whole

if TYPE_CHECKING:
    from ..guests import GuestProfile

__all__ = ["Boot", "Guest", "Idle", "Trace", "Workload", "as_phases"]


# The article's idle guest: 250 MB committed of 512 MB Startup (250 MB + 20 % = 300 MB).
IDLE_FRACTION = 250 / 512


class Guest(Protocol):
    """What a workload may do to its VM (implemented by the VM's guest thread)."""

    page_size: int
    startup_pages: int  # Startup RAM in pages
    guest_pages: int  # guest-physical memory (Maximum RAM) in pages

    @property
    def demand(self) -> int: ...  # committed pages now

    def commit_range(self, first: int, count: int) -> None: ...

    def commit_pages(self, pages: np.ndarray) -> None: ...

    def keep_only(self, count: int) -> None: ...  # keep [0, count) committed, release the rest

    def replay(self, pages: np.ndarray, writes: np.ndarray | None) -> None: ...

    def sleep(self, seconds: float) -> None: ...  # raises when the VM stops

    def end_smart_paging(self) -> None: ...

    # The guest's own virtual-disk requests (byte offsets and lengths; writes: flags or None).
    def disk_io(
        self, offsets: np.ndarray, lengths: np.ndarray, writes: np.ndarray | None
    ) -> None: ...


class Workload:
    """One phase of a guest's life. Subclasses set `phase` and `boot` and implement run()."""

    phase: str = "workload"
    boot: bool = False

    def validate(self, startup_pages: int, guest_pages: int) -> None:
        """Raise SettingsError if this phase cannot run in a VM of that size."""

    def validate_page_size(self, page_size: int) -> None:
        """Raise SettingsError if this phase cannot run on a host of `page_size`-byte pages."""

    def disk_size_hint(self, startup_pages: int, page_size: int) -> int:
        """Bytes of virtual disk this phase reads from (0: it does no disk I/O)."""
        return 0

    def run(self, guest: Guest) -> None:
        raise NotImplementedError


def _check_fraction(name: str, value: float, low: float = 0.0, high: float = 1.0) -> None:
    check_number(name, value, low=low, high=high)


def _check_nonneg(name: str, value: float | None) -> None:
    if value is not None:
        check_number(name, value, low=0.0, unit="of seconds")


@dataclass(frozen=True)
class Boot(Workload):
    """An OS boot: touches all of Startup RAM, as Windows does before it settles.

    cpu_per_page: guest CPU seconds per Startup page, slept after each chunk (50 us: a 512 MB
      boot with enough memory takes about 6.6 s). cpu_time (s, total) overrides it.
    hot_fraction: the hot core (kernel, drivers): the first pages touched, this share of
      Startup RAM, re-touched throughout, hot_ratio accesses per new page.
    revisit_ratio: accesses per new page to random pages already touched.
    write_ratio: share of re-touches that write (every first touch writes).
    chunk_pages: new pages per chunk.
    disk_read_fraction: bytes read from the VM's virtual disk during the boot, as a share of
      Startup RAM, in disk_request_bytes reads at random 4 KiB-aligned offsets, spread evenly
      over the chunks. The default is what the recorded Debian 12 boot read (33,748,480 bytes
      in 988 requests, about 34 KB each, in a 512 MB VM: docs/GUESTS.md); 0 reads nothing.
    """

    cpu_per_page: float = 50e-6
    cpu_time: float | None = None
    hot_fraction: float = 0.10
    hot_ratio: float = 1.0
    revisit_ratio: float = 0.25
    write_ratio: float = 0.3
    chunk_pages: int = 2048
    seed: int = 0
    disk_read_fraction: float = 33_748_480 / (512 * MB)
    disk_request_bytes: int = 32 * 1024
    phase = "boot"
    boot = True

    def __post_init__(self) -> None:
        _check_nonneg("Boot cpu_per_page", self.cpu_per_page)
        _check_nonneg("Boot cpu_time", self.cpu_time)
        _check_fraction("Boot hot_fraction", self.hot_fraction)
        _check_fraction("Boot hot_ratio", self.hot_ratio, 0.0, 100.0)
        _check_fraction("Boot revisit_ratio", self.revisit_ratio, 0.0, 100.0)
        _check_fraction("Boot write_ratio", self.write_ratio)
        check_whole("Boot chunk_pages", self.chunk_pages, 1)
        check_whole("Boot seed", self.seed, 0)
        _check_fraction("Boot disk_read_fraction", self.disk_read_fraction)
        if (
            isinstance(self.disk_request_bytes, bool)
            or not isinstance(self.disk_request_bytes, int)
            or self.disk_request_bytes < 4096
            or self.disk_request_bytes % 4096
        ):
            raise SettingsError(
                "Boot disk_request_bytes must be a multiple of 4096 bytes, at least 4096, "
                f"got {self.disk_request_bytes!r}"
            )

    def profile(self, startup_ram: SizeLike) -> GuestProfile:
        """This boot as a guest profile (vmmem guests), for a VM of `startup_ram`."""
        from ..guests import synthetic_profile

        pages = parse_size(startup_ram, "Startup RAM") // 4096
        # every setting but the seed, which only picks which pages, not how many or how fast
        params: dict[str, Any] = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "seed"
        }
        params["source"] = (
            "CPU time invented: 50 us per page makes a 512 MB boot with enough memory take "
            "about 6.6 s; disk reads as the recorded debian-12 boot's, per MB of Startup RAM"
        )
        return synthetic_profile(
            startup_ram,
            self.expected_cpu_time(pages) / max(pages, 1),
            self.disk_read_bytes(pages, 4096),
            params,
        )

    def disk_read_bytes(self, startup_pages: int, page_size: int) -> int:
        """What this boot reads from its virtual disk, in whole requests."""
        wanted = int(self.disk_read_fraction * startup_pages * page_size)
        return wanted // self.disk_request_bytes * self.disk_request_bytes

    def disk_size_hint(self, startup_pages: int, page_size: int) -> int:
        """Four times what the boot reads (at least 16 MB): its reads spread over a region,
        as a real boot's are over the system disk's files."""
        read = self.disk_read_bytes(startup_pages, page_size)
        return 0 if read == 0 else max(16 * MB, -(-4 * read // MB) * MB)

    def expected_cpu_time(self, startup_pages: int) -> float:
        """The guest CPU time of this boot, in seconds: the boot time with enough memory,
        less the replay itself."""
        return self.cpu_time if self.cpu_time is not None else self.cpu_per_page * startup_pages

    def run(self, guest: Guest) -> None:
        n = guest.startup_pages
        guest.commit_range(0, n)
        cpu_per_page = self.expected_cpu_time(n) / n
        rng = np.random.default_rng(self.seed)
        # First-touch order: 2 MB blocks in order, shuffled within windows of 8 blocks.
        block = max(1, 2 * MB // guest.page_size)
        nblocks = -(-n // block)
        keys = np.arange(nblocks) // 8 + rng.random(nblocks) * 0.999
        order = np.argsort(keys, kind="stable")
        first = (order[:, None] * block + np.arange(block)[None, :]).ravel()
        first = first[first < n].astype(np.uint32)
        hot = max(1, int(n * self.hot_fraction))
        nchunks = -(-n // self.chunk_pages)
        nreq = self.disk_read_bytes(n, guest.page_size) // self.disk_request_bytes
        disk_slots = self.disk_size_hint(n, guest.page_size) // self.disk_request_bytes
        reads_per_chunk = np.diff(np.linspace(0, nreq, nchunks + 1).round().astype(np.int64))
        for index, start in enumerate(range(0, n, self.chunk_pages)):
            end = min(n, start + self.chunk_pages)
            new = first[start:end]
            n_hot = int(round(len(new) * self.hot_ratio))
            n_rev = int(round(len(new) * self.revisit_ratio))
            hot_idx = rng.integers(0, min(hot, end), n_hot)
            rev_idx = rng.integers(0, end, n_rev)
            again = first[np.concatenate([hot_idx, rev_idx])]
            pages = np.concatenate([new, again])
            writes = np.concatenate(
                [np.ones(len(new), np.uint8), rng.random(len(again)) < self.write_ratio]
            ).astype(np.uint8)
            # Re-touches interleaved at random among the sequential first touches.
            position = np.concatenate(
                [np.arange(len(new), dtype=np.float64), rng.random(len(again)) * len(new)]
            )
            mix = np.argsort(position, kind="stable")
            guest.replay(pages[mix], writes[mix])
            reads = int(reads_per_chunk[index]) if nreq else 0
            if reads:
                slots = rng.integers(0, disk_slots, reads)
                size = self.disk_request_bytes
                guest.disk_io(slots * size, np.full(reads, size, np.int64), None)
            guest.sleep(cpu_per_page * len(new))


@dataclass(frozen=True)
class Idle(Workload):
    """After boot: a small committed working set (the demand), touched slowly; the rest is
    released. Drains a leftover Smart Paging file as soon as the assigned memory can hold the
    working set.

    demand: the working set (a size); None = fraction x Startup RAM (default 250 MB of 512 MB,
      so at a 20 % buffer the VM settles at about 300 MB, the article's figure).
    touch_interval: seconds between touches; touches: pages touched each time.
    duration: seconds to idle (None: until the VM stops or restarts).
    """

    demand: SizeLike | None = None
    fraction: float = IDLE_FRACTION
    touch_interval: float = 0.5
    touches: int = 256
    write_ratio: float = 0.1
    duration: float | None = None
    seed: int = 0
    phase = "idle"
    boot = False

    def __post_init__(self) -> None:
        if self.demand is not None:
            nbytes = parse_size(self.demand, "Idle demand")
            if nbytes <= 0:
                raise SettingsError(f"Idle demand must be positive, got {self.demand!r}")
        _check_fraction("Idle fraction", self.fraction)
        _check_nonneg("Idle touch_interval", self.touch_interval)
        _check_nonneg("Idle duration", self.duration)
        _check_fraction("Idle write_ratio", self.write_ratio)
        check_whole("Idle touches", self.touches, 0)
        check_whole("Idle seed", self.seed, 0)

    def working_set_pages(self, startup_pages: int, page_size: int) -> int:
        if self.demand is not None:
            pages = -(-parse_size(self.demand, "Idle demand") // page_size)
        else:
            pages = int(round(self.fraction * startup_pages))
        return max(1, pages)

    def run(self, guest: Guest) -> None:
        ws = min(self.working_set_pages(guest.startup_pages, guest.page_size), guest.guest_pages)
        guest.keep_only(ws)
        rng = np.random.default_rng(self.seed)
        deadline = None if self.duration is None else time.monotonic() + self.duration
        while deadline is None or time.monotonic() < deadline:
            guest.end_smart_paging()
            if self.touches:
                pages = rng.integers(0, ws, self.touches).astype(np.uint32)
                writes = (rng.random(self.touches) < self.write_ratio).astype(np.uint8)
                guest.replay(pages, writes)
            guest.sleep(self.touch_interval)


@dataclass(frozen=True, eq=False)
class Trace(Workload):
    """A user-supplied trace: page numbers and optional write flags (numpy arrays).

    boot=True: the trace is the boot: its pages must lie within Startup RAM, demand is Startup
      RAM, and a restart short of memory boots it on Smart Paging.
    boot=False: demand grows with the distinct pages touched; a running VM never pages to a
      Smart Paging file, so if its demand exceeds its assigned memory it waits for the balancer.
    cpu_per_access: guest CPU seconds per access, slept after each chunk.
    """

    pages: np.ndarray = field(repr=False)
    writes: np.ndarray | None = field(default=None, repr=False)
    boot: bool = False
    chunk: int = 4096
    cpu_per_access: float = 0.0
    name: str = "trace"

    def __post_init__(self) -> None:
        check_name("Trace name", self.name)
        check_flag("Trace boot", self.boot)
        try:
            pages = np.asarray(self.pages)
        except (ValueError, TypeError, OverflowError):
            pages = np.asarray([], dtype=object)  # ragged or odd: refused just below
        if pages.ndim != 1 or pages.dtype.kind not in "iu":
            raise SettingsError("Trace pages must be a 1-D integer numpy array of page numbers")
        if pages.size and int(pages.min()) < 0:
            raise SettingsError("Trace pages must be >= 0")
        object.__setattr__(self, "pages", pages)
        if self.writes is not None:
            try:
                writes = np.asarray(self.writes)
            except (ValueError, TypeError, OverflowError):
                writes = np.asarray(None)
            if writes.shape != pages.shape or writes.dtype.kind not in "biu":
                raise SettingsError(
                    "Trace writes must be a numpy array of write flags (bool or integer), "
                    "one per page access"
                )
            object.__setattr__(self, "writes", (writes != 0).astype(np.uint8))
        check_whole("Trace chunk", self.chunk, 1)
        _check_nonneg("Trace cpu_per_access", self.cpu_per_access)

    @property
    def phase(self) -> str:  # type: ignore[override]
        return self.name

    def validate(self, startup_pages: int, guest_pages: int) -> None:
        if not self.pages.size:
            return
        top = int(self.pages.max())
        limit, what = (startup_pages, "Startup RAM") if self.boot else (guest_pages, "Maximum RAM")
        if top >= limit:
            raise SettingsError(
                f"Trace {self.name!r} touches page {top}, outside the VM's {what} of {limit} pages"
            )

    def run(self, guest: Guest) -> None:
        self.validate(guest.startup_pages, guest.guest_pages)
        if self.boot:
            guest.commit_range(0, guest.startup_pages)
        n = len(self.pages)
        for start in range(0, n, self.chunk):
            end = min(n, start + self.chunk)
            pages = self.pages[start:end]
            if not self.boot:
                guest.commit_pages(pages)
            writes = None if self.writes is None else self.writes[start:end]
            guest.replay(pages, writes)
            if self.cpu_per_access:
                guest.sleep(self.cpu_per_access * (end - start))


def as_phases(workload: Workload | Sequence[Workload] | None) -> tuple[Workload, ...]:
    """The phases a `workload=` argument means: None is a boot then idle."""
    if workload is None:
        return (Boot(), Idle())
    if isinstance(workload, Workload):
        return (workload,)
    if not isinstance(workload, (list, tuple)):
        raise SettingsError(
            "workload must be a phase (Boot, Idle or Trace), a list of them, or None, "
            f"got {type(workload).__name__}"
        )
    phases = tuple(workload)
    if not phases:
        raise SettingsError("a workload needs at least one phase (e.g. [Boot(), Idle()])")
    for phase in phases:
        if not isinstance(phase, Workload):
            raise SettingsError(
                f"a workload phase must be Boot, Idle or Trace, got {type(phase).__name__}"
            )
    return phases


def boot_phase_count(phases: Sequence[Workload]) -> int:
    """How many leading phases make up the boot."""
    count = 0
    for phase in phases:
        if not phase.boot:
            break
        count += 1
    return count
