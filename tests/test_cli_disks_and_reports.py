"""``vmmem disks``, ``vmmem show``, the schema file, help texts and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
from click.testing import CliRunner

from vmmem.cli.main import EXIT_USAGE, cli
from vmmem.lab.results import CompareResult, RunResult
from vmmem.lab.schema import RESULT_SCHEMA, schema_json, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_disks_lists_writable_filesystems_as_json():
    r = CliRunner().invoke(cli, ["disks", "--json"])
    assert r.exit_code == 0, r.output
    locs = json.loads(r.stdout)["locations"]
    assert any(x["mountpoint"] == "/" for x in locs)
    for x in locs:
        assert {"device", "model", "rotational", "fstype", "free_bytes", "ram_backed"} <= set(x)
    shm = [x for x in locs if x["mountpoint"] == "/dev/shm"]
    if shm:
        assert shm[0]["ram_backed"] is True


def test_disks_table_warns_for_ram():
    r = CliRunner().invoke(cli, ["disks"])
    assert r.exit_code == 0
    assert "filesystem" in r.stdout
    if os.path.isdir("/dev/shm"):
        assert "RAM-backed" in r.stdout and "nothing real is measured" in r.stdout


def test_disks_probe_measures_the_folder_and_cleans_up(disk_dir):
    r = CliRunner().invoke(cli, ["disks", str(disk_dir), "--probe", "--seconds", "0.3", "--json"])
    assert r.exit_code == 0, r.output
    (loc,) = json.loads(r.stdout)["locations"]
    p = loc["probe"]
    assert p["error"] is None
    assert p["read_iops"] > 0 and p["write_iops"] > 0
    assert 0 < p["read_p50_us"] <= p["read_p99_us"]
    assert p["reached_device"] is True  # O_DIRECT: the device's own counters moved
    assert os.listdir(disk_dir) == []


def test_schema_file_is_the_generated_one_and_valid():
    with open(os.path.join(ROOT, "docs", "json-schema.json"), encoding="utf-8") as f:
        assert f.read() == schema_json()
    try:
        import jsonschema
    except ImportError:
        pytest.skip("jsonschema not installed (the small validator is used instead)")
    jsonschema.Draft202012Validator.check_schema(RESULT_SCHEMA)


def test_small_validator_finds_problems():
    run = RunResult(scenario={"name": "x"})
    problems = validate(run.to_dict(), RESULT_SCHEMA)
    assert any("$.scenario" in p or "oneOf" in p for p in problems)
    assert validate({"kind": "nope"}, RESULT_SCHEMA)


def _tiny_run() -> RunResult:
    """A RunResult as the runner fills it, for rendering without running."""
    from vmmem.hyperv.reports import TimelineSample, VMStatus
    from vmmem.lab.results import BootResult, LatencyCDF, LocationResult, Percentiles, RunSettings
    from vmmem.lab.scenario import article_scenario
    from vmmem.records import from_json

    s = article_scenario().scaled(8)
    boots = []
    for i, n in enumerate(["vm1", "vm2"]):
        for kind, t, sp in (("start", 1.0, 0), ("host-restart", 2.5, 20 * 2**20)):
            boots.append(
                {
                    "vm": n,
                    "kind": kind,
                    "event": 0 if kind == "start" else 2,
                    "started_at": 5.0 * (kind != "start") + i,
                    "boot_time": t,
                    "baseline": 1.0,
                    "slowdown": t,
                    "startup_bytes": 64 * 2**20,
                    "assigned_at_boot": 44 * 2**20,
                    "smart_paging": bool(sp),
                    "page_ins": 10,
                    "page_outs": 100,
                    "bytes_read": 40960,
                    "bytes_written": 409600,
                    "fault_p50": 1e-4,
                    "fault_p99": 5e-4,
                    "page_out_p50": 1e-4,
                    "page_out_p99": 4e-4,
                    "smart_paging_peak_bytes": sp,
                    "smart_paging_file_peak_size": sp,
                    "smart_paging_seconds": 2.0 if sp else 0.0,
                    "smart_paging_ended": True,
                    "paging_dir": "/tmp/x",
                    "device": "vda",
                    "device_read_bytes": 1 << 20,
                    "device_write_bytes": 1 << 20,
                    "disk_requests": 128,
                    "disk_read_bytes": 4 << 20,
                    "disk_write_bytes": 0,
                }
            )
    timeline = [
        TimelineSample(
            time=t / 10,
            available_memory=0,
            vms=tuple(
                VMStatus(
                    name=n,
                    state="Running",
                    phase="idle",
                    memory_assigned=(40 + t) * 2**20,
                    memory_demand=32 * 2**20,
                    memory_startup=64 * 2**20,
                    pressure=50.0,
                    memory_status="OK",
                    smart_paging_file_in_use=bool(t % 7),
                    smart_paging_file_path=None,
                    smart_paging_bytes=(t % 7) * 2**20,
                    smart_paging_file_size=(t % 7) * 2**20,
                )
                for n in ("vm1", "vm2")
            ),
        )
        for t in range(60)
    ]
    return RunResult(
        scenario=s.to_dict(),
        boots=[from_json(BootResult, b) for b in boots],
        timeline=timeline,
        duration=6.0,
        settings=RunSettings("direct", "lru", 4096, "/tmp/x", ["/tmp/x"]),
        locations=[
            from_json(
                LocationResult,
                {
                    "path": "/tmp/x",
                    "mountpoint": "/",
                    "fstype": "ext4",
                    "source": "/dev/vda",
                    "device": "vda",
                    "disk": "vda",
                    "model": "virtio disk",
                    "rotational": True,
                    "kind": "HDD",
                    "ram_backed": False,
                    "free_bytes": 1 << 40,
                    "total_bytes": 1 << 41,
                    "has_counters": True,
                    "backing_file": None,
                    "device_io": {
                        "read_bytes": 1 << 22,
                        "write_bytes": 1 << 22,
                        "read_count": 10,
                        "write_count": 10,
                    },
                },
            )
        ],
        fault_latency_cdf=LatencyCDF([1e-4, 2e-4, 5e-4], [0.5, 0.9, 1.0]),
        fault_latency_percentiles=Percentiles(1e-4, 2e-4, 5e-4),
    )


def test_report_objects_render_save_and_show_again(tmp_path):
    run = _tiny_run()
    d = run.to_dict()
    assert not validate(d, RESULT_SCHEMA)
    assert d["summary"]["boot_time"] == 2.5 and d["summary"]["slowdown"] == 2.5
    assert d["summary"]["device_io_confirmed"] is True
    assert "2.5 x slower" in run.verdict()
    path = tmp_path / "run.json"
    path.write_text(json.dumps(d))
    r = CliRunner().invoke(cli, ["show", str(path), "--plot", str(tmp_path / "run.png")])
    assert r.exit_code == 0, r.output
    assert "host-restart" in r.stdout and "2.5 x slower" in r.stdout
    assert (tmp_path / "run.png").read_bytes()[:4] == b"\x89PNG"

    slow = RunResult.from_dict(d)
    slow.boots = [replace(b, boot_time=b.boot_time * 4) for b in slow.boots]
    cmp = CompareResult(baseline=None, runs={"/mnt/ssd": run, "/mnt/hdd": slow})
    assert cmp.summary().startswith(
        "the boot storm ran 4.0 x slower with Smart Paging on /mnt/hdd than on /mnt/ssd"
    )
    c = cmp.to_dict()
    assert not validate(c, RESULT_SCHEMA)
    path = tmp_path / "cmp.json"
    path.write_text(json.dumps(c))
    r = CliRunner().invoke(cli, ["show", str(path), "--plot", str(tmp_path / "cmp.png")])
    assert r.exit_code == 0, r.output
    assert "4.0 x slower" in r.stdout
    assert (tmp_path / "cmp.png").stat().st_size > 10_000


def test_show_rejects_other_files(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"kind": "something"}')
    r = CliRunner().invoke(cli, ["show", str(p)])
    assert r.exit_code == EXIT_USAGE and "not a vmmem result" in r.stderr


@pytest.mark.parametrize("command", ["run", "compare", "plan", "disks", "scenario", "show"])
def test_help_teaches_with_examples(command):
    r = CliRunner().invoke(cli, [command, "--help"])
    assert r.exit_code == 0
    assert "Examples:" in r.stdout and "vmmem " + command in r.stdout


def test_top_help_lists_exit_codes_and_module_entry_point():
    r = subprocess.run(
        [sys.executable, "-m", "vmmem.cli", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 0
    for code in ("0 ", "1 ", "2 ", "3 ", "130"):
        assert code in r.stdout
    assert "vmmem run" in r.stdout


def test_usage_error_exit_code():
    r = CliRunner().invoke(cli, ["run", "--scale", "abc"])
    assert r.exit_code == EXIT_USAGE


def test_schema_records_are_the_dataclasses_fields():
    import dataclasses

    from vmmem.hyperv.reports import BootReport, VMStatus

    boot = set(RESULT_SCHEMA["$defs"]["boot"]["properties"])
    assert boot == {f.name for f in dataclasses.fields(BootReport)} - {
        "page_in_latency",
        "fault_latency",
    } | {"event", "smart_paging_file_created_at", "smart_paging_file_deleted_at"}
    status = set(RESULT_SCHEMA["$defs"]["status"]["properties"])
    assert status == {f.name for f in dataclasses.fields(VMStatus)}


def test_show_reads_a_version_1_file(tmp_path):
    d = _tiny_run().to_dict()
    d["schema_version"] = 1
    for key in ("earlier_runs", "fault_latency_percentiles"):
        del d[key]
    for b in d["boots"]:
        del b["smart_paging_file_peak_size"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(d))
    r = CliRunner().invoke(cli, ["show", str(path)])
    assert r.exit_code == 0, r.output
    assert "the whole storm took 2.50 s" in r.stdout
