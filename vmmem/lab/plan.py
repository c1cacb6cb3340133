"""``vmmem plan``: will a scenario need Smart Paging, how much, and what would avoid it. No I/O.

The plan walks the scenario's events with the Dynamic Memory rules (docs/HYPERV-RULES.md
sections 2-4):

- a VM that starts from Off needs its Startup RAM from free memory plus what the balancer can
  reclaim from running VMs (their buffers: never below a running VM's demand or its Minimum);
  if that is not enough Hyper-V refuses the start ("Not enough memory in the system to start
  the virtual machine"), it never uses Smart Paging;
- an idle dynamic VM settles at demand x (1 + buffer), clamped to [Minimum, Maximum];
- a restart needs Startup RAM again; what the host cannot give is bridged by that VM's Smart
  Paging file. Who gets what is decided by the Hyper-V layer's own balancer
  (``vmmem.hyperv.balancer.allocate``): static VMs and running VMs' demand first, then every
  restarting VM's Minimum, then Startup RAM by priority (equal priorities share equally).

Then it tries the article's remedies on a copy of the scenario and keeps the ones that make
every restart fit: less oversubscription (how much more memory, or how much less Startup RAM),
Minimum = Startup (for which VMs), and moving a VM off the host (which one).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from typing import Any

from vmmem.errors import ScaleWarning
from vmmem.guests.predict import BootPrediction
from vmmem.hyperv.balancer import Claim, allocate, claim_for
from vmmem.hyperv.rules import (
    RebootVM,
    admit,
    boot_seconds,
    reboot_schedule,
    saves_at_shutdown,
    smart_paging_gap,
    start_need,
)
from vmmem.hyperv.settings import DEFAULT_PAGE_SIZE
from vmmem.lab.predict import Latency, boot_cpu_seconds, predict_vm, prediction_dict
from vmmem.lab.results import (
    DiskLatency,
    PlannedEvent,
    PlannedRemedy,
    PlanRecord,
    PredictedBoot,
)
from vmmem.lab.scenario_model import ALIGN, Scenario, VMSpec, round_up
from vmmem.records import to_json
from vmmem.sizes import format_mb as mb

__all__ = ["EventPlan", "Plan", "Remedy", "divide_for_boot", "plan_scenario"]


@dataclass(frozen=True)
class EventPlan:
    """What one event needs. ``paging`` maps VM -> Smart Paging bytes for that event's boots."""

    index: int
    description: str
    action: str
    available: int  # memory the booting VMs can get, in all
    needed: int  # Startup RAM of the booting VMs, in all
    assigned: dict[str, int] = field(default_factory=dict)  # what each booting VM gets
    paging: dict[str, int] = field(default_factory=dict)  # gap bridged by Smart Paging
    start_failures: tuple[str, ...] = ()  # VMs Hyper-V would refuse to start from Off
    # reboot-host: per VM "restored", "started", "failed", "saved" or "off"
    outcomes: dict[str, str] = field(default_factory=dict)
    # reboot-host with failures: the smallest stagger (seconds between automatic starts, in
    # the order Hyper-V starts them) with which every VM starts; None: none found, or no need
    suggested_delay: float | None = None
    # VM -> its boot predicted from its accesses with the memory it gets (lab.predict)
    predicted: dict[str, BootPrediction] = field(default_factory=dict)

    @property
    def paging_total(self) -> int:
        return sum(self.paging.values())


@dataclass(frozen=True)
class Remedy:
    """One of the article's ways to avoid Smart Paging, checked by planning the changed host."""

    kind: str  # "add-memory", "reduce-startup", "minimum-equals-startup", "move-vm"
    summary: str
    works: bool
    vms: tuple[str, ...] = ()
    amount: int = 0  # bytes, for add-memory / reduce-startup
    caveat: str = ""


@dataclass(frozen=True)
class Plan:
    scenario: Scenario
    events: tuple[EventPlan, ...]
    remedies: tuple[Remedy, ...]
    idle_assigned: dict[str, int]  # where each VM settles once idle
    latency: Latency | None = None  # the disk latency the predicted boot times use

    @property
    def needs_smart_paging(self) -> bool:
        return any(e.paging_total for e in self.events)

    @property
    def start_failures(self) -> tuple[str, ...]:
        return tuple(v for e in self.events for v in e.start_failures)

    def peak_paging(self) -> dict[str, int]:
        """Per VM, the most Smart Paging any single event needs."""
        out = {v.name: 0 for v in self.scenario.vms}
        for e in self.events:
            for name, b in e.paging.items():
                out[name] = max(out[name], b)
        return out

    def verdict(self) -> str:
        s = self.scenario
        if self.start_failures:
            text = (
                f"{', '.join(self.start_failures)} cannot start: Not enough memory in the "
                "system to start the virtual machine"
            )
            delays = [e.suggested_delay for e in self.events if e.suggested_delay]
            if delays:
                d = max(delays)
                text += (
                    f"; staggering the automatic starts by {d:g} s (automatic_start_delay 0, "
                    f"{d:g}, {2 * d:g} s, ... in start order; in a count block "
                    f"start_delay_step = {d:g}) lets every VM start"
                )
            return text
        if not self.needs_smart_paging:
            return f"no Smart Paging: every restart fits in {mb(s.available)} of host memory"
        worst = max(self.events, key=lambda e: e.paging_total)
        users = [n for n, b in worst.paging.items() if b]
        return (
            f"Smart Paging needed: {worst.description} needs {mb(worst.needed)} for "
            f"{len(worst.paging)} boot(s) but the host can give {mb(worst.available)}; "
            f"{mb(worst.paging_total)} goes to Smart Paging files for {len(users)} VM(s)"
        )

    def record(self) -> PlanRecord:
        """The plan as a run's JSON keeps it (its one definition: PlanRecord)."""
        return PlanRecord(
            scenario=self.scenario.name,
            needs_smart_paging=self.needs_smart_paging,
            verdict=self.verdict(),
            available_bytes=self.scenario.available,
            idle_assigned_bytes=dict(self.idle_assigned),
            start_failures=list(self.start_failures),
            peak_paging_bytes=self.peak_paging(),
            latency=None if self.latency is None else DiskLatency(**self.latency.to_dict()),
            events=[
                PlannedEvent(
                    index=e.index,
                    action=e.action,
                    description=e.description,
                    available_bytes=e.available,
                    needed_bytes=e.needed,
                    assigned_bytes=dict(e.assigned),
                    smart_paging_bytes=dict(e.paging),
                    smart_paging_total_bytes=e.paging_total,
                    start_failures=list(e.start_failures),
                    outcomes=dict(e.outcomes),
                    suggested_delay=e.suggested_delay,
                    predicted={
                        n: PredictedBoot(**prediction_dict(b)) for n, b in e.predicted.items()
                    },
                )
                for e in self.events
            ],
            remedies=[
                PlannedRemedy(
                    kind=r.kind,
                    summary=r.summary,
                    works=r.works,
                    vms=list(r.vms),
                    amount_bytes=r.amount,
                    caveat=r.caveat,
                )
                for r in self.remedies
            ],
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(to_json(self.record()))


def _floor_align(n: int) -> int:
    return n // ALIGN * ALIGN


PAGE = DEFAULT_PAGE_SIZE  # no host here: the default host's page
UNIT_PAGES = ALIGN // PAGE  # the balancer hands out 2 MB blocks


def _claim(v: VMSpec, *, booting: bool) -> Claim:
    """The balancer's claim for ``v`` (pages): booting on a restart, or idle and running."""
    demand = v.startup if booting else v.idle_demand
    return claim_for(
        v.name,
        demand=demand // PAGE,
        minimum=v.effective_minimum // PAGE,
        maximum=v.effective_maximum // PAGE,
        buffer=v.effective_buffer,
        priority=v.priority,
        assigned=(v.startup if booting else v.idle_target) // PAGE,
        dynamic=v.dynamic,
        startup=v.startup // PAGE,
        smart_paging=booting and v.dynamic,
        resident=0 if booting else demand // PAGE,
    )


def _allocate(available: int, booting: list[VMSpec], idle: list[VMSpec]) -> dict[str, int]:
    """Bytes per VM from the Hyper-V layer's own balancer (vmmem.hyperv.balancer.allocate)."""
    claims = [_claim(v, booting=True) for v in booting]
    claims += [_claim(v, booting=False) for v in idle]
    pages = allocate(available // PAGE, claims, unit=UNIT_PAGES)
    return {n: p * PAGE for n, p in pages.items()}


def divide_for_boot(booting: list[VMSpec], available: int) -> dict[str, int]:
    """How ``available`` bytes are divided among VMs that boot at the same time: the layer's
    balancer (static VMs first, then every Minimum, then Startup by priority, equal
    priorities sharing equally, in 2 MB blocks), capped at each VM's Startup RAM."""
    got = _allocate(available, booting, [])
    return {v.name: min(got[v.name], v.startup) for v in booting}


def _reclaim_floor(v: VMSpec) -> int:
    """The least a running, idle VM can be shrunk to: its demand (never below Minimum)."""
    if not v.dynamic:
        return v.startup
    return max(min(v.idle_demand, v.effective_maximum), v.effective_minimum)


def _settle(running: list[VMSpec], available: int) -> dict[str, int]:
    """Where idle VMs settle: the balancer with every VM at its idle demand."""
    return _allocate(available, [], running)


def _walk(s: Scenario, stagger: bool = True) -> tuple[list[EventPlan], dict[str, int]]:
    """Plan every event of ``s``; returns the event plans and where VMs idle at the end."""
    available = s.available
    running: list[VMSpec] = []
    plans: list[EventPlan] = []
    idle: dict[str, int] = {}
    for i, e in enumerate(s.events):
        desc = e.describe()
        if e.action == "start":
            failures, assigned = [], {}
            for name in e.vms:
                v = s.vm(name)
                running_claims = [_claim(r, booting=False) for r in running]
                if not admit(
                    v.startup // PAGE, available // PAGE, running_claims, UNIT_PAGES
                ).admitted:
                    failures.append(name)
                    continue
                assigned[name] = v.startup
                running.append(v)
            idle = _settle(running, available)
            plans.append(
                EventPlan(
                    i,
                    desc,
                    e.action,
                    available,
                    sum(s.vm(n).startup for n in e.vms),
                    assigned,
                    {},
                    tuple(failures),
                )
            )
        elif e.action == "restart-vms" or (
            e.action == "reboot-host" and e.smart_paging_on_host_reboot
        ):
            names = set(e.vms) or {r.name for r in running}
            booting = [r for r in running if r.name in names]
            others = [r for r in running if r.name not in names]
            alloc = _allocate(available, booting, others)
            got = {v.name: min(alloc[v.name], v.startup) for v in booting}
            paging = {v.name: _paging(v, got[v.name]) for v in booting}
            can_give = max(available - sum(_reclaim_floor(o) for o in others), 0)
            plans.append(
                EventPlan(i, desc, e.action, can_give, sum(v.startup for v in booting), got, paging)
            )
            idle = _settle(running, available)
        elif e.action == "reboot-host":
            # What the automatic starts ask for: a saved VM the memory it had, one started
            # from Off its Startup RAM (whether or not the host can give it).
            up = {v.name for v in running}
            outcomes = _reboot(s, running, idle, available)
            needs = sum(
                start_need(
                    v.startup,
                    idle.get(v.name, v.startup)
                    if v.name in up and saves_at_shutdown(v.automatic_stop_action)
                    else None,
                )
                for v in s.vms
                if outcomes[v.name] in ("restored", "started", "failed")
            )
            failed = tuple(n for n, o in outcomes.items() if o == "failed")
            # The stagger search is for the answer, not for the remedies' yes/no (_fits).
            delay = _smallest_stagger(s, running, idle, available) if failed and stagger else None
            running = [v for v in s.vms if outcomes.get(v.name) in ("restored", "started")]
            plans.append(
                EventPlan(
                    i,
                    desc,
                    e.action,
                    available,
                    needs,
                    start_failures=failed,
                    outcomes=outcomes,
                    suggested_delay=delay,
                )
            )
            idle = _settle(running, available)
        elif e.action == "restart":
            # One after another: each restarts while the others idle, shrunk to their demand.
            got, paging = {}, {}
            for name in e.vms:
                v = s.vm(name)
                others = [r for r in running if r.name != name]
                give = min(v.startup, _allocate(available, [v], others)[name])
                got[name] = give
                paging[name] = _paging(v, give)
            plans.append(
                EventPlan(
                    i,
                    desc,
                    e.action,
                    max(
                        available - sum(_reclaim_floor(r) for r in running if r.name not in e.vms),
                        0,
                    ),
                    sum(s.vm(n).startup for n in e.vms),
                    got,
                    paging,
                )
            )
            idle = _settle(running, available)
        else:
            plans.append(EventPlan(i, desc, e.action, available, 0))
    return plans, idle


def _paging(v: VMSpec, assigned: int) -> int:
    """Bytes of Smart Paging for ``v`` restarting on ``assigned`` bytes (the layer's rule)."""
    return smart_paging_gap(
        start_from="Running", dynamic=v.dynamic, boots=True, startup=v.startup, assigned=assigned
    )


def _boot_seconds(v: VMSpec) -> float:
    """How long `v` takes to boot with enough memory: its workload's boot time."""
    recorded = boot_cpu_seconds(v)  # a recorded guest's own boot, whatever boot_seconds says
    if recorded is not None:
        return recorded
    seconds = boot_seconds([v.workload.boot_phase()], v.startup // PAGE, v.processor_count)
    return 0.0 if seconds is None else seconds


def _reboot(
    s: Scenario,
    was_running: list[VMSpec],
    idle: dict[str, int],
    available: int,
    delays: dict[str, float] | None = None,
) -> dict[str, str]:
    """What each VM does through a host reboot (Hyper-V's reading): its stop action, then its
    start action at its delay, in the host's order (delay, then higher priority first). A saved
    VM needs the memory it had, a VM started from Off its Startup RAM, both from what the
    balancer can reclaim from the VMs already up: a VM still booting holds its Startup RAM; one
    that has booted holds its idle demand once it has ballooned down (its boot time plus two
    balancer intervals and half a second, the planner's estimate)."""
    up = {v.name for v in was_running}
    delays = delays or {v.name: v.automatic_start_delay for v in s.vms}
    schedule = reboot_schedule(
        [
            RebootVM(
                v.name,
                v.automatic_stop_action,
                v.automatic_start_action,
                delays[v.name],
                v.priority,
                running=v.name in up,
            )
            for v in s.vms
        ]
    )
    outcomes: dict[str, str] = dict(schedule.left)
    started: list[tuple[VMSpec, float, bool]] = []  # VM, when, restored
    settle = 2 * s.balancer_interval + 0.5
    for start in schedule.starts:
        v, at, saved = s.vm(start.name), start.delay, start.restore
        claims = []
        for w, t, restored in started:
            booting = not restored and at < t + _boot_seconds(w) + settle
            if booting:
                claims.append(replace(_claim(w, booting=False), floor=w.startup // PAGE))
            else:
                claims.append(_claim(w, booting=False))
        need = start_need(v.startup, idle.get(v.name, v.startup) if saved else None)
        if not admit(need // PAGE, available // PAGE, claims, UNIT_PAGES).admitted:
            outcomes[v.name] = "failed"
            continue
        outcomes[v.name] = "restored" if saved else "started"
        started.append((v, at, saved))
    return outcomes


def _smallest_stagger(
    s: Scenario, was_running: list[VMSpec], idle: dict[str, int], available: int
) -> float | None:
    """The smallest delay D in whole seconds such that with automatic start delays 0, D, 2D,
    ... in the host's start order (higher priority first) every VM starts. Whole seconds:
    Set-VM -AutomaticStartDelay is an Int32 number of seconds (Microsoft's Set-VM reference,
    https://learn.microsoft.com/powershell/module/hyper-v/set-vm), so a fraction could not
    be set."""
    order = sorted(s.vms, key=lambda v: -v.priority)
    longest = max((_boot_seconds(v) for v in s.vms), default=0.0)
    limit = 4 * (longest + 2 * s.balancer_interval + 1) + 10
    step = 1.0
    d = step
    while d <= limit:
        delays = {v.name: i * d for i, v in enumerate(order)}
        outcomes = _reboot(s, was_running, idle, available, delays)
        if "failed" not in outcomes.values():
            return d
        d += step
    return None


def _fits(s: Scenario) -> bool:
    plans, _ = _walk(s, stagger=False)
    return not any(p.paging_total or p.start_failures for p in plans)


def _remedies(s: Scenario, plans: list[EventPlan]) -> list[Remedy]:
    out: list[Remedy] = []
    worst = max(p.paging_total for p in plans)
    users = sorted({n for p in plans for n, b in p.paging.items() if b})

    # 1. Less oversubscription: more memory for VMs (or a smaller reserve), or less Startup RAM.
    extra = round_up(worst, ALIGN)
    while not _fits(s.with_host_memory(s.host_memory + extra)) and extra < 64 * s.host_memory:
        extra += ALIGN
    reserve_note = (
        f" (or {mb(min(extra, s.host_reserve))} of it from a smaller host reserve)"
        if s.host_reserve
        else ""
    )
    out.append(
        Remedy(
            "add-memory",
            f"give VMs {mb(extra)} more host memory ({mb(s.available)} -> "
            f"{mb(s.available + extra)}){reserve_note}",
            _fits(s.with_host_memory(s.host_memory + extra)),
            amount=extra,
        )
    )
    total_startup = sum(v.startup for v in s.vms)
    out.append(
        Remedy(
            "reduce-startup",
            f"oversubscribe less: cut total Startup RAM by {mb(extra)} "
            f"({mb(total_startup)} -> {mb(total_startup - extra)}), e.g. fewer or "
            "smaller VMs on this host",
            True,
            amount=extra,
            caveat="each guest still needs its Startup RAM to boot",
        )
    )

    # 2. Minimum = Startup for the VMs that page: they then never give the memory away.
    changed = dataclasses.replace(
        s,
        vms=tuple(
            dataclasses.replace(v, minimum=v.startup) if v.name in users and v.dynamic else v
            for v in s.vms
        ),
    )
    plans2, _ = _walk(changed)
    failures = [n for p in plans2 for n in p.start_failures]
    still = sorted({n for p in plans2 for n, b in p.paging.items() if b})
    works = not failures and not still
    if works:
        caveat = "those VMs never balloon below Startup RAM: idle memory is no longer reclaimed"
    elif failures:
        need = sum(v.startup if v.name in users else _reclaim_floor(v) for v in s.vms)
        caveat = (
            f"then {', '.join(failures)} could not start on this host (Not enough memory "
            f"in the system to start the virtual machine): that needs "
            f"{mb(need)}, the host has {mb(s.available)}"
        )
    else:
        caveat = f"{', '.join(still)} would still page"
    out.append(
        Remedy(
            "minimum-equals-startup",
            f"set Minimum RAM = Startup RAM on {', '.join(users)}",
            works,
            vms=tuple(users),
            caveat=caveat,
        )
    )

    # 3. Move a VM off the host (live migration): the cheapest single VM that is enough.
    singles = []
    for v in s.vms:
        rest = _without(s, [v.name])
        if rest is not None and _fits(rest):
            singles.append(v)
    if singles:
        pick = min(singles, key=lambda v: (v.priority, v.startup, v.name))
        out.append(
            Remedy(
                "move-vm",
                f"live-migrate {pick.name} (priority {pick.priority}, Startup "
                f"{mb(pick.startup)}) to another host before the restart",
                True,
                vms=(pick.name,),
            )
        )
    else:
        moved: list[str] = []
        for v in sorted(s.vms, key=lambda v: (v.priority, -v.startup, v.name)):
            moved.append(v.name)
            rest = _without(s, moved)
            if rest is None or _fits(rest):
                break
        rest = _without(s, moved)
        out.append(
            Remedy(
                "move-vm",
                f"live-migrate {', '.join(moved)} to another host before the restart",
                rest is not None and _fits(rest),
                vms=tuple(moved),
                caveat="no single VM is enough",
            )
        )
    return out


def _without(s: Scenario, names: list[str]) -> Scenario | None:
    """``s`` with VMs moved away (and dropped from the events); None if nothing is left."""
    vms = tuple(v for v in s.vms if v.name not in names)
    if not vms:
        return None
    events = []
    for e in s.events:
        keep = tuple(n for n in e.vms if n not in names)
        if e.action in ("start", "restart") and not keep:
            continue
        events.append(dataclasses.replace(e, vms=keep))
    return dataclasses.replace(s, vms=vms, events=tuple(events))


def plan_scenario(s: Scenario, latency: Latency | None = None, predict: bool = True) -> Plan:
    """The plan for ``s``: per event what the boots need and get, and the remedies that work;
    for every restarting VM, its boot predicted with the memory it gets (boot times given the
    disk's `latency`; `predict` False: none)."""
    plans, idle = _walk(s)
    remedies = _remedies(s, plans) if any(p.paging_total for p in plans) else []
    if predict:
        plans = [_with_predictions(s, p, latency) for p in plans]
    return Plan(
        scenario=s,
        events=tuple(plans),
        remedies=tuple(remedies),
        idle_assigned=idle,
        latency=latency,
    )


def _with_predictions(s: Scenario, e: EventPlan, latency: Latency | None) -> EventPlan:
    if not e.assigned or e.action not in ("restart-vms", "restart", "reboot-host"):
        return e
    predicted = {n: predict_vm(s.vm(n), got, latency) for n, got in e.assigned.items()}
    return replace(e, predicted={n: b for n, b in predicted.items() if b is not None})


def scale_warnings(full: Plan, small: Plan) -> list[ScaleWarning]:
    """Where --scale changed the story, from the plans of the scenario at full size and scaled
    (each planned once by the caller): Hyper-V's 32 MB floor on Startup and Minimum RAM does
    not shrink, so a hard scale can make VMs that start at full size fail to start, or change
    whether Smart Paging is needed."""
    original, scaled = full.scenario, small.scenario
    if scaled.scale == original.scale:
        return []
    out: list[ScaleWarning] = []
    new_failures = [v for v in small.start_failures if v not in full.start_failures]
    if new_failures:
        out.append(
            ScaleWarning(
                f"at --scale {scaled.scale / original.scale:g}, {', '.join(new_failures)} "
                "cannot start although it does at full size (Startup and Minimum RAM "
                "cannot go below 32 MB); use a smaller --scale"
            )
        )
    elif full.needs_smart_paging != small.needs_smart_paging:
        out.append(
            ScaleWarning(
                f"at --scale {scaled.scale / original.scale:g} the scenario "
                f"{'needs' if small.needs_smart_paging else 'no longer needs'} Smart Paging "
                "unlike at full size (sizes round to 2 MB, 32 MB at least); use a smaller "
                "--scale"
            )
        )
    return out
