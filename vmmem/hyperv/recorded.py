"""A recorded operating-system boot as a VM's boot phase (see docs/GUESTS.md).

`RecordedBoot` replays a guest trace recorded under QEMU (`vmmem record-boot`; shipped:
"busybox", "debian-12") with the guests layer's replay loop (vmmem.guests.replay, planned once
per VM size): the guest-physical pages it touched (all accesses in C, one `Guest.replay` call
for the epochs between two disk requests or CPU charges), its own virtual-disk requests, and
its CPU time, charged as the guest instructions / `guest_ips` on the boot's clock in batches
(hyperv/clock.py), as the synthetic Boot charges its cpu_per_page. What it adds is Hyper-V's:
the VM's size and scale, and the guest thread, which runs the loop through the same session
as any phase, so a restart short of memory boots it on Smart Paging. On a VM of several
virtual processors each processor's share of the recording's vCPU streams
(vmmem.guests.replay.processor_epochs) is planned apart and replayed on its own thread and
clock.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from ..errors import GuestTraceError, SettingsError
from ..guests import DEFAULT_GUEST_IPS, GuestTrace
from ..guests.replay import ReplayPlan, Segment, plan_replay, processor_epochs, run_replay
from ..guests.trace import MAPPINGS
from ..sizes import MB
from .workloads import Guest, Workload

__all__ = ["RecordedBoot"]


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
    def _plans(self) -> dict[tuple[int, int, int], tuple[ReplayPlan, ...]]:
        """The replay planned per VM size and processor count (see _plan)."""
        return {}

    @functools.cached_property
    def trace(self) -> GuestTrace:
        return GuestTrace.load(self.guest)

    def validate_page_size(self, page_size: int) -> None:
        try:
            self.trace.check_page_size(page_size)
        except GuestTraceError as exc:
            raise SettingsError(f"RecordedBoot guest: {exc}") from None

    def validate(self, startup_pages: int, guest_pages: int, processors: int = 1) -> None:
        if self.trace.page_size * startup_pages < 32 * MB:
            raise SettingsError("a recorded boot needs a VM of at least 32 MB of Startup RAM")
        # Planned now, so no boot pays for it; at the trace's page size, the only one
        # validate_page_size lets a host use.
        self._plan(startup_pages, self.trace.page_size, processors)

    def expected_cpu_time(self, startup_pages: int, processors: int = 1) -> float:
        """The recording's instructions at guest_ips: the boot's time with enough memory,
        less the replay itself. With several processors, the latest one's: the instructions
        of the vCPU streams it runs (processor_epochs)."""
        t = self.trace
        if processors == 1 or t.vcpus == 1:
            return t.instructions / self.guest_ips / self.scale
        per_processor = [
            sum(t.vcpu_instructions[v] for v in range(p, t.vcpus, processors))
            for p in range(min(processors, t.vcpus))
        ]
        return max(per_processor) / self.guest_ips / self.scale

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

    def _plan(self, vm_pages: int, page_size: int, processors: int = 1) -> tuple[ReplayPlan, ...]:
        """The replay for a VM of `vm_pages` Startup pages and `processors` virtual
        processors, one plan per processor with work, planned once by the guests layer's
        replay loop (vmmem.guests.replay) and kept. A one-vCPU recording, or one processor,
        is one plan of the whole recording."""
        if processors > 1 and self.trace.vcpus == 1:
            processors = 1  # one stream, on processor 0 whatever the count
        key = (vm_pages, page_size, processors)
        plans = self._plans.get(key)
        if plans is None:

            def plan(epochs: object) -> ReplayPlan:
                return plan_replay(
                    self.trace,
                    vm_pages,
                    page_size=page_size,
                    mapping=self.mapping,
                    guest_ips=self.guest_ips,
                    scale=self.scale,
                    epochs=epochs,  # type: ignore[arg-type]
                )

            if processors == 1:
                plans = (plan(None),)
            else:
                plans = tuple(plan(e) for e in processor_epochs(self.trace, processors))
            self._plans[key] = plans
        return plans

    def run(self, guest: Guest) -> None:
        """The replay loop (vmmem.guests.run_replay) on the VM's guest thread, or on each
        virtual processor's thread: its accesses and disk requests go through the VM's
        session; its CPU time is charged on the processor's clock (guest.sleep, which also
        raises when the VM stops)."""
        n = guest.startup_pages
        guest.commit_range(0, n)
        plans = self._plan(n, guest.page_size, guest.processors)
        if len(plans) == 1:
            _replay_on(plans[0], guest)
        else:
            guest.run_on_processors([functools.partial(_replay_on, plan) for plan in plans])


def _replay_on(plan: ReplayPlan, guest: Guest) -> None:
    """One plan on one virtual processor (the guest thread's, or one of its own)."""

    def charge(segment: Segment) -> None:
        if segment.seconds:
            guest.sleep(segment.seconds)

    run_replay(plan, guest.replay, guest.disk_io, charge)
