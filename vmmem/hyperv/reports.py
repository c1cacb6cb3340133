"""What the Hyper-V layer reports: VM status as Get-VM shows it, boot reports, timeline samples.

Sizes are bytes, times seconds; `time`/`started_at` are on the host clock (seconds since the
Host was made). Every class has `as_dict()` with plain values for JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..memory import LatencyHistogram

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

    name: str
    state: str  # "Off" | "Running"
    phase: str  # "off", "boot", "idle", "trace", "done", "failed"
    memory_assigned: int
    memory_demand: int
    memory_startup: int
    pressure: float  # demand / assigned x 100; 0 when Off
    memory_status: str  # "OK" | "Low" | "Warning" | "Paging" | ""
    smart_paging_file_in_use: bool
    smart_paging_file_path: str | None
    smart_paging_bytes: int  # guest memory held only in the file now (paged out)
    smart_paging_file_size: int  # bytes the file occupies on disk now
    # The guest's own paging (a running guest short of memory, to its page file on its
    # virtual disk): not Smart Paging, and not shown by Get-VM; vmmem counts it apart.
    guest_paging_bytes: int = 0  # guest memory in its page file now
    guest_page_ins: int = 0  # since this boot began paging inside the guest
    guest_page_outs: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class TimelineSample:
    """The host at one balancer tick, after the tick applied its allocation."""

    time: float
    available_memory: int
    vms: tuple[VMStatus, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "time": self.time,
            "available_memory": self.available_memory,
            "vms": [vm.as_dict() for vm in self.vms],
        }


@dataclass(frozen=True)
class BootReport:
    """What one boot cost. Counters cover the boot window (power-on or restart until the boot
    phases complete); the Smart Paging fields follow the file until it is deleted."""

    vm: str
    kind: str  # "start" | "restart" | "reset" | "host-restart"
    started_at: float  # s, host clock
    boot_time: float  # s
    baseline: float | None  # s: the same boot with all its Startup RAM
    slowdown: float | None  # boot_time / baseline
    startup_bytes: int
    assigned_at_boot: int  # bytes the balancer gave when the boot began
    smart_paging: bool  # the boot was allowed a Smart Paging file
    page_ins: int
    page_outs: int
    bytes_read: int
    bytes_written: int
    fault_p50: float | None  # s, a fault that waited on the disk: victim write-back + page-in
    fault_p99: float | None
    page_out_p50: float | None
    page_out_p99: float | None
    smart_paging_peak_bytes: int  # most guest memory held only in the file
    smart_paging_file_peak_size: int  # largest the file was on disk, bytes
    smart_paging_seconds: float  # how long the file existed (so far, if it still does)
    smart_paging_ended: bool  # the file is gone (or was never made)
    paging_dir: str
    device: str | None  # block device under paging_dir (psutil counter key)
    device_read_bytes: int | None  # that device's counters over the boot window
    device_write_bytes: int | None
    # The guest's own virtual-disk I/O during the boot (reads of its VHD; not paging).
    disk_requests: int = 0
    disk_read_bytes: int = 0
    disk_write_bytes: int = 0
    # The boot's time, part by part (boot_time is their sum; docs/DESIGN.md): the guest's
    # declared CPU time and pauses, and what it waited for, measured: faults on the disk, its
    # virtual-disk requests, memory from the host.
    guest_seconds: float | None = None
    fault_wait_seconds: float | None = None
    disk_seconds: float | None = None
    memory_wait_seconds: float | None = None
    # The emulator's own share, never in boot_time: the wall clock's time for the boot, how far
    # it ran behind the boot's time (emulator work, waits for a core or the GIL), and the CPU
    # time of the VM's guest thread (Python, numpy, the replay in C).
    wall_seconds: float | None = None
    emulator_seconds: float | None = None
    emulator_cpu_seconds: float | None = None
    # Page-ins from the Smart Paging file after the boot ended, while the guest ran on it
    # until the host rebalanced it (balancer_start_delay; its final drain not counted).
    page_ins_after_boot: int = 0
    # Latency histograms over the boot window (for CDFs); left out of as_dict().
    page_in_latency: LatencyHistogram | None = field(default=None, repr=False, compare=False)
    fault_latency: LatencyHistogram | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, object]:
        return {
            f.name: getattr(self, f.name) for f in fields(self) if not f.name.endswith("_latency")
        }
