"""``vmmem sweep SWEEP.toml``: many storms in one table, on this machine or a Dask cluster.

The lab does the work (`vmmem.lab.sweep`); this file checks the options, shows progress (rich
on a terminal, a line per cell otherwise, JSON lines with --json), writes the summaries and
the plot, and maps outcomes to exit codes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from vmmem.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    CliFailure,
    cli,
    err_console,
    out_console,
    write_output,
)
from vmmem.lab.progress import ProgressSink
from vmmem.lab.sweep import Cell, CellResult, SweepProgress

if TYPE_CHECKING:
    from vmmem.lab.sweep import Sweep

ROWS = "rows.jsonl"
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
PLOT = "sweep.png"


def _seconds(s: float | None) -> str:
    if s is None:
        return "?"
    from vmmem.sizes import format_duration

    return str(format_duration(s))


class _EventSink(ProgressSink):
    """A run's events, shown in the sweep's progress line."""

    def __init__(self, owner: _Progress, cell: Cell, run: int, runs: int) -> None:
        self.owner, self.cell, self.run, self.runs = owner, cell, run, runs

    def event_started(self, index: int, count: int, description: str) -> None:
        self.owner.status(
            f"cell {self.cell.index + 1} ({self.cell.label()}), run {self.run + 1}/{self.runs}: "
            f"event {index + 1}/{count}, {description}"
        )


class _Progress(SweepProgress):
    """Cells done and left with an ETA: a rich progress bar on a terminal (stderr), a line
    per cell otherwise, or JSON lines on stdout (--json)."""

    def __init__(self, as_json: bool, quiet: bool) -> None:
        self.as_json, self.quiet = as_json, quiet
        self.console = err_console()
        self.bar: Any = None
        self.task: Any = None
        self.total = 0
        self.t0 = time.monotonic()

    def emit(self, record: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(record, default=str) + "\n")
        sys.stdout.flush()

    def start(self, total: int, skipped: int, workers: int, eta: float | None = None) -> None:
        self.total = total
        if self.as_json:
            self.emit(
                {
                    "event": "start",
                    "cells": total,
                    "skipped": skipped,
                    "workers": workers,
                    "eta_seconds": eta,
                }
            )
            return
        if self.quiet:
            return
        where = f" on {workers} worker(s)" if workers > 1 else ""
        self.console.print(
            f"{total} cell(s){where}; {skipped} already in the table, skipped; "
            f"ETA {_seconds(eta)} (the planner's rough estimate until cells are measured)",
            highlight=False,
            soft_wrap=True,
        )
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("cells, ETA {task.fields[eta]}"),
                console=self.console,
                transient=True,
            )
            self.task = self.bar.add_task(
                "starting", total=total, completed=skipped, eta=_seconds(eta)
            )
            self.bar.start()

    def status(self, text: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=text[: max(20, self.console.width - 40)])

    def cell_started(self, cell: Cell, machine: str) -> None:
        self.status(f"cell {cell.index + 1}: {cell.label()}")

    def run_sink(self, cell: Cell, run: int, runs: int) -> ProgressSink | None:
        return _EventSink(self, cell, run, runs) if self.bar is not None else None

    def cell_done(
        self, cell: Cell, result: CellResult, done: int, left: int, eta: float | None
    ) -> None:
        slow = [r["figures"]["slowdown"] for r in result.rows if r["figures"].get("slowdown")]
        mean = sum(slow) / len(slow) if slow else None
        if self.as_json:
            self.emit(
                {
                    "event": "cell_done",
                    "cell": cell.id,
                    "index": cell.index,
                    "label": cell.label(),
                    "machine": result.machine,
                    "outcome": result.outcome,
                    "error": result.error,
                    "rows": len(result.rows),
                    "slowdown_mean": mean,
                    "seconds": result.seconds,
                    "done": done,
                    "left": left,
                    "eta_seconds": eta,
                }
            )
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=done, eta=_seconds(eta))
        if self.quiet:
            return
        what = f"slowdown {mean:.2f} x" if mean is not None else (result.error or result.outcome)
        line = (
            f"cell {done}/{self.total} done ({cell.label()}, on {result.machine}): {what}, "
            f"{len(result.rows)} run(s) in {_seconds(result.seconds)}; {left} left, "
            f"ETA {_seconds(eta)}"
        )
        self.console.print(
            line, highlight=False, soft_wrap=True, style=None if result.rows else "yellow"
        )

    def message(self, text: str) -> None:
        if self.as_json:
            self.emit({"event": "message", "text": text})
        elif not self.quiet:
            self.console.print(text, style="bold yellow", highlight=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


@cli.command("sweep")
@click.argument("sweep_file", type=click.Path(dir_okay=False), metavar="SWEEP.toml")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Folder of the table (rows.jsonl), summary.csv, summary.md and sweep.png "
    "(default: ./NAME-sweep, NAME from the sweep file). Made if missing.",
)
@click.option(
    "--plan",
    "plan_only",
    is_flag=True,
    help="List the cells, what each needs "
    "(worst-case disk and memory) and an estimate of the time; run nothing.",
)
@click.option(
    "--scheduler",
    metavar="tcp://HOST:PORT",
    help="Run the cells on this Dask cluster's workers that offer the resource vmmem "
    '(dask worker --resources vmmem=1 --nthreads 1); needs pip install "vmmem[cluster]".',
)
@click.option(
    "--mode",
    type=click.Choice(["spread", "every"]),
    default="spread",
    show_default=True,
    help="On a cluster: spread the cells over the workers (throughput), or run every cell "
    "on every worker (compare machines).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Progress and the summary as JSON lines on stdout (with --plan: the plan as JSON).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress, only the summary.")
def sweep_cmd(
    sweep_file: str,
    out_dir: str | None,
    plan_only: bool,
    scheduler: str | None,
    mode: str,
    as_json: bool,
    quiet: bool,
) -> None:
    """Run a sweep: a base scenario over axes of values, every cell a few times, one table.

    The sweep file (TOML, docs/SWEEP.md) names a base scenario (a file or
    "article"), axes (guest, host_memory, vm_count, paging_dir, vhd_dir,
    backend, scale) or an explicit list of [[cell]], and runs per cell. It is
    checked whole before anything runs. Each run's row (inputs, machine,
    device facts, every figure `vmmem run` reports) is appended to
    DIR/rows.jsonl a cell at a time; run the same command again and the
    cells already there are skipped. summary.csv and summary.md give each
    cell's mean +- standard deviation, min and max; sweep.png the slowdown
    against the first swept axis.

    \b
    Examples:
      vmmem sweep memory-x-guest.toml --plan       the cells, disk, memory, time
      vmmem sweep memory-x-guest.toml              run them here, one by one
      vmmem sweep memory-x-guest.toml --scheduler tcp://10.0.0.5:8786
      vmmem sweep disks.toml --scheduler tcp://10.0.0.5:8786 --mode every

    Folders named by role (paging_dir = "locations.ssd") come from each
    machine's settings file ($VMMEM_WORKER_CONFIG, else
    ~/.config/vmmem/worker.toml), else from the sweep's [locations].
    """
    from vmmem.lab.scenario import ScenarioError
    from vmmem.lab.sweep import load_sweep

    try:
        sweep = load_sweep(sweep_file)
    except ScenarioError as e:
        raise CliFailure(str(e), EXIT_USAGE) from None
    out = out_dir or f"{sweep.name}-sweep"
    if scheduler is not None and not scheduler.strip():
        raise CliFailure("--scheduler: give the scheduler's address, tcp://HOST:PORT", EXIT_USAGE)
    if mode != "spread" and scheduler is None:
        raise CliFailure("--mode every goes with --scheduler (it compares workers)", EXIT_USAGE)
    if plan_only:
        _plan(sweep, out, as_json)
        sys.exit(EXIT_OK)
    _check_out(out)
    if scheduler is None:
        _check_local(sweep, out)
    progress = _Progress(as_json, quiet)
    rows_path = os.path.join(out, ROWS)
    from vmmem.lab.sweep import TableInUse, run_cluster, run_local

    try:
        if scheduler is None:
            outcome = run_local(sweep, rows_path, progress)
        else:
            outcome = run_cluster(sweep, rows_path, scheduler, mode=mode, progress=progress)
    except TableInUse as e:
        raise CliFailure(str(e), EXIT_REFUSED) from None
    except (RuntimeError, OSError) as e:
        where = f"--scheduler {scheduler}: " if scheduler else ""
        raise CliFailure(f"{where}{e}", EXIT_FAILED) from None
    finally:
        progress.close()
        # What is in the table, also after Ctrl-C: the summaries of the cells done.
        if os.path.exists(rows_path):
            _write_summaries(sweep, out, mode == "every" and scheduler is not None, as_json)
    for msg in outcome.refused:
        click.echo(f"vmmem: error: {msg}", err=True)
    for msg in outcome.errors:
        click.echo(f"vmmem: error: {msg}", err=True)
    if outcome.interrupted:
        raise KeyboardInterrupt
    if outcome.refused:
        sys.exit(EXIT_REFUSED)
    sys.exit(EXIT_FAILED if outcome.errors else EXIT_OK)


def _check_out(out: str) -> None:
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise CliFailure(f"--out {out}: cannot make the folder: {e.strerror}", EXIT_USAGE) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise CliFailure(f"--out {out}: the folder is not writable", EXIT_USAGE)
    rows = os.path.join(out, ROWS)
    if os.path.lexists(rows) and not os.path.isfile(rows):
        raise CliFailure(f"--out {out}: {rows} exists and is not a regular file", EXIT_USAGE)


def _check_local(sweep: Sweep, out: str) -> None:
    """Every cell still to run checked on this machine before the first starts: a role it
    does not know is exit 2, a folder that cannot take the cell exit 3."""
    from vmmem.lab.runner import LocationRefused
    from vmmem.lab.sweep import SweepError, check_cell_locations, done_cells, read_rows
    from vmmem.lab.sweep import worker_settings as settings_of

    try:
        settings = settings_of()
    except SweepError as e:
        raise CliFailure(str(e), EXIT_USAGE) from None
    done = done_cells(read_rows(os.path.join(out, ROWS)), per_machine=False)
    warned: set[str] = set()
    for c in sweep.cells:
        if (c.id, "") in done:
            continue
        try:
            for w in check_cell_locations(sweep.spec(c), settings):
                if w not in warned:
                    warned.add(w)
                    err_console().print(f"[bold yellow]warning:[/bold yellow] {w}")
        except SweepError as e:
            raise CliFailure(str(e), EXIT_USAGE) from None
        except LocationRefused as e:
            raise CliFailure(f"cell {c.index + 1} ({c.label()}): {e}", EXIT_REFUSED) from None


def _plan(sweep: Sweep, out: str, as_json: bool) -> None:
    from rich.table import Table

    from vmmem.lab.sweep import SweepError, cell_plan, done_cells, read_rows, show_input
    from vmmem.lab.sweep import worker_settings as settings_of
    from vmmem.sizes import format_mb

    try:
        settings = settings_of()
    except SweepError as e:
        raise CliFailure(str(e), EXIT_USAGE) from None
    done = done_cells(read_rows(os.path.join(out, ROWS)), per_machine=False)
    cells = []
    for c in sweep.cells:
        p = cell_plan(sweep.spec(c), settings)
        p["done"] = (c.id, "") in done
        cells.append(p)
    todo = [p for p in cells if not p["done"]]
    total = sum(p.get("seconds_estimate") or 0.0 for p in todo)
    if as_json:
        data = {
            "kind": "vmmem-sweep-plan",
            "sweep": sweep.name,
            "source": sweep.source,
            "scenario": sweep.scenario_ref,
            "runs": sweep.runs,
            "cells": cells,
            "todo": len(todo),
            "seconds_estimate": total,
        }
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        return
    con = out_console()
    t = Table(title=f"sweep {sweep.name}: {len(cells)} cells x {sweep.runs} run(s)")
    for col in (
        "#",
        "cell",
        *sweep.swept,
        "disk (worst case)",
        "memory",
        "SP planned",
        "time",
        "status",
    ):
        t.add_column(col, justify="right" if col in ("#", "memory", "time") else "left")
    for p, c in zip(cells, sweep.cells, strict=True):
        disk = ", ".join(f"{format_mb(n)} on {m}" for m, n in (p.get("disk_bytes") or {}).items())
        if p["done"]:
            status = "done"
        elif p.get("refused"):
            status = "refused: " + p["refused"]
        elif p.get("start_failures"):
            status = f"to run; {', '.join(p['start_failures'])} cannot start (plan)"
        else:
            status = "to run"
        t.add_row(
            str(c.index + 1),
            c.id,
            *[show_input(k, c.inputs.get(k)) for k in sweep.swept],
            disk or "-",
            format_mb(p["memory_bytes"]) if p.get("memory_bytes") else "-",
            format_mb(p["smart_paging_planned_bytes"]) if "memory_bytes" in p else "-",
            _seconds(p.get("seconds_estimate")),
            status,
        )
    con.print(t)
    con.print(
        f"{len(todo)} of {len(cells)} cell(s) to run, about {_seconds(total)} one after another "
        "on this machine (a rough estimate; the run's ETA uses measured cells); on a cluster of "
        "N workers about 1/N of it. Disk: every dynamic VM's Smart Paging file as large as its "
        "Startup RAM plus the virtual disks still to make, plus 64 MB; memory: the host's, "
        "committed as RAM. Nothing was run.",
        highlight=False,
    )


def _write_summaries(sweep: Sweep, out: str, per_machine: bool, as_json: bool) -> None:
    from vmmem.lab.sweep import read_rows, summarize, summary_csv, summary_markdown

    rows = read_rows(os.path.join(out, ROWS))
    summary = summarize(sweep, rows, per_machine=per_machine)
    csv_text, md_text = summary_csv(sweep, summary), summary_markdown(sweep, summary)

    def text_writer(text: str) -> Any:
        def write(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)

        return write

    write_output("--out", os.path.join(out, SUMMARY_CSV), text_writer(csv_text))
    write_output("--out", os.path.join(out, SUMMARY_MD), text_writer(md_text))
    if summary:
        write_output("--out", os.path.join(out, PLOT), lambda p: plot_sweep(sweep, summary, p))
    if as_json:
        sys.stdout.write(
            json.dumps({"event": "summary", "out": out, "cells": summary}, default=str) + "\n"
        )
    else:
        out_console().print(md_text, highlight=False, markup=False)
        err_console().print(
            f"wrote {os.path.join(out, ROWS)}, {SUMMARY_CSV}, {SUMMARY_MD}"
            + (f", {PLOT}" if summary else ""),
            style="dim",
            highlight=False,
        )


NUMERIC_AXES = ("host_memory", "vm_count", "scale")


def plot_sweep(sweep: Sweep, summary: list[dict[str, Any]], path: str) -> None:
    """Slowdown (mean, +- one standard deviation) against the first numeric swept axis (else
    the first swept axis), one line per value of the other swept keys (guest, location ...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    swept = list(sweep.swept)
    xkey = next((k for k in NUMERIC_AXES if k in swept), swept[0] if swept else None)
    others = [k for k in swept if k != xkey]
    machines = len({e["machines"] for e in summary}) > 1
    cell_by_id = {c.id: c for c in sweep.cells}
    lines: dict[str, list[tuple[Any, float, float, bool]]] = {}
    for e in summary:
        if e.get("slowdown_mean") is None:
            continue
        c = cell_by_id[e["cell"]]
        name = ", ".join(f"{k}={e[k]}" for k in others)
        if machines:
            name = (name + ", " if name else "") + f"on {e['machines']}"
        x = c.inputs.get(xkey) if xkey else 0
        if xkey == "host_memory" and isinstance(x, int):
            x = x // 2**20
        lines.setdefault(name or "slowdown", []).append(
            (
                x,
                e["slowdown_mean"],
                e.get("slowdown_std") or 0.0,
                bool(e.get("smart_paging_peak_bytes_max")),
            )
        )
    fig, ax = plt.subplots(figsize=(9, 5.5))
    categorical = xkey is not None and xkey not in NUMERIC_AXES
    ticks: list[Any] = []
    hollow = False
    for pts in lines.values():
        for x, *_ in pts:
            if x not in ticks:
                ticks.append(x)
    for name, pts in lines.items():
        pts.sort(key=lambda p: ticks.index(p[0]) if categorical else p[0])
        xs = [ticks.index(p[0]) if categorical else p[0] for p in pts]
        bars = ax.errorbar(
            xs, [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=4, label=name
        )
        # Hollow: no run of the cell paged, so its slowdown is not Smart Paging's.
        dry = [(x, p[1]) for x, p in zip(xs, pts, strict=True) if not p[3]]
        if dry:
            ax.plot(
                [d[0] for d in dry],
                [d[1] for d in dry],
                "o",
                color=bars[0].get_color(),
                markerfacecolor="white",
                zorder=3,
            )
            hollow = True
    if categorical:
        ax.set_xticks(range(len(ticks)), [str(t) for t in ticks])
        ax.set_xlim(-0.5, len(ticks) - 0.5)
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
    label = {
        "host_memory": "host memory for VMs (MB, full size)",
        "vm_count": "VMs",
        "scale": "--scale",
    }.get(xkey or "", xkey or "")
    ax.set_xlabel(label)
    ax.set_ylabel("storm slowdown (slowest restart boot / its baseline)")
    runs = max((e["runs"] for e in summary), default=0)
    ax.set_title(
        f"sweep {sweep.name}: {sweep.scenario_ref}, mean +- standard deviation of {runs} run(s)"
    )
    ax.grid(alpha=0.3)
    if hollow:
        ax.text(
            0.01,
            0.01,
            "hollow marks: no Smart Paging in any run of that cell",
            transform=ax.transAxes,
            fontsize="small",
            color="dimgrey",
        )
    if len(lines) > 1 or others:
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
