"""What a recorded boot will page, predicted without I/O (docs/GUESTS.md, "Predicting").

The paging core's LRU (the default policy) is a demand-filled, write-back LRU cache of
`frames` pages: a page is written to the paging file only when it is evicted dirty (written
since it was last brought in), and keeps its copy there; a fault on a page with a copy is a
page-in, any other fault a zero-fill. One pass of exact LRU stack distances (Mattson et al.,
1970) over the boot's accesses gives page-ins and page-outs at every frame limit at once
(`paging_curve`); one simulation at a frame limit gives the peaks over time (`simulate`).
Both run in C (csrc/stackdist.c). CLOCK, the other policy, is not predicted.

A prediction holds while the frame limit stays fixed for the whole boot (the VM starts empty,
as every boot's memory does); a balancer that moves the limit mid-boot moves the answer.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .._core import ffi, lib
from ..errors import SettingsError
from .trace import GuestTrace, map_pages

__all__ = [
    "BootPrediction",
    "LruCounts",
    "PagingCurve",
    "boot_accesses",
    "boot_seconds",
    "key_space",
    "paging_curve",
    "parse_latency",
    "predict_accesses",
    "predict_boot",
    "simulate",
]


def _arrays(pages: Any, writes: Any, npages: int) -> tuple[Any, Any, Any]:
    keys = np.ascontiguousarray(pages, dtype=np.uint32)
    if keys.ndim != 1:
        raise SettingsError("pages must be a 1-D array of page numbers")
    if keys.size and int(keys.max()) >= npages:
        raise SettingsError(f"page {int(keys.max())} lies outside 0..{npages - 1}")
    if writes is None:
        return keys, ffi.NULL, None
    w = np.ascontiguousarray(np.asarray(writes) != 0, dtype=np.uint8)
    if w.shape != keys.shape:
        raise SettingsError("writes must have one flag per page access")
    return keys, ffi.from_buffer("uint8_t[]", w), w


def _check(rc: int) -> None:
    if rc == lib.SD_ENOMEM:
        raise MemoryError("not enough memory for the stack-distance pass")
    if rc != lib.SD_OK:
        raise SettingsError("stack distances: bad arguments")


@dataclass(frozen=True)
class PagingCurve:
    """Page-ins and page-outs of a boot at every frame limit 0..pages (index = frames)."""

    pages: int  # the VM's pages: frame limits beyond hold every page
    accesses: int
    misses: np.ndarray  # faults (zero-fills + page-ins)
    page_ins: np.ndarray
    page_outs: np.ndarray

    def _at(self, a: np.ndarray, frames: int) -> int:
        return int(a[min(max(frames, 0), self.pages)])

    def at(self, frames: int) -> tuple[int, int]:
        """(page-ins, page-outs) with `frames` frames."""
        return self._at(self.page_ins, frames), self._at(self.page_outs, frames)

    @property
    def frames_without_paging(self) -> int:
        """The fewest frames with which the boot writes nothing to the paging file (and so
        never reads from it): at least 1."""
        paging = np.flatnonzero(self.page_outs)
        return 1 if not paging.size else max(1, int(paging[-1]) + 1)


def paging_curve(pages: Any, writes: Any, npages: int) -> PagingCurve:
    """One pass of exact LRU stack distances over the accesses `pages` (page numbers below
    `npages`) with their write flags: the whole curve."""
    keys, wptr, _keep = _arrays(pages, writes, npages)
    out = [np.zeros(npages + 1, dtype=np.uint64) for _ in range(3)]
    ptrs = [ffi.from_buffer("uint64_t[]", a) for a in out]
    _check(lib.sd_lru_curve(ffi.from_buffer("uint32_t[]", keys), wptr, keys.size, npages, *ptrs))
    return PagingCurve(npages, int(keys.size), out[0], out[1], out[2])


@dataclass(frozen=True)
class LruCounts:
    """One boot at one frame limit, access by access."""

    frames: int
    faults: int
    page_ins: int
    page_outs: int
    clean_drops: int
    peak_paged_out: int  # most pages held only in the paging file at once
    # most (zero-fills - resident pages) at once while the file exists: what the run's boot
    # report counts as its Smart Paging peak (it also counts never-written pages dropped)
    peak_zero_fills_not_resident: int
    paged_out_at_end: int
    resident_at_end: int


def simulate(pages: Any, writes: Any, npages: int, frames: int) -> LruCounts:
    """The LRU at one frame limit (>= 1), simulated in C: counts and peaks over time."""
    if frames < 1:
        raise SettingsError(f"a frame limit of at least 1 is needed, got {frames}")
    keys, wptr, _keep = _arrays(pages, writes, npages)
    c = ffi.new("sd_counts *")
    frames = min(frames, max(npages, 1))
    _check(
        lib.sd_lru_simulate(ffi.from_buffer("uint32_t[]", keys), wptr, keys.size, npages, frames, c)
    )
    return LruCounts(
        frames,
        int(c.misses),
        int(c.fetches),
        int(c.writebacks),
        int(c.clean_drops),
        int(c.peak_stored),
        int(c.peak_unfilled),
        int(c.stored_at_end),
        int(c.resident_at_end),
    )


def key_space(pages: Any) -> int:
    """The pages a curve needs to span: up to the highest page touched (a VM larger than what
    its boot touches costs nothing more to predict)."""
    return int(np.max(pages)) + 1 if np.size(pages) else 1


def boot_accesses(trace: GuestTrace, vm_pages: int, mapping: str) -> tuple[Any, Any]:
    """The accesses a VM of `vm_pages` pages replays for `trace`, in order, with their write
    flags: every epoch's pages mapped by `mapping` (map_pages), epoch after epoch, as the
    Hyper-V layer's RecordedBoot replays them (the mapping is element-wise, so mapping all
    epochs at once is the same)."""
    return map_pages(trace.pages_array, trace.memory_pages, vm_pages, mapping), trace.written


_LATENCY = re.compile(
    r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ns|us|µs|ms|s|iops)?\s*$", re.I
)
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}


def parse_latency(text: str, what: str = "latency") -> float:
    """'150us', '8ms', '0.2 ms', '1e-4' (seconds) -> seconds; '15585iops' (what `vmmem disks
    --probe` prints: one request at a time) -> 1 / 15585 s."""
    m = _LATENCY.match(str(text))
    if m is None:
        raise SettingsError(
            f"{what} {text!r} is not a time: give a number and a unit, e.g. 150us or 8ms "
            "(or the probe's rate, e.g. 15000iops)"
        )
    unit = (m.group(2) or "s").lower()
    number = float(m.group(1))
    if unit == "iops":
        number = 1 / number if number > 0 else 0.0
    value = number * _UNIT.get(unit, 1.0)
    if not 0 < value < 60:
        raise SettingsError(f"{what} {text!r} must be above 0 and below 60 s")
    return value


def boot_seconds(
    cpu_seconds: float,
    page_ins: int,
    page_outs: int,
    disk_reads: int,
    disk_writes: int,
    latency: float,
    write_latency: float | None = None,
) -> float:
    """The boot time the prediction implies: guest CPU + page-ins x latency + page-outs x
    write latency + the boot's own disk requests x latency (reads) or write latency (writes).

    Assumes one request in flight at a time (a boot on one vCPU waits for each fault), every
    request costing the probed 4 KiB latency whatever its size, and no overlap of CPU and I/O.
    """
    wl = latency if write_latency is None else write_latency
    return cpu_seconds + (page_ins + disk_reads) * latency + (page_outs + disk_writes) * wl


@dataclass(frozen=True)
class BootPrediction:
    """What one VM's boot will page, and (given a latency) how long it takes."""

    guest: str
    vm_pages: int
    frames: int
    page_ins: int
    page_outs: int
    smart_paging_peak_pages: int  # most pages held only in the Smart Paging file at once
    report_peak_pages: int  # the same as the run's boot report counts it (see LruCounts)
    faults: int
    no_paging_frames: int  # the fewest frames with which the boot pages nothing
    cpu_seconds: float
    disk_reads: int
    disk_writes: int
    boot_seconds: float | None  # None without a latency
    latency: float | None
    write_latency: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def predict_boot(
    trace: GuestTrace,
    vm_pages: int,
    frames: int,
    *,
    mapping: str = "fold",
    cpu_seconds: float,
    disk_reads: int,
    disk_writes: int = 0,
    latency: float | None = None,
    write_latency: float | None = None,
    curve: PagingCurve | None = None,
) -> BootPrediction:
    """Predict one boot of `trace` in a VM of `vm_pages` pages given `frames` frames for the
    whole boot. `curve`: paging_curve of the same accesses over key_space, if already made
    (one per guest and VM size serves every frame limit)."""
    pages, writes = boot_accesses(trace, vm_pages, mapping)
    return predict_accesses(
        trace.name, pages, writes, vm_pages, frames, cpu_seconds=cpu_seconds,
        disk_reads=disk_reads, disk_writes=disk_writes, latency=latency,
        write_latency=write_latency, curve=curve,
    )  # fmt: skip


def predict_accesses(
    guest: str,
    pages: Any,
    writes: Any,
    vm_pages: int,
    frames: int,
    *,
    cpu_seconds: float,
    disk_reads: int,
    disk_writes: int = 0,
    latency: float | None = None,
    write_latency: float | None = None,
    curve: PagingCurve | None = None,
) -> BootPrediction:
    """predict_boot for any boot given as its accesses in order (`pages` below `vm_pages`,
    `writes` their flags), named `guest`. `curve`: paging_curve over key_space(pages)."""
    keys = key_space(pages)
    if curve is None:
        curve = paging_curve(pages, writes, keys)
    frames = max(1, min(frames, vm_pages))
    if frames >= curve.frames_without_paging:
        ins, outs = curve.at(frames)
        sim = None
    else:
        sim = simulate(pages, writes, keys, frames)
        ins, outs = sim.page_ins, sim.page_outs
    boot = (
        None
        if latency is None
        else boot_seconds(cpu_seconds, ins, outs, disk_reads, disk_writes, latency, write_latency)
    )
    return BootPrediction(
        guest=guest,
        vm_pages=vm_pages,
        frames=frames,
        page_ins=ins,
        page_outs=outs,
        smart_paging_peak_pages=0 if sim is None else sim.peak_paged_out,
        report_peak_pages=0 if sim is None else sim.peak_zero_fills_not_resident,
        faults=int(curve.misses[min(frames, curve.pages)]),
        no_paging_frames=curve.frames_without_paging,
        cpu_seconds=cpu_seconds,
        disk_reads=disk_reads,
        disk_writes=disk_writes,
        boot_seconds=boot,
        latency=latency,
        write_latency=write_latency if latency is not None else None,
    )
