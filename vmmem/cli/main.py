"""The ``vmmem`` command: plan, run and compare Hyper-V Smart Paging boot storms on real disks.

Exit codes (also in ``vmmem --help`` and docs/CLI.md):

    0    done
    1    the run failed and stopped (a VM could not start at a start event, a paging-file
         error, ...)
    2    usage or scenario error (bad option, bad or missing scenario file)
    3    a location was refused (missing, not writable, too little free space, in use)
    4    the run finished and was measured, but a host reboot could not start every VM
    130  interrupted (Ctrl-C or SIGTERM): partial results printed, no Smart Paging file left
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import click

from vmmem.cli import experiments, info, sweep  # noqa: F401 - their commands join the group
from vmmem.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    EXIT_VMS_FAILED,
    cli,
)

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "EXIT_VMS_FAILED",
    "cli",
    "main",
]


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point.

    Ctrl-C and SIGTERM end every command the same way: what it made is cleaned up on the way
    out (each command's own finally/with blocks), a message says so, and the exit code is 130.
    (Click's standalone mode would turn Ctrl-C into "Aborted!" and exit 1.)
    """
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
