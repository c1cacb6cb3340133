"""Runs a scenario on the Hyper-V layer (vmmem.hyperv) and gathers what it measured.

The runner only drives and records: every figure in the result comes from the Hyper-V layer's
BootReports, statuses and timeline, the paging core's histograms, and the block devices' own
counters. It waits in short polls so progress stays live and Ctrl-C is honoured at once; the
host is always closed, which deletes the files it made and nothing else. Where the files go and
what is checked before anything is made: `locations`; what is shown meanwhile: `progress`.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from vmmem.devices import DeviceInfo, IOCounters, io_counters
from vmmem.hyperv.host import DEFAULT_FOLDER, DEFAULT_PAGE_SIZE
from vmmem.hyperv.reboot import RebootOutcome
from vmmem.hyperv.reports import BootReport
from vmmem.lab.locations import (
    CheckedLocations,
    LocationRefused,
    check_folders_free,
    check_locations,
    paging_folders,
    vhd_folders,
)
from vmmem.lab.plan import Plan
from vmmem.lab.progress import POLL, BootEta, ProgressSink, RunTracker, VMProgress
from vmmem.lab.results import (
    STORM_KINDS,
    BootResult,
    DeviceIO,
    EventResult,
    LatencyCDF,
    LocationResult,
    Percentiles,
    RunResult,
    RunSettings,
)
from vmmem.lab.scenario import Event, Scenario
from vmmem.memory import LatencyHistogram

__all__ = [
    "BootEta",
    "LocationRefused",
    "ProgressSink",
    "VMProgress",
    "check_folders_free",
    "check_locations",
    "paging_folders",
    "run_scenario",
    "sigterm_as_interrupt",
]


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


def run_scenario(
    s: Scenario,
    *,
    paging_dir: str | None = None,
    progress: ProgressSink | None = None,
    backend: str = "direct",
    policy: str = "lru",
    plan: Plan | None = None,
    should_stop: Callable[[], bool] | None = None,
    locations: CheckedLocations | None = None,
) -> RunResult:
    """Run ``s`` on a new Host and return what it measured.

    ``paging_dir`` puts every VM's Smart Paging file there (Set-VM -SmartPagingFilePath on all).
    Raises LocationRefused before anything is made if a folder cannot take the worst case or
    another live run holds it. KeyboardInterrupt is caught: the result then has outcome
    "interrupted" and what was measured so far; the host is closed (its files deleted) in every
    case. ``plan``: the planner's prediction for ``s`` when the caller has it (planned here
    otherwise), recorded in the result. ``locations``: what check_locations found for ``s``
    (with ``paging_dir``) when the caller checked it and showed its warnings (compare checks
    every folder first); otherwise the run checks here and sends the warnings to
    ``progress.warning``. Either way they are in the result.
    """
    from vmmem.errors import VmmemError

    progress = progress or ProgressSink()
    if plan is None:
        from vmmem.lab.plan import plan_scenario

        plan = plan_scenario(s)
    if paging_dir is not None:
        s = s.with_paging_dir(os.path.abspath(paging_dir))
    # The VMs' own folders (their virtual disks; their Smart Paging files unless moved).
    host_folder = os.path.abspath(DEFAULT_FOLDER)
    shown = locations is not None
    infos, warnings = locations if locations is not None else check_locations(s, host_folder)
    folders = sorted(set(paging_folders(s, host_folder).values()))
    result = RunResult(
        scenario=s.to_dict(),
        plan=plan.record(),
        warnings=[str(w) for w in warnings],
        settings=RunSettings(backend, policy, DEFAULT_PAGE_SIZE, host_folder, folders),
    )
    # The virtual disks' folders too: a run whose Smart Paging files go elsewhere still uses
    # them, and two runs there would share (and measure) one disk.
    in_use = sorted(set(folders) | set(vhd_folders(s, host_folder).values()))
    for note in check_folders_free(in_use):
        result.earlier_runs.append(note)
        progress.message(note)
    if not shown:
        for w in warnings:
            progress.warning(w)
    before = _read_counters(infos)
    t0 = time.monotonic()
    run: _Run | None = None
    try:
        with sigterm_as_interrupt():
            run = _Run(s, result, progress, t0, should_stop, host_folder, backend, policy, infos)
            run.play()
        # Every event played and was measured; a VM the host reboot could not start is the
        # answer, not a failure of the run (docs/CLI.md, exit code 4).
        if result.failed_starts():
            result.outcome = "vms_failed"
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
            after = _read_counters(infos)
            # The storm's window: its event, from its start until its last VM had booted.
            storm = result.storm_event()
            window = (
                run.event_counters.get(storm) if run is not None and storm is not None else None
            )
            for info in infos:
                result.locations.append(
                    LocationResult.of(
                        info,
                        _device_io(info, before, after),
                        _device_io(info, *window) if window else None,
                    )
                )
    return result


# The counters of each location's device (None: it has none), and when they were read.
Counters = tuple[float, dict[str, IOCounters | None]]


def _read_counters(infos: list[DeviceInfo]) -> Counters:
    counters = {i.mountpoint: io_counters(i) for i in infos}
    return time.monotonic(), counters


def _device_io(info: DeviceInfo, before: Counters, after: Counters) -> DeviceIO | None:
    """What a location's device's counters moved between two readings."""
    b, a = before[1].get(info.mountpoint), after[1].get(info.mountpoint)
    seconds = after[0] - before[0]
    if b is None or a is None or seconds <= 0:
        return None
    return DeviceIO.of(a - b, seconds)


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
        infos: list[DeviceInfo],
    ) -> None:
        from vmmem.hyperv import Host

        self.s, self.result, self.progress, self.t0 = s, result, progress, t0
        self.infos = infos
        # Event index -> the locations' device counters at its start and at its end.
        self.event_counters: dict[int, tuple[Counters, Counters]] = {}
        self.should_stop = should_stop
        self.host = Host(
            s.host_memory,
            reserve=s.host_reserve,
            smart_paging_path=host_folder,
            balancer_interval=s.balancer_interval,
            balancer_start_delay=s.balancer_start_delay,
            backend=backend,
            policy=policy,
        )
        result.settings.page_size = self.host.page_size
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
        self.tracker = RunTracker(self.host)
        self.outcomes: dict[str, RebootOutcome] = {}  # the current event's, per VM
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
            counters_before = _read_counters(self.infos)
            note = self.handlers[e.action](e)
            self.event_counters[i] = (counters_before, _read_counters(self.infos))
            took = time.monotonic() - started
            self.result.events.append(
                EventResult(
                    index=i,
                    action=e.action,
                    description=desc,
                    seconds=took,
                    note=note,
                    outcomes=self.outcomes,
                )
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
        self.outcomes = {n: replace(o) for n, o in reboot.outcomes.items()}  # as they are now
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
            result.boots.append(BootResult.of(rep, event))


def _final(host: Any, result: RunResult, tracker: RunTracker | None = None) -> None:
    """Refresh boot reports (Smart Paging duration is known only once the file is gone), add
    each Smart Paging file's life, and record final statuses and the timeline."""
    latest = {(r.vm, r.started_at): r for vm in host.vms.values() for r in vm.boot_reports}
    for i, b in enumerate(result.boots):
        rep: BootReport = latest.get((b.vm, b.started_at), b)
        created = deleted = None
        if rep.smart_paging_peak_bytes and tracker is not None:
            seen, gone = tracker.file_life(rep.vm, rep.started_at)
            # As the run saw it, polling every POLL seconds (the guest notes its file's
            # changes between its own steps, which can lag further).
            if seen is not None:
                created = max(rep.started_at, seen)
                if gone is not None:
                    deleted = gone
                elif rep.smart_paging_ended:
                    deleted = created + (rep.smart_paging_seconds or 0.0)
        result.boots[i] = BootResult.of(rep, b.event, created, deleted)
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
    result.fault_latency_cdf = LatencyCDF(seconds.tolist(), fraction.tolist())
    # The same percentile definition as each boot's fault_p50/p99 (LatencyHistogram).
    p50, p90, p99 = (merged.percentile(p) if merged.count else None for p in (50, 90, 99))
    result.fault_latency_percentiles = Percentiles(p50, p90, p99)
    result.final_status = list(host.status)
    result.timeline = list(host.timeline)
