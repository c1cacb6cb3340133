"""Runs a scenario on the Hyper-V layer (vmmem.hyperv) and gathers what it measured.

The runner only drives and records: every figure in the result comes from the Hyper-V layer's
BootReports, statuses and timeline, the paging core's histograms, and the block devices' own
counters. It waits in short polls so progress stays live and Ctrl-C is honoured at once; the
host is always closed, which deletes every Smart Paging file, and the folders are checked
afterwards for anything left.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from vmmem.devices import DeviceInfo, device_for_path, io_counters
from vmmem.hyperv.host import DEFAULT_FOLDER, DEFAULT_PAGE_SIZE
from vmmem.hyperv.settings import smart_paging_folder
from vmmem.lab.disks import describe_location
from vmmem.lab.results import STORM_KINDS, RunResult
from vmmem.lab.scenario import Scenario, VMSpec
from vmmem.memory import LatencyHistogram
from vmmem.sizes import MB
from vmmem.sizes import format_mb as mb

__all__ = [
    "LocationRefused",
    "ProgressSink",
    "VMProgress",
    "check_folders_free",
    "check_locations",
    "paging_folders",
    "run_scenario",
    "sigterm_as_interrupt",
]

POLL = 0.1  # seconds between progress polls


class LocationRefused(Exception):
    """A Smart Paging folder cannot be used: missing, not writable, or too little free space."""


@dataclass(frozen=True)
class VMProgress:
    """One VM as the live display shows it."""

    name: str
    state: str
    phase: str
    memory_assigned: int
    memory_demand: int
    memory_status: str
    smart_paging_bytes: int
    boot_elapsed: float | None  # seconds into the current boot, None when not booting
    boot_eta: float | None  # seconds left, estimated from the boot's progress


class ProgressSink:
    """Receives progress; the CLI shows it live. The default does nothing."""

    def event_started(self, index: int, count: int, description: str) -> None: ...

    def event_done(self, index: int, description: str, seconds: float, note: str = "") -> None: ...

    def update(self, vms: list[VMProgress], available: int, elapsed: float) -> None: ...

    def message(self, text: str) -> None: ...


# ---------------------------------------------------------------------------------------------
# locations


def paging_folders(s: Scenario, host_folder: str) -> dict[str, str]:
    """VM name -> its Smart Paging folder (absolute), as the Hyper-V layer will place it."""
    return {v.name: smart_paging_folder(host_folder, v.name, v.smart_paging_path) for v in s.vms}


def _existing_ancestor(path: str) -> str:
    p = os.path.abspath(path)
    while not os.path.exists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return p


def check_locations(s: Scenario, host_folder: str) -> tuple[list[DeviceInfo], list[str]]:
    """The filesystems the Smart Paging files will live on, and warnings for people.

    Raises LocationRefused when a folder is missing (its parent must exist), not writable, or
    its filesystem has less free space than the worst case: every dynamic VM on it with a
    Smart Paging file as large as its Startup RAM (plus 64 MB of slack for the filesystem).
    """
    folders = paging_folders(s, host_folder)
    by_fs: dict[str, tuple[DeviceInfo, list[str]]] = {}
    for name, folder in folders.items():
        if s.vm(name).smart_paging_path and not os.path.isdir(folder):
            raise LocationRefused(
                f"Smart Paging folder {folder} (VM {name}) does not exist or is not a folder"
            )
        anchor = _existing_ancestor(folder)
        if not os.path.isdir(anchor) or not os.access(anchor, os.W_OK | os.X_OK):
            raise LocationRefused(f"Smart Paging folder {folder} (VM {name}) is not writable")
        info = device_for_path(anchor)
        key = f"{info.mountpoint}\0{info.device or info.source}"
        by_fs.setdefault(key, (info, []))[1].append(name)
    warnings = []
    infos = []
    for info, names in by_fs.values():
        worst = sum(s.vm(n).startup for n in names if s.vm(n).dynamic)
        need = worst + 64 * MB if worst else 0
        if info.free_bytes < need:
            raise LocationRefused(
                f"not enough free space for the Smart Paging files on {info.mountpoint} "
                f"({info.fstype}): the worst case needs {mb(need)} ({', '.join(names)}: up to "
                f"their Startup RAM each, plus 64 MB), {mb(info.free_bytes)} is free. "
                "Choose another folder with --paging-dir, or a smaller --scale."
            )
        if info.ram_backed:
            warnings.append(
                f"{info.mountpoint} is RAM-backed ({info.fstype}): the Smart Paging files of "
                f"{', '.join(names)} live in RAM there, so nothing real is measured"
            )
        elif not info.has_counters:
            warnings.append(
                f"{info.mountpoint} ({info.fstype}) has no block-device counters: "
                "the run cannot confirm that paging reached a device"
            )
        infos.append(info)
    return infos, warnings


def check_folders_free(folders: list[str]) -> list[str]:
    """Refuse folders another live run holds (LocationRefused, naming its pid); remove what
    runs that died left there, provably theirs. Returns messages for people."""
    from vmmem.workspace import active_runs, earlier_runs, remove_earlier_run

    for f in folders:
        live = active_runs(f)
        if live:
            who = ", ".join(f"pid {r.pid} (started {r.started_text})" for r in live)
            raise LocationRefused(
                f"the Smart Paging folder {f} is in use by another vmmem run: {who}. Two runs "
                "on one folder would measure each other's disk I/O; wait for it to finish, or "
                "use another --paging-dir"
            )
    notes = []
    for f in folders:
        for run in earlier_runs(f):
            removed = remove_earlier_run(run)
            what = f"{len(removed)} Smart Paging file(s) removed" if removed else "no file left"
            notes.append(f"{f}: {run.describe()}: {what}")
    return notes


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while a run is going, so it too cleans up (main thread only)."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# ---------------------------------------------------------------------------------------------
# the run


def _workload(v: VMSpec) -> list[Any]:
    from vmmem.hyperv import Boot, Idle

    w = v.workload
    boot_kwargs = dict(w.boot)
    if w.boot_seconds is not None:
        boot_kwargs["cpu_time"] = w.boot_seconds
    idle_kwargs = dict(w.idle)
    if w.idle_demand is not None:
        idle_kwargs["demand"] = w.idle_demand
    return [Boot(**boot_kwargs), Idle(**idle_kwargs)]


class BootEta:
    """Seconds left in one boot, from how far it got: never growing, never jumping about.

    A boot touches each of its Startup pages once. The estimate is the larger of two:
    the guest CPU time still ahead (the workload's expected CPU time for the pages not yet
    touched: the boot cannot go faster than that), and the pages left at the recent rate
    (smoothed over about a second, so one slow chunk does not swing it). The shown ETA never
    increases: when a boot slows down (Smart Paging starts to page out) it holds instead of
    growing, and it falls again once the estimate catches up.
    """

    SMOOTHING = 1.0  # seconds: time constant of the rate's moving average
    MIN_PROGRESS = 0.02  # below this share of the pages, a rate says nothing yet

    def __init__(self, expected_cpu: float | None):
        self.expected_cpu = expected_cpu
        self._last: tuple[float, float] | None = None  # (time, fraction)
        self._rate: float | None = None  # fraction per second
        self.eta: float | None = None

    def update(self, now: float, fraction: float) -> float | None:
        fraction = min(1.0, max(0.0, fraction))
        if self._last is not None:
            t0, f0 = self._last
            dt = now - t0
            if dt <= 0:
                return self.eta
            inst = max(0.0, fraction - f0) / dt
            weight = 1 - math.exp(-dt / self.SMOOTHING)
            self._rate = inst if self._rate is None else self._rate + weight * (inst - self._rate)
        self._last = (now, fraction)
        left = 1.0 - fraction
        candidates = []
        if self.expected_cpu is not None:
            candidates.append(self.expected_cpu * left)
        if self._rate and fraction >= self.MIN_PROGRESS:
            candidates.append(left / self._rate)
        if not candidates:
            return self.eta
        estimate = max(candidates)
        self.eta = estimate if self.eta is None else min(self.eta, estimate)
        return self.eta


class _Tracker:
    """Per VM: boot start times (host clock) and ETAs for the live view, and when the run saw
    each Smart Paging file come and go (the file's life, for the plot)."""

    def __init__(self, host: Any):
        self.host = host
        self.boot_started: dict[str, float] = {}
        self._etas: dict[str, BootEta] = {}
        # VM -> [first seen in use, first seen gone (None: still there)] per file life.
        self.file_seen: dict[str, list[list[float | None]]] = {}

    def mark(self, name: str) -> None:
        self.boot_started[name] = self.host.clock()
        vm = self.host.vms[name]
        self._etas[name] = BootEta(_expected_cpu(vm, self.host.page_size))

    def snapshot(self) -> list[VMProgress]:
        out = []
        now = self.host.clock()
        for name, vm in self.host.vms.items():
            st = vm.status
            self._note_file(name, st.smart_paging_file_in_use, now)
            elapsed = eta = None
            if st.phase == "boot" and name in self.boot_started:
                elapsed = now - self.boot_started[name]
                eta = self._eta(name, vm, now)
            out.append(
                VMProgress(
                    name,
                    st.state,
                    st.phase,
                    st.memory_assigned,
                    st.memory_demand,
                    st.memory_status,
                    st.smart_paging_bytes,
                    elapsed,
                    eta,
                )
            )
        return out

    def _note_file(self, name: str, in_use: bool, now: float) -> None:
        lives = self.file_seen.setdefault(name, [])
        open_life = bool(lives) and lives[-1][1] is None
        if in_use and not open_life:
            lives.append([now, None])
        elif not in_use and open_life:
            lives[-1][1] = now

    def file_life(self, name: str, started_at: float) -> tuple[float | None, float | None]:
        """(first seen, first seen gone) of the first file seen after a boot's start."""
        for seen, gone in self.file_seen.get(name, []):
            if seen is not None and seen >= started_at - POLL:
                return seen, gone
        return None, None

    def _eta(self, name: str, vm: Any, now: float) -> float | None:
        # The boot touches every Startup page once; pages holding data now (in frames or in
        # the file) over Startup pages is how far it got.
        mem = vm.memory
        eta = self._etas.get(name)
        if mem is None or eta is None:
            return None
        try:
            stats = mem.stats
        except Exception:  # the memory may be closing under us
            return eta.eta
        startup_pages = max(1, vm.settings.startup // self.host.page_size)
        return eta.update(now, (stats.resident + stats.file_pages) / startup_pages)


def _expected_cpu(vm: Any, page_size: int) -> float | None:
    """The guest CPU time of the VM's boot phases, if the workload says (Boot phases)."""
    from vmmem.hyperv import Boot

    startup_pages = vm.settings.startup // page_size
    total = 0.0
    for phase in vm.workload:
        if not phase.boot:
            break
        if not isinstance(phase, Boot):
            return None
        total += phase.expected_cpu_time(startup_pages)
    return total or None


def run_scenario(
    s: Scenario,
    *,
    paging_dir: str | None = None,
    progress: ProgressSink | None = None,
    backend: str = "direct",
    policy: str = "lru",
    plan: dict[str, Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunResult:
    """Run ``s`` on a new Host and return what it measured.

    ``paging_dir`` puts every VM's Smart Paging file there (Set-VM -SmartPagingFilePath on all).
    Raises LocationRefused before anything is made if a folder cannot take the worst case.
    KeyboardInterrupt is caught: the result then has outcome "interrupted" and what was
    measured so far; the host is closed (its files deleted) in every case.
    """
    from vmmem.errors import VmmemError
    from vmmem.hyperv import Host

    progress = progress or ProgressSink()
    if plan is None:
        from vmmem.lab.plan import plan_scenario

        plan = plan_scenario(s).to_dict()
    if paging_dir is not None:
        s = s.with_paging_dir(os.path.abspath(paging_dir))
    host_folder = os.path.abspath(s.smart_paging_path or DEFAULT_FOLDER)
    infos, warnings = check_locations(s, host_folder)
    folders = sorted(set(paging_folders(s, host_folder).values()))
    result = RunResult(
        scenario=s.to_dict(),
        plan=plan,
        warnings=list(warnings),
        settings={
            "backend": backend,
            "policy": policy,
            "page_size": DEFAULT_PAGE_SIZE,
            "host_folder": host_folder,
            "paging_folders": folders,
        },
    )
    for note in check_folders_free(folders):
        result.earlier_runs.append(note)
        progress.message(note)
    for w in warnings:
        progress.message(f"warning: {w}")
    before = {i.mountpoint: io_counters(i) for i in infos}
    t0 = time.monotonic()
    host = None
    tracker: _Tracker | None = None

    def poll(until: Callable[[], bool], timeout: float | None = None) -> bool:
        """Show progress until ``until()`` holds; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if tracker is not None:
                progress.update(tracker.snapshot(), host.available_memory, time.monotonic() - t0)
            if until():
                return True
            if should_stop is not None and should_stop():
                raise KeyboardInterrupt
            for vm in host.vms.values():
                if vm.phase == "failed":
                    raise VmmemError(f"VM {vm.name} failed: {vm.error}")
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(POLL)

    def booted(names: list[str]) -> Callable[[], bool]:
        return lambda: all(host.vms[n].booted for n in names)

    def settled() -> bool:
        try:
            host.wait_settled(timeout=0)
            return True
        except TimeoutError:
            return False

    try:
        with sigterm_as_interrupt():
            host = Host(
                s.host_memory,
                reserve=s.host_reserve,
                smart_paging_path=host_folder,
                balancer_interval=s.balancer_interval,
                backend=backend,
                policy=policy,
            )
            result.settings["page_size"] = host.page_size
            for v in s.vms:
                kwargs: dict[str, Any] = dict(
                    startup=v.startup,
                    priority=v.priority,
                    dynamic=v.dynamic,
                    smart_paging_path=v.smart_paging_path,
                    workload=_workload(v),
                )
                if v.dynamic:
                    kwargs.update(minimum=v.minimum, maximum=v.maximum, buffer=v.buffer)
                host.add_vm(v.name, **kwargs)
            tracker = _Tracker(host)
            for i, e in enumerate(s.events):
                desc = e.describe()
                progress.event_started(i, len(s.events), desc)
                started = time.monotonic()
                note = ""
                boots_before = {n: len(vm.boot_reports) for n, vm in host.vms.items()}
                if e.action == "start":
                    for n in e.vms:
                        tracker.mark(n)
                        host.vms[n].start()
                        poll(booted([n]))
                        if not poll(settled, timeout=max(30.0, 30 * s.balancer_interval)):
                            note = "did not settle within the wait; went on"
                elif e.action == "idle":
                    end = time.monotonic() + (e.seconds or 0)
                    poll(lambda end=end: time.monotonic() >= end)
                elif e.action == "restart-host":
                    names = [n for n, vm in host.vms.items() if vm.state == "Running"]
                    host.restart()
                    for n in names:
                        tracker.mark(n)
                    poll(booted(names))
                elif e.action == "restart":
                    for n in e.vms:
                        tracker.mark(n)
                        host.vms[n].restart()
                        poll(booted([n]))
                elif e.action == "settle":
                    if not poll(settled, timeout=e.seconds):
                        note = (
                            f"not settled after {e.seconds:g} s: Smart Paging still in use "
                            "or a VM not at its buffer"
                        )
                took = time.monotonic() - started
                result.events.append(
                    {
                        "index": i,
                        "action": e.action,
                        "description": desc,
                        "seconds": took,
                        "note": note,
                    }
                )
                progress.event_done(i, desc, took, note)
                _collect_boots(host, result, boots_before, i)
    except KeyboardInterrupt:
        result.outcome = "interrupted"
    except (VmmemError, OSError, TimeoutError) as e:
        result.outcome = "failed"
        result.error = str(e)
    finally:
        with _no_interrupts():  # a second Ctrl-C must not stop the clean-up half way
            if host is not None:
                try:
                    _final(host, result, tracker)
                finally:
                    host.close()
            result.duration = time.monotonic() - t0
            after = {i.mountpoint: io_counters(i) for i in infos}
            for info in infos:
                loc = describe_location(info)
                b, a = before.get(info.mountpoint), after.get(info.mountpoint)
                loc["device_io"] = (
                    None
                    if b is None or a is None
                    else {
                        "read_bytes": (a - b).read_bytes,
                        "write_bytes": (a - b).write_bytes,
                        "read_count": (a - b).read_count,
                        "write_count": (a - b).write_count,
                    }
                )
                result.locations.append(loc)
            # The host deletes its own files and nothing else; any it found still there
            # (a guest that did not delete its file) it deleted, and names here.
            result.leftover_files = host.left_behind if host is not None else []
    return result


@contextmanager
def _no_interrupts() -> Iterator[None]:
    try:
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to hold back
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def _collect_boots(host: Any, result: RunResult, before: dict[str, int], event: int) -> None:
    """Add the boots that event made (their reports keep updating until Smart Paging ends, so
    they are refreshed once more at the end)."""
    for n, vm in host.vms.items():
        for rep in vm.boot_reports[before.get(n, 0) :]:
            d = rep.as_dict()
            d["event"] = event
            result.boots.append(d)


def _final(host: Any, result: RunResult, tracker: _Tracker | None = None) -> None:
    """Refresh boot reports (Smart Paging duration is known only once the file is gone), add
    each Smart Paging file's life, and record final statuses and the timeline."""
    by_key = {(b["vm"], b["started_at"]): b for b in result.boots}
    for vm in host.vms.values():
        for rep in vm.boot_reports:
            d = rep.as_dict()
            old = by_key.get((d["vm"], d["started_at"]))
            if old is not None:
                old.update(d)
    for b in result.boots:
        created = deleted = None
        if b.get("smart_paging_peak_bytes") and tracker is not None:
            seen, gone = tracker.file_life(b["vm"], b["started_at"])
            # As the run saw it, polling every POLL seconds (the guest notes its file's
            # changes between its own steps, which can lag further).
            if seen is not None:
                created = max(b["started_at"], seen)
                if gone is not None:
                    deleted = gone
                elif b.get("smart_paging_ended"):
                    deleted = created + (b.get("smart_paging_seconds") or 0.0)
        b["smart_paging_file_created_at"] = created
        b["smart_paging_file_deleted_at"] = deleted
    # The storm's fault-latency CDF: each restart boot's histogram covers exactly that boot.
    # A fault that waited on the disk: the victim's write-back plus the page-in.
    latencies = [
        rep.fault_latency
        for vm in host.vms.values()
        for rep in vm.boot_reports
        if rep.kind in STORM_KINDS and rep.fault_latency is not None
    ]
    seconds, fraction = LatencyHistogram.merge(latencies).cdf()
    result.fault_latency_cdf = {"seconds": seconds.tolist(), "fraction": fraction.tolist()}
    result.final_status = [st.as_dict() for st in host.status]
    result.timeline = [_slim_sample(x.as_dict()) for x in host.timeline]


_TIMELINE_FIELDS = (
    "name",
    "state",
    "phase",
    "memory_assigned",
    "memory_demand",
    "memory_status",
    "smart_paging_bytes",
)


def _slim_sample(d: dict[str, Any]) -> dict[str, Any]:
    return {
        "time": d["time"],
        "available_memory": d["available_memory"],
        "vms": [{k: v.get(k) for k in _TIMELINE_FIELDS} for v in d["vms"]],
    }
