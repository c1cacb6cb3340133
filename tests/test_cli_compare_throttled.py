"""``vmmem compare`` between the main disk and an HDD-like device made on this machine.

The rig (docs/HYPERV-RULES.md section 5): a file-backed loop device with ext4 on it, throttled
for one cgroup with cgroup v1 blkio (read_iops_device / write_iops_device); the vmmem process
runs in that cgroup. Skips where any step cannot be done (not root, no blkio, no losetup);
always torn down.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

from vmmem.lab.schema import validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLKIO = "/sys/fs/cgroup/blkio"
IOPS = 1000  # ~10x fewer than the main disk here; 150 (a 7200 rpm disk) would take minutes

# Two VMs short of 2 MB each on the restart: ~1000 paging I/Os in all, so the throttled run
# takes seconds, not minutes.
TINY = """
name = "tiny-storm"
[host]
balancer_start_delay = 0
memory = "68MB"
balancer_interval = 0.05
[[vm]]
name = "vm"
count = 2
startup = "36MB"
minimum = "32MB"
maximum = "64MB"
buffer = 20
[vm.workload]
idle_demand = "16MB"
boot_seconds = 0.3
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


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True)


@contextlib.contextmanager
def throttled_hdd(workdir: str) -> Iterator[tuple[str, str]]:
    """Yields (mountpoint, cgroup folder); the cgroup's I/O to the device is throttled."""
    if os.geteuid() != 0:
        pytest.skip("the throttled-device rig needs root")
    if not os.path.exists(os.path.join(BLKIO, "blkio.throttle.read_iops_device")):
        pytest.skip("no cgroup v1 blkio throttling here")
    for tool in ("losetup", "mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing")
    image = os.path.join(workdir, "hdd.img")
    mnt = os.path.join(workdir, "hdd")
    os.makedirs(mnt)
    with open(image, "wb") as f:
        f.truncate(512 * 2**20)
    dev = cgroup = None
    mounted = False
    try:
        if _run("mkfs.ext4", "-q", "-F", image).returncode:
            pytest.skip("mkfs.ext4 failed")
        # Direct I/O from the loop device to its file, so the host's page cache cannot answer
        # for it; older losetup or backing filesystems refuse it, then the plain form.
        r = _run("losetup", "--find", "--show", "--direct-io=on", image)
        if r.returncode:
            r = _run("losetup", "--find", "--show", image)
        if r.returncode:
            pytest.skip(f"no loop device: {r.stderr.strip()}")
        dev = r.stdout.strip()
        if _run("mount", dev, mnt).returncode:
            pytest.skip("cannot mount the loop device")
        mounted = True
        st = os.stat(dev)
        majmin = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        cgroup = tempfile.mkdtemp(prefix="vmmem-hdd-", dir=BLKIO)
        try:
            for knob in ("read_iops_device", "write_iops_device"):
                with open(os.path.join(cgroup, f"blkio.throttle.{knob}"), "w") as f:
                    f.write(f"{majmin} {IOPS}\n")
        except OSError as e:
            pytest.skip(f"cannot throttle: {e}")
        yield mnt, cgroup
    finally:
        if mounted:
            _run("umount", "-l", mnt)
        if dev:
            _run("losetup", "-d", dev)
        if cgroup:
            with contextlib.suppress(OSError):
                os.rmdir(cgroup)  # empty once the vmmem process has exited
        with contextlib.suppress(OSError):
            os.unlink(image)


def vmmem_in_cgroup(cgroup: str, cwd: object, args: str) -> subprocess.CompletedProcess[str]:
    """`vmmem ARGS` in the throttled cgroup: the shell joins it, then becomes vmmem (its threads
    inherit the cgroup)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = f'echo $$ > {cgroup}/cgroup.procs && exec "{sys.executable}" -m vmmem.cli {args}'
    return subprocess.run(
        ["sh", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_compare_ranks_the_throttled_device_slower(disk_dir):
    workdir = tempfile.mkdtemp(prefix="vmmem-rig-", dir="/var/tmp")
    try:
        with throttled_hdd(workdir) as (hdd, cgroup):
            ssd = disk_dir / "ssd"
            ssd.mkdir()
            scenario = disk_dir / "tiny.toml"
            scenario.write_text(TINY)
            out_json = disk_dir / "cmp.json"
            r = vmmem_in_cgroup(
                cgroup,
                disk_dir,
                f"compare {ssd} {hdd} {scenario} --no-baseline -q --json {out_json}",
            )
            assert r.returncode == 0, r.stderr + r.stdout
            data = json.loads(out_json.read_text())
            with open(os.path.join(ROOT, "docs", "json-schema.json"), encoding="utf-8") as f:
                assert not validate(data, json.load(f))
            rows = {row["location"]: row for row in data["rows"]}
            fast, slow = rows[str(ssd)], rows[hdd]
            assert slow["device"].startswith("loop")
            assert slow["device_io_confirmed"] is True and fast["device_io_confirmed"] is True
            assert slow["boot_time"] > fast["boot_time"]
            # (Few page-ins happen in a boot this short, so the ranking rests on boot time.)
            assert f"slower with Smart Paging on {hdd} than on {ssd}" in data["summary"]
            assert not os.listdir(hdd) or os.listdir(hdd) == ["lost+found"]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# One VM reading all of its Startup RAM's worth from its virtual disk during a 0.1 s boot:
# 1152 reads of 32 KiB, which at 1000 IOPS take 1.15 s.
READER = """
name = "disk-bound-boot"
[host]
balancer_start_delay = 0
memory = "64MB"
balancer_interval = 0.05
[[vm]]
name = "vm1"
startup = "36MB"
minimum = "32MB"
[vm.workload]
idle_demand = "16MB"
boot_seconds = 0.1
[vm.workload.boot]
disk_read_fraction = 1.0
[vm.workload.idle]
touch_interval = 0.05
[[event]]
action = "start"
"""


def test_boot_time_is_bounded_below_by_its_reads_on_the_throttled_disk(disk_dir):
    workdir = tempfile.mkdtemp(prefix="vmmem-rig-", dir="/var/tmp")
    try:
        with throttled_hdd(workdir) as (hdd, cgroup):
            scenario = disk_dir / "reader.toml"
            scenario.write_text(READER)
            out_json = disk_dir / "r.json"
            r = vmmem_in_cgroup(
                cgroup, disk_dir, f"run {scenario} --vhd-dir {hdd} -q --json {out_json}"
            )
            assert r.returncode == 0, r.stderr + r.stdout
            (boot,) = json.loads(out_json.read_text())["boots"]
            assert boot["disk_requests"] == 1152 and boot["disk_read_bytes"] == 1152 * 32768
            # The device's own pace, less the burst blkio lets through after an idle spell
            # (seen: up to about 180 requests at 1000 IOPS).
            assert boot["boot_time"] >= (boot["disk_requests"] - 250) / IOPS
            assert boot["boot_time"] > 2 * 0.1  # the reads, not the CPU, set the pace
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
