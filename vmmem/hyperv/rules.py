"""Hyper-V's decisions as pure functions: the one place each rule is written.

The `Host` applies them in real time, the planner (`vmmem.lab.plan`) in simulated time; neither
keeps a copy. No threads, no RAM, no I/O here: sizes are plain numbers (pages or bytes, as the
caller counts, the same unit on both sides), so each rule is tested from a table of cases
(tests/test_hyperv_rules.py).

- Admission (`admit`, `room_to_start`, `start_need`): can a VM start from Off or be restored
  from a saved state? Either needs its memory (Startup RAM, or what it had when saved) from
  what the host can make available; otherwise "Not enough memory in the system to start the
  virtual machine". Neither ever uses Smart Paging.
- The host reboot (`reboot_schedule`): each VM's automatic stop action at shutdown, then which
  VMs start when the host is back, in what order, after what delay, restored or started.
- Smart Paging (`smart_paging_gap`, `worst_case_smart_paging`): only for a running VM that
  restarts, is dynamic, boots at all and is given less than its Startup RAM.
- A guest's boot time with enough memory (`boot_seconds`).
- Dynamic Memory after a restart (`awaits_guest`, `held_claim`): the host sends no Dynamic
  Memory request to a restarted VM until `balancer_start_delay` seconds after its guest booted
  (QEMU's hw/hyperv/hv-balloon.c, HV_BALLOON_POST_INIT_WAIT: "Hyper-V from Server 2016 uses a
  50-second after-boot delay"); until then the VM keeps what the restart gave it, and its
  Smart Paging file.

Sources: Microsoft's "Hyper-V Dynamic Memory Overview" (Smart Paging is used only when a VM
restarts, no memory is free and none can be reclaimed; never for a start from Off), and the
Set-VM reference (-AutomaticStopAction, -AutomaticStartAction, -AutomaticStartDelay).
docs/HYPERV-RULES.md sections 3-4.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from .balancer import Claim
from .workloads import Workload

__all__ = [
    "Admission",
    "RebootSchedule",
    "RebootStart",
    "RebootVM",
    "StartFrom",
    "DEFAULT_BALANCER_START_DELAY",
    "admit",
    "awaits_guest",
    "boot_seconds",
    "held_claim",
    "reboot_schedule",
    "room_to_start",
    "saves_at_shutdown",
    "smart_paging_gap",
    "start_need",
    "starts_at_host_start",
    "worst_case_smart_paging",
]

# The VM's state before it boots: Off (a start), Saved (a restore), Running (a restart: a guest
# reboot, a reset, or the seed article's host reboot).
StartFrom = Literal["Off", "Saved", "Running"]


# -- admission -------------------------------------------------------------------------------


def room_to_start(capacity: int, others: Sequence[Claim], unit: int = 1) -> int:
    """What a VM starting from Off (or restored) can have once the balancer has reclaimed every
    buffer: the capacity (whole `unit` blocks) less every other running VM's floor (what it
    uses, at least its Minimum, rounded up to blocks). Negative when the floors alone exceed
    the capacity."""
    held = sum(-(-c.floor // unit) * unit for c in others)
    return capacity // unit * unit - held


def start_need(startup: int, saved: int | None = None) -> int:
    """What a start needs: a restore the memory it had when saved (`saved`), a start from Off
    its Startup RAM."""
    return startup if saved is None else saved


@dataclass(frozen=True)
class Admission:
    """Hyper-V's answer to "can this VM start (or be restored)?". Sizes in the caller's unit."""

    need: int  # what the start needs (start_need)
    room: int  # what can be made available (room_to_start)
    held: int  # what the other running VMs keep (their floors, in whole blocks)

    @property
    def admitted(self) -> bool:
        """False: "Not enough memory in the system to start the virtual machine"."""
        return self.room >= self.need

    @property
    def available(self) -> int:
        """What can be made available, never negative (for messages)."""
        return max(0, self.room)


def admit(need: int, capacity: int, others: Sequence[Claim], unit: int = 1) -> Admission:
    """May a VM that needs `need` start beside the running VMs whose claims are `others`?
    Refused when it needs more than `room_to_start`: a start from Off or from a saved state
    never uses Smart Paging."""
    room = room_to_start(capacity, others, unit)
    return Admission(need, room, capacity // unit * unit - room)


# -- the host reboot -------------------------------------------------------------------------


def saves_at_shutdown(stop_action: str) -> bool:
    """-AutomaticStopAction at a host shutdown: Save saves the VM (its memory written out,
    restored at the start); ShutDown and TurnOff leave it Off."""
    return stop_action == "Save"


def starts_at_host_start(start_action: str, was_running: bool) -> bool:
    """-AutomaticStartAction when the host is back: Start always, StartIfRunning if the VM was
    running when the host went down, Nothing never."""
    return start_action == "Start" or (start_action == "StartIfRunning" and was_running)


@dataclass(frozen=True)
class RebootVM:
    """One VM as a host reboot sees it."""

    name: str
    stop_action: str  # Save, ShutDown, TurnOff
    start_action: str  # StartIfRunning, Start, Nothing
    start_delay: float  # seconds after the host is back
    priority: int
    running: bool  # running when the host goes down
    saved: bool = False  # already Saved (not running) when the host goes down


@dataclass(frozen=True)
class RebootStart:
    """One automatic start: `delay` seconds after the host is back; `restore`: from the saved
    state (with the memory it had), else from Off (Startup RAM)."""

    name: str
    delay: float
    priority: int
    restore: bool


@dataclass(frozen=True)
class RebootSchedule:
    """A host reboot decided: who is saved and who turned off at shutdown, the automatic starts
    in the order the host makes them, and what the VMs that do not start are left as."""

    saved: tuple[str, ...]  # saved at shutdown (automatic stop action Save)
    turned_off: tuple[str, ...]  # shut down or turned off at shutdown
    starts: tuple[RebootStart, ...]  # in start order
    left: dict[str, str]  # VM -> "saved" or "off": no automatic start


def reboot_schedule(vms: Sequence[RebootVM]) -> RebootSchedule:
    """A host reboot's stops and starts (Set-VM -AutomaticStopAction, -AutomaticStartAction,
    -AutomaticStartDelay): each running VM is saved or turned off; once the host is back, the
    VMs whose start action says so start, each after its start delay, in order of delay and,
    at the same delay, higher priority first (VMs otherwise in the order given)."""
    saved: list[str] = []
    off: list[str] = []
    starts: list[RebootStart] = []
    left: dict[str, str] = {}
    for v in vms:
        if v.running:
            (saved if saves_at_shutdown(v.stop_action) else off).append(v.name)
        is_saved = v.saved if not v.running else saves_at_shutdown(v.stop_action)
        if starts_at_host_start(v.start_action, v.running):
            starts.append(RebootStart(v.name, v.start_delay, v.priority, restore=is_saved))
        else:
            left[v.name] = "saved" if is_saved else "off"
    starts.sort(key=lambda s: (s.delay, -s.priority))
    return RebootSchedule(tuple(saved), tuple(off), tuple(starts), left)


# -- Smart Paging ----------------------------------------------------------------------------


def smart_paging_gap(
    *, start_from: StartFrom, dynamic: bool, boots: bool, startup: int, assigned: int
) -> int:
    """How much of its Startup RAM a booting VM takes from a Smart Paging file (0: none).

    Only a restart of a running VM (`start_from="Running"`) may use it, never a start from
    Off nor a restore from a saved state; only a dynamic VM (a static VM always holds its
    Startup RAM); only a guest that boots at all; and only for the gap between what the host
    assigned and Startup RAM."""
    if start_from != "Running" or not dynamic or not boots:
        return 0
    return max(0, startup - assigned)


def worst_case_smart_paging(startup: int, dynamic: bool) -> int:
    """The largest Smart Paging file a VM can ever need: a restart given nothing, i.e. its
    whole Startup RAM for a dynamic VM; 0 for a static one (it never uses Smart Paging)."""
    return smart_paging_gap(
        start_from="Running", dynamic=dynamic, boots=True, startup=startup, assigned=0
    )


# -- boot time -------------------------------------------------------------------------------


def boot_seconds(
    phases: Sequence[Workload], startup_pages: int, processors: int = 1
) -> float | None:
    """How long a guest's boot takes with all its Startup RAM (`startup_pages`): the CPU time
    of its leading boot phases, each by its own estimate (a synthetic Boot: its cpu_time, else
    50 us per page; a RecordedBoot: the recorded guest's), on `processors` virtual processors
    (the latest one's). None when a boot phase does not say (a custom Workload); 0.0 for a
    workload that does not boot."""
    total = 0.0
    for phase in phases:
        if not phase.boot:
            break
        expected: Callable[[int, int], float] | None = getattr(phase, "expected_cpu_time", None)
        if expected is None:
            return None
        total += expected(startup_pages, processors)
    return total


# -- Dynamic Memory after a restart ----------------------------------------------------------

# Seconds after a guest boots before Hyper-V (Server 2016 and later) sends it Dynamic Memory
# requests: QEMU's hv-balloon device (hw/hyperv/hv-balloon.c) waits HV_BALLOON_POST_INIT_WAIT,
# 50 s, because "it looks like Hyper-V from Server 2016 uses a 50-second after-boot delay"
# (some Windows versions crash on a hot-add right after boot). 0: the host rebalances at once.
DEFAULT_BALANCER_START_DELAY = 50.0


def awaits_guest(
    *, delay: float, restarted: bool, restarting: bool, booted_at: float | None, now: float
) -> bool:
    """Does the host leave this VM's memory as it is (no Dynamic Memory request) now?

    Only a restarted VM (`restarted`), once the host has divided memory for the restart
    (`restarting` over), while its guest boots (`booted_at` None) and until `delay` seconds
    after it booted; never with `delay` 0 (the host rebalances at once). Times in seconds on
    one clock."""
    if delay <= 0 or not restarted or restarting:
        return False
    return booted_at is None or now - booted_at < delay


def held_claim(claim: Claim, assigned: int) -> Claim:
    """The claim of a VM the host leaves as it is: exactly what it holds (`assigned`), no more,
    no less, so `balancer.allocate` gives it that and divides the rest among the others."""
    return Claim(claim.name, claim.priority, assigned, assigned, assigned, assigned)
