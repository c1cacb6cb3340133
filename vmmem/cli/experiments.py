"""Commands that run and measure: run, compare, and show (a saved result again)."""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from vmmem.cli import render
from vmmem.cli.common import (
    EXIT_FOR_OUTCOME,
    EXIT_REFUSED,
    EXIT_USAGE,
    CliFailure,
    check_outputs,
    cli,
    err_console,
    load_for_cli,
    load_scenarios,
    out_console,
    plan_for_cli,
    processors_option,
    scale_option,
    scenario_argument,
    show_warning,
    write_json,
    write_output,
)
from vmmem.errors import VmmemWarning
from vmmem.lab.progress import ProgressSink, VMProgress
from vmmem.lab.scenario import Scenario

if TYPE_CHECKING:
    from vmmem.lab.plan import Plan
    from vmmem.lab.results import CompareResult, RunResult

# ---------------------------------------------------------------------------------------------
# run


class _LiveProgress(ProgressSink):
    """Live per-VM table on a terminal (stderr); one line per event otherwise."""

    def __init__(self, quiet: bool = False):
        from rich.live import Live

        self.console = err_console()
        self.quiet = quiet
        self.live = None
        self.title = ""
        if not quiet and self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=8, transient=True)
            self.live.start()

    def event_started(self, index: int, count: int, description: str) -> None:
        self.title = f"event {index + 1}/{count}: {description}"
        if self.live is None and not self.quiet:
            self.console.print(f"{self.title} ...", highlight=False)

    def event_done(self, index: int, description: str, took: float, note: str = "") -> None:
        if not self.quiet:
            extra = f" ({note})" if note else ""
            self.console.print(
                f"  done: {description} in {render.seconds(took)}{extra}",
                style="dim",
                highlight=False,
            )

    def update(self, vms: list[VMProgress], available: int, elapsed: float) -> None:
        if self.live is not None:
            self.live.update(
                render.progress_table(vms, available, elapsed, self.title, self.console.width)
            )

    def message(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, style="bold yellow", highlight=False)

    def warning(self, warning: VmmemWarning) -> None:
        show_warning(warning)  # also with --quiet: a warning is not progress

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


paging_dir_option = click.option(
    "--paging-dir",
    type=click.Path(),  # checked (exit 3) with the other folders, not by click (exit 2)
    metavar="DIR",
    help="Put every VM's Smart Paging file in DIR (Set-VM -SmartPagingFilePath on all; made "
    "if missing, removed at the end if empty). Default: each VM's folder under ./vmmem-vms, "
    "as Hyper-V keeps them with the VM.",
)
backend_option = click.option(
    "--backend",
    type=click.Choice(["direct", "mmap"]),
    default="direct",
    show_default=True,
    help="How paging reaches the disk: 'direct' reads and writes with O_DIRECT; 'mmap' reads "
    "through a shared mapping of the file (each page dropped from the page cache after) and "
    "writes with O_DIRECT.",
)


def _execute(
    s: Scenario, plan: Plan, paging_dir: str | None, backend: str, quiet: bool, label: str = ""
) -> RunResult:
    """Run one scenario with live progress; LocationRefused becomes exit code 3."""
    from vmmem.lab.locations import LocationRefused
    from vmmem.lab.runner import run_scenario
    from vmmem.workspace import SharedFolderWarning

    sink = _LiveProgress(quiet=quiet)
    if label and not quiet:
        sink.console.print(f"[bold]{label}[/bold]")
    try:
        with warnings.catch_warnings():
            # Shown once already, as the run's own warning, by the location checks.
            warnings.simplefilter("ignore", SharedFolderWarning)
            return run_scenario(s, paging_dir=paging_dir, progress=sink, backend=backend, plan=plan)
    except LocationRefused as e:
        raise CliFailure(str(e), EXIT_REFUSED) from None
    finally:
        sink.close()


def guest_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--guest, --guest-ips and --vhd-dir: which guest boots, and where its disk is."""
    f = click.option(
        "--vhd-dir",
        type=click.Path(),  # checked (exit 3) with the other folders, not by click (exit 2)
        metavar="DIR",
        help="Put every VM's virtual disk in DIR (New-VHD -Path on all; made once, kept for "
        "later runs; DIR is made if missing). Default: each VM's folder under ./vmmem-vms, "
        "beside its Smart Paging file unless --paging-dir moves that.",
    )(f)
    f = click.option(
        "--guest-ips",
        type=click.FloatRange(min=1e6, max=1e12),
        metavar="N",
        help="Guest instructions per second for a recorded guest (default 2e9, measured on "
        "this machine class: docs/GUESTS.md).",
    )(f)
    return click.option(
        "--guest",
        metavar="NAME",
        help="Every VM boots this guest (vmmem guests): a shipped recorded boot (debian-12, "
        "busybox), a trace file from vmmem record-boot, a Windows model (windows-model, "
        "windows-model-zeroing), or synthetic-boot (the default boot, also for VMs whose "
        "scenario names a guest). A comma list (a,b,c) or 'all' (every guest vmmem guests "
        "lists) runs the same storm once per guest: one table, a row each.",
    )(f)


def apply_guest_options(
    s: Scenario, guest: str | None, guest_ips: float | None, vhd_dir: str | None
) -> Scenario:
    """The scenario with --guest/--guest-ips/--vhd-dir applied, checked before anything runs."""
    if guest_ips is not None and guest is None:
        raise CliFailure("--guest-ips goes with --guest", EXIT_USAGE)
    from vmmem.guests import SYNTHETIC_BOOT
    from vmmem.hyperv.workloads import WINDOWS_MODELS

    if guest == SYNTHETIC_BOOT or guest in WINDOWS_MODELS:  # modelled boots (`vmmem guests`)
        if guest_ips is not None:
            raise CliFailure(
                f"--guest-ips is for a recorded guest; {guest} charges its CPU per page "
                "(or the scenario's boot_seconds)",
                EXIT_USAGE,
            )
    elif guest is not None:
        from vmmem.errors import GuestTraceError
        from vmmem.guests import load_guest

        try:
            load_guest(guest)
        except GuestTraceError as e:
            raise CliFailure(f"--guest: {e}", EXIT_USAGE) from None
    # --vhd-dir is checked (exit 3) with the run's other folders, by its one location check.
    return _guest_applied(s, guest, guest_ips, vhd_dir)


def _guest_applied(
    s: Scenario, guest: str | None, guest_ips: float | None, vhd_dir: str | None
) -> Scenario:
    """The options applied to `s`, once apply_guest_options has checked them."""
    from vmmem.guests import SYNTHETIC_BOOT

    if guest == SYNTHETIC_BOOT:
        s = s.with_guest(None)
    elif guest is not None:
        s = s.with_guest(guest, guest_ips)
    if vhd_dir is not None:
        s = s.with_vhd_dir(os.path.abspath(vhd_dir))
    return s


def _load_and_plan(
    scenario: str | None,
    scale: float,
    guest: str | None,
    guest_ips: float | None,
    vhd_dir: str | None,
    processors: int | None = None,
) -> tuple[Scenario, Plan]:
    """The scenario as the command runs it, and its plan, planned once (and the full-size
    scenario once more when scaled, for the scale warnings)."""
    full, s = load_scenarios(scenario, scale, processors)
    scaled = apply_guest_options(s, guest, guest_ips, vhd_dir)
    if s is not full:
        full = _guest_applied(full, guest, guest_ips, vhd_dir)
    else:
        full = scaled
    return scaled, plan_for_cli(full, scaled)


def json_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--json FILE: what the command measured, as JSON (docs/json-schema.json)."""
    return click.option(
        "--json", "json_path", type=click.Path(dir_okay=False), metavar="FILE", help=help
    )


def plot_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--plot FILE.png: a picture of it (any format matplotlib writes)."""
    return click.option(
        "--plot", "plot_path", type=click.Path(dir_okay=False), metavar="FILE.png", help=help
    )


def repeat_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--runs N, --warmup K and the table exports (docs/CLI.md, "Repeated runs")."""
    options = [
        click.option(
            "--runs",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            metavar="N",
            help="Run N times; each figure becomes mean +- sd with min and max.",
        ),
        click.option(
            "--warmup",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            metavar="K",
            help="Run K times first and discard them (caches filled, as hyperfine's --warmup).",
        ),
        click.option(
            "--export-markdown",
            "export_markdown",
            type=click.Path(dir_okay=False),
            metavar="FILE",
            help="Write the table as Markdown (for a ticket).",
        ),
        click.option(
            "--export-csv",
            "export_csv",
            type=click.Path(dir_okay=False),
            metavar="FILE",
            help="Write the table as CSV (for a spreadsheet).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _exports(markdown: str | None, csv: str | None) -> dict[str, str | None]:
    return {"--export-markdown": markdown, "--export-csv": csv}


def _write_exports(table: render.ExportTable, markdown: str | None, csv: str | None) -> None:
    for option, path, write in (
        ("--export-markdown", markdown, render.write_markdown),
        ("--export-csv", csv, render.write_csv),
    ):
        if path:
            write_output(option, path, lambda tmp, w=write: w(table, tmp))  # type: ignore[misc]
            err_console().print(f"wrote {path}", style="dim", highlight=False)


def _repeat_label(i: int, warm: bool, runs: int, warmup: int) -> str:
    if warm:
        return f"warm-up {i + 1}/{warmup} (discarded)"
    return f"run {i - warmup + 1}/{runs}" if runs > 1 or warmup else ""


wide_option = click.option(
    "--wide", is_flag=True, help="Show every column of the tables (the default fits 120 columns)."
)


@cli.command("run")
@scenario_argument
@scale_option
@paging_dir_option
@json_option(
    "Write every figure, the settings, and the machine and device facts to FILE "
    "(layout: docs/json-schema.json)."
)
@plot_option("Draw assigned memory and Smart Paging bytes per VM over time, and the boot times.")
@guest_options
@processors_option
@backend_option
@repeat_options
@wide_option
@click.option("-q", "--quiet", is_flag=True, help="No live progress, only the result.")
def run_cmd(
    scenario: str | None,
    scale: float,
    paging_dir: str | None,
    json_path: str | None,
    plot_path: str | None,
    guest: str | None,
    guest_ips: float | None,
    vhd_dir: str | None,
    processors: int | None,
    backend: str,
    runs: int,
    warmup: int,
    export_markdown: str | None,
    export_csv: str | None,
    wide: bool,
    quiet: bool,
) -> None:
    """Run a boot storm for real and measure what Smart Paging costs.

    Builds the host (its memory committed as real RAM), starts the VMs one
    by one, lets them balloon down, restarts them as the scenario says, and
    measures each boot against its full-memory baseline. Smart Paging files
    are real files, their I/O reaches the disk (O_DIRECT) and the device's
    own counters confirm it. Shows per VM the phase, assigned memory, Smart
    Paging bytes, elapsed time and ETA while it runs.

    With neither SCENARIO nor --guest, the article's storm runs once per
    guest (every guest vmmem guests lists) at --scale 8 unless --scale is
    given, about a minute in all, and one table shows them side by side.

    \b
    Examples:
      vmmem run                                    every guest, the article at 1/8
      vmmem run --guest busybox,debian-12 --scale 4
      vmmem run --guest synthetic-boot --scale 4   the article, quarter size, one guest
      vmmem run --paging-dir /mnt/hdd/sp --json run.json --plot run.png
      vmmem run examples/mixed-priority.toml --scale 2
      vmmem run --guest debian-12 --scale 4        a recorded Debian 12 boot in every VM
      vmmem run examples/mixed-priority.toml --scale 8 --runs 5 --export-csv boots.csv

    Refuses a folder without room for the worst case (every VM's Startup
    RAM) and warns for RAM-backed ones (tmpfs: nothing is measured). Ctrl-C
    stops cleanly: partial results are printed and no file is left behind.
    """
    check_outputs(json_path, plot_path, _exports(export_markdown, export_csv))
    from vmmem.cli import spectrum
    from vmmem.lab.repeat import RepeatedRun, repeat

    several = spectrum.spectrum_guests(scenario, guest, scale, guest_ips)
    if several is not None:  # the same storm per guest (docs/CLI.md)
        if runs != 1 or warmup or export_markdown or export_csv:
            raise CliFailure(
                "--runs, --warmup and the exports repeat one storm: give a SCENARIO or one "
                "--guest (the per-guest spectrum runs each guest once)",
                EXIT_USAGE,
            )
        guests, scale = several
        spectrum.run_spectrum(
            scenario, scale, guests, guest_ips, vhd_dir, paging_dir, backend, quiet,
            json_path, plot_path, processors,
        )  # fmt: skip
    s, plan = _load_and_plan(scenario, scale, guest, guest_ips, vhd_dir, processors)
    rep = RepeatedRun(
        repeat(
            lambda i, warm: _execute(
                s, plan, paging_dir, backend, quiet, _repeat_label(i, warm, runs, warmup)
            ),
            runs,
            warmup,
            stop=lambda r: r.outcome in ("failed", "interrupted"),
        ),
        warmup,
    )
    result = rep.runs[0]
    render.run_report(out_console(), result, wide=wide)
    if len(rep.runs) > 1:
        render.run_stats_report(out_console(), rep.stats())
    _write_exports(render.run_export(rep), export_markdown, export_csv)
    _save(
        rep.to_dict(),
        json_path,
        plot_path,
        lambda path: _plot_run(result, path) if len(rep.runs) == 1 else _plot_spread_run(rep, path),
    )
    sys.exit(EXIT_FOR_OUTCOME[rep.outcome])


def _plot_spread_run(rep: Any, path: str) -> None:
    from vmmem.cli.plots import plot_run_spread

    plot_run_spread(rep, path)


def _plot_run(result: RunResult, path: str) -> None:
    from vmmem.cli.plots import plot_run

    plot_run(result, path)


def _save(
    data: dict[str, Any], json_path: str | None, plot_path: str | None, plot: Callable[[str], None]
) -> None:
    """Write the JSON and the plot (also for partial results)."""
    if json_path:
        write_json(json_path, data)
        err_console().print(f"wrote {json_path}", style="dim", highlight=False)
    if plot_path:
        write_output("--plot", plot_path, plot)
        err_console().print(f"wrote {plot_path}", style="dim", highlight=False)


# ---------------------------------------------------------------------------------------------
# compare


@cli.command("compare")
@click.argument(
    "paths",
    nargs=-1,
    required=True,
    type=click.Path(),
    metavar="DIR [DIR]... [SCENARIO.toml]",
)
@scale_option
@json_option("Write every run's figures, the table and the summary to FILE.")
@plot_option("Draw the boot time per location and the fault-latency CDFs.")
@click.option(
    "--no-baseline",
    is_flag=True,
    help="Skip the baseline run (the same storm on a host with enough memory).",
)
@guest_options
@processors_option
@backend_option
@repeat_options
@wide_option
@click.option("-q", "--quiet", is_flag=True, help="No live progress, only the result.")
def compare_cmd(
    paths: tuple[str, ...],
    scale: float,
    json_path: str | None,
    plot_path: str | None,
    no_baseline: bool,
    guest: str | None,
    guest_ips: float | None,
    vhd_dir: str | None,
    processors: int | None,
    backend: str,
    runs: int,
    warmup: int,
    export_markdown: str | None,
    export_csv: str | None,
    wide: bool,
    quiet: bool,
) -> None:
    """The same boot storm with the Smart Paging files on each DIR in turn.

    Runs the scenario once per folder (every VM's Smart Paging file there),
    plus a baseline on a host with enough memory, and prints side by side:
    device, model, rotational or not, filesystem, boot time, slowdown against
    the baseline, fault latency percentiles, and whether the device's own
    counters confirm the paging I/O reached it.

    \b
    Examples:
      vmmem compare /mnt/ssd/sp /mnt/hdd/sp --scale 4
      vmmem compare /var/tmp /mnt/nfs examples/mixed-priority.toml --json cmp.json
      vmmem compare /mnt/ssd /mnt/hdd --plot cmp.png
      vmmem compare /var/tmp/a /var/tmp/b --scale 8 --runs 5 --export-markdown cmp.md
      vmmem compare vmmem-vms /mnt/ssd/sp --scale 4   Smart Paging beside the VMs' virtual
                                                       disks, or on another disk

    Every folder is checked before anything runs: a missing one is made (its
    parent must exist) and removed at the end if empty; one without room for
    the worst case is refused (exit 3); a RAM-backed one is run but flagged.
    """
    from vmmem.lab.compare import check_compare_locations, compare_locations
    from vmmem.lab.locations import LocationRefused

    check_outputs(json_path, plot_path, _exports(export_markdown, export_csv))
    # A path that does not exist is a folder to make, unless it names a scenario file.
    missing_toml = [p for p in paths if not os.path.exists(p) and p.endswith(".toml")]
    if missing_toml:
        raise CliFailure(f"scenario file {missing_toml[0]} does not exist", EXIT_USAGE)
    scenario_files = [p for p in paths if os.path.isfile(p)]
    folders = [p for p in paths if not os.path.isfile(p)]
    if len(scenario_files) > 1:
        raise CliFailure(
            "give at most one scenario file, got: " + ", ".join(scenario_files), EXIT_USAGE
        )
    if not folders:
        raise CliFailure("give at least one folder to put the Smart Paging files in", EXIT_USAGE)
    from vmmem.cli import spectrum

    guests = spectrum.guest_list(guest)
    if guests is not None:  # locations x guests (docs/CLI.md)
        if runs != 1 or warmup or export_markdown or export_csv:
            raise CliFailure(
                "--runs, --warmup and the exports repeat one storm: give one --guest (the "
                "per-guest spectrum runs each guest once)",
                EXIT_USAGE,
            )
        s = load_for_cli(
            scenario_files[0] if scenario_files else None, scale, processors=processors
        )
        s = apply_guest_options(s, None, None, vhd_dir)
        spectrum.compare_spectrum(
            s, guests, folders, guest_ips, vhd_dir, no_baseline, backend, quiet,
            json_path, plot_path,
        )  # fmt: skip
    s, plan = _load_and_plan(
        scenario_files[0] if scenario_files else None, scale, guest, guest_ips, vhd_dir,
        processors,
    )  # fmt: skip
    try:
        checked = check_compare_locations(s, folders)
    except LocationRefused as e:
        raise CliFailure(str(e), EXIT_REFUSED) from None
    for found in checked.values():
        for w in found.warnings:
            show_warning(w)

    from vmmem.lab.repeat import RepeatedCompare, repeat

    def once(i: int, warm: bool) -> CompareResult:
        which = _repeat_label(i, warm, runs, warmup)

        def progress(index: int, count: int, folder: str | None) -> _LiveProgress:
            sink = _LiveProgress(quiet=quiet)
            if not quiet:
                label = (
                    "baseline: enough memory, no Smart Paging"
                    if folder is None
                    else f"Smart Paging on {folder}"
                )
                prefix = f"{which}: " if which else ""
                sink.console.print(f"[bold]{prefix}[{index + 1}/{count}] {label}[/bold]")
            return sink

        try:
            return compare_locations(
                s,
                folders,
                plan=plan,
                checked=checked,
                baseline=not no_baseline,
                backend=backend,
                progress=progress,
                on_done=lambda sink: sink.close() if sink is not None else None,
            )
        except LocationRefused as e:
            raise CliFailure(str(e), EXIT_REFUSED) from None

    rep = RepeatedCompare(
        repeat(once, runs, warmup, stop=lambda c: c.outcome in ("failed", "interrupted")),
        warmup,
    )
    cmp = rep.compares[0]
    render.compare_report(out_console(), cmp, wide=wide)
    if len(rep.compares) > 1:
        render.compare_stats_report(out_console(), rep.stats())
    _write_exports(render.compare_export(rep), export_markdown, export_csv)
    _save(
        rep.to_dict(),
        json_path,
        plot_path,
        lambda path: (
            _plot_compare(cmp, path) if len(rep.compares) == 1 else _plot_spread_compare(rep, path)
        ),
    )
    sys.exit(EXIT_FOR_OUTCOME[rep.outcome])


def _plot_spread_compare(rep: Any, path: str) -> None:
    from vmmem.cli.plots import plot_compare_spread

    plot_compare_spread(rep, path)


def _plot_compare(cmp: CompareResult, path: str) -> None:
    from vmmem.cli.plots import plot_compare

    plot_compare(cmp, path)


# ---------------------------------------------------------------------------------------------
# show


@cli.command("show")
@click.argument("result_file", type=click.Path(exists=True, dir_okay=False), metavar="RESULT.json")
@plot_option("Draw the run's or the comparison's plot again.")
@wide_option
def show_cmd(result_file: str, plot_path: str | None, wide: bool) -> None:
    """Print (and plot) a result saved with --json, without running anything.

    \b
    Examples:
      vmmem show run.json
      vmmem show cmp.json --plot cmp.png
    """
    from vmmem.lab.results import READABLE_VERSIONS, CompareResult, RunResult
    from vmmem.lab.schema import RESULT_SCHEMA, validate
    from vmmem.records import RecordError

    check_outputs(None, plot_path)
    try:
        with open(result_file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise CliFailure(f"{result_file}: not a vmmem result: {e}", EXIT_USAGE) from None
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind == "vmmem-spectrum":  # several guests (docs/CLI.md)
        from vmmem.cli import spectrum

        return spectrum.show_file(result_file, data, plot_path)
    if kind not in ("vmmem-run", "vmmem-compare"):
        raise CliFailure(
            f"{result_file}: not a vmmem result (no kind vmmem-run or vmmem-compare)", EXIT_USAGE
        )
    version = data.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise CliFailure(
            f"{result_file}: schema version {version!r} is not one this vmmem reads "
            f"({', '.join(map(str, READABLE_VERSIONS))}); a newer vmmem wrote it?",
            EXIT_USAGE,
        )
    # Version-1 files (before the fields schema 2 added) are read as they are: every reader
    # tolerates the missing fields. Version 2 is validated.
    problems = validate(data, RESULT_SCHEMA) if version != 1 else []
    if problems:
        raise CliFailure(f"{result_file}: does not match the schema: {problems[0]}", EXIT_USAGE)
    try:
        result = (RunResult if kind == "vmmem-run" else CompareResult).from_dict(data)
    except RecordError as e:  # a version-1 file (not validated above) that is not one
        raise CliFailure(f"{result_file}: does not match the schema: {e}", EXIT_USAGE) from None
    from vmmem.lab.repeat import RepeatedCompare, RepeatedRun

    # --runs N wrote every run in `repeats` (validated above with the document): their spread.
    repeats = data.get("repeats") or []
    warmup = (data.get("stats") or {}).get("warmup", 0)
    if isinstance(result, RunResult):
        run = result
        rep = RepeatedRun([RunResult.from_dict(x) for x in repeats], warmup)
        render.run_report(out_console(), run, wide=wide)
        if len(rep.runs) > 1:
            render.run_stats_report(out_console(), rep.stats())
            _save(data, None, plot_path, lambda path: _plot_spread_run(rep, path))
        else:
            _save(data, None, plot_path, lambda path: _plot_run(run, path))
    else:
        cmp = result
        reps = RepeatedCompare([CompareResult.from_dict(x) for x in repeats], warmup)
        render.compare_report(out_console(), cmp, wide=wide)
        if len(reps.compares) > 1:
            render.compare_stats_report(out_console(), reps.stats())
            _save(data, None, plot_path, lambda path: _plot_spread_compare(reps, path))
        else:
            _save(data, None, plot_path, lambda path: _plot_compare(cmp, path))
