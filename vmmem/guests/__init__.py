"""Guests: recorded real OS boots (traces made under QEMU TCG) and the synthetic boot, as
profiles to list, and a replay driver that feeds a recorded boot to a GuestMemory.

Layering: this package uses vmmem.memory, vmmem.sizes, vmmem.errors and numpy (and
vmmem.vdisk's VirtualDisk as a type only), never vmmem.hyperv or vmmem.cli. The format of a
trace file is in docs/GUESTS.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import SettingsError
from ..memory import GuestMemory
from ..sizes import SizeLike, parse_size
from .replay import ReplayPlan, Segment, plan_replay, run_replay
from .trace import FORMAT, MAPPINGS, PAGE_SIZE, GuestTrace, map_pages, shipped_names

if TYPE_CHECKING:  # only the type: any object with .size and .issue() will do
    from ..vdisk import VirtualDisk

__all__ = [
    "fold_disk_requests",
    "DEFAULT_GUEST_IPS",
    "FORMAT",
    "MAPPINGS",
    "SYNTHETIC_BOOT",
    "EpochProgress",
    "GuestProfile",
    "GuestTrace",
    "ReplayPlan",
    "ReplayResult",
    "Segment",
    "list_guests",
    "load_guest",
    "map_pages",
    "plan_replay",
    "replay_epochs",
    "run_replay",
    "shipped_names",
]

# Guest instructions per second of a native (not emulated) guest vCPU, used to turn a
# recorded boot's instructions into guest CPU time: instructions / guest_ips. Measured on this
# machine class by tools/measure_guest_ips.py: 1.7 G/s on kernel-bound code (fork/exec),
# 5.3-6.0 G/s on compute-bound user code (gzip); a boot is mostly kernel work. See
# docs/GUESTS.md, "guest_ips".
DEFAULT_GUEST_IPS = 2.0e9

SYNTHETIC_BOOT = "synthetic-boot"


@dataclass(frozen=True)
class GuestProfile:
    """One guest profile as `vmmem guests` lists it (recorded or synthetic)."""

    name: str
    kind: str  # "recorded" or "synthetic"
    description: str
    memory_size: int  # bytes: the recorded VM's RAM, or the Startup RAM the numbers are for
    pages_touched: int
    pages_written: int
    disk_bytes_read: int
    disk_bytes_written: int
    instructions: int | None  # None: synthetic, charged as cpu_per_page instead
    epochs: int | None
    guest_cpu_seconds: float  # at DEFAULT_GUEST_IPS (recorded) or cpu_per_page (synthetic)
    path: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    # The vCPUs the boot was recorded with; None for a model (the synthetic boot, the Windows
    # models), which runs on as many as its VM is given.
    vcpus: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_guest(name_or_path: str) -> GuestTrace:
    """A shipped guest by name (see shipped_names()) or a trace file by path."""
    return GuestTrace.load(name_or_path)


def _profile(trace: GuestTrace) -> GuestProfile:
    return GuestProfile(
        name=trace.name,
        kind="recorded",
        description=trace.kind,
        memory_size=trace.memory_size,
        pages_touched=trace.pages_touched,
        pages_written=trace.pages_written,
        disk_bytes_read=trace.disk_bytes_read,
        disk_bytes_written=trace.disk_bytes_written,
        instructions=trace.instructions,
        epochs=trace.epochs,
        guest_cpu_seconds=trace.instructions / DEFAULT_GUEST_IPS,
        path=str(trace.path),
        provenance=dict(trace.provenance),
        vcpus=trace.vcpus,
    )


def synthetic_profile(
    startup_ram: SizeLike,
    cpu_per_page: float,
    disk_read_bytes: int,
    parameters: dict[str, Any],
    *,
    name: str = SYNTHETIC_BOOT,
    description: str = "touches all of Startup RAM (invented: cpu_per_page is a guess)",
    pages_touched: int | None = None,
    sources: list[dict[str, str]] | None = None,
    guesses: list[str] | None = None,
) -> GuestProfile:
    """A modelled boot's profile for a VM of `startup_ram`: `pages_touched` (default all)
    touched and written once, `cpu_per_page` seconds of guest CPU per Startup page,
    `disk_read_bytes` read from its disk; `sources` and `guesses` say where its numbers come
    from. The Hyper-V layer's Boot makes it from its own settings (Boot.profile)."""
    pages = parse_size(startup_ram, "startup RAM") // PAGE_SIZE
    touched = pages if pages_touched is None else pages_touched
    provenance: dict[str, Any] = {"parameters": parameters, "guesses": list(guesses or [])}
    if sources is not None:
        provenance["sources"] = sources
    return GuestProfile(
        name=name,
        kind="model" if sources is not None else "synthetic",
        description=description,
        memory_size=pages * PAGE_SIZE,
        pages_touched=touched,
        pages_written=touched,
        disk_bytes_read=disk_read_bytes,
        disk_bytes_written=0,
        instructions=None,
        epochs=None,
        guest_cpu_seconds=pages * cpu_per_page,
        provenance=provenance,
    )


def list_guests(synthetic: GuestProfile | None = None) -> list[GuestProfile]:
    """Every guest profile: the shipped recorded ones, then `synthetic` if given (the Hyper-V
    layer's `Boot().profile(startup)`; `vmmem.lab.guest_profiles` puts them together)."""
    recorded = [_profile(GuestTrace.load(n)) for n in shipped_names()]
    return recorded + ([synthetic] if synthetic is not None else [])


@dataclass(frozen=True)
class EpochProgress:
    """Passed to replay_epochs' callback after each epoch."""

    epoch: int
    epochs: int
    instructions: int  # this epoch's guest instructions
    cpu_seconds: float  # instructions / guest_ips: what the caller should charge
    pages: int  # entries replayed in this epoch
    disk_requests: int
    disk_bytes_read: int
    disk_bytes_written: int
    replay_seconds: float  # wall time of this epoch's replay and disk I/O


@dataclass(frozen=True)
class ReplayResult:
    epochs: int
    instructions: int
    cpu_seconds: float
    entries: int
    disk_requests: int
    disk_bytes_read: int
    disk_bytes_written: int
    replay_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fold_disk_requests(offsets: Any, lengths: Any, disk_size: int) -> tuple[Any, Any]:
    """Recorded disk requests onto a virtual disk of `disk_size` bytes: lengths capped at the
    disk, and a request that would run past its end moved to its offset modulo the room left
    (4 KiB aligned). Requests within the disk keep their offsets."""
    off = np.asarray(offsets, dtype=np.int64)
    ln = np.minimum(np.asarray(lengths, dtype=np.int64), disk_size)
    span = disk_size - ln + 1
    off = np.where(off + ln > disk_size, (off % span) // 4096 * 4096, off)
    return off, ln


def replay_epochs(
    memory: GuestMemory,
    trace: GuestTrace | str,
    *,
    disk: VirtualDisk | None = None,
    mapping: str = "fold",
    guest_ips: float = DEFAULT_GUEST_IPS,
    on_epoch: Callable[[EpochProgress], Any] | None = None,
    start: int = 0,
    stop: int | None = None,
    vcpu: int | None = None,
) -> ReplayResult:
    """Replay a recorded boot into `memory` with the replay loop (vmmem.guests.replay), one
    segment per epoch: its accesses in one GuestMemory.replay call (the core runs them in C),
    then its disk requests to `disk` (if given), then `on_epoch(EpochProgress)`. Epochs
    [start, stop) of the recording, all its vCPUs' in the order they ended while recording;
    `vcpu`: only that vCPU's stream (run several on threads of their own to replay them at
    once).

    Pages are mapped onto the memory's size by `mapping` (see map_pages). Disk requests
    beyond the disk's end are folded modulo the disk's size (aligned). The callback is where a
    caller charges guest CPU time (progress.cpu_seconds = the epoch's instructions /
    guest_ips), e.g. by sleeping. A callback that returns False stops the replay after that
    epoch.
    """
    if isinstance(trace, str):
        trace = GuestTrace.load(trace)
    stream = None
    if vcpu is not None:
        if isinstance(vcpu, bool) or not isinstance(vcpu, int) or not 0 <= vcpu < trace.vcpus:
            raise SettingsError(
                f"vcpu must be one of the recording's vCPUs, 0 to {trace.vcpus - 1}, got {vcpu!r}"
            )
        stream = trace.vcpu_epochs(vcpu)
    plan = plan_replay(
        trace,
        memory.pages,
        page_size=memory.page_size,
        mapping=mapping,
        guest_ips=guest_ips,
        per_epoch=True,
        start=start,
        stop=stop,
        epochs=stream,
    )
    totals = dict(instructions=0, entries=0, requests=0, read=0, written=0)
    epoch_io = [0, 0, 0]  # this epoch's requests, bytes read, bytes written
    t_all = t0 = time.perf_counter()

    def issue(off: np.ndarray, ln: np.ndarray, w: np.ndarray) -> None:
        if disk is not None:
            off, ln = fold_disk_requests(off, ln, disk.size)
            io = disk.issue(off, ln, w)
            epoch_io[:] = io.requests, io.bytes_read, io.bytes_written

    def charge(seg: Segment) -> Any:
        nonlocal t0
        nreq, rd, wr = epoch_io
        epoch_io[:] = 0, 0, 0
        insns = trace.epoch_instructions_of(seg.epoch)
        totals["instructions"] += insns
        totals["entries"] += seg.end - seg.start
        totals["requests"] += nreq
        totals["read"] += rd
        totals["written"] += wr
        if on_epoch is None:
            return None
        progress = EpochProgress(
            seg.epoch, trace.epochs, insns, insns / guest_ips, seg.end - seg.start, nreq, rd,
            wr, time.perf_counter() - t0,
        )  # fmt: skip
        keep_on = on_epoch(progress)
        t0 = time.perf_counter()
        return keep_on

    epochs = run_replay(plan, memory.replay, issue, charge)
    return ReplayResult(
        epochs=epochs,
        instructions=totals["instructions"],
        cpu_seconds=totals["instructions"] / guest_ips,
        entries=totals["entries"],
        disk_requests=totals["requests"],
        disk_bytes_read=totals["read"],
        disk_bytes_written=totals["written"],
        replay_seconds=time.perf_counter() - t_all,
    )
