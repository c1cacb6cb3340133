"""The Dynamic Memory balancer: who gets how much host memory.

`allocate` is the whole policy as a pure function over page counts, so it can be tested
without threads or RAM; `BalancerThread` calls the host's tick every interval (Hyper-V
rebalances about once a second, when the guests report their demand).

Rules (docs/HYPERV-RULES.md section 3): target = demand x (1 + buffer/100) clamped to
[minimum, maximum]; when the host is short the buffers go first, then memory is divided by
priority, higher first, taken from lower first; a running VM is never taken below its demand;
the host reserve is never given out (it is not in the capacity at all).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "BalancerThread",
    "Claim",
    "allocate",
    "claim_for",
    "target_pages",
]


@dataclass(frozen=True)
class Claim:
    """One VM's claim on host memory, in pages.

    floor: what it must keep whatever happens (a running VM's demand, at least its minimum;
      0 for a VM restarting on Smart Paging, which may be given less than it uses).
    minimum: Minimum RAM; given right after every floor (matters for restarting VMs).
    need: its demand (Startup RAM while booting): given before anyone's buffer.
    want: need plus buffer, clamped to [minimum, maximum]: the balancer's target.
    """

    name: str
    priority: int
    floor: int
    minimum: int
    need: int
    want: int


def target_pages(demand: int, buffer: int, minimum: int, maximum: int) -> int:
    """demand x (1 + buffer/100), rounded up to a page, clamped to [minimum, maximum]."""
    wanted = -(-demand * (100 + buffer) // 100)
    return max(minimum, min(maximum, wanted))


def claim_for(
    name: str,
    *,
    demand: int,
    minimum: int,
    maximum: int,
    buffer: int,
    priority: int,
    assigned: int,
    dynamic: bool = True,
    startup: int = 0,
    smart_paging: bool = False,
    resident: int = 0,
) -> Claim:
    """A VM's claim from its settings and state (all sizes in pages).

    smart_paging: the VM is restarting on (or still draining) a Smart Paging file, so it may
    be held below what it uses; its floor is 0 and it gets its minimum before any need.
    A running VM's floor is what it uses (demand, or resident pages if more) but never more
    than it holds now: a guest that wants more than it has waits for the balancer.
    """
    if not dynamic:
        return Claim(name, priority, startup, startup, startup, startup)
    need = max(minimum, min(demand, maximum))
    want = max(need, target_pages(demand, buffer, minimum, maximum))
    if smart_paging:
        floor = 0
    else:
        floor = max(minimum, min(max(demand, resident), max(assigned, minimum)))
    return Claim(name, priority, floor, minimum, need, want)


def _water_fill(gaps: dict[str, int], budget: int) -> dict[str, int]:
    """Share `budget` units among `gaps` equally, none above its gap; leftover units go to
    the first claims in order. Returns the grant per name."""
    grants = dict.fromkeys(gaps, 0)
    open_ = [name for name, gap in gaps.items() if gap > 0]
    while open_ and budget > 0:
        share = budget // len(open_)
        if share == 0:  # fewer units than claimants: one each, in order
            for name in open_[:budget]:
                grants[name] += 1
            break
        smallest = min(gaps[n] - grants[n] for n in open_)
        step = min(share, smallest)
        for name in open_:
            grants[name] += step
        budget -= step * len(open_)
        open_ = [n for n in open_ if grants[n] < gaps[n]]
    return grants


def allocate(capacity: int, claims: Sequence[Claim], unit: int = 1) -> dict[str, int]:
    """Divide `capacity` pages among `claims`; returns pages per claim name.

    Every amount is a whole number of `unit` pages (2 MB: Hyper-V's memory block and the
    balloon's unit). Levels are filled in order: floor, minimum, need, want; within a level
    higher priority first, equal priority shared equally. If the floors alone exceed the
    capacity they are still given (they are what the VMs hold); nothing else is.
    """
    if unit <= 0:
        raise ValueError("unit must be positive")
    names = [c.name for c in claims]
    if len(set(names)) != len(names):
        raise ValueError("claim names must be unique")

    def units(pages: int) -> int:
        return -(-max(0, pages) // unit)

    levels: dict[str, list[int]] = {}
    for c in claims:
        floor = units(c.floor)
        minimum = max(floor, units(c.minimum))
        need = max(minimum, units(c.need))
        want = max(need, units(c.want))
        levels[c.name] = [floor, minimum, need, want]

    given = {name: lv[0] for name, lv in levels.items()}
    budget = capacity // unit - sum(given.values())
    priorities = sorted({c.priority for c in claims}, reverse=True)
    for level in (1, 2, 3):
        for priority in priorities:
            if budget <= 0:
                break
            group = [c.name for c in claims if c.priority == priority]
            gaps = {n: levels[n][level] - given[n] for n in group}
            grants = _water_fill(gaps, budget)
            for name, grant in grants.items():
                given[name] += grant
                budget -= grant
    return {name: amount * unit for name, amount in given.items()}


class BalancerThread(threading.Thread):
    """Calls `tick` every `interval` seconds until stopped. An exception in a tick is kept
    in `last_error` and the next tick runs anyway: one bad tick must not freeze every VM."""

    def __init__(self, tick: Callable[[], None], interval: float, name: str = "balancer"):
        super().__init__(name=name, daemon=True)
        self._tick = tick
        self.interval = interval
        self._stop_event = threading.Event()
        self.last_error: BaseException | None = None
        self.ticks = 0

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                self._tick()
                self.ticks += 1
            except Exception as exc:  # noqa: BLE001 - kept for the caller, loop goes on
                self.last_error = exc

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join()
