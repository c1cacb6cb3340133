"""One virtual machine: its settings, its guest thread, its memory, its boots.

The host owns policy across VMs (who gets how much, when a start is refused); a VM owns its
guest: a thread that runs the workload phases against its GuestMemory, declares demand, and
ends Smart Paging (drains the file) once the boot is over and its memory holds its demand.

Locking: `Host._lock` serialises lifecycle changes and balancer ticks; `VM._lock` guards the
VM's bookkeeping (assigned, demand, Smart Paging state, the GuestMemory reference). The guest
thread never holds the host lock, and replays without holding the VM lock, so the balancer
can always get in between two chunks.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from .. import devices
from ..errors import OutOfFramesError, SettingsError, VmmemError
from ..memory import GuestMemory
from ..sizes import SizeLike, format_size
from ..validate import check_number
from .balancer import Claim, claim_for
from .reports import BootReport, VMStatus, memory_status
from .settings import (
    PS_NAMES,
    VMSettings,
    check_size,
    smart_paging_folder,
    validate_settings,
)
from .workloads import Workload, boot_phase_count

if TYPE_CHECKING:
    from .host import Host

__all__ = ["VM"]

# Accesses per replay call: small while the VM may page, so a balancer change (which waits for
# the guest's mutex) never waits behind a long run of disk I/O.
_CHUNK = 4096
_CHUNK_PAGING = 256


class _Stopped(Exception):
    """The VM is stopping or restarting: unwind the guest thread."""


@dataclass
class _Boot:
    """Book-keeping of one boot (mutable; reports are frozen snapshots of it)."""

    kind: str
    started_at: float = 0.0  # host clock
    t0: float = 0.0  # time.monotonic()
    assigned_at_boot: int = 0  # pages
    smart_paging: bool = False
    device: devices.DeviceInfo | None = None
    io_start: devices.IOCounters | None = None
    report: BootReport | None = None
    file_created_at: float | None = None  # monotonic
    file_deleted_at: float | None = None
    peak_paged_out: int = 0  # pages
    peak_file_size: int = 0  # bytes


class _Guest:
    """The guest side of one boot: what workloads call (see workloads.Guest)."""

    def __init__(self, vm: VM, memory: GuestMemory, boot: _Boot) -> None:
        self.vm = vm
        self.memory = memory
        self.record = boot
        self.stop = threading.Event()
        self.booted = threading.Event()
        self.page_size = memory.page_size
        self.startup_pages = vm._settings.startup // memory.page_size
        self.guest_pages = memory.pages
        self.committed = np.zeros(0, dtype=bool)  # committed-page bitmap, grown on demand

    # -- demand ------------------------------------------------------------------------------

    @property
    def demand(self) -> int:
        return self.vm._demand

    def _grow(self, top: int) -> None:
        if top > len(self.committed):
            grown = np.zeros(max(top, 2 * len(self.committed)), dtype=bool)
            grown[: len(self.committed)] = self.committed
            self.committed = grown

    def commit_range(self, first: int, count: int) -> None:
        with self.vm._lock:
            self._check()
            self._grow(first + count)
            window = self.committed[first : first + count]
            self.vm._demand += int(count - np.count_nonzero(window))
            window[:] = True

    def commit_pages(self, pages: np.ndarray) -> None:
        unique = np.unique(pages)
        if not unique.size:
            return
        with self.vm._lock:
            self._check()
            self._grow(int(unique[-1]) + 1)
            new = unique[~self.committed[unique]]
            self.committed[new] = True
            self.vm._demand += int(new.size)

    def keep_only(self, count: int) -> None:
        """The guest keeps pages [0, count) committed and frees the rest: released, no I/O."""
        with self.vm._lock:
            self._check()
            top = len(self.committed)
            if top > count:
                self.memory.release(count, min(top, self.guest_pages) - count)
                self.committed[count:] = False
            self._grow(count)
            self.committed[:count] = True
            self.vm._demand = int(np.count_nonzero(self.committed))
            self.vm._cv.notify_all()
        self.observe_file()

    # -- running -----------------------------------------------------------------------------

    def _check(self) -> None:
        if self.stop.is_set():
            raise _Stopped

    def sleep(self, seconds: float) -> None:
        if seconds > 0 and self.stop.wait(seconds):
            raise _Stopped
        self._check()

    def _wait_for_frames(self) -> None:
        """A running guest short of memory waits for the balancer (pressure > 100) instead of
        paging: only a restart on Smart Paging may page."""
        vm = self.vm
        with vm._cv:
            while True:
                self._check()
                assigned = vm._assigned
                booting_on_file = vm._smart_paging and not self.booted.is_set()
                if assigned > 0 and (booting_on_file or assigned >= vm._demand):
                    return
                vm._cv.wait(0.05)

    def replay(self, pages: np.ndarray, writes: np.ndarray | None) -> None:
        n = len(pages)
        start = 0
        while start < n:
            if self.vm._smart_paging and self.booted.is_set():
                self.end_smart_paging()  # the boot is over: end Smart Paging at the first chance
            self._wait_for_frames()
            step = _CHUNK_PAGING if self.vm._smart_paging else _CHUNK
            end = min(n, start + step)
            self.memory.replay(pages[start:end], None if writes is None else writes[start:end])
            if self.vm._smart_paging:
                self.observe_file()
            start = end

    def observe_file(self) -> bool:
        """Note the Smart Paging file's state for the boot report; True if it exists."""
        stats = self.memory.stats
        exists = stats.file_created > stats.file_deleted
        rec = self.record
        now = time.monotonic()
        if exists:
            if rec.file_created_at is None or rec.file_deleted_at is not None:
                rec.file_created_at = rec.file_created_at or now
                rec.file_deleted_at = None
            paged_out = max(0, stats.zero_fills - stats.releases - stats.resident)
            rec.peak_paged_out = max(rec.peak_paged_out, paged_out)
            rec.peak_file_size = max(rec.peak_file_size, stats.file_size)
        elif rec.file_created_at is not None and rec.file_deleted_at is None:
            rec.file_deleted_at = now
        return exists

    def observe_file_closed(self) -> None:
        """The memory was closed, which deletes the file: note when."""
        rec = self.record
        if rec.file_created_at is not None and rec.file_deleted_at is None:
            rec.file_deleted_at = time.monotonic()

    def end_smart_paging(self) -> None:
        """After the boot: once the assigned memory holds the demand, bring the file's pages
        back and delete it (drain). Smart Paging then stays off until the next short restart."""
        vm = self.vm
        if not vm._smart_paging or not self.booted.is_set():
            return
        self._check()
        if self.observe_file() and vm._assigned >= vm._demand:
            # A chunk at a time, so status reads and the balancer never wait behind the
            # whole drain (the core holds the guest's mutex for each call).
            left = 1
            while left:
                self._check()
                if vm._assigned < vm._demand:
                    return  # the balancer moved in between; try again next time
                try:
                    left = self.memory.drain(max_pages=_CHUNK_PAGING)
                except OutOfFramesError:
                    return  # the balancer moved in between; try again next time
        with vm._lock:
            if not self.observe_file():
                vm._smart_paging = False
                vm._cv.notify_all()


class VM:
    """A Hyper-V virtual machine with Dynamic Memory. Made by `Host.add_vm`."""

    def __init__(self, host: Host, settings: VMSettings, phases: Sequence[Workload]) -> None:
        self._host = host
        self._settings = settings
        self._phases = tuple(phases)
        self._lock = threading.RLock()
        self._cv = threading.Condition(self._lock)
        self._state = "Off"
        self._phase = "off"
        self._memory: GuestMemory | None = None
        self._guest: _Guest | None = None
        self._thread: threading.Thread | None = None
        self._assigned = 0  # pages: the guest's frame limit
        self._demand = 0  # pages: committed memory
        self._smart_paging = False  # a paging file is allowed (restart short of Startup RAM)
        self._restarting = False
        self._boots: list[_Boot] = []
        self._baseline_given: float | None = None
        self._baseline_measured: float | None = None
        self.error: BaseException | None = None

    def __repr__(self) -> str:
        s = self._settings
        return (
            f"VM({s.name!r}, {self._state}, startup={format_size(s.startup)}, "
            f"assigned={format_size(self._assigned * self._host.page_size)})"
        )

    # -- settings ----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._settings.name

    @property
    def settings(self) -> VMSettings:
        return self._settings

    @property
    def workload(self) -> tuple[Workload, ...]:
        return self._phases

    @property
    def startup(self) -> int:
        return self._settings.startup

    @startup.setter
    def startup(self, value: SizeLike) -> None:
        self._change(startup=value)

    @property
    def minimum(self) -> int:
        return self._settings.minimum

    @minimum.setter
    def minimum(self, value: SizeLike) -> None:
        self._change(minimum=value)

    @property
    def maximum(self) -> int:
        return self._settings.maximum

    @maximum.setter
    def maximum(self, value: SizeLike) -> None:
        self._change(maximum=value)

    @property
    def buffer(self) -> int:
        return self._settings.buffer

    @buffer.setter
    def buffer(self, value: int) -> None:
        self._change(buffer=value)

    @property
    def priority(self) -> int:
        return self._settings.priority

    @priority.setter
    def priority(self, value: int) -> None:
        self._change(priority=value)

    @property
    def dynamic(self) -> bool:
        return self._settings.dynamic

    @dynamic.setter
    def dynamic(self, value: bool) -> None:
        self._change(dynamic=value)

    @property
    def smart_paging_path(self) -> str:
        """The VM's Smart Paging folder (its own folder under the host's by default)."""
        return smart_paging_folder(self._host.folder, self.name, self._settings.smart_paging_path)

    @smart_paging_path.setter
    def smart_paging_path(self, value: str | os.PathLike[str] | None) -> None:
        self._change(smart_paging_path=value)

    def _change(self, **changes: object) -> None:
        """Apply setting changes with Hyper-V's rules: Startup, Dynamic Memory on/off and the
        Smart Paging folder only while Off; while running Maximum may only rise and Minimum
        only fall."""
        with self._host._lock:
            s = self._settings
            running = self._state == "Running"
            [(key, value)] = changes.items()
            if running and key in ("startup", "dynamic", "smart_paging_path"):
                raise SettingsError(
                    f"{PS_NAMES[key]} cannot be changed while the virtual machine {s.name!r} "
                    "is running: turn it off first"
                )
            if not s.dynamic and key in ("minimum", "maximum", "buffer"):
                raise SettingsError(
                    f"{PS_NAMES[key]} cannot be set for {s.name!r}: Dynamic Memory is off "
                    f"({PS_NAMES['dynamic']} $false)"
                )
            if running and key in ("minimum", "maximum"):
                new = check_size(key, value)  # type: ignore[arg-type]
                old = getattr(s, key)
                if key == "maximum" and new < old:
                    raise SettingsError(
                        f"{PS_NAMES['maximum']} can only be raised while {s.name!r} is running "
                        f"(now {format_size(old)}, asked {format_size(new)}): turn it off to "
                        "lower it"
                    )
                if key == "minimum" and new > old:
                    raise SettingsError(
                        f"{PS_NAMES['minimum']} can only be lowered while {s.name!r} is running "
                        f"(now {format_size(old)}, asked {format_size(new)}): turn it off to "
                        "raise it"
                    )
            kwargs: dict[str, object] = {
                "name": s.name,
                "startup": s.startup,
                "priority": s.priority,
                "dynamic": s.dynamic,
                "smart_paging_path": s.smart_paging_path,
            }
            if s.dynamic:
                kwargs.update(minimum=s.minimum, maximum=s.maximum, buffer=s.buffer)
            kwargs[key] = value
            if key == "dynamic" and value is False:
                kwargs.pop("minimum", None)
                kwargs.pop("maximum", None)
                kwargs.pop("buffer", None)
            new_settings = validate_settings(**kwargs)  # type: ignore[arg-type]
            self._host._check_workload(new_settings, self._phases)
            self._settings = new_settings

    # -- lifecycle (the host does the memory policy) -----------------------------------------

    @property
    def state(self) -> str:
        """ "Off" or "Running", as Get-VM shows it."""
        return self._state

    @property
    def phase(self) -> str:
        return self._phase

    @property
    def memory(self) -> GuestMemory | None:
        """The guest's memory of the current boot (read its stats; do not drive it)."""
        return self._memory

    def start(self) -> None:
        """Power on from Off. Raises NotEnoughMemoryError if Startup RAM cannot be had."""
        self._host._start_vm(self)

    def stop(self) -> None:
        """Turn the VM off: its memory goes back to the host, any paging file is deleted."""
        self._host._stop_vm(self)

    def restart(self) -> None:
        """Restart the guest: the boot runs again, on Smart Paging if the host is short."""
        self._host._restart_vms([self], "restart")

    def reset(self) -> None:
        """Hard reset: like restart, without the guest's say."""
        self._host._restart_vms([self], "reset")

    @property
    def booted(self) -> bool:
        guest = self._guest
        return guest is not None and guest.booted.is_set() and self._state == "Running"

    def wait_booted(self, timeout: float | None = None) -> BootReport:
        """Wait until the current boot completes; returns its report."""
        guest = self._guest
        if guest is None:
            self._raise_if_failed()
            raise VmmemError(f"the virtual machine {self.name!r} is off: start it first")
        if not guest.booted.wait(timeout):
            raise TimeoutError(f"{self.name!r} did not finish booting within {timeout} s")
        self._raise_if_failed()
        report = self.boot_report
        assert report is not None
        return report

    def wait_smart_paging_off(self, timeout: float | None = None) -> BootReport:
        """Wait until the last boot's Smart Paging file is gone; returns the final report."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.wait_booted(timeout)
        with self._cv:
            while self._smart_paging and self._state == "Running":
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(
                        f"{self.name!r} still uses its Smart Paging file after {timeout} s"
                    )
                self._cv.wait(0.05 if left is None else min(0.05, left))
        self._raise_if_failed()
        report = self.boot_report
        assert report is not None
        return report

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise VmmemError(f"the guest of {self.name!r} failed: {self.error}") from self.error

    # -- baseline and reports ----------------------------------------------------------------

    @property
    def baseline(self) -> float | None:
        """Seconds of a boot with all its Startup RAM: given, or measured on this VM's last
        such boot."""
        return self._baseline_given if self._baseline_given is not None else self._baseline_measured

    @baseline.setter
    def baseline(self, seconds: float | None) -> None:
        if seconds is not None:
            seconds = check_number("baseline", seconds, low=0.0, low_open=True, unit="of seconds")
        self._baseline_given = seconds

    @property
    def boot_reports(self) -> list[BootReport]:
        return [r for r in (self._report_of(b) for b in self._boots) if r is not None]

    @property
    def boot_report(self) -> BootReport | None:
        """The latest completed boot's report, its Smart Paging fields up to date."""
        for boot in reversed(self._boots):
            report = self._report_of(boot)
            if report is not None:
                return report
        return None

    def _report_of(self, boot: _Boot) -> BootReport | None:
        if boot.report is None:
            return None
        if boot.file_created_at is None:
            seconds = 0.0
        else:
            seconds = (boot.file_deleted_at or time.monotonic()) - boot.file_created_at
        ended = boot.file_created_at is None or boot.file_deleted_at is not None
        if (
            self._boots
            and boot is self._boots[-1]
            and self._smart_paging
            and self._state == "Running"
        ):
            ended = False
        return replace(
            boot.report,
            smart_paging_peak_bytes=boot.peak_paged_out * self._host.page_size,
            smart_paging_file_peak_size=boot.peak_file_size,
            smart_paging_seconds=seconds,
            smart_paging_ended=ended,
        )

    # -- status ------------------------------------------------------------------------------

    @property
    def status(self) -> VMStatus:
        """Memory as Get-VM shows it."""
        s = self._settings
        ps = self._host.page_size
        with self._lock:
            memory = self._memory
            if self._state != "Running" or memory is None:
                return VMStatus(
                    s.name, "Off", self._phase, 0, 0, s.startup, 0.0, "", False, None, 0, 0
                )
            stats = memory.stats
            in_use = stats.file_created > stats.file_deleted
            assigned, demand = self._assigned * ps, self._demand * ps
            paged_out = max(0, stats.zero_fills - stats.releases - stats.resident) if in_use else 0
            return VMStatus(
                name=s.name,
                state="Running",
                phase=self._phase,
                memory_assigned=assigned,
                memory_demand=demand,
                memory_startup=s.startup,
                pressure=round(demand / assigned * 100, 1) if assigned else 0.0,
                memory_status=memory_status(
                    running=True,
                    dynamic=s.dynamic,
                    paging=in_use,
                    assigned=assigned,
                    demand=demand,
                    buffer=s.buffer,
                ),
                smart_paging_file_in_use=in_use,
                smart_paging_file_path=memory.paging_file.path
                if in_use
                else self.smart_paging_path,
                smart_paging_bytes=paged_out * ps,
                smart_paging_file_size=stats.file_size,
            )

    # -- host-side primitives (called with the host lock held) -------------------------------

    @property
    def _soft(self) -> bool:
        """May the host hold this VM below what it uses (paging to its file)? Only while it
        restarts on Smart Paging, until its boot completes. After the boot a leftover file only
        shrinks: the VM is never taken below its demand again, and drains when it can."""
        guest = self._guest
        booting = guest is not None and not guest.booted.is_set()
        return self._restarting or (self._smart_paging and booting)

    def _claim(self, *, starting: bool = False) -> Claim:
        """This VM's claim on host memory for the balancer (pages)."""
        s = self._settings
        ps = self._host.page_size
        with self._lock:
            soft = self._soft
            resident = 0
            if not soft and self._memory is not None:
                resident = self._memory.stats.resident
            claim = claim_for(
                s.name,
                demand=self._demand,
                minimum=s.minimum // ps,
                maximum=s.maximum // ps,
                buffer=s.buffer,
                priority=s.priority,
                assigned=self._assigned,
                dynamic=s.dynamic,
                startup=s.startup // ps,
                smart_paging=soft,
                resident=resident,
            )
            if soft and starting:
                # A start from Off never takes memory from a VM booting on Smart Paging.
                claim = replace(claim, floor=self._assigned)
            return claim

    def _set_assigned(self, pages: int) -> None:
        """Set the guest's frame limit. A VM not on Smart Paging is never taken below what it
        uses, so lowering its limit is pure ballooning: free pages only, no disk I/O."""
        with self._lock:
            memory = self._memory
            if memory is None or memory.closed:
                return
            if pages < self._assigned and not self._soft:
                pages = max(pages, self._demand, memory.stats.resident)
            if pages == self._assigned:
                return
            try:
                memory.frame_limit = pages
            finally:
                self._assigned = memory.frame_limit
            self._cv.notify_all()

    def _power_on(self, kind: str) -> None:
        """Make the guest's memory (frame limit 0) for a new boot; the host assigns memory and
        then calls _launch."""
        folder = self.smart_paging_path
        self._host._make_folder(folder)
        memory = GuestMemory(
            self._host.pool,
            self._settings.maximum,
            frame_limit=0,
            paging_dir=folder,
            backend=self._host.backend,
            policy=self._host.policy,
            name=self.name,
        )
        self._host.workspace.record_file(memory.paging_file.path)
        with self._lock:
            self.error = None
            self._memory = memory
            self._assigned = 0
            self._smart_paging = False
            self._state = "Running"
            self._phase = "boot"
            boot = _Boot(kind=kind)
            self._guest = _Guest(self, memory, boot)
            # The guest boots into its Startup RAM: that is its demand from the first moment.
            nboot = boot_phase_count(self._phases)
            if nboot:
                self._guest.commit_range(0, self._guest.startup_pages)
            else:
                self._phase = self._phases[0].phase

    def _launch(self, started_at: float) -> None:
        guest = self._guest
        assert guest is not None
        boot = guest.record
        boot.started_at = started_at
        boot.assigned_at_boot = self._assigned
        boot.smart_paging = self._smart_paging
        try:
            boot.device = devices.device_for_path(self.smart_paging_path)
            boot.io_start = devices.io_counters(boot.device)
        except Exception:  # device facts are advisory: never block a boot on them
            boot.device, boot.io_start = None, None
        boot.t0 = time.monotonic()
        self._boots.append(boot)
        self._thread = threading.Thread(
            target=self._guest_main, args=(guest,), name=f"vm-{self.name}", daemon=True
        )
        self._thread.start()

    def _power_off(self) -> None:
        """Stop the guest thread and free its memory (deletes any paging file)."""
        guest, thread = self._guest, self._thread
        if guest is not None:
            guest.stop.set()
        with self._cv:
            self._cv.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._lock:
            if self._memory is not None:
                self._memory.close()
            if guest is not None:
                guest.observe_file_closed()
            self._memory = None
            self._guest = None
            self._thread = None
            self._assigned = 0
            self._demand = 0
            self._smart_paging = False
            self._restarting = False
            self._state = "Off"
            if self._phase != "failed":
                self._phase = "off"
            self._cv.notify_all()

    # -- the guest thread --------------------------------------------------------------------

    def _guest_main(self, guest: _Guest) -> None:
        try:
            nboot = boot_phase_count(self._phases)
            if nboot == 0:
                self._boot_complete(guest)
            for index, phase in enumerate(self._phases):
                self._phase = phase.phase
                phase.run(guest)
                if index == nboot - 1:
                    self._boot_complete(guest)
            self._phase = "done"
            while True:
                guest.end_smart_paging()
                guest.sleep(self._host.balancer_interval)
        except _Stopped:
            return
        except BaseException as exc:  # noqa: BLE001 - a failed guest turns the VM off
            if guest.stop.is_set():
                return  # its memory was closed under it by a stop or restart
            self._guest_failed(guest, exc)

    def _guest_failed(self, guest: _Guest, exc: BaseException) -> None:
        with self._lock:
            if self._guest is not guest:
                return
            self.error = exc
            self._phase = "failed"
            guest.stop.set()
            if self._memory is not None:
                self._memory.close()  # deletes the paging file: none is left behind
            guest.observe_file_closed()
            self._memory = None
            self._guest = None
            self._thread = None
            self._assigned = 0
            self._demand = 0
            self._smart_paging = False
            self._state = "Off"
            self._cv.notify_all()
        guest.booted.set()  # wake waiters: they see the error

    def _boot_complete(self, guest: _Guest) -> None:
        boot = guest.record
        boot_time = time.monotonic() - boot.t0
        stats = guest.memory.stats
        guest.observe_file()
        if not boot.smart_paging:
            self._baseline_measured = boot_time
        baseline = self.baseline
        io_read = io_write = None
        if boot.io_start is not None and boot.device is not None:
            try:
                now = devices.io_counters(boot.device)
            except Exception:
                now = None
            if now is not None:
                delta = now - boot.io_start
                io_read, io_write = delta.read_bytes, delta.write_bytes
        faults, page_out = stats.fault_latency, stats.page_out_latency
        boot.report = BootReport(
            vm=self.name,
            kind=boot.kind,
            started_at=boot.started_at,
            boot_time=boot_time,
            baseline=baseline,
            slowdown=boot_time / baseline if baseline else None,
            startup_bytes=self._settings.startup,
            assigned_at_boot=boot.assigned_at_boot * guest.page_size,
            smart_paging=boot.smart_paging,
            page_ins=stats.page_ins,
            page_outs=stats.page_outs,
            bytes_read=stats.bytes_read,
            bytes_written=stats.bytes_written,
            fault_p50=faults.percentile(50) if faults.count else None,
            fault_p99=faults.percentile(99) if faults.count else None,
            page_out_p50=page_out.percentile(50) if page_out.count else None,
            page_out_p99=page_out.percentile(99) if page_out.count else None,
            smart_paging_peak_bytes=boot.peak_paged_out * guest.page_size,
            smart_paging_file_peak_size=boot.peak_file_size,
            smart_paging_seconds=0.0,
            smart_paging_ended=False,
            paging_dir=self.smart_paging_path,
            device=boot.device.counter_key if boot.device is not None else None,
            device_read_bytes=io_read,
            device_write_bytes=io_write,
            page_in_latency=stats.page_in_latency,
            fault_latency=faults,
        )
        guest.booted.set()
        with self._cv:
            self._cv.notify_all()
