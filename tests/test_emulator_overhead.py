"""The emulator's own cost never shows up as the guest's slowdown: a boot's time is its own clock
(guest time as declared plus waits measured), the emulator's share is reported beside it.

Every assertion here holds whatever else the machine is doing: identities of the accounting,
CPU time spent (which load cannot shrink), and the order of operations of a replay. No timing
bands (speed goals: benchmarks/bench_emulator_overhead.py).
"""

from __future__ import annotations

import io
import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console

from vmmem.cli import render
from vmmem.cli.main import cli
from vmmem.guests import map_pages
from vmmem.guests.replay import SLEEP_BATCH, plan_replay
from vmmem.hyperv import Boot, Host, Idle, Workload
from vmmem.hyperv.recorded import RecordedBoot
from vmmem.hyperv.reports import BootReport
from vmmem.hyperv.workloads import Guest
from vmmem.lab.results import BootResult, RunResult
from vmmem.lab.schema import RESULT_SCHEMA, validate

TICK = 0.05
IDLE = Idle(touch_interval=0.05, touches=64)
PARTS = ("guest_seconds", "fault_wait_seconds", "disk_seconds", "memory_wait_seconds")
# What a boot of a file before version 3 lacks (read as None).
V3_UNSET = dict.fromkeys((*PARTS, "wall_seconds", "emulator_seconds", "emulator_cpu_seconds"))


def vm(host: Host, name: str, workload: list[Workload], startup: str = "64MB"):
    return host.add_vm(
        name, startup=startup, minimum="32MB", maximum="256MB", buffer=20, workload=workload
    )


def check_accounting(r: BootReport) -> None:
    """boot_time is the sum of its parts; the wall clock is never short of it; the emulator's
    share is what the wall clock took beyond it."""
    parts = [getattr(r, name) for name in PARTS]
    assert all(p is not None and p >= 0 for p in parts), r
    assert r.boot_time == pytest.approx(sum(parts), abs=1e-9)
    assert r.wall_seconds is not None and r.wall_seconds >= r.boot_time - 1e-9
    assert r.emulator_seconds == pytest.approx(max(0.0, r.wall_seconds - r.boot_time), abs=1e-9)
    assert r.emulator_cpu_seconds is not None and r.emulator_cpu_seconds > 0


class _Hog:
    """A Python thread that spins (holding the GIL between switches) while a storm boots: the
    emulator's contention, made on purpose."""

    def __enter__(self) -> _Hog:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()
        return self

    def _spin(self) -> None:
        x = 0
        while not self.stop.is_set():
            x += 1

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def test_a_storm_without_disk_or_paging_boots_exactly_as_fast_as_alone(disk_dir: Path) -> None:
    """No virtual disk, no paging: a boot's time is its guest time alone, so four VMs
    restarting at once beside a spinning Python thread boot in exactly their baseline time;
    whatever the threads cost is the emulator's share."""
    work = [Boot(cpu_time=0.2, disk_read_fraction=0.0, chunk_pages=512), IDLE]
    with Host(
        "400MB", smart_paging_path=disk_dir / "vms", balancer_interval=TICK, balancer_start_delay=0
    ) as host:
        vms = [vm(host, f"vm{i}", work) for i in range(1, 5)]
        host.start_all(60)
        firsts = [v.boot_report for v in vms]
        host.wait_settled(60)
        with _Hog():
            host.restart()
            storm = host.wait_booted(60)
    for first, r in zip(firsts, storm, strict=True):
        assert first is not None and r.kind == "restart"
        assert r.page_ins == r.page_outs == 0 and r.disk_requests == 0
        check_accounting(first)
        check_accounting(r)
        assert r.fault_wait_seconds == r.disk_seconds == r.memory_wait_seconds == 0
        assert r.boot_time == r.guest_seconds == first.boot_time == r.baseline
        assert r.slowdown == 1.0
        assert r.guest_seconds == pytest.approx(0.2, rel=1e-9)


def test_with_a_virtual_disk_the_storm_differs_from_its_baseline_only_by_its_waits(
    disk_dir: Path,
) -> None:
    """With the boot reading its disk (no paging), storm and baseline charge the same guest
    time: any difference in boot time is the disk requests' measured time."""
    work = [Boot(cpu_time=0.2, chunk_pages=512), IDLE]
    with Host(
        "400MB", smart_paging_path=disk_dir / "vms", balancer_interval=TICK, balancer_start_delay=0
    ) as host:
        vms = [vm(host, f"vm{i}", work) for i in range(1, 3)]
        host.start_all(60)
        firsts = [v.boot_report for v in vms]
        host.wait_settled(60)
        host.restart()
        storm = host.wait_booted(60)
    for first, r in zip(firsts, storm, strict=True):
        assert first is not None and r.disk_requests > 0 and r.page_outs == 0
        check_accounting(r)
        assert r.disk_seconds is not None and r.disk_seconds > 0
        assert r.guest_seconds == first.guest_seconds
        assert r.boot_time - first.boot_time == pytest.approx(
            r.disk_seconds - first.disk_seconds, abs=1e-9
        )


def test_smart_paging_waits_stay_in_the_boot_time(disk_dir: Path) -> None:
    """The product: a restart short of memory pays its faults' disk time, in boot_time."""
    idle = Idle(demand="40MB", touch_interval=0.05, touches=64)
    work = [Boot(cpu_time=0.1, disk_read_fraction=0.0, chunk_pages=512), idle]
    with Host(
        "176MB", smart_paging_path=disk_dir / "vms", balancer_interval=TICK, balancer_start_delay=0
    ) as host:
        for i in (1, 2):
            vm(host, f"vm{i}", work, startup="128MB")
        host.start_all(60)
        host.wait_settled(60)
        host.restart()  # 176 MB for 2 x 128: both boot on Smart Paging
        storm = host.wait_booted(60)
    for r in storm:
        assert r.smart_paging and r.page_outs > 0
        check_accounting(r)
        assert r.fault_wait_seconds is not None and r.fault_wait_seconds > 0
        assert r.boot_time > r.guest_seconds


class _Busy(Workload):
    """A boot phase whose emulator work is CPU time spent in Python, then a little guest CPU."""

    phase = "boot"
    boot = True

    def run(self, guest: Guest) -> None:
        start = time.thread_time()
        while time.thread_time() - start < 0.05:
            pass
        guest.sleep(0.01)


def test_the_emulators_own_cpu_is_reported_and_kept_out_of_the_boot(disk_dir: Path) -> None:
    with Host(
        "200MB", smart_paging_path=disk_dir / "vms", balancer_interval=TICK, balancer_start_delay=0
    ) as host:
        v = vm(host, "vm1", [_Busy(), IDLE])
        v.start()
        r = v.wait_booted(30)
    check_accounting(r)
    assert r.boot_time == r.guest_seconds == pytest.approx(0.01, rel=1e-9)
    assert r.emulator_cpu_seconds is not None and r.emulator_cpu_seconds >= 0.05
    # the wall clock is never shorter than the CPU time the thread spent
    assert r.emulator_seconds is not None and r.emulator_seconds >= 0.05 - 0.01 - 1e-6


def test_the_synthetic_boot_charges_its_declared_cpu_time(disk_dir: Path) -> None:
    boot = Boot(cpu_per_page=2e-6, disk_read_fraction=0.0)
    with Host(
        "200MB", smart_paging_path=disk_dir / "vms", balancer_interval=TICK, balancer_start_delay=0
    ) as host:
        v = vm(host, "vm1", [boot, IDLE])
        v.start()
        r = v.wait_booted(30)
    assert r.guest_seconds == pytest.approx(boot.expected_cpu_time(64 * 256), rel=1e-9)


def test_a_recorded_boot_charges_its_instructions_at_guest_ips(disk_dir: Path) -> None:
    boot = RecordedBoot("busybox", scale=2)
    with Host(
        "200MB", smart_paging_path=disk_dir / "vms", balancer_interval=TICK, balancer_start_delay=0
    ) as host:
        v = vm(host, "vm1", [boot, IDLE])
        v.start()
        r = v.wait_booted(60)
    check_accounting(r)
    assert r.guest_seconds == pytest.approx(boot.expected_cpu_time(64 * 256), rel=1e-9)


@pytest.mark.parametrize(("guest", "scale", "pages"), [("debian-12", 1, 131072),
                                                       ("debian-12", 2, 32768),
                                                       ("busybox", 4, 8192)])  # fmt: skip
def test_a_recorded_boots_plan_does_what_the_epoch_loop_did(
    guest: str, scale: float, pages: int
) -> None:
    """The replay planned once per VM size issues the same accesses, the same disk requests
    in the same places, and the same CPU time, as replaying epoch by epoch in Python did."""
    boot = RecordedBoot(guest, scale=scale)
    t = boot.trace
    mapping = "scale" if scale > 1 else boot.mapping
    expected: list[tuple[str, object]] = []
    debt, issued, ips = 0.0, 0.0, boot.guest_ips * scale
    for e in range(t.epochs):
        p, w = t.epoch(e)
        if p.size:
            expected.append(("replay", (map_pages(p, t.memory_pages, pages, mapping), w)))
        off, ln, wr = t.disk(e)
        if off.size:
            if scale > 1:
                first = issued
                issued += off.size / scale
                keep = np.arange(int(first), int(issued)) * scale - first * scale
                idx = np.clip(np.round(keep).astype(np.int64), 0, off.size - 1)
                off, ln, wr = off[idx], ln[idx], wr[idx]
            if off.size:
                expected.append(("disk", (off, ln, wr)))
        debt += t.epoch_instructions_of(e) / ips
        if debt >= SLEEP_BATCH:
            expected.append(("sleep", debt))
            debt = 0.0
    expected.append(("sleep", debt))

    plan = plan_replay(t, pages, page_size=t.page_size, guest_ips=boot.guest_ips, scale=scale)
    got: list[tuple[str, object]] = []
    for a, b, disk, seconds, _ in plan.segments:
        if b > a:
            got.append(("replay", (plan.pages[a:b], plan.writes[a:b])))
        if disk is not None:
            got.append(("disk", disk))
        if seconds:
            got.append(("sleep", seconds))

    def between_disk(ops: list[tuple[str, object]]) -> list[tuple[str, object]]:
        """Consecutive replays joined (a plan's segment spans epochs)."""
        out: list[tuple[str, object]] = []
        for kind, value in ops:
            if kind == "sleep" and not value:
                continue
            if kind == "replay" and out and out[-1][0] == "replay":
                (p0, w0), (p1, w1) = out[-1][1], value  # type: ignore[misc]
                out[-1] = ("replay", (np.concatenate([p0, p1]), np.concatenate([w0, w1])))
            else:
                out.append((kind, value))
        return out

    want, have = between_disk(expected), between_disk(got)
    assert [k for k, _ in want] == [k for k, _ in have]
    for (kind, x), (_, y) in zip(want, have, strict=True):
        if kind == "replay":
            assert np.array_equal(x[0], y[0])  # type: ignore[index]
            assert np.array_equal(np.asarray(x[1], bool), np.asarray(y[1], bool))  # type: ignore[index]
        elif kind == "disk":
            assert all(np.array_equal(u, v) for u, v in zip(x, y, strict=True))  # type: ignore[call-overload]
        else:
            assert x == pytest.approx(y, rel=1e-12)


# --- what the user reads ---------------------------------------------------------------------


# A boot's other figures, as a boot that paged nothing reports them.
_QUIET = dict.fromkeys(
    ("startup_bytes", "assigned_at_boot", "page_ins", "page_outs", "bytes_read", "bytes_written",
     "smart_paging_file_peak_size", "smart_paging_seconds"), 0
) | dict.fromkeys(
    ("fault_p50", "fault_p99", "page_out_p50", "page_out_p99", "device", "device_read_bytes",
     "device_write_bytes")
) | {"smart_paging": False, "smart_paging_ended": True, "paging_dir": "/tmp"}  # fmt: skip


def _boot(
    vm_name: str, kind: str, event: int, boot_time: float, cpu: float, behind: float
) -> BootResult:
    return BootResult(
        **_QUIET,
        **{
            "vm": vm_name,
            "kind": kind,
            "event": event,
            "started_at": float(event),
            "boot_time": boot_time,
            "baseline": 1.0,
            "slowdown": boot_time,
            "guest_seconds": boot_time,
            "fault_wait_seconds": 0.0,
            "disk_seconds": 0.0,
            "memory_wait_seconds": 0.0,
            "wall_seconds": boot_time + behind,
            "emulator_seconds": behind,
            "emulator_cpu_seconds": cpu,
            "smart_paging_peak_bytes": 0,
        },
    )


def test_the_summary_and_the_table_show_the_emulators_share(tmp_path: Path) -> None:
    result = RunResult(
        scenario={"name": "t", "scale": 1, "host": {"memory_bytes": 1, "reserve_bytes": 0},
                  "vms": []},
        boots=[
            _boot("vm1", "start", 0, 1.0, 0.11, 0.0),
            _boot("vm1", "restart", 1, 1.0, 0.25, 0.5),
            _boot("vm2", "restart", 1, 1.0, 0.33, 0.25),
        ],
    )  # fmt: skip
    st = result.storm_summary()
    assert st.emulator_cpu_seconds == 0.33 and st.emulator_seconds == 0.5
    note = result.emulator_note()
    assert note is not None and "0.33 s of CPU" in note and "0.50 s behind" in note
    assert "more than 10 % behind in 2 boot(s)" in note  # the storm's two, not the start
    out = io.StringIO()
    render.run_report(Console(width=250, file=out, color_system=None), result, wide=True)
    text = out.getvalue()
    assert "emulator" in text and "0.25 s CPU, +0.50 s" in text and note[:40] in text
    old = RunResult(scenario=result.scenario, boots=[replace(result.boots[1], **V3_UNSET)])
    assert old.emulator_note() is None  # files from before version 3 have no such figures


def test_a_runs_json_carries_the_emulators_share(tmp_path: Path) -> None:
    """Through the CLI: every boot has its parts and the emulator's share, the summary the
    storm's most, and the file matches docs/json-schema.json."""
    scenario = tmp_path / "s.toml"
    scenario.write_text(
        """
name = "tiny"
[host]
balancer_start_delay = 0
memory = "160MB"
balancer_interval = 0.05
[[vm]]
name = "vm"
count = 2
startup = "64MB"
minimum = "32MB"
maximum = "256MB"
[vm.workload]
boot_seconds = 0.2
[vm.workload.idle]
touch_interval = 0.05
[[event]]
action = "start"
vms = "all"
[[event]]
action = "restart-vms"
[[event]]
action = "settle"
timeout = 30
"""
    )
    out = tmp_path / "run.json"
    r = CliRunner().invoke(
        cli,
        ["run", str(scenario), "-q", "--wide", "--json", str(out),
         "--vhd-dir", str(tmp_path), "--paging-dir", str(tmp_path)],
        env={"COLUMNS": "250"},
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "the emulator's own share" in r.stdout
    data = json.loads(out.read_text())
    assert data["schema_version"] == 4 and not validate(data, RESULT_SCHEMA)
    for b in data["boots"]:
        assert b["boot_time"] == pytest.approx(sum(b[k] for k in PARTS), abs=1e-9)
        assert b["emulator_cpu_seconds"] > 0 and b["emulator_seconds"] >= 0
    storm = [b for b in data["boots"] if b["kind"] == "restart"]
    assert data["summary"]["emulator_cpu_seconds"] == max(b["emulator_cpu_seconds"] for b in storm)
