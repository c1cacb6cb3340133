"""Plots of runs and comparisons (matplotlib, Agg backend: no display needed).

Both read only the report objects (RunResult, CompareResult), so a saved JSON can be plotted
again later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

from vmmem.lab.results import CompareResult, RunResult  # noqa: E402
from vmmem.sizes import MB  # noqa: E402

if TYPE_CHECKING:
    from vmmem.lab.spectrum import SpectrumResult

__all__ = [
    "file_lives",
    "plot_compare",
    "plot_compare_spread",
    "plot_run",
    "plot_run_spread",
    "plot_spectrum",
]


def _series(result: RunResult) -> tuple[list[float], dict[str, dict[str, list[float]]]]:
    times = [s.time for s in result.timeline]
    per_vm: dict[str, dict[str, list[float]]] = {}
    for sample in result.timeline:
        for v in sample.vms:
            d = per_vm.setdefault(v.name, {"assigned": [], "paging": [], "demand": []})
            d["assigned"].append(v.memory_assigned / MB)
            d["paging"].append(v.smart_paging_bytes / MB)
            d["demand"].append(v.memory_demand / MB)
    return times, per_vm


def file_lives(result: RunResult) -> list[dict[str, Any]]:
    """Each Smart Paging file of the run: its VM, exact peak (bytes) and life on the host
    clock. Runs saved before schema version 2 lack the creation time: the boot's start
    stands in for it there."""
    out: list[dict[str, Any]] = []
    for b in result.boots:
        peak = b.smart_paging_peak_bytes
        if not peak:
            continue
        created = b.smart_paging_file_created_at
        deleted = b.smart_paging_file_deleted_at
        if created is None:
            created = b.started_at
            if b.smart_paging_ended:
                deleted = created + (b.smart_paging_seconds or 0.0)
        out.append({"vm": b.vm, "peak": peak, "created": created, "deleted": deleted})
    return out


REBOOT_MARKS = {"restored": "o", "started": "^", "failed": "X", "saved": "s", "off": "v"}


def reboot_phases(result: RunResult) -> list[dict[str, Any]]:
    """Each host reboot of the run on the host clock: when the VMs were stopped (their stop
    actions; the host back at once), and when the last automatic start was made. The stop
    is when a start's delay began: its start time less its delay (the earliest of them)."""
    out = []
    for e in result.events:
        if e.action != "reboot-host":
            continue
        starts = [(o.at, o.start_delay) for o in e.outcomes.values() if o.at is not None]
        if not starts:
            continue
        down = min(at - (delay or 0.0) for at, delay in starts)
        out.append({"down": down, "last_start": max(at for at, _ in starts)})
    return out


def _mark_reboots(
    ax: Any,
    result: RunResult,
    per_vm: dict[str, dict[str, list[float]]],
    colors: list[str],
    capacity: float,
) -> None:
    """A host reboot's phases on the memory panel: the stop (a dashed line), the automatic
    starts (shaded up to the last one), each VM's saved spell (state Saved in the timeline),
    and a mark where it was restored, started or failed to start (failures in red)."""
    names = list(per_vm)
    for i, name in enumerate(names):
        c = colors[i % len(colors)]
        saved = [
            sample.time
            for sample in result.timeline
            for v in sample.vms
            if v.name == name and v.state == "Saved"
        ]
        if saved:
            ax.axvspan(min(saved), max(saved), color=c, alpha=0.08)
    for k, phase in enumerate(reboot_phases(result)):
        ax.axvline(
            phase["down"],
            color="black",
            linestyle="-.",
            linewidth=1,
            label="host reboot: VMs stopped" if k == 0 else None,
        )
        ax.axvspan(
            phase["down"],
            max(phase["last_start"], phase["down"]),
            color="gold",
            alpha=0.25,
            label="automatic starts" if k == 0 else None,
        )
        ax.annotate(
            "host reboot",
            (phase["down"], capacity * 1.3),
            xytext=(-4, 0),
            textcoords="offset points",
            ha="right",
            va="center",
            fontsize="small",
        )
    x0, x1 = ax.get_xlim()
    for e in result.events:
        for name, o in e.outcomes.items():
            at = o.at
            if at is None:
                continue
            # Near the right edge the text goes to the left of its mark, inside the panel.
            left = x1 > x0 and (at - x0) / (x1 - x0) > 0.7
            i = names.index(name) if name in names else 0
            failed = o.result == "failed"
            y = capacity * (1.04 + 0.06 * i)
            ax.plot(
                [at],
                [y],
                marker=REBOOT_MARKS.get(o.result, "o"),
                color="red" if failed else colors[i % len(colors)],
                markersize=8 if failed else 6,
            )
            ax.annotate(
                f"{name} {'FAILED to start' if failed else o.result}",
                (at, y),
                xytext=(-6, 0) if left else (6, 0),
                textcoords="offset points",
                fontsize="small",
                ha="right" if left else "left",
                va="center",
                color="red" if failed else "black",
                fontweight="bold" if failed else "normal",
            )


def plot_run(result: RunResult, path: str) -> None:
    """Assigned memory and Smart Paging bytes per VM over time, and the boot times."""
    times, per_vm = _series(result)
    fig, (ax_mem, ax_sp, ax_boot) = plt.subplots(
        3, 1, figsize=(12, 10), gridspec_kw={"height_ratios": [3, 2, 2]}
    )
    s = result.scenario
    scale = f", scaled 1/{s['scale']:g}" if s.get("scale", 1) != 1 else ""
    fig.suptitle(f"vmmem run: {s['name']}{scale}")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    lives = file_lives(result)
    end_time = max([result.duration, *times], default=0.0)
    top = 0.0
    for i, (name, d) in enumerate(per_vm.items()):
        c = colors[i % len(colors)]
        ax_mem.plot(times, d["assigned"], color=c, label=f"{name} assigned")
        ax_mem.plot(times, d["demand"], color=c, linestyle=":", linewidth=1)
        # Sampled once a balancer tick, with the file's own start and end put in, so growth
        # starts and ends where it did; the exact peak is drawn over the file's life.
        mine = [life for life in lives if life["vm"] == name]
        points = list(zip(times, d["paging"], strict=True))
        points += [(life["created"], 0.0) for life in mine]
        points += [(life["deleted"], 0.0) for life in mine if life["deleted"] is not None]
        points.sort(key=lambda p: p[0])
        ax_sp.plot([p[0] for p in points], [p[1] for p in points], color=c, alpha=0.6)
        for k, life in enumerate(mine):
            until = life["deleted"] if life["deleted"] is not None else end_time
            ax_sp.axvspan(life["created"], until, color=c, alpha=0.07)
            ax_sp.plot(
                [life["created"], until],
                [life["peak"] / MB] * 2,
                color=c,
                linestyle="--",
                linewidth=1.5,
                label=name if k == 0 else None,
            )
            top = max(top, life["peak"] / MB)
        top = max(top, max(d["paging"], default=0))
    capacity = (s["host"]["memory_bytes"] - s["host"]["reserve_bytes"]) / MB
    if times:
        ax_mem.axhline(
            capacity, color="black", linestyle="--", linewidth=1, label="host memory for VMs"
        )
        total = [sum(d["assigned"][k] for d in per_vm.values()) for k in range(len(times))]
        ax_mem.plot(times, total, color="gray", linewidth=2, alpha=0.6, label="all VMs")
    for boot in result.storm_boots():
        ax_mem.axvline(boot.started_at, color="red", alpha=0.15)
        ax_sp.axvline(boot.started_at, color="red", alpha=0.15)
    _mark_reboots(ax_mem, result, per_vm, colors, capacity)
    ax_mem.set_ylim(0, capacity * 1.4)  # head room for the reboot's marks above the lines
    ax_mem.set_ylabel("assigned memory (MB)\n(dotted: demand)")
    # Beside the panel, not over it: nothing the run drew is hidden under the legend.
    ax_mem.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax_mem.grid(alpha=0.3)
    ax_sp.set_ylabel("Smart Paging (MB)\ndashed: exact peak,\nshaded: the file's life")
    ax_sp.set_xlabel("time (s)")
    ax_sp.grid(alpha=0.3)
    if lives or top:
        ax_sp.set_ylim(0, max(top, 1) * 1.35)
        if lives:
            ax_sp.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:  # an empty 0-1 MB axis would read as "a little"; say there was none
        ax_sp.set_ylim(0, 1)
        ax_sp.set_yticks([])
        ax_sp.text(
            0.5,
            0.5,
            "no Smart Paging in this run: no VM's memory went to a Smart Paging file",
            ha="center",
            va="center",
            transform=ax_sp.transAxes,
        )

    from vmmem.cli.render import FailedStart, boot_label, boot_rows

    rows = [row for row, _ in boot_rows(result)]
    labels = [f"{r.vm}\n{boot_label(result, r)}" for r in rows]
    x = range(len(rows))
    heights = [0.0 if isinstance(r, FailedStart) else r.boot_time or 0.0 for r in rows]
    ax_boot.bar(
        x,
        heights,
        color=[
            "tab:blue" if isinstance(r, FailedStart) or not r.smart_paging_peak_bytes else "tab:red"
            for r in rows
        ],
    )
    tallest = max(heights, default=0.0)
    for i, b in enumerate(rows):
        if isinstance(b, FailedStart):
            ax_boot.annotate(
                "failed\nto start",
                (i, tallest * 0.05),
                ha="center",
                va="bottom",
                fontsize="small",
                color="red",
                fontweight="bold",
            )
            continue
        if b.baseline:
            ax_boot.plot([i - 0.4, i + 0.4], [b.baseline] * 2, color="black")
        if b.slowdown:  # every bar: a slow boot without paging is worth reading too
            ax_boot.annotate(
                f"{b.slowdown:.1f} x",
                (i, max(b.boot_time or 0.0, b.baseline or 0.0)),
                ha="center",
                va="bottom",
                fontsize="small" if len(rows) <= 12 else "x-small",
            )
    ax_boot.set_ylim(0, max(tallest, 1e-3) * 1.2)  # room for the labels above the bars
    ax_boot.set_xticks(list(x), labels, fontsize="x-small")
    ax_boot.set_ylabel("boot time (s)\nred: Smart Paging;\nline: baseline;\nabove: x baseline")
    ax_boot.grid(alpha=0.3, axis="y")
    fig.text(0.01, 0.005, result.verdict(), fontsize="small", wrap=True)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _wrap_path(path: str, width: int = 18) -> str:
    """A path over lines of about `width` characters, broken after a '/' (paths have no
    spaces for textwrap to break at)."""
    lines = [""]
    for part in path.replace("/", "/\0").split("\0"):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
    return "\n".join(line for line in lines if line)


def plot_compare(cmp: CompareResult, path: str) -> None:
    """Boot time of the storm per location (and the baseline), and the fault-latency CDFs."""
    fig, (ax_bar, ax_cdf) = plt.subplots(1, 2, figsize=(12, 5))
    fig.suptitle("vmmem compare: the same boot storm, Smart Paging on each location")
    names, values, colors = [], [], []
    base = cmp.baseline.storm_summary().boot_time if cmp.baseline is not None else None
    if base:
        names.append("baseline\n(enough memory)")
        values.append(base)
        colors.append("tab:gray")
    for r in cmp.rows():
        if r.boot_time is None:
            continue
        kind = (
            "RAM" if r.ram_backed else {None: "?", True: "rotational", False: "SSD"}[r.rotational]
        )
        where = _wrap_path(r.location)
        names.append(f"{where}\n{r.device or r.fstype} ({kind})")
        values.append(r.boot_time)
        colors.append("tab:red" if r.rotational else "tab:blue")
    ax_bar.bar(range(len(values)), values, color=colors)
    ax_bar.set_xticks(range(len(values)), names, fontsize="small")
    ax_bar.set_ylabel("boot storm time (s)")
    ax_bar.grid(alpha=0.3, axis="y")
    for i, v in enumerate(values):
        ax_bar.annotate(f"{v:.2f} s", (i, v), ha="center", va="bottom", fontsize="small")
    for loc, run in cmp.runs.items():
        cdf = run.fault_latency_cdf
        if cdf.seconds:
            ax_cdf.step([s * 1e6 for s in cdf.seconds], cdf.fraction, where="post", label=loc)
    ax_cdf.set_xscale("log")
    ax_cdf.set_xlabel("fault latency (us): victim write-back + page-in")
    ax_cdf.set_ylabel("fraction of faults")
    ax_cdf.set_ylim(0, 1.02)
    ax_cdf.grid(alpha=0.3, which="both")
    if ax_cdf.lines:
        ax_cdf.legend(fontsize="small")
    else:
        ax_cdf.text(0.5, 0.5, "no page-ins measured", ha="center", transform=ax_cdf.transAxes)
    fig.text(0.01, 0.01, cmp.summary(), fontsize="small", wrap=True)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_spectrum(sp: SpectrumResult, path: str) -> None:
    """The same storm per guest: its slowdown against the guest's own baseline (bars), and the
    Smart Paging peak, measured and predicted. A compare grid: a bar per guest and location."""
    fig, (ax_slow, ax_peak) = plt.subplots(1, 2, figsize=(12, 5))
    scale = f" at --scale {sp.scale:g}" if sp.scale != 1 else ""
    fig.suptitle(f"vmmem {sp.command}: the same storm ({sp.scenario}{scale}) per guest")
    rows = sp.rows()
    guests = [r["guest"] for r in rows]
    if sp.compares:
        from vmmem.lab.spectrum import grid_slowdown

        locations = list(dict.fromkeys(c["location"] for r in rows for c in r["locations"]))
        width = 0.8 / max(1, len(locations))
        for j, loc in enumerate(locations):
            cells = [next((c for c in r["locations"] if c["location"] == loc), None) for r in rows]
            xs = [i + (j - (len(locations) - 1) / 2) * width for i in range(len(rows))]
            ax_slow.bar(xs, [grid_slowdown(c or {}) or 0 for c in cells], width, label=loc)
            ax_peak.bar(
                xs,
                [((c or {}).get("smart_paging_peak_bytes") or 0) / MB for c in cells],
                width,
                label=loc,
            )
        ax_slow.legend(fontsize="small")
        ax_peak.legend(fontsize="small")
    else:
        slow = [r["slowdown"] or 0 for r in rows]
        ax_slow.bar(range(len(rows)), slow, color="tab:red")
        for i, v in enumerate(slow):
            ax_slow.annotate(f"{v:.2f} x", (i, v), ha="center", va="bottom", fontsize="small")
        x = np.arange(len(rows))
        measured = [(r["smart_paging_peak_bytes"] or 0) / MB for r in rows]
        predicted = [(r["predicted_smart_paging_peak_bytes"] or 0) / MB for r in rows]
        ax_peak.bar(x - 0.2, measured, 0.4, label="measured", color="tab:blue")
        ax_peak.bar(x + 0.2, predicted, 0.4, label="predicted (vmmem plan)", color="tab:gray")
        ax_peak.legend(fontsize="small")
    for ax in (ax_slow, ax_peak):
        ax.set_xticks(range(len(guests)), guests, fontsize="small", rotation=15, ha="right")
        ax.grid(alpha=0.3, axis="y")
    ax_slow.axhline(1.0, color="black", linewidth=0.8)
    ax_slow.set_ylabel("storm boot / its baseline (x)")
    ax_slow.set_title("slowdown", fontsize="medium")
    ax_peak.set_ylabel("Smart Paging peak, all VMs (MB)")
    ax_peak.set_title("Smart Paging peak", fontsize="medium")
    fig.text(0.01, 0.01, sp.summary(), fontsize="small", wrap=True)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _spread_bars(ax: Any, names: list[str], spreads: list[Any], ylabel: str) -> None:
    """Bars at the mean, error bars of one standard deviation, min and max as markers."""
    xs = range(len(spreads))
    means = [s.mean for s in spreads]
    ax.bar(xs, means, yerr=[s.sd for s in spreads], capsize=6, color="tab:blue", alpha=0.7,
           label="mean +- sd")  # fmt: skip
    ax.scatter(xs, [s.min for s in spreads], marker="v", color="black", label="min", zorder=3)
    ax.scatter(xs, [s.max for s in spreads], marker="^", color="tab:red", label="max", zorder=3)
    ax.set_xticks(list(xs), names, fontsize="small")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize="small")
    for i, s in enumerate(spreads):
        ax.annotate(f"{s.mean:.2f} +- {s.sd:.2f}", (i, s.max), ha="center", va="bottom",
                    fontsize="small")  # fmt: skip


def plot_run_spread(rep: Any, path: str) -> None:
    """`vmmem run --runs N`: the storm's boot time and its baseline over the runs."""
    st = rep.stats()
    pairs = [(n, getattr(st, k)) for n, k in (("storm", "boot_time"), ("baseline", "baseline"))]
    pairs = [(n, s) for n, s in pairs if s is not None]
    fig, ax = plt.subplots(figsize=(7, 5))
    fig.suptitle(f"vmmem run: the boot storm over {st.runs} runs")
    if pairs:
        _spread_bars(ax, [n for n, _ in pairs], [s for _, s in pairs], "boot time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_compare_spread(rep: Any, path: str) -> None:
    """`vmmem compare --runs N`: the storm's boot time per location (and the baseline) over
    the runs, and the verdict that respects the spread."""
    cs = rep.stats()
    pairs = ([("baseline\n(enough memory)", cs.baseline.boot_time)] if cs.baseline else []) + [
        (_wrap_path(x.location), x.stats.boot_time) for x in cs.locations
    ]
    pairs = [(n, s) for n, s in pairs if s is not None]
    n = cs.locations[0].stats.runs if cs.locations else 0
    fig, ax = plt.subplots(figsize=(9, 5))
    fig.suptitle(f"vmmem compare: the same boot storm over {n} runs")
    if pairs:
        _spread_bars(ax, [n for n, _ in pairs], [s for _, s in pairs], "boot storm time (s)")
    fig.text(0.01, 0.01, cs.verdict, fontsize="small", wrap=True)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
