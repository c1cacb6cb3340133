"""vmmem.devices on the real machine: the repo's disk, a loop device made and torn down here,
tmpfs and zram detection, and partition / device-mapper resolution."""

from __future__ import annotations

import dataclasses
import math
import mmap
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import is_root, mounted, small_ext4
from hypothesis import given
from hypothesis import strategies as st

from vmmem import devices

PAGE = 4096


def write_direct(path: Path, nbytes: int) -> None:
    """Writes nbytes straight to the device (O_DIRECT), bypassing the page cache."""
    buf = mmap.mmap(-1, nbytes)  # page-aligned, as O_DIRECT wants
    buf.write(b"\xa5" * nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
    try:
        assert os.write(fd, buf) == nbytes
    finally:
        os.close(fd)


def test_the_test_folder_is_on_a_real_disk(tmp_path):
    info = devices.device_for_path(tmp_path)
    assert info.path == os.path.realpath(tmp_path)
    assert info.device is not None and info.disk is not None
    assert info.fstype not in devices.RAM_FILESYSTEMS and not info.ram_backed
    assert os.path.exists(f"/sys/class/block/{info.device}")
    assert info.counter_key == info.device
    rot = Path(f"/sys/block/{info.disk}/queue/rotational").read_text().strip()
    assert info.rotational is (rot == "1")
    usage = shutil.disk_usage(tmp_path)
    assert info.total_bytes == usage.total
    assert abs(info.free_bytes - usage.free) < 256 * 2**20  # others write meanwhile
    assert info.kind in ("HDD", "SSD")
    assert info.device in info.describe()


def test_io_counters_see_direct_writes(tmp_path):
    info = devices.device_for_path(tmp_path)
    before = devices.io_counters(info)
    write_direct(tmp_path / "probe", 64 * PAGE)
    delta = devices.io_counters(tmp_path) - before  # a path works as well as a DeviceInfo
    assert delta.write_bytes >= 64 * PAGE
    assert isinstance(delta, devices.IOCounters)


def test_counters_arithmetic():
    a = devices.IOCounters(read_bytes=10, write_bytes=20, read_count=1, write_count=2)
    b = devices.IOCounters(read_bytes=4, write_bytes=5, read_count=1, write_count=1)
    assert a - b == devices.IOCounters(6, 15, 0, 1)
    assert (a - b) + b == a


def test_dev_shm_is_ram_without_counters():
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    info = devices.device_for_path("/dev/shm")
    assert info.ram_backed and info.kind == "RAM"
    assert info.counter_key is None and not info.has_counters
    assert devices.io_counters(info) is None
    assert "no device counters" in info.describe()


def test_tmpfs_mount_is_ram(tmp_path):
    weird = tmp_path / "a folder with spaces"
    with mounted(["-t", "tmpfs", "-o", "size=1m"], "tmpfs", weird) as mnt:
        info = devices.device_for_path(mnt / ".")
        assert info.mountpoint == str(mnt)  # mountinfo's \040 escapes decoded
        assert info.fstype == "tmpfs" and info.ram_backed
        assert info.device is None and devices.io_counters(info) is None
        assert info.total_bytes == 2**20


def test_missing_path():
    with pytest.raises(FileNotFoundError):
        devices.device_for_path("/no/such/folder/anywhere")


def test_loop_device_facts_and_counters(tmp_path):
    with small_ext4(8 * 2**20, tmp_path) as mnt:
        info = devices.device_for_path(mnt)
        assert info.device is not None and info.device.startswith("loop")
        assert info.disk == info.device
        assert info.fstype == "ext4" and info.mountpoint == str(mnt)
        assert info.model == "loop device"
        assert info.backing_file == str(tmp_path / "small.img")
        assert not info.ram_backed
        assert info.counter_key == info.device
        assert 0 < info.free_bytes <= info.total_bytes <= 8 * 2**20
        before = devices.io_counters(info)
        write_direct(mnt / "probe", 32 * PAGE)
        delta = devices.io_counters(info) - before
        assert delta.write_bytes >= 32 * PAGE
        # A loop-mounted filesystem is listed as a place to page to.
        assert str(mnt) in {f.mountpoint for f in devices.list_filesystems()}
    assert str(mnt) not in {f.mountpoint for f in devices.list_filesystems()}


def test_loop_device_over_a_file_in_ram_is_ram(tmp_path):
    """A filesystem on a loop device whose image lives in RAM (tmpfs) measures no disk."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    ram = Path(tempfile.mkdtemp(prefix="vmmem-test-", dir="/dev/shm"))
    try:
        with small_ext4(4 * 2**20, ram) as mnt:
            info = devices.device_for_path(mnt)
            assert info.device is not None and info.device.startswith("loop")
            assert info.fstype == "ext4" and info.backing_file == str(ram / "small.img")
            assert info.ram_backed and info.kind == "RAM"
    finally:
        shutil.rmtree(ram, ignore_errors=True)


def test_zram_is_ram(tmp_path):
    zram = Path("/sys/block/zram0")
    if not is_root() or not zram.exists() or shutil.which("mkfs.ext4") is None:
        pytest.skip("no zram0 to use")
    if (zram / "disksize").read_text().strip() != "0":
        pytest.skip("zram0 is in use")
    try:
        (zram / "disksize").write_text("16M")
    except OSError as e:
        pytest.skip(f"cannot size zram0: {e}")
    try:
        subprocess.run(["mkfs.ext4", "-q", "-F", "/dev/zram0"], check=True, capture_output=True)
        with mounted([], "/dev/zram0", tmp_path / "z") as mnt:
            info = devices.device_for_path(mnt)
            assert info.device == "zram0" and info.ram_backed and info.kind == "RAM"
            assert info.model == "zram (compressed RAM)"
            assert info.counter_key == "zram0"  # it has counters, but they count RAM
    finally:
        (zram / "reset").write_text("1")


def test_list_filesystems_is_writable_real_places():
    found = devices.list_filesystems()
    assert found, "at least the root filesystem"
    mountpoints = {f.mountpoint for f in found}
    root = devices.device_for_path("/")
    if os.access("/", os.W_OK):
        assert "/" in mountpoints
    for f in found:
        assert (
            f.fstype
            not in {
                "proc",
                "sysfs",
                "cgroup",
                "cgroup2",
                "devpts",
                "mqueue",
                "debugfs",
                "tracefs",
                "overlay",
            }
            or f.mountpoint == "/"
        )
        assert not f.mountpoint.startswith(("/proc", "/sys"))
        assert os.access(f.mountpoint, os.W_OK)
        assert f.total_bytes > 0
        if f.fstype in devices.RAM_FILESYSTEMS:
            assert f.ram_backed
    assert root.device is None or root.device in {f.device for f in found}


def test_read_only_mount_is_not_listed(tmp_path):
    with mounted(["-t", "tmpfs", "-o", "ro,size=64k"], "tmpfs", tmp_path / "ro") as mnt:
        assert str(mnt) not in {f.mountpoint for f in devices.list_filesystems()}
        assert devices.device_for_path(mnt).ram_backed


def test_real_partitions_resolve_to_their_disk(tmp_path):
    """Each real partition, seen under the test folder (a sysfs whose device number for the
    folder's filesystem names that partition): its disk is the partition's parent."""
    parts = [p for p in Path("/sys/class/block").iterdir() if (p / "partition").exists()]
    if not parts:
        pytest.skip("this machine has no partitions (and its kernel may not read tables)")
    for part in parts:
        real = Path(os.path.realpath(part))
        disk = real.parent.name
        view = tmp_path / part.name
        for name, target in ((part.name, real), (disk, real.parent)):
            (view / "class/block").mkdir(parents=True, exist_ok=True)
            (view / "class/block" / name).symlink_to(target)
        (view / "block").mkdir()
        (view / "block" / disk).symlink_to(real.parent)
        _point_at(tmp_path, view, part.name)
        info = devices.device_for_path(tmp_path, sysfs=str(view))
        assert info.device == part.name and info.disk == disk != part.name
        rot = (real.parent / "queue/rotational").read_text().strip()
        assert info.rotational is (rot == "1")


# ---- sysfs layouts this machine lacks: a copy of the real shape, walked by the same code ------


def _fake_sysfs(root: Path) -> Path:
    """A sysfs tree shaped like a real one with a partitioned NVMe SSD, a SATA HDD, a
    device-mapper volume over a partition, and a zram device."""
    sysfs = root / "sys"
    dev = sysfs / "devices"
    blocks = {
        "nvme0n1": dev / "pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1",
        "sda": dev / "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda",
        "dm-0": dev / "virtual/block/dm-0",
        "zram0": dev / "virtual/block/zram0",
    }
    for d in blocks.values():
        (d / "queue").mkdir(parents=True)
    (blocks["nvme0n1"] / "queue/rotational").write_text("0\n")
    (blocks["sda"] / "queue/rotational").write_text("1\n")
    (blocks["dm-0"] / "queue/rotational").write_text("0\n")
    (blocks["zram0"] / "queue/rotational").write_text("0\n")
    (blocks["nvme0n1"] / "device").mkdir()
    (blocks["nvme0n1"] / "device/model").write_text("Samsung SSD 980 PRO 1TB                 \n")
    (blocks["sda"] / "device").mkdir()
    (blocks["sda"] / "device/model").write_text("ST2000DM008-2FR1\n")
    (blocks["sda"] / "device/vendor").write_text("ATA     \n")
    for disk, part in (("nvme0n1", "nvme0n1p2"), ("sda", "sda1")):
        (blocks[disk] / part).mkdir()
        (blocks[disk] / part / "partition").write_text("1\n")
        blocks[part] = blocks[disk] / part
    (blocks["dm-0"] / "dm").mkdir()
    (blocks["dm-0"] / "dm/name").write_text("vg0-home\n")
    (blocks["dm-0"] / "slaves").mkdir()
    (blocks["dm-0"] / "slaves/nvme0n1p2").symlink_to(blocks["nvme0n1p2"])
    (sysfs / "class/block").mkdir(parents=True)
    (sysfs / "block").mkdir()
    for name, d in blocks.items():
        (sysfs / "class/block" / name).symlink_to(d)
        if not (d / "partition").exists():
            (sysfs / "block" / name).symlink_to(d)
    return sysfs


def _point_at(folder: Path, sysfs: Path, name: str) -> None:
    """Make ``sysfs`` say that the block device under ``folder`` is ``name``: its device
    numbers (the mount's and the folder's own) link to that device, as /sys/dev/block does."""
    st_dev = os.stat(folder).st_dev
    where = devices.device_for_path(folder).mountpoint
    numbers = {(m.major, m.minor) for m in devices.mounts() if m.mountpoint == where}
    links = sysfs / "dev/block"
    links.mkdir(parents=True, exist_ok=True)
    for major, minor in numbers | {(os.major(st_dev), os.minor(st_dev))}:
        link = links / f"{major}:{minor}"
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.realpath(sysfs / "class/block" / name))


@pytest.mark.parametrize(
    ("name", "disk", "model", "rotational"),
    [
        ("nvme0n1p2", "nvme0n1", "Samsung SSD 980 PRO 1TB", False),
        ("sda1", "sda", "ATA ST2000DM008-2FR1", True),
        ("sda", "sda", "ATA ST2000DM008-2FR1", True),
    ],
)
def test_partition_uses_its_disk_for_model_and_rotational(tmp_path, name, disk, model, rotational):
    sysfs = _fake_sysfs(tmp_path / "layout")
    _point_at(tmp_path, sysfs, name)
    info = devices.device_for_path(tmp_path, sysfs=str(sysfs))
    assert (info.device, info.disk) == (name, disk)
    assert info.model == model and info.rotational is rotational
    assert info.kind == ("HDD" if rotational else "SSD") and not info.ram_backed


def test_device_mapper_over_its_slaves_and_zram(tmp_path):
    sysfs = _fake_sysfs(tmp_path / "layout")
    _point_at(tmp_path, sysfs, "dm-0")
    info = devices.device_for_path(tmp_path, sysfs=str(sysfs))
    assert info.device == info.disk == "dm-0"
    assert info.model == "device-mapper vg0-home over nvme0n1p2"
    assert info.rotational is False and not info.ram_backed  # its slave is an SSD
    _point_at(tmp_path, sysfs, "zram0")
    info = devices.device_for_path(tmp_path, sysfs=str(sysfs))
    assert info.device == "zram0" and info.ram_backed and info.kind == "RAM"


def test_device_mapper_found_by_name(tmp_path):
    """A mount whose source is /dev/mapper/NAME with no udev link and no device number
    (tmpfs takes any source: the name is all there is to go by) is found by dm/name."""
    sysfs = str(_fake_sysfs(tmp_path / "layout"))
    with mounted(["-t", "tmpfs", "-o", "size=64k"], "/dev/mapper/vg0-home", tmp_path / "a") as mnt:
        info = devices.device_for_path(mnt, sysfs=sysfs)
        assert info.device == "dm-0"
        assert info.model == "device-mapper vg0-home over nvme0n1p2"
    with mounted(["-t", "tmpfs", "-o", "size=64k"], "/dev/mapper/absent", tmp_path / "b") as mnt:
        assert devices.device_for_path(mnt, sysfs=sysfs).device is None
    with mounted(["-t", "tmpfs", "-o", "size=64k"], "tmpfs", tmp_path / "c") as mnt:
        assert devices.device_for_path(mnt, sysfs=sysfs).device is None


# ---- the stat line: requests, bytes, busy time and the time requests spent in flight ----------

# /sys/block/vda/stat on the machine these tests were written on (kernel 6.18): 17 fields.
REAL_STAT = (
    "   39314     9058  2244258     4928    21501    16842  2614408     8126        0     5456"
    "    13604     5321       45   159848      372     4320      177\n"
)
REAL_COUNTERS = devices.IOCounters(
    read_bytes=2244258 * 512,
    write_bytes=2614408 * 512,
    read_count=39314,
    write_count=21501,
    io_ticks_ms=5456,
    time_in_queue_ms=13604,
)


def test_a_real_stat_line():
    assert devices.parse_stat(REAL_STAT) == REAL_COUNTERS


def test_an_old_kernels_eleven_fields_say_the_same():
    assert devices.parse_stat(" ".join(REAL_STAT.split()[:11])) == REAL_COUNTERS


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("", "at least 11 fields, got 0"),
        (" ".join(REAL_STAT.split()[:10]), "at least 11 fields, got 10"),
        (REAL_STAT.replace("5456", "-"), "holds counts"),
    ],
)
def test_a_line_that_is_no_stat_is_refused(line, problem):
    with pytest.raises(ValueError, match=problem):
        devices.parse_stat(line)


def test_the_live_counters_agree_with_psutils_reading_of_diskstats(tmp_path):
    """psutil parses /proc/diskstats on its own; read between two of ours, its figures lie
    between them (the device may be busy meanwhile, so never equal)."""
    info = devices.device_for_path(tmp_path)
    before = devices.io_counters(info)
    theirs = psutil.disk_io_counters(perdisk=True, nowrap=False)[info.counter_key]
    after = devices.io_counters(info)
    assert before is not None and after is not None
    for ours, field in [
        ("read_count", "read_count"),
        ("write_count", "write_count"),
        ("read_bytes", "read_bytes"),
        ("write_bytes", "write_bytes"),
        ("io_ticks_ms", "busy_time"),
    ]:
        assert getattr(before, ours) <= getattr(theirs, field) <= getattr(after, ours), ours
    assert before.time_in_queue_ms <= after.time_in_queue_ms


def test_counters_come_from_the_devices_stat_in_sysfs(tmp_path):
    sysfs = _fake_sysfs(tmp_path / "layout")
    _point_at(tmp_path, sysfs, "nvme0n1p2")
    # This machine has no nvme0n1p2 in its diskstats: say it has, to read the layout's stat.
    info = dataclasses.replace(
        devices.device_for_path(tmp_path, sysfs=str(sysfs)), counter_key="nvme0n1p2"
    )
    stat = sysfs / "class/block/nvme0n1p2/stat"
    stat.write_text(REAL_STAT)
    assert devices.io_counters(info, sysfs=str(sysfs)) == REAL_COUNTERS
    stat.unlink()  # the device went away meanwhile: no counters, not an error
    assert devices.io_counters(info, sysfs=str(sysfs)) is None
    # A "/" in a kernel name is a "!" in sysfs (cciss/c0d0).
    (sysfs / "devices/virtual/block/cciss!c0d0").mkdir(parents=True)
    (sysfs / "class/block/cciss!c0d0").symlink_to(sysfs / "devices/virtual/block/cciss!c0d0")
    (sysfs / "class/block/cciss!c0d0/stat").write_text(REAL_STAT)
    cciss = dataclasses.replace(info, device="cciss/c0d0", counter_key="cciss/c0d0")
    assert devices.io_counters(cciss, sysfs=str(sysfs)) == REAL_COUNTERS


def test_a_loop_devices_queue_time_grows_with_its_io(tmp_path):
    """1,024 synchronous 4 KiB writes: each request's time in flight (ns, shown in ms) adds
    up to milliseconds. io_ticks moves only when a request starts or ends in a later jiffy
    than the last one did, so short requests one at a time may add nothing to it."""
    with small_ext4(16 * 2**20, tmp_path) as mnt:
        info = devices.device_for_path(mnt)
        before = devices.io_counters(info)
        assert before is not None
        buf = mmap.mmap(-1, PAGE)  # page-aligned, as O_DIRECT wants
        fd = os.open(mnt / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
        try:
            for i in range(1024):
                assert os.pwrite(fd, buf, i * PAGE) == PAGE
        finally:
            os.close(fd)
        after = devices.io_counters(info)
        assert after is not None
        delta = after - before
        assert delta.write_count >= 1024
        assert delta.time_in_queue_ms > 0 and delta.io_ticks_ms >= 0


counts = st.integers(0, 2**48)
counters = st.builds(devices.IOCounters, counts, counts, counts, counts, counts, counts)


@given(a=counters, b=counters)
def test_a_difference_adds_back(a, b):
    assert (a - b) + b == a


# Requests as (start, length) in whole ms inside a 1.2 s window.
requests = st.lists(st.tuples(st.integers(0, 999), st.integers(1, 200)), max_size=40)


@given(requests)
def test_queue_depth_is_the_mean_number_in_flight_and_utilisation_the_busy_share(reqs):
    """A small model of the kernel's two counters: time_in_queue sums each request's time in
    flight, io_ticks counts the ms with at least one in flight. Per ms of the window they are
    the mean number in flight and the share of time busy."""
    window_ms = 1200
    in_flight = np.zeros(window_ms, dtype=np.int64)
    for start, length in reqs:
        in_flight[start : start + length] += 1
    c = devices.IOCounters(
        0,
        0,
        len(reqs),
        0,
        io_ticks_ms=int(np.count_nonzero(in_flight)),
        time_in_queue_ms=sum(length for _, length in reqs),
    )
    seconds = window_ms / 1000
    assert c.queue_depth(seconds) == pytest.approx(in_flight.mean())
    assert c.utilisation(seconds) == pytest.approx(np.count_nonzero(in_flight) / window_ms)
    assert c.utilisation(seconds) <= c.queue_depth(seconds) + 1e-12  # busy: 1 or more


def test_utilisation_is_capped_at_the_whole_interval():
    # io_ticks counts whole ticks: an interval can gain a tick more than it lasted.
    c = devices.IOCounters(0, 0, 1, 0, io_ticks_ms=14, time_in_queue_ms=14)
    assert c.utilisation(0.010) == 1.0
    assert c.queue_depth(0.010) == pytest.approx(1.4)


@pytest.mark.parametrize("seconds", [0.0, -1.0, math.nan])
def test_no_rate_over_an_empty_interval(seconds):
    with pytest.raises(ValueError, match="longer than 0 s"):
        REAL_COUNTERS.queue_depth(seconds)
    with pytest.raises(ValueError, match="longer than 0 s"):
        REAL_COUNTERS.utilisation(seconds)
