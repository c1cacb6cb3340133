"""``vmmem disks``: where a Smart Paging file could go, and (``--probe``) how fast that place is.

The probe is what a page fault costs there at best: 4 KiB random reads and writes, one at a time
(queue depth 1), with O_DIRECT so the page cache cannot answer for the device, on a scratch file
written in full first (a preallocated but never-written file reads as zeros without touching the
disk). It runs about a second per folder and deletes its file whatever happens.
"""

from __future__ import annotations

import mmap
import os
import random
import time
from dataclasses import dataclass
from typing import Any

from vmmem.devices import DeviceInfo, IOCounters, device_for_path, io_counters, list_filesystems

__all__ = ["ProbeResult", "describe_location", "list_locations", "probe", "PROBE_FILE_PREFIX"]

PROBE_FILE_PREFIX = ".vmmem-probe-"
BLOCK = 4096


@dataclass(frozen=True)
class ProbeResult:
    """4 KiB QD1 random I/O measured with O_DIRECT in one folder."""

    path: str
    read_iops: float | None
    write_iops: float | None
    read_p50_us: float | None
    read_p99_us: float | None
    write_p50_us: float | None
    write_p99_us: float | None
    device_read_bytes: int | None  # what the device's own counters saw during the probe
    device_write_bytes: int | None
    error: str | None = None

    @property
    def reached_device(self) -> bool | None:
        """Did the device's counters move by at least the bytes the probe read and wrote?"""
        if self.device_read_bytes is None or self.read_iops is None:
            return None
        return self.device_read_bytes > 0 and (self.device_write_bytes or 0) > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "read_iops": self.read_iops,
            "write_iops": self.write_iops,
            "read_p50_us": self.read_p50_us,
            "read_p99_us": self.read_p99_us,
            "write_p50_us": self.write_p50_us,
            "write_p99_us": self.write_p99_us,
            "device_read_bytes": self.device_read_bytes,
            "device_write_bytes": self.device_write_bytes,
            "reached_device": self.reached_device,
            "error": self.error,
        }


def describe_location(info: DeviceInfo) -> dict[str, Any]:
    """The device facts of a folder, for JSON."""
    return {
        "path": info.path,
        "mountpoint": info.mountpoint,
        "fstype": info.fstype,
        "source": info.source,
        "device": info.device,
        "disk": info.disk,
        "model": info.model,
        "rotational": info.rotational,
        "kind": info.kind,
        "ram_backed": info.ram_backed,
        "free_bytes": info.free_bytes,
        "total_bytes": info.total_bytes,
        "has_counters": info.has_counters,
        "backing_file": info.backing_file,
    }


def list_locations(paths: list[str] | None = None) -> list[DeviceInfo]:
    """The folders given, or every writable mounted filesystem a user could page to."""
    if paths:
        return [device_for_path(p) for p in paths]
    return list_filesystems()


def _percentile(sorted_values: list[float], p: float) -> float:
    i = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[i]


def probe(folder: str, seconds: float = 1.0, file_size: int = 16 * 2**20) -> ProbeResult:
    """Measure 4 KiB QD1 random reads then writes in ``folder`` for about ``seconds`` in all."""
    info = device_for_path(folder)
    path = os.path.join(os.fspath(folder), f"{PROBE_FILE_PREFIX}{os.getpid()}")
    buf = mmap.mmap(-1, 2**20)  # page-aligned, as O_DIRECT wants
    fd = -1
    try:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_DIRECT, 0o600)
        except OSError as e:
            return ProbeResult(
                path,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                error=f"cannot open with O_DIRECT: {e.strerror}",
            )
        try:
            # Fill the file for real (random bytes, so no filesystem can skip the blocks).
            buf.write(os.urandom(len(buf)))
            for off in range(0, file_size, len(buf)):
                os.pwritev(fd, [buf], off)
            os.fsync(fd)
        except OSError as e:
            return ProbeResult(
                path,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                error=f"cannot write the probe file: {e.strerror}",
            )
        view = memoryview(buf)[:BLOCK]
        blocks = file_size // BLOCK
        rng = random.Random(0x5EED)
        before = io_counters(info)
        try:
            reads = _timed(lambda off: os.preadv(fd, [view], off), blocks, rng, seconds / 2)
            writes = _timed(lambda off: os.pwritev(fd, [view], off), blocks, rng, seconds / 2)
        finally:
            view.release()
        os.fsync(fd)
        after = io_counters(info)
        delta: IOCounters | None = (after - before) if before and after else None
        return ProbeResult(
            path=path,
            read_iops=len(reads) / sum(reads) if reads else None,
            write_iops=len(writes) / sum(writes) if writes else None,
            read_p50_us=_percentile(sorted(reads), 50) * 1e6 if reads else None,
            read_p99_us=_percentile(sorted(reads), 99) * 1e6 if reads else None,
            write_p50_us=_percentile(sorted(writes), 50) * 1e6 if writes else None,
            write_p99_us=_percentile(sorted(writes), 99) * 1e6 if writes else None,
            device_read_bytes=delta.read_bytes if delta else None,
            device_write_bytes=delta.write_bytes if delta else None,
        )
    finally:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        buf.close()


def _timed(op, blocks: int, rng: random.Random, seconds: float) -> list[float]:
    """Latencies (s) of random 4 KiB operations done one at a time for about ``seconds``."""
    out: list[float] = []
    deadline = time.perf_counter() + seconds
    clock = time.perf_counter
    while True:
        off = rng.randrange(blocks) * BLOCK
        t0 = clock()
        op(off)
        t1 = clock()
        out.append(t1 - t0)
        if t1 >= deadline or len(out) >= 200_000:
            return out
