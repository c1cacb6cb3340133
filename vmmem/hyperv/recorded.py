"""A recorded operating-system boot as a VM's boot phase (see docs/GUESTS.md).

`RecordedBoot` replays a guest trace recorded under QEMU (`vmmem record-boot`; shipped:
"busybox", "debian-12"): epoch by epoch, the guest-physical pages it touched (all accesses in
C, one `Guest.replay` call for the epochs between two disk requests or CPU charges, worked out
once per VM size), its own virtual-disk requests, and its CPU time, charged as the epoch's
guest instructions / `guest_ips` on the boot's clock in batches (hyperv/clock.py), as the
synthetic Boot charges its cpu_per_page. The guest thread does this through the same session
as any phase, so a restart short of memory boots it on Smart Paging.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from ..errors import GuestTraceError, SettingsError
from ..guests import DEFAULT_GUEST_IPS, GuestTrace, map_pages
from ..guests.trace import MAPPINGS
from ..sizes import MB
from .workloads import Guest, Workload

__all__ = ["RecordedBoot"]

_SLEEP_BATCH = 0.01  # seconds of guest CPU charged at once: fewer, longer sleeps


@dataclass(frozen=True, eq=False)
class RecordedBoot(Workload):
    """A recorded boot. `guest`: a shipped guest's name or a trace file's path.

    guest_ips: guest instructions per second of a native vCPU, turning the recording's
      instructions into guest CPU time (default: vmmem.guests.DEFAULT_GUEST_IPS, 2.0e9, measured
      on this machine class; docs/GUESTS.md).
    mapping: how the recording's guest-physical pages map onto a VM whose Startup RAM differs
      from the recorded VM's memory: "fold" (page modulo the VM's pages, the default: a VM
      smaller than the guest needs pages, as the real guest would) or "scale" (proportionally).
      A VM at least as large keeps the page numbers.
    scale: the boot shrunk by this factor, as `--scale` shrinks a scenario: pages mapped
      proportionally (the footprint shrinks with the VM), one disk request in `scale` issued,
      and the CPU time divided by `scale`. 1 (the default) replays the recording as it is.
    """

    guest: str = "debian-12"
    guest_ips: float = DEFAULT_GUEST_IPS
    mapping: str = "fold"
    scale: float = 1.0
    phase = "boot"
    boot = True

    def __post_init__(self) -> None:
        if not isinstance(self.guest, str) or not self.guest:
            raise SettingsError(
                f"RecordedBoot guest must be a guest's name or a path, got {self.guest!r}"
            )
        if (
            isinstance(self.guest_ips, bool)
            or not isinstance(self.guest_ips, (int, float))
            or not math.isfinite(self.guest_ips)
            or self.guest_ips <= 0
        ):
            raise SettingsError(
                f"RecordedBoot guest_ips must be a positive number, got {self.guest_ips!r}"
            )
        if (
            isinstance(self.scale, bool)
            or not isinstance(self.scale, (int, float))
            or not math.isfinite(self.scale)
            or self.scale < 1
        ):
            raise SettingsError(f"RecordedBoot scale must be a number >= 1, got {self.scale!r}")
        if self.mapping not in MAPPINGS:
            raise SettingsError(
                f"RecordedBoot mapping must be one of {', '.join(MAPPINGS)}, got {self.mapping!r}"
            )
        try:
            self.trace  # noqa: B018 - load now: a bad name or file is a settings error
        except GuestTraceError as exc:
            raise SettingsError(f"RecordedBoot guest: {exc}") from None

    @functools.cached_property
    def _plans(self) -> dict[tuple[int, str], _Plan]:
        """The replay planned per VM size (see _plan)."""
        return {}

    @functools.cached_property
    def trace(self) -> GuestTrace:
        return GuestTrace.load(self.guest)

    def validate_page_size(self, page_size: int) -> None:
        try:
            self.trace.check_page_size(page_size)
        except GuestTraceError as exc:
            raise SettingsError(f"RecordedBoot guest: {exc}") from None

    def validate(self, startup_pages: int, guest_pages: int) -> None:
        if self.trace.page_size * startup_pages < 32 * MB:
            raise SettingsError("a recorded boot needs a VM of at least 32 MB of Startup RAM")
        self._plan(startup_pages)  # now, so no boot pays for it

    def expected_cpu_time(self, startup_pages: int) -> float:
        """The recording's instructions at guest_ips: the boot's time with enough memory,
        less the replay itself."""
        return self.trace.instructions / self.guest_ips / self.scale

    def disk_size_hint(self, startup_pages: int, page_size: int) -> int:
        """Four times what the boot reads (at least 16 MB), at most the recorded disk: the
        requests fold onto it keeping their sizes."""
        t = self.trace
        if not t.disk_requests:
            return 0
        moved = (t.disk_bytes_read + t.disk_bytes_written) / self.scale
        want = max(16 * MB, -(-int(4 * moved) // MB) * MB)
        return min(want, -(-t.disk_size // MB) * MB) if t.disk_size else want

    @property
    def page_mapping(self) -> str:
        """The mapping run() uses: a scaled boot shrinks its layout proportionally."""
        return "scale" if self.scale > 1 else self.mapping

    def _plan(self, vm_pages: int) -> _Plan:
        """The replay for a VM of `vm_pages` Startup pages, worked out once (numpy, no per-epoch
        Python at run time) and kept: the mapped pages, and the segments between the points
        where the guest does something else than touch memory (its disk requests, a sleep)."""
        key = (vm_pages, self.mapping)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = _make_plan(self, vm_pages)
        return plan

    def run(self, guest: Guest) -> None:
        n = guest.startup_pages
        guest.commit_range(0, n)
        plan = self._plan(n)
        for a, b, disk, seconds in plan.segments:
            if b > a:
                guest.replay(plan.pages[a:b], plan.writes[a:b])
            if disk is not None:
                guest.disk_io(*disk)
            if seconds:
                guest.sleep(seconds)


@dataclass(frozen=True)
class _Plan:
    pages: np.ndarray  # every access, mapped onto the VM's pages (uint32)
    writes: np.ndarray  # their write flags (uint8)
    # (first access, end, the disk requests issued after them or None, guest seconds after)
    segments: tuple[tuple[int, int, tuple[np.ndarray, ...] | None, float], ...]


def _make_plan(boot: RecordedBoot, n: int) -> _Plan:
    """The same operations, in the same order, as replaying epoch by epoch: each epoch's pages,
    then its disk requests (at `scale`, every scale-th, deterministically), then its CPU time,
    charged once at least _SLEEP_BATCH of it is owed. Consecutive epochs with nothing in
    between are one segment, so the guest thread crosses into Python once per segment."""
    t = boot.trace
    mapping = boot.page_mapping
    pages = np.ascontiguousarray(map_pages(t.pages_array, t.memory_pages, n, mapping), np.uint32)
    writes = np.ascontiguousarray(t.written, dtype=bool).view(np.uint8)
    offsets = t.epoch_offsets.tolist()
    ips = boot.guest_ips * boot.scale
    disk_at = t.disk_epoch_offsets.tolist()
    per_epoch = t.epoch_instructions / ips
    segments: list[tuple[int, int, tuple[np.ndarray, ...] | None, float]] = []
    start = 0
    debt = 0.0
    issued = 0.0  # disk requests owed at 1/scale of the recording's
    for e in range(t.epochs):
        end = offsets[e + 1]
        a, b = disk_at[e], disk_at[e + 1]
        disk = None
        if b > a:
            off, ln, wr = t.disk_offset[a:b], t.disk_length[a:b], t.disk_write[a:b]
            if boot.scale > 1:  # every scale-th request, deterministically
                first = issued
                issued += off.size / boot.scale
                keep = np.arange(int(first), int(issued)) * boot.scale - first * boot.scale
                idx = np.clip(np.round(keep).astype(np.int64), 0, off.size - 1)
                off, ln, wr = off[idx], ln[idx], wr[idx]
            if off.size:
                disk = (off, ln, wr)
        debt += per_epoch if e < t.epochs - 1 else t.epoch_instructions_of(e) / ips
        seconds = 0.0
        if debt >= _SLEEP_BATCH:
            seconds, debt = debt, 0.0
        if disk is not None or seconds:
            segments.append((start, end, disk, seconds))
            start = end
    segments.append((start, offsets[-1], None, debt))  # the rest, and its CPU time
    return _Plan(pages, writes, tuple(segments))
