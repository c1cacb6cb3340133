"""The one replay loop of a recorded boot (docs/GUESTS.md, "Replay").

A replay is planned once (`plan_replay`: numpy, no per-epoch Python at run time) and then run
(`run_replay`). The plan holds every access mapped onto the memory's pages, and segments: the
accesses between two points where the guest does something else than touch memory (its disk
requests, CPU time to charge). Running it, in the recording's order, per segment: its accesses
(one call: the core runs them in C), then its disk requests, then its CPU time is charged.
`replay_epochs` and the Hyper-V layer's RecordedBoot both run this loop; they differ only in
what the three steps do (a GuestMemory and a VirtualDisk, or a VM's guest thread and its clock)
and in how the CPU time is cut: per epoch, or in batches of at least `SLEEP_BATCH` seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ..errors import SettingsError
from .trace import MAPPINGS, GuestTrace, map_pages

__all__ = ["SLEEP_BATCH", "ReplayPlan", "Segment", "plan_replay", "run_replay"]

# Seconds of guest CPU charged at once when not per epoch: fewer, longer sleeps.
SLEEP_BATCH = 0.01


class Segment(NamedTuple):
    """Accesses [start, end) of the plan, then `disk` (offsets, lengths, write flags; None:
    no request), then `seconds` of guest CPU owed. `epoch`: the last epoch it covers."""

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
    first_epoch: int
    stop_epoch: int  # one past the last epoch replayed


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
) -> ReplayPlan:
    """The replay of epochs [start, stop) of `trace` into a memory of `memory_pages` pages of
    `page_size` bytes (GuestTraceError if the trace was recorded with other pages).

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
    offsets = t.epoch_offsets.tolist()
    base = offsets[start]
    rule = "scale" if scale > 1 else mapping
    pages = np.ascontiguousarray(
        map_pages(t.pages_array[base : offsets[stop]], t.memory_pages, memory_pages, rule),
        np.uint32,
    )
    writes = np.ascontiguousarray(t.written[base : offsets[stop]], dtype=bool).view(np.uint8)
    ips = guest_ips * scale
    disk_at = t.disk_epoch_offsets.tolist()
    per_full_epoch = t.epoch_instructions / ips
    batch = 0.0 if per_epoch else SLEEP_BATCH
    segments: list[Segment] = []
    first = 0
    debt = 0.0
    issued = 0.0  # disk requests owed at 1/scale of the recording's
    for e in range(start, stop):
        end = offsets[e + 1] - base
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
        debt += per_full_epoch if e < t.epochs - 1 else t.epoch_instructions_of(e) / ips
        seconds = 0.0
        if debt >= batch:
            seconds, debt = debt, 0.0
        if per_epoch or disk is not None or seconds:
            segments.append(Segment(first, end, disk, seconds, e))
            first = end
    if not per_epoch:  # the rest, and its CPU time
        segments.append(Segment(first, offsets[stop] - base, None, debt, stop - 1))
    return ReplayPlan(pages, writes, tuple(segments), start, stop)


def run_replay(
    plan: ReplayPlan,
    replay: Callable[[np.ndarray, np.ndarray], Any],
    disk_io: Callable[[np.ndarray, np.ndarray, np.ndarray], Any],
    charge: Callable[[Segment], Any],
) -> int:
    """Run `plan`: per segment `replay(pages, writes)`, `disk_io(offsets, lengths, writes)`
    if it has requests, then `charge(segment)` (its CPU time is `segment.seconds`). A `charge`
    that returns False stops after that segment. Returns the number of epochs replayed."""
    done = plan.first_epoch
    for seg in plan.segments:
        if seg.end > seg.start:
            replay(plan.pages[seg.start : seg.end], plan.writes[seg.start : seg.end])
        if seg.disk is not None:
            disk_io(*seg.disk)
        done = seg.epoch + 1
        if charge(seg) is False:
            break
    return max(done, plan.first_epoch) - plan.first_epoch
