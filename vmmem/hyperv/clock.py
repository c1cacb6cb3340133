"""A boot's own clock: the guest's time, kept apart from the emulator's (docs/DESIGN.md).

A real host gives each VM its own virtual processors, so a VM's boot takes its guest CPU time
plus what it waits for: its page faults on the disk, its virtual-disk requests, memory from the
host. The emulator runs every VM's guest on threads of one Python process, on however few
cores the machine has; its own work (the replay, numpy, Python, the GIL, being scheduled) is
not the guest's. So a boot's time is counted, not read off the wall clock:

    boot time = guest time (the workload's CPU time and pauses, as declared: `sleep`)
              + faults (the paging core's own clock around each fault that waited on the disk)
              + disk (each virtual-disk request, timed around its system call)
              + memory waits (blocked until the balancer assigned memory)

The guest thread paces itself to that clock (it sleeps until the wall clock reaches the boot's
start plus its clock), so its I/O reaches the device when the modelled boot would issue it,
and contends there with the other VMs' as it would on a real host. What the wall clock shows
beyond the boot's time (`behind`) is the emulator's: work that did not fit in the guest's time,
waiting for a core or the GIL, a late wake-up. It is measured and reported beside the thread's
CPU time, never added to the boot.

A VM with several virtual processors (processor_count) runs each one's stream on its own
thread with its own clock: that processor's guest time, the faults its own accesses waited
on, its own virtual-disk requests and its own waits for memory. The boot is over when every
processor's stream is; its time is the latest processor's. With one processor the clock
reads the paging core's fault counter for the whole VM (exact: nothing else faults during the
boot); with several, each replay call's own fault wait is added to the clock that made it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["BootClock"]


class BootClock:
    """One boot's clock, or one virtual processor's. `fault_ns()` reads the paging core's
    total fault wait (ns) of the whole VM; None: the faults are added call by call
    (`add_faults`), as each processor's own."""

    def __init__(self, fault_ns: Callable[[], int] | None) -> None:
        self._fault_ns = fault_ns
        self._fault0 = 0 if fault_ns is None else fault_ns()
        self._fault_own_ns = 0  # added by add_faults (fault_ns is None)
        self.t0: float | None = None  # time.monotonic() at the boot's start
        self.guest = 0.0  # s: declared guest time (CPU, pauses)
        self.disk = 0.0  # s: measured virtual-disk requests
        self.memory_wait = 0.0  # s: measured waits for memory from the host
        self.stopped: float | None = None  # the boot's time, once it completed
        self._faults: float | None = None  # its faults' share, frozen with it

    @property
    def reads_vm_faults(self) -> bool:
        """This clock reads the whole VM's fault counter (one processor); else it is told."""
        return self._fault_ns is not None

    def start(self, t0: float) -> None:
        self.t0 = t0

    @property
    def faults(self) -> float:
        """Seconds this boot's faults waited on the disk (victim write-back and page-in)."""
        if self._faults is not None:
            return self._faults
        if self._fault_ns is None:
            return self._fault_own_ns / 1e9
        return max(0, self._fault_ns() - self._fault0) / 1e9

    def add_faults(self, ns: int) -> None:
        """A replay call of this processor waited `ns` on faults (a clock without fault_ns)."""
        self._fault_own_ns += ns

    def now(self) -> float:
        """The boot's time so far."""
        if self.stopped is not None:
            return self.stopped
        return self.guest + self.disk + self.memory_wait + self.faults

    def advance(self, seconds: float, stop: threading.Event) -> bool:
        """The guest spends `seconds` (CPU or a pause): wait until the wall clock reaches the
        boot's clock. True if `stop` was set meanwhile."""
        self.guest += seconds
        if self.t0 is None:
            return stop.wait(seconds) if seconds > 0 else stop.is_set()
        left = self.t0 + self.now() - time.monotonic()
        return stop.wait(left) if left > 0 else stop.is_set()

    def add_disk(self, seconds: float) -> None:
        """A batch of virtual-disk requests took `seconds` (after the boot: not its time)."""
        if self.stopped is None:
            self.disk += seconds

    def stop(self) -> float:
        """The boot completed: freeze its time and return it."""
        if self.stopped is None:
            self._faults = self.faults
            self.stopped = self.guest + self.disk + self.memory_wait + self._faults
        return self.stopped
