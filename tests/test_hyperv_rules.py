"""Hyper-V's rules as pure functions (vmmem.hyperv.rules), each driven by a small table of cases
taken from Microsoft's documentation:

- "Hyper-V Dynamic Memory Overview" (Windows Server 2012/2012 R2): Smart Paging is used only
  when a virtual machine is being restarted, no physical memory is available and none can be
  reclaimed from the other running VMs; it is not used when a VM is started from an off state.
- "Smart Paging" (the same overview's section): the file bridges the gap between what the host
  can give and Startup RAM, for the restart only; a restore from a saved state is not a restart.
- Set-VM (Hyper-V module reference): -AutomaticStopAction Save | ShutDown | TurnOff (what the
  VM does when the host shuts down), -AutomaticStartAction Nothing | StartIfRunning | Start
  (what it does when the host starts), -AutomaticStartDelay (seconds before that start).

Sizes are in whatever unit the case picks (MB here, for readable tables): the rules count in
one unit on both sides.
"""

from __future__ import annotations

import pytest

from vmmem.hyperv import Boot, Idle, Workload
from vmmem.hyperv.balancer import Claim
from vmmem.hyperv.rules import (
    RebootVM,
    admit,
    boot_seconds,
    reboot_schedule,
    room_to_start,
    saves_at_shutdown,
    smart_paging_gap,
    start_need,
    starts_at_host_start,
    worst_case_smart_paging,
)


def running(name: str, floor: int) -> Claim:
    """A running VM that keeps `floor` (what it uses, at least its Minimum)."""
    return Claim(name, 50, floor, floor, floor, floor)


# -- admission: a start from Off, or a restore -----------------------------------------------

# (capacity, floors of the other running VMs, unit, need, admitted, room)
ADMISSION = [
    # An empty host: Startup RAM is there.
    (1400, [], 1, 512, True, 1400),
    # The article's host with three VMs idle at 300 MB: a fourth started from Off needs its
    # 512 MB of Startup RAM and only 500 MB can be reclaimed: "Not enough memory in the system
    # to start the virtual machine" (the overview: no Smart Paging from an off state).
    (1400, [300, 300, 300], 1, 512, False, 500),
    # The same host, the fourth VM restored from a saved state with the 300 MB it had: fits.
    (1400, [300, 300, 300], 1, 300, True, 500),
    # Exactly enough is enough.
    (1400, [300, 300, 300], 1, 500, True, 500),
    # Memory goes in 2-unit blocks (2 MB): the capacity rounds down, each floor up.
    (1401, [301], 2, 1098, True, 1098),
    (1401, [301], 2, 1099, False, 1098),
    # Floors above the capacity: nothing can be made available.
    (100, [80, 80], 1, 2, False, -60),
]


@pytest.mark.parametrize("capacity, floors, unit, need, admitted, room", ADMISSION)
def test_admission(capacity, floors, unit, need, admitted, room):
    others = [running(f"vm{i}", f) for i, f in enumerate(floors)]
    a = admit(need, capacity, others, unit)
    assert a.admitted is admitted
    assert a.room == room == room_to_start(capacity, others, unit)
    assert a.available == max(0, room)
    assert a.held == capacity // unit * unit - room


# (startup, saved, need): a start from Off needs Startup RAM, a restore what it had when saved.
@pytest.mark.parametrize("startup, saved, need", [(512, None, 512), (512, 300, 300), (512, 0, 0)])
def test_start_need(startup, saved, need):
    assert start_need(startup, saved) == need


# -- the host reboot (Set-VM -AutomaticStopAction / -AutomaticStartAction / -AutomaticStartDelay)


@pytest.mark.parametrize("stop, saves", [("Save", True), ("ShutDown", False), ("TurnOff", False)])
def test_stop_action_at_host_shutdown(stop, saves):
    assert saves_at_shutdown(stop) is saves


@pytest.mark.parametrize(
    "action, was_running, starts",
    [
        ("StartIfRunning", True, True),
        ("StartIfRunning", False, False),
        ("Start", True, True),
        ("Start", False, True),  # "Start": always, even a VM that was off
        ("Nothing", True, False),
        ("Nothing", False, False),
    ],
)
def test_start_action_at_host_start(action, was_running, starts):
    assert starts_at_host_start(action, was_running) is starts


def vm(name, stop="Save", start="StartIfRunning", delay=0.0, priority=50, up=True, saved=False):
    return RebootVM(name, stop, start, delay, priority, running=up, saved=saved)


# (VMs, expected starts as (name, delay, restore) in order, expected left, saved, turned off)
SCHEDULES = [
    # Hyper-V's defaults (Save, StartIfRunning, no delay): every running VM is saved, then
    # restored; an Off VM stays Off.
    (
        [vm("a"), vm("b"), vm("c", up=False)],
        [("a", 0.0, True), ("b", 0.0, True)],
        {"c": "off"},
        ("a", "b"),
        (),
    ),
    # ShutDown / TurnOff: off at shutdown, started from Off (Startup RAM) when the host is back.
    (
        [vm("a", stop="ShutDown"), vm("b", stop="TurnOff")],
        [("a", 0.0, False), ("b", 0.0, False)],
        {},
        (),
        ("a", "b"),
    ),
    # Nothing: left as the shutdown left it.
    (
        [vm("a", start="Nothing"), vm("b", stop="TurnOff", start="Nothing")],
        [],
        {"a": "saved", "b": "off"},
        ("a",),
        ("b",),
    ),
    # Start: an Off VM is started too; a VM already Saved (not running) is restored.
    (
        [vm("a", start="Start", up=False), vm("b", start="Start", up=False, saved=True)],
        [("a", 0.0, False), ("b", 0.0, True)],
        {},
        (),
        (),
    ),
    # A VM already Saved whose action is StartIfRunning was not running: it stays saved.
    ([vm("a", up=False, saved=True)], [], {"a": "saved"}, (), ()),
    # Each start after its delay: in order of delay ...
    (
        [vm("a", delay=30), vm("b", delay=0), vm("c", delay=10)],
        [("b", 0.0, True), ("c", 10.0, True), ("a", 30.0, True)],
        {},
        ("a", "b", "c"),
        (),
    ),
    # ... and at the same delay higher priority first (vmmem's order; then the order given).
    (
        [vm("a", priority=10), vm("b", priority=90), vm("c", priority=10), vm("d", delay=5)],
        [("b", 0.0, True), ("a", 0.0, True), ("c", 0.0, True), ("d", 5.0, True)],
        {},
        ("a", "b", "c", "d"),
        (),
    ),
]


@pytest.mark.parametrize("vms, starts, left, saved, off", SCHEDULES)
def test_reboot_schedule(vms, starts, left, saved, off):
    s = reboot_schedule(vms)
    assert [(x.name, x.delay, x.restore) for x in s.starts] == starts
    assert s.left == left
    assert s.saved == saved
    assert s.turned_off == off


# -- Smart Paging ----------------------------------------------------------------------------

# (start_from, dynamic, boots, startup, assigned, gap)
SMART_PAGING = [
    # The article's storm: a running dynamic VM restarts given 350 of its 512 MB: 162 MB paged.
    ("Running", True, True, 512, 350, 162),
    # A restart given its Startup RAM (or more) needs no file.
    ("Running", True, True, 512, 512, 0),
    ("Running", True, True, 512, 614, 0),
    # Given nothing at all: the whole Startup RAM.
    ("Running", True, True, 512, 0, 512),
    # Never from an off state (the overview), whatever it is given.
    ("Off", True, True, 512, 0, 0),
    ("Off", True, True, 512, 350, 0),
    # Never for a restore from a saved state: it is not a restart.
    ("Saved", True, True, 512, 300, 0),
    # Never for a static VM: it always holds its Startup RAM.
    ("Running", False, True, 512, 350, 0),
    # A guest that does not boot (no boot phase) has nothing to bridge.
    ("Running", True, False, 512, 350, 0),
]


@pytest.mark.parametrize("start_from, dynamic, boots, startup, assigned, gap", SMART_PAGING)
def test_smart_paging_gap(start_from, dynamic, boots, startup, assigned, gap):
    got = smart_paging_gap(
        start_from=start_from, dynamic=dynamic, boots=boots, startup=startup, assigned=assigned
    )
    assert got == gap


@pytest.mark.parametrize("startup, dynamic, worst", [(512, True, 512), (512, False, 0)])
def test_worst_case_smart_paging_file(startup, dynamic, worst):
    """The largest file a VM can ever need: a restart given nothing; a static VM never pages."""
    assert worst_case_smart_paging(startup, dynamic) == worst


# -- a guest's boot time ---------------------------------------------------------------------


class Custom(Workload):
    """A boot phase that does not say how long it takes."""

    phase = "custom"
    boot = True


PAGES_512MB = 512 * 2**20 // 4096


@pytest.mark.parametrize(
    "phases, seconds",
    [
        ([Boot()], 50e-6 * PAGES_512MB),  # 50 us per page: a 512 MB boot takes about 6.6 s
        ([Boot(cpu_time=3.0), Idle()], 3.0),
        ([Boot(cpu_time=2.0), Boot(cpu_time=1.0), Idle(), Boot(cpu_time=9.0)], 3.0),
        ([Idle()], 0.0),  # no boot at all
        ([Boot(cpu_time=1.0), Custom()], None),  # a boot phase that does not say
    ],
)
def test_boot_seconds(phases, seconds):
    assert boot_seconds(phases, PAGES_512MB) == seconds
