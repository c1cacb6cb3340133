"""The paging predicted from a guest's trace (vmmem.guests.predict, `vmmem plan --guest`) is
exactly what the replay does where the VM's memory stays fixed for its boot: against the
reference model (tests/pagemodel.py), the paging core itself, the VM's own replay path, and a
real restart; and the plan's JSON, text and promise of no I/O."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pagemodel import PAGED_OUT, ModelMemory, ModelPool

import vmmem
from vmmem.cli.main import cli
from vmmem.errors import SettingsError
from vmmem.guests import GuestTrace, map_pages
from vmmem.guests.predict import (
    boot_accesses,
    boot_seconds,
    paging_curve,
    parse_latency,
    simulate,
)
from vmmem.hyperv import Host, Idle
from vmmem.hyperv.recorded import RecordedBoot
from vmmem.hyperv.session import BootRecord, GuestSession
from vmmem.lab.plan import _boot_seconds, plan_scenario
from vmmem.lab.predict import predict_vm
from vmmem.lab.scenario import load_scenario
from vmmem.lab.scenario_model import VMSpec, WorkloadSpec
from vmmem.lab.schema import RESULT_SCHEMA, validate

ROOT = Path(__file__).resolve().parent.parent
TIGHT = str(ROOT / "examples" / "tight-host.toml")


@st.composite
def traces(draw: st.DrawFn) -> tuple[int, list[int], list[bool]]:
    npages = draw(st.integers(1, 12))
    n = draw(st.integers(0, 80))
    pages = draw(st.lists(st.integers(0, npages - 1), min_size=n, max_size=n))
    writes = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return npages, pages, writes


def model_run(npages: int, pages: list[int], writes: list[bool], frames: int) -> dict[str, int]:
    """The reference model's counters, and its peaks taken after every access."""
    m = ModelMemory(ModelPool(npages), npages, 4096, frame_limit=frames)
    peak = peak_report = 0
    for p, w in zip(pages, writes, strict=True):
        m.replay([p], [w])
        peak = max(peak, sum(s == PAGED_OUT for s in m.state))
        if m.file_exists:  # what the boot report samples while the Smart Paging file exists
            peak_report = max(peak_report, m.counters["zero_fills"] - m.resident)
    c = m.counters
    return {
        "faults": c["zero_fills"] + c["page_ins"],
        "page_ins": c["page_ins"],
        "page_outs": c["page_outs"],
        "peak": peak,
        "peak_report": peak_report,
    }


@settings(max_examples=300, deadline=None)
@given(traces())
def test_the_curve_and_the_simulation_are_the_reference_model_at_every_frame_limit(trace):
    npages, pages, writes = trace
    curve = paging_curve(np.array(pages, np.uint32), np.array(writes), npages)
    for frames in range(1, npages + 1):
        want = model_run(npages, pages, writes, frames)
        sim = simulate(np.array(pages, np.uint32), np.array(writes), npages, frames)
        assert curve.at(frames) == (want["page_ins"], want["page_outs"]), frames
        assert int(curve.misses[frames]) == want["faults"]
        assert (sim.page_ins, sim.page_outs, sim.faults) == (
            want["page_ins"],
            want["page_outs"],
            want["faults"],
        )
        assert sim.peak_paged_out == want["peak"]
        assert sim.peak_zero_fills_not_resident == want["peak_report"]
    # Paging stops exactly at the curve's answer, and not one frame earlier.
    stop = curve.frames_without_paging
    assert curve.at(stop)[1] == 0
    assert stop == 1 or curve.at(stop - 1)[1] > 0


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40), st.integers(0, 3000), st.integers(0, 2**32 - 1), st.floats(0, 1))
def test_the_curve_is_the_simulation_over_long_traces(npages, n, seed, write_share):
    """Traces many times longer than the curve's window of positions (about twice the pages),
    so it is packed again and again, against the plain simulation at every frame limit."""
    rng = np.random.default_rng(seed)
    hot = rng.integers(0, npages, n)  # some locality: half the accesses near the last one
    pages = np.where(rng.random(n) < 0.5, hot, np.roll(hot, 1) // 2).astype(np.uint32)
    writes = rng.random(n) < write_share
    curve = paging_curve(pages, writes, npages)
    for frames in range(1, npages + 1):
        sim = simulate(pages, writes, npages, frames)
        assert curve.at(frames) == (sim.page_ins, sim.page_outs), frames
        assert int(curve.misses[frames]) == sim.faults


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(traces(), st.data())
def test_the_curve_is_the_paging_core_at_a_fixed_frame_limit(disk_dir: Path, trace, data):
    npages, pages, writes = trace
    frames = data.draw(st.integers(1, npages))
    pool = vmmem.FramePool(f"{4 * npages}KB")
    with vmmem.GuestMemory(pool, npages * 4096, frame_limit=frames, paging_dir=disk_dir) as m:
        m.replay(np.array(pages, np.uint32), np.array(writes, bool))
        got = m.stats
    curve = paging_curve(np.array(pages, np.uint32), np.array(writes), npages)
    assert curve.at(frames) == (got.page_ins, got.page_outs)
    assert int(curve.misses[frames]) == got.zero_fills + got.page_ins


def test_pages_out_of_range_and_mismatched_flags_are_refused():
    with pytest.raises(SettingsError, match="outside 0..3"):
        paging_curve(np.array([1, 4], np.uint32), None, 4)
    with pytest.raises(SettingsError, match="one flag per page"):
        simulate(np.array([1, 2], np.uint32), np.array([True]), 4, 2)
    with pytest.raises(SettingsError, match="at least 1"):
        simulate(np.array([1, 2], np.uint32), None, 4, 0)


def _replay_as_the_vm_does(boot: RecordedBoot, startup_pages: int, frames: int, folder: Path):
    """RecordedBoot.run through a GuestSession (what the VM's guest thread calls) on a guest
    memory held at `frames` frames for the whole boot, on Smart Paging."""
    pool = vmmem.FramePool(startup_pages * 4096)
    memory = vmmem.GuestMemory(pool, startup_pages * 4096, frame_limit=frames, paging_dir=folder)
    lock = threading.RLock()
    session = GuestSession(memory, BootRecord(kind="restart"), startup_pages, lock,
                           threading.Condition(lock))  # fmt: skip
    session.assigned = frames
    session.smart_paging = True
    try:
        boot.run(session)
        return memory.stats, session.record.peak_paged_out
    finally:
        memory.close()


# The shipped guests as `--scale 8` shrinks them in the article's 512 MB VMs (64 MB each).
@pytest.mark.parametrize("guest", ["busybox", "debian-12"])
def test_shipped_guests_shrunk_by_scale_page_exactly_as_predicted(disk_dir: Path, guest: str):
    boot = RecordedBoot(guest, scale=8.0)
    n = 64 * 2**20 // 4096
    pages, writes = boot_accesses(boot.trace, n, boot.page_mapping)
    curve = paging_curve(pages, writes, n)
    stop = curve.frames_without_paging
    assert 0 < stop < n
    for frames in (stop * 3 // 4, stop - 1, stop):
        stats, report_peak = _replay_as_the_vm_does(boot, n, frames, disk_dir)
        assert curve.at(frames) == (stats.page_ins, stats.page_outs), frames
        sim = simulate(pages, writes, n, frames)
        assert (sim.page_ins, sim.page_outs) == (stats.page_ins, stats.page_outs)
        # The report samples its peak between replay chunks: never above the exact one.
        assert report_peak <= sim.peak_zero_fills_not_resident
    assert curve.at(stop) == (0, 0) and curve.at(stop - 1)[1] > 0


def test_the_synthetic_boot_pages_exactly_as_predicted(disk_dir: Path):
    """Its accesses come from its own code, run without memory or time: the same ones."""
    v = VMSpec("vm1", startup=64 * 2**20, workload=WorkloadSpec(boot_seconds=0.05))
    want = predict_vm(v, 40 * 2**20, None)
    stats, _ = _replay_as_the_vm_does(v.workload.boot_phase(), 16384, 10240, disk_dir)
    assert want.page_outs > 0 and want.guest == "synthetic-boot"
    assert (want.page_ins, want.page_outs) == (stats.page_ins, stats.page_outs)
    assert want.cpu_seconds == pytest.approx(0.05)


@pytest.mark.parametrize("model", ["windows-model", "windows-model-zeroing"])
def test_the_windows_models_page_exactly_as_predicted(disk_dir: Path, model: str):
    """A model is the synthetic boot's code with sourced settings: predicted the same way
    (no disk here, so the zeroing variant's CPU is charged, not hidden in I/O waits)."""
    v = VMSpec("vm1", startup=64 * 2**20, workload=WorkloadSpec(model=model))
    want = predict_vm(v, 40 * 2**20, None)
    stats, _ = _replay_as_the_vm_does(v.workload.boot_phase(), 16384, 10240, disk_dir)
    assert want.page_outs > 0 and want.guest == model
    assert (want.page_ins, want.page_outs) == (stats.page_ins, stats.page_outs)
    # The Hyper-V model touches 3/4 of Startup RAM; zeroing touches (and writes) all of it.
    if model.endswith("zeroing"):
        assert want.no_paging_frames == 16384
    else:
        assert want.no_paging_frames <= 12288


def test_a_restarted_vm_with_fixed_memory_pages_exactly_as_predicted(disk_dir: Path):
    # A static VM holds 40 MB of the 100 MB host, so the restarted VM gets 60 MB for its whole
    # boot (nothing else can give or take): busybox folded into 64 MB touches all of it.
    boot = RecordedBoot("busybox")
    with Host(
        "100MB", smart_paging_path=disk_dir, balancer_interval=0.05, balancer_start_delay=0
    ) as host:
        vm = host.add_vm("vm1", startup="64MB", minimum="32MB", workload=[boot, Idle(demand="8MB")])
        vm.start()
        vm.wait_booted(60)
        host.wait_settled(60)
        host.add_vm("hog", startup="40MB", dynamic=False, workload=[Idle(demand="8MB")]).start()
        host.wait_booted(60)
        vm.restart()
        report = vm.wait_booted(60)
    assert report.smart_paging and report.assigned_at_boot == 60 * 2**20
    n = 64 * 2**20 // 4096
    pages, writes = boot_accesses(boot.trace, n, boot.page_mapping)
    frames = report.assigned_at_boot // 4096
    want = paging_curve(pages, writes, n).at(frames)
    assert want[1] > 0
    assert (report.page_ins, report.page_outs) == want


def test_boot_time_formula_and_latency_parsing():
    assert parse_latency("150us") == pytest.approx(150e-6)
    assert parse_latency("8ms") == pytest.approx(8e-3)
    assert parse_latency("0.2 ms") == pytest.approx(2e-4)
    assert parse_latency("1e-4") == pytest.approx(1e-4)
    assert parse_latency("15585iops") == pytest.approx(1 / 15585)  # as `disks --probe` says
    for bad in ("fast", "0us", "-1ms", "2 weeks", "90s", "0iops"):
        with pytest.raises(SettingsError, match="latency"):
            parse_latency(bad)
    # CPU + (page-ins + disk reads) x read + (page-outs + disk writes) x write
    assert boot_seconds(1.0, 100, 50, 10, 5, 1e-3, 2e-3) == pytest.approx(1.0 + 0.11 + 0.11)


def test_the_planner_times_a_recorded_guest_by_its_own_boot():
    s = load_scenario(None).with_guest("debian-12")
    t = GuestTrace.load("debian-12")
    assert _boot_seconds(s.vms[0]) == pytest.approx(t.instructions / 2e9)  # 2.9 s, not 6.6
    synthetic = load_scenario(None)
    assert _boot_seconds(synthetic.vms[0]) == pytest.approx(6.5536)


def _plan_json(*args: str) -> dict:
    r = CliRunner().invoke(cli, ["plan", *args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_plan_json_has_each_restarts_prediction_and_matches_the_schema():
    d = _plan_json(TIGHT, "--guest", "debian-12", "--latency", "150us", "--write-latency", "1ms")
    assert d["latency"] == {"read": pytest.approx(150e-6), "write": pytest.approx(1e-3)}
    storm = d["events"][2]
    assert set(storm["predicted"]) == {"vm1", "vm2", "vm3", "vm4"}
    p = storm["predicted"]["vm1"]
    assert p["assigned_bytes"] == storm["assigned_bytes"]["vm1"] == 180 * 2**20
    # debian-12 touches 196 MB of a 512 MB VM: with 180 MB it pages, from 196 MB it does not
    assert p["page_outs"] > 0 and p["no_paging_bytes"] == 196 * 2**20
    assert p["smart_paging_peak_bytes"] > 0
    want = (
        p["cpu_seconds"]
        + (p["page_ins"] + p["disk_reads"]) * 150e-6
        + (p["page_outs"] + p["disk_writes"]) * 1e-3
    )
    assert p["boot_seconds"] == pytest.approx(want)
    assert p["cpu_seconds"] == pytest.approx(GuestTrace.load("debian-12").instructions / 2e9)
    assert all(e["predicted"] == {} for e in d["events"] if e["index"] != 2)
    plan_schema = RESULT_SCHEMA["$defs"]["plan"]
    jsonschema.validate(d, {"$defs": RESULT_SCHEMA["$defs"], **plan_schema})
    with open(ROOT / "docs" / "json-schema.json", encoding="utf-8") as f:
        assert json.load(f) == RESULT_SCHEMA
    # No latency: no boot time.
    assert (
        _plan_json(TIGHT, "--guest", "busybox")["events"][2]["predicted"]["vm1"]["boot_seconds"]
        is None
    )
    # The synthetic boot touches all of its 512 MB: it pages all it lacks.
    synthetic = _plan_json(TIGHT)["events"][2]["predicted"]["vm1"]
    assert synthetic["guest"] == "synthetic-boot" and synthetic["no_paging_bytes"] == 512 * 2**20
    assert synthetic["smart_paging_peak_bytes"] == (512 - 180) * 2**20


def test_plan_with_a_guest_file_by_path_at_a_scale():
    path = str(GuestTrace.load("busybox").path)
    d = _plan_json("--scale", "4", "--guest", path)  # the article's storm, 128 MB VMs
    p = d["events"][2]["predicted"]["vm1"]
    assert p["guest"] == "busybox" and p["no_paging_bytes"] <= 128 * 2**20


def test_plan_prints_the_predictions():
    r = CliRunner().invoke(cli, ["plan", TIGHT, "--guest", "debian-12", "--latency", "8ms"])
    assert r.exit_code == 0, r.output
    assert "predicted boots" in r.output and "no paging from" in r.output
    assert "196 MB" in r.output and "x 8,000 us" in r.output
    assert "event 2: the guests hold at most 3.2 MB in their Smart Paging files, of the " in (
        " ".join(r.output.split())
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--latency", "soon"], "--latency 'soon' is not a time"),
        (["--write-latency", "1ms"], "--write-latency goes with --latency"),
        (["--guest", "no-such-guest"], "--guest: no shipped guest named"),
        (["--guest-ips", "3e9"], "--guest-ips goes with --guest"),
    ],
)
def test_bad_plan_options_are_usage_errors(args, message):
    r = CliRunner().invoke(cli, ["plan", *args])
    assert r.exit_code == 2 and message in r.output, r.output


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_plan_with_a_guest_writes_nothing(tmp_path: Path):
    """`vmmem plan --guest debian-12` opens no file to write, makes and removes none: its
    paging folder (and everything else) is left alone."""
    log = tmp_path / "trace.log"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(ROOT)}
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    calls = "openat,open,creat,mkdir,mkdirat,unlink,unlinkat,rename,renameat,renameat2,truncate"
    cmd = ["strace", "-f", "-qq", "-e", f"trace={calls}", "-o", str(log), sys.executable,
           "-m", "vmmem.cli.main", "plan", "--guest", "debian-12"]  # fmt: skip
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "predicted boots" in r.stdout
    writes = [
        line
        for line in log.read_text().splitlines()
        if ("O_WRONLY" in line or "O_RDWR" in line or "O_CREAT" in line or "mkdir" in line
            or "unlink" in line or "rename" in line or "truncate" in line)
        and "/dev/null" not in line
        and not ('"/dev/tty"' in line and "= -1" in line)
    ]  # fmt: skip
    assert writes == []
    assert list(cwd.iterdir()) == []  # no ./vmmem-vms host folder either


def test_replay_epochs_and_the_vm_map_pages_the_same_way():
    """boot_accesses is the VM's replay, mapped in one go: the same pages as epoch by epoch."""
    boot = RecordedBoot("busybox", scale=4.0)
    n = 32768
    pages, _ = boot_accesses(boot.trace, n, boot.page_mapping)
    t = boot.trace
    per_epoch = [map_pages(t.epoch(e)[0], t.memory_pages, n, "scale") for e in range(t.epochs)]
    assert np.array_equal(pages, np.concatenate(per_epoch))


def test_the_plan_has_no_prediction_without_a_restart():
    s = load_scenario(None).with_guest("busybox")
    p = plan_scenario(s)
    assert [e.index for e in p.events if e.predicted] == [2]


SHORT = """
name = "two-short"
[host]
balancer_start_delay = 0
memory = "100MB"
balancer_interval = 0.05
[[vm]]
name = "vm"
count = 2
startup = "64MB"
minimum = "32MB"
[vm.workload]
idle_demand = "8MB"
[vm.workload.idle]
touch_interval = 0.05
[[event]]
action = "start"
vms = "all"
[[event]]
action = "restart-vms"
[[event]]
action = "settle"
timeout = 60
"""


def test_run_prints_the_prediction_beside_the_measurement(disk_dir: Path, monkeypatch):
    # Two 64 MB VMs restarted on 100 MB get 50 MB each: busybox folded into 64 MB pages.
    monkeypatch.chdir(disk_dir)
    scenario = disk_dir / "short.toml"
    scenario.write_text(SHORT)
    out = disk_dir / "run.json"
    args = ["run", str(scenario), "--guest", "busybox", "--paging-dir", str(disk_dir),
            "--json", str(out)]  # fmt: skip
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    predicted = data["plan"]["events"][1]["predicted"]
    assert set(predicted) == {"vm1", "vm2"}
    ins = sum(p["page_ins"] for p in predicted.values())
    outs = sum(p["page_outs"] for p in predicted.values())
    assert outs > 0
    s = data["summary"]
    line = next(
        x for x in r.output.splitlines() if x.startswith("predicted from the boot's accesses")
    )
    assert f"page-ins/outs {ins:,}/{outs:,}" in line
    assert f"measured {s['page_ins']:,}/{s['page_outs']:,}" in line
    # The run's file and its plan read back against the schema (with the predictions).
    assert validate(data, RESULT_SCHEMA) == []


def test_plan_takes_the_latency_from_a_probe_file(tmp_path: Path):
    probe = tmp_path / "probe.json"
    entry = {"path": "/x", "probe": {"read_iops": 10_000.0, "write_iops": 20_000.0}}
    probe.write_text(json.dumps({"locations": [entry]}))
    d = _plan_json(TIGHT, "--guest", "debian-12", "--latency", str(probe))
    assert d["latency"] == {"read": pytest.approx(1e-4), "write": pytest.approx(5e-5)}
    # Two probed places, or none, or a rate that is not one: refused, naming the file.
    for bad, field in (
        ({"locations": [entry, entry]}, "2 probed locations"),
        ({"locations": []}, "0 probed locations"),
        ({"locations": [{"probe": {"read_iops": None, "write_iops": 1.0}}]}, "probe.read_iops"),
    ):
        probe.write_text(json.dumps(bad))
        r = CliRunner().invoke(cli, ["plan", "--latency", str(probe)])
        assert r.exit_code == 2 and str(probe) in r.output and field in r.output, r.output
    probe.write_text("{not json")
    r = CliRunner().invoke(cli, ["plan", "--latency", str(probe)])
    assert r.exit_code == 2 and "not a readable" in r.output
    r = CliRunner().invoke(cli, ["plan", "--latency", str(probe), "--write-latency", "1ms"])
    assert r.exit_code == 2 and "the probe file has the write rate" in r.output


def test_large_vms_cost_the_prediction_only_what_their_boot_touches():
    # A recorded guest in a 64 GB VM: the curve spans only the pages the boot touches.
    big = VMSpec("big", startup=64 * 2**30, workload=WorkloadSpec(guest="busybox"))
    p = predict_vm(big, 100 * 2**20, None)
    assert p is not None and p.no_paging_frames == GuestTrace.load("busybox").pages_touched
    # The synthetic boot touches all of Startup RAM: above 16 GB it is not predicted.
    assert predict_vm(VMSpec("big", startup=32 * 2**30), 2**30, None) is None
