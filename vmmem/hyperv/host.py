"""A Hyper-V host: one pool of RAM for its VMs, the balancer, and the VMs' lifecycles.

The host applies Hyper-V's rules in real time and tells each VM what to do: who gets memory
(the pure `balancer.allocate`), whether a VM may start or be restored (`rules.admit`), whether
a restart boots on Smart Paging (`rules.smart_paging_gap`: only a running dynamic VM that
restarts short of Startup RAM, the host having no memory free and nothing more to reclaim),
and a host reboot's stops and starts (`rules.reboot_schedule`). It makes what a VM boots on
(its memory, its virtual disk) and hands it over; a VM never asks for them. A start from Off
that cannot get Startup RAM fails instead; a running VM that wants more just stays short.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import replace

from ..errors import NotEnoughMemoryError, SettingsError, VmmemError
from ..memory import FramePool, GuestMemory
from ..sizes import SizeLike, format_size, parse_size
from ..vdisk import VirtualDisk
from ..workspace import Workspace
from .balancer import BalancerThread, allocate
from .reboot import HostReboot
from .reports import BootReport, TimelineSample, VMStatus
from .rules import (
    DEFAULT_BALANCER_START_DELAY,
    RebootVM,
    admit,
    reboot_schedule,
    saves_at_shutdown,
    smart_paging_gap,
    start_need,
)
from .settings import (
    DEFAULT_PAGE_SIZE,
    MEMORY_ALIGNMENT,
    VMSettings,
    check_balancer_start_delay,
    check_host_arguments,
    validate_settings,
)
from .vm import VM
from .workloads import Workload, as_phases

__all__ = ["DEFAULT_FOLDER", "DEFAULT_PAGE_SIZE", "Host"]

DEFAULT_FOLDER = "vmmem-vms"  # under the current directory: on the local disk, visible


class Host:
    """A Hyper-V host with `memory` for VMs (less `reserve`, kept for the host itself).

    See docs/HYPERV.md. Use as a context manager, or call close(): it stops every thread and
    leaves no paging file behind.
    """

    def __init__(
        self,
        memory: SizeLike,
        reserve: SizeLike = 0,
        smart_paging_path: str | os.PathLike[str] | None = None,
        balancer_interval: float = 1.0,
        backend: str = "direct",
        page_size: int = DEFAULT_PAGE_SIZE,
        policy: str = "lru",
        balancer_start_delay: float = DEFAULT_BALANCER_START_DELAY,
    ) -> None:
        balancer_interval, backend, policy, smart_paging_path = check_host_arguments(
            balancer_interval, backend, policy, smart_paging_path
        )
        # Seconds after a restarted VM's guest boots before the host rebalances it
        # (rules.awaits_guest; 50 s as Hyper-V from Server 2016, 0: at once).
        self.balancer_start_delay = check_balancer_start_delay(balancer_start_delay)
        self.memory = parse_size(memory, "host memory")
        self.reserve = parse_size(reserve, "host reserve")
        if self.reserve < 0:
            raise SettingsError(f"the host reserve cannot be negative, got {reserve!r}")
        capacity = (self.memory - self.reserve) // MEMORY_ALIGNMENT * MEMORY_ALIGNMENT
        if capacity <= 0:
            raise SettingsError(
                f"host memory of {format_size(self.memory)} less a reserve of "
                f"{format_size(self.reserve)} leaves nothing for VMs (at least 2 MB needed)"
            )
        self.capacity = capacity
        self.backend = backend
        self.policy = policy
        self.balancer_interval = balancer_interval
        self.folder = os.path.abspath(smart_paging_path or DEFAULT_FOLDER)
        self.pool = FramePool(capacity, page_size)
        self.page_size = self.pool.page_size
        self._capacity_pages = capacity // self.page_size
        self._unit = max(1, MEMORY_ALIGNMENT // self.page_size)  # the 2 MB block, in pages
        self.lock = threading.RLock()
        self._vms: dict[str, VM] = {}
        self._timeline: list[TimelineSample] = []
        # What this host makes on disk (folders, lock files, paging files), and only that,
        # is what it deletes.
        self.workspace = Workspace()
        self._t0 = time.monotonic()
        self._closed = False
        self._reboot: HostReboot | None = None
        self._balancer = BalancerThread(self._tick, self.balancer_interval, "vmmem-balancer")
        self._balancer.start()

    def __repr__(self) -> str:
        return (
            f"Host({format_size(self.memory)}, reserve={format_size(self.reserve)}, "
            f"{len(self._vms)} VMs, folder={self.folder!r})"
        )

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def clock(self) -> float:
        """Seconds since the host was made: the time base of reports and the timeline."""
        return time.monotonic() - self._t0

    # -- VMs ---------------------------------------------------------------------------------

    @property
    def vms(self) -> dict[str, VM]:
        return dict(self._vms)

    def add_vm(
        self,
        name: str,
        startup: SizeLike,
        minimum: SizeLike | None = None,
        maximum: SizeLike | None = None,
        buffer: int | None = None,
        priority: int = 50,
        dynamic: bool = True,
        smart_paging_path: str | os.PathLike[str] | None = None,
        workload: Workload | Sequence[Workload] | None = None,
        *,
        generation: int = 2,
        automatic_stop_action: str = "Save",
        automatic_start_action: str = "StartIfRunning",
        automatic_start_delay: float = 0.0,
        vhd_path: str | os.PathLike[str] | None = None,
        vhd_size: SizeLike | None = None,
        processor_count: int = 1,
    ) -> VM:
        """A new VM, Off. Raises SettingsError (creating nothing) on a bad setting.

        The automatic stop and start actions and the start delay say what the VM does when the
        host reboots (`reboot`), as Set-VM's -AutomaticStopAction, -AutomaticStartAction and
        -AutomaticStartDelay do. `vhd_path` is the folder of the VM's virtual disk (default
        the VM's folder, as New-VHD -Path) and `vhd_size` its size (default: what the boot
        reads from, times four); the disk is created once and kept across runs.
        `processor_count` is its virtual processors (Set-VMProcessor -Count): its boot runs
        on that many guest threads (docs/GUESTS.md, "Replay")."""
        self._check_open()
        settings = validate_settings(
            name,
            startup,
            minimum,
            maximum,
            buffer,
            priority,
            dynamic,
            smart_paging_path,
            generation=generation,
            automatic_stop_action=automatic_stop_action,
            automatic_start_action=automatic_start_action,
            automatic_start_delay=automatic_start_delay,
            vhd_path=vhd_path,
            vhd_size=vhd_size,
            processor_count=processor_count,
        )
        phases = as_phases(workload)
        self.check_workload(settings, phases)
        with self.lock:
            if name in self._vms:
                raise SettingsError(f"a virtual machine named {name!r} already exists on this host")
            vm = VM(self, settings, phases)
            self._vms[name] = vm
            return vm

    def remove_vm(self, name: str) -> None:
        with self.lock:
            vm = self._vms.get(name)
            if vm is None:
                raise KeyError(name)
            if vm.state != "Off":
                raise VmmemError(f"turn the virtual machine {name!r} off before removing it")
            del self._vms[name]

    def check_workload(self, settings: VMSettings, phases: Sequence[Workload]) -> None:
        """Raise SettingsError if a workload phase cannot run in these settings."""
        for phase in phases:
            phase.validate_page_size(self.page_size)
            phase.validate(
                settings.startup // self.page_size,
                settings.maximum // self.page_size,
                settings.processor_count,
            )

    # -- lifecycle ---------------------------------------------------------------------------

    def start_vm(self, vm: VM) -> None:
        """Power `vm` on (`vm.start()` is this). From Off it needs its Startup RAM; a Saved VM
        is restored with the memory it had when saved. Either way NotEnoughMemoryError if the
        host cannot make that much available (`rules.admit`): neither ever uses Smart Paging."""
        with self.lock:
            self._check_open()
            if vm.state == "Running":
                raise VmmemError(f"the virtual machine {vm.name!r} is already running")
            self.check_workload(vm.settings, vm.workload)
            unit = self._unit
            restoring = vm.state == "Saved"
            startup = vm.settings.startup // self.page_size
            need = start_need(startup, vm.saved_pages if restoring else None)
            what = "its saved memory" if restoring else "Startup RAM"
            others = [v.claim(starting=True) for v in self._running() if v is not vm]
            # After reclaiming every buffer (others down to their floor), is it there?
            admission = admit(need, self._capacity_pages, others, unit)
            if not admission.admitted:
                raise NotEnoughMemoryError(
                    f"Not enough memory in the system to start the virtual machine "
                    f"'{vm.name}': it needs {format_size(need * self.page_size)} ({what}) and "
                    f"only {format_size(admission.available * self.page_size)} can be made "
                    f"available (host memory for VMs {format_size(self.capacity)}, "
                    f"reserve {format_size(self.reserve)}, other running VMs need "
                    f"{format_size(admission.held * self.page_size)}). A start from Off or from "
                    "a saved state never uses Smart Paging."
                )
            saved = vm.saved_pages
            self._power_on(vm, "restore" if restoring else "start", resume=restoring)
            try:
                # Hyper-V starts every VM with its Startup RAM (a restore with what it had),
                # whatever the guest then uses.
                own = vm.claim()
                own = replace(
                    own,
                    floor=max(own.floor, need),
                    need=max(own.need, need),
                    want=max(own.want, need),
                )
                claims = others + [own]
                self._apply(allocate(self._capacity_pages, claims, unit))
                if vm.assigned_pages < need:
                    raise NotEnoughMemoryError(
                        f"Not enough memory in the system to start the virtual machine "
                        f"'{vm.name}': only {format_size(vm.assigned_pages * self.page_size)} of "
                        f"the {format_size(need * self.page_size)} it needs ({what}) could be "
                        "freed from the other VMs"
                    )
            except BaseException:
                if restoring:
                    self._save(vm, saved)  # a restore that fails leaves the VM Saved
                else:
                    vm.power_off()
                self._remove_made_folders()
                raise
            if restoring:
                vm.restore(self.clock())
            else:
                vm.launch(self.clock())
            self._sample()

    def _power_on(
        self, vm: VM, kind: str, *, restarting: bool = False, resume: bool = False
    ) -> None:
        """Make what `vm` boots on and hand it over: its Smart Paging folder claimed, its
        virtual disk (made once, then reused), its memory (frame limit 0; a restore: its saved
        memory). `vm.power_on` then begins the boot."""
        folder = vm.smart_paging_path
        self.claim_folder(folder)
        disk = self._open_disk(vm)
        try:
            memory = vm.saved_memory if resume else None
            if memory is None:
                memory = GuestMemory(
                    self.pool,
                    vm.address_space,
                    frame_limit=0,
                    paging_dir=folder,
                    backend=self.backend,
                    policy=self.policy,
                    name=vm.name,
                )
                self.workspace.record_file(memory.paging_file.path)
        except BaseException:
            if disk is not None:
                disk.close()
            raise
        vm.power_on(
            kind,
            memory,
            disk,
            on_new_file=self.workspace.record_file,
            restarting=restarting,
            resume=resume,
        )

    def _open_disk(self, vm: VM) -> VirtualDisk | None:
        """The VM's virtual disk (created once, zero-filled, then reused by every boot and
        every run; vmmem never deletes it), or None when its workload reads no disk."""
        size = vm.vhd_size()
        if not size:
            return None
        self.claim_folder(vm.vhd_folder)
        return VirtualDisk(
            vm.vhd_file(size),
            size,
            on_create=self.workspace.record_new_disk,
            on_made=self.workspace.record_disk_made,
        )

    def _save(self, vm: VM, pages: int | None = None) -> None:
        """Save `vm` (automatic stop action Save): its guest stops; every page it holds is
        written to its saved-state file beside its other files (real writes; pages never
        written cost nothing) and its frames come back. A Smart Paging or page file in use
        already holds its share and stays. `pages`: see VM.save."""
        memory = vm.save(pages)
        if memory is None:
            return
        try:
            if not memory.paging_file.exists:
                folder = vm.vhd_folder
                self.claim_folder(folder)
                path = memory.move_paging_file(folder, f"{vm.name}-savedstate")
                self.workspace.record_file(path)
            memory.frame_limit = 0
        except BaseException:
            vm.power_off()  # no saved state could be written: the VM is off
            raise

    def resize_running(self, vm: VM, pages: int) -> None:
        """A running static VM's memory changed (Set-VMMemory -StartupBytes while it runs,
        Windows Server 2016 and later): more must be available from the host now, less must
        be memory the guest can give back (what it does not use)."""
        with self.lock:
            if pages > vm.assigned_pages:
                others = [v.claim(starting=True) for v in self._running() if v is not vm]
                admission = admit(pages, self._capacity_pages, others, self._unit)
                if not admission.admitted:
                    raise NotEnoughMemoryError(
                        f"Not enough memory in the system to resize the virtual machine "
                        f"'{vm.name}' to {format_size(pages * self.page_size)}: only "
                        f"{format_size(admission.available * self.page_size)} can be made "
                        "available"
                    )
                for v in self._running():  # reclaim the others' buffers first
                    if v is not vm:
                        v.set_assigned(max(v.claim().floor, 0))
            vm.set_assigned(pages)
            if vm.assigned_pages != pages:
                got = vm.assigned_pages
                raise SettingsError(
                    f"the virtual machine '{vm.name}' cannot give back that much memory: its "
                    f"guest uses {format_size(got * self.page_size)}, asked "
                    f"{format_size(pages * self.page_size)}"
                )
            self._sample()

    def stop_vm(self, vm: VM) -> None:
        """Turn `vm` off (VM.stop calls this): its memory goes back, its paging file goes."""
        with self.lock:
            if vm.state == "Off":
                return
            vm.power_off()
            self._sample()

    def restart_vms(self, names: Sequence[str] | None = None, *, kind: str = "restart") -> None:
        """Restart the named VMs (default: every running VM) at the same instant: one
        allocation divides what the host can give; a dynamic VM left short of Startup RAM
        boots on its Smart Paging file. `kind` labels the boots ("restart", "reset", ...)."""
        with self.lock:
            self._check_open()
            if names is None:
                vms = self._running()
            else:
                unknown = [n for n in names if n not in self._vms]
                if unknown:
                    raise VmmemError(f"no virtual machine named {unknown[0]!r} on this host")
                vms = [self._vms[n] for n in names]
            if not vms:
                return
            for vm in vms:
                if vm.state != "Running":
                    raise VmmemError(
                        f"the virtual machine {vm.name!r} is off: start it instead of restarting it"
                    )
            for vm in vms:
                vm.power_off()
            try:
                for vm in vms:
                    self._power_on(vm, kind, restarting=True)
                claims = [v.claim() for v in self._running()]
                self._apply(allocate(self._capacity_pages, claims, self._unit))
                for vm in vms:
                    gap = smart_paging_gap(
                        start_from="Running",
                        dynamic=vm.settings.dynamic,
                        boots=vm.boots,
                        startup=vm.settings.startup // self.page_size,
                        assigned=vm.assigned_pages,
                    )
                    vm.set_smart_paging(gap > 0)
            except BaseException:
                for vm in vms:
                    vm.power_off()
                raise
            started_at = self.clock()
            for vm in vms:
                vm.launch(started_at)
            self._sample()

    def restart(self) -> None:
        """Every running VM restarts at once: `restart_vms()` (the article's patch night)."""
        self.restart_vms(None)

    def reboot(self, *, smart_paging_on_host_reboot: bool = False) -> HostReboot:
        """Reboot the host as Hyper-V does: every running VM follows its automatic stop action
        (Save by default: saved with its memory; ShutDown or TurnOff: off), then, once the
        host is back, its automatic start action after its start delay (on a thread; the
        returned HostReboot's `wait()` waits for the starts). A saved VM is restored with the
        memory it had, a VM off needs its Startup RAM; a start that cannot get it fails with
        "Not enough memory in the system to start the virtual machine". Never Smart Paging.

        `smart_paging_on_host_reboot=True` is the seed article's reading instead: the running
        VMs restart at once and boot on Smart Paging where short (boots of kind
        "host-restart")."""
        if self._reboot is not None:
            self._reboot.cancel()  # outside the lock: its thread may be waiting for it
        with self.lock:
            self._check_open()
            running = self._running()
            if smart_paging_on_host_reboot:
                self.restart_vms(None, kind="host-restart")
                self._reboot = HostReboot.restarted(running, self.clock)
                return self._reboot
            vms = list(self._vms.values())
            schedule = reboot_schedule(
                [
                    RebootVM(
                        vm.name,
                        vm.settings.automatic_stop_action,
                        vm.settings.automatic_start_action,
                        vm.settings.automatic_start_delay,
                        vm.settings.priority,
                        running=vm.state == "Running",
                        saved=vm.state == "Saved",
                    )
                    for vm in vms
                ]
            )
            for vm in running:
                if saves_at_shutdown(vm.settings.automatic_stop_action):
                    self._save(vm)
                else:
                    vm.power_off()
            self._remove_made_folders()
            self._sample()
            self._reboot = HostReboot.automatic(vms, schedule, self.start_vm, self.clock)
            return self._reboot

    def start_all(self, timeout: float | None = None) -> list[BootReport]:
        """Start every Off VM one by one, as an admin brings a host up: each after the
        previous one has booted and settled (idle, ballooned down to demand + buffer).
        `timeout` applies to each VM's boot and settling."""
        reports = []
        for vm in list(self._vms.values()):
            if vm.state == "Off":
                self.start_vm(vm)
                reports.append(vm.wait_booted(timeout))
                self.wait_settled(timeout)
        return reports

    def wait_booted(self, timeout: float | None = None) -> list[BootReport]:
        """Wait until every running VM has finished its current boot."""
        deadline = None if timeout is None else time.monotonic() + timeout
        reports = []
        for vm in self._running():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            reports.append(vm.wait_booted(left))
        return reports

    def wait_settled(self, timeout: float | None = None) -> None:
        """Wait until every running VM has booted (or read its saved state back) and its
        guest has since waited once (`VM.steady`: an Idle phase has released down to its
        working set), no Smart Paging file is left, every dynamic VM's memory status is OK (its
        buffer is there) and the balancer has reached its targets (ballooning is over)."""
        self._check_open()  # a closed host has no VM running: "settled" would be a lie
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            running = self._running()
            for vm in running:
                vm.raise_if_failed()
            statuses = [vm.status for vm in running]
            if (
                all(vm.booted and not vm.restoring and vm.steady for vm in running)
                and all(
                    not st.smart_paging_file_in_use
                    and not vm.smart_paging_active
                    and st.memory_status in ("OK", "")
                    for vm, st in zip(running, statuses, strict=True)
                )
                and self._balanced()
            ):
                return
            if deadline is not None and time.monotonic() > deadline:
                detail = ", ".join(
                    f"{s.name}: {s.phase} {s.memory_status or '-'} {format_size(s.memory_assigned)}"
                    for s in statuses
                )
                raise TimeoutError(f"the host did not settle within {timeout} s ({detail})")
            time.sleep(min(0.05, self.balancer_interval / 2))

    # -- the balancer ------------------------------------------------------------------------

    def _running(self) -> list[VM]:
        return [vm for vm in self._vms.values() if vm.state == "Running"]

    def _apply(self, allocation: dict[str, int]) -> None:
        """Shrink first (ballooning frees frames), then grow within what is free, higher
        priority first: the pool never runs dry under a running guest."""
        running = [vm for vm in self._running() if vm.name in allocation]
        for vm in running:
            if allocation[vm.name] < vm.assigned_pages:
                vm.set_assigned(allocation[vm.name])
        free = self._capacity_pages - sum(vm.assigned_pages for vm in self._running())
        for vm in sorted(running, key=lambda v: -v.settings.priority):
            want = allocation[vm.name]
            if want > vm.assigned_pages and free > 0:
                before = vm.assigned_pages
                vm.set_assigned(min(want, before + free))
                free -= vm.assigned_pages - before

    def _balanced(self) -> bool:
        """Whether the balancer has reached its targets: a tick now would change nothing."""
        with self.lock:
            running = self._running()
            if not running:
                return True
            claims = [vm.claim() for vm in running]
            allocation = allocate(self._capacity_pages, claims, self._unit)
            return all(allocation[vm.name] == vm.assigned_pages for vm in running)

    def _tick(self) -> None:
        with self.lock:
            if self._closed:
                return
            running = self._running()
            if running:
                claims = [vm.claim() for vm in running]
                self._apply(allocate(self._capacity_pages, claims, self._unit))
            self._sample()

    def balance_now(self) -> None:
        """Run one balancer tick now (the balancer thread keeps ticking as well)."""
        self._check_open()
        self._tick()

    def _sample(self) -> None:
        self._timeline.append(
            TimelineSample(
                self.clock(), self.available_memory, tuple(vm.status for vm in self._vms.values())
            )
        )

    # -- what callers read -------------------------------------------------------------------

    @property
    def available_memory(self) -> int:
        """Bytes of the VMs' memory (memory - reserve) assigned to no VM now."""
        used = sum(vm.assigned_pages for vm in self._vms.values())
        return (self._capacity_pages - used) * self.page_size

    @property
    def status(self) -> list[VMStatus]:
        return [vm.status for vm in self._vms.values()]

    @property
    def timeline(self) -> list[TimelineSample]:
        """One sample per balancer tick (and per lifecycle change), oldest first."""
        with self.lock:
            return list(self._timeline)

    @property
    def balancer_error(self) -> BaseException | None:
        """The last exception a balancer tick raised, if any."""
        return self._balancer.last_error

    # -- folders and shutdown ----------------------------------------------------------------

    def claim_folder(self, folder: str) -> None:
        """Claim a Smart Paging folder for this host's run: made (0700) if missing, locked,
        with a manifest of what the run puts there."""
        self.workspace.claim(folder)

    def _remove_made_folders(self) -> None:
        """Release the folders no running or saved VM uses (its Smart Paging folder, its
        virtual disk's folder, where its page file or saved state may be): this run's files,
        lock file and the folders it made (if empty) go; nothing else is touched."""
        in_use = {
            os.path.abspath(folder)
            for vm in self._vms.values()
            if vm.state in ("Running", "Saved")
            for folder in (vm.smart_paging_path, vm.vhd_folder)
        }
        for folder in self.workspace.folders:
            if folder not in in_use:
                self.workspace.release(folder)

    @property
    def left_behind(self) -> list[str]:
        """Paging files of this host that were still on disk when their folder was released
        (the core deletes each on close, so this should stay empty); they were deleted."""
        return list(self.workspace.left_behind)

    def _check_open(self) -> None:
        if self._closed:
            raise VmmemError("this host is closed")

    def close(self) -> None:
        """Stop every VM and the balancer, delete every paging file, free the RAM."""
        if self._closed:
            return
        self._closed = True
        if self._reboot is not None:
            self._reboot.cancel()
        self._balancer.stop()
        with self.lock:
            errors = []
            for vm in self._vms.values():
                try:
                    vm.power_off()
                except Exception as exc:  # noqa: BLE001 - stop the others anyway
                    errors.append(exc)
            try:
                self.pool.close()
            finally:
                # Every folder goes, whatever failed above: a closed host holds no manifest.
                self.workspace.close()
        if errors:
            raise errors[0]
