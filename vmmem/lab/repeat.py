"""The same run or comparison repeated N times (after K discarded warm-up runs), each figure as
mean +- standard deviation with min and max, as hyperfine reports a command: what
`vmmem run --runs N` and `vmmem compare --runs N` do (docs/CLI.md, "Repeated runs").

Statistics (docs/CLI.md): the sample standard deviation (n - 1, statistics.stdev); two
locations *differ* when their mean +- 2 sd intervals do not overlap; a run is an *outlier*
when it lies beyond Q3 + 1.5 IQR or below Q1 - 1.5 IQR of its figure and more than 5 % from
the median (4 runs or more; the 5 % keeps a tight cluster's jitter from being named), or when
the first run took more than 1.5 x the median of the others (3 runs or more: a cold cache).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vmmem.lab.results import CompareResult, RunResult, StormSummary
from vmmem.records import doc, to_json

__all__ = [
    "FIGURES",
    "CompareStats",
    "LocationStats",
    "RepeatedCompare",
    "RepeatedRun",
    "RunStats",
    "Spread",
    "differ",
    "outliers",
    "repeat",
    "spread",
]

# The storm's figures that get a spread (StormSummary's field names).
FIGURES = (
    "boot_time",
    "baseline",
    "slowdown",
    "smart_paging_peak_bytes",
    "page_ins",
    "page_outs",
)
# How much slower than the others' median the first run may be before it is named.
FIRST_RUN_FACTOR = 1.5
IQR_FACTOR = 1.5
# Below this distance from the median a run is never an outlier (jitter of a tight cluster).
OUTLIER_MIN_DISTANCE = 0.05


@dataclass(frozen=True)
class Spread:
    """One figure over the runs: mean, sample standard deviation (0 for one run), min, max."""

    n: int
    mean: float
    sd: float
    min: float
    max: float

    def interval(self) -> tuple[float, float]:
        """mean +- 2 sd: where the verdict looks for an overlap."""
        return self.mean - 2 * self.sd, self.mean + 2 * self.sd


def spread(values: Sequence[float | None]) -> Spread | None:
    """The spread of the measured values (None ones, unmeasured, left out; None if none)."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return Spread(n=len(xs), mean=statistics.fmean(xs), sd=sd, min=min(xs), max=max(xs))


def outliers(values: Sequence[float | None]) -> list[int]:
    """Indexes of the runs the outlier rule names (module docstring), in order."""
    xs = [(i, float(v)) for i, v in enumerate(values) if v is not None]
    found: set[int] = set()
    if len(xs) >= 4:
        q1, _, q3 = statistics.quantiles([v for _, v in xs], n=4, method="inclusive")
        iqr = q3 - q1
        med = statistics.median(v for _, v in xs)
        found |= {
            i
            for i, v in xs
            if (v > q3 + IQR_FACTOR * iqr or v < q1 - IQR_FACTOR * iqr)
            and abs(v - med) > OUTLIER_MIN_DISTANCE * abs(med)
        }
    if len(xs) >= 3 and xs[0][0] == 0:
        rest = statistics.median(v for _, v in xs[1:])
        if xs[0][1] > FIRST_RUN_FACTOR * rest:
            found.add(0)
    return sorted(found)


def differ(a: Spread | None, b: Spread | None) -> bool | None:
    """Whether two figures differ by more than their spread: their mean +- 2 sd intervals do
    not overlap (None: either is unmeasured or from a single run, which has no spread)."""
    if a is None or b is None or a.n < 2 or b.n < 2:
        return None
    (alo, ahi), (blo, bhi) = a.interval(), b.interval()
    return ahi < blo or bhi < alo


@dataclass(frozen=True)
class RunStats:
    """The storm's figures (StormSummary) over the runs; null: never measured."""

    runs: int
    warmup: int
    boot_time: Spread | None = None
    baseline: Spread | None = None
    slowdown: Spread | None = None
    smart_paging_peak_bytes: Spread | None = None
    page_ins: Spread | None = None
    page_outs: Spread | None = None
    outliers: list[str] = field(
        default_factory=list, metadata=doc("Hyperfine-like warnings, one per figure with any.")
    )

    @classmethod
    def of(cls, summaries: Sequence[StormSummary], warmup: int, label: str = "") -> RunStats:
        figures = {k: [getattr(s, k) for s in summaries] for k in FIGURES}
        found = []
        for k, values in figures.items():
            named = outliers(values)
            if named:
                found.append(f"{k.replace('_', ' ')} (run {', '.join(str(i + 1) for i in named)})")
        warn = []
        if found:  # one warning per run or location, as hyperfine gives one per command
            where = f" of {label}" if label else ""
            warn.append(
                f"Statistical outliers were detected in {', '.join(found)}{where}, over "
                f"{len(summaries)} runs. Consider re-running on a quiet machine, or with "
                "--warmup to fill the caches first."
            )
        return cls(
            runs=len(summaries),
            warmup=warmup,
            outliers=warn,
            **{k: spread(v) for k, v in figures.items()},
        )


@dataclass(frozen=True)
class LocationStats:
    """One location of a repeated comparison: its storm over the runs; slowdown against the
    same repeat's baseline."""

    location: str
    stats: RunStats


@dataclass(frozen=True)
class CompareStats:
    """A repeated comparison: the baseline's and each location's spread, and which pairs
    differ by more than their spread (boot time: mean +- 2 sd intervals apart)."""

    baseline: RunStats | None
    locations: list[LocationStats]
    verdict: str


@dataclass
class RepeatedRun:
    """`vmmem run --runs N`: the measured runs (warm-up ones discarded)."""

    runs: list[RunResult]
    warmup: int = 0

    def stats(self) -> RunStats:
        return RunStats.of([r.storm_summary() for r in self.runs], self.warmup)

    @property
    def outcome(self) -> str:
        return _worst(r.outcome for r in self.runs)

    def to_dict(self) -> dict[str, Any]:
        """One run: its JSON as without --runs. More: the first run's JSON (what `vmmem show`
        reads) with every run's own JSON in `repeats` and the spread in `stats`."""
        out = self.runs[0].to_dict()
        if len(self.runs) > 1 or self.warmup:
            out["repeats"] = [r.to_dict() for r in self.runs]
            out["stats"] = to_json(self.stats())
        return out


@dataclass
class RepeatedCompare:
    """`vmmem compare --runs N`: the measured comparisons (warm-up ones discarded)."""

    compares: list[CompareResult]
    warmup: int = 0

    @property
    def outcome(self) -> str:
        return _worst(c.outcome for c in self.compares)

    def stats(self) -> CompareStats:
        cs = self.compares
        base = (
            RunStats.of(
                [c.baseline.storm_summary() for c in cs if c.baseline], self.warmup, "the baseline"
            )
            if any(c.baseline for c in cs)
            else None
        )
        locs = []
        for loc in cs[0].runs:
            summaries = []
            for c in cs:
                run = c.runs.get(loc)
                if run is None:
                    continue
                st = run.storm_summary()
                # slowdown against this repeat's baseline, as compare's own rows have it
                row = next((r for r in c.rows() if r.location == loc), None)
                summaries.append(_with(st, slowdown=row.slowdown if row else None))
            locs.append(LocationStats(loc, RunStats.of(summaries, self.warmup, loc)))
        return CompareStats(baseline=base, locations=locs, verdict=_verdict(locs))

    def to_dict(self) -> dict[str, Any]:
        """As RepeatedRun.to_dict, for the comparison."""
        out = self.compares[0].to_dict()
        if len(self.compares) > 1 or self.warmup:
            out["repeats"] = [c.to_dict() for c in self.compares]
            out["stats"] = to_json(self.stats())
        return out


def _with(st: StormSummary, **changes: Any) -> StormSummary:
    from dataclasses import replace

    return replace(st, **changes)


_ORDER = ("ok", "vms_failed", "failed", "interrupted")


def _worst(outcomes: Any) -> str:
    return max(outcomes, key=_ORDER.index, default="ok")


def _verdict(locs: Sequence[LocationStats]) -> str:
    """Which locations' storm boot times differ by more than their spread, in words."""
    measured = [x for x in locs if x.stats.boot_time is not None]
    if len(measured) < 2:
        return "one location: nothing to compare"
    lines = []
    for i, a in enumerate(measured):
        for b in measured[i + 1 :]:
            sa, sb = a.stats.boot_time, b.stats.boot_time
            assert sa is not None and sb is not None
            d = differ(sa, sb)
            if d is None:
                lines.append(f"{a.location} vs {b.location}: one run each, no spread to judge by")
            elif d:
                slow, fast = (a, b) if sa.mean > sb.mean else (b, a)
                ratio = max(sa.mean, sb.mean) / min(sa.mean, sb.mean)
                lines.append(
                    f"{slow.location} is slower than {fast.location} ({ratio:.2f} x), "
                    "beyond their spread (mean +- 2 sd apart)"
                )
            else:
                lines.append(
                    f"{a.location} and {b.location} do not differ beyond their spread "
                    "(mean +- 2 sd overlap)"
                )
    return "; ".join(lines)


def repeat(
    once: Callable[[int, bool], Any],
    runs: int,
    warmup: int = 0,
    stop: Callable[[Any], bool] | None = None,
) -> list[Any]:
    """Call once(index, warm_up) warmup + runs times and keep the measured results. Stops
    early (keeping what was measured) when stop(result) says so: a failed or interrupted run."""
    if runs < 1 or warmup < 0:
        raise ValueError("runs must be at least 1 and warmup at least 0")
    kept: list[Any] = []
    for i in range(warmup + runs):
        result = once(i, i < warmup)
        if stop is not None and stop(result):
            if i >= warmup:
                kept.append(result)
            elif not kept:
                kept.append(result)  # a failed warm-up is all there is to show
            break
        if i >= warmup:
            kept.append(result)
    return kept
