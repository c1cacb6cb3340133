"""One virtual machine: its settings, its guest thread, its memory, its boots.

The host owns policy across VMs (who gets how much, when a start is refused, whether a restart
pages) and makes what each boot runs on (the guest's memory, the virtual disk): it tells the VM
(`power_on`, `set_assigned`, `set_smart_paging`, `launch`, `restore`, `save`, `power_off`), the
VM never asks. A VM owns its guest: a thread that runs the workload phases against its
GuestMemory, declares demand, and ends Smart Paging (drains the file) once the boot is over
and its memory holds its demand.

Locking: `Host._lock` serialises lifecycle changes and balancer ticks; `VM._lock` guards the
VM's bookkeeping (assigned, demand, Smart Paging state, the GuestMemory reference). The guest
thread never holds the host lock, and replays without holding the VM lock, so the balancer
can always get in between two chunks.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

import numpy as np

from .. import devices
from ..errors import VmmemError
from ..memory import GuestMemory
from ..sizes import MB, format_size
from ..validate import check_number
from ..vdisk import VirtualDisk
from .balancer import Claim, claim_for
from .reports import BootReport, VMStatus
from .rules import held_claim
from .session import BootRecord, GuestSession, Stopped
from .settings import (
    MAXIMUM_RAM_BY_GENERATION,
    VMSettings,
    change_settings,
    smart_paging_folder,
    vhd_file_name,
    vhd_size_for,
)
from .vm_settings import SettingsProperties
from .workloads import Workload, boot_phase_count


class HostServices(Protocol):
    """What a VM reads of its host, and the host calls behind the VM's convenience methods
    (`start`, `stop`, ...). The host decides a VM's boots and hands it what it boots on (its
    memory, its disk); the VM never asks the host for them (and this module never imports the
    host)."""

    lock: threading.RLock
    page_size: int
    folder: str
    balancer_interval: float
    balancer_start_delay: float

    def start_vm(self, vm: VM) -> None: ...

    def stop_vm(self, vm: VM) -> None: ...

    def resize_running(self, vm: VM, pages: int) -> None: ...

    def restart_vms(self, names: Sequence[str] | None = None, *, kind: str = ...) -> None: ...

    def check_workload(self, settings: VMSettings, phases: Sequence[Workload]) -> None: ...


__all__ = ["VM", "HostServices"]


class VM(SettingsProperties):
    """A Hyper-V virtual machine with Dynamic Memory. Made by `Host.add_vm`."""

    def __init__(
        self, host: HostServices, settings: VMSettings, phases: Sequence[Workload]
    ) -> None:
        self._host = host
        self._settings = settings
        self._phases = tuple(phases)
        self._lock = threading.RLock()
        self._cv = threading.Condition(self._lock)
        self._state = "Off"
        self._phase = "off"
        self._session: GuestSession | None = None  # the current boot, while Running
        self._saved_pages = 0  # assigned memory when saved (state "Saved")
        # While Saved: the guest's memory, every page of it written to its saved-state file,
        # and which pages it had committed (its demand goes on from there at the restore).
        self._saved_memory: GuestMemory | None = None
        self._saved_committed: np.ndarray | None = None
        self._boots: list[BootRecord] = []
        self._baseline_given: float | None = None
        self._baseline_measured: float | None = None
        self.error: BaseException | None = None

    def __repr__(self) -> str:
        s = self._settings
        return (
            f"VM({s.name!r}, {self._state}, startup={format_size(s.startup)}, "
            f"assigned={format_size(self.assigned_pages * self._host.page_size)})"
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

    def _host_folder(self) -> str:
        return self._host.folder

    def _change(self, **changes: object) -> None:
        """Apply a setting change with Hyper-V's rules (settings.change_settings); a running
        static VM's new Startup RAM is assigned by the host first (Host.resize_running)."""
        with self._host.lock:
            [(key, value)] = changes.items()
            running = self._state == "Running"
            new_settings = change_settings(self._settings, key, value, running=running)
            self._host.check_workload(new_settings, self._phases)
            if running and new_settings.startup != self._settings.startup:
                self._host.resize_running(self, new_settings.startup // self._host.page_size)
            self._settings = new_settings

    @property
    def address_space(self) -> int:
        """Guest-physical memory: Maximum RAM for a dynamic VM; for a static VM as much as its
        generation allows, so a runtime resize can grow it (untouched pages cost nothing)."""
        if self._settings.dynamic:
            return self._settings.maximum
        limit = MAXIMUM_RAM_BY_GENERATION[self._settings.generation]
        return min(limit, (2**32 - 2) * self._host.page_size // MB * MB)

    # -- lifecycle (the host does the memory policy) -----------------------------------------

    @property
    def state(self) -> str:
        """ "Off", "Running" or "Saved", as Get-VM shows it."""
        return self._state

    @property
    def phase(self) -> str:
        return self._phase

    @property
    def memory(self) -> GuestMemory | None:
        """The guest's memory of the current boot (read its stats; do not drive it); None
        once it is closed. A stop may close it right after this returns: readers not holding
        the VM's lock must expect that."""
        with self._lock:
            session = self._live_session()
        return None if session is None else session.memory

    def start(self) -> None:
        """Power on from Off (or restore from Saved): `Host.start_vm(vm)`, which decides.
        Raises NotEnoughMemoryError if Startup RAM (the saved memory) cannot be had."""
        self._host.start_vm(self)

    def stop(self) -> None:
        """Turn the VM off: its memory goes back to the host, any paging file is deleted."""
        self._host.stop_vm(self)

    def restart(self) -> None:
        """Restart the guest: the boot runs again, on Smart Paging if the host is short."""
        self._host.restart_vms([self.name], kind="restart")

    def reset(self) -> None:
        """Hard reset: like restart, without the guest's say."""
        self._host.restart_vms([self.name], kind="reset")

    @property
    def booted(self) -> bool:
        guest = self._session
        return guest is not None and guest.booted.is_set() and self._state == "Running"

    def wait_booted(self, timeout: float | None = None) -> BootReport:
        """Wait until the current boot completes; returns its report."""
        guest = self._session
        if guest is None:
            self.raise_if_failed()
            raise VmmemError(f"the virtual machine {self.name!r} is off: start it first")
        if not guest.booted.wait(timeout):
            raise TimeoutError(f"{self.name!r} did not finish booting within {timeout} s")
        self.raise_if_failed()
        report = self.boot_report
        assert report is not None
        return report

    def wait_smart_paging_off(self, timeout: float | None = None) -> BootReport:
        """Wait until the last boot's Smart Paging file is gone; returns the final report."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.wait_booted(timeout)
        with self._cv:
            while self.smart_paging_active and self._state == "Running":
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(
                        f"{self.name!r} still uses its Smart Paging file after {timeout} s"
                    )
                self._cv.wait(0.05 if left is None else min(0.05, left))
        self.raise_if_failed()
        report = self.boot_report
        assert report is not None
        return report

    def raise_if_failed(self) -> None:
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

    def _report_of(self, boot: BootRecord) -> BootReport | None:
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
            and self.smart_paging_active
            and self._state == "Running"
        ):
            ended = False
        return replace(
            boot.report,
            smart_paging_peak_bytes=boot.peak_paged_out * self._host.page_size,
            smart_paging_file_peak_size=boot.peak_file_size,
            smart_paging_seconds=seconds,
            smart_paging_ended=ended,
            page_ins_after_boot=boot.page_ins_after_boot,
        )

    # -- status ------------------------------------------------------------------------------

    @property
    def status(self) -> VMStatus:
        """Memory as Get-VM shows it."""
        s = self._settings
        with self._lock:
            session = self._live_session()
            if self._state != "Running" or session is None:
                return VMStatus(
                    s.name, self._state, self._phase, 0, 0, s.startup, 0.0, "", False, None, 0, 0
                )
            return session.status(s, self._phase, self.smart_paging_path)

    # -- what the host calls (with its lock held) ----------------------------------------------
    # The host decides; these carry its decisions out on this VM's current boot.

    @property
    def assigned_pages(self) -> int:
        """Pages of host memory assigned now (the guest's frame limit); 0 while Off."""
        session = self._session
        return 0 if session is None else session.assigned

    @property
    def restoring(self) -> bool:
        """A restore is still reading this VM's saved state back."""
        session = self._session
        return session is not None and session.file_role == "saved"

    @property
    def steady(self) -> bool:
        """The guest has waited at least once since its boot (or its restore) ended: what its
        phase after the boot does first (Idle: release down to its working set) is done."""
        session = self._session
        return session is not None and session.steady.is_set()

    @property
    def smart_paging_active(self) -> bool:
        """This boot may use (or still drains) its Smart Paging file."""
        session = self._session
        return session is not None and session.smart_paging

    def _live_session(self) -> GuestSession | None:
        """The current boot, or None once its memory is closed. A stop closes the memory
        (under this lock) before it detaches the session (under it again): a reader in
        between, the balancer or a status poll, must see the VM as off. Call with the lock."""
        session = self._session
        return None if session is None or session.memory.closed else session

    @property
    def _soft(self) -> bool:
        """May the host hold this VM below what it uses (paging to its file)? Only while it
        restarts on Smart Paging, until its boot completes. After the boot a leftover file only
        shrinks: the VM is never taken below its demand again, and drains when it can."""
        session = self._session
        if session is None:
            return False
        booting = not session.booted.is_set()
        return session.restarting or (session.smart_paging and booting)

    def claim(self, *, starting: bool = False) -> Claim:
        """This VM's claim on host memory for the balancer (pages). `starting`: the claim as a
        VM starting from Off sees it (it never takes memory from a VM booting on its file)."""
        s = self._settings
        ps = self._host.page_size
        with self._lock:
            session = self._live_session()
            soft = self._soft and session is not None
            resident = 0
            if not soft and session is not None:
                resident = session.memory.counters["resident"]
            assigned = 0 if session is None else session.assigned
            claim = claim_for(
                s.name,
                demand=0 if session is None else session.demand,
                minimum=s.minimum // ps,
                maximum=s.maximum // ps,
                buffer=s.buffer,
                priority=s.priority,
                assigned=assigned,
                dynamic=s.dynamic,
                startup=s.startup // ps,
                smart_paging=soft,
                resident=resident,
            )
            if soft and starting:
                claim = replace(claim, floor=assigned)
            if session is not None and session.held():
                claim = held_claim(claim, assigned)  # no Dynamic Memory request yet
            return claim

    def set_assigned(self, pages: int) -> None:
        """Set the guest's frame limit. A VM not on Smart Paging is never taken below what it
        uses, so lowering its limit is pure ballooning: free pages only, no disk I/O."""
        with self._lock:
            session = self._live_session()
            if session is None:
                return
            memory = session.memory
            if pages < session.assigned and not self._soft:
                pages = max(pages, session.demand, memory.counters["resident"])
            if pages == session.assigned:
                return
            try:
                memory.frame_limit = pages
            finally:
                session.assigned = memory.frame_limit
            self._cv.notify_all()

    def power_on(
        self,
        kind: str,
        memory: GuestMemory,
        disk: VirtualDisk | None,
        *,
        on_new_file: Callable[[str], None],
        restarting: bool = False,
        resume: bool = False,
    ) -> None:
        """Begin a boot on the `memory` (frame limit 0, or the saved memory for a restore) and
        `disk` the host made for it. The host then assigns memory and calls `launch` (or
        `restore`). `restarting`: the host is dividing memory for a restart (the VM may be
        given less than Startup RAM); `on_new_file` is told of each file the boot makes."""
        if resume and memory is self._saved_memory:
            self._saved_memory = None  # read back by the restore
        startup_pages = self._settings.startup // memory.page_size
        session = GuestSession(
            memory,
            BootRecord(kind=kind),
            startup_pages,
            self._lock,
            self._cv,
            disk,
            # The guest's own page file lives on its virtual disk (none: it waits instead).
            guest_page_folder=self.vhd_folder if disk is not None else None,
            on_new_file=on_new_file,
            processors=self._settings.processor_count,
        )
        session.restarting = restarting
        session.restarted = restarting
        session.start_delay = self._host.balancer_start_delay
        with self._lock:
            self.error = None
            self._session = session
            self._state = "Running"
            self._phase = "boot"
            # The guest boots into its Startup RAM: that is its demand from the first moment.
            # A restore resumes after the boot with the demand it had, and is restoring
            # (Hyper-V's status "Restoring") until its saved state is read back.
            nboot = boot_phase_count(self._phases)
            if resume:
                self._phase = "restoring"
                session.file_role = "saved"
                if self._saved_committed is not None:  # the demand it had when saved
                    session.committed = self._saved_committed
                    session.demand = int(np.count_nonzero(self._saved_committed))
            elif nboot:
                session.commit_range(0, startup_pages)
            else:
                self._phase = self._phases[0].phase

    @property
    def boots(self) -> bool:
        """Whether the workload boots at all (has boot phases)."""
        return boot_phase_count(self._phases) > 0

    @property
    def vhd_folder(self) -> str:
        """The folder of the VM's virtual disk: its own setting, else the VM's folder (as
        New-VHD puts it beside the VM's files)."""
        return smart_paging_folder(self._host.folder, self.name, self._settings.vhd_path)

    def vhd_size(self, startup_pages: int | None = None, page_size: int | None = None) -> int:
        """The virtual disk's size: the setting, else what the workload reads from (0: no disk)."""
        ps = page_size or self._host.page_size
        pages = startup_pages or self._settings.startup // ps
        return vhd_size_for(self._settings, self._phases, ps, pages)

    def vhd_file(self, size: int) -> str:
        """The virtual disk's file: its size is in the name, so runs at other sizes (--scale)
        each keep their own disk and reuse it."""
        return os.path.join(self.vhd_folder, vhd_file_name(self.name, size))

    @property
    def saved_memory(self) -> GuestMemory | None:
        """While Saved: the guest's memory, every page of it in its saved-state file (what a
        restore boots on)."""
        return self._saved_memory

    def set_smart_paging(self, on: bool) -> None:
        """The host has divided memory for this restart and decided (rules.smart_paging_gap)
        whether the boot pages to a Smart Paging file."""
        with self._lock:
            session = self._session
            if session is None:
                return
            session.restarting = False
            session.smart_paging = on

    def save(self, pages: int | None = None) -> GuestMemory | None:
        """Save the VM (the host's automatic stop action Save): its guest stops where it is;
        returns its memory, which the host writes to the saved-state file and takes its frames
        back from; a restore brings it back with the memory it had (`pages`: what to record
        instead, for a restore that failed and leaves it Saved)."""
        session = self._session
        assigned = 0 if session is None else session.assigned
        self._saved_pages = assigned if pages is None else pages
        if session is not None:
            self._saved_committed = session.committed.copy()
            self._end_session(session, keep_memory=True)
            self._saved_memory = session.memory
        with self._lock:
            self._state = "Saved"
            self._phase = "saved"
        return None if session is None else session.memory

    @property
    def saved_pages(self) -> int:
        """Pages assigned when the VM was saved (what a restore needs); 0 unless Saved."""
        return self._saved_pages if self._state == "Saved" else 0

    def restore(self, started_at: float) -> None:
        """Resume a Saved VM on the memory the host has assigned (the host checked it fits):
        the guest goes on after its boot (no boot, no Smart Paging)."""
        session = self._session
        assert session is not None and self._state == "Running"
        session.booted.set()
        self._saved_pages = 0
        session.thread = threading.Thread(
            target=self._guest_main, args=(session, True), name=f"vm-{self.name}", daemon=True
        )
        session.thread.start()

    def launch(self, started_at: float) -> None:
        """Start the guest thread on the memory the host has assigned."""
        session = self._session
        assert session is not None
        boot = session.record
        boot.started_at = started_at
        boot.assigned_at_boot = session.assigned
        boot.smart_paging = session.smart_paging
        try:
            boot.device = devices.device_for_path(self.smart_paging_path)
            boot.io_start = devices.io_counters(boot.device)
        except Exception:  # device facts are advisory: never block a boot on them
            boot.device, boot.io_start = None, None
        boot.t0 = time.monotonic()
        for clock in session.clocks:  # one per virtual processor
            clock.start(boot.t0)
        self._boots.append(boot)
        session.thread = threading.Thread(
            target=self._guest_main, args=(session,), name=f"vm-{self.name}", daemon=True
        )
        session.thread.start()

    def power_off(self) -> None:
        """Stop the guest thread and free its memory (deletes any paging file); a Saved VM's
        saved state is discarded."""
        self._end_session(self._session)
        saved, self._saved_memory = self._saved_memory, None
        if saved is not None:
            saved.close()  # deletes the saved-state file

    def _end_session(
        self,
        session: GuestSession | None,
        error: BaseException | None = None,
        keep_memory: bool = False,
    ) -> None:
        """The one teardown: a power-off, a guest that failed (`error`), or a Save
        (`keep_memory`)."""
        if session is not None:
            session.close(keep_memory=keep_memory)
        with self._lock:
            if self._session is not session:
                return
            if error is not None:
                self.error = error
                self._phase = "failed"
            self._session = None
            self._state = "Off"
            if self._phase != "failed":
                self._phase = "off"
            self._cv.notify_all()

    # -- the guest thread --------------------------------------------------------------------

    def _guest_main(self, guest: GuestSession, resume: bool = False) -> None:
        """Run the workload phases; `resume`: a restore from a saved state, which continues
        after the boot phases (no boot runs, so no boot report)."""
        try:
            nboot = boot_phase_count(self._phases)
            if resume:
                guest.booted.set()
                guest.read_saved_state()
            elif nboot == 0:
                self._boot_complete(guest)
            for index, phase in enumerate(self._phases):
                if resume and index < nboot:
                    continue
                self._phase = phase.phase
                phase.run(guest)
                if index == nboot - 1 and not resume:
                    self._boot_complete(guest)
            self._phase = "done"
            while True:
                guest.end_smart_paging()
                guest.sleep(self._host.balancer_interval)
        except Stopped:
            return
        except BaseException as exc:  # noqa: BLE001 - a failed guest turns the VM off
            if guest.stop.is_set() and guest.failure is None:
                return  # its memory was closed under it by a stop or restart
            self._guest_failed(guest, exc)

    def _guest_failed(self, guest: GuestSession, exc: BaseException) -> None:
        """A failed guest turns the VM off; its memory (and paging file) goes, waiters wake."""
        guest.stop.set()
        self._end_session(guest, error=exc)
        guest.booted.set()  # wake waiters: they see the error

    def _boot_complete(self, guest: GuestSession) -> None:
        # The guest's time, not the emulator's (clock.py): the latest virtual processor's.
        boot_time, _, _ = guest.stop_clocks()
        guest.record.page_ins_at_boot = guest.memory.counters["page_ins"]
        guest.booted_at = time.monotonic()  # the host's start delay counts from here
        if not guest.record.smart_paging:
            self._baseline_measured = boot_time
        guest.record.report = guest.make_report(
            self.name, self._settings.startup, self.smart_paging_path, boot_time, self.baseline
        )
        guest.booted.set()
        with self._cv:
            self._cv.notify_all()
