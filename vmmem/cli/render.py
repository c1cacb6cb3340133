"""Tables for people (rich). Each function prints one report object; nothing here measures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from vmmem.devices import KIND_WORDS
from vmmem.hyperv.reboot import RebootOutcome
from vmmem.lab.scenario import Scenario
from vmmem.sizes import MB
from vmmem.sizes import format_duration as seconds
from vmmem.sizes import format_mb as mb

if TYPE_CHECKING:
    from vmmem.devices import DeviceInfo
    from vmmem.guests import GuestProfile
    from vmmem.lab.disks import ProbeResult
    from vmmem.lab.plan import Plan
    from vmmem.lab.progress import VMProgress
    from vmmem.lab.repeat import CompareStats, RepeatedCompare, RepeatedRun, RunStats, Spread
    from vmmem.lab.results import (
        BootResult,
        CompareResult,
        LocationResult,
        PlanRecord,
        RunResult,
    )

__all__ = [
    "FailedStart",
    "boot_label",
    "boot_rows",
    "disks",
    "guests",
    "plan",
    "scenario",
    "seconds",
]


def _opt_mb(value: int | None, fallback: str = "-") -> str:
    return fallback if value is None else mb(value)


def scenario(console: Console, s: Scenario) -> None:
    console.print(f"[bold]{s.name}[/bold]" + (f": {s.description}" if s.description else ""))
    scale = f", scaled 1/{s.scale:g}" if s.scale != 1 else ""
    console.print(f"source {s.source}{scale}")
    reserve = f" less a reserve of {mb(s.host_reserve)}" if s.host_reserve else ""
    console.print(
        f"host: {mb(s.host_memory)}{reserve}: {mb(s.available)} for VMs, "
        f"balancer every {s.balancer_interval:g} s"
    )
    t = Table(title="VMs", title_justify="left")
    for col in (
        "VM",
        "memory",
        "Startup",
        "Minimum",
        "Maximum",
        "Buffer",
        "Priority",
        "idle demand",
        "boot (enough RAM)",
        "Smart Paging folder",
    ):
        t.add_column(
            col, justify="left" if col in ("VM", "memory", "Smart Paging folder") else "right"
        )
    for v in s.vms:
        t.add_row(
            v.name,
            "dynamic" if v.dynamic else "static",
            mb(v.startup),
            _opt_mb(v.minimum, "-" if not v.dynamic else "(Startup)"),
            _opt_mb(v.maximum, "-" if not v.dynamic else "(Startup)"),
            f"{v.buffer} %" if v.buffer is not None else ("-" if not v.dynamic else "20 %"),
            str(v.priority),
            mb(v.idle_demand),
            seconds(v.workload.boot_seconds) if v.workload.boot_seconds else "default",
            v.smart_paging_path or s.smart_paging_path or "(VM's folder)",
        )
    console.print(t)
    # What the table leaves out: the boot, the virtual disk, what a host reboot does.
    for v in s.vms:
        boot = (
            f"recorded guest {v.workload.guest}"
            + (f" at {v.workload.guest_ips:.3g} instructions/s" if v.workload.guest_ips else "")
            if v.workload.guest
            else "synthetic boot"
        )
        disk = v.vhd_path or "its folder"
        size = f" ({mb(v.vhd_size)})" if v.vhd_size else ""
        console.print(
            f"  {v.name}: {boot}; virtual disk in {disk}{size}; at a host reboot "
            f"{v.automatic_stop_action}, then {v.automatic_start_action} after "
            f"{v.automatic_start_delay:g} s; generation {v.generation}; "
            f"{v.processor_count} virtual processor{'s' if v.processor_count > 1 else ''}",
            highlight=False,
        )
    console.print("events:")
    for i, e in enumerate(s.events):
        console.print(f"  {i}. {e.describe()}")


def plan(console: Console, p: Plan) -> None:
    s = p.scenario
    scale = f" (scaled 1/{s.scale:g})" if s.scale != 1 else ""
    console.print(
        f"[bold]plan for {s.name}[/bold]{scale}: {len(s.vms)} VMs, "
        f"{mb(s.available)} of host memory for VMs"
    )
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
        t.add_row(
            str(e.index),
            e.description,
            mb(e.needed),
            mb(e.available),
            mb(e.paging_total) if e.paging_total else "none",
            per_vm,
        )
    console.print(t)
    _predictions(console, p)
    idle = ", ".join(f"{n} {mb(b)}" for n, b in p.idle_assigned.items())
    console.print(
        f"idle, the VMs settle at: {idle} "
        f"({mb(sum(p.idle_assigned.values()))} of {mb(s.available)})"
    )
    style = (
        "bold red"
        if p.start_failures
        else ("bold yellow" if p.needs_smart_paging else "bold green")
    )
    console.print(f"[{style}]{p.verdict()}[/{style}]")
    if p.remedies:
        console.print(
            "\n[bold]ways to avoid Smart Paging[/bold] (each checked by planning the changed host):"
        )
        for r in p.remedies:
            mark = "[green]works[/green]" if r.works else "[red]not enough[/red]"
            console.print(f"  - {r.summary}: {mark}" + (f"; {r.caveat}" if r.caveat else ""))


def _us(seconds: float) -> str:
    us = seconds * 1e6
    return f"{us:,.0f} us" if us >= 10 else f"{us:.2g} us"


def _predictions(console: Console, p: Plan) -> None:
    """Each restarting VM's boot, predicted from its accesses (no rows: none)."""
    d = p.to_dict()
    rows = [(e, n, b) for e in d["events"] for n, b in e["predicted"].items()]
    if not rows:
        return
    lat = d["latency"]
    t = Table(
        title="predicted boots (each boot's accesses replayed into the memory it gets; LRU)",
        title_justify="left",
    )
    cols = ("#", "VM", "guest", "gets", "page-ins", "page-outs", "Smart Paging peak")
    for col in cols + ("no paging from", "boot"):
        t.add_column(col, justify="left" if col in ("VM", "guest") else "right")
    for e, n, b in rows:
        t.add_row(
            str(e["index"]), n, b["guest"], mb(b["assigned_bytes"]), f"{b['page_ins']:,}",
            f"{b['page_outs']:,}", mb(b["smart_paging_peak_bytes"]), mb(b["no_paging_bytes"]),
            seconds(b["boot_seconds"]) if b["boot_seconds"] is not None else "-",
        )  # fmt: skip
    console.print(t)
    for e in d["events"]:
        if e["predicted"]:
            held = sum(b["smart_paging_peak_bytes"] for b in e["predicted"].values())
            console.print(
                f"event {e['index']}: the guests hold at most {mb(held)} in their Smart Paging "
                f"files, of the {mb(e['smart_paging_total_bytes'])} of Startup RAM the host "
                "cannot give (a guest pages only what it touches beyond its memory)"
            )
    several = sorted({n for _, n, _ in rows if p.scenario.vm(n).processor_count > 1})
    if several:
        console.print(
            f"{', '.join(several)}: several virtual processors; their paging is predicted from "
            "the boot's accesses in one order (a recording's: the order its epochs ended in), "
            "an approximation of how the processors' streams interleave; guest CPU is the "
            "latest processor's"
        )
    if lat is None:
        console.print("boot times need the disk's latency: --latency (vmmem disks --probe)")
    else:
        console.print(
            f"boot = guest CPU + (page-ins + disk reads) x {_us(lat['read'])} + "
            f"(page-outs + disk writes) x {_us(lat['write'])}"
        )


def guests(console: Console, profiles: list[GuestProfile]) -> None:
    """The guest profiles a VM can boot, recorded and synthetic."""
    t = Table(title="guests a VM can boot (--guest NAME)", title_justify="left")
    for c, right in (
        ("name", False),
        ("kind", False),
        ("recorded in", True),
        ("vCPUs", True),
        ("pages touched", True),
        ("written", True),
        ("disk read", True),
        ("instructions", True),
        ("guest CPU", True),
        ("what", False),
    ):
        t.add_column(c, justify="right" if right else "left")
    for p in profiles:
        t.add_row(
            p.name,
            p.kind,
            mb(p.memory_size),
            "model" if p.vcpus is None else str(p.vcpus),
            f"{p.pages_touched:,}",
            f"{p.pages_written:,}",
            mb(p.disk_bytes_read),
            "-" if p.instructions is None else f"{p.instructions / 1e9:.2f} G",
            seconds(p.guest_cpu_seconds),
            p.description,
        )
    console.print(t)
    console.print(
        "guest CPU: a recorded guest's instructions at 2e9 per second (--guest-ips), the "
        "synthetic boot's 50 us per page of the Startup RAM shown (all vCPUs together); "
        "vCPUs: those it was recorded with (model: the VM's processor count); provenance: "
        "--json",
        style="dim",
    )


def disks(
    console: Console, infos: list[DeviceInfo], probes: dict[str, ProbeResult] | None = None
) -> None:
    probes = probes or {}
    t = Table(title="where a Smart Paging file could go", title_justify="left")
    cols = ["folder", "device", "model", "kind", "filesystem", "free"]
    if probes:
        cols += ["4K read QD1", "4K write QD1", "read p99", "reached device"]
    cols.append("note")
    for c in cols:
        t.add_column(
            c,
            justify="right" if c in ("free", "4K read QD1", "4K write QD1", "read p99") else "left",
        )
    for d in infos:
        note = ""
        if d.ram_backed:
            note = "[bold red]RAM-backed: measures nothing[/bold red]"
        elif not d.has_counters:
            note = "no device counters: I/O cannot be confirmed"
        kind = KIND_WORDS.get(d.kind, d.kind)
        row = [d.path, d.device or "-", d.model or "-", kind, d.fstype, mb(d.free_bytes)]
        if probes:
            pr = probes.get(d.path)
            if pr is None:
                row += ["-"] * 4
            elif pr.error:
                row += ["-", "-", "-", "-"]
                note = (note + "; " if note else "") + pr.error
            else:
                reached = {True: "yes", False: "NO", None: "unknown"}[pr.reached_device]
                row += [
                    f"{pr.read_iops:,.0f} IOPS",
                    f"{pr.write_iops:,.0f} IOPS",
                    f"{pr.read_p99_us:,.0f} us",
                    reached,
                ]
        row.append(note)
        t.add_row(*row)
    console.print(t)
    if any(d.ram_backed for d in infos):
        console.print(
            "[bold red]warning:[/bold red] RAM-backed folders (tmpfs, /dev/shm, zram) "
            "hold a Smart Paging file in RAM: nothing real is measured there."
        )
    if any(d.kind == "HDD" and not d.ram_backed for d in infos):
        console.print(
            "kind comes from the kernel's rotational flag; virtual disks often "
            "report rotational whatever is underneath, so --probe tells more.",
            style="dim",
        )


# ---------------------------------------------------------------------------------------------
# runs


# Left out first when the live table is wider than the terminal: state says little that the
# phase does not, demand and the boot's elapsed time less than the status and the ETA.
_PROGRESS_DROP_ORDER = ("state", "demand", "boot elapsed")
_PROGRESS_RIGHT = ("assigned", "demand", "Smart Paging", "boot elapsed", "ETA")


def progress_table(
    vms: list[VMProgress], available: int, elapsed: float, title: str, width: int | None = None
) -> Table:
    """The live view: one row per VM (a runner.VMProgress each). Given the terminal's
    `width`, columns are left out (state, then demand, then the boot's elapsed time) until
    the rest fit whole, rather than every column cut to a few letters."""
    rows = []
    for v in vms:
        status = v.memory_status or "-"
        rows.append(
            {
                "VM": v.name,
                "state": v.state,
                "phase": v.phase,
                "assigned": mb(v.memory_assigned),
                "demand": mb(v.memory_demand),
                "status": status,
                "Smart Paging": mb(v.smart_paging_bytes) if v.smart_paging_bytes else "-",
                "boot elapsed": seconds(v.boot_elapsed),
                "ETA": seconds(v.boot_eta) if v.boot_eta is not None else "-",
            }
        )
    columns = [
        "VM",
        "state",
        "phase",
        "assigned",
        "demand",
        "status",
        "Smart Paging",
        "boot elapsed",
        "ETA",
    ]
    if width is not None:
        for drop in _PROGRESS_DROP_ORDER:
            if _natural_width(columns, rows) <= width:
                break
            columns.remove(drop)
    t = Table(
        title=f"{title}   [dim]{elapsed:.1f} s, host free {mb(available)}[/dim]",
        title_justify="left",
    )
    for c in columns:
        t.add_column(c, justify="right" if c in _PROGRESS_RIGHT else "left", no_wrap=True)
    for row in rows:
        cells = [row[c] for c in columns]
        if row["status"] == "Paging":
            cells[columns.index("status")] = "[bold yellow]Paging[/bold yellow]"
        t.add_row(*cells)
    return t


def _natural_width(columns: list[str], rows: list[dict[str, str]]) -> int:
    """A rich table's width with every column at its widest cell (borders and padding: 3
    characters a column, plus 1)."""
    return 1 + sum(3 + max([len(c)] + [len(r[c]) for r in rows]) for c in columns)


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1e-3:
        return f"{value * 1e6:.0f} us"
    return f"{value * 1e3:.2f} ms"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} x"


# Columns of the run table: (header, right-aligned, in the default view). The default view
# fits 100-120 columns; --wide shows them all.
_RUN_COLUMNS = (
    ("VM", False, True),
    ("event", False, True),
    ("boot", True, True),
    ("baseline", True, True),
    ("slower", True, True),
    ("paged", True, True),
    ("file for", True, True),
    ("page-ins/outs", True, False),
    ("fault p50/p99", True, False),
    ("fault p99", True, True),
    ("file peak", True, False),
    ("disk read", True, False),
    ("device r/w", True, False),
    ("emulator", True, False),
    ("status", False, True),
)


def _guests_line(s: dict[str, Any]) -> str:
    """Which guest produced the figures: a recorded boot and its guest_ips, or the synthetic
    boot and its CPU time."""
    from vmmem.guests import DEFAULT_GUEST_IPS

    seen = []
    for v in s.get("vms", []):
        w = v.get("workload", {})
        if w.get("guest"):
            ips = w.get("guest_ips") or DEFAULT_GUEST_IPS
            text = f"guest {w['guest']} at {ips:.3g} instructions/s"
            if (w.get("guest_scale") or 1) != 1:
                text += f" (shrunk 1/{w['guest_scale']:g})"
        elif w.get("model"):
            text = f"model: {w['model']} (guesses: {', '.join(w.get('guesses') or [])})"
        elif w.get("boot_seconds"):
            text = f"synthetic boot of {w['boot_seconds']:g} s CPU"
        elif (w.get("boot") or {}).get("cpu_per_page") is not None:
            text = f"synthetic boot ({w['boot']['cpu_per_page'] * 1e6:.3g} us of CPU per page)"
        else:
            text = "synthetic boot (50 us of CPU per page; guesses: cpu_per_page)"
        if text not in seen:
            seen.append(text)
    return ", ".join(seen) or "synthetic boot"


# Left out first when the default table is wider than the terminal (80 columns): the
# figures a reader can do without before the boot time, the slowdown and the status.
_NARROW_DROP_ORDER = ("fault p99", "file for", "baseline", "paged")


@dataclass(frozen=True)
class FailedStart:
    """A row for a start a host reboot could not make (event ``event``; what the VM did)."""

    vm: str
    event: int
    outcome: RebootOutcome
    kind: str = "start"


Row = Union["BootResult", FailedStart]


def boot_label(result: RunResult, boot: Row) -> str:
    """A boot's event as people read it: a start (or restore) that a host reboot's automatic
    start action made is not the VM's first start."""
    kind = boot.kind
    if kind in ("start", "restore"):
        action = next((e.action for e in result.events if e.index == boot.event), None)
        if action == "reboot-host":
            return f"{kind} after reboot"
    return kind


def boot_rows(result: RunResult) -> list[tuple[Row, bool]]:
    """Every boot of the run and every start a host reboot could not make (a FailedStart), in
    the order they happened, each with whether it is its VM's last row."""
    return _boot_rows(result, result.boots, with_failed_starts=True)


def _boot_rows(
    result: RunResult, boots: list[BootResult], *, with_failed_starts: bool
) -> list[tuple[Row, bool]]:
    """The table's rows in the order they happened, each with whether it is its VM's last:
    every boot, and (with_failed_starts) every start a host reboot could not make."""
    keyed: list[tuple[int, float, Row]] = [(b.event, b.started_at, b) for b in boots]
    if with_failed_starts:
        for e in result.events:
            for name, o in e.outcomes.items():
                if o.result == "failed":
                    keyed.append((e.index, o.at or 0.0, FailedStart(name, e.index, o)))
    keyed.sort(key=lambda k: (k[0], k[1]))
    last = {k[2].vm: i for i, k in enumerate(keyed)}
    return [(k[2], last[k[2].vm] == i) for i, k in enumerate(keyed)]


def _final_state(result: RunResult, vm: str) -> str:
    """A VM's state as the run left it, true after the clean-up: the host was closed after the
    statuses were taken, which deleted every Smart Paging file."""
    st = next((x for x in result.final_status if x.name == vm), None)
    if st is None:
        return "-"
    fin = st.memory_status or st.state or "-"
    if st.state == "Off" and vm in result.failed_starts():
        return "Off (start failed)"
    if st.smart_paging_file_in_use:
        when = "when interrupted" if result.outcome == "interrupted" else "at the end"
        fin = f"was {fin} {when}; file deleted"
    return fin


def _boot_cells(result: RunResult, b: Row, last: bool) -> dict[str, str]:
    """One row of the run table: a boot's figures, or a start the host could not make."""
    if isinstance(b, FailedStart):
        cells = {c: "-" for c, _, _ in _RUN_COLUMNS}
        cells.update(
            {
                "VM": b.vm,
                "event": boot_label(result, b),
                "boot": "failed",
                "status": "Off: not enough memory" if last else "failed to start",
            }
        )
        return cells
    peak = b.smart_paging_peak_bytes
    sp_dur = seconds(b.smart_paging_seconds) if peak else "-"
    if peak and not b.smart_paging_ended:
        sp_dur += "+"
    dev = "-"
    if b.device_read_bytes is not None:
        dev = f"{b.device_read_bytes / MB:,.0f}/{(b.device_write_bytes or 0) / MB:,.0f} MB"
    if last:
        status = _final_state(result, b.vm)
    else:  # a later event booted (or stopped) it again: its last row says how it ended
        status = "booted" if b.boot_time is not None else "did not finish"
    return {
        "VM": b.vm,
        "event": boot_label(result, b),
        "boot": seconds(b.boot_time),
        "baseline": seconds(b.baseline),
        "slower": _ratio(b.slowdown),
        "paged": mb(peak) if peak else "no",
        "file for": sp_dur,
        "page-ins/outs": f"{b.page_ins:,}/{b.page_outs:,}",
        "fault p50/p99": f"{_ms(b.fault_p50)}/{_ms(b.fault_p99)}",
        "fault p99": _ms(b.fault_p99),
        "file peak": (mb(b.smart_paging_file_peak_size) if b.smart_paging_file_peak_size else "-"),
        "disk read": (
            f"{mb(b.disk_read_bytes)} in {b.disk_requests:,}" if b.disk_read_bytes else "-"
        ),
        "device r/w": dev,
        # the emulator's own share (never in "boot"): its thread's CPU, how far behind
        "emulator": (
            f"{seconds(b.emulator_cpu_seconds)} CPU, +{seconds(b.emulator_seconds or 0.0)}"
            if b.emulator_cpu_seconds is not None
            else "-"
        ),
        "status": status,
    }


def run_report(console: Console, result: RunResult, wide: bool = False) -> None:
    """The table per VM for the restart boots, the settings line, and the verdict."""
    s = result.scenario
    scale = f" (scaled 1/{s['scale']:g})" if s.get("scale", 1) != 1 else ""
    console.print(
        f"[bold]{s['name']}[/bold]{scale}: {len(s['vms'])} VMs on "
        f"{mb(s['host']['memory_bytes'] - s['host']['reserve_bytes'])}, "
        f"ran {seconds(result.duration)}; {_guests_line(s)}"
    )
    for loc in result.locations:
        io = loc.device_io
        io_txt = (
            f"device read {mb(io.read_bytes)}, wrote {mb(io.write_bytes)}"
            if io
            else "no device counters"
        )
        console.print(
            f"Smart Paging files in {result.location_name(loc)}: {loc.fstype} on "
            f"{loc.device or '-'} ({loc.model or '?'}, "
            f"{'RAM' if loc.ram_backed else KIND_WORDS.get(loc.kind, loc.kind)}); "
            f"{io_txt}"
        )
        storm_line = _storm_device_line(result, loc)
        if storm_line:
            console.print(storm_line)
    storm = result.storm_boots()
    rows = _boot_rows(result, storm or result.boots, with_failed_starts=not storm)
    columns = [(c, right) for c, right, default in _RUN_COLUMNS if wide or default]
    if wide:
        columns = [c for c in columns if c[0] != "fault p99"]  # in "fault p50/p99"
    cells = [_boot_cells(result, row, last) for row, last in rows]
    left_out: list[str] = []
    while True:
        t = Table(title="restart boots" if storm else "boots", title_justify="left")
        for c, right in columns:
            # The status says what is true at the end: never cut, wrapped if it must be.
            t.add_column(
                c,
                justify="right" if right else "left",
                no_wrap=c != "status",
                min_width=len("status") if c == "status" else None,
            )
        for row_cells in cells:
            t.add_row(*(row_cells[c] for c, _ in columns))
        droppable = [c for c in _NARROW_DROP_ORDER if c in dict(columns)]
        natural = Measurement.get(console, console.options.update_width(10_000), t).maximum
        if wide or not droppable or natural <= console.width:
            break
        # Too narrow for every column at its full width (rich would squeeze the last ones to
        # nothing): leave out the least needed, and say so below the table.
        left_out.append(droppable[0])
        columns = [c for c in columns if c[0] != droppable[0]]
    if rows:
        console.print(t)
        if left_out:
            console.print(
                f"(at {console.width} columns {', '.join(left_out)} left out; a wider "
                "terminal shows them, and the JSON has them)",
                style="dim",
                highlight=False,
            )
    storm_ev = result.storm_event()
    if result.plan is not None and storm_ev is not None:
        predicted = next(
            (e.smart_paging_total_bytes for e in result.plan.events if e.index == storm_ev), None
        )
        measured = result.storm_summary().smart_paging_peak_bytes
        if predicted is not None:
            console.print(
                f"Smart Paging for the storm: planned {mb(predicted)} (at the instant "
                f"of the restart), measured peak {mb(measured)} (sum over VMs)"
            )
        _predicted_vs_measured(console, result, result.plan)
    note = result.emulator_note()
    if note:
        console.print(note)
    _processors_lines(console, storm or result.boots)
    for e in result.events:
        if e.outcomes:
            what = ", ".join(f"{n} {o.result}" for n, o in e.outcomes.items())
            console.print(f"{e.description}: {what}" + (f" ({e.note})" if e.note else ""))
    for w in result.warnings:
        console.print(f"[bold yellow]warning:[/bold yellow] {w}")
    for note in result.earlier_runs:
        console.print(f"[yellow]{note}[/yellow]")
    if result.leftover_files:
        console.print(
            f"[bold red]{len(result.leftover_files)} of this run's Smart Paging file(s) were "
            "still there when their VM stopped, and have been deleted[/bold red]"
        )
    style = {
        "ok": "bold",
        "vms_failed": "bold red",
        "failed": "bold red",
        "interrupted": "bold yellow",
    }[result.outcome]
    console.print(f"[{style}]{result.verdict()}[/{style}]")


def _storm_device_line(result: RunResult, loc: LocationResult) -> str | None:
    """The device's own counters over the storm in one line: requests, queue depth (in all
    and per booting VM) and busy time; None when the run has no storm or no counters for it."""
    io = loc.storm_io
    if io is None or io.seconds is None:
        return None
    vms = result.storm_summary().vms
    text = (
        f"  the storm on {loc.device or loc.path}: {io.read_count:,} reads, "
        f"{io.write_count:,} writes in {seconds(io.seconds)}"
    )
    depth, busy = io.queue_depth, io.utilisation
    if depth is not None and busy is not None:
        per_vm = f" ({depth / vms:.2f} per VM)" if vms > 1 else ""
        text += f", queue depth {depth:.2f}{per_vm}, busy {busy * 100:.0f} %"
    return text


def _processors_lines(console: Console, boots: list[BootResult]) -> None:
    """Each boot on several virtual processors: every processor's time, the last one named
    (its boot time is that one's)."""
    for b in boots:
        times = b.processor_boot_times
        if b.processor_count > 1 and times and b.last_processor is not None:
            each = ", ".join(f"{t:.2f}" for t in times)
            console.print(
                f"{b.vm}: {b.processor_count} virtual processors, each booted in {each} s; "
                f"processor {b.last_processor} finished last",
                highlight=False,
            )


def _predicted_vs_measured(console: Console, result: RunResult, plan: PlanRecord) -> None:
    """The storm's paging as `vmmem plan` predicted it, beside what the run measured."""
    ev = result.storm_event()
    got = next((e.predicted for e in plan.events if e.index == ev), None)
    if not got:
        return
    ins = sum(b.page_ins for b in got.values())
    outs = sum(b.page_outs for b in got.values())
    peak = sum(b.smart_paging_peak_bytes for b in got.values())
    m = result.storm_summary()
    policy = result.settings.policy
    how = "LRU" if policy == "lru" else f"for LRU; this run used {policy}"
    console.print(
        f"predicted from the boot's accesses ({how}, memory fixed for the boot): page-ins/outs "
        f"{ins:,}/{outs:,}, peak {mb(peak)}; measured "
        f"{m.page_ins:,}/{m.page_outs:,}, peak {mb(m.smart_paging_peak_bytes)}"
    )


# Columns of the compare table: (header, right-aligned, in the default view).
_COMPARE_COLUMNS = (
    ("location", False, True),
    ("device", False, True),
    ("model", False, False),
    ("kind", False, True),
    ("filesystem", False, False),
    ("boot time", True, True),
    ("slower", True, True),
    ("fault p50", True, True),
    ("fault p90", True, False),
    ("fault p99", True, True),
    ("SP peak", True, True),
    ("device I/O", False, True),
    ("queue depth", True, False),
)


def compare_report(console: Console, cmp: CompareResult, wide: bool = False) -> None:
    """The side-by-side table of locations, and the summary line."""
    base = cmp.baseline.storm_summary() if cmp.baseline else None
    t = Table(title="the same boot storm, Smart Paging on each location", title_justify="left")
    columns = [(c, right) for c, right, default in _COMPARE_COLUMNS if wide or default]
    for c, right in columns:
        # A long location wraps rather than being cut: it is what the row is about.
        t.add_column(
            c,
            justify="right" if right else "left",
            overflow="fold" if c == "location" else "ellipsis",
        )
    rows = []
    if base:
        cells = {c: "-" for c, _ in columns}
        cells.update(
            {
                "location": "baseline (enough memory)",
                "boot time": seconds(base.boot_time),
                "slower": "1.00 x",
            }
        )
        rows.append(cells)
    for r in cmp.rows():
        kind = "?" if r.rotational is None else "rotational" if r.rotational else "non-rotational"
        if r.ram_backed:
            kind = "[bold red]RAM[/bold red]"
        rows.append(
            {
                "location": r.location,
                "device": r.device or "-",
                "model": r.model or "-",
                "kind": kind,
                "filesystem": r.fstype or "-",
                "boot time": (
                    seconds(r.boot_time) if r.outcome in ("ok", "vms_failed") else r.outcome
                ),
                "slower": _ratio(r.slowdown),
                "fault p50": _ms(r.fault_p50),
                "fault p90": _ms(r.fault_p90),
                "fault p99": _ms(r.fault_p99),
                "SP peak": mb(r.smart_paging_peak_bytes) if r.smart_paging_peak_bytes else "-",
                "device I/O": {True: "confirmed", False: "NOT seen", None: "-"}[
                    r.device_io_confirmed
                ],
                "queue depth": (
                    f"{r.device_queue_depth:.2f}" if r.device_queue_depth is not None else "-"
                ),
            }
        )
    for cells in rows:
        t.add_row(*(cells[c] for c, _ in columns))
    console.print(t)
    console.print(f"[bold]{cmp.summary()}[/bold]")


# ---------------------------------------------------------------------------------------------
# repeated runs (vmmem.lab.repeat) and the table exports


def spread_cell(sp: Spread | None, unit: str = "s") -> str:
    """mean +- sd (min .. max), in seconds, MB or a count."""
    if sp is None:
        return "-"

    def one(v: float) -> str:
        if unit == "s":
            return f"{v:.2f} s" if v < 60 else seconds(v)
        if unit == "MB":
            return f"{v / MB:,.1f} MB"
        if unit == "x":
            return f"{v:.2f} x"
        return f"{v:,.0f}"

    if sp.max == 0 and sp.min == 0:
        return "-"
    return f"{one(sp.mean)} +- {one(sp.sd)} ({one(sp.min)} .. {one(sp.max)})"


_STAT_FIGURES = (
    ("boot time (storm)", "boot_time", "s"),
    ("baseline", "baseline", "s"),
    ("slowdown", "slowdown", "x"),
    ("Smart Paging peak", "smart_paging_peak_bytes", "MB"),
    ("page-ins", "page_ins", "n"),
    ("page-outs", "page_outs", "n"),
)


def _outlier_warnings(console: Console, stats: RunStats) -> None:
    for w in stats.outliers:
        console.print(f"Warning: {w}", style="yellow", highlight=False)


def run_stats_report(console: Console, stats: RunStats) -> None:
    """The storm's figures over the runs: mean +- sd (min .. max), and outlier warnings."""
    warm = f", after {stats.warmup} warm-up run(s) discarded" if stats.warmup else ""
    t = Table(title=f"over {stats.runs} runs{warm}", title_justify="left")
    for c in ("figure", "mean +- sd (min .. max)"):
        t.add_column(c)
    for label, key, unit in _STAT_FIGURES:
        t.add_row(label, spread_cell(getattr(stats, key), unit))
    console.print(t)
    _outlier_warnings(console, stats)


def compare_stats_report(console: Console, cs: CompareStats) -> None:
    """Each location's storm over the runs, the verdict that respects the spread, outliers."""
    every = ([("baseline (enough memory)", cs.baseline)] if cs.baseline else []) + [
        (x.location, x.stats) for x in cs.locations
    ]
    n = every[0][1].runs if every else 0
    warm = (
        f", after {every[0][1].warmup} warm-up(s) discarded" if every and every[0][1].warmup else ""
    )
    t = Table(title=f"over {n} runs{warm}: mean +- sd (min .. max)", title_justify="left")
    columns = ("location", "boot time", "slower", "SP peak", "page-ins")
    for c in columns:
        t.add_column(c, overflow="fold" if c == "location" else "ellipsis")
    for name, st in every:
        t.add_row(
            name,
            spread_cell(st.boot_time, "s"),
            spread_cell(st.slowdown, "x") if st is not cs.baseline else "1.00 x",
            spread_cell(st.smart_paging_peak_bytes, "MB"),
            spread_cell(st.page_ins, "n"),
        )
    console.print(t)
    console.print(f"[bold]{cs.verdict}[/bold]", highlight=False)
    for _, st in every:
        _outlier_warnings(console, st)


@dataclass(frozen=True)
class ExportTable:
    """What --export-markdown and --export-csv write: a header and rows of plain values."""

    header: list[str]
    rows: list[list[Any]]


def _plain(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def write_csv(table: ExportTable, path: str) -> None:
    import csv

    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(table.header)
        w.writerows([_plain(v) for v in row] for row in table.rows)


def write_markdown(table: ExportTable, path: str) -> None:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    with open(path, "w", encoding="utf-8") as f:
        f.write(line(table.header) + "\n")
        f.write("|" + "|".join("---" for _ in table.header) + "|\n")
        for row in table.rows:
            f.write(line([_plain(v) for v in row]) + "\n")


_STAT_KEYS = ("mean", "sd", "min", "max")


def _stat_cols(name: str) -> list[str]:
    return [f"{name}_{k}" for k in _STAT_KEYS]


def _stat_values(sp: Spread | None) -> list[Any]:
    return [getattr(sp, k) if sp else None for k in _STAT_KEYS]


def run_export(rep: RepeatedRun) -> ExportTable:
    """The per-VM boots table (the first run's boots; with --runs > 1 each boot's time over
    the runs, matched by VM, event and order)."""
    from vmmem.lab.repeat import spread

    first = rep.runs[0]
    header = [
        "vm", "event", "boot_time_s", "baseline_s", "slowdown",
        "smart_paging_peak_bytes", "page_ins", "page_outs",
    ]  # fmt: skip
    several = len(rep.runs) > 1
    if several:
        header += ["runs", *_stat_cols("boot_time_s"), *_stat_cols("slowdown")]

    def keyed(run: RunResult) -> dict[tuple[str, int, int], BootResult]:
        seen: dict[tuple[str, int], int] = {}
        out = {}
        for b in sorted(run.boots, key=lambda b: (b.event, b.started_at)):
            k = seen.get((b.vm, b.event), 0)
            seen[(b.vm, b.event)] = k + 1
            out[(b.vm, b.event, k)] = b
        return out

    each = [keyed(r) for r in rep.runs]
    rows = []
    for key, b in each[0].items():
        row: list[Any] = [
            b.vm, boot_label(first, b), b.boot_time, b.baseline, b.slowdown,
            b.smart_paging_peak_bytes, b.page_ins, b.page_outs,
        ]  # fmt: skip
        if several:
            same = [m[key] for m in each if key in m]
            row += [len(same)]
            row += _stat_values(spread([x.boot_time for x in same]))
            row += _stat_values(spread([x.slowdown for x in same]))
        rows.append(row)
    return ExportTable(header, rows)


def compare_export(rep: RepeatedCompare) -> ExportTable:
    """One row per location (and the baseline): device facts and the storm's figures of the
    first comparison; with --runs > 1 the spread of each figure over the runs too."""
    cmp = rep.compares[0]
    header = [
        "location", "device", "model", "rotational", "ram_backed", "filesystem", "outcome",
        "boot_time_s", "slowdown", "smart_paging_peak_bytes", "page_ins", "page_outs",
        "fault_p50_s", "fault_p99_s", "device_io_confirmed",
    ]  # fmt: skip
    several = len(rep.compares) > 1
    stats = rep.stats() if several else None
    if several:
        header += ["runs"]
        for k in ("boot_time_s", "slowdown", "smart_paging_peak_bytes", "page_ins", "page_outs"):
            header += _stat_cols(k)

    def stat_cells(st: RunStats | None) -> list[Any]:
        if st is None:
            return [None] * 21
        out: list[Any] = [st.runs]
        for k in ("boot_time", "slowdown", "smart_paging_peak_bytes", "page_ins", "page_outs"):
            out += _stat_values(getattr(st, k))
        return out

    rows: list[list[Any]] = []
    if cmp.baseline is not None:
        base = cmp.baseline.storm_summary()
        row: list[Any] = ["baseline", *[None] * 5, cmp.baseline.outcome, base.boot_time, 1.0]
        row += [base.smart_paging_peak_bytes, base.page_ins, base.page_outs, None, None, None]
        if stats is not None:
            row += stat_cells(stats.baseline)
        rows.append(row)
    by_loc = {x.location: x.stats for x in stats.locations} if stats else {}
    for r in cmp.rows():
        row = [
            r.location, r.device, r.model, r.rotational, r.ram_backed, r.fstype, r.outcome,
            r.boot_time, r.slowdown, r.smart_paging_peak_bytes, r.page_ins, r.page_outs,
            r.fault_p50, r.fault_p99, r.device_io_confirmed,
        ]  # fmt: skip
        if stats is not None:
            row += stat_cells(by_loc.get(r.location))
        rows.append(row)
    return ExportTable(header, rows)
