"""The one replay loop of a recorded boot (docs/GUESTS.md, "Replay").

A replay is planned once (`plan_replay`: numpy, no per-epoch Python at run time) and then run
(`run_replay`). The plan holds every access mapped onto the memory's pages, and segments: the
accesses between two points where the guest does something else than touch memory (its disk
requests, CPU time to charge). Running it, in the recording's order, per segment: its accesses
(one call: the core runs them in C), then its disk requests, then its CPU time is charged.
`replay_epochs` and the Hyper-V layer's RecordedBoot both run this loop; they differ only in
what the three steps do (a GuestMemory and a VirtualDisk, or a VM's guest thread and its clock)
and in how the CPU time is cut: per epoch, or in batches of at least `SLEEP_BATCH` seconds.

A recording of several vCPUs holds one stream of epochs per vCPU. A plan replays any set of
epochs in the recording's global order: a whole recording, a range of it, or one virtual
processor's share (`processor_epochs`, the split rule of docs/GUESTS.md, "Replay").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ..errors import SettingsError
from .trace import MAPPINGS, GuestTrace, map_pages

__all__ = [
    "SLEEP_BATCH",
    "ReplayPlan",
    "Segment",
    "plan_replay",
    "processor_epochs",
    "run_replay",
]

# Seconds of guest CPU charged at once when not per epoch: fewer, longer sleeps.
SLEEP_BATCH = 0.01


class Segment(NamedTuple):
    """Accesses [start, end) of the plan, then `disk` (offsets, lengths, write flags; None:
    no request), then `seconds` of guest CPU owed. `epoch`: the last epoch it covers (the
    recording's index)."""

    start: int
    end: int
    disk: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    seconds: float
    epoch: int


@dataclass(frozen=True)
class ReplayPlan:
    pages: np.ndarray  # every access, mapped onto the memory's pages (uint32)
    writes: np.ndarray  # their write flags (uint8)
    segments: tuple[Segment, ...]
    epochs: np.ndarray  # the recording's epochs it replays, in order (int64)


def processor_epochs(trace: GuestTrace, processors: int) -> list[np.ndarray]:
    """The split rule: which of the recording's epochs each virtual processor replays, each
    list in the recording's global order. The recording's vCPU k runs on processor
    k mod `processors`: with fewer processors than recorded vCPUs the streams that share one
    run in the order their epochs ended while recording; with more, processors past the
    recorded vCPUs get nothing (the recording holds that many streams of work, and more
    processors do not invent parallel work that never ran). One list per processor that has
    work: a one-vCPU recording is one stream on any number of processors."""
    if isinstance(processors, bool) or not isinstance(processors, int) or processors < 1:
        raise SettingsError(f"processors must be a whole number >= 1, got {processors!r}")
    if trace.vcpus == 1:
        return [np.arange(trace.epochs, dtype=np.int64)]
    owner = trace.epoch_vcpu.astype(np.int64) % processors
    return [np.flatnonzero(owner == p) for p in range(min(processors, trace.vcpus))]


def plan_replay(
    trace: GuestTrace,
    memory_pages: int,
    *,
    page_size: int,
    mapping: str = "fold",
    guest_ips: float,
    scale: float = 1.0,
    per_epoch: bool = False,
    start: int = 0,
    stop: int | None = None,
    epochs: np.ndarray | None = None,
) -> ReplayPlan:
    """The replay of epochs [start, stop) of `trace` into a memory of `memory_pages` pages of
    `page_size` bytes (GuestTraceError if the trace was recorded with other pages); `epochs`:
    those of them to replay instead (the recording's indices, increasing: a virtual
    processor's share, `processor_epochs`).

    Epoch by epoch: its pages (mapped by `mapping`; at `scale` > 1 by "scale", as the VM
    shrinks with the scenario), then its disk requests (at `scale`, every scale-th,
    deterministically), then its CPU time (instructions / (guest_ips x scale)). `per_epoch`:
    every epoch is a segment and is charged its own CPU time; otherwise consecutive epochs
    with nothing in between are one segment, and CPU time is charged once at least SLEEP_BATCH
    of it is owed (the rest at the end)."""
    trace.check_page_size(page_size)
    if not guest_ips > 0:
        raise SettingsError(f"guest_ips must be > 0, got {guest_ips!r}")
    if mapping not in MAPPINGS:
        raise SettingsError(f"page mapping {mapping!r} is not known; use one of {list(MAPPINGS)}")
    t = trace
    start = max(0, min(start, t.epochs))
    stop = t.epochs if stop is None else max(start, min(stop, t.epochs))
    offsets = t.epoch_offsets
    entries: slice | np.ndarray
    if epochs is None:
        chosen = np.arange(start, stop, dtype=np.int64)
        base = int(offsets[start])
        entries = np.s_[base : int(offsets[stop])]  # one run: a slice, no index array
    else:
        chosen = np.asarray(epochs, dtype=np.int64)
        chosen = chosen[(chosen >= start) & (chosen < stop)]
        if chosen.size > 1 and np.any(np.diff(chosen) <= 0):
            raise SettingsError("epochs must increase: a stream replays in the recording's order")
        lows, highs = offsets[chosen], offsets[chosen + 1]
        lengths = highs - lows
        # every entry of the chosen epochs, in order
        entries = np.repeat(lows - (np.cumsum(lengths) - lengths), lengths) + np.arange(
            int(lengths.sum()), dtype=np.int64
        )
    rule = "scale" if scale > 1 else mapping
    pages = np.ascontiguousarray(
        map_pages(t.pages_array[entries], t.memory_pages, memory_pages, rule), np.uint32
    )
    writes = np.ascontiguousarray(t.written[entries], dtype=bool).view(np.uint8)
    ips = guest_ips * scale
    disk_at = t.disk_epoch_offsets.tolist()
    batch = 0.0 if per_epoch else SLEEP_BATCH
    segments: list[Segment] = []
    first = 0
    end = 0
    debt = 0.0
    issued = 0.0  # disk requests owed at 1/scale of the recording's
    offset_list = offsets.tolist()
    chosen_list = chosen.tolist()
    for e in chosen_list:
        end += offset_list[e + 1] - offset_list[e]
        a, b = disk_at[e], disk_at[e + 1]
        disk = None
        if b > a:
            off, ln, wr = t.disk_offset[a:b], t.disk_length[a:b], t.disk_write[a:b]
            if scale > 1:  # every scale-th request, deterministically
                was = issued
                issued += off.size / scale
                keep = np.arange(int(was), int(issued)) * scale - was * scale
                idx = np.clip(np.round(keep).astype(np.int64), 0, off.size - 1)
                off, ln, wr = off[idx], ln[idx], wr[idx]
            if off.size:
                disk = (off, ln, wr)
        debt += t.epoch_instructions_of(e) / ips
        seconds = 0.0
        if debt >= batch:
            seconds, debt = debt, 0.0
        if per_epoch or disk is not None or seconds:
            segments.append(Segment(first, end, disk, seconds, e))
            first = end
    if not per_epoch and chosen_list:  # the rest, and its CPU time
        segments.append(Segment(first, end, None, debt, chosen_list[-1]))
    return ReplayPlan(pages, writes, tuple(segments), chosen)


def run_replay(
    plan: ReplayPlan,
    replay: Callable[[np.ndarray, np.ndarray], Any],
    disk_io: Callable[[np.ndarray, np.ndarray, np.ndarray], Any],
    charge: Callable[[Segment], Any],
) -> int:
    """Run `plan`: per segment `replay(pages, writes)`, `disk_io(offsets, lengths, writes)`
    if it has requests, then `charge(segment)` (its CPU time is `segment.seconds`). A `charge`
    that returns False stops after that segment. Returns the number of epochs replayed."""
    last = None
    for seg in plan.segments:
        if seg.end > seg.start:
            replay(plan.pages[seg.start : seg.end], plan.writes[seg.start : seg.end])
        if seg.disk is not None:
            disk_io(*seg.disk)
        last = seg.epoch
        if charge(seg) is False:
            break
    # the plan's epochs up to the last one run (they increase)
    return 0 if last is None else int(np.searchsorted(plan.epochs, last)) + 1
