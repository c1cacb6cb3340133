"""What a run shows while it goes: per-VM progress, a boot's ETA, and the Smart Paging files'
lives as the run saw them. The CLI renders it; a library user may pass their own sink."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from vmmem.errors import VmmemWarning
from vmmem.hyperv.reports import VMStatus
from vmmem.hyperv.rules import boot_seconds

__all__ = ["POLL", "BootEta", "ProgressSink", "RunTracker", "VMProgress"]

POLL = 0.1  # seconds between progress polls


@dataclass(frozen=True)
class VMProgress(VMStatus):
    """One VM as the live display shows it: its status as Get-VM shows it (the one record of
    a VM's state, `VMStatus`), and how far its current boot is."""

    boot_elapsed: float | None = None  # seconds into the current boot, None when not booting
    boot_eta: float | None = None  # seconds left, estimated from the boot's progress


class ProgressSink:
    """Receives progress; the CLI shows it live. The default does nothing."""

    def event_started(self, index: int, count: int, description: str) -> None: ...

    def event_done(self, index: int, description: str, seconds: float, note: str = "") -> None: ...

    def update(self, vms: list[VMProgress], available: int, elapsed: float) -> None: ...

    def message(self, text: str) -> None: ...

    def warning(self, warning: VmmemWarning) -> None:
        """A warning for people, typed (vmmem.errors.VmmemWarning); by default a message."""
        self.message(f"warning: {warning}")

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# locations


class BootEta:
    """Seconds left in one boot, from how far it got: never growing, never jumping about.

    A boot touches each of its Startup pages once. The estimate is the larger of two:
    the guest CPU time still ahead (the workload's expected CPU time for the pages not yet
    touched: the boot cannot go faster than that), and the pages left at the recent rate
    (smoothed over about a second, so one slow chunk does not swing it). The shown ETA never
    increases: when a boot slows down (Smart Paging starts to page out) it holds instead of
    growing, and it falls again once the estimate catches up.
    """

    SMOOTHING = 1.0  # seconds: time constant of the rate's moving average
    MIN_PROGRESS = 0.02  # below this share of the pages, a rate says nothing yet

    def __init__(self, expected_cpu: float | None):
        self.expected_cpu = expected_cpu
        self._last: tuple[float, float] | None = None  # (time, fraction)
        self._rate: float | None = None  # fraction per second
        self.eta: float | None = None

    def update(self, now: float, fraction: float) -> float | None:
        fraction = min(1.0, max(0.0, fraction))
        if self._last is not None:
            t0, f0 = self._last
            dt = now - t0
            if dt <= 0:
                return self.eta
            inst = max(0.0, fraction - f0) / dt
            weight = 1 - math.exp(-dt / self.SMOOTHING)
            self._rate = inst if self._rate is None else self._rate + weight * (inst - self._rate)
        self._last = (now, fraction)
        left = 1.0 - fraction
        candidates = []
        if self.expected_cpu is not None:
            candidates.append(self.expected_cpu * left)
        if self._rate and fraction >= self.MIN_PROGRESS:
            candidates.append(left / self._rate)
        if not candidates:
            return self.eta
        estimate = max(candidates)
        self.eta = estimate if self.eta is None else min(self.eta, estimate)
        return self.eta


class RunTracker:
    """Per VM: boot start times (host clock) and ETAs for the live view, and when the run saw
    each Smart Paging file come and go (the file's life, for the plot)."""

    def __init__(self, host: Any):
        self.host = host
        self.boot_started: dict[str, float] = {}
        self._etas: dict[str, BootEta] = {}
        # VM -> [first seen in use, first seen gone (None: still there)] per file life.
        self.file_seen: dict[str, list[list[float | None]]] = {}

    def mark(self, name: str) -> None:
        self.boot_started[name] = self.host.clock()
        vm = self.host.vms[name]
        self._etas[name] = BootEta(_expected_cpu(vm, self.host.page_size))

    def snapshot(self) -> list[VMProgress]:
        out = []
        now = self.host.clock()
        for name, vm in self.host.vms.items():
            st = vm.status
            self._note_file(name, st.smart_paging_file_in_use, now)
            elapsed = eta = None
            if st.phase == "boot" and name in self.boot_started:
                elapsed = now - self.boot_started[name]
                eta = self._eta(name, vm, now)
            out.append(VMProgress(**dataclasses.asdict(st), boot_elapsed=elapsed, boot_eta=eta))
        return out

    def _note_file(self, name: str, in_use: bool, now: float) -> None:
        lives = self.file_seen.setdefault(name, [])
        open_life = bool(lives) and lives[-1][1] is None
        if in_use and not open_life:
            lives.append([now, None])
        elif not in_use and open_life:
            lives[-1][1] = now

    def file_life(self, name: str, started_at: float) -> tuple[float | None, float | None]:
        """(first seen, first seen gone) of the first file seen after a boot's start."""
        for seen, gone in self.file_seen.get(name, []):
            if seen is not None and seen >= started_at - POLL:
                return seen, gone
        return None, None

    def _eta(self, name: str, vm: Any, now: float) -> float | None:
        # The boot touches every Startup page once; pages holding data now (in frames or in
        # the file) over Startup pages is how far it got.
        mem = vm.memory
        eta = self._etas.get(name)
        if mem is None or eta is None:
            return None
        try:
            c = mem.counters
        except Exception:  # the memory may be closing under us
            return eta.eta
        startup_pages = max(1, vm.settings.startup // self.host.page_size)
        return eta.update(now, (c["resident"] + c["file_pages"]) / startup_pages)


def _expected_cpu(vm: Any, page_size: int) -> float | None:
    """The guest CPU time of the VM's boot phases, if the workload says (Boot, RecordedBoot)."""
    s = vm.settings
    return boot_seconds(vm.workload, s.startup // page_size, s.processor_count) or None
