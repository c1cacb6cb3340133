"""What a run measured, as plain data: the JSON a user keeps, and what tables and plots read.

A ``RunResult`` is filled by the runner from the Hyper-V layer's own reports (BootReport,
VMStatus, TimelineSample ``as_dict()``s, see docs/HYPERV.md) and from the device counters; it
can be written to JSON and read back (``RunResult.from_dict``), so a saved run can be shown and
plotted again. A ``CompareResult`` holds one RunResult per Smart Paging location plus the
baseline run. The JSON layout is documented by docs/json-schema.json (``SCHEMA_VERSION``).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from dataclasses import dataclass, field
from typing import Any

import psutil

__all__ = ["SCHEMA_VERSION", "CompareResult", "RunResult", "machine_facts", "now_iso"]

SCHEMA_VERSION = 3  # 2: headline fields, boots' file life, earlier_runs, reboot outcomes;
# full VMStatus samples, stored percentiles. 3: boot_time is the boot's own clock (guest time
# plus measured waits), the emulator's share beside it. 1 and 2 are still read.
READABLE_VERSIONS = (1, 2, 3)
STORM_KINDS = ("host-restart", "restart", "reset")


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def machine_facts() -> dict[str, Any]:
    """The machine the figures come from."""
    cpu_model = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        vmmem_version = version("vmmem")
    except Exception:  # not installed as a distribution (running from a source tree)
        vmmem_version = None
    return {
        "hostname": platform.node(),
        "system": platform.system(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu_model": cpu_model,
        "cpus": os.cpu_count(),
        "memory_total_bytes": psutil.virtual_memory().total,
        "python": sys.version.split()[0],
        "vmmem_version": vmmem_version,
    }


@dataclass
class RunResult:
    """One scenario run. Sizes in bytes, times in seconds; see docs/json-schema.json."""

    scenario: dict[str, Any]  # Scenario.to_dict()
    outcome: str = "ok"  # "ok", "vms_failed", "failed", "interrupted" (docs/CLI.md)
    error: str | None = None
    started: str = field(default_factory=now_iso)
    duration: float = 0.0
    machine: dict[str, Any] = field(default_factory=machine_facts)
    settings: dict[str, Any] = field(default_factory=dict)  # backend, policy, page size ...
    plan: dict[str, Any] | None = None  # the prediction (Plan.to_dict()), for comparison
    events: list[dict[str, Any]] = field(default_factory=list)
    boots: list[dict[str, Any]] = field(default_factory=list)  # BootReport.as_dict() + event
    final_status: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    locations: list[dict[str, Any]] = field(default_factory=list)  # device facts + I/O
    fault_latency_cdf: dict[str, list[float]] = field(
        default_factory=lambda: {"seconds": [], "fraction": []}
    )
    # p50/p90/p99 of the storm's merged faults, as LatencyHistogram.percentile gives them.
    fault_latency_percentiles: dict[str, float | None] = field(default_factory=dict)
    leftover_files: list[str] = field(default_factory=list)
    earlier_runs: list[str] = field(default_factory=list)  # what dead runs left, removed
    warnings: list[str] = field(default_factory=list)

    # --- derived figures --------------------------------------------------------------------

    def storm_boots(self) -> list[dict[str, Any]]:
        """The boots of restart events (the ones Smart Paging can serve)."""
        return [b for b in self.boots if b.get("kind") in STORM_KINDS]

    def failed_starts(self) -> list[str]:
        """The VMs whose automatic start failed at a host reboot (Hyper-V's "Not enough memory
        in the system to start the virtual machine"), in event order."""
        return [
            name
            for e in self.events
            for name, o in (e.get("outcomes") or {}).items()
            if o.get("result") == "failed"
        ]

    def storm_event(self) -> int | None:
        """Index of the first restart event with boots (the storm the verdict is about)."""
        idx = [int(b["event"]) for b in self.storm_boots() if b.get("event") is not None]
        return min(idx) if idx else None

    def storm_summary(self) -> dict[str, Any]:
        """Boot time of the storm (the slowest boot of its first restart event), its baseline
        (the slowest of those VMs' full-memory boots), slowdown, Smart Paging totals."""
        ev = self.storm_event()
        boots = [b for b in self.storm_boots() if b.get("event") == ev]
        if not boots:
            return {
                "event": None,
                "vms": 0,
                "boot_time": None,
                "baseline": None,
                "slowdown": None,
                "smart_paging_vms": 0,
                "smart_paging_peak_bytes": 0,
                "smart_paging_seconds": None,
                "smart_paging_slowest_vm": None,
                "smart_paging_boot_time": None,
                "smart_paging_baseline": None,
                "smart_paging_slowdown": None,
                "others_slowdown": None,
                "page_ins": 0,
                "page_outs": 0,
                "fault_p50": None,
                "fault_p99": None,
                "emulator_seconds": None,
                "emulator_cpu_seconds": None,
            }
        times = [b["boot_time"] for b in boots if b.get("boot_time") is not None]
        bases = [b["baseline"] for b in boots if b.get("baseline")]
        boot_time = max(times) if times else None
        baseline = max(bases) if bases else None
        paging = [b for b in boots if b.get("smart_paging_peak_bytes")]
        # The cost of Smart Paging: the paging VM slowed most against its own baseline (not
        # the storm against the largest VM's baseline, which mixes VMs that did not page).
        rated = [b for b in paging if b.get("slowdown")]
        worst = max(rated, key=lambda b: b["slowdown"]) if rated else None
        others = [b["slowdown"] for b in boots if b not in paging and b.get("slowdown")]
        p50 = [b["fault_p50"] for b in boots if b.get("fault_p50") is not None]
        p99 = [b["fault_p99"] for b in boots if b.get("fault_p99") is not None]
        return {
            "event": ev,
            "vms": len(boots),
            "boot_time": boot_time,
            "baseline": baseline,
            "slowdown": (boot_time / baseline) if boot_time and baseline else None,
            "smart_paging_vms": len(paging),
            "smart_paging_peak_bytes": sum(b.get("smart_paging_peak_bytes") or 0 for b in boots),
            "smart_paging_seconds": max(
                (b.get("smart_paging_seconds") or 0 for b in paging), default=None
            ),
            "smart_paging_slowest_vm": worst["vm"] if worst else None,
            "smart_paging_boot_time": worst["boot_time"] if worst else None,
            "smart_paging_baseline": worst["baseline"] if worst else None,
            "smart_paging_slowdown": worst["slowdown"] if worst else None,
            "others_slowdown": max(others) if others else None,
            "page_ins": sum(b.get("page_ins") or 0 for b in boots),
            "page_outs": sum(b.get("page_outs") or 0 for b in boots),
            "fault_p50": max(p50) if p50 else None,
            "fault_p99": max(p99) if p99 else None,
            # The emulator's own share of the storm's boots (never in their boot times).
            "emulator_seconds": _most(boots, "emulator_seconds"),
            "emulator_cpu_seconds": _most(boots, "emulator_cpu_seconds"),
        }

    def emulator_note(self) -> str | None:
        """The emulator's own share of the boots, as one line (None: not recorded, e.g. a
        file from before version 3)."""
        from vmmem.sizes import format_duration as seconds

        cpu, behind = (
            _most(self.boots, "emulator_cpu_seconds"),
            _most(self.boots, "emulator_seconds"),
        )
        if cpu is None and behind is None:
            return None
        note = (
            f"the emulator's own share, kept out of every boot time: up to "
            f"{seconds(cpu or 0.0)} of CPU per boot (its thread: Python, numpy, the replay), and "
            f"its wall clock up to {seconds(behind or 0.0)} behind the boot's time (guest CPU "
            f"plus measured waits)"
        )
        late = [
            b
            for b in self.boots
            if (b.get("emulator_seconds") or 0) > 0.1 * (b.get("boot_time") or 0)
        ]
        if late:
            # Behind its clock, a guest issued its I/O later than the modelled boot would have.
            note += (
                f"; more than 10 % behind in {len(late)} boot(s): the machine was busy, so "
                "their I/O came later and more spread out than the boots' clocks say"
            )
        return note

    def device_io_confirmed(self) -> bool | None:
        """Did the devices under the Smart Paging folders move by at least the paged bytes?

        None when nothing was paged or no folder has device counters (tmpfs)."""
        paged_r = sum(b.get("bytes_read") or 0 for b in self.boots)
        paged_w = sum(b.get("bytes_written") or 0 for b in self.boots)
        if paged_r + paged_w == 0:
            return None
        io: list[dict[str, int]] = [
            loc["device_io"] for loc in self.locations if loc.get("device_io")
        ]
        if not io:
            return None
        dev_r = sum(d["read_bytes"] for d in io)
        dev_w = sum(d["write_bytes"] for d in io)
        return dev_r >= paged_r and dev_w >= paged_w

    def location_folders(self) -> dict[str, str]:
        """Mount point of each location -> the folder its Smart Paging files were in (the
        common folder of the VMs' Smart Paging folders on it): one name per location, used by
        the header and the verdict alike."""
        folders = self.settings.get("paging_folders") or []
        mounts = sorted(
            (loc.get("mountpoint") or loc.get("path") or "" for loc in self.locations),
            key=len,
            reverse=True,
        )
        out: dict[str, str] = {}
        for loc in self.locations:
            mount = loc.get("mountpoint") or loc.get("path") or ""
            mine = [f for f in folders if next((m for m in mounts if _under(f, m)), None) == mount]
            out[mount] = os.path.commonpath(mine) if mine else loc.get("path", "?")
        return out

    def location_name(self, loc: dict[str, Any]) -> str:
        mount = loc.get("mountpoint") or loc.get("path") or ""
        return str(self.location_folders().get(mount, loc.get("path", "?")))

    def verdict(self) -> str:
        """The headline: how many VMs booted on Smart Paging and what it cost the one it
        slowed most (against that VM's own full-memory boot), and where the files were; and
        which VMs a host reboot could not start, whatever else the run was about."""
        text = self._headline()
        failed = self.failed_starts()
        if self.outcome == "vms_failed" and failed and not text.startswith("host reboot:"):
            text += (
                f"; at the host reboot {', '.join(failed)} failed to start: Not enough memory "
                "in the system to start the virtual machine"
            )
        return text

    def _headline(self) -> str:
        from vmmem.sizes import format_duration as seconds
        from vmmem.sizes import format_mb as mb

        if self.outcome == "interrupted":
            return "interrupted: partial results; every Smart Paging file was deleted"
        if self.outcome == "failed":
            return f"the run failed: {self.error}"
        st = self.storm_summary()
        reboots = [e for e in self.events if e.get("action") == "reboot-host" and e.get("outcomes")]
        if st["event"] is None and reboots:
            outcomes = reboots[-1]["outcomes"]
            counts: dict[str, list[str]] = {}
            for name, o in outcomes.items():
                counts.setdefault(o["result"], []).append(name)
            text = "; ".join(f"{', '.join(v)} {k}" for k, v in counts.items())
            failed = (
                ": Not enough memory in the system to start the virtual machine"
                if "failed" in counts
                else ""
            )
            return (
                f"host reboot: {text}{failed}; no Smart Paging (a start from Off or from a "
                "saved state never uses it)"
            )
        if st["event"] is None:
            return "no VM restarted, so Smart Paging never came into play"
        if not st["smart_paging_vms"]:
            short = [
                b
                for b in self.storm_boots()
                if b.get("event") == st["event"]
                and b.get("smart_paging")
                and b.get("assigned_at_boot", 0) < b.get("startup_bytes", 0)
            ]
            if short:
                gap = sum(b["startup_bytes"] - b["assigned_at_boot"] for b in short)
                return (
                    f"no page went to Smart Paging: {len(short)} VM(s) restarted short of "
                    f"their Startup RAM ({mb(gap)} in all, a Smart Paging file allowed each) but "
                    f"their guests touched no more than the memory they were given; the "
                    f"restart took {seconds(st['boot_time'])} (baseline "
                    f"{seconds(st['baseline'])})"
                )
            return (
                f"no Smart Paging: the restart of {st['vms']} VM(s) took "
                f"{seconds(st['boot_time'])} (baseline {seconds(st['baseline'])})"
            )
        where = "; ".join(f"{self.location_name(loc)}: {_kind(loc)}" for loc in self.locations)
        left = (
            "every Smart Paging file is gone"
            if not self.leftover_files
            else f"{len(self.leftover_files)} Smart Paging file(s) were left and removed"
        )
        if any(loc.get("ram_backed") for loc in self.locations):
            left += " (the files were in RAM: this measured no disk)"
        n, total = st["smart_paging_vms"], st["vms"]
        paged = f"{n} of {total} VMs" if total > 1 else "the VM"
        if st["smart_paging_slowdown"]:
            of_them = "the slowest of them, " if n > 1 else ""
            cost = (
                f"{of_them}{st['smart_paging_slowest_vm']}, booted in "
                f"{seconds(st['smart_paging_boot_time'])} instead of "
                f"{seconds(st['smart_paging_baseline'])} "
                f"({st['smart_paging_slowdown']:.1f} x slower)"
            )
        else:
            cost = "slowdown unknown (no full-memory boot to compare with)"
        others = ""
        if st["others_slowdown"] and total > n:
            who = "the one" if total - n == 1 else f"the {total - n}"
            others = f"; {who} that did not page: {st['others_slowdown']:.1f} x its baseline"
        return (
            f"{paged} booted on Smart Paging (peaks totalling "
            f"{mb(st['smart_paging_peak_bytes'])}, files in {where or '?'}); {cost}{others}; "
            f"the whole storm took {seconds(st['boot_time'])}; {left}"
        )

    # --- JSON --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "vmmem-run",
            "schema_version": SCHEMA_VERSION,
            "outcome": self.outcome,
            "error": self.error,
            "verdict": self.verdict(),
            "started": self.started,
            "duration": self.duration,
            "machine": self.machine,
            "settings": self.settings,
            "scenario": self.scenario,
            "plan": self.plan,
            "summary": self.storm_summary() | {"device_io_confirmed": self.device_io_confirmed()},
            "events": self.events,
            "boots": self.boots,
            "final_status": self.final_status,
            "locations": self.locations,
            "fault_latency_cdf": self.fault_latency_cdf,
            "fault_latency_percentiles": self.fault_latency_percentiles,
            "timeline": self.timeline,
            "leftover_files": self.leftover_files,
            "earlier_runs": self.earlier_runs,
            "warnings": self.warnings,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        return cls(
            scenario=d["scenario"],
            outcome=d["outcome"],
            error=d.get("error"),
            started=d["started"],
            duration=d["duration"],
            machine=d["machine"],
            settings=d.get("settings", {}),
            plan=d.get("plan"),
            events=d.get("events", []),
            boots=d.get("boots", []),
            final_status=d.get("final_status", []),
            timeline=d.get("timeline", []),
            locations=d.get("locations", []),
            fault_latency_cdf=d.get("fault_latency_cdf", {"seconds": [], "fraction": []}),
            fault_latency_percentiles=d.get("fault_latency_percentiles", {}),
            leftover_files=d.get("leftover_files", []),
            earlier_runs=d.get("earlier_runs", []),
            warnings=d.get("warnings", []),
        )


def _most(boots: list[dict[str, Any]], key: str) -> float | None:
    values = [b[key] for b in boots if b.get(key) is not None]
    return max(values) if values else None


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _kind(loc: dict[str, Any]) -> str:
    dev = loc.get("device") or loc.get("fstype") or "?"
    model = loc.get("model")
    rotational = loc.get("rotational")
    rot = "" if rotational is None else ("rotational" if rotational else "non-rotational")
    if loc.get("ram_backed"):
        rot = "RAM"
    facts = ", ".join(x for x in (model, rot) if x)
    return f"{loc.get('fstype')} on {dev}" + (f", {facts}" if facts else "")


@dataclass
class CompareResult:
    """The same scenario with the Smart Paging folder on each location, plus the baseline."""

    baseline: RunResult | None
    runs: dict[str, RunResult]  # location -> run
    outcome: str = "ok"
    error: str | None = None
    started: str = field(default_factory=now_iso)
    duration: float = 0.0
    machine: dict[str, Any] = field(default_factory=machine_facts)

    def rows(self) -> list[dict[str, Any]]:
        """One row per location: device facts and the storm's figures."""
        base = self.baseline.storm_summary() if self.baseline else None
        base_time = base["boot_time"] if base else None
        out = []
        for path, run in self.runs.items():
            st = run.storm_summary()
            loc = next(
                (x for x in run.locations if x.get("path") == path),
                run.locations[0] if run.locations else {},
            )
            slowdown = (st["boot_time"] / base_time) if st["boot_time"] and base_time else None
            out.append(
                {
                    "location": path,
                    "device": loc.get("device"),
                    "model": loc.get("model"),
                    "rotational": loc.get("rotational"),
                    "ram_backed": loc.get("ram_backed"),
                    "fstype": loc.get("fstype"),
                    "outcome": run.outcome,
                    "boot_time": st["boot_time"],
                    "own_baseline": st["baseline"],
                    "slowdown": slowdown,
                    "smart_paging_peak_bytes": st["smart_paging_peak_bytes"],
                    "page_ins": st["page_ins"],
                    "page_outs": st["page_outs"],
                    # All three from the storm's merged faults, so they are of one sample.
                    "fault_p50": _storm_percentile(run, 50),
                    "fault_p90": _storm_percentile(run, 90),
                    "fault_p99": _storm_percentile(run, 99),
                    "device_io_confirmed": run.device_io_confirmed(),
                }
            )
        return out

    def summary(self) -> str:
        from vmmem.sizes import format_duration as seconds

        rows = [r for r in self.rows() if r["boot_time"]]
        if not rows:
            return "no location completed the boot storm"
        for r in rows:  # said in the line itself: a RAM-backed folder measured no disk
            if r["ram_backed"]:
                r["location"] += " (RAM-backed: no disk measured)"
        base = self.baseline.storm_summary()["boot_time"] if self.baseline else None
        base_txt = f" (without Smart Paging: {seconds(base)})" if base else ""
        if len(rows) == 1:
            r = rows[0]
            return (
                f"the boot storm took {seconds(r['boot_time'])} with Smart Paging on "
                f"{r['location']}{base_txt}"
            )
        slow = max(rows, key=lambda r: r["boot_time"])
        fast = min(rows, key=lambda r: r["boot_time"])
        ratio = slow["boot_time"] / fast["boot_time"]
        if ratio < 1.1:
            return (
                f"the boot storm took about as long with Smart Paging on "
                f"{' and '.join(r['location'] for r in rows)} ({seconds(slow['boot_time'])} "
                f"at most, {ratio:.2f} x){base_txt}"
            )
        return (
            f"the boot storm ran {ratio:.1f} x slower with Smart Paging on "
            f"{slow['location']} than on {fast['location']} ({seconds(slow['boot_time'])} "
            f"vs {seconds(fast['boot_time'])}){base_txt}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "vmmem-compare",
            "schema_version": SCHEMA_VERSION,
            "outcome": self.outcome,
            "error": self.error,
            "summary": self.summary(),
            "started": self.started,
            "duration": self.duration,
            "machine": self.machine,
            "rows": self.rows(),
            "baseline": self.baseline.to_dict() if self.baseline else None,
            "runs": [{"location": k, "run": v.to_dict()} for k, v in self.runs.items()],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CompareResult:
        return cls(
            baseline=RunResult.from_dict(d["baseline"]) if d.get("baseline") else None,
            runs={r["location"]: RunResult.from_dict(r["run"]) for r in d["runs"]},
            outcome=d["outcome"],
            error=d.get("error"),
            started=d["started"],
            duration=d["duration"],
            machine=d["machine"],
        )


def _storm_percentile(run: RunResult, p: int) -> float | None:
    """A percentile of the storm's merged faults; from the CDF for version-1 files."""
    if f"p{p}" in run.fault_latency_percentiles:
        return run.fault_latency_percentiles[f"p{p}"]
    return _cdf_percentile(run.fault_latency_cdf, p)


def _cdf_percentile(cdf: dict[str, list[float]], p: float) -> float | None:
    for s, f in zip(cdf.get("seconds", []), cdf.get("fraction", []), strict=False):
        if f >= p / 100:
            return s
    return None
