"""The device's queue depth over the storm, from its own counters: what a run records (the
storm's window per location, the busiest device in the summary), how it is shown, and a real
run on a loop device of its own."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import small_ext4
from rich.console import Console

from vmmem.cli import render
from vmmem.cli.main import cli
from vmmem.lab.results import CompareResult, DeviceIO, LocationResult, RunResult
from vmmem.lab.schema import RESULT_SCHEMA, validate

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
V4 = os.path.join(DATA, "run-v4-reboot.json")  # a real run: 3 VMs' storm on this disk


def v4_run() -> RunResult:
    with open(V4, encoding="utf-8") as f:
        return RunResult.from_dict(json.load(f))


def with_storm_io(loc: LocationResult, **changes: int | float) -> LocationResult:
    assert loc.storm_io is not None
    return dataclasses.replace(loc, storm_io=dataclasses.replace(loc.storm_io, **changes))


def test_the_storms_queue_depth_is_its_time_in_queue_per_ms_of_wall_time():
    run = v4_run()
    io = run.locations[0].storm_io
    assert io is not None and io.seconds and io.time_in_queue_ms and io.io_ticks_ms
    st = run.storm_summary()
    assert st.vms == 3 and st.device == run.locations[0].device == "vda"
    assert st.device_queue_depth == pytest.approx(io.time_in_queue_ms / (io.seconds * 1000))
    assert st.device_queue_depth_per_vm == pytest.approx(st.device_queue_depth / 3)
    assert st.device_utilisation == pytest.approx(io.io_ticks_ms / (io.seconds * 1000))
    # The storm is inside the run: its device counters are part of the run's.
    whole = run.locations[0].device_io
    assert whole is not None and whole.seconds and whole.seconds > io.seconds
    for f in ("read_count", "write_count", "read_bytes", "write_bytes", "io_ticks_ms"):
        assert getattr(io, f) <= getattr(whole, f), f


def test_the_summary_names_the_device_with_the_deepest_queue():
    run = v4_run()
    vda = run.locations[0]
    assert vda.storm_io is not None and vda.storm_io.queue_depth and vda.storm_io.time_in_queue_ms
    busier = dataclasses.replace(
        with_storm_io(vda, time_in_queue_ms=10 * vda.storm_io.time_in_queue_ms),
        device="sdb",
        path="/srv/paging",
    )
    tmpfs = dataclasses.replace(vda, device=None, storm_io=None, device_io=None)
    run.locations = [vda, busier, tmpfs]
    st = run.storm_summary()
    assert st.device == "sdb"
    assert st.device_queue_depth == pytest.approx(10 * vda.storm_io.queue_depth)
    run.locations = [tmpfs]  # no device counters over the storm: nothing to say
    st = run.storm_summary()
    assert (st.device, st.device_queue_depth, st.device_utilisation) == (None, None, None)


def test_no_figures_from_counters_a_file_did_not_record():
    io = DeviceIO(read_bytes=1, write_bytes=2, read_count=3, write_count=4)  # version 3
    assert io.queue_depth is None and io.utilisation is None
    no_time = DeviceIO(1, 2, 3, 4, seconds=0.0, io_ticks_ms=5, time_in_queue_ms=6)
    assert no_time.queue_depth is None and no_time.utilisation is None


def test_the_run_shows_one_line_for_the_storms_device(tmp_path):
    r = CliRunner().invoke(
        cli, ["show", V4, "--plot", str(tmp_path / "p.png")], env={"COLUMNS": "200"}
    )
    assert r.exit_code == 0, r.output
    run = v4_run()
    st = run.storm_summary()
    io = run.locations[0].storm_io
    assert st.device_queue_depth is not None and st.device_utilisation is not None
    assert io is not None and io.seconds is not None
    assert (
        f"the storm on vda: {io.read_count:,} reads, {io.write_count:,} writes in "
        f"{io.seconds:.2f} s, queue depth "
        f"{st.device_queue_depth:.2f} ({st.device_queue_depth / 3:.2f} per VM), busy "
        f"{st.device_utilisation * 100:.0f} %"
    ) in r.stdout


def test_a_comparison_row_carries_the_runs_queue_depth_and_wide_shows_it():
    run = v4_run()
    cmp = CompareResult(baseline=None, runs={run.locations[0].path: run})
    (row,) = cmp.rows()
    assert row.device_queue_depth == run.storm_summary().device_queue_depth
    assert not validate(cmp.to_dict(), RESULT_SCHEMA)
    for wide in (False, True):
        console = Console(width=250, record=True)
        render.compare_report(console, cmp, wide=wide)
        text = console.export_text()
        assert ("queue depth" in text) is wide
        assert (f"{row.device_queue_depth:.2f}" in text) is wide


# The article's storm in small (at --scale 8): 3 VMs of 64 MB on 160 MB, 32 MB short.
STORM = """
name = "queue-depth"
[host]
balancer_start_delay = 0
memory = "1280MB"
balancer_interval = 0.05
[[vm]]
name = "vm"
count = 3
startup = "512MB"
minimum = "32MB"
maximum = "2048MB"
[vm.workload]
idle_demand = "250MB"
boot_seconds = 0.5
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


def test_a_storm_that_pages_on_a_loop_device_shows_its_queue(tmp_path: Path, monkeypatch):
    """The Smart Paging files and the virtual disks on a loop device nothing else uses: over
    the storm it had requests in flight, so its queue depth is above 0 and its busy share
    between 0 and 1."""
    scenario = tmp_path / "storm.toml"
    scenario.write_text(STORM)
    with small_ext4(384 * 2**20, tmp_path) as mnt:
        monkeypatch.chdir(mnt)
        r = CliRunner().invoke(
            cli,
            ["run", str(scenario), "--scale", "8", "-q", "--json", "run.json",
             "--paging-dir", str(mnt / "sp"), "--vhd-dir", str(mnt / "vhd")],
            env={"COLUMNS": "200"},
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        data = json.loads((mnt / "run.json").read_text())
    assert not validate(data, RESULT_SCHEMA)
    st = data["summary"]
    storm = [b for b in data["boots"] if b["event"] == st["event"]]
    assert st["vms"] == 3 and sum(b["page_outs"] for b in storm) > 0  # it paged
    (loc,) = data["locations"]
    assert loc["device"].startswith("loop") and st["device"] == loc["device"]
    io = loc["storm_io"]
    assert io["write_count"] > 0 and io["time_in_queue_ms"] > 0 and io["seconds"] > 0
    assert st["device_queue_depth"] == pytest.approx(io["time_in_queue_ms"] / io["seconds"] / 1e3)
    assert st["device_queue_depth"] > 0
    assert st["device_queue_depth_per_vm"] == pytest.approx(st["device_queue_depth"] / 3)
    assert 0 <= st["device_utilisation"] <= 1
    assert f"the storm on {loc['device']}:" in r.stdout and "queue depth" in r.stdout
