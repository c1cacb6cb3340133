"""`vmmem run --guest a,b,c` / `--guest all` (and the default `vmmem run`) and `vmmem compare
--guest a,b,c`: the same storm once per guest, one table. The commands in `experiments`
parse their options and hand over here; the lab's `spectrum` module runs and collects."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, NoReturn

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from vmmem.cli.common import EXIT_FOR_OUTCOME, EXIT_REFUSED, EXIT_USAGE, CliFailure, out_console
from vmmem.lab.scenario import Scenario
from vmmem.lab.spectrum import grid_slowdown
from vmmem.sizes import format_duration as seconds
from vmmem.sizes import format_mb as mb

if TYPE_CHECKING:
    from vmmem.lab.locations import CheckedLocations
    from vmmem.lab.spectrum import SpectrumResult

__all__ = [
    "compare_spectrum",
    "finish",
    "guest_list",
    "plot",
    "run_spectrum",
    "scenarios_per_guest",
    "show",
    "show_file",
    "spectrum_guests",
    "spectrum_compare",
    "spectrum_report",
]


def guest_list(guest: str | None) -> list[str] | None:
    """The guests of `--guest` when it names several (a comma list, or `all`); None for one
    guest or none (the single run). A malformed list is exit 2."""
    from vmmem.lab.spectrum import parse_guest_list

    if guest is None:
        return None
    try:
        return parse_guest_list(guest)
    except ValueError as e:
        raise CliFailure(f"--guest: {e}", EXIT_USAGE) from None


def spectrum_guests(
    scenario: str | None, guest: str | None, scale: float, guest_ips: float | None = None
) -> tuple[list[str], float] | None:
    """`vmmem run`'s guests and scale when it runs the spectrum: `--guest a,b,c` or `all`;
    with neither a scenario nor --guest, every guest `vmmem guests` lists, at DEFAULT_SCALE
    unless --scale is given. None: the single run, as before."""
    import click
    from click.core import ParameterSource

    from vmmem.lab.spectrum import DEFAULT_SCALE, guest_names

    guests = guest_list(guest)
    if guests is not None:
        return guests, scale
    if scenario is not None or guest is not None:
        return None
    if guest_ips is not None:  # as for one run: it says which guest's instructions
        raise CliFailure("--guest-ips goes with --guest", EXIT_USAGE)
    given = click.get_current_context().get_parameter_source("scale")
    return guest_names(), scale if given == ParameterSource.COMMANDLINE else DEFAULT_SCALE


def scenarios_per_guest(
    s: Scenario, guests: list[str], guest_ips: float | None, vhd_dir: str | None
) -> dict[str, Scenario]:
    """Each guest's storm, every name checked (an unknown one is exit 2, naming it) before
    anything runs."""
    from vmmem.cli.experiments import apply_guest_options
    from vmmem.guests import SYNTHETIC_BOOT

    out = {}
    for g in guests:
        # --guest-ips is a recorded guest's: the synthetic boot in a list keeps its own CPU.
        ips = None if g == SYNTHETIC_BOOT else guest_ips
        out[g] = apply_guest_options(s, g, ips, vhd_dir)
    return out


def _pages(pages: int | None, startup_pages: int | None) -> str:
    if pages is None:
        return "-"
    if not startup_pages:
        return f"{pages:,}"
    return f"{pages:,} ({100 * pages / startup_pages:.0f}%)"


def _mb_or_dash(value: int | None) -> str:
    return "-" if value is None else (mb(value) if value else "0")


def _io(ins: int | None, outs: int | None) -> str:
    return "-" if ins is None or outs is None else f"{ins:,}/{outs:,}"


# Left out in this order when the terminal is too narrow for the whole table.
_NARROW_DROP_ORDER = ("predicted", "pages touched", "baseline", "page-ins/outs")


def spectrum_report(console: Console, sp: SpectrumResult) -> None:
    """One row per guest: the storm's paging, time, baseline and slowdown; the prediction
    beside (from each run's own plan)."""
    first = next(iter(sp.runs.values()), None)
    scale = f" at --scale {sp.scale:g}" if sp.scale != 1 else ""
    vms = first.storm_summary().vms if first else 0
    cells = []
    for r in sp.rows():
        done = r["outcome"] in ("ok", "vms_failed")
        predicted = _io(r["predicted_page_ins"], r["predicted_page_outs"])
        if r["predicted_smart_paging_peak_bytes"] is not None:
            predicted += f", {_mb_or_dash(r['predicted_smart_paging_peak_bytes'])}"
        cells.append(
            {
                "guest": r["guest"],
                "pages touched": _pages(r["pages_touched"], r["startup_pages"]),
                "SP peak": _mb_or_dash(r["smart_paging_peak_bytes"]),
                "page-ins/outs": _io(r["page_ins"], r["page_outs"]),
                "boot": seconds(r["boot_time"]) if done and r["boot_time"] else r["outcome"],
                "baseline": seconds(r["baseline"]) if r["baseline"] else "-",
                "slower": f"{r['slowdown']:.2f} x" if r["slowdown"] else "-",
                "predicted": predicted,
            }
        )
    columns = list(cells[0]) if cells else ["guest"]
    left_out: list[str] = []
    while True:
        t = Table(
            title=f"the same storm ({sp.scenario}{scale}, {vms} VMs restarting at once), per guest",
            title_justify="left",
        )
        for c in columns:
            # A guest's name is what its row is about: whole, never cut.
            t.add_column(
                c,
                justify="left" if c == "guest" else "right",
                no_wrap=True,
                min_width=max((len(g) for g in sp.runs), default=5) if c == "guest" else None,
            )
        for row in cells:
            t.add_row(*(row[c] for c in columns))
        natural = Measurement.get(console, console.options.update_width(10_000), t).maximum
        droppable = [c for c in _NARROW_DROP_ORDER if c in columns]
        if natural <= console.width or not droppable:
            break
        # Too narrow for every column whole: leave out the least needed, and say so.
        left_out.append(droppable[0])
        columns.remove(droppable[0])
    console.print(t)
    if left_out:
        console.print(
            f"(at {console.width} columns {', '.join(left_out)} left out; a wider terminal "
            "shows them, and the JSON has them)",
            style="dim",
            highlight=False,
        )
    console.print(
        "pages touched: the distinct pages one VM's boot touches (of its Startup RAM); SP peak "
        "(Smart Paging) and page-ins/outs: summed over the storm's VMs; boot: the storm's "
        "slowest VM; baseline: the slowest full-memory boot of the same VMs in the same run; "
        "predicted: page-ins/outs and SP peak as `vmmem plan --guest NAME` gives them from "
        "the guest's accesses (no I/O)",
        style="dim",
        highlight=False,
    )
    warned: dict[str, list[str]] = {}  # one line per warning, naming its guests
    for g, run in sp.runs.items():
        for w in run.warnings:
            warned.setdefault(w, []).append(g)
    for w, guests in warned.items():
        console.print(f"[bold yellow]warning:[/bold yellow] {w} ({', '.join(guests)})")
    for g, run in sp.runs.items():
        if run.leftover_files:
            console.print(
                f"[bold red]{g}: {len(run.leftover_files)} Smart Paging file(s) were left "
                "and have been deleted[/bold red]"
            )
    console.print(f"[bold]{sp.summary()}[/bold]")
    if sp.error:
        console.print(f"[bold red]stopped: {sp.error}[/bold red]")


def spectrum_compare(console: Console, sp: SpectrumResult) -> None:
    """Locations x guests: a row per guest, a column per location (storm time, slowdown
    against that guest's own baseline run)."""
    rows = sp.rows()
    locations: list[str] = []
    for r in rows:
        for c in r["locations"]:
            if c["location"] not in locations:
                locations.append(c["location"])
    t = Table(
        title="the same storm per guest, Smart Paging on each location (storm time, slower "
        "than the guest's baseline run, or with --no-baseline than its own full-memory boots)",
        title_justify="left",
    )
    t.add_column("guest")
    t.add_column("baseline run", justify="right")
    for loc in locations:
        t.add_column(loc, justify="right", overflow="fold")
    for r in rows:
        cells = {c["location"]: c for c in r["locations"]}
        out = [r["guest"], seconds(r["baseline_boot_time"]) if r["baseline_boot_time"] else "-"]
        for loc in locations:
            c = cells.get(loc)
            if c is None or not c["boot_time"]:
                out.append("-" if c is None else c["outcome"])
                continue
            slow = grid_slowdown(c)
            ratio = f", {slow:.2f} x" if slow else ""
            peak = (
                f", SP {mb(c['smart_paging_peak_bytes'])}" if c["smart_paging_peak_bytes"] else ""
            )
            out.append(f"{seconds(c['boot_time'])}{ratio}{peak}")
        t.add_row(*out)
    console.print(t)
    console.print(f"[bold]{sp.summary()}[/bold]")
    if sp.error:
        console.print(f"[bold red]stopped: {sp.error}[/bold red]")


def show(sp: SpectrumResult) -> None:
    if sp.compares:
        spectrum_compare(out_console(), sp)
    else:
        spectrum_report(out_console(), sp)


def plot(sp: SpectrumResult, path: str) -> None:
    from vmmem.cli.plots import plot_spectrum

    plot_spectrum(sp, path)


def finish(sp: SpectrumResult, json_path: str | None, plot_path: str | None) -> NoReturn:
    """Print, write the JSON and the plot, exit with the worst guest's outcome."""
    from vmmem.cli.experiments import _save

    show(sp)
    _save(sp.to_dict(), json_path, plot_path, lambda path: plot(sp, path))
    sys.exit(EXIT_FOR_OUTCOME[sp.outcome])


def run_spectrum(
    scenario: str | None,
    scale: float,
    guests: list[str],
    guest_ips: float | None,
    vhd_dir: str | None,
    paging_dir: str | None,
    backend: str,
    quiet: bool,
    json_path: str | None,
    plot_path: str | None,
    processors: int | None = None,
) -> NoReturn:
    """`vmmem run` for several guests: every guest and folder checked, then one run each."""
    from vmmem.cli.common import load_for_cli
    from vmmem.cli.experiments import _LiveProgress
    from vmmem.lab.locations import LocationRefused
    from vmmem.lab.spectrum import run_guests

    per_guest = scenarios_per_guest(
        load_for_cli(scenario, scale, processors=processors), guests, guest_ips, vhd_dir
    )
    checked = _refuse_early(per_guest, paging_dir)

    def progress(index: int, count: int, guest: str) -> _LiveProgress:
        sink = _LiveProgress(quiet=quiet)
        if not quiet:
            sink.console.print(f"[bold]guest {index + 1}/{count}: {guest}[/bold]")
        return sink

    try:
        sp = run_guests(
            per_guest,
            scale=scale,
            paging_dir=paging_dir,
            backend=backend,
            progress=progress,
            on_done=lambda sink: sink.close() if sink is not None else None,
            locations=checked,
        )
    except LocationRefused as e:
        raise CliFailure(str(e), EXIT_REFUSED) from None
    finish(sp, json_path, plot_path)


def _refuse_early(
    per_guest: dict[str, Scenario], paging_dir: str | None
) -> dict[str, CheckedLocations]:
    """A folder that cannot take a guest's storm is refused (exit 3) before the first run;
    what each guest's check found is handed to its run, which does not check again."""
    import os

    from vmmem.hyperv.host import DEFAULT_FOLDER
    from vmmem.lab.locations import LocationRefused, check_locations

    out = {}
    try:
        for guest, s in per_guest.items():
            if paging_dir is not None:
                s = s.with_paging_dir(os.path.abspath(paging_dir))
            out[guest] = check_locations(s, os.path.abspath(DEFAULT_FOLDER))
    except LocationRefused as e:
        raise CliFailure(str(e), EXIT_REFUSED) from None
    return out


def compare_spectrum(
    s: Scenario,
    guests: list[str],
    folders: list[str],
    guest_ips: float | None,
    vhd_dir: str | None,
    no_baseline: bool,
    backend: str,
    quiet: bool,
    json_path: str | None,
    plot_path: str | None,
) -> NoReturn:
    """`vmmem compare` for several guests: locations x guests. Folders are checked by the
    caller (as for one guest); every guest's name before anything runs."""
    from vmmem.cli.experiments import _LiveProgress
    from vmmem.lab.compare import check_compare_locations
    from vmmem.lab.locations import LocationRefused
    from vmmem.lab.spectrum import compare_guests

    per_guest = scenarios_per_guest(s, guests, guest_ips, vhd_dir)
    try:  # every guest's folders before the first run; each compare reuses its own check
        checked = {g: check_compare_locations(g_s, folders) for g, g_s in per_guest.items()}
    except LocationRefused as e:
        raise CliFailure(str(e), EXIT_REFUSED) from None

    def progress(guest: str, index: int, count: int, folder: str | None) -> _LiveProgress:
        sink = _LiveProgress(quiet=quiet)
        if not quiet:
            where = "baseline: enough memory" if folder is None else f"Smart Paging on {folder}"
            sink.console.print(f"[bold]{guest} [{index + 1}/{count}] {where}[/bold]")
        return sink

    try:
        sp = compare_guests(
            per_guest,
            folders,
            scale=s.scale,
            baseline=not no_baseline,
            checked=checked,
            backend=backend,
            progress=progress,
            on_done=lambda sink: sink.close() if sink is not None else None,
        )
    except LocationRefused as e:
        raise CliFailure(str(e), EXIT_REFUSED) from None
    finish(sp, json_path, plot_path)


def show_file(result_file: str, data: dict[str, Any], plot_path: str | None) -> None:
    """`vmmem show` of a saved spectrum: checked against the schema, printed, plotted."""
    from vmmem.cli.experiments import _save
    from vmmem.lab.schema import RESULT_SCHEMA, validate
    from vmmem.lab.spectrum import SpectrumResult

    problems = validate(data, RESULT_SCHEMA)
    if problems:
        raise CliFailure(f"{result_file}: does not match the schema: {problems[0]}", EXIT_USAGE)
    sp = SpectrumResult.from_dict(data)
    show(sp)
    _save(data, None, plot_path, lambda path: plot(sp, path))
