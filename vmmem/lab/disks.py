"""``vmmem disks``: where a Smart Paging file could go, and (``--probe``) how fast that place is.

The probe runs vmmem's own fault path there: a small guest with few frames pages 4 KiB pages in
and out of a real Smart Paging file, one at a time (queue depth 1), with O_DIRECT, timed inside
the C fault path. That is what a page fault costs in that folder. It first writes the whole
file (a never-written file could read as zeros without touching the disk), runs about a second
per folder, in a private ``vmmem-probe-*`` scratch folder (0700) it makes there, and removes the
file and that folder whatever happens.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from vmmem.devices import DeviceInfo, device_for_path, io_counters, list_filesystems
from vmmem.errors import VmmemError
from vmmem.hyperv.settings import DEFAULT_PAGE_SIZE
from vmmem.lab.results import LocationResult
from vmmem.memory import FramePool, GuestMemory
from vmmem.records import to_json

__all__ = ["ProbeResult", "describe_location", "list_locations", "probe"]

PAGE = DEFAULT_PAGE_SIZE  # the probe pages as a host does
PROBE_FRAMES = 64  # so nearly every access to the probe guest is a fault
PROBE_CHUNK = 256  # accesses per replay call, between deadline checks
SCRATCH_PREFIX = "vmmem-probe-"  # the probe's own folder in each location, removed after


@dataclass(frozen=True)
class ProbeResult:
    """4 KiB QD1 random I/O measured with O_DIRECT in one folder."""

    path: str  # the folder probed
    read_iops: float | None = None  # page-ins per second of page-in time
    write_iops: float | None = None  # page-outs per second of page-out time
    read_p50_us: float | None = None
    read_p99_us: float | None = None
    write_p50_us: float | None = None
    write_p99_us: float | None = None
    device_read_bytes: int | None = None  # what the device's own counters saw during the probe
    device_write_bytes: int | None = None
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
    """The device facts of a folder, for JSON: a run's LocationResult without its I/O."""
    facts: dict[str, Any] = to_json(LocationResult.of(info, None))
    del facts["device_io"]
    return facts


def list_locations(paths: list[str] | None = None) -> list[DeviceInfo]:
    """The folders given, or every writable mounted filesystem a user could page to."""
    if paths:
        return [device_for_path(p) for p in paths]
    return list_filesystems()


def probe(folder: str, seconds: float = 1.0, file_size: int = 16 * 2**20) -> ProbeResult:
    """Page 4 KiB pages in and out of a Smart Paging file in ``folder`` for about ``seconds``.

    The file lives in a private scratch folder made for it (``folder/vmmem-probe-XXXXXXXX``,
    0700), and the folder and file are removed on the way out, whatever happens (an error,
    Ctrl-C, or SIGTERM turned into KeyboardInterrupt by the CLI). Only what the probe made is
    removed: if anything else appears in the scratch folder, the folder is left with it.
    """
    info = device_for_path(folder)
    pages = file_size // PAGE
    rng = np.random.default_rng(0x5EED)
    try:
        scratch = tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=folder)
    except OSError as e:
        return ProbeResult(folder, error=f"cannot make a scratch folder here: {e.strerror or e}")
    made: list[str] = []
    try:
        with (
            FramePool(PROBE_FRAMES * PAGE) as pool,
            GuestMemory(
                pool, pages * PAGE, PROBE_FRAMES, scratch, backend="direct", name="vmmem-probe"
            ) as mem,
        ):
            made.append(mem.paging_file.path)
            every_page = np.arange(pages, dtype=np.uint32)
            mem.replay(every_page, np.ones(pages, dtype=np.uint8))  # the whole file, written
            mem.reset_stats()
            before = io_counters(info)
            writes = np.ones(PROBE_CHUNK, dtype=np.uint8)  # every victim is dirty: a page-out
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                mem.replay(rng.integers(0, pages, PROBE_CHUNK, dtype=np.uint32), writes)
            stats = mem.stats
            after = io_counters(info)
    except (VmmemError, OSError) as e:
        return ProbeResult(folder, error=str(e))
    finally:
        _remove_scratch(scratch, made)
    reads, writes_ = stats.page_in_latency, stats.page_out_latency
    return ProbeResult(
        path=folder,
        read_iops=stats.page_ins / (stats.page_in_ns / 1e9) if stats.page_in_ns else None,
        write_iops=stats.page_outs / (stats.page_out_ns / 1e9) if stats.page_out_ns else None,
        read_p50_us=reads.percentile(50) * 1e6 if reads.count else None,
        read_p99_us=reads.percentile(99) * 1e6 if reads.count else None,
        write_p50_us=writes_.percentile(50) * 1e6 if writes_.count else None,
        write_p99_us=writes_.percentile(99) * 1e6 if writes_.count else None,
        device_read_bytes=(after - before).read_bytes if before and after else None,
        device_write_bytes=(after - before).write_bytes if before and after else None,
    )


def _remove_scratch(scratch: str, made: list[str]) -> None:
    """Remove the probe's paging file (if the guest did not) and its scratch folder, with
    Ctrl-C and SIGTERM held back so a second signal cannot leave them half removed."""
    with _signals_held():
        for path in made:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError:
                return  # leave the folder: it still holds our file
        try:
            os.rmdir(scratch)  # only if empty: never anything the probe did not make
        except OSError:
            pass


@contextmanager
def _signals_held() -> Iterator[None]:
    """Block SIGINT and SIGTERM (delivered on release, not lost) in this thread."""
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
