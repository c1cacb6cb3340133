"""What a run measured, as typed records: the JSON a user keeps, and what tables and plots read.

A ``RunResult`` is filled by the runner with the Hyper-V layer's own records (BootReport as
``BootResult``, VMStatus, TimelineSample, RebootOutcome; see docs/HYPERV.md) and the device
counters; they stay records until output. ``to_dict`` writes the JSON and ``from_dict`` reads
it back (any of READABLE_VERSIONS), so a saved run can be shown and plotted again; both, and
the JSON Schema (docs/json-schema.json, vmmem.lab.schema), come from the dataclasses' fields
(vmmem.records). A ``CompareResult`` holds one RunResult per Smart Paging location plus the
baseline run.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import psutil

from vmmem.hyperv.reboot import RebootOutcome
from vmmem.hyperv.reports import BootReport, TimelineSample, VMStatus
from vmmem.records import doc, from_json, to_json

if TYPE_CHECKING:
    from vmmem.devices import DeviceInfo, IOCounters

__all__ = [
    "SCHEMA_VERSION",
    "BootResult",
    "CompareResult",
    "CompareRow",
    "DeviceIO",
    "EventResult",
    "LatencyCDF",
    "LocationResult",
    "LocationRun",
    "MachineFacts",
    "Percentiles",
    "PlanRecord",
    "PlannedEvent",
    "PlannedRemedy",
    "RunResult",
    "RunSettings",
    "StormSummary",
    "machine_facts",
    "now_iso",
]

SCHEMA_VERSION = 4  # 2: headline fields, boots' file life, earlier_runs, reboot outcomes;
# full VMStatus samples, stored percentiles. 3: boot_time is the boot's own clock (guest time
# plus measured waits), the emulator's share beside it. 4: the devices' busy time and queue
# depth, over the run and over the storm; each VM's processor_count, each boot's per-processor
# times. 1 to 3 are still read.
READABLE_VERSIONS = (1, 2, 3, 4)
STORM_KINDS = ("host-restart", "restart", "reset")
OUTCOMES = ["ok", "vms_failed", "failed", "interrupted"]
_OUTCOME_DOC = (
    "ok: every event played and every VM started; vms_failed: every event played and was "
    "measured, but a host reboot's automatic start failed for a VM (Not enough memory in the "
    "system to start the virtual machine), as Hyper-V would; failed: the run stopped early "
    "(error says why); interrupted: Ctrl-C or SIGTERM"
)


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class MachineFacts:
    """The machine the figures come from."""

    hostname: str
    system: str
    kernel: str
    machine: str
    cpu_model: str | None
    cpus: int | None
    memory_total_bytes: int
    python: str
    vmmem_version: str | None


def machine_facts() -> MachineFacts:
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
    return MachineFacts(
        hostname=platform.node(),
        system=platform.system(),
        kernel=platform.release(),
        machine=platform.machine(),
        cpu_model=cpu_model,
        cpus=os.cpu_count(),
        memory_total_bytes=psutil.virtual_memory().total,
        python=sys.version.split()[0],
        vmmem_version=vmmem_version,
    )


@dataclass
class RunSettings:
    """How the run was made."""

    backend: str = field(default="direct", metadata=doc(schema={"enum": ["direct", "mmap"]}))
    policy: str = field(
        default="lru", metadata=doc("The eviction policy of the Smart Paging files.")
    )
    page_size: int = field(default=4096, metadata=doc("Bytes."))
    host_folder: str = field(
        default="", metadata=doc("The VMs' own folder (virtual disks, default Smart Paging).")
    )
    paging_folders: list[str] = field(
        default_factory=list, metadata=doc("The folders of the VMs' Smart Paging files.")
    )


@dataclass(frozen=True)
class DeviceIO:
    """A device's own counters over an interval (the whole run, or the storm). Since version
    4: how long the interval was, and the kernel's io_ticks and time_in_queue over it, so
    queue_depth (time_in_queue per ms of it: iostat's aqu-sz) and utilisation (io_ticks per ms
    of it) can be derived."""

    read_bytes: int = field(metadata=doc(schema={"type": "integer"}))
    write_bytes: int = field(metadata=doc(schema={"type": "integer"}))
    read_count: int = field(metadata=doc(schema={"type": "integer"}))
    write_count: int = field(metadata=doc(schema={"type": "integer"}))
    seconds: float | None = field(
        default=None, metadata=doc("The interval's wall time (null: not recorded).", since=4)
    )
    io_ticks_ms: int | None = field(
        default=None,
        metadata=doc(
            "Milliseconds the device had at least one request in flight (the kernel's "
            "io_ticks; null: not recorded).",
            since=4,
            schema={"type": ["integer", "null"]},
        ),
    )
    time_in_queue_ms: int | None = field(
        default=None,
        metadata=doc(
            "The sum over requests of the milliseconds each was in flight (the kernel's "
            "time_in_queue; null: not recorded).",
            since=4,
            schema={"type": ["integer", "null"]},
        ),
    )

    @classmethod
    def of(cls, delta: IOCounters, seconds: float) -> DeviceIO:
        """What a device's counters grew by (``delta``) over ``seconds`` of wall time."""
        return cls(
            read_bytes=delta.read_bytes,
            write_bytes=delta.write_bytes,
            read_count=delta.read_count,
            write_count=delta.write_count,
            seconds=seconds,
            io_ticks_ms=delta.io_ticks_ms,
            time_in_queue_ms=delta.time_in_queue_ms,
        )

    def _counters(self) -> IOCounters | None:
        from vmmem.devices import IOCounters

        if not self.seconds or self.io_ticks_ms is None or self.time_in_queue_ms is None:
            return None
        return IOCounters(
            self.read_bytes,
            self.write_bytes,
            self.read_count,
            self.write_count,
            self.io_ticks_ms,
            self.time_in_queue_ms,
        )

    @property
    def queue_depth(self) -> float | None:
        """Average requests in flight over the interval (None: not recorded)."""
        c = self._counters()
        return c.queue_depth(self.seconds or 0.0) if c is not None else None

    @property
    def utilisation(self) -> float | None:
        """Fraction of the interval the device had a request in flight (None: not recorded)."""
        c = self._counters()
        return c.utilisation(self.seconds or 0.0) if c is not None else None


@dataclass(frozen=True)
class LocationResult:
    """A filesystem holding Smart Paging files; device_io: its device's own counters over the
    whole run (null: no block device, e.g. tmpfs); storm_io (since version 4): the same over
    the storm, from the first restart event's start until its last VM had booted."""

    path: str
    mountpoint: str
    fstype: str
    source: str
    device: str | None
    disk: str | None
    model: str | None
    rotational: bool | None
    kind: str = field(metadata=doc(schema={"enum": ["RAM", "HDD", "SSD", "unknown"]}))
    ram_backed: bool
    free_bytes: int
    total_bytes: int
    has_counters: bool
    backing_file: str | None
    device_io: DeviceIO | None
    storm_io: DeviceIO | None = field(
        default=None,
        metadata=doc(
            "The device's counters over the storm (null: no storm, or no device counters).",
            since=4,
        ),
    )

    @classmethod
    def of(
        cls, info: DeviceInfo, device_io: DeviceIO | None, storm_io: DeviceIO | None = None
    ) -> LocationResult:
        return cls(
            path=info.path,
            mountpoint=info.mountpoint,
            fstype=info.fstype,
            source=info.source,
            device=info.device,
            disk=info.disk,
            model=info.model,
            rotational=info.rotational,
            kind=info.kind,
            ram_backed=info.ram_backed,
            free_bytes=info.free_bytes,
            total_bytes=info.total_bytes,
            has_counters=info.has_counters,
            backing_file=info.backing_file,
            device_io=device_io,
            storm_io=storm_io,
        )


@dataclass(frozen=True, kw_only=True)
class BootResult(BootReport):
    """One boot: the Hyper-V layer's BootReport (docs/HYPERV.md) and the index of the scenario
    event that caused it. Times in seconds (started_at on the host clock). Since version 2:
    smart_paging_file_created_at / _deleted_at, the Smart Paging file's life on the host
    clock, as the run saw it (polled every 0.1 s; null: no file, or still there). Since
    version 3, boot_time is the boot's own clock: guest_seconds (its CPU time and pauses, as
    declared) + fault_wait_seconds + disk_seconds + memory_wait_seconds (its waits,
    measured); before, the wall clock's. The emulator's share, never in boot_time:
    wall_seconds (the wall clock's time for the boot), emulator_seconds (how far that ran
    behind boot_time) and emulator_cpu_seconds (the CPU time of the VM's guest thread)."""

    event: int = field(metadata=doc("Index of the scenario event that made the boot."))
    smart_paging_file_created_at: float | None = field(
        default=None,
        metadata=doc("When the Smart Paging file appeared, host clock (null: no file).", since=2),
    )
    smart_paging_file_deleted_at: float | None = field(
        default=None,
        metadata=doc("When it was gone, host clock (null: no file, or still there).", since=2),
    )

    @classmethod
    def of(
        cls,
        report: BootReport,
        event: int,
        created_at: float | None = None,
        deleted_at: float | None = None,
    ) -> BootResult:
        """``report`` as a boot of event ``event``, its file's life as the run saw it."""
        own: dict[str, Any] = {f.name: getattr(report, f.name) for f in fields(BootReport)}
        return cls(
            **own,
            event=event,
            smart_paging_file_created_at=created_at,
            smart_paging_file_deleted_at=deleted_at,
        )


@dataclass(kw_only=True)
class EventResult:
    """One scenario event as it played."""

    index: int
    action: str
    description: str
    seconds: float
    note: str
    outcomes: dict[str, RebootOutcome] = field(
        default_factory=dict,
        metadata=doc(
            "reboot-host: what each VM did (RebootOutcome); empty for other events.", since=2
        ),
    )


@dataclass
class LatencyCDF:
    """Fault latency over the restart boots (faults that waited on the disk: the victim's
    write-back plus the page-in): the fraction of faults at or below each latency."""

    seconds: list[float] = field(default_factory=list, metadata=doc())
    fraction: list[float] = field(
        default_factory=list,
        metadata=doc(schema={"items": {"type": "number", "minimum": 0, "maximum": 1}}),
    )


@dataclass(frozen=True)
class Percentiles:
    """Percentiles of the storm's merged faults, as LatencyHistogram.percentile gives them."""

    p50: float | None = None
    p90: float | None = None
    p99: float | None = None


@dataclass(frozen=True, kw_only=True)
class StormSummary:
    """The storm (the first restart event): boot_time is its slowest boot, baseline the
    slowest full-memory boot of the same VMs. Since version 2, the cost of Smart Paging:
    smart_paging_slowest_vm is the VM that paged and slowed most against its own baseline
    (smart_paging_boot_time / smart_paging_baseline = smart_paging_slowdown); others_slowdown
    the most a VM that did not page slowed."""

    event: int | None = None
    vms: int = 0
    boot_time: float | None = None
    baseline: float | None = None
    slowdown: float | None = None
    smart_paging_vms: int = 0
    smart_paging_peak_bytes: int = 0
    smart_paging_seconds: float | None = None
    smart_paging_slowest_vm: str | None = field(default=None, metadata=doc(since=2))
    smart_paging_boot_time: float | None = field(default=None, metadata=doc(since=2))
    smart_paging_baseline: float | None = field(default=None, metadata=doc(since=2))
    smart_paging_slowdown: float | None = field(default=None, metadata=doc(since=2))
    others_slowdown: float | None = field(default=None, metadata=doc(since=2))
    page_ins: int = 0
    page_outs: int = 0
    fault_p50: float | None = None
    fault_p99: float | None = None
    emulator_seconds: float | None = field(
        default=None, metadata=doc("The most of the storm's boots.", since=3)
    )
    emulator_cpu_seconds: float | None = field(
        default=None, metadata=doc("The most of the storm's boots.", since=3)
    )
    device_io_confirmed: bool | None = field(
        default=None,
        metadata=doc(
            "The devices under the Smart Paging folders moved by at least the paged bytes (null: "
            "nothing paged, or no device counters)."
        ),
    )
    device: str | None = field(
        default=None,
        metadata=doc(
            "The device under the Smart Paging folders with the deepest queue over the storm "
            "(the one with the most time_in_queue; null: no device counters over the storm).",
            since=4,
        ),
    )
    device_queue_depth: float | None = field(
        default=None,
        metadata=doc(
            "Its average requests in flight over the storm: time_in_queue per ms of the storm's "
            "wall time (iostat's aqu-sz).",
            since=4,
        ),
    )
    device_queue_depth_per_vm: float | None = field(
        default=None,
        metadata=doc("device_queue_depth / vms (the VMs that booted in the storm).", since=4),
    )
    device_utilisation: float | None = field(
        default=None,
        metadata=doc(
            "The fraction of the storm it had a request in flight: io_ticks per ms of the "
            "storm (iostat's %util / 100).",
            since=4,
            schema={"type": ["number", "null"], "minimum": 0, "maximum": 1},
        ),
    )


@dataclass(frozen=True)
class PredictedBoot:
    """One restarting VM's boot predicted from its accesses (its recorded guest's trace, or the
    synthetic boot's) with exact LRU and the memory it gets for the whole boot."""

    guest: str
    assigned_bytes: int
    page_ins: int
    page_outs: int
    smart_paging_peak_bytes: int = field(metadata=doc("The most held only in the file at once."))
    report_peak_bytes: int = field(
        metadata=doc("Zero-fills less resident pages at most, as boot reports counted it before.")
    )
    no_paging_bytes: int = field(metadata=doc("The least memory (2 MB blocks) with no paging."))
    cpu_seconds: float
    disk_reads: int
    disk_writes: int
    boot_seconds: float | None = field(metadata=doc("null: no latency was given."))


@dataclass(frozen=True)
class DiskLatency:
    """The disk latency of the predicted boot times: seconds per 4 KiB request."""

    read: float
    write: float


@dataclass(frozen=True)
class PlannedEvent:
    """What the planner predicted for one event."""

    index: int
    action: str
    description: str
    available_bytes: int
    needed_bytes: int
    assigned_bytes: dict[str, int]
    smart_paging_bytes: dict[str, int]
    smart_paging_total_bytes: int
    start_failures: list[str]
    outcomes: dict[str, str] = field(default_factory=dict, metadata=doc(since=2))
    suggested_delay: float | None = field(default=None, metadata=doc(since=2))
    predicted: dict[str, PredictedBoot] = field(
        default_factory=dict,
        metadata=doc("VM -> its boot predicted from its accesses (restart events).", since=3),
    )


@dataclass(frozen=True)
class PlannedRemedy:
    """One of the article's ways to avoid Smart Paging, as the planner checked it."""

    kind: str
    summary: str
    works: bool
    vms: list[str]
    amount_bytes: int
    caveat: str


@dataclass(frozen=True)
class PlanRecord:
    """What `vmmem plan` predicted for the same scenario."""

    scenario: str
    needs_smart_paging: bool
    verdict: str
    available_bytes: int
    idle_assigned_bytes: dict[str, int]
    start_failures: list[str]
    peak_paging_bytes: dict[str, int]
    events: list[PlannedEvent]
    remedies: list[PlannedRemedy]
    latency: DiskLatency | None = field(
        default=None,
        metadata=doc("The disk latency of the predicted boot times (null: none given).", since=3),
    )


@dataclass(kw_only=True)
class RunResult:
    """`vmmem run --json FILE`. Sizes in bytes, times in seconds."""

    outcome: str = field(default="ok", metadata=doc(_OUTCOME_DOC, schema={"enum": OUTCOMES}))
    error: str | None = None
    started: str = field(default_factory=now_iso, metadata=doc())
    duration: float = 0.0
    machine: MachineFacts = field(default_factory=machine_facts, metadata=doc())
    settings: RunSettings = field(default_factory=RunSettings, metadata=doc())
    scenario: dict[str, Any] = field(
        metadata=doc("The settings as validated (Scenario.to_dict()).")
    )
    plan: PlanRecord | None = field(
        default=None, metadata=doc("What `vmmem plan` predicted for the same scenario.")
    )
    events: list[EventResult] = field(default_factory=list, metadata=doc())
    boots: list[BootResult] = field(default_factory=list, metadata=doc())
    final_status: list[VMStatus] = field(default_factory=list, metadata=doc())
    locations: list[LocationResult] = field(
        default_factory=list, metadata=doc("Device facts and I/O.")
    )
    fault_latency_cdf: LatencyCDF = field(default_factory=LatencyCDF, metadata=doc())
    fault_latency_percentiles: Percentiles | None = field(
        default=None,
        metadata=doc("p50/p90/p99 of the storm's merged faults (null: not measured).", since=2),
    )
    timeline: list[TimelineSample] = field(default_factory=list, metadata=doc())
    leftover_files: list[str] = field(default_factory=list, metadata=doc())
    earlier_runs: list[str] = field(
        default_factory=list, metadata=doc("What dead runs left, removed.", since=2)
    )
    warnings: list[str] = field(default_factory=list, metadata=doc())

    # --- derived figures --------------------------------------------------------------------

    def storm_boots(self) -> list[BootResult]:
        """The boots of restart events (the ones Smart Paging can serve)."""
        return [b for b in self.boots if b.kind in STORM_KINDS]

    def failed_starts(self) -> list[str]:
        """The VMs whose automatic start failed at a host reboot (Hyper-V's "Not enough memory
        in the system to start the virtual machine"), in event order."""
        return [name for e in self.events for name, o in e.outcomes.items() if o.result == "failed"]

    def storm_event(self) -> int | None:
        """Index of the first restart event with boots (the storm the verdict is about)."""
        idx = [b.event for b in self.storm_boots()]
        return min(idx) if idx else None

    def storm_summary(self) -> StormSummary:
        """Boot time of the storm (the slowest boot of its first restart event), its baseline
        (the slowest of those VMs' full-memory boots), slowdown, Smart Paging totals."""
        confirmed = self.device_io_confirmed()
        ev = self.storm_event()
        boots = [b for b in self.storm_boots() if b.event == ev]
        if not boots:
            return StormSummary(device_io_confirmed=confirmed)
        times = [b.boot_time for b in boots if b.boot_time is not None]
        bases = [b.baseline for b in boots if b.baseline]
        boot_time = max(times) if times else None
        baseline = max(bases) if bases else None
        paging = [b for b in boots if b.smart_paging_peak_bytes]
        # The cost of Smart Paging: the paging VM slowed most against its own baseline (not
        # the storm against the largest VM's baseline, which mixes VMs that did not page).
        rated = [b for b in paging if b.slowdown]
        worst = max(rated, key=lambda b: b.slowdown or 0.0) if rated else None
        others = [b.slowdown for b in boots if b not in paging and b.slowdown]
        p50 = [b.fault_p50 for b in boots if b.fault_p50 is not None]
        p99 = [b.fault_p99 for b in boots if b.fault_p99 is not None]
        busiest = self.storm_device()
        depth = busiest.storm_io.queue_depth if busiest and busiest.storm_io else None
        return StormSummary(
            event=ev,
            vms=len(boots),
            boot_time=boot_time,
            baseline=baseline,
            slowdown=(boot_time / baseline) if boot_time and baseline else None,
            smart_paging_vms=len(paging),
            smart_paging_peak_bytes=sum(b.smart_paging_peak_bytes or 0 for b in boots),
            smart_paging_seconds=max((b.smart_paging_seconds or 0 for b in paging), default=None),
            smart_paging_slowest_vm=worst.vm if worst else None,
            smart_paging_boot_time=worst.boot_time if worst else None,
            smart_paging_baseline=worst.baseline if worst else None,
            smart_paging_slowdown=worst.slowdown if worst else None,
            others_slowdown=max(x for x in others if x) if others else None,
            page_ins=sum(b.page_ins or 0 for b in boots),
            page_outs=sum(b.page_outs or 0 for b in boots),
            fault_p50=max(p50) if p50 else None,
            fault_p99=max(p99) if p99 else None,
            # The emulator's own share of the storm's boots (never in their boot times).
            emulator_seconds=_most(b.emulator_seconds for b in boots),
            emulator_cpu_seconds=_most(b.emulator_cpu_seconds for b in boots),
            device_io_confirmed=confirmed,
            device=(busiest.device or busiest.path) if busiest else None,
            device_queue_depth=depth,
            device_queue_depth_per_vm=depth / len(boots) if depth is not None else None,
            device_utilisation=(
                busiest.storm_io.utilisation if busiest and busiest.storm_io else None
            ),
        )

    def storm_device(self) -> LocationResult | None:
        """The location whose device had the deepest queue over the storm (the most
        time_in_queue), or None when no location has the storm's device counters."""
        depths = {
            i: loc.storm_io.queue_depth
            for i, loc in enumerate(self.locations)
            if loc.storm_io is not None and loc.storm_io.queue_depth is not None
        }
        return self.locations[max(depths, key=lambda i: depths[i] or 0.0)] if depths else None

    def emulator_note(self) -> str | None:
        """The emulator's own share of the boots, as one line (None: not recorded, e.g. a
        file from before version 3)."""
        from vmmem.sizes import format_duration as seconds

        cpu = _most(b.emulator_cpu_seconds for b in self.boots)
        behind = _most(b.emulator_seconds for b in self.boots)
        if cpu is None and behind is None:
            return None
        note = (
            f"the emulator's own share, kept out of every boot time: up to "
            f"{seconds(cpu or 0.0)} of CPU per boot (its guest threads: Python, numpy, the "
            f"replay), and its wall clock up to {seconds(behind or 0.0)} behind the boot's "
            "time (guest CPU plus measured waits)"
        )
        late = [b for b in self.boots if (b.emulator_seconds or 0) > 0.1 * (b.boot_time or 0)]
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
        paged_r = sum(b.bytes_read or 0 for b in self.boots)
        paged_w = sum(b.bytes_written or 0 for b in self.boots)
        if paged_r + paged_w == 0:
            return None
        io = [loc.device_io for loc in self.locations if loc.device_io]
        if not io:
            return None
        dev_r = sum(d.read_bytes for d in io)
        dev_w = sum(d.write_bytes for d in io)
        return dev_r >= paged_r and dev_w >= paged_w

    def location_folders(self) -> dict[str, str]:
        """Mount point of each location -> the folder its Smart Paging files were in (the
        common folder of the VMs' Smart Paging folders on it): one name per location, used by
        the header and the verdict alike."""
        folders = self.settings.paging_folders
        mounts = sorted(
            (loc.mountpoint or loc.path for loc in self.locations), key=len, reverse=True
        )
        out: dict[str, str] = {}
        for loc in self.locations:
            mount = loc.mountpoint or loc.path
            mine = [f for f in folders if next((m for m in mounts if _under(f, m)), None) == mount]
            out[mount] = os.path.commonpath(mine) if mine else loc.path
        return out

    def location_name(self, loc: LocationResult) -> str:
        mount = loc.mountpoint or loc.path
        return self.location_folders().get(mount, loc.path)

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
        reboots = [e for e in self.events if e.action == "reboot-host" and e.outcomes]
        if st.event is None and reboots:
            outcomes = reboots[-1].outcomes
            counts: dict[str, list[str]] = {}
            for name, o in outcomes.items():
                counts.setdefault(o.result, []).append(name)
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
        if st.event is None:
            return "no VM restarted, so Smart Paging never came into play"
        if not st.smart_paging_vms:
            short = [
                b
                for b in self.storm_boots()
                if b.event == st.event and b.smart_paging and b.assigned_at_boot < b.startup_bytes
            ]
            if short:
                gap = sum(b.startup_bytes - b.assigned_at_boot for b in short)
                return (
                    f"no page went to Smart Paging: {len(short)} VM(s) restarted short of "
                    f"their Startup RAM ({mb(gap)} in all, a Smart Paging file allowed each) but "
                    f"their guests touched no more than the memory they were given; the "
                    f"restart took {seconds(st.boot_time)} (baseline "
                    f"{seconds(st.baseline)})"
                )
            return (
                f"no Smart Paging: the restart of {st.vms} VM(s) took "
                f"{seconds(st.boot_time)} (baseline {seconds(st.baseline)})"
            )
        where = "; ".join(f"{self.location_name(loc)}: {_kind(loc)}" for loc in self.locations)
        left = (
            "every Smart Paging file is gone"
            if not self.leftover_files
            else f"{len(self.leftover_files)} Smart Paging file(s) were left and removed"
        )
        if any(loc.ram_backed for loc in self.locations):
            left += " (the files were in RAM: this measured no disk)"
        n, total = st.smart_paging_vms, st.vms
        paged = f"{n} of {total} VMs" if total > 1 else "the VM"
        if st.smart_paging_slowdown:
            of_them = "the slowest of them, " if n > 1 else ""
            cost = (
                f"{of_them}{st.smart_paging_slowest_vm}, booted in "
                f"{seconds(st.smart_paging_boot_time)} instead of "
                f"{seconds(st.smart_paging_baseline)} "
                f"({st.smart_paging_slowdown:.1f} x slower)"
            )
        else:
            cost = "slowdown unknown (no full-memory boot to compare with)"
        others = ""
        if st.others_slowdown and total > n:
            who = "the one" if total - n == 1 else f"the {total - n}"
            others = f"; {who} that did not page: {st.others_slowdown:.1f} x its baseline"
        return (
            f"{paged} booted on Smart Paging (peaks totalling "
            f"{mb(st.smart_paging_peak_bytes)}, files in {where or '?'}); {cost}{others}; "
            f"the whole storm took {seconds(st.boot_time)}; {left}"
        )

    # --- JSON --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON (docs/json-schema.json): the fields, with what is derived from them (the
        verdict after error, the storm's summary after plan)."""
        out: dict[str, Any] = {"kind": "vmmem-run", "schema_version": SCHEMA_VERSION}
        for key, value in to_json(self).items():
            out[key] = value
            if key == "error":
                out["verdict"] = self.verdict()
            elif key == "plan":
                out["summary"] = to_json(self.storm_summary())
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        """A run from its JSON, of any of READABLE_VERSIONS (RecordError names a bad field).
        Fields a version added are read as their defaults from older files; what changed
        shape is brought up to date first (``_from_v1``)."""
        if d.get("schema_version") == 1:
            d = _from_v1(d)
        return from_json(cls, d)


def _from_v1(d: dict[str, Any]) -> dict[str, Any]:
    """A version-1 run in today's shape: its timeline's VM statuses in the full VMStatus shape
    (version 1 kept only name, state, phase, assigned, demand, status and Smart Paging bytes
    there), and a boot without the file's peak size read as 0 (not recorded: shown as "-").
    Anything not of the expected type is left as it is, for the reader to name."""
    out = dict(d)
    if isinstance(d.get("boots"), list):
        out["boots"] = [
            {"smart_paging_file_peak_size": 0, **b} if isinstance(b, dict) else b
            for b in d["boots"]
        ]
    finals = d.get("final_status")
    startup = {
        st["name"]: st.get("memory_startup", 0)
        for st in (finals if isinstance(finals, list) else [])
        if isinstance(st, dict) and isinstance(st.get("name"), str)
    }

    def status(vm: Any) -> Any:
        if not isinstance(vm, dict):
            return vm
        assigned, demand = vm.get("memory_assigned"), vm.get("memory_demand")
        pressure = 0.0
        if isinstance(assigned, int) and assigned > 0 and isinstance(demand, int):
            pressure = min(demand, 10**6 * assigned) / assigned * 100  # no float overflow
        return {
            "memory_startup": startup.get(str(vm.get("name")), 0),
            "pressure": pressure,
            "smart_paging_file_in_use": bool(vm.get("smart_paging_bytes")),
            "smart_paging_file_path": None,
            "smart_paging_file_size": 0,
            **vm,
        }

    if isinstance(d.get("timeline"), list):
        out["timeline"] = [
            {**x, "vms": [status(vm) for vm in x["vms"]]}
            if isinstance(x, dict) and isinstance(x.get("vms"), list)
            else x
            for x in d["timeline"]
        ]
    return out


def _most(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _kind(loc: LocationResult) -> str:
    dev = loc.device or loc.fstype or "?"
    rotational = loc.rotational
    rot = "" if rotational is None else ("rotational" if rotational else "non-rotational")
    if loc.ram_backed:
        rot = "RAM"
    facts = ", ".join(x for x in (loc.model, rot) if x)
    return f"{loc.fstype} on {dev}" + (f", {facts}" if facts else "")


@dataclass(frozen=True)
class CompareRow:
    """One location; slowdown = its storm time / the baseline run's storm time."""

    location: str
    device: str | None
    model: str | None
    rotational: bool | None
    ram_backed: bool | None
    fstype: str | None
    outcome: str = field(metadata=doc(_OUTCOME_DOC, schema={"enum": OUTCOMES}))
    boot_time: float | None
    own_baseline: float | None
    slowdown: float | None
    smart_paging_peak_bytes: int
    page_ins: int
    page_outs: int
    fault_p50: float | None
    fault_p90: float | None
    fault_p99: float | None
    device_io_confirmed: bool | None
    device_queue_depth: float | None = field(
        default=None,
        metadata=doc(
            "The average queue depth of the run's busiest device over the storm (its "
            "summary's device_queue_depth).",
            since=4,
        ),
    )


@dataclass(frozen=True)
class LocationRun:
    """One location's run."""

    location: str
    run: RunResult


@dataclass(kw_only=True)
class CompareResult:
    """`vmmem compare --json FILE`: the same scenario with the Smart Paging folder on each
    location, plus the baseline."""

    outcome: str = field(default="ok", metadata=doc(_OUTCOME_DOC, schema={"enum": OUTCOMES}))
    error: str | None = None
    started: str = field(default_factory=now_iso, metadata=doc())
    duration: float = 0.0
    machine: MachineFacts = field(default_factory=machine_facts, metadata=doc())
    baseline: RunResult | None = field(metadata=doc("The run with enough memory for every VM."))
    # location -> run; in the JSON a list of LocationRun (in this order)
    runs: dict[str, RunResult] = field(metadata=doc(json=False))

    def rows(self) -> list[CompareRow]:
        """One row per location: device facts and the storm's figures."""
        base = self.baseline.storm_summary() if self.baseline else None
        base_time = base.boot_time if base else None
        out = []
        for path, run in self.runs.items():
            st = run.storm_summary()
            loc = next(
                (x for x in run.locations if x.path == path),
                run.locations[0] if run.locations else None,
            )
            slowdown = (st.boot_time / base_time) if st.boot_time and base_time else None
            out.append(
                CompareRow(
                    location=path,
                    device=loc.device if loc else None,
                    model=loc.model if loc else None,
                    rotational=loc.rotational if loc else None,
                    ram_backed=loc.ram_backed if loc else None,
                    fstype=loc.fstype if loc else None,
                    outcome=run.outcome,
                    boot_time=st.boot_time,
                    own_baseline=st.baseline,
                    slowdown=slowdown,
                    smart_paging_peak_bytes=st.smart_paging_peak_bytes,
                    page_ins=st.page_ins,
                    page_outs=st.page_outs,
                    # All three from the storm's merged faults, so they are of one sample.
                    fault_p50=_storm_percentile(run, 50),
                    fault_p90=_storm_percentile(run, 90),
                    fault_p99=_storm_percentile(run, 99),
                    device_io_confirmed=run.device_io_confirmed(),
                    device_queue_depth=st.device_queue_depth,
                )
            )
        return out

    def summary(self) -> str:
        from vmmem.sizes import format_duration as seconds

        rows = [r for r in self.rows() if r.boot_time]
        if not rows:
            return "no location completed the boot storm"
        # said in the line itself: a RAM-backed folder measured no disk
        names = {
            r.location: r.location + (" (RAM-backed: no disk measured)" if r.ram_backed else "")
            for r in rows
        }
        times = {r.location: r.boot_time or 0.0 for r in rows}
        base = self.baseline.storm_summary().boot_time if self.baseline else None
        base_txt = f" (without Smart Paging: {seconds(base)})" if base else ""
        if len(rows) == 1:
            r = rows[0]
            return (
                f"the boot storm took {seconds(r.boot_time)} with Smart Paging on "
                f"{names[r.location]}{base_txt}"
            )
        slow = max(rows, key=lambda r: times[r.location])
        fast = min(rows, key=lambda r: times[r.location])
        ratio = times[slow.location] / times[fast.location]
        if ratio < 1.1:
            return (
                f"the boot storm took about as long with Smart Paging on "
                f"{' and '.join(names[r.location] for r in rows)} "
                f"({seconds(slow.boot_time)} at most, {ratio:.2f} x){base_txt}"
            )
        return (
            f"the boot storm ran {ratio:.1f} x slower with Smart Paging on "
            f"{names[slow.location]} than on {names[fast.location]} "
            f"({seconds(slow.boot_time)} vs {seconds(fast.boot_time)}){base_txt}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON (docs/json-schema.json): the fields, the summary after error, the rows
        after machine, each location's run."""
        out: dict[str, Any] = {"kind": "vmmem-compare", "schema_version": SCHEMA_VERSION}
        for key, value in to_json(self).items():
            if key == "baseline":
                out["rows"] = to_json(self.rows())
            out[key] = value
            if key == "error":
                out["summary"] = self.summary()
        out["runs"] = to_json([LocationRun(k, v) for k, v in self.runs.items()])
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CompareResult:
        """A comparison from its JSON (RecordError names a bad field)."""
        runs = from_json(list[LocationRun], d.get("runs"), "$.runs")
        return cls(
            outcome=from_json(str, d.get("outcome"), "$.outcome"),
            error=from_json(str | None, d.get("error"), "$.error"),  # type: ignore[arg-type]
            started=from_json(str, d.get("started"), "$.started"),
            duration=from_json(float, d.get("duration"), "$.duration"),
            machine=from_json(MachineFacts, d.get("machine"), "$.machine"),
            baseline=from_json(RunResult | None, d.get("baseline"), "$.baseline"),  # type: ignore[arg-type]
            runs={r.location: r.run for r in runs},
        )


def _storm_percentile(run: RunResult, p: int) -> float | None:
    """A percentile of the storm's merged faults; from the CDF for version-1 files."""
    if run.fault_latency_percentiles is not None:
        value: float | None = getattr(run.fault_latency_percentiles, f"p{p}")
        return value
    return _cdf_percentile(run.fault_latency_cdf, p)


def _cdf_percentile(cdf: LatencyCDF, p: float) -> float | None:
    for s, f in zip(cdf.seconds, cdf.fraction, strict=False):
        if f >= p / 100:
            return s
    return None
