"""The ``vmmem`` command: plan, run and compare Hyper-V Smart Paging boot storms on real disks.

Exit codes (also in ``vmmem --help`` and docs/CLI.md):

    0    done
    1    the run failed (a VM could not start, a paging-file error, ...)
    2    usage or scenario error (bad option, bad or missing scenario file)
    3    a Smart Paging location was refused (missing, not writable, not enough free space)
    130  interrupted (Ctrl-C or SIGTERM): partial results printed, no Smart Paging file left
"""

from __future__ import annotations

import json
import os
import signal
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from vmmem.cli import render
from vmmem.errors import RamBackedWarning
from vmmem.lab.runner import ProgressSink, VMProgress
from vmmem.lab.scenario import Scenario, ScenarioError, load_scenario

if TYPE_CHECKING:
    from vmmem.lab.results import CompareResult, RunResult

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "cli",
    "main",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\b
Exit codes:
  0    done
  1    the run failed (a VM could not start, a paging-file error)
  2    usage or scenario error
  3    a Smart Paging location was refused (missing, read-only, too little free space)
  130  interrupted by Ctrl-C or SIGTERM (partial results printed, no Smart Paging
       file left)"""


class CliFailure(click.ClickException):
    """An error for people, with its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"vmmem: error: {self.format_message()}", err=True, file=file)


def _console() -> Console:
    # On a terminal rich takes its width; into a file or pipe, wide enough that tables keep
    # one line per row (COLUMNS still wins).
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
    return Console(highlight=False, width=width)


def _err_console() -> Console:
    return Console(stderr=True, highlight=False)


def _load(scenario_path: str | None, scale: float, *, warn: bool = True) -> Scenario:
    """The scenario, scaled; scale distortions are warned about on stderr."""
    try:
        full = load_scenario(scenario_path)
        s = full.scaled(scale) if scale != 1 else full
    except ScenarioError as e:
        raise CliFailure(str(e), EXIT_USAGE) from None
    if warn and scale != 1:
        from vmmem.lab.plan import scale_warnings

        for w in scale_warnings(full, s):
            _err_console().print(f"[bold yellow]warning:[/bold yellow] {w}")
    return s


def _check_outputs(json_path: str | None, plot_path: str | None) -> None:
    """Refuse (exit 2) a --json or --plot destination that could not be written, before
    anything is built: a storm takes minutes, its results must not be lost at the end."""
    from vmmem.cli.outputs import OutputError, check_output

    try:
        if json_path:
            check_output("--json", json_path)
        if plot_path:
            check_output("--plot", plot_path, plot=True)
    except OutputError as e:
        raise CliFailure(str(e), EXIT_USAGE) from None
    if json_path and plot_path and os.path.abspath(json_path) == os.path.abspath(plot_path):
        raise CliFailure(f"--json and --plot both name {json_path}: give two files", EXIT_USAGE)


def _write(option: str, path: str, write: Callable[[str], None]) -> None:
    from vmmem.cli.outputs import write_atomically

    try:
        write_atomically(path, write)
    except OSError as e:
        raise CliFailure(f"{option} {path}: cannot write: {e.strerror or e}", EXIT_FAILED) from None


def _write_json(path: str, data: dict[str, Any]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=False)
            f.write("\n")

    _write("--json", path, write)


scenario_argument = click.argument(
    "scenario", required=False, type=click.Path(dir_okay=False), metavar="[SCENARIO.toml]"
)
scale_option = click.option(
    "--scale",
    type=click.FloatRange(min=1.0),
    default=1.0,
    show_default=True,
    metavar="F",
    help="Shrink every size by F (rounded to Hyper-V's rules: multiples of 2 MB, Startup and "
    "Minimum at least 32 MB) and boot times with it, for quick runs.",
)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.version_option(package_name="vmmem", message="vmmem %(version)s")
def cli() -> None:
    """Hyper-V Dynamic Memory and Smart Paging on real RAM and real disks.

    \b
    The article's reboot storm: four idle VMs that fit a 1400 MB host
    ballooned down are all restarted at once and need 2048 MB to boot;
    the gap goes to Smart Paging files. How much slower is that boot, and
    how does the disk under the Smart Paging folder change it?

    \b
    Start here:
      vmmem plan                      will a host restart need Smart Paging?
      vmmem disks --probe             where could the files go, how fast is it?
      vmmem run --scale 4             run the article's storm (quarter size)
      vmmem compare /mnt/ssd /mnt/hdd --scale 4
                                      the same storm with the files on each disk

    Every command takes a scenario file (TOML, see examples/) or runs the
    article's scenario when none is given. Sizes use Hyper-V's MB (2^20 bytes).
    """


# ---------------------------------------------------------------------------------------------
# scenario


@cli.command("scenario")
@click.argument(
    "scenarios", nargs=-1, type=click.Path(dir_okay=False), metavar="[SCENARIO.toml]..."
)
@scale_option
@click.option(
    "--toml",
    "as_toml",
    is_flag=True,
    help="Print the built-in article scenario as TOML (a starting point for your own).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the validated settings as JSON (a list when several files are given).",
)
def scenario_cmd(scenarios: tuple[str, ...], scale: float, as_toml: bool, as_json: bool) -> None:
    """Check scenario files and show what they hold, without running anything.

    Every file is checked; the first bad one ends the command with exit 2.

    \b
    Examples:
      vmmem scenario examples/mixed-priority.toml
      vmmem scenario examples/*.toml      check them all
      vmmem scenario --scale 8            the article's scenario at 1/8 size
      vmmem scenario --toml > my.toml     start your own from the article's
    """
    if as_toml:
        if scenarios:
            raise CliFailure(
                "--toml prints the built-in scenario: give no file with it", EXIT_USAGE
            )
        from vmmem.lab.scenario import ARTICLE_SCENARIO_TOML

        click.echo(ARTICLE_SCENARIO_TOML, nl=False)
        return
    loaded = [_load(path, scale) for path in scenarios] or [_load(None, scale)]
    if as_json:
        data = [s.to_dict() for s in loaded]
        click.echo(json.dumps(data if len(scenarios) > 1 else data[0], indent=2))
        return
    console = _console()
    for i, s in enumerate(loaded):
        if i:
            console.print()
        render.scenario(console, s)


# ---------------------------------------------------------------------------------------------
# plan


@cli.command("plan")
@scenario_argument
@scale_option
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON instead.")
def plan_cmd(scenario: str | None, scale: float, as_json: bool) -> None:
    """Will a restart need Smart Paging, how much per VM, and what would avoid it (no I/O).

    Walks the scenario's events with the Dynamic Memory rules and tries the
    article's remedies: less oversubscription (by how much), Minimum RAM =
    Startup RAM (for which VMs), moving a VM off the host (which one).

    \b
    Examples:
      vmmem plan                          the article: 648 MB of Smart Paging
      vmmem plan examples/static-and-dynamic.toml
      vmmem plan --json | jq .remedies
    """
    from vmmem.lab.plan import plan_scenario

    s = _load(scenario, scale)
    p = plan_scenario(s)
    if as_json:
        click.echo(json.dumps(p.to_dict(), indent=2))
        return
    render.plan(_console(), p)


# ---------------------------------------------------------------------------------------------
# disks


@cli.command("disks")
@click.argument(
    "folders", nargs=-1, type=click.Path(exists=True, file_okay=False), metavar="[FOLDER]..."
)
@click.option(
    "--probe",
    is_flag=True,
    help="Measure 4 KiB random reads and writes at queue depth 1 with O_DIRECT in each "
    "location (about a second each, in a vmmem-probe-* scratch folder made there and removed).",
)
@click.option(
    "--seconds",
    type=click.FloatRange(min=0.1, max=60),
    default=1.0,
    show_default=True,
    help="Probe time per location.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def disks_cmd(folders: tuple[str, ...], probe: bool, seconds: float, as_json: bool) -> None:
    """Where a Smart Paging file could go: writable filesystems and their devices.

    Lists every writable mounted filesystem (or just the FOLDERs given) with
    its block device, model, rotational flag, filesystem and free space.
    RAM-backed ones (tmpfs, /dev/shm, zram) are flagged: a Smart Paging file
    there measures nothing.

    \b
    Examples:
      vmmem disks
      vmmem disks --probe /mnt/ssd /mnt/hdd
      vmmem disks --json
    """
    from vmmem.lab.disks import describe_location, list_locations
    from vmmem.lab.disks import probe as run_probe

    try:
        infos = list_locations(list(folders))
    except OSError as e:
        raise CliFailure(f"{e.filename or ''}: {e.strerror or e}", EXIT_REFUSED) from None
    probes = {}
    if probe:
        err = _err_console()
        for info in infos:
            if not as_json:
                err.print(f"probing {info.path} ...", style="dim")
            probes[info.path] = run_probe(info.path, seconds=seconds)
    if as_json:
        out = []
        for info in infos:
            d = describe_location(info)
            if probe:
                d["probe"] = probes[info.path].to_dict()
            out.append(d)
        click.echo(json.dumps({"locations": out}, indent=2))
        return
    render.disks(_console(), infos, probes)


# ---------------------------------------------------------------------------------------------
# clean


@cli.command("clean")
@click.argument("folders", nargs=-1, type=click.Path(file_okay=False), metavar="[FOLDER]...")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def clean_cmd(folders: tuple[str, ...], as_json: bool) -> None:
    """Remove what vmmem runs that did not finish left behind.

    A run that was killed (SIGKILL, a crash, a power cut) cannot delete its
    Smart Paging files. Every run keeps a lock file (vmmem-run-ID.lock) in
    each folder it uses, listing what it made there; once its process is
    gone, the files it lists are removed here if they are still provably its
    own (regular files, in that folder, owned by you). Nothing else is ever
    touched: not your files, not symlinks, not a live run's files. `vmmem
    run` does the same for the folders it is about to use.

    Looks in each FOLDER and its direct subfolders (default: ./vmmem-vms,
    the host folder, with one subfolder per VM).

    \b
    Examples:
      vmmem clean
      vmmem clean /mnt/ssd/paging --json
    """
    from vmmem.workspace import clean

    reports = []
    for folder in folders or ("vmmem-vms",):
        if not os.path.isdir(folder):
            if folders:
                raise CliFailure(f"{folder}: no such folder", EXIT_USAGE)
            continue
        reports += clean(folder)
    if as_json:
        click.echo(json.dumps({"folders": [r.to_dict() for r in reports]}, indent=2))
        return
    if not reports:
        click.echo(f"nothing left by earlier runs in {', '.join(folders or ('vmmem-vms',))}")
    for rep in reports:
        for run in rep.earlier:
            gone = [f for f in rep.removed if f in run.files]
            click.echo(f"{rep.folder}: {run.describe()}: removed {len(gone)} Smart Paging file(s)")
        for run in rep.live:
            click.echo(
                f"{rep.folder}: in use by a live run, pid {run.pid} (started "
                f"{run.started_text}): left alone"
            )


# ---------------------------------------------------------------------------------------------
# run


class _LiveProgress(ProgressSink):
    """Live per-VM table on a terminal (stderr); one line per event otherwise."""

    def __init__(self, quiet: bool = False):
        from rich.live import Live

        self.console = _err_console()
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
            self.live.update(render.progress_table(vms, available, elapsed, self.title))

    def message(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, style="bold yellow", highlight=False)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


paging_dir_option = click.option(
    "--paging-dir",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Put every VM's Smart Paging file in DIR (Set-VM -SmartPagingFilePath on all). "
    "Default: each VM's folder under ./vmmem-vms, as Hyper-V keeps them with the VM.",
)
backend_option = click.option(
    "--backend",
    type=click.Choice(["direct", "mmap"]),
    default="direct",
    show_default=True,
    help="How paging reaches the disk: O_DIRECT pread/pwrite, or a mapping flushed and dropped "
    "from the page cache.",
)


def _check_paging_dir(paging_dir: str | None) -> None:
    if paging_dir is None:
        return
    if not os.path.isdir(paging_dir):
        raise CliFailure(f"Smart Paging folder {paging_dir} does not exist", EXIT_REFUSED)
    if not os.access(paging_dir, os.W_OK | os.X_OK):
        raise CliFailure(f"Smart Paging folder {paging_dir} is not writable", EXIT_REFUSED)


def _execute(
    s: Scenario, paging_dir: str | None, backend: str, quiet: bool, label: str = ""
) -> RunResult:
    """Run one scenario with live progress; LocationRefused becomes exit code 3."""
    from vmmem.lab.runner import LocationRefused, run_scenario

    sink = _LiveProgress(quiet=quiet)
    if label and not quiet:
        sink.console.print(f"[bold]{label}[/bold]")
    try:
        return run_scenario(s, paging_dir=paging_dir, progress=sink, backend=backend)
    except LocationRefused as e:
        raise CliFailure(str(e), EXIT_REFUSED) from None
    finally:
        sink.close()


wide_option = click.option(
    "--wide", is_flag=True, help="Show every column of the tables (the default fits 120 columns)."
)


@cli.command("run")
@scenario_argument
@scale_option
@paging_dir_option
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Write every figure, the settings, and the machine and device facts to FILE "
    "(layout: docs/json-schema.json).",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    metavar="FILE.png",
    help="Draw assigned memory and Smart Paging bytes per VM over time, and the boot times.",
)
@backend_option
@wide_option
@click.option("-q", "--quiet", is_flag=True, help="No live progress, only the result.")
def run_cmd(
    scenario: str | None,
    scale: float,
    paging_dir: str | None,
    json_path: str | None,
    plot_path: str | None,
    backend: str,
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

    \b
    Examples:
      vmmem run --scale 4                          the article, quarter size
      vmmem run --paging-dir /mnt/hdd/sp --json run.json --plot run.png
      vmmem run examples/mixed-priority.toml --scale 2

    Refuses a folder without room for the worst case (every VM's Startup
    RAM) and warns for RAM-backed ones (tmpfs: nothing is measured). Ctrl-C
    stops cleanly: partial results are printed and no file is left behind.
    """
    _check_outputs(json_path, plot_path)
    s = _load(scenario, scale)
    _check_paging_dir(paging_dir)
    result = _execute(s, paging_dir, backend, quiet)
    render.run_report(_console(), result, wide=wide)
    _save(result.to_dict(), json_path, plot_path, lambda path: _plot_run(result, path))
    sys.exit(
        {"ok": EXIT_OK, "failed": EXIT_FAILED, "interrupted": EXIT_INTERRUPTED}[result.outcome]
    )


def _plot_run(result: RunResult, path: str) -> None:
    from vmmem.cli.plots import plot_run

    plot_run(result, path)


def _save(
    data: dict[str, Any], json_path: str | None, plot_path: str | None, plot: Callable[[str], None]
) -> None:
    """Write the JSON and the plot (also for partial results)."""
    if json_path:
        _write_json(json_path, data)
        _err_console().print(f"wrote {json_path}", style="dim", highlight=False)
    if plot_path:
        _write("--plot", plot_path, plot)
        _err_console().print(f"wrote {plot_path}", style="dim", highlight=False)


# ---------------------------------------------------------------------------------------------
# compare


@cli.command("compare")
@click.argument(
    "paths",
    nargs=-1,
    required=True,
    type=click.Path(exists=True),
    metavar="DIR [DIR]... [SCENARIO.toml]",
)
@scale_option
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Write every run's figures, the table and the summary to FILE.",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    metavar="FILE.png",
    help="Draw the boot time per location and the fault-latency CDFs.",
)
@click.option(
    "--no-baseline",
    is_flag=True,
    help="Skip the baseline run (the same storm on a host with enough memory).",
)
@backend_option
@wide_option
@click.option("-q", "--quiet", is_flag=True, help="No live progress, only the result.")
def compare_cmd(
    paths: tuple[str, ...],
    scale: float,
    json_path: str | None,
    plot_path: str | None,
    no_baseline: bool,
    backend: str,
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

    Every folder is checked before anything runs: one without room for the
    worst case is refused (exit 3); a RAM-backed one is run but flagged.
    """
    from vmmem.lab.compare import check_compare_locations, compare_locations
    from vmmem.lab.runner import LocationRefused

    _check_outputs(json_path, plot_path)
    scenario_files = [p for p in paths if os.path.isfile(p)]
    folders = [p for p in paths if os.path.isdir(p)]
    if len(scenario_files) > 1:
        raise CliFailure(
            "give at most one scenario file, got: " + ", ".join(scenario_files), EXIT_USAGE
        )
    if not folders:
        raise CliFailure("give at least one folder to put the Smart Paging files in", EXIT_USAGE)
    s = _load(scenario_files[0] if scenario_files else None, scale)
    for folder in folders:
        _check_paging_dir(folder)
    try:
        for w in check_compare_locations(s, folders):
            _err_console().print(f"[bold yellow]warning:[/bold yellow] {w}")
    except LocationRefused as e:
        raise CliFailure(str(e), EXIT_REFUSED) from None

    def progress(index: int, count: int, folder: str | None) -> _LiveProgress:
        sink = _LiveProgress(quiet=quiet)
        if not quiet:
            label = (
                "baseline: enough memory, no Smart Paging"
                if folder is None
                else f"Smart Paging on {folder}"
            )
            sink.console.print(f"[bold][{index + 1}/{count}] {label}[/bold]")
        return sink

    try:
        cmp = compare_locations(
            s,
            folders,
            baseline=not no_baseline,
            backend=backend,
            progress=progress,
            on_done=lambda sink: sink.close() if sink is not None else None,
        )
    except LocationRefused as e:
        raise CliFailure(str(e), EXIT_REFUSED) from None
    render.compare_report(_console(), cmp, wide=wide)
    _save(cmp.to_dict(), json_path, plot_path, lambda path: _plot_compare(cmp, path))
    sys.exit({"ok": EXIT_OK, "failed": EXIT_FAILED, "interrupted": EXIT_INTERRUPTED}[cmp.outcome])


def _plot_compare(cmp: CompareResult, path: str) -> None:
    from vmmem.cli.plots import plot_compare

    plot_compare(cmp, path)


# ---------------------------------------------------------------------------------------------
# show


@cli.command("show")
@click.argument("result_file", type=click.Path(exists=True, dir_okay=False), metavar="RESULT.json")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    metavar="FILE.png",
    help="Draw the run's or the comparison's plot again.",
)
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

    _check_outputs(None, plot_path)
    try:
        with open(result_file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise CliFailure(f"{result_file}: not a vmmem result: {e}", EXIT_USAGE) from None
    kind = data.get("kind") if isinstance(data, dict) else None
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
    if kind == "vmmem-run":
        run = RunResult.from_dict(data)
        render.run_report(_console(), run, wide=wide)
        _save(data, None, plot_path, lambda path: _plot_run(run, path))
    else:
        cmp = CompareResult.from_dict(data)
        render.compare_report(_console(), cmp, wide=wide)
        _save(data, None, plot_path, lambda path: _plot_compare(cmp, path))


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point.

    Ctrl-C and SIGTERM end every command the same way: what it made is cleaned up on the way
    out (each command's own finally/with blocks), a message says so, and the exit code is 130.
    (Click's standalone mode would turn Ctrl-C into "Aborted!" and exit 1.)
    """
    # Every command names RAM-backed folders in its own output; the library's warning would
    # only repeat it as a Python traceback line.
    warnings.simplefilter("ignore", RamBackedWarning)
    try:
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    except ValueError:  # not the main thread (embedded use): leave signals alone
        pass
    try:
        code = cli.main(args=argv, prog_name="vmmem", standalone_mode=False)
    except click.exceptions.Abort as e:
        if isinstance(e.__cause__, EOFError):
            click.echo("vmmem: error: input ended", err=True)
            sys.exit(EXIT_FAILED)
        _interrupted()
    except KeyboardInterrupt:
        _interrupted()
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except BrokenPipeError:
        # Output piped into a reader that stopped (`vmmem plan --json | head`): not an error
        # to report, and nothing more can be written.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_FAILED)
    sys.exit(code if isinstance(code, int) else EXIT_OK)


def _interrupted() -> None:
    click.echo("vmmem: interrupted (Ctrl-C or SIGTERM); stopped cleanly", err=True)
    sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
