"""Each VM's virtual disk and recorded guests, through the Hyper-V layer and the command line:
boot reads reach the device, the disk is made once and reused, --vhd-dir moves only the disks,
--guest boots a recorded guest, `vmmem guests` lists them."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_cli_run import fast_scenario, paging_files

from vmmem import devices
from vmmem.cli.main import EXIT_REFUSED, EXIT_USAGE, cli
from vmmem.hyperv import Boot, Host, Idle
from vmmem.hyperv.recorded import RecordedBoot

MB = 2**20


def test_boot_reads_reach_the_device_and_the_disk_is_reused(quiet_loop_fs: Path) -> None:
    vhds = quiet_loop_fs / "vhds"
    work = [Boot(cpu_time=0.1, disk_read_fraction=0.25), Idle(touch_interval=0.05)]
    with Host(
        "128MB",
        smart_paging_path=quiet_loop_fs / "vms",
        balancer_interval=0.05,
        balancer_start_delay=0,
    ) as host:
        vm = host.add_vm("vm1", startup="64MB", minimum="32MB", vhd_path=vhds, workload=work)
        size = vm.vhd_size()
        assert size == 64 * MB  # four times the 16 MB the boot reads
        vhds.mkdir()
        os.sync()
        info = devices.device_for_path(vhds)
        before = devices.io_counters(info)
        vm.start()  # the disk is made (zero-filled: writes, no reads) before the boot is timed
        report = vm.wait_booted(30)
        after = devices.io_counters(info)
        assert report.disk_read_bytes == 16 * MB and report.disk_requests == 16 * MB // 32768
        assert report.page_outs == 0  # none of it is paging
        # O_DIRECT: the reads reach the device (nothing else reads this private loop device).
        assert (after - before).read_bytes >= report.disk_read_bytes
        assert report.device_read_bytes >= report.disk_read_bytes  # the boot's own window
        disk = Path(vm.vhd_file(size))
        made = disk.stat().st_mtime_ns, disk.stat().st_ino
        assert oct(disk.stat().st_mode & 0o777) == "0o600"
        vm.restart()
        assert vm.wait_booted(30).disk_read_bytes == 16 * MB
    # Kept for the next run, and reused as it is (not remade).
    assert sorted(p.name for p in vhds.iterdir()) == [disk.name]
    with Host(
        "128MB",
        smart_paging_path=quiet_loop_fs / "vms",
        balancer_interval=0.05,
        balancer_start_delay=0,
    ) as host:
        vm = host.add_vm("vm1", startup="64MB", minimum="32MB", vhd_path=vhds, workload=work)
        vm.start()
        vm.wait_booted(30)
    assert (disk.stat().st_mtime_ns, disk.stat().st_ino) == made


def test_a_recorded_guest_boots_on_smart_paging_when_short(disk_dir: Path) -> None:
    # busybox touched 29,733 pages of 256 MB: folded into 64 MB it touches all of them, more
    # than the 50 MB each VM gets on the restart.
    boot = RecordedBoot("busybox")
    with Host(
        "100MB", smart_paging_path=disk_dir, balancer_interval=0.05, balancer_start_delay=0
    ) as host:
        for n in ("vm1", "vm2"):
            host.add_vm(n, startup="64MB", minimum="32MB", workload=[boot, Idle(demand="8MB")])
            host.vms[n].start()
            host.vms[n].wait_booted(60)
            host.wait_settled(60)
        full = host.vms["vm1"].boot_report
        assert full is not None and not full.smart_paging and full.disk_requests > 0
        assert full.disk_requests == 35  # busybox's own, as recorded
        host.restart_vms()
        reports = host.wait_booted(60)
        assert all(r.smart_paging and r.kind == "restart" for r in reports)
        assert sum(r.page_outs for r in reports) > 0
        host.wait_settled(60)
    assert paging_files(disk_dir) == []


def test_a_scaled_recorded_guest_shrinks_its_footprint_disk_and_cpu():
    full, eighth = RecordedBoot("busybox"), RecordedBoot("busybox", scale=8.0)
    assert eighth.expected_cpu_time(16384) == pytest.approx(full.expected_cpu_time(16384) / 8)
    assert eighth.disk_size_hint(16384, 4096) <= full.disk_size_hint(16384, 4096)


def test_guests_command_lists_recorded_and_synthetic():
    r = CliRunner().invoke(cli, ["guests", "--json"])
    assert r.exit_code == 0, r.output
    guests = {g["name"]: g for g in json.loads(r.stdout)["guests"]}
    assert {"busybox", "debian-12", "synthetic-boot"} <= set(guests)
    deb = guests["debian-12"]
    assert deb["kind"] == "recorded" and deb["instructions"] > 5e9 and deb["disk_bytes_read"] > 0
    assert deb["provenance"]["qemu_version"]
    r = CliRunner().invoke(cli, ["guests"], env={"COLUMNS": "140"})
    assert r.exit_code == 0 and "debian-12" in r.stdout and "synthetic-boot" in r.stdout


def test_run_with_a_recorded_guest_and_the_disks_elsewhere(disk_dir: Path, monkeypatch) -> None:
    monkeypatch.chdir(disk_dir)
    vhds = disk_dir / "vhds"
    vhds.mkdir()
    r = CliRunner().invoke(
        cli,
        ["run", fast_scenario(disk_dir, boot=0.5), "--scale", "8", "--guest", "busybox"]
        + ["--vhd-dir", str(vhds), "--json", "g.json", "-q"],
    )
    assert r.exit_code == 0, r.output
    data = json.loads((disk_dir / "g.json").read_text())
    assert {v["workload"]["guest"] for v in data["scenario"]["vms"]} == {"busybox"}
    assert all(b["disk_requests"] > 0 for b in data["boots"])
    # The disks are in --vhd-dir, the VMs' folders hold nothing of them.
    assert sorted(p.name for p in vhds.iterdir()) == [f"vm{i}-16MB.vmdisk" for i in range(1, 5)]
    assert not any(p.suffix == ".vmdisk" for p in (disk_dir / "vmmem-vms").rglob("*"))


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--guest", "no-such-guest"], EXIT_USAGE, "--guest: no shipped guest named"),
        (["--guest-ips", "3e9"], EXIT_USAGE, "--guest-ips goes with --guest"),
        (["--vhd-dir", "/dev/null/vhds"], EXIT_REFUSED, "virtual-disk folder /dev/null/vhds"),
    ],
)
def test_guest_and_disk_options_are_checked_before_running(tmp_path, args, code, message):
    r = CliRunner().invoke(cli, ["run", "--scale", "8", *args])
    assert r.exit_code == code and message in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_running_vm_short_of_memory_pages_inside_the_guest(disk_dir: Path) -> None:
    """Not Smart Paging: the guest pages to its own page file on its virtual disk, counted
    apart; Smart Paging's status and counters stay untouched."""
    from vmmem.hyperv import Trace

    trace = Trace(np.arange(0, 200 * 256, dtype=np.uint32), np.ones(200 * 256, bool))
    vhds = disk_dir / "vhds"
    with Host(
        "128MB", smart_paging_path=disk_dir / "vms", balancer_interval=0.05, balancer_start_delay=0
    ) as host:
        vm = host.add_vm(
            "vm1", startup="32MB", minimum="32MB", maximum="512MB", vhd_path=vhds,
            workload=[Boot(cpu_per_page=0), trace],
        )  # fmt: skip
        vm.start()
        vm.wait_booted(30)
        deadline = time.monotonic() + 30
        while vm.phase == "trace" and time.monotonic() < deadline:
            time.sleep(0.05)
        status = vm.status
        assert vm.phase == "done", "the trace ran to its end instead of waiting"
        assert status.guest_page_outs >= (200 - 128) * 256  # at least what did not fit
        assert status.guest_paging_bytes > 0
        assert not status.smart_paging_file_in_use and status.smart_paging_bytes == 0
        assert status.pressure > 100 and status.memory_status == "Warning"
        (page_file,) = vhds.glob("pagefile-*.slp")
        assert page_file.stat().st_size > 0
        assert not list((disk_dir / "vms").rglob("*.slp"))  # no Smart Paging file anywhere
        report = vm.boot_report
        assert report is not None and not report.smart_paging and report.page_outs == 0
    assert not list(vhds.glob("*.slp"))  # deleted with the VM's memory


def test_a_disk_folder_without_room_for_the_virtual_disks_is_refused(tmp_path_factory):
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    mnt = tmp_path_factory.mktemp("tiny")
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        r = CliRunner().invoke(cli, ["run", "--scale", "8", "--vhd-dir", str(mnt)])
        assert r.exit_code == EXIT_REFUSED, r.output
        assert "not enough free space for the VMs' virtual disks" in r.stderr
        assert "--vhd-dir" in r.stderr
        assert os.listdir(mnt) == []  # refused before anything was made
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_record_boot_never_overwrites_and_checks_its_folder_first(tmp_path):
    images = tmp_path / "image"
    images.mkdir()
    existing = tmp_path / "mine.npz"
    existing.write_bytes(b"the user's")
    r = CliRunner().invoke(cli, ["record-boot", str(existing), "--image-dir", str(images)])
    assert r.exit_code == EXIT_USAGE and "vmmem never overwrites it" in r.stderr
    assert existing.read_bytes() == b"the user's"
    r = CliRunner().invoke(
        cli, ["record-boot", str(tmp_path / "nope" / "t.npz"), "--image-dir", str(images)]
    )
    assert r.exit_code == EXIT_USAGE and "folder is missing or not writable" in r.stderr
