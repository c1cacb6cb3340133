"""``vmmem scenario import``: a Hyper-V host's PowerShell export as a scenario file.

`scenario` stays one command (``vmmem scenario FILE...`` checks scenario files); its first
argument ``import`` hands the rest to this command (ScenarioCommand). The reading itself is
lab policy: vmmem.lab.hyperv_import.
"""

from __future__ import annotations

import os
import tomllib
from typing import Any

import click

from vmmem.cli.common import EXIT_USAGE, CliFailure, write_output

__all__ = ["ScenarioCommand", "import_cmd"]


@click.command("import", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(dir_okay=False), metavar="FILE..."
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    metavar="OUT.toml",
    help="Write the scenario here (default: print it).",
)
def import_cmd(files: tuple[str, ...], output: str | None) -> None:
    """Turn what a Hyper-V host exports with PowerShell into a scenario file.

    FILE... is one file written by tools/Export-VmmemHost.ps1 on the host, or
    the JSON of these commands, one per file (recognised by content):

    \b
      Get-VM | Select-Object Name, State, Generation, ProcessorCount,
        DynamicMemoryEnabled, MemoryStartup, MemoryMinimum, MemoryMaximum,
        MemoryAssigned, MemoryDemand, AutomaticStartAction,
        AutomaticStartDelay, AutomaticStopAction, SmartPagingFilePath,
        Path | ConvertTo-Json
      Get-VMMemory -VMName * | ConvertTo-Json
      Get-VMHost | ConvertTo-Json

    Windows PowerShell 5.1 and PowerShell 7 output are both read (UTF-8 or
    UTF-16, enums as integers or with -EnumsAsStrings). Each value of the
    scenario is commented with the file and property it came from. A VM
    that was running starts and idles at its MemoryDemand; Off and Saved
    VMs stay off. plan, run and compare also take such an export directly.

    \b
    Examples:
      vmmem scenario import hv01.json -o hv01.toml
      vmmem scenario import vm.json vmmemory.json vmhost.json > hv01.toml
      vmmem plan hv01.json
    """
    from vmmem.lab.hyperv_import import export_to_toml
    from vmmem.lab.scenario import ScenarioError, parse_scenario

    if output is not None:
        from vmmem.cli.outputs import OutputError, check_output

        try:
            check_output("-o", output)
        except OutputError as e:
            raise CliFailure(str(e), EXIT_USAGE) from None
        for f in files:
            if os.path.exists(f) and os.path.exists(output) and os.path.samefile(f, output):
                raise CliFailure(
                    f"-o {output} is one of the exports read: give another file", EXIT_USAGE
                )
    try:
        text = export_to_toml(list(files))
        # What is written must read back as a scenario: the same reader plan and run use.
        s = parse_scenario(tomllib.loads(text), output or "<import>")
    except ScenarioError as e:
        raise CliFailure(str(e), EXIT_USAGE) from None
    if output is None:
        click.echo(text, nl=False)
        return

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    write_output("-o", output, write)
    running = len(s.events[0].vms) if s.events and s.events[0].action == "start" else 0
    click.echo(
        f"wrote {output}: {s.name}, {len(s.vms)} VM(s), {running} running; next: "
        f"vmmem plan {_quote(output)}",
        err=True,
    )


def _quote(path: str) -> str:
    return path if all(c.isalnum() or c in "/._-+" for c in path) else repr(path)


class ScenarioCommand(click.Command):
    """`vmmem scenario`: checks scenario files; ``vmmem scenario import ...`` is import_cmd."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        if args and args[0] == "import":
            name = f"{info_name or 'scenario'} import"
            return import_cmd.make_context(name, list(args[1:]), parent=parent, **extra)
        return super().make_context(info_name, args, parent=parent, **extra)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        with formatter.section("Import a Hyper-V host"):
            formatter.write_text(
                "vmmem scenario import FILE... [-o OUT.toml]: what the host exports with "
                "PowerShell (tools/Export-VmmemHost.ps1) as a scenario file; see "
                "`vmmem scenario import --help` and docs/IMPORT.md."
            )
