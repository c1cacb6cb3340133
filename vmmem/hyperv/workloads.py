"""Guest workloads: what a VM's guest does with its memory, phase by phase.

A VM runs its list of phases on its own thread at every boot. Each phase drives the paging
core through `Guest.replay` with numpy arrays, a chunk at a time (never per access in
Python), declares its committed memory (demand) before touching it, and releases what it
frees. The boot is complete when the leading boot phases have finished.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np

from ..errors import SettingsError
from ..sizes import MB, SizeLike, parse_size
from ..validate import check_flag, check_name, check_number, check_whole

if TYPE_CHECKING:
    from ..guests import GuestProfile

__all__ = [
    "WINDOWS_MODELS",
    "Boot",
    "Guest",
    "Idle",
    "ModelParameter",
    "Trace",
    "WindowsModel",
    "Workload",
    "as_phases",
    "windows_model",
]


# Guest CPU per page a kernel spends zeroing memory, measured from the two shipped Debian 12
# recordings (vmmem guests --json: provenance): debian-12-init-on-free (init_on_free=1: the
# kernel zeroes every freed page) ran 6,111,961,788 instructions and touched 131,010 pages;
# debian-12 ran 5,813,808,860 and touched 49,710. 298,152,928 more instructions for 81,300
# more pages: 3,667 per page, 1.83 us at 2e9 instructions/s (DEFAULT_GUEST_IPS). An upper
# bound: init_on_free also zeroes pages the boot frees and reuses. (The busybox pair,
# not shipped, gave about 1,400 per page.) tests/test_windows_model.py recomputes it.
ZERO_INSTRUCTIONS_PER_PAGE = (6_111_961_788 - 5_813_808_860) / (131_010 - 49_710)
ZERO_CPU_PER_PAGE = ZERO_INSTRUCTIONS_PER_PAGE / 2.0e9

# The article's idle guest: 250 MB committed of 512 MB Startup (250 MB + 20 % = 300 MB).
IDLE_FRACTION = 250 / 512


class Guest(Protocol):
    """What a workload may do to its VM (implemented by the VM's guest thread)."""

    page_size: int
    startup_pages: int  # Startup RAM in pages
    guest_pages: int  # guest-physical memory (Maximum RAM) in pages
    processors: int  # virtual processors the boot may run streams on

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

    # Stream i on virtual processor i, each on its own thread and clock (at most `processors`
    # streams); returns when all are done, raises the first one's error.
    def run_on_processors(self, streams: Sequence[Callable[[Guest], None]]) -> None: ...


class Workload:
    """One phase of a guest's life. Subclasses set `phase` and `boot` and implement run()."""

    phase: str = "workload"
    boot: bool = False

    def validate(self, startup_pages: int, guest_pages: int, processors: int = 1) -> None:
        """Raise SettingsError if this phase cannot run in a VM of that size (and that many
        virtual processors)."""

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
    """An OS boot: touches all of Startup RAM (the synthetic boot), or, as the Windows model
    (`windows_model`), a share of it and optionally zeroes the rest in the boot's I/O waits.

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
    touch_fraction: the share of Startup RAM the boot itself touches (1: all of it).
    zero_free: the rest of Startup RAM (the free list) is zeroed, as Windows' zero page thread
      does at priority 0 when a processor is idle: spread evenly over the chunks, after each
      chunk's disk reads (in the boot's I/O waits, never before the boot's own work). Its CPU,
      zero_cpu_per_page (measured: ZERO_CPU_PER_PAGE), is charged only in a chunk without disk
      reads; with reads it runs while the boot waits for its disk.
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
    touch_fraction: float = 1.0
    zero_free: bool = False
    zero_cpu_per_page: float = ZERO_CPU_PER_PAGE
    disk_span_factor: float = 4.0
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
        _check_fraction("Boot touch_fraction", self.touch_fraction)
        if self.touch_fraction <= 0:
            raise SettingsError("Boot touch_fraction must be above 0, got 0")
        check_flag("Boot zero_free", self.zero_free)
        _check_nonneg("Boot zero_cpu_per_page", self.zero_cpu_per_page)
        _check_fraction("Boot disk_span_factor", self.disk_span_factor, 1.0, 100.0)
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

    def profile(self, startup_ram: SizeLike, model: WindowsModel | None = None) -> GuestProfile:
        """This boot as a guest profile (vmmem guests), for a VM of `startup_ram`; `model`:
        the Windows model it was made from (its name, what it is, its sources and guesses)."""
        from ..guests import synthetic_profile

        pages = parse_size(startup_ram, "Startup RAM") // 4096
        # every setting but the seed, which only picks which pages, not how many or how fast
        params: dict[str, Any] = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "seed"
        }
        extra: dict[str, Any] = {}
        if model is None:
            params["source"] = (
                "CPU time invented: 50 us per page makes a 512 MB boot with enough memory take "
                "about 6.6 s; disk reads as the recorded debian-12 boot's, per MB of Startup RAM"
            )
            extra = {"guesses": ["cpu_per_page"]}
        else:
            extra = {
                "name": model.name,
                "description": f"{model.description} (guesses: {', '.join(model.guesses)})",
                "sources": [p.as_dict() for p in model.parameters],
                "guesses": list(model.guesses),
            }
        return synthetic_profile(
            startup_ram,
            self.expected_cpu_time(pages) / max(pages, 1),
            self.disk_read_bytes(pages, 4096),
            params,
            pages_touched=self.pages_touched(pages),
            **extra,
        )

    def footprint_pages(self, startup_pages: int) -> int:
        """Pages the boot itself touches (its first touches), at least 1."""
        return max(1, min(startup_pages, int(round(self.touch_fraction * startup_pages))))

    def pages_touched(self, startup_pages: int) -> int:
        """Pages touched in all: the footprint, and the rest of Startup RAM if it is zeroed."""
        return startup_pages if self.zero_free else self.footprint_pages(startup_pages)

    def disk_read_bytes(self, startup_pages: int, page_size: int) -> int:
        """What this boot reads from its virtual disk, in whole requests."""
        wanted = int(self.disk_read_fraction * startup_pages * page_size)
        return wanted // self.disk_request_bytes * self.disk_request_bytes

    def disk_size_hint(self, startup_pages: int, page_size: int) -> int:
        """disk_span_factor (default four) times what the boot reads (at least 16 MB): its
        reads spread over a region, as a real boot's are over the system disk's files."""
        read = self.disk_read_bytes(startup_pages, page_size)
        span = int(self.disk_span_factor * read)
        return 0 if read == 0 else max(16 * MB, -(-span // MB) * MB)

    def _zero_cpu_charged(self, startup_pages: int, page_size: int) -> float:
        """Zeroing CPU the boot is charged: all of it when the boot has no I/O waits to hide
        it in (no disk reads), else none (docstring above)."""
        if not self.zero_free or self.disk_read_bytes(startup_pages, page_size) > 0:
            return 0.0
        return self.zero_cpu_per_page * (startup_pages - self.footprint_pages(startup_pages))

    def expected_cpu_time(self, startup_pages: int, processors: int = 1) -> float:
        """The guest CPU time of this boot, in seconds: the boot time with enough memory,
        less the replay itself (the boot's own CPU per page of its footprint, and the zeroing
        it is charged). With several processors, the latest one's: its chunks' share
        (chunk i on processor i mod N) and, on processor 0, the zeroing."""
        n = self.footprint_pages(startup_pages)
        own = self.cpu_per_page * n
        if self.cpu_time is not None:
            own = self.cpu_time
        zeroing = self._zero_cpu_charged(startup_pages, 4096)
        if processors == 1:
            return own + zeroing
        chunk_pages = np.minimum(self.chunk_pages, n - np.arange(0, n, self.chunk_pages))
        per_processor = np.bincount(
            np.arange(chunk_pages.size) % processors, weights=chunk_pages, minlength=processors
        ) * (own / n)
        per_processor[0] += zeroing
        return float(per_processor.max())

    def run(self, guest: Guest) -> None:
        """The boot's chunks on the VM's virtual processors (docs/GUESTS.md, "Several virtual
        processors"): chunk i on processor i mod N, the free list's zeroing on processor 0.
        With one processor, chunk by chunk on the guest thread, as generated."""
        guest.commit_range(0, guest.startup_pages)
        chunks = self._chunks(guest.startup_pages, guest.page_size, guest.processors)
        if guest.processors == 1:
            for chunk in chunks:
                chunk.run(guest)
            return
        dealt = list(chunks)
        streams = [dealt[p :: guest.processors] for p in range(guest.processors)]
        guest.run_on_processors(
            [functools.partial(_run_chunks, stream) for stream in streams if stream]
        )

    def _chunks(self, startup: int, page_size: int, processors: int) -> Iterator[_BootChunk]:
        """The boot's chunks in order, each with its accesses, disk reads, the free list's
        zeroing after them (on processor 0's chunks only: every `processors`-th) and its CPU."""
        n = self.footprint_pages(startup)
        own_cpu = self.expected_cpu_time(startup) - self._zero_cpu_charged(startup, page_size)
        cpu_per_page = own_cpu / n
        rng = np.random.default_rng(self.seed)
        # First-touch order: 2 MB blocks in order, shuffled within windows of 8 blocks.
        block = max(1, 2 * MB // page_size)
        nblocks = -(-n // block)
        keys = np.arange(nblocks) // 8 + rng.random(nblocks) * 0.999
        order = np.argsort(keys, kind="stable")
        first = (order[:, None] * block + np.arange(block)[None, :]).ravel()
        first = first[first < n].astype(np.uint32)
        hot = max(1, int(n * self.hot_fraction))
        nchunks = -(-n // self.chunk_pages)
        nreq = self.disk_read_bytes(n, page_size) // self.disk_request_bytes
        disk_slots = self.disk_size_hint(n, page_size) // self.disk_request_bytes
        reads_per_chunk = np.diff(np.linspace(0, nreq, nchunks + 1).round().astype(np.int64))
        # The free list (Startup RAM past the footprint), zeroed a share after each of
        # processor 0's chunks (with one processor: after every chunk).
        free = np.arange(n, startup, dtype=np.uint32) if self.zero_free else None
        zeroing_chunks = -(-nchunks // processors)
        zero_cuts = np.linspace(0, 0 if free is None else len(free), zeroing_chunks + 1).round()
        zero_cuts = zero_cuts.astype(np.int64)
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
            reads = int(reads_per_chunk[index]) if nreq else 0
            disk = None
            if reads:
                slots = rng.integers(0, disk_slots, reads)
                size = self.disk_request_bytes
                disk = (slots * size, np.full(reads, size, np.int64))
            zero_run = None
            zeroed = 0.0
            if free is not None and index % processors == 0:
                share = index // processors
                page_run = free[zero_cuts[share] : zero_cuts[share + 1]]
                if len(page_run):
                    zero_run = page_run
                    if not nreq:  # no I/O waits to hide it in: the boot's CPU
                        zeroed = self.zero_cpu_per_page * len(page_run)
            yield _BootChunk(
                pages[mix], writes[mix], disk, zero_run, cpu_per_page * len(new) + zeroed
            )


class _BootChunk(NamedTuple):
    """One chunk of a Boot: its accesses, its disk reads (offsets, lengths; None: none), the
    free-list pages zeroed after them (None: none), then its guest CPU time."""

    pages: np.ndarray
    writes: np.ndarray
    disk: tuple[np.ndarray, np.ndarray] | None
    zero_pages: np.ndarray | None
    seconds: float

    def run(self, guest: Guest) -> None:
        guest.replay(self.pages, self.writes)
        if self.disk is not None:
            guest.disk_io(*self.disk, None)
        if self.zero_pages is not None:
            guest.replay(self.zero_pages, np.ones(len(self.zero_pages), np.uint8))
        guest.sleep(self.seconds)


def _run_chunks(chunks: Sequence[_BootChunk], guest: Guest) -> None:
    """One virtual processor's share of a Boot, in order."""
    for chunk in chunks:
        chunk.run(guest)


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

    def validate(self, startup_pages: int, guest_pages: int, processors: int = 1) -> None:
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


# -- the Windows model -----------------------------------------------------------------------

MEASURED, CITED, GUESS = "measured", "cited", "guess"


@dataclass(frozen=True)
class ModelParameter:
    """One number of a Windows model and where it comes from (docs/GUESTS.md, "The Windows
    model: where each number comes from")."""

    name: str  # the Boot field it sets, or a fact the model rests on
    value: str
    source: str
    kind: str  # MEASURED, CITED or GUESS

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class WindowsModel:
    """A named model of a Windows boot: Boot settings, each with its source."""

    name: str
    description: str
    settings: dict[str, Any]
    parameters: tuple[ModelParameter, ...]

    @property
    def guesses(self) -> tuple[str, ...]:
        """The parameters that are still a guess (shown wherever the model's figures are)."""
        return tuple(p.name for p in self.parameters if p.kind == GUESS)

    def boot(self, **overrides: Any) -> Boot:
        """The model's Boot phase; `overrides` (a scenario's [boot] keys) win."""
        return Boot(**{**self.settings, **overrides})


# A Windows 7 boot reads about 420-600 MB in 20,000-70,000 I/Os (VDI boot-storm measurements,
# anecdotal): the middle, 510 MB, at New-VM's default Startup of 512 MB, in 12 KiB requests
# (about 43,500 of them, within the range).
_WINDOWS_READ_FRACTION = 510 / 512
_COMMON = (
    ModelParameter(
        "startup",
        "512 MB (the ratios below are per MB of Startup RAM)",
        "New-VM: default -MemoryStartupBytes 512 MB (Microsoft, New-VM reference)",
        CITED,
    ),
    ModelParameter(
        "touch_fraction",
        "0.75 of Startup RAM",
        "Microsoft: 'Windows requires more memory during startup than the steady state' "
        "(Hyper-V Dynamic Memory overview): more than the idle 250 of 512 MB (the article), "
        "at most Startup RAM; 3/4 is the middle",
        GUESS,
    ),
    ModelParameter(
        "cpu_per_page",
        "50 us per page touched (0.75 x 512 MB: about 4.9 s)",
        "none: the synthetic boot's invented figure, kept so the two compare",
        GUESS,
    ),
    ModelParameter(
        "disk_read_fraction",
        f"{_WINDOWS_READ_FRACTION:.3f} of Startup RAM (510 MB at 512 MB)",
        "a Windows 7 boot reads about 420-600 MB (VDI boot-storm measurements, anecdotal, "
        "not Microsoft's): the middle",
        GUESS,
    ),
    ModelParameter(
        "disk_request_bytes",
        "12 KiB (about 43,500 reads at 512 MB)",
        "the same VDI measurements: 20,000-70,000 I/Os per boot (anecdotal)",
        GUESS,
    ),
    ModelParameter(
        "disk_span_factor",
        "1 (each block of the read region read about once)",
        "none: a boot reads its files about once (prefetched)",
        GUESS,
    ),
    ModelParameter(
        "access pattern",
        "hot_fraction 0.10, hot_ratio 1.0, revisit_ratio 0.25, write_ratio 0.3 (the "
        "synthetic boot's)",
        "none: invented for the synthetic boot",
        GUESS,
    ),
)
_ZEROING_WHEN = ModelParameter(
    "zeroing in idle time",
    "after each chunk's disk reads, never before the boot's own work",
    "Windows Internals 6th ed., part 2, ch. 10: the zero page thread runs at priority 0, "
    "only when a processor has no other thread to run",
    CITED,
)
_ZERO_CPU = ModelParameter(
    "zero_cpu_per_page",
    f"{ZERO_CPU_PER_PAGE * 1e6:.2f} us ({ZERO_INSTRUCTIONS_PER_PAGE:,.0f} instructions at 2e9/s)",
    "measured: debian-12-init-on-free against debian-12 (shipped traces' provenance): "
    "298,152,928 more instructions for 81,300 more pages touched; Linux's zeroing, an upper "
    "bound",
    MEASURED,
)

WINDOWS_MODELS: dict[str, WindowsModel] = {
    "windows-model": WindowsModel(
        "windows-model",
        "Windows on Hyper-V, modelled: skips zeroing (HvExtCallGetBootZeroedMemory)",
        {
            "touch_fraction": 0.75,
            "disk_read_fraction": _WINDOWS_READ_FRACTION,
            "disk_request_bytes": 12 * 1024,
            "disk_span_factor": 1.0,
            "zero_free": False,
        },
        _COMMON
        + (
            ModelParameter(
                "zero_free",
                "no: the free list is not zeroed",
                "Hypervisor TLFS, HvExtCallGetBootZeroedMemory: Hyper-V reports 'ranges that "
                "are known to be zeroed' so the guest may skip zeroing them",
                CITED,
            ),
            ModelParameter(
                "zeroed-memory report on a restart",
                "reported for all of Startup RAM",
                "none: whether Windows asks on every boot and what Hyper-V reports for a "
                "restarted VM's memory is not documented",
                GUESS,
            ),
        ),
    ),
    "windows-model-zeroing": WindowsModel(
        "windows-model-zeroing",
        "Windows on a hypervisor without the zeroed-memory report, modelled: zeroes the rest "
        "of Startup RAM in its I/O waits",
        {
            "touch_fraction": 0.75,
            "disk_read_fraction": _WINDOWS_READ_FRACTION,
            "disk_request_bytes": 12 * 1024,
            "disk_span_factor": 1.0,
            "zero_free": True,
        },
        _COMMON
        + (
            ModelParameter(
                "zero_free",
                "yes: every free page is zeroed",
                "Windows Internals 6th ed., part 2, ch. 10 (zero page list filled from the "
                "free list); on KVM a 64 GB Windows 11 guest zeroed for about 90 s after "
                "start (qemu-devel, January 2026)",
                CITED,
            ),
            _ZEROING_WHEN,
            _ZERO_CPU,
        ),
    ),
}


def windows_model(name: str, **overrides: Any) -> Boot:
    """The Boot phase of the Windows model `name` (WINDOWS_MODELS), `overrides` applied."""
    try:
        model = WINDOWS_MODELS[name]
    except KeyError:
        raise SettingsError(
            f"no Windows model {name!r}; known: {', '.join(WINDOWS_MODELS)}"
        ) from None
    return model.boot(**overrides)
