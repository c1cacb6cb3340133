"""The same storm once per guest, side by side: what `vmmem run --guest a,b,c` (and the default
`vmmem run`) and `vmmem compare --guest a,b,c` run, callable from the library too.

Each guest's run goes through the runner's public entry (`run_scenario`, or `compare_locations`
for a grid of locations x guests); the result keeps every guest's own RunResult (or
CompareResult) and makes the table rows from them. Which guests exist is the guests registry's
answer (`guest_names`, what `vmmem guests` lists), never a list kept here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vmmem.lab.compare import compare_locations
from vmmem.lab.locations import CheckedLocations
from vmmem.lab.progress import ProgressSink
from vmmem.lab.results import SCHEMA_VERSION, CompareResult, RunResult, machine_facts, now_iso
from vmmem.lab.runner import run_scenario
from vmmem.lab.scenario import Scenario
from vmmem.records import to_json

__all__ = [
    "ALL_GUESTS",
    "DEFAULT_SCALE",
    "SpectrumResult",
    "compare_guests",
    "grid_slowdown",
    "guest_names",
    "parse_guest_list",
    "run_guests",
]

ALL_GUESTS = "all"
# The scale of the default `vmmem run` (the article's storm, every guest): measured to take
# about a minute for every shipped guest and the synthetic boot together on a loaded
# 2-core machine (62 s for five guests; docs/CLI.md).
DEFAULT_SCALE = 8.0


def guest_names() -> list[str]:
    """Every guest `vmmem guests` lists, in its order (the registry decides, not this list)."""
    from vmmem.lab import guest_profiles

    return [p.name for p in guest_profiles()]


def parse_guest_list(text: str) -> list[str] | None:
    """`--guest` as given: None for one guest (the single run, as before), else the guests
    of a comma list or of `all`, in order, without repeats. Names are checked by the caller
    (a trace file path is a guest too)."""
    if text.strip() == ALL_GUESTS:
        return guest_names()
    if "," not in text:
        return None
    names: list[str] = []
    for part in text.split(","):
        name = part.strip()
        if not name:
            raise ValueError(f"an empty name in the list {text!r}")
        if name == ALL_GUESTS:
            raise ValueError("'all' stands alone, not in a list")
        if name not in names:
            names.append(name)
    return names


def _pages_touched(s: Scenario) -> int | None:
    """The most distinct pages a storm VM's boot touches (None: not predicted)."""
    from vmmem.lab.predict import pages_touched

    counts = [pages_touched(v) for v in s.vms]
    known = [c for c in counts if c is not None]
    return max(known) if known else None


def _predicted(run: RunResult) -> dict[str, int] | None:
    """The storm's predicted paging, summed over its VMs, from the run's own plan (no extra
    work: the runner plans every run)."""
    ev = run.storm_event()
    if run.plan is None:
        return None
    got = next((e.predicted for e in run.plan.events if e.index == ev), None)
    if not got:
        return None
    return {
        "page_ins": sum(b.page_ins for b in got.values()),
        "page_outs": sum(b.page_outs for b in got.values()),
        "smart_paging_peak_bytes": sum(b.smart_paging_peak_bytes for b in got.values()),
    }


def grid_slowdown(cell: dict[str, Any]) -> float | None:
    """A compare cell's slowdown: against the guest's baseline run, or (--no-baseline) against
    the slowest full-memory boot of the same VMs in the same run."""
    if cell.get("slowdown"):
        return float(cell["slowdown"])
    if cell.get("boot_time") and cell.get("own_baseline"):
        return float(cell["boot_time"] / cell["own_baseline"])
    return None


def spectrum_row(guest: str, run: RunResult, pages: int | None) -> dict[str, Any]:
    """One guest's storm: what the table and the JSON show for it."""
    st = run.storm_summary()
    boots = [b for b in run.storm_boots() if b.event == st.event]
    startup = max((int(b.startup_bytes or 0) for b in boots), default=0)
    pred = _predicted(run)
    return {
        "guest": guest,
        "outcome": run.outcome,
        "vms": st.vms,
        "pages_touched": pages,
        "startup_pages": startup // 4096 if startup else None,
        "smart_paging_peak_bytes": st.smart_paging_peak_bytes,
        "page_ins": st.page_ins,
        "page_outs": st.page_outs,
        "boot_time": st.boot_time,
        "baseline": st.baseline,
        "slowdown": st.slowdown,
        "predicted_page_ins": None if pred is None else pred["page_ins"],
        "predicted_page_outs": None if pred is None else pred["page_outs"],
        "predicted_smart_paging_peak_bytes": (
            None if pred is None else pred["smart_paging_peak_bytes"]
        ),
        "duration": run.duration,
    }


@dataclass
class SpectrumResult:
    """The same storm once per guest: each guest's RunResult (run) or CompareResult (compare,
    locations x guests), in the order run, and the rows made from them."""

    scenario: str  # the scenario's name
    scale: float
    runs: dict[str, RunResult] = field(default_factory=dict)
    compares: dict[str, CompareResult] = field(default_factory=dict)
    pages: dict[str, int | None] = field(default_factory=dict)  # guest -> pages touched
    outcome: str = "ok"
    error: str | None = None
    started: str = field(default_factory=now_iso)
    duration: float = 0.0
    machine: dict[str, Any] = field(default_factory=lambda: to_json(machine_facts()))

    @property
    def command(self) -> str:
        return "compare" if self.compares else "run"

    def rows(self) -> list[dict[str, Any]]:
        """run: one row per guest. compare: one row per guest, its baseline and a cell per
        location (the compare's own rows)."""
        if self.compares:
            out = []
            for guest, cmp in self.compares.items():
                base = cmp.baseline.storm_summary().boot_time if cmp.baseline else None
                out.append(
                    {
                        "guest": guest,
                        "outcome": cmp.outcome,
                        "pages_touched": self.pages.get(guest),
                        "baseline_boot_time": base,
                        "locations": [to_json(r) for r in cmp.rows()],
                    }
                )
            return out
        return [spectrum_row(g, r, self.pages.get(g)) for g, r in self.runs.items()]

    def summary(self) -> str:
        """The spread in one line: which guest slowed least and most, and by how much."""
        from vmmem.sizes import format_duration as seconds

        if self.compares:
            cells: list[tuple[float, str, str]] = []
            for r in self.rows():
                for c in r["locations"]:
                    slow = grid_slowdown(c)
                    if slow:
                        cells.append((slow, r["guest"], c["location"]))
            if not cells:
                return "no guest completed the boot storm"
            least, most = min(cells), max(cells)
            return (
                f"slowdown against each guest's baseline from {least[0]:.2f} x ({least[1]} on "
                f"{least[2]}) to {most[0]:.2f} x ({most[1]} on {most[2]})"
            )
        rated = [r for r in self.rows() if r["slowdown"]]
        if not rated:
            return "no guest completed the boot storm"
        lo = min(rated, key=lambda r: r["slowdown"])
        hi = max(rated, key=lambda r: r["slowdown"])
        if len(rated) == 1:
            return (
                f"{lo['guest']}: the storm took {seconds(lo['boot_time'])}, "
                f"{lo['slowdown']:.2f} x its baseline"
            )
        return (
            f"the same storm, {len(rated)} guests: from {lo['slowdown']:.2f} x "
            f"({lo['guest']}, {seconds(lo['boot_time'])}) to {hi['slowdown']:.2f} x "
            f"({hi['guest']}, {seconds(hi['boot_time'])}): "
            f"{hi['slowdown'] / lo['slowdown']:.1f} x apart; the guest decides the answer"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "vmmem-spectrum",
            "schema_version": SCHEMA_VERSION,
            "command": self.command,
            "outcome": self.outcome,
            "error": self.error,
            "summary": self.summary(),
            "started": self.started,
            "duration": self.duration,
            "machine": self.machine,
            "scenario": self.scenario,
            "scale": self.scale,
            "rows": self.rows(),
            "guests": [
                {"guest": g, "run": r.to_dict(), "compare": None} for g, r in self.runs.items()
            ]
            + [{"guest": g, "run": None, "compare": c.to_dict()} for g, c in self.compares.items()],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpectrumResult:
        """A saved `vmmem-spectrum` document (`vmmem show`); pages touched from its rows."""
        out = cls(
            scenario=d["scenario"],
            scale=d["scale"],
            outcome=d["outcome"],
            error=d.get("error"),
            started=d["started"],
            duration=d["duration"],
            machine=d["machine"],
        )
        for g in d["guests"]:
            if g.get("run") is not None:
                out.runs[g["guest"]] = RunResult.from_dict(g["run"])
            if g.get("compare") is not None:
                out.compares[g["guest"]] = CompareResult.from_dict(g["compare"])
        out.pages = {r["guest"]: r.get("pages_touched") for r in d["rows"]}
        return out


def _worst(outcomes: Sequence[str]) -> str:
    for o in ("interrupted", "failed", "vms_failed"):
        if o in outcomes:
            return o
    return "ok"


def run_guests(
    scenarios: dict[str, Scenario],
    *,
    scale: float = 1.0,
    paging_dir: str | None = None,
    backend: str = "direct",
    policy: str = "lru",
    progress: Callable[[int, int, str], ProgressSink | None] | None = None,
    on_done: Callable[[ProgressSink | None], None] | None = None,
    locations: dict[str, CheckedLocations] | None = None,
) -> SpectrumResult:
    """Run each guest's scenario (guest -> the storm with that guest in every VM) in turn;
    `locations`: what check_locations already found for each guest's run (not checked again).
    Stops after a run that failed or was interrupted (what ran is kept); a run whose host
    reboot could not start a VM was measured in full, so the next guest runs."""
    if not scenarios:
        raise ValueError("give at least one guest")
    first = next(iter(scenarios.values()))
    out = SpectrumResult(scenario=first.name, scale=scale)
    t0 = time.monotonic()
    for i, (guest, s) in enumerate(scenarios.items()):
        out.pages[guest] = _pages_touched(s)
        sink = progress(i, len(scenarios), guest) if progress is not None else None
        try:
            run = run_scenario(
                s,
                paging_dir=paging_dir,
                progress=sink,
                backend=backend,
                policy=policy,
                locations=None if locations is None else locations.get(guest),
            )
        finally:
            if on_done is not None:
                on_done(sink)
        out.runs[guest] = run
        if run.outcome in ("failed", "interrupted"):
            out.error = run.error or run.verdict()
            break
    out.outcome = _worst([r.outcome for r in out.runs.values()])
    out.duration = time.monotonic() - t0
    return out


def compare_guests(
    scenarios: dict[str, Scenario],
    folders: Sequence[str],
    *,
    scale: float = 1.0,
    baseline: bool = True,
    backend: str = "direct",
    policy: str = "lru",
    progress: Callable[[str, int, int, str | None], ProgressSink | None] | None = None,
    on_done: Callable[[ProgressSink | None], None] | None = None,
    checked: dict[str, dict[str, CheckedLocations]] | None = None,
) -> SpectrumResult:
    """`compare_locations` once per guest: a grid of locations x guests. `progress(guest,
    index, count, folder)` as compare_locations' (folder None: that guest's baseline)."""
    if not scenarios:
        raise ValueError("give at least one guest")
    first = next(iter(scenarios.values()))
    out = SpectrumResult(scenario=first.name, scale=scale)
    t0 = time.monotonic()
    for guest, s in scenarios.items():
        out.pages[guest] = _pages_touched(s)

        def sink_for(i: int, n: int, folder: str | None, guest: str = guest) -> ProgressSink | None:
            return progress(guest, i, n, folder) if progress is not None else None

        cmp = compare_locations(
            s,
            folders,
            checked=None if checked is None else checked.get(guest),
            baseline=baseline,
            backend=backend,
            policy=policy,
            progress=sink_for,
            on_done=on_done,
        )
        out.compares[guest] = cmp
        if cmp.outcome in ("failed", "interrupted"):
            out.error = cmp.error
            break
    out.outcome = _worst([c.outcome for c in out.compares.values()])
    out.duration = time.monotonic() - t0
    return out
