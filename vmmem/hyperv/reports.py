"""What the Hyper-V layer reports: VM status as Get-VM shows it, boot reports, timeline samples.

Sizes are bytes, times seconds; `time`/`started_at` are on the host clock (seconds since the
Host was made). Every class has `as_dict()` with plain values for JSON; each field's `doc` is
what docs/json-schema.json says of it (vmmem.records).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..memory import LatencyHistogram
from ..records import doc, to_json

__all__ = ["BootReport", "TimelineSample", "VMStatus", "memory_status"]


def memory_status(
    *, running: bool, dynamic: bool, paging: bool, assigned: int, demand: int, buffer: int
) -> str:
    """Get-VM's MemoryStatus: "Paging" while the Smart Paging file is in use; otherwise the
    available buffer (assigned - demand) as a share of the wanted buffer (demand x buffer %):
    above 80 % "OK", 0..80 % "Low", below 0 "Warning". Empty for an Off or static VM."""
    if not running or not dynamic:
        return ""
    if paging:
        return "Paging"
    wanted = demand * buffer / 100
    if wanted <= 0:
        return "OK"
    share = (assigned - demand) / wanted * 100
    if share > 80:
        return "OK"
    if share >= 0:
        return "Low"
    return "Warning"


@dataclass(frozen=True)
class VMStatus:
    """One VM's memory as Get-VM shows it (sizes in bytes, pressure in percent)."""

    name: str = field(metadata=doc("The VM's name."))
    state: str = field(
        metadata=doc("Off, Running or Saved.", schema={"enum": ["Off", "Running", "Saved"]})
    )
    phase: str = field(
        metadata=doc("What the guest is doing: off, boot, idle, trace, done, failed.")
    )
    memory_assigned: int = field(metadata=doc("Memory the host gives the VM now."))
    memory_demand: int = field(metadata=doc("Memory the guest wants now."))
    memory_startup: int = field(metadata=doc("The VM's Startup RAM."))
    pressure: float = field(metadata=doc("demand / assigned x 100; 0 when Off."))
    memory_status: str = field(
        metadata=doc(
            "Get-VM's MemoryStatus: Paging while the Smart Paging file is in use, else OK, Low or "
            "Warning by the available buffer; empty for an Off or static VM.",
            schema={"enum": ["OK", "Low", "Warning", "Paging", ""]},
        )
    )
    smart_paging_file_in_use: bool = field(metadata=doc("The VM's Smart Paging file exists now."))
    smart_paging_file_path: str | None = field(metadata=doc("That file's path (null: none)."))
    smart_paging_bytes: int = field(
        metadata=doc("Guest memory held only in the file now (paged out).")
    )
    smart_paging_file_size: int = field(metadata=doc("Bytes the file occupies on disk now."))
    # The guest's own paging (a running guest short of memory, to its page file on its
    # virtual disk): not Smart Paging, and not shown by Get-VM; vmmem counts it apart.
    guest_paging_bytes: int = field(
        default=0,
        metadata=doc("Guest memory in the guest's own page file now (not Smart Paging).", since=2),
    )
    guest_page_ins: int = field(
        default=0, metadata=doc("Page-ins inside the guest since this boot began.", since=2)
    )
    guest_page_outs: int = field(
        default=0, metadata=doc("Page-outs inside the guest since this boot began.", since=2)
    )

    def as_dict(self) -> dict[str, object]:
        return dict(to_json(self))


@dataclass(frozen=True)
class TimelineSample:
    """The host at one balancer tick, after the tick applied its allocation."""

    time: float = field(metadata=doc("Host clock, s."))
    available_memory: int = field(metadata=doc("Memory the host had left for VMs after the tick."))
    vms: tuple[VMStatus, ...] = field(metadata=doc("Every VM, as Get-VM shows it."))

    def as_dict(self) -> dict[str, object]:
        return dict(to_json(self))


@dataclass(frozen=True)
class BootReport:
    """What one boot cost. Counters cover the boot window (power-on or restart until the boot
    phases complete); the Smart Paging fields follow the file until it is deleted."""

    vm: str = field(metadata=doc("The VM's name."))
    kind: str = field(
        metadata=doc(
            "What made the boot: start (from Off), restore (from a saved state), restart, reset, "
            "host-restart (a host reboot in the article's reading).",
            schema={"enum": ["start", "restore", "restart", "reset", "host-restart"]},
        )
    )
    started_at: float = field(metadata=doc("When the boot began, host clock, s."))
    boot_time: float = field(
        metadata=doc(
            "The boot's own clock, s: guest_seconds + fault_wait_seconds + disk_seconds + "
            "memory_wait_seconds (before version 3: the wall clock's)."
        )
    )
    baseline: float | None = field(metadata=doc("The same boot with all its Startup RAM, s."))
    slowdown: float | None = field(metadata=doc("boot_time / baseline."))
    startup_bytes: int = field(metadata=doc("The VM's Startup RAM."))
    assigned_at_boot: int = field(metadata=doc("Bytes the balancer gave when the boot began."))
    smart_paging: bool = field(metadata=doc("The boot was allowed a Smart Paging file."))
    page_ins: int = field(metadata=doc("Pages read back from the Smart Paging file."))
    page_outs: int = field(metadata=doc("Pages written to the Smart Paging file."))
    bytes_read: int = field(metadata=doc("Bytes read from the Smart Paging file."))
    bytes_written: int = field(metadata=doc("Bytes written to the Smart Paging file."))
    fault_p50: float | None = field(
        metadata=doc(
            "Median latency of a fault that waited on the disk (victim write-back + page-in), s."
        )
    )
    fault_p99: float | None = field(metadata=doc("99th percentile of the same, s."))
    page_out_p50: float | None = field(metadata=doc("Median page-out latency, s."))
    page_out_p99: float | None = field(metadata=doc("99th percentile page-out latency, s."))
    smart_paging_peak_bytes: int = field(metadata=doc("Most guest memory held only in the file."))
    smart_paging_file_peak_size: int = field(metadata=doc("Largest the file was on disk, bytes."))
    smart_paging_seconds: float = field(
        metadata=doc("How long the file existed (so far, if it still does).")
    )
    smart_paging_ended: bool = field(metadata=doc("The file is gone (or was never made)."))
    paging_dir: str = field(metadata=doc("The folder of the VM's Smart Paging file."))
    device: str | None = field(
        metadata=doc("Block device under paging_dir (null: none, e.g. tmpfs).")
    )
    device_read_bytes: int | None = field(
        metadata=doc("That device's bytes read over the boot window.")
    )
    device_write_bytes: int | None = field(
        metadata=doc("That device's bytes written over the boot window.")
    )
    # The guest's own virtual-disk I/O during the boot (reads of its VHD; not paging).
    disk_requests: int = field(
        default=0, metadata=doc("The guest's own virtual-disk requests.", since=2)
    )
    disk_read_bytes: int = field(
        default=0, metadata=doc("Bytes the guest read from its virtual disk.", since=2)
    )
    disk_write_bytes: int = field(
        default=0, metadata=doc("Bytes the guest wrote to its virtual disk.", since=2)
    )
    # The boot's time, part by part (boot_time is their sum; docs/DESIGN.md): the guest's
    # declared CPU time and pauses, and what it waited for, measured: faults on the disk, its
    # virtual-disk requests, memory from the host.
    guest_seconds: float | None = field(
        default=None, metadata=doc("The guest's CPU time and pauses, as declared, s.", since=3)
    )
    fault_wait_seconds: float | None = field(
        default=None,
        metadata=doc("Time the boot waited on faults served from the disk, s.", since=3),
    )
    disk_seconds: float | None = field(
        default=None, metadata=doc("Time the boot waited on its virtual-disk requests, s.", since=3)
    )
    memory_wait_seconds: float | None = field(
        default=None, metadata=doc("Time the boot waited for memory from the host, s.", since=3)
    )
    # The emulator's own share, never in boot_time: the wall clock's time for the boot, how far
    # it ran behind the boot's time (emulator work, waits for a core or the GIL), and the CPU
    # time of the VM's guest threads (Python, numpy, the replay in C).
    wall_seconds: float | None = field(
        default=None,
        metadata=doc("The wall clock's time for the boot, s (never in boot_time).", since=3),
    )
    emulator_seconds: float | None = field(
        default=None,
        metadata=doc(
            "How far the wall clock ran behind boot_time, s (the emulator's share).", since=3
        ),
    )
    emulator_cpu_seconds: float | None = field(
        default=None,
        metadata=doc(
            "CPU time of the VM's guest threads, one per virtual processor that ran a stream "
            "(Python, numpy, the replay), s.",
            since=3,
        ),
    )
    processor_count: int = field(
        default=1,
        metadata=doc(
            "The VM's virtual processors (Set-VMProcessor -Count): the guest threads the boot "
            "ran on.",
            since=4,
        ),
    )
    processor_boot_times: list[float] | None = field(
        default=None,
        metadata=doc(
            "Each virtual processor's own boot time, s (0: it had no stream to run); "
            "boot_time is the latest.",
            since=4,
        ),
    )
    last_processor: int | None = field(
        default=None,
        metadata=doc(
            "The virtual processor that finished last: guest_seconds, fault_wait_seconds, "
            "disk_seconds and memory_wait_seconds are its.",
            since=4,
        ),
    )
    page_ins_after_boot: int = field(
        default=0,
        metadata=doc(
            "Page-ins from the Smart Paging file after the boot ended, while the guest ran on "
            "it until the host rebalanced it (balancer_start_delay; the final drain not "
            "counted).",
            since=3,
        ),
    )
    # Latency histograms over the boot window (for CDFs); not in the JSON.
    page_in_latency: LatencyHistogram | None = field(
        default=None, repr=False, compare=False, metadata=doc(json=False)
    )
    fault_latency: LatencyHistogram | None = field(
        default=None, repr=False, compare=False, metadata=doc(json=False)
    )

    def as_dict(self) -> dict[str, object]:
        return dict(to_json(self))
