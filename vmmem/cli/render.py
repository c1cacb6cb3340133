"""Tables for people (rich). Each function prints one report object; nothing here measures."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from vmmem.cli.scenario import Scenario, mb

if TYPE_CHECKING:
    from vmmem.cli.disks import ProbeResult
    from vmmem.cli.plan import Plan
    from vmmem.devices import DeviceInfo

__all__ = ["disks", "gib", "plan", "scenario", "seconds"]


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:,.1f} GiB"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2f} s"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def _opt_mb(value: int | None, fallback: str = "-") -> str:
    return fallback if value is None else mb(value)


def scenario(console: Console, s: Scenario) -> None:
    console.print(f"[bold]{s.name}[/bold]" + (f": {s.description}" if s.description else ""))
    scale = f", scaled 1/{s.scale:g}" if s.scale != 1 else ""
    console.print(f"source {s.source}{scale}")
    console.print(f"host: {mb(s.host_memory)} for VMs, reserve {mb(s.host_reserve)}, "
                  f"balancer every {s.balancer_interval:g} s")
    t = Table(title="VMs", title_justify="left")
    for col in ("VM", "memory", "Startup", "Minimum", "Maximum", "Buffer", "Priority",
                "idle demand", "boot (enough RAM)", "Smart Paging folder"):
        t.add_column(col, justify="left" if col in ("VM", "memory", "Smart Paging folder")
                     else "right")
    for v in s.vms:
        t.add_row(
            v.name, "dynamic" if v.dynamic else "static", mb(v.startup),
            _opt_mb(v.minimum, "-" if not v.dynamic else "(Startup)"),
            _opt_mb(v.maximum, "-" if not v.dynamic else "(Startup)"),
            f"{v.buffer} %" if v.buffer is not None else ("-" if not v.dynamic else "20 %"),
            str(v.priority), mb(v.idle_demand),
            seconds(v.workload.boot_seconds) if v.workload.boot_seconds else "default",
            v.smart_paging_path or s.smart_paging_path or "(VM's folder)")
    console.print(t)
    console.print("events:")
    for i, e in enumerate(s.events):
        console.print(f"  {i}. {e.describe()}")


def plan(console: Console, p: Plan) -> None:
    s = p.scenario
    scale = f" (scaled 1/{s.scale:g})" if s.scale != 1 else ""
    console.print(f"[bold]plan for {s.name}[/bold]{scale}: {len(s.vms)} VMs, "
                  f"{mb(s.available)} of host memory for VMs")
    t = Table(title="per event", title_justify="left")
    for col in ("#", "event", "needs", "host can give", "Smart Paging", "per VM"):
        t.add_column(col, justify="left" if col in ("event", "per VM") else "right")
    for e in p.events:
        if e.action in ("idle", "settle"):
            continue
        if e.start_failures:
            per_vm = "cannot start: " + ", ".join(e.start_failures)
        elif e.paging_total:
            per_vm = ", ".join(f"{n} {mb(b)}" for n, b in e.paging.items() if b)
        else:
            per_vm = "-"
        t.add_row(str(e.index), e.description, mb(e.needed), mb(e.available),
                  mb(e.paging_total) if e.paging_total else "none", per_vm)
    console.print(t)
    idle = ", ".join(f"{n} {mb(b)}" for n, b in p.idle_assigned.items())
    console.print(f"idle, the VMs settle at: {idle} "
                  f"({mb(sum(p.idle_assigned.values()))} of {mb(s.available)})")
    style = "bold red" if p.start_failures else ("bold yellow" if p.needs_smart_paging
                                                  else "bold green")
    console.print(f"[{style}]{p.verdict()}[/{style}]")
    if p.remedies:
        console.print("\n[bold]ways to avoid Smart Paging[/bold] (each checked by planning the "
                      "changed host):")
        for r in p.remedies:
            mark = "[green]works[/green]" if r.works else "[red]not enough[/red]"
            console.print(f"  - {r.summary}: {mark}" + (f"; {r.caveat}" if r.caveat else ""))


def disks(console: Console, infos: list[DeviceInfo],
          probes: dict[str, ProbeResult] | None = None) -> None:
    probes = probes or {}
    t = Table(title="where a Smart Paging file could go", title_justify="left")
    cols = ["folder", "device", "model", "kind", "filesystem", "free"]
    if probes:
        cols += ["4K read QD1", "4K write QD1", "read p99", "reached device"]
    cols.append("note")
    for c in cols:
        t.add_column(c, justify="right" if c in ("free", "4K read QD1", "4K write QD1",
                                                 "read p99") else "left")
    for d in infos:
        note = ""
        if d.ram_backed:
            note = "[bold red]RAM-backed: measures nothing[/bold red]"
        elif not d.has_counters:
            note = "no device counters: I/O cannot be confirmed"
        kind = {"HDD": "rotational", "SSD": "non-rotational"}.get(d.kind, d.kind)
        row = [d.path, d.device or "-", d.model or "-", kind, d.fstype, gib(d.free_bytes)]
        if probes:
            pr = probes.get(d.path)
            if pr is None:
                row += ["-"] * 4
            elif pr.error:
                row += ["-", "-", "-", "-"]
                note = (note + "; " if note else "") + pr.error
            else:
                reached = {True: "yes", False: "NO", None: "unknown"}[pr.reached_device]
                row += [f"{pr.read_iops:,.0f} IOPS", f"{pr.write_iops:,.0f} IOPS",
                        f"{pr.read_p99_us:,.0f} us", reached]
        row.append(note)
        t.add_row(*row)
    console.print(t)
    if any(d.ram_backed for d in infos):
        console.print("[bold red]warning:[/bold red] RAM-backed folders (tmpfs, /dev/shm, zram) "
                      "hold a Smart Paging file in RAM: nothing real is measured there.")
    if any(d.kind == "HDD" and not d.ram_backed for d in infos):
        console.print("kind comes from the kernel's rotational flag; virtual disks often "
                      "report rotational whatever is underneath, so --probe tells more.",
                      style="dim")
