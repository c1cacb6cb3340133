"""The Hyper-V host end to end, on real RAM frames and real paging files on the disk.

The article's scenario at a quarter of its size (host 350 MB, 4 VMs x 128 MB Startup, 32 MB
Minimum (Hyper-V's floor, so it does not scale), 512 MB Maximum, 20 % buffer), with short boots
and a 50 ms balancer so the whole file runs in seconds.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vmmem import MB, NotEnoughMemoryError, VmmemError, devices
from vmmem.hyperv import Boot, Host, Idle, Trace, Workload
from vmmem.hyperv.workloads import Guest

TICK = 0.05
FAST = [Boot(cpu_per_page=5e-6), Idle(touch_interval=0.05, touches=64)]
# The same without the boot's own virtual-disk reads, where a test counts paging I/O alone.
NO_DISK = [Boot(cpu_per_page=5e-6, disk_read_fraction=0.0), Idle(touch_interval=0.05, touches=64)]


class Hold(Workload):
    """Between a guest's boot and its idle: keeps what the boot committed until the test lets
    go (`go.set()`), so what the balancer does with a just-booted VM, or a storm with nobody
    ballooned down yet, is a state the test can read, not a race against the idle phase."""

    phase = "booted"
    boot = False

    def __init__(self) -> None:
        self.go = threading.Event()
        self.go.set()

    def run(self, guest: Guest) -> None:
        while not self.go.is_set():
            guest.sleep(0.01)  # returns at once (Stopped) when the VM stops


def article_vm(host: Host, name: str, workload: list[Workload] = FAST, **kw: object):
    args: dict[str, object] = {
        "startup": "128MB",
        "minimum": "32MB",
        "maximum": "512MB",
        "buffer": 20,
        "workload": workload,
    }
    args.update(kw)
    return host.add_vm(name, **args)  # type: ignore[arg-type]


def paging_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.slp")) if folder.exists() else []


def mb(nbytes: int) -> float:
    return nbytes / MB


def test_article_scenario_quarter_size(disk_dir: Path) -> None:
    folder = disk_dir / "vms"
    hold = Hold()
    workload = [FAST[0], hold, FAST[1]]
    with Host(
        "350MB", smart_paging_path=folder, balancer_interval=TICK, balancer_start_delay=0
    ) as host:
        vms = [article_vm(host, f"vm{i}", workload) for i in range(1, 5)]
        # Right after boot a VM is given Startup + 20 %, then it idles and balloons down.
        hold.go.clear()
        vms[0].start()
        assert not vms[0].wait_booted(30).smart_paging
        host.balance_now()
        assert mb(vms[0].status.memory_assigned) == 154  # 128 MB x 1.2 = 153.6, in 2 MB blocks
        hold.go.set()
        for vm in vms:  # started one by one: each boots with its Startup RAM, then idles
            if vm.state == "Off":
                vm.start()
            report = vm.wait_booted(30)
            assert not report.smart_paging and report.page_outs == 0
            host.wait_settled(30)
        assert [vm.state for vm in vms] == ["Running"] * 4
        peak = max(s.memory_assigned for t in host.timeline for s in t.vms if s.name == "vm1")
        assert mb(peak) == 154  # never more than Startup + 20 %
        for status in host.status:
            assert mb(status.memory_demand) == 62.5  # 250/512 of Startup
            assert mb(status.memory_assigned) == 76  # 62.5 x 1.2 = 75, in 2 MB blocks
            assert status.memory_status == "OK"
        for vm in vms:  # ballooning went through free pages only
            stats = vm.memory.stats
            assert stats.page_outs == 0 and stats.bytes_written == 0 and stats.file_created == 0

        # The boot storm: everyone restarts at once and needs 4 x 128 = 512 MB of 350. Each
        # VM keeps its boot's memory until all have booted: no VM that finishes first frees
        # memory for the others (how much that is depends on the scheduler, not on vmmem).
        hold.go.clear()
        host.restart()
        statuses = host.status
        assert sum(s.memory_assigned for s in statuses) == 350 * MB
        assert all(s.memory_assigned < 128 * MB for s in statuses)
        reports = host.wait_booted(60)
        assert all(r.smart_paging and r.kind == "restart" for r in reports)
        assert sum(r.assigned_at_boot for r in reports) == 350 * MB
        gap = 4 * 128 - 350  # 162 MB to bridge with the Smart Paging files in all
        assert mb(sum(r.startup_bytes - r.assigned_at_boot for r in reports)) == gap
        # Measured: what lived only in the files at their peak. With 512 MB committed on
        # 350 MB of frames, at least the gap did; a VM done booting is never held below its
        # demand again, so it may take frames from one still booting, which then holds more.
        bridged = mb(sum(r.smart_paging_peak_bytes for r in reports))
        assert bridged >= gap, bridged
        assert all(0 < r.smart_paging_peak_bytes < r.startup_bytes for r in reports)
        hold.go.set()
        for r in reports:
            assert r.page_outs > 0 and r.bytes_written == r.page_outs * 4096
            assert r.baseline is not None and r.slowdown is not None
            assert r.fault_p50 is not None and r.fault_p99 is not None
            assert r.fault_p50 <= r.fault_p99
            # The device's own counters saw at least this VM's page-outs reach the disk.
            assert r.device is not None and r.device_write_bytes >= r.bytes_written
        paging = {s.name for t in host.timeline for s in t.vms if s.memory_status == "Paging"}
        assert paging == {vm.name for vm in vms}

        # Afterwards: idle, ballooned down, files drained and deleted, statuses OK.
        host.wait_settled(60)
        for status in host.status:
            assert mb(status.memory_assigned) == 76
            assert status.memory_status == "OK" and not status.smart_paging_file_in_use
        assert paging_files(folder) == []
        for vm in vms:
            final = vm.boot_report
            assert final.smart_paging_ended and final.smart_paging_seconds > 0
        sample = host.timeline[-1].as_dict()
        assert set(sample) == {"time", "available_memory", "vms"}
        assert host.available_memory == 350 * MB - 4 * 76 * MB
    # close() removes what it made but the VMs' virtual disks, which are kept for later runs.
    left = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert left == [f"vm{i}/vm{i}-{vms[0].vhd_size() // MB}MB.vmdisk" for i in range(1, 5)]
    assert len(host.timeline) > 10  # still readable after the run


def test_start_from_off_on_short_host_fails_and_makes_no_file(disk_dir: Path) -> None:
    folder = disk_dir / "vms"
    with Host(
        "200MB", smart_paging_path=folder, balancer_interval=TICK, balancer_start_delay=0
    ) as host:
        vm1 = article_vm(host, "vm1")
        vm1.start()
        vm1.wait_booted(30)
        host.wait_settled(30)  # vm1 idles at 76 MB; its floor (demand) is 64 MB
        vm2 = article_vm(host, "vm2", startup="160MB")
        with pytest.raises(
            NotEnoughMemoryError,
            match="Not enough memory in the system to start the virtual machine "
            "'vm2'.*160 MB.*136 MB",
        ):
            vm2.start()
        assert vm2.state == "Off" and vm2.status.memory_assigned == 0
        assert not (folder / "vm2").exists() and paging_files(folder) == []
        assert vm1.state == "Running" and vm1.memory.stats.page_outs == 0
        host.wait_settled(30)  # vm1 got its buffer back
        vm3 = article_vm(host, "vm3")  # 128 MB fits once vm1's buffer is reclaimed
        vm3.start()
        assert vm3.wait_booted(30).page_outs == 0 and not vm3.boot_report.smart_paging


def test_roomy_restart_uses_no_smart_paging(disk_dir: Path) -> None:
    folder = disk_dir / "vms"
    with Host(
        "400MB", smart_paging_path=folder, balancer_interval=TICK, balancer_start_delay=0
    ) as host:
        vm = article_vm(host, "vm1")
        vm.start()
        first = vm.wait_booted(30)
        host.wait_settled(30)
        vm.restart()
        report = vm.wait_booted(30)
        assert report.kind == "restart" and not report.smart_paging
        assert report.assigned_at_boot >= 128 * MB
        assert report.page_outs == report.page_ins == report.bytes_written == 0
        assert report.smart_paging_peak_bytes == 0 and report.smart_paging_ended
        assert report.baseline == report.boot_time != first.boot_time  # re-measured
        assert vm.memory.stats.file_created == 0
        assert all(s.memory_status != "Paging" for t in host.timeline for s in t.vms)
        vm.reset()
        assert vm.wait_booted(30).kind == "reset"
        host.wait_settled(30)


def test_priority_higher_gets_more_and_pages_less(disk_dir: Path) -> None:
    with Host(
        "200MB", smart_paging_path=disk_dir / "vms", balancer_interval=TICK, balancer_start_delay=0
    ) as host:
        high = article_vm(host, "high", priority=80)
        low = article_vm(host, "low", priority=20)
        host.start_all(30)
        host.wait_settled(30)
        host.restart()
        by_name = {r.vm: r for r in host.wait_booted(60)}
        assert by_name["high"].assigned_at_boot > by_name["low"].assigned_at_boot
        assert by_name["high"].page_outs < by_name["low"].page_outs
        assert not by_name["high"].smart_paging and by_name["low"].smart_paging
        host.wait_settled(60)
        assert high.status.memory_status == low.status.memory_status == "OK"


def test_static_vm_keeps_startup_and_never_smart_pages(disk_dir: Path) -> None:
    with Host(
        "200MB", smart_paging_path=disk_dir / "vms", balancer_interval=TICK, balancer_start_delay=0
    ) as host:
        dyn = article_vm(host, "dyn")  # first: it idles at 76 MB, so 96 MB static fits
        static = host.add_vm("static", startup="96MB", dynamic=False, workload=FAST)
        host.start_all(30)
        host.wait_settled(30)
        assert static.status.memory_assigned == 96 * MB and static.status.memory_status == ""
        host.restart()
        reports = {r.vm: r for r in host.wait_booted(60)}
        assert not reports["static"].smart_paging and reports["static"].page_outs == 0
        assert reports["dyn"].smart_paging  # 104 MB left for a 128 MB Startup
        host.wait_settled(60)
        assert static.status.memory_assigned == 96 * MB
        assert dyn.status.memory_status == "OK"


def test_running_vm_short_of_memory_without_a_disk_waits_and_never_pages(disk_dir: Path) -> None:
    # After boot the guest commits 200 MB more than the 128 MB host has: it stays short
    # (pressure > 100, Warning), and no paging file is ever made for a running VM. (It has no
    # virtual disk, so no page file of its own either: test_vm_disks_and_guests has that.)
    trace = Trace(np.arange(0, 200 * 256, dtype=np.uint32), np.ones(200 * 256, bool))
    with Host(
        "128MB", smart_paging_path=disk_dir / "vms", balancer_interval=TICK, balancer_start_delay=0
    ) as host:
        vm = host.add_vm(
            "vm1",
            startup="32MB",
            minimum="32MB",
            maximum="512MB",
            workload=[Boot(cpu_per_page=0, disk_read_fraction=0.0), trace],
        )
        vm.start()
        vm.wait_booted(30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the balancer hands it everything the host has
            status = vm.status
            if status.memory_assigned == 128 * MB and status.pressure > 100:
                break
            time.sleep(0.05)
        status = vm.status
        assert status.pressure > 100 and status.memory_status == "Warning"
        assert status.memory_assigned == 128 * MB and vm.phase == "trace"
        stats = vm.memory.stats
        assert stats.page_outs == 0 and stats.file_created == 0
        assert host.available_memory == 0


class SecondBoot(Workload):
    """Boots by touching all of Startup RAM; on its second boot (the restart, on Smart Paging)
    it then crashes ("crash") or stays in its boot for a minute ("hang")."""

    phase = "boot"
    boot = True

    def __init__(self, then: str) -> None:
        self.then = then
        self.boots = 0

    def run(self, guest: Guest) -> None:
        self.boots += 1
        guest.commit_range(0, guest.startup_pages)
        pages = np.arange(guest.startup_pages, dtype=np.uint32)
        guest.replay(pages, np.ones(len(pages), np.uint8))
        if self.boots == 2:
            if self.then == "crash":
                raise RuntimeError("guest crashed")
            guest.sleep(60)


def test_guest_failure_and_close_leave_no_paging_file(disk_dir: Path) -> None:
    folder = disk_dir / "vms"
    idle = Idle(touch_interval=0.05)
    with Host(
        "200MB", smart_paging_path=folder, balancer_interval=TICK, balancer_start_delay=0
    ) as host:
        hang = article_vm(host, "hang", workload=[SecondBoot("hang"), idle])
        crash = article_vm(host, "crash", workload=[SecondBoot("crash"), idle])
        host.start_all(30)
        host.restart()  # 200 MB for 2 x 128: both boot on Smart Paging
        with pytest.raises(VmmemError, match="guest crashed"):
            crash.wait_booted(30)
        assert crash.state == "Off" and crash.phase == "failed"
        assert isinstance(crash.error, RuntimeError)
        assert not list((folder / "crash").glob("*.slp"))
        # Close while the other VM is still in its boot, on its Smart Paging file.
        deadline = time.monotonic() + 20
        while not hang.status.smart_paging_file_in_use and time.monotonic() < deadline:
            time.sleep(0.02)
        assert hang.status.smart_paging_file_in_use and not hang.booted
        assert len(paging_files(folder)) == 1
    assert paging_files(folder) == []
    assert not [t for t in threading.enumerate() if t.name.startswith(("vm-", "vmmem-"))]


def test_ballooning_causes_no_device_io(quiet_loop_fs: Path) -> None:
    folder = quiet_loop_fs / "vm1"
    folder.mkdir()
    info = devices.device_for_path(folder)
    assert info.device is not None and info.device.startswith("loop") and info.has_counters
    with Host(
        "256MB", smart_paging_path=quiet_loop_fs, balancer_interval=TICK, balancer_start_delay=0
    ) as host:
        vm = host.add_vm(
            "vm1",
            startup="128MB",
            minimum="32MB",
            maximum="512MB",
            smart_paging_path=folder,
            workload=NO_DISK,
        )
        os.sync()
        before = devices.io_counters(info)
        vm.start()
        vm.wait_booted(30)
        host.wait_settled(30)
        after = devices.io_counters(info)
        assigned = [s.memory_assigned for t in host.timeline for s in t.vms]
        # It did balloon down: from at least its Startup RAM (154 MB if a balancer tick saw
        # the end of its boot) to its idle demand + 20 %.
        assert 128 <= mb(max(assigned)) <= 154 and mb(assigned[-1]) == 76
        stats = vm.memory.stats
        assert stats.releases > 0 and stats.page_outs == 0 and stats.file_created == 0
    delta = after - before
    assert (delta.read_bytes, delta.write_bytes) == (0, 0)


def test_reserve_is_never_given_out(disk_dir: Path) -> None:
    with Host(
        "300MB",
        reserve="100MB",
        smart_paging_path=disk_dir / "vms",
        balancer_interval=TICK,
        balancer_start_delay=0,
    ) as host:
        assert host.capacity == host.pool.size == 200 * MB  # the reserve is not even in the pool
        big = article_vm(host, "big", startup="256MB")
        with pytest.raises(NotEnoughMemoryError, match="Not enough memory in the system"):
            big.start()
        host.remove_vm("big")
        vms = [article_vm(host, "vm1"), article_vm(host, "vm2")]
        host.start_all(30)
        host.restart()  # 200 MB for 2 x 128: both short, neither touches the reserve
        reports = host.wait_booted(60)
        assert all(r.smart_paging for r in reports)
        host.wait_settled(60)
        for sample in host.timeline:
            assert sum(s.memory_assigned for s in sample.vms) <= 200 * MB
            assert sample.available_memory >= 0
        assert all(vm.status.memory_status == "OK" for vm in vms)


def test_user_trace_boots_on_smart_paging_and_idle_demand_is_settable(disk_dir: Path) -> None:
    rng = np.random.default_rng(1)
    pages = np.concatenate([np.arange(128 * 256), rng.integers(0, 128 * 256, 4000)])
    writes = np.ones(len(pages), bool)
    workload = [
        Trace(pages.astype(np.uint32), writes, boot=True, name="recorded-boot"),
        Idle(demand="40MB", touch_interval=0.05),
    ]
    with Host(
        "176MB", smart_paging_path=disk_dir / "vms", balancer_interval=TICK, balancer_start_delay=0
    ) as host:
        vm1 = article_vm(host, "vm1", workload=workload)
        vm2 = article_vm(host, "vm2", workload=workload)
        host.start_all(30)
        assert mb(vm1.status.memory_demand) == 40 and mb(vm1.status.memory_assigned) == 48
        host.restart()  # 176 MB for 2 x 128
        reports = host.wait_booted(60)
        assert all(r.smart_paging and r.page_outs > 0 and r.page_ins > 0 for r in reports)
        assert all(
            r.page_in_latency is not None and r.page_in_latency.count == r.page_ins for r in reports
        )
        host.wait_settled(60)
        assert vm2.status.memory_status == "OK" and vm2.phase == "idle"


def test_mmap_backend_smart_paging_reaches_the_device_and_drains(disk_dir: Path) -> None:
    folder = disk_dir / "vms"
    with Host(
        "200MB",
        smart_paging_path=folder,
        balancer_interval=TICK,
        balancer_start_delay=0,
        backend="mmap",
    ) as host:
        vms = [article_vm(host, "vm1"), article_vm(host, "vm2")]
        host.start_all(30)
        host.restart()  # 200 MB for 2 x 128
        for r in host.wait_booted(60):
            assert r.smart_paging and r.page_outs > 0
            assert r.device_write_bytes is not None and r.device_write_bytes >= r.bytes_written
        host.wait_settled(60)
        assert paging_files(folder) == []
        assert all(vm.status.memory_status == "OK" for vm in vms)


def test_default_smart_paging_folder_is_the_vms_own(
    disk_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(disk_dir)
    with Host("128MB", balancer_interval=TICK, balancer_start_delay=0) as host:
        assert host.folder == str(disk_dir / "vmmem-vms")
        vm = host.add_vm("web01", startup="64MB", minimum="32MB", workload=FAST)
        assert vm.smart_paging_path == str(disk_dir / "vmmem-vms" / "web01")
        vm.start()
        vm.wait_booted(30)
        assert (disk_dir / "vmmem-vms" / "web01").is_dir()
        assert vm.status.smart_paging_file_path == vm.smart_paging_path  # not in use: the folder
        vm.stop()
        assert vm.state == "Off" and vm.status.memory_assigned == 0
        assert host.available_memory == 128 * MB
    # What the host made is gone but the VM's virtual disk, kept (as a VHDX is) for next time.
    left = [p.name for p in (disk_dir / "vmmem-vms").rglob("*")]
    assert left == ["web01", f"web01-{vm.vhd_size() // MB}MB.vmdisk"]


class LateStart(Workload):
    """A phase whose thread has not run yet (a loaded machine): it blocks before its first
    step without a guest.sleep, until the test lets it go."""

    phase = "late"
    boot = False

    def __init__(self) -> None:
        self.go = threading.Event()

    def run(self, guest: Guest) -> None:
        self.go.wait()
        guest.keep_only(guest.startup_pages // 4)


def test_settled_waits_until_the_phase_after_the_boot_has_begun(disk_dir: Path) -> None:
    """CI once started a VM beside one whose boot had just ended but whose Idle phase had not
    yet released its boot's memory: wait_settled had returned, and the start failed."""
    late = LateStart()
    workload = [FAST[0], late, Idle(demand="32MB", touch_interval=0.05, touches=64)]
    with Host(
        "350MB", smart_paging_path=disk_dir / "vms", balancer_interval=TICK, balancer_start_delay=0
    ) as host:
        vm = article_vm(host, "vm1", workload)
        try:
            vm.start()
            vm.wait_booted(30)
            host.balance_now()
            assert vm.booted and not vm.steady and vm.phase == "late"
            with pytest.raises(TimeoutError, match="did not settle"):
                host.wait_settled(timeout=0.5)  # held: no amount of time settles it
        finally:
            late.go.set()
        host.wait_settled(30)
        assert vm.steady and vm.phase == "idle"
        assert mb(vm.status.memory_demand) == 32 and mb(vm.status.memory_assigned) == 40
