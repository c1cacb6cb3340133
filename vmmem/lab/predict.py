"""The planner's prediction of each restarting VM's boot (no I/O).

The plan gives each restarting VM the memory it gets for its boot; the boot's accesses, from
its recorded guest's trace (`--guest`, or ``guest`` in the scenario) or made by the synthetic
boot's own code, replayed into that many frames (vmmem.guests.predict: exact LRU, the default
policy) give its paging, and with a disk latency its boot time (docs/GUESTS.md, "Predicting").
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vmmem.errors import SettingsError
from vmmem.guests import SYNTHETIC_BOOT
from vmmem.guests.predict import (
    BootPrediction,
    PagingCurve,
    boot_accesses,
    key_space,
    paging_curve,
    predict_accesses,
)
from vmmem.guests.predict import predict_boot as _predict_boot

if TYPE_CHECKING:
    from vmmem.hyperv.recorded import RecordedBoot
    from vmmem.hyperv.workloads import Guest
    from vmmem.lab.scenario_model import VMSpec

__all__ = ["Latency", "boot_cpu_seconds", "latency_from_probe", "pages_touched", "predict_vm"]

PAGE = 4096
ALIGN = 2 * 2**20  # the balancer hands out 2 MB blocks


@dataclass(frozen=True)
class Latency:
    """What one 4 KiB request costs on the Smart Paging disk (seconds): `vmmem disks --probe`
    measures both; `vmmem plan --latency` takes them."""

    read: float
    write: float

    def to_dict(self) -> dict[str, float]:
        return {"read": self.read, "write": self.write}


def latency_from_probe(path: str) -> Latency:
    """The mean 4 KiB latencies (1 / IOPS at queue depth 1) of the one location probed in a
    `vmmem disks --probe --json` file."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise SettingsError(
            f"{path}: not a readable `vmmem disks --probe --json` file: {e}"
        ) from None
    locations = data.get("locations") if isinstance(data, dict) else None
    probes = [
        loc["probe"]
        for loc in (locations if isinstance(locations, list) else [])
        if isinstance(loc, dict) and isinstance(loc.get("probe"), dict)
    ]
    if len(probes) != 1:
        raise SettingsError(
            f"{path}: locations: {len(probes)} probed locations, expected 1 (probe the Smart "
            "Paging folder alone: vmmem disks --probe FOLDER --json)"
        )
    rates = []
    for key in ("read_iops", "write_iops"):
        value = probes[0].get(key)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            raise SettingsError(
                f"{path}: locations[0].probe.{key}: expected a rate > 0, got {value!r}"
            )
        rates.append(float(value))
    return Latency(1 / rates[0], 1 / rates[1])


@functools.lru_cache(maxsize=32)
def _recorded(guest: str, guest_ips: float | None, scale: float) -> RecordedBoot:
    from vmmem.hyperv.recorded import RecordedBoot

    kwargs: dict[str, Any] = {"guest": guest, "scale": scale}
    if guest_ips is not None:
        kwargs["guest_ips"] = guest_ips
    return RecordedBoot(**kwargs)


def _boot_of(v: VMSpec) -> RecordedBoot | None:
    w = v.workload
    return None if w.guest is None else _recorded(w.guest, w.guest_ips, w.guest_scale)


def boot_cpu_seconds(v: VMSpec) -> float | None:
    """The VM's recorded guest's boot time with enough memory (its latest processor's CPU
    time); None for the synthetic boot."""
    boot = _boot_of(v)
    return None if boot is None else boot.expected_cpu_time(v.startup // PAGE, v.processor_count)


@functools.lru_cache(maxsize=32)
def _curve(guest: str, guest_ips: float | None, scale: float, vm_pages: int) -> PagingCurve:
    boot = _recorded(guest, guest_ips, scale)
    pages, writes = boot_accesses(boot.trace, vm_pages, boot.page_mapping)
    return paging_curve(pages, writes, key_space(pages))


class _Capture:
    """A guest that only keeps what a boot phase does: its accesses in order with their write
    flags, the CPU time it charges, its disk requests. No memory, no sleeping, no disk: the
    synthetic boot's own code makes the accesses, so the prediction follows whatever it does."""

    page_size = PAGE
    # The boot's accesses in its one-processor order: with several processors the streams
    # interleave in an order no prediction knows (docs/GUESTS.md, "Several virtual processors").
    processors = 1

    def __init__(self, startup_pages: int, guest_pages: int) -> None:
        self.startup_pages = startup_pages
        self.guest_pages = guest_pages
        self.pages: list[np.ndarray] = []
        self.writes: list[np.ndarray] = []
        self.cpu = 0.0
        self.reads = 0
        self.disk_writes = 0

    @property
    def demand(self) -> int:
        return self.startup_pages

    def commit_range(self, first: int, count: int) -> None:
        pass

    def commit_pages(self, pages: np.ndarray) -> None:
        pass

    def keep_only(self, count: int) -> None:
        pass

    def replay(self, pages: np.ndarray, writes: np.ndarray | None) -> None:
        self.pages.append(np.array(pages, dtype=np.uint32))
        flags = np.zeros(len(pages), bool) if writes is None else np.asarray(writes) != 0
        self.writes.append(flags)

    def sleep(self, seconds: float) -> None:
        self.cpu += max(0.0, seconds)

    def end_smart_paging(self) -> None:
        pass

    def disk_io(self, offsets: np.ndarray, lengths: np.ndarray, writes: np.ndarray | None) -> None:
        written = 0 if writes is None else int(np.count_nonzero(writes))
        self.reads += len(offsets) - written
        self.disk_writes += written

    def run_on_processors(self, streams: Sequence[Callable[[Guest], None]]) -> None:
        for stream in streams:  # one processor: never more than one stream
            stream(self)


@functools.lru_cache(maxsize=16)
def _synthetic(
    boot_json: str, boot_seconds: float | None, startup: int, maximum: int, model: str | None
) -> Any:
    from vmmem.lab.scenario_model import WorkloadSpec

    spec = WorkloadSpec(boot=json.loads(boot_json), boot_seconds=boot_seconds, model=model)
    guest = _Capture(startup, maximum)
    spec.boot_phase().run(guest)
    pages = np.concatenate(guest.pages) if guest.pages else np.zeros(0, np.uint32)
    writes = np.concatenate(guest.writes) if guest.writes else np.zeros(0, bool)
    return pages, writes, paging_curve(pages, writes, key_space(pages)), guest


# The synthetic boot touches every page of Startup RAM: beyond this (16 GB) making its
# accesses would take seconds and gigabytes, so larger VMs get no prediction.
SYNTHETIC_LIMIT_PAGES = 4 * 2**20


def _predict_synthetic(v: VMSpec, frames: int, latency: Latency | None) -> BootPrediction | None:
    w = v.workload
    if v.startup // PAGE > SYNTHETIC_LIMIT_PAGES:
        return None
    boot_json = json.dumps(w.boot, sort_keys=True)
    pages, writes, curve, guest = _synthetic(
        boot_json, w.boot_seconds, v.startup // PAGE, v.effective_maximum // PAGE, w.model
    )
    cpu = guest.cpu  # several processors: the latest one's share (Boot.expected_cpu_time)
    if v.processor_count > 1:
        cpu = w.boot_phase().expected_cpu_time(v.startup // PAGE, v.processor_count)  # type: ignore[attr-defined]
    return predict_accesses(
        w.model or SYNTHETIC_BOOT, pages, writes, v.startup // PAGE, frames, cpu_seconds=cpu,
        disk_reads=guest.reads, disk_writes=guest.disk_writes,
        latency=None if latency is None else latency.read,
        write_latency=None if latency is None else latency.write, curve=curve,
    )  # fmt: skip


def predict_vm(v: VMSpec, assigned: int, latency: Latency | None) -> BootPrediction | None:
    """The boot of `v` given `assigned` bytes for all of it: its recorded guest's, or the
    synthetic boot's (its accesses made by its own code, without memory or time; None for a
    VM above SYNTHETIC_LIMIT_PAGES). On several processors its paging is predicted from the
    accesses in their one-processor order (a recording's: the global order its epochs ended
    in), an approximation of how the processors' streams interleave; its CPU time is the
    latest processor's."""
    w = v.workload
    if w.guest is None:
        return _predict_synthetic(v, assigned // PAGE, latency)
    return _predict(
        w.guest, w.guest_ips, w.guest_scale, v.startup // PAGE, assigned // PAGE, latency,
        v.processor_count,
    )  # fmt: skip


def pages_touched(v: VMSpec) -> int | None:
    """The distinct pages `v`'s boot touches (its accesses as the VM replays them; with every
    frame it wants, each is faulted once); None where predict_vm gives no prediction."""
    w = v.workload
    if w.guest is not None:
        curve = _curve(w.guest, w.guest_ips, w.guest_scale, v.startup // PAGE)
    elif v.startup // PAGE > SYNTHETIC_LIMIT_PAGES:
        return None
    else:
        boot_json = json.dumps(w.boot, sort_keys=True)
        curve = _synthetic(
            boot_json, w.boot_seconds, v.startup // PAGE, v.effective_maximum // PAGE, w.model
        )[2]
    return int(curve.misses[-1])


@functools.lru_cache(maxsize=64)
def _predict(
    guest: str,
    guest_ips: float | None,
    scale: float,
    vm_pages: int,
    frames: int,
    latency: Latency | None,
    processors: int = 1,
) -> BootPrediction:
    boot = _recorded(guest, guest_ips, scale)
    t = boot.trace
    writes = int(t.disk_write.sum())
    return _predict_boot(
        t,
        vm_pages,
        frames,
        mapping=boot.page_mapping,
        cpu_seconds=boot.expected_cpu_time(vm_pages, processors),
        # a scaled boot issues about one request in `scale` (RecordedBoot.run)
        disk_reads=round((t.disk_requests - writes) / boot.scale),
        disk_writes=round(writes / boot.scale),
        latency=None if latency is None else latency.read,
        write_latency=None if latency is None else latency.write,
        curve=_curve(guest, guest_ips, scale, vm_pages),
    )


def prediction_dict(p: BootPrediction) -> dict[str, Any]:
    """A prediction as the plan's JSON has it (sizes in bytes)."""
    no_paging = -(-p.no_paging_frames * PAGE // ALIGN) * ALIGN
    return {
        "guest": p.guest,
        "assigned_bytes": p.frames * PAGE,
        "page_ins": p.page_ins,
        "page_outs": p.page_outs,
        "smart_paging_peak_bytes": p.smart_paging_peak_pages * PAGE,
        "report_peak_bytes": p.report_peak_pages * PAGE,
        "no_paging_bytes": min(no_paging, p.vm_pages * PAGE),
        "cpu_seconds": p.cpu_seconds,
        "disk_reads": p.disk_reads,
        "disk_writes": p.disk_writes,
        "boot_seconds": p.boot_seconds,
    }
