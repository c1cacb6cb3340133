"""``vmmem run`` and ``vmmem compare`` end to end, on small scaled scenarios on the real disk."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from vmmem.cli.main import EXIT_INTERRUPTED, EXIT_REFUSED, cli
from vmmem.devices import device_for_path
from vmmem.errors import RamBackedWarning
from vmmem.lab.runner import check_locations
from vmmem.lab.scenario import article_scenario, load_scenario
from vmmem.lab.schema import validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_PATH = os.path.join(ROOT, "docs", "json-schema.json")

# The article's storm at 1/8 size (4 x 64 MB on 176 MB, 80 MB of Smart Paging) with short
# boots and a fast balancer, so one run takes a few seconds.
FAST = """
name = "fast-article"
[host]
balancer_start_delay = 0
memory = "1400MB"
balancer_interval = 0.05
[[vm]]
name = "vm"
count = 4
startup = "512MB"
minimum = "32MB"
maximum = "2048MB"
buffer = 20
[vm.workload]
idle_demand = "250MB"
boot_seconds = %(boot)s
[vm.workload.idle]
touch_interval = 0.05
[[event]]
action = "start"
vms = "all"
[[event]]
action = "idle"
seconds = 0.1
[[event]]
action = "restart-vms"
[[event]]
action = "settle"
timeout = 30
"""


def fast_scenario(tmp_path, boot: float = 2.0) -> str:
    path = tmp_path / "fast.toml"
    path.write_text(FAST % {"boot": boot})
    return str(path)


def schema() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        return json.load(f)


def check_against_schema(data: dict) -> None:
    problems = validate(data, schema())
    assert not problems, problems[:5]
    try:
        import jsonschema
    except ImportError:
        return
    jsonschema.validate(data, schema())


def check_png(path: str) -> None:
    with open(path, "rb") as f:
        head = f.read(8)
    assert head == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 20_000
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.shape[0] > 300 and img.shape[1] > 300
    assert img[..., :3].std() > 0.05  # lines and bars, not a blank canvas


def paging_files(folder) -> list[str]:
    return glob.glob(os.path.join(str(folder), "**", "*.slp"), recursive=True)


def test_run_end_to_end(disk_dir, monkeypatch):
    monkeypatch.chdir(disk_dir)
    paging = disk_dir / "sp"
    paging.mkdir()
    r = CliRunner().invoke(
        cli,
        [
            "run",
            fast_scenario(disk_dir),
            "--scale",
            "8",
            "--paging-dir",
            str(paging),
            "--json",
            "run.json",
            "--plot",
            "run.png",
        ],
    )
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "restart" in out and "4 of 4 VMs booted on Smart Paging" in out
    assert "every Smart Paging file is gone" in out
    # One name per location: the header and the verdict name the same folder.
    assert f"Smart Paging files in {paging}:" in out and f"files in {paging}:" in out
    data = json.loads((disk_dir / "run.json").read_text())
    check_against_schema(data)
    assert data["outcome"] == "ok"
    storm = [b for b in data["boots"] if b["kind"] == "restart"]
    assert len(storm) == 4 and all(b["smart_paging"] for b in storm)
    # 4 x 64 - 176 = 80 MB short at the restart: each VM was given less than its Startup RAM.
    # How much of it lived in the files at their peak depends on which VM the scheduler lets
    # finish first (it frees memory for the others), so only its bounds are asserted.
    assert sum(b["startup_bytes"] - b["assigned_at_boot"] for b in storm) == 80 * 2**20
    total_peak = sum(b["smart_paging_peak_bytes"] for b in storm)
    assert 0 < total_peak <= sum(b["startup_bytes"] for b in storm)
    assert all(b["smart_paging_ended"] for b in storm)
    for b in storm:  # the file's life, as the run's poller saw it: after the restart, before
        # the end; the guest's own figure measures the same life (made in the boot, deleted
        # once it ballooned down) by another clock, so only its sign is compared
        created, deleted = b["smart_paging_file_created_at"], b["smart_paging_file_deleted_at"]
        assert b["started_at"] <= created < deleted <= data["duration"]
        assert b["smart_paging_seconds"] > 0
    assert data["summary"]["smart_paging_slowdown"] == max(b["slowdown"] for b in storm)
    assert data["summary"]["smart_paging_slowest_vm"] in {b["vm"] for b in storm}
    assert data["summary"]["slowdown"] > 1
    assert data["summary"]["device_io_confirmed"] is True
    assert data["locations"][0]["path"] == str(paging)
    assert data["plan"]["needs_smart_paging"] is True
    assert data["timeline"] and data["final_status"]
    assert {s["memory_status"] for s in data["final_status"]} <= {"OK"}
    assert data["fault_latency_cdf"]["fraction"][-1] == pytest.approx(1.0)
    check_png(str(disk_dir / "run.png"))
    assert paging_files(paging) == []


def test_compare_end_to_end(disk_dir, monkeypatch):
    monkeypatch.chdir(disk_dir)
    a, b = disk_dir / "a", disk_dir / "b"
    a.mkdir()
    b.mkdir()
    r = CliRunner().invoke(
        cli,
        [
            "compare",
            str(a),
            str(b),
            fast_scenario(disk_dir, boot=2.0),
            "--scale",
            "8",
            "--json",
            "cmp.json",
            "--plot",
            "cmp.png",
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "baseline (enough memory)" in r.stdout and "the boot storm" in r.stdout
    data = json.loads((disk_dir / "cmp.json").read_text())
    check_against_schema(data)
    assert [row["location"] for row in data["rows"]] == [str(a), str(b)]
    base = data["baseline"]
    assert base["summary"]["smart_paging_vms"] == 0  # the baseline host had enough memory
    for row in data["rows"]:
        assert row["device"] == device_for_path(str(a)).device
        assert row["slowdown"] and row["slowdown"] > 1
        assert row["device_io_confirmed"] is True
        assert row["fault_p50"] and row["fault_p99"] >= row["fault_p50"]
    check_png(str(disk_dir / "cmp.png"))
    assert paging_files(disk_dir) == []


def test_refuses_a_folder_without_room(disk_dir, tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    mnt = tmp_path_factory.mktemp("small")
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a tmpfs here")
    try:
        r = CliRunner().invoke(cli, ["run", "--scale", "8", "--paging-dir", str(mnt)])
        assert r.exit_code == EXIT_REFUSED
        assert "not enough free space" in r.stderr and "needs 320 MB" in r.stderr
        r = CliRunner().invoke(cli, ["compare", str(mnt), str(disk_dir), "--scale", "8"])
        assert r.exit_code == EXIT_REFUSED
        assert paging_files(mnt) == []
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_folder_that_cannot_be_made_is_refused(tmp_path):
    # A missing folder is made by the run; one under a file cannot be.
    (tmp_path / "file").write_text("")
    r = CliRunner().invoke(cli, ["run", "--paging-dir", str(tmp_path / "file" / "nope")])
    assert r.exit_code == EXIT_REFUSED and "is not a folder" in r.stderr


def test_ram_backed_folder_is_flagged():
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    s = article_scenario().scaled(8).with_paging_dir("/dev/shm")
    infos, warnings = check_locations(s, "/dev/shm")
    assert infos[0].ram_backed
    ram = [w for w in warnings if isinstance(w, RamBackedWarning)]
    assert len(ram) == 1 and "nothing real is measured" in str(ram[0])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_stops_cleanly_and_leaves_no_file(disk_dir, signum):
    paging = disk_dir / "sp"
    paging.mkdir()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vmmem.cli",
            "run",
            fast_scenario(disk_dir, boot=4.0),
            "--scale",
            "8",
            "--paging-dir",
            str(paging),
            "--json",
            str(disk_dir / "part.json"),
        ],
        cwd=disk_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not paging_files(paging):  # interrupt in the middle of the storm
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no Smart Paging file appeared"
            time.sleep(0.01)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "interrupted" in out
    assert "file in use" not in out  # the table says what is true after the clean-up
    assert paging_files(paging) == []
    data = json.loads((disk_dir / "part.json").read_text())
    check_against_schema(data)
    assert data["outcome"] == "interrupted" and data["leftover_files"] == []
    assert len(data["boots"]) >= 4  # the four starts were measured before the storm


def test_example_scenarios_plan_clean_at_their_scale():
    for name in ("article.toml", "mixed-priority.toml", "static-and-dynamic.toml"):
        s = load_scenario(os.path.join(ROOT, "examples", name))
        assert s.scaled(4).vms


def test_a_vm_that_cannot_start_fails_the_run(disk_dir, monkeypatch):
    monkeypatch.chdir(disk_dir)
    path = disk_dir / "short.toml"
    path.write_text("""
[host]
balancer_start_delay = 0
memory = "96MB"
balancer_interval = 0.05
[[vm]]
name = "vm"
count = 2
startup = "64MB"
minimum = "64MB"
[vm.workload]
boot_seconds = 0.1
""")
    r = CliRunner().invoke(cli, ["run", str(path), "--json", "fail.json"])
    assert r.exit_code == 1, r.output
    assert "Not enough memory in the system to start the virtual machine" in r.stdout
    data = json.loads((disk_dir / "fail.json").read_text())
    check_against_schema(data)
    assert data["outcome"] == "failed" and "vm2" in data["error"]
    assert paging_files(disk_dir) == []
