"""Facts and I/O counters of the block device under a folder.

A Smart Paging file measures something only if its I/O reaches a real device, and the proof is
that device's own counters (its ``/sys/class/block/NAME/stat``, the line ``/proc/diskstats``
shows). This module answers, for any folder: which filesystem and block device hold it, what
kind of device that is (model, rotational or not, RAM-backed or not), how much space is free,
and what the device has read and written so far, and for how long it had requests in flight.

Linux only (it reads ``/proc/self/mountinfo`` and ``/sys``). Functions take a ``sysfs`` root
argument so the sysfs walking can be checked against a copy of a real layout; callers never need
to pass it.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

import psutil

__all__ = [
    "RAM_FILESYSTEMS",
    "DeviceInfo",
    "IOCounters",
    "Mount",
    "device_for_path",
    "io_counters",
    "list_filesystems",
    "mounts",
    "parse_stat",
]

# Filesystems that live in RAM: a paging file there measures nothing.
RAM_FILESYSTEMS = frozenset({"tmpfs", "ramfs", "devtmpfs", "hugetlbfs"})

# Kernel and virtual filesystems nobody pages to: never listed by list_filesystems().
PSEUDO_FILESYSTEMS = frozenset(
    {
        "proc",
        "sysfs",
        "cgroup",
        "cgroup2",
        "devpts",
        "mqueue",
        "debugfs",
        "tracefs",
        "securityfs",
        "pstore",
        "bpf",
        "configfs",
        "fusectl",
        "autofs",
        "binfmt_misc",
        "rpc_pipefs",
        "nsfs",
        "efivarfs",
        "selinuxfs",
        "hugetlbfs",
        "devtmpfs",
        "fuse.gvfsd-fuse",
        "fuse.portal",
        "squashfs",
        "iso9660",
        "ramfs",
        "nfsd",
        "overlay",
        "aufs",
    }
)

# Block devices whose "disk" is RAM.
_RAM_DEVICE_PREFIXES = ("zram", "ram", "pmem")


@dataclass(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo."""

    mountpoint: str
    fstype: str
    source: str
    major: int
    minor: int
    read_only: bool


@dataclass(frozen=True)
class DeviceInfo:
    """The filesystem and block device that hold ``path``.

    ``device`` is the kernel's name of the block device the filesystem sits on ("vda1", "loop3",
    "dm-0"), or None for a filesystem with no block device (tmpfs, NFS ...). ``disk`` is the whole
    disk a partition belongs to (the device itself otherwise). ``counter_key`` is the key of that
    device in ``psutil.disk_io_counters(perdisk=True)``, or None when the device has no counters.
    """

    path: str
    mountpoint: str
    fstype: str
    source: str
    device: str | None
    disk: str | None
    counter_key: str | None
    model: str | None
    rotational: bool | None
    ram_backed: bool
    free_bytes: int
    total_bytes: int
    backing_file: str | None = None  # a loop device's file

    @property
    def has_counters(self) -> bool:
        return self.counter_key is not None

    @property
    def kind(self) -> str:
        """A short word for people: "RAM", "HDD", "SSD", or "unknown"."""
        if self.ram_backed:
            return "RAM"
        if self.rotational is None:
            return "unknown"
        return "HDD" if self.rotational else "SSD"

    def describe(self) -> str:
        """One line such as ``/tmp: ext4 on vda (virtio disk, SSD), 80.1 GiB free``."""
        if self.device:
            where = f"{self.fstype} on {self.device}"
        elif self.source and self.source != self.fstype:
            where = f"{self.fstype} ({self.source})"
        else:
            where = self.fstype
        facts = ", ".join(x for x in (self.model, KIND_WORDS.get(self.kind, self.kind)) if x)
        counters = "" if self.has_counters else "; no device counters"
        return f"{self.path}: {where} ({facts}), {self.free_bytes / 2**30:.1f} GiB free{counters}"


# The kernel's rotational flag, in words that do not overclaim: virtual disks often say
# "rotational" whatever is underneath.
KIND_WORDS = {"HDD": "rotational", "SSD": "non-rotational"}


@dataclass(frozen=True)
class IOCounters:
    """A snapshot of a block device's I/O counters; subtract two to get what happened between.

    ``io_ticks_ms`` and ``time_in_queue_ms`` are the kernel's fields 10 and 11 of the device's
    stat (Documentation/admin-guide/iostats.rst): the milliseconds the device had at least one
    request in flight, and the sum over requests of the milliseconds each was in flight. Over
    an interval, their growth per millisecond of wall time is the device's utilisation and its
    average queue depth (what iostat calls %util and aqu-sz).
    """

    read_bytes: int
    write_bytes: int
    read_count: int
    write_count: int
    io_ticks_ms: int = 0
    time_in_queue_ms: int = 0

    def __sub__(self, other: IOCounters) -> IOCounters:
        return IOCounters(
            read_bytes=self.read_bytes - other.read_bytes,
            write_bytes=self.write_bytes - other.write_bytes,
            read_count=self.read_count - other.read_count,
            write_count=self.write_count - other.write_count,
            io_ticks_ms=self.io_ticks_ms - other.io_ticks_ms,
            time_in_queue_ms=self.time_in_queue_ms - other.time_in_queue_ms,
        )

    def __add__(self, other: IOCounters) -> IOCounters:
        return IOCounters(
            read_bytes=self.read_bytes + other.read_bytes,
            write_bytes=self.write_bytes + other.write_bytes,
            read_count=self.read_count + other.read_count,
            write_count=self.write_count + other.write_count,
            io_ticks_ms=self.io_ticks_ms + other.io_ticks_ms,
            time_in_queue_ms=self.time_in_queue_ms + other.time_in_queue_ms,
        )

    def queue_depth(self, seconds: float) -> float:
        """The average number of requests in flight, for counters that grew over ``seconds``
        of wall time (a difference of two snapshots). Raises ValueError unless seconds > 0."""
        return self.time_in_queue_ms / _interval_ms(seconds)

    def utilisation(self, seconds: float) -> float:
        """The fraction of ``seconds`` the device had a request in flight, at most 1: the
        kernel counts io_ticks in whole ticks, so a short interval can gain a tick more than
        it lasted (iostat caps %util at 100 likewise). Raises ValueError unless seconds > 0."""
        return min(1.0, self.io_ticks_ms / _interval_ms(seconds))


def _interval_ms(seconds: float) -> float:
    if not seconds > 0:  # also refuses NaN
        raise ValueError(f"an interval of wall time must be longer than 0 s, got {seconds!r}")
    return seconds * 1000.0


# The stat file counts sectors of 512 bytes whatever the device's own sector size (iostats.rst).
STAT_SECTOR = 512


def parse_stat(line: str) -> IOCounters:
    """The counters in one block device's stat line (``/sys/class/block/NAME/stat``, or a
    ``/proc/diskstats`` line without its first three fields): reads completed, reads merged,
    sectors read, ms reading, the same four for writes, requests in flight, io_ticks,
    time_in_queue, then discards (4.18+) and flushes (5.5+), which are not used.

    Raises ValueError if the line has fewer than the 11 fields every kernel since 2.6 writes,
    or one of them is not a count."""
    fields = line.split()
    if len(fields) < 11:
        raise ValueError(f"a block device's stat has at least 11 fields, got {len(fields)}")
    try:
        n = [int(x) for x in fields[:11]]
    except ValueError:
        raise ValueError(f"a block device's stat holds counts, got {line.strip()!r}") from None
    return IOCounters(
        read_bytes=n[2] * STAT_SECTOR,
        write_bytes=n[6] * STAT_SECTOR,
        read_count=n[0],
        write_count=n[4],
        io_ticks_ms=n[9],
        time_in_queue_ms=n[10],
    )


# ---------------------------------------------------------------------------------------------
# mount table


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \ooo octal escapes.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts(mountinfo: str = "/proc/self/mountinfo") -> list[Mount]:
    """Every mount of this process's mount namespace, in mount order (later ones on top)."""
    result = []
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            major, minor = (int(x) for x in fields[2].split(":"))
            opts = fields[5].split(",")
            result.append(
                Mount(
                    mountpoint=_unescape(fields[4]),
                    fstype=fields[sep + 1],
                    source=_unescape(fields[sep + 2]) if len(fields) > sep + 2 else "",
                    major=major,
                    minor=minor,
                    read_only="ro" in opts,
                )
            )
    return result


def _is_under(path: str, mountpoint: str) -> bool:
    return mountpoint == "/" or path == mountpoint or path.startswith(mountpoint.rstrip("/") + "/")


def _mount_of(path: str, st_dev: int, table: list[Mount]) -> Mount | None:
    # The deepest mountpoint above path; among equals the last mounted (it hides the others).
    # Prefer the one whose device number matches the file's, which settles bind mounts.
    candidates = [m for m in table if _is_under(path, m.mountpoint)]
    if not candidates:
        return None
    depth = max(len(m.mountpoint) for m in candidates)
    deepest = [m for m in candidates if len(m.mountpoint) == depth]
    major, minor = os.major(st_dev), os.minor(st_dev)
    matching = [m for m in deepest if (m.major, m.minor) == (major, minor)]
    return (matching or deepest)[-1]


# ---------------------------------------------------------------------------------------------
# sysfs


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _block_name_from_devnum(major: int, minor: int, sysfs: str) -> str | None:
    link = os.path.join(sysfs, "dev", "block", f"{major}:{minor}")
    if not os.path.exists(link):
        return None
    return os.path.basename(os.path.realpath(link))


def _block_name_from_source(source: str, sysfs: str) -> str | None:
    """The kernel name of a mount source such as /dev/vda1, /dev/mapper/vg-root, /dev/loop0."""
    if not source.startswith("/dev/"):
        return None
    real = os.path.realpath(source)
    name = os.path.basename(real)
    if os.path.exists(os.path.join(sysfs, "class", "block", name)):
        return name
    try:
        st = os.stat(real)
        if stat.S_ISBLK(st.st_mode):
            found = _block_name_from_devnum(os.major(st.st_rdev), os.minor(st.st_rdev), sysfs)
            if found:
                return found
    except OSError:
        pass
    if source.startswith("/dev/mapper/"):
        # No udev symlink: find the dm-N whose dm/name matches.
        wanted = os.path.basename(source)
        block = os.path.join(sysfs, "block")
        for entry in sorted(os.listdir(block)) if os.path.isdir(block) else []:
            if _read(os.path.join(block, entry, "dm", "name")) == wanted:
                return entry
    return None


def _sys_dir(name: str, sysfs: str) -> str:
    return os.path.realpath(os.path.join(sysfs, "class", "block", name))


def _whole_disk(name: str, sysfs: str) -> str:
    """The disk a partition belongs to (vda1 -> vda, nvme0n1p2 -> nvme0n1); else name itself."""
    d = _sys_dir(name, sysfs)
    if os.path.exists(os.path.join(d, "partition")):
        return os.path.basename(os.path.dirname(d))
    return name


def _rotational(disk: str, sysfs: str) -> bool | None:
    value = _read(os.path.join(sysfs, "block", disk, "queue", "rotational"))
    return None if value is None or value not in ("0", "1") else value == "1"


def _slaves(disk: str, sysfs: str) -> list[str]:
    d = os.path.join(sysfs, "block", disk, "slaves")
    try:
        return sorted(os.listdir(d))
    except OSError:
        return []


def _model(disk: str, sysfs: str) -> str | None:
    base = os.path.join(sysfs, "block", disk)
    for leaf in ("device/model", "device/name"):
        value = _read(os.path.join(base, leaf))
        if value:
            vendor = _read(os.path.join(base, "device", "vendor"))
            if vendor and not vendor.startswith("0x") and vendor not in value:
                return f"{vendor} {value}"
            return value
    dm_name = _read(os.path.join(base, "dm", "name"))
    if dm_name is not None:
        under = ", ".join(_slaves(disk, sysfs))
        return f"device-mapper {dm_name}" + (f" over {under}" if under else "")
    if disk.startswith("loop"):
        return "loop device"
    if disk.startswith("zram"):
        return "zram (compressed RAM)"
    if disk.startswith("ram"):
        return "RAM disk"
    if _read(os.path.join(base, "device", "vendor")) == "0x1af4":  # virtio's PCI vendor
        return "virtio disk"
    return None


def _backing_file(disk: str, sysfs: str) -> str | None:
    return _read(os.path.join(sysfs, "block", disk, "loop", "backing_file")) or None


def _device_ram_backed(disk: str, sysfs: str, depth: int = 0) -> bool:
    if disk.startswith(_RAM_DEVICE_PREFIXES):
        return True
    if depth > 8:  # stacked devices deeper than this are not a thing; stop a cycle anyway
        return False
    backing = _backing_file(disk, sysfs)
    if backing:
        # A loop device over a file on tmpfs is RAM too.
        try:
            return device_for_path(
                os.path.dirname(backing) or "/", sysfs=sysfs, _depth=depth + 1
            ).ram_backed
        except OSError:
            return False
    slaves = _slaves(disk, sysfs)
    return bool(slaves) and all(
        _device_ram_backed(_whole_disk(s, sysfs), sysfs, depth + 1) for s in slaves
    )


def _counter_keys() -> set[str]:
    return set(psutil.disk_io_counters(perdisk=True, nowrap=False) or {})


# ---------------------------------------------------------------------------------------------
# public API


def _info(
    path: str, mount: Mount, st_dev: int | None, sysfs: str, keys: set[str], depth: int = 0
) -> DeviceInfo:
    name = None
    if mount.major != 0:
        name = _block_name_from_devnum(mount.major, mount.minor, sysfs)
    if name is None and st_dev is not None and os.major(st_dev) != 0:
        name = _block_name_from_devnum(os.major(st_dev), os.minor(st_dev), sysfs)
    if name is None:
        # btrfs and some others report an anonymous device number: go by the mount source.
        name = _block_name_from_source(mount.source, sysfs)
    disk = _whole_disk(name, sysfs) if name else None
    ram = mount.fstype in RAM_FILESYSTEMS or _is_under(path, "/dev/shm")
    if disk and not ram:
        ram = _device_ram_backed(disk, sysfs, depth)
    try:
        vfs = os.statvfs(path)
        free, total = vfs.f_bavail * vfs.f_frsize, vfs.f_blocks * vfs.f_frsize
    except OSError:
        free = total = 0
    return DeviceInfo(
        path=path,
        mountpoint=mount.mountpoint,
        fstype=mount.fstype,
        source=mount.source,
        device=name,
        disk=disk,
        counter_key=name if name in keys else None,
        model=_model(disk, sysfs) if disk else None,
        rotational=_rotational(disk, sysfs) if disk else None,
        ram_backed=ram,
        free_bytes=free,
        total_bytes=total,
        backing_file=_backing_file(disk, sysfs) if disk else None,
    )


def device_for_path(
    path: str | os.PathLike[str], *, sysfs: str = "/sys", _depth: int = 0
) -> DeviceInfo:
    """Facts about the filesystem and block device that hold ``path`` (which must exist).

    Raises FileNotFoundError if the path does not exist.
    """
    real = os.path.realpath(os.fspath(path))
    st = os.stat(real)  # FileNotFoundError names the path
    mount = _mount_of(real, st.st_dev, mounts())
    if mount is None:
        raise OSError(f"no mount found for {real}")
    return _info(real, mount, st.st_dev, sysfs, _counter_keys(), _depth)


def list_filesystems(*, sysfs: str = "/sys") -> list[DeviceInfo]:
    """The writable mounted filesystems a user could put a Smart Paging file on.

    Kernel pseudo filesystems, read-only mounts, folders under /proc, /sys and /dev (other than
    /dev/shm, kept so it can be flagged as RAM) and mountpoints this process cannot write are
    left out. RAM-backed ones (tmpfs, /dev/shm, zram) are listed with ``ram_backed=True``.
    """
    keys = _counter_keys()
    table = mounts()
    seen: dict[str, DeviceInfo] = {}
    for m in table:
        if m.fstype in PSEUDO_FILESYSTEMS and m.mountpoint != "/" and m.mountpoint != "/dev/shm":
            continue
        if m.read_only:
            continue
        if (
            any(_is_under(m.mountpoint, p) for p in ("/proc", "/sys", "/dev"))
            and m.mountpoint != "/dev/shm"
        ):
            continue
        if not os.path.isdir(m.mountpoint) or not os.access(m.mountpoint, os.W_OK):
            continue
        try:
            st_dev = os.stat(m.mountpoint).st_dev
        except OSError:
            continue
        top = _mount_of(m.mountpoint, st_dev, table)
        if top is not m:  # hidden under a later mount on the same point
            continue
        info = _info(m.mountpoint, m, st_dev, sysfs, keys)
        if info.total_bytes == 0:  # unmounted while we looked, or no space at all
            continue
        seen[m.mountpoint] = info
    return sorted(seen.values(), key=lambda d: d.mountpoint)


def io_counters(
    info: DeviceInfo | str | os.PathLike[str], *, sysfs: str = "/sys"
) -> IOCounters | None:
    """The counters of the device under ``info`` (a DeviceInfo or a path) now.

    None when that filesystem has no block device with counters (tmpfs, NFS, ...), or the
    device went away: then nothing can prove that I/O reached a device.
    """
    if not isinstance(info, DeviceInfo):
        info = device_for_path(info, sysfs=sysfs)
    if info.counter_key is None:
        return None
    # sysfs writes a "/" in a device's name (cciss/c0d0) as "!".
    name = info.counter_key.replace("/", "!")
    line = _read(os.path.join(sysfs, "class", "block", name, "stat"))
    return None if line is None else parse_stat(line)
