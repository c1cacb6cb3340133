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
from vmmem.lab.scenario import Event, Scenario
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

    def close(self) -> None: ...


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
            c = mem.counters
        except Exception:  # the memory may be closing under us
            return eta.eta
        startup_pages = max(1, vm.settings.startup // self.host.page_size)
        return eta.update(now, (c["resident"] + c["file_pages"]) / startup_pages)


def _expected_cpu(vm: Any, page_size: int) -> float | None:
    """The guest CPU time of the VM's boot phases, if the workload says (Boot, RecordedBoot)."""
    startup_pages = vm.settings.startup // page_size
    total = 0.0
    for phase in vm.workload:
        if not phase.boot:
            break
        expected = getattr(phase, "expected_cpu_time", None)
        if expected is None:
            return None
        total += expected(startup_pages)
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
    Raises LocationRefused before anything is made if a folder cannot take the worst case or
    another live run holds it. KeyboardInterrupt is caught: the result then has outcome
    "interrupted" and what was measured so far; the host is closed (its files deleted) in every
    case. ``plan`` defaults to the planner's prediction for ``s``.
    """
    from vmmem.errors import VmmemError

    progress = progress or ProgressSink()
    if plan is None:
        from vmmem.lab.plan import plan_scenario

        plan = plan_scenario(s).to_dict()
    if paging_dir is not None:
        s = s.with_paging_dir(os.path.abspath(paging_dir))
    # The VMs' own folders (their virtual disks; their Smart Paging files unless moved).
    host_folder = os.path.abspath(DEFAULT_FOLDER)
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
    run: _Run | None = None
    try:
        with sigterm_as_interrupt():
            run = _Run(s, result, progress, t0, should_stop, host_folder, backend, policy)
            run.play()
    except KeyboardInterrupt:
        result.outcome = "interrupted"
    except (VmmemError, OSError, TimeoutError) as e:
        result.outcome = "failed"
        result.error = str(e)
    finally:
        with _no_interrupts():  # a second Ctrl-C must not stop the clean-up half way
            if run is not None:
                run.close()
            result.duration = time.monotonic() - t0
            after = {i.mountpoint: io_counters(i) for i in infos}
            for info in infos:
                result.locations.append(_location_with_io(info, before, after))
    return result


def _location_with_io(
    info: DeviceInfo, before: dict[str, Any], after: dict[str, Any]
) -> dict[str, Any]:
    """A location's device facts and what its device's counters moved during the run."""
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
    return loc


class _Run:
    """One scenario being played on a Host: an event handler per action, polling for progress
    so the display stays live and Ctrl-C is honoured at once."""

    def __init__(
        self,
        s: Scenario,
        result: RunResult,
        progress: ProgressSink,
        t0: float,
        should_stop: Callable[[], bool] | None,
        host_folder: str,
        backend: str,
        policy: str,
    ) -> None:
        from vmmem.hyperv import Host

        self.s, self.result, self.progress, self.t0 = s, result, progress, t0
        self.should_stop = should_stop
        self.host = Host(
            s.host_memory,
            reserve=s.host_reserve,
            smart_paging_path=host_folder,
            balancer_interval=s.balancer_interval,
            backend=backend,
            policy=policy,
        )
        result.settings["page_size"] = self.host.page_size
        for v in s.vms:
            kwargs: dict[str, Any] = dict(
                startup=v.startup,
                priority=v.priority,
                dynamic=v.dynamic,
                smart_paging_path=v.smart_paging_path,
                workload=v.workload.phases(),
                **v.host_settings,
            )
            if v.dynamic:
                kwargs.update(minimum=v.minimum, maximum=v.maximum, buffer=v.buffer)
            self.host.add_vm(v.name, **kwargs)
        self.tracker = _Tracker(self.host)
        self.outcomes: dict[str, dict[str, object]] = {}  # the current event's, per VM
        self.handlers: dict[str, Callable[[Event], str]] = {
            "start": self.start,
            "idle": self.idle,
            "restart-vms": self.restart_vms,
            "restart": self.restart,
            "reboot-host": self.reboot_host,
            "settle": self.settle,
        }

    def play(self) -> None:
        events = self.s.events
        for i, e in enumerate(events):
            desc = e.describe()
            self.progress.event_started(i, len(events), desc)
            started = time.monotonic()
            boots_before = {n: len(vm.boot_reports) for n, vm in self.host.vms.items()}
            self.outcomes = {}
            note = self.handlers[e.action](e)
            took = time.monotonic() - started
            self.result.events.append(
                {
                    "index": i,
                    "action": e.action,
                    "description": desc,
                    "seconds": took,
                    "note": note,
                    "outcomes": self.outcomes,
                }
            )
            self.progress.event_done(i, desc, took, note)
            _collect_boots(self.host, self.result, boots_before, i)

    # -- waiting -------------------------------------------------------------------------------

    def poll(self, until: Callable[[], bool], timeout: float | None = None) -> bool:
        """Show progress until ``until()`` holds; False on timeout."""
        from vmmem.errors import VmmemError

        host = self.host
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.progress.update(
                self.tracker.snapshot(), host.available_memory, time.monotonic() - self.t0
            )
            if until():
                return True
            if self.should_stop is not None and self.should_stop():
                raise KeyboardInterrupt
            for vm in host.vms.values():
                if vm.phase == "failed":
                    raise VmmemError(f"VM {vm.name} failed: {vm.error}")
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(POLL)

    def booted(self, names: list[str]) -> Callable[[], bool]:
        return lambda: all(self.host.vms[n].booted for n in names)

    def settled(self) -> bool:
        try:
            self.host.wait_settled(timeout=0)
            return True
        except TimeoutError:
            return False

    # -- the events; each returns a note for people ("" when there is nothing to say) ----------

    def start(self, e: Event) -> str:
        """Start the VMs one by one, each after the previous has booted and settled."""
        note = ""
        for n in e.vms:
            self.tracker.mark(n)
            self.host.vms[n].start()
            self.poll(self.booted([n]))
            if not self.poll(self.settled, timeout=max(30.0, 30 * self.s.balancer_interval)):
                note = "did not settle within the wait; went on"
        return note

    def idle(self, e: Event) -> str:
        end = time.monotonic() + (e.seconds or 0)
        self.poll(lambda: time.monotonic() >= end)
        return ""

    def restart_vms(self, e: Event) -> str:
        """The named VMs (none named: every running VM) restart at the same instant."""
        names = list(e.vms) or [n for n, vm in self.host.vms.items() if vm.state == "Running"]
        self.host.restart_vms(names)
        for n in names:
            self.tracker.mark(n)
        self.poll(self.booted(names))
        return ""

    def reboot_host(self, e: Event) -> str:
        """Each VM's automatic stop action, then its start action after its delay; wait for
        the starts and for the boots of the VMs started from Off."""
        reboot = self.host.reboot(smart_paging_on_host_reboot=e.smart_paging_on_host_reboot)
        for n, out in reboot.outcomes.items():
            if out.result in ("restarted", "pending"):
                self.tracker.mark(n)
        self.poll(lambda: reboot.done)
        self.outcomes = {n: o.as_dict() for n, o in reboot.outcomes.items()}
        booting = [n for n, o in reboot.outcomes.items() if o.result in ("started", "restarted")]
        self.poll(self.booted(booting))
        failed = reboot.failed
        if failed:
            return (
                f"{', '.join(failed)} failed to start: Not enough memory in the system to start "
                "the virtual machine"
            )
        return ""

    def restart(self, e: Event) -> str:
        for n in e.vms:
            self.tracker.mark(n)
            self.host.vms[n].restart()
            self.poll(self.booted([n]))
        return ""

    def settle(self, e: Event) -> str:
        if self.poll(self.settled, timeout=e.seconds):
            return ""
        return (
            f"not settled after {e.seconds:g} s: Smart Paging still in use "
            "or a VM not at its buffer"
        )

    def close(self) -> None:
        """Final reports and statuses, then the host closed: it deletes its own files (and
        names any it found still there), nothing else."""
        try:
            _final(self.host, self.result, self.tracker)
        finally:
            self.host.close()
            self.result.leftover_files = self.host.left_behind


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
    merged = LatencyHistogram.merge(latencies)
    seconds, fraction = merged.cdf()
    result.fault_latency_cdf = {"seconds": seconds.tolist(), "fraction": fraction.tolist()}
    # The same percentile definition as each boot's fault_p50/p99 (LatencyHistogram).
    result.fault_latency_percentiles = {
        f"p{p}": merged.percentile(p) if merged.count else None for p in (50, 90, 99)
    }
    result.final_status = [st.as_dict() for st in host.status]
    result.timeline = [x.as_dict() for x in host.timeline]
