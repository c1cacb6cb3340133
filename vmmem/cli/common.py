"""What every ``vmmem`` command shares: the click group, exit codes, errors for people, the
scenario loading, shared options and output checks. The commands live in `info` (scenario,
plan, disks, clean, guests, record-boot) and `experiments` (run, compare, show); `main` is the
entry point. The exit codes are EXIT_* here, explained in EXIT_CODES_HELP (`vmmem --help`).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from vmmem.errors import SettingsError, VmmemWarning
from vmmem.lab.scenario import Scenario, ScenarioError, load_scenario

if TYPE_CHECKING:
    from vmmem.lab.plan import Plan
    from vmmem.lab.predict import Latency

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "EXIT_VMS_FAILED",
    "CliFailure",
    "cli",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_VMS_FAILED = 4
EXIT_INTERRUPTED = 130
# A result's outcome (docs/json-schema.json) -> the exit code of run and compare.
EXIT_FOR_OUTCOME = {
    "ok": EXIT_OK,
    "vms_failed": EXIT_VMS_FAILED,
    "failed": EXIT_FAILED,
    "interrupted": EXIT_INTERRUPTED,
}

EXIT_CODES_HELP = """\b
Exit codes:
  0    done
  1    the run failed and stopped (a VM could not start at a start event, a
       paging-file error)
  2    usage or scenario error
  3    a location was refused (cannot be made, read-only, writable by everyone
       without the sticky bit, too little free space, a virtual disk vmmem did
       not make, in use by another vmmem run)
  4    the run finished and was measured, but a host reboot could not start every VM
       (Not enough memory in the system to start the virtual machine); outcome
       vms_failed
  130  interrupted by Ctrl-C or SIGTERM (partial results printed, no Smart Paging
       file left)"""


class CliFailure(click.ClickException):
    """An error for people, with its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED):
        super().__init__(message)
        # click declares exit_code a class variable (8.5); click reads it from the instance.
        setattr(self, "exit_code", exit_code)  # noqa: B010

    def show(self, file: Any = None) -> None:
        click.echo(f"vmmem: error: {self.format_message()}", err=True, file=file)


def out_console() -> Console:
    # On a terminal rich takes its width; into a file or pipe, wide enough that tables keep
    # one line per row (COLUMNS still wins).
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
    return Console(highlight=False, width=width)


def err_console() -> Console:
    return Console(stderr=True, highlight=False)


def load_scenarios(
    scenario_path: str | None, scale: float, processors: int | None = None
) -> tuple[Scenario, Scenario]:
    """The scenario at full size and scaled by `scale` (the same object when not scaled),
    every VM with `processors` virtual processors if given (--processors)."""
    try:
        full = load_scenario(scenario_path)
    except ScenarioError as e:
        raise CliFailure(str(e), EXIT_USAGE) from None
    if processors is not None:
        try:
            full = full.with_processors(processors)
        except SettingsError as e:
            raise CliFailure(f"--processors: {e}", EXIT_USAGE) from None
    return full, (full.scaled(scale) if scale != 1 else full)


def plan_for_cli(full: Scenario, s: Scenario, latency: Latency | None = None) -> Plan:
    """The plan of `s`, planned once, for the command to pass along (each restart's boot
    predicted, its time given the disk's `latency`); when `s` is `full` scaled, `full` is
    planned once too (without predictions: only its outcomes are compared), and where the
    scale changed the story is warned about on stderr."""
    from vmmem.lab.plan import plan_scenario, scale_warnings

    p = plan_scenario(s, latency)
    if s is not full and s.scale != full.scale:
        for w in scale_warnings(plan_scenario(full, predict=False), p):
            show_warning(w)
    return p


def load_for_cli(
    scenario_path: str | None, scale: float, *, warn: bool = True, processors: int | None = None
) -> Scenario:
    """The scenario, scaled (and with --processors); scale distortions are warned about on
    stderr."""
    full, s = load_scenarios(scenario_path, scale, processors)
    if warn and s is not full:
        plan_for_cli(full, s)
    return s


def check_outputs(
    json_path: str | None, plot_path: str | None, exports: dict[str, str | None] | None = None
) -> None:
    """Refuse (exit 2) a --json, --plot or export (option -> path) destination that could not
    be written, before anything is built: a storm takes minutes, its results must not be lost
    at the end."""
    from vmmem.cli.outputs import OutputError, check_output

    named = {"--json": json_path, **(exports or {})}
    try:
        for option, path in named.items():
            if path:
                check_output(option, path)
        if plot_path:
            check_output("--plot", plot_path, plot=True)
    except OutputError as e:
        raise CliFailure(str(e), EXIT_USAGE) from None
    seen: dict[str, str] = {}
    for option, path in {**named, "--plot": plot_path}.items():
        if path:
            key = os.path.abspath(path)
            if key in seen:
                raise CliFailure(
                    f"{seen[key]} and {option} both name {path}: give two files", EXIT_USAGE
                )
            seen[key] = option


def write_output(option: str, path: str, write: Callable[[str], None]) -> None:
    from vmmem.cli.outputs import write_atomically

    try:
        write_atomically(path, write)
    except OSError as e:
        raise CliFailure(f"{option} {path}: cannot write: {e.strerror or e}", EXIT_FAILED) from None


def write_json(path: str, data: dict[str, Any]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=False)
            f.write("\n")

    write_output("--json", path, write)


scenario_argument = click.argument(
    "scenario", required=False, type=click.Path(dir_okay=False), metavar="[SCENARIO.toml]"
)
processors_option = click.option(
    "--processors",
    type=click.IntRange(min=1),
    metavar="N",
    help="Give every VM N virtual processors (Set-VMProcessor -Count; 1 to 240, generation 1: "
    "64): its boot runs on N guest threads, a recording's vCPU k on processor k mod N "
    "(docs/GUESTS.md). Default: the scenario's processor_count, else 1.",
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
    A restart storm (the article's patch night): four idle VMs that fit a
    1400 MB host ballooned down restart at once and need 2048 MB to boot;
    Hyper-V gives the gap to Smart Paging files. How much slower is that
    boot, and how does the disk under the Smart Paging folder change it?
    A host reboot (reboot-host) is another event: each VM is saved and
    restored, or shut down and started from Off, which never uses Smart
    Paging but can fail ("Not enough memory in the system to start the
    virtual machine").

    \b
    Start here:
      vmmem plan                      no I/O: will a restart storm need Smart
                                      Paging, how much per VM, what avoids it;
                                      which VMs a host reboot restores, starts
                                      or fails to start, and the start delays
                                      that avoid failures
      vmmem disks --probe             where could the files go, how fast is each?
      vmmem run                       run the article's restart storm for real,
                                      once per guest (1/8 size, about a minute):
                                      how much slower each guest boots
      vmmem run --guest debian-12 --scale 4
                                      one guest, a table per VM, a verdict
      vmmem compare /mnt/ssd /mnt/hdd --scale 4
                                      the same storm with the files on each
                                      location, plus a baseline with enough memory
      vmmem guests                    the guests a VM can boot (--guest NAME)
      vmmem scenario --toml           the article's scenario as a file to edit
      vmmem show run.json             a saved result again (--plot to draw it)
      vmmem clean                     remove what runs that were killed left behind

    Every command takes a scenario file (TOML, see examples/) or runs the
    article's scenario when none is given. Sizes use Hyper-V's MB (2^20 bytes).
    """
    click.get_current_context().with_resource(_warnings_shown_once())


_shown: set[str] = set()  # this command's warnings shown so far (type and text)


def show_warning(w: VmmemWarning) -> None:
    """Show a warning for people on stderr, once per command whichever way it came (found by
    a check, or raised by the library with warnings.warn)."""
    key = f"{type(w).__name__}: {w}"
    if key in _shown:
        return
    _shown.add(key)
    err_console().print(f"[bold yellow]warning:[/bold yellow] {w}", highlight=False)


@contextmanager
def _warnings_shown_once() -> Iterator[None]:
    """While a command runs, every VmmemWarning the library raises is shown by show_warning
    (never as a Python warning line, never muted); other warnings as Python shows them."""
    with warnings.catch_warnings():
        default = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], *args: Any, **kw: Any) -> None:
            if isinstance(message, VmmemWarning):
                show_warning(message)
            else:
                default(message, category, *args, **kw)

        warnings.simplefilter("always", VmmemWarning)  # repeats are dropped by show_warning
        warnings.showwarning = show
        _shown.clear()
        try:
            yield
        finally:
            _shown.clear()
