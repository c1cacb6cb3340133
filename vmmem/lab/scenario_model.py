"""The scenario model: a host, its VMs and their workloads, and what happens to them (sizes in
bytes, validated). Made by the reader in `vmmem.lab.scenario`, or directly by library users."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from dataclasses import dataclass, field
from typing import Any

from vmmem.errors import SettingsError
from vmmem.hyperv.balancer import target_pages
from vmmem.hyperv.settings import (
    DEFAULT_PAGE_SIZE,
    MAXIMUM_RAM,
    MEMORY_ALIGNMENT,
    MINIMUM_RAM,
    VMSettings,
    validate_settings,
)
from vmmem.hyperv.workloads import IDLE_FRACTION, Workload

__all__ = [
    "Event",
    "Scenario",
    "ScenarioError",
    "VMSpec",
    "WorkloadSpec",
    "round_up",
    "scale_size",
]

# Hyper-V's rules, from the one place they are written (vmmem.hyperv.settings).
MIN_STARTUP = MINIMUM_RAM
MAX_MEMORY = MAXIMUM_RAM
ALIGN = MEMORY_ALIGNMENT


class ScenarioError(ValueError):
    """A scenario that cannot run: names the file, the key and what was expected."""

    def __init__(self, source: str, key: str, message: str):
        self.source = source
        self.key = key
        self.message = message
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(where + message)


@dataclass(frozen=True)
class WorkloadSpec:
    """What the guest does: boots (touching Startup RAM), then idles at ``idle_demand``.

    ``boot_seconds``: how long the boot takes with enough memory (the boot's CPU time, spread
    over its pages); None keeps the Hyper-V layer's default of 50 us per 4 KiB page (512 MB:
    about 6.6 s). ``idle_demand``: the guest's committed memory once idle; None keeps the
    default of 250/512 of Startup RAM (the article's 250 MB + 20 % = 300 MB).
    ``boot`` and ``idle``: further settings of the Boot and Idle phases (docs/HYPERV.md), e.g.
    ``hot_fraction`` or ``touch_interval``, passed on as they are.
    ``guest``: a recorded boot instead of the synthetic one: a shipped guest's name
    ("debian-12", "busybox"; `vmmem guests`) or a trace file; ``guest_ips`` its guest
    instructions per second (None: vmmem.guests.DEFAULT_GUEST_IPS). See docs/GUESTS.md.
    ``model``: a Windows model ("windows-model", "windows-model-zeroing") instead of the
    synthetic boot; docs/GUESTS.md, "The Windows model".
    """

    boot_seconds: float | None = None
    idle_demand: int | None = None
    boot: dict[str, Any] = field(default_factory=dict)
    idle: dict[str, Any] = field(default_factory=dict)
    guest: str | None = None
    guest_ips: float | None = None
    guest_scale: float = 1.0  # a recorded boot shrunk with the scenario (--scale)
    # A Windows model (vmmem.hyperv.workloads.WINDOWS_MODELS) instead of the synthetic boot;
    # ``boot`` and ``boot_seconds`` override its settings.
    model: str | None = None

    @property
    def guesses(self) -> list[str]:
        """What the boot's figures rest on that is still a guess ([] for a recorded guest)."""
        from vmmem.hyperv.workloads import WINDOWS_MODELS

        if self.guest is not None:
            return []
        if self.model is not None:
            return list(WINDOWS_MODELS[self.model].guesses)
        return (
            [] if self.boot_seconds is not None or "cpu_per_page" in self.boot else ["cpu_per_page"]
        )

    def phases(self) -> list[Workload]:
        """The Hyper-V layer's workload phases for this spec: the boot (recorded or
        synthetic), then idle. Raises SettingsError for settings a phase refuses."""
        return [self.boot_phase(), self.idle_phase()]

    def boot_phase(self) -> Workload:
        from vmmem.hyperv import Boot
        from vmmem.hyperv.recorded import RecordedBoot

        if self.guest is not None:
            kwargs: dict[str, Any] = {"guest": self.guest, "scale": self.guest_scale}
            if self.guest_ips is not None:
                kwargs["guest_ips"] = self.guest_ips
            return RecordedBoot(**kwargs)
        boot_kwargs = dict(self.boot)
        if self.boot_seconds is not None:
            boot_kwargs["cpu_time"] = self.boot_seconds
        if self.model is not None:
            from vmmem.hyperv.workloads import windows_model

            return windows_model(self.model, **boot_kwargs)
        return Boot(**boot_kwargs)

    def idle_phase(self) -> Workload:
        from vmmem.hyperv import Idle

        idle_kwargs = dict(self.idle)
        if self.idle_demand is not None:
            idle_kwargs["demand"] = self.idle_demand
        return Idle(**idle_kwargs)


@dataclass(frozen=True)
class VMSpec:
    """One VM's Dynamic Memory settings, as New-VM / Set-VMMemory take them (sizes in bytes)."""

    name: str
    startup: int
    minimum: int | None = None
    maximum: int | None = None
    buffer: int | None = None
    priority: int = 50
    dynamic: bool = True
    smart_paging_path: str | None = None
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    generation: int = 2
    automatic_stop_action: str = "Save"  # at a host reboot (Hyper-V's defaults)
    automatic_start_action: str = "StartIfRunning"
    automatic_start_delay: float = 0.0
    vhd_path: str | None = None  # the virtual disk's folder (None: the VM's folder)
    vhd_size: int | None = None  # bytes (None: sized by what the boot reads)
    processor_count: int = 1  # virtual processors (Set-VMProcessor -Count)

    # Effective values: what Hyper-V uses when a dynamic VM leaves a setting out, taken from
    # the Hyper-V layer's own validation so the defaults live in one place.
    @functools.cached_property
    def settings(self) -> VMSettings:
        return validate_settings(
            self.name,
            self.startup,
            self.minimum,
            self.maximum,
            self.buffer,
            self.priority,
            self.dynamic,
            self.smart_paging_path,
            **self.host_settings,
        )

    @property
    def host_settings(self) -> dict[str, Any]:
        """Generation, virtual processors and what the VM does at a host reboot, as
        Host.add_vm takes them."""
        return {
            "generation": self.generation,
            "processor_count": self.processor_count,
            "automatic_stop_action": self.automatic_stop_action,
            "automatic_start_action": self.automatic_start_action,
            "automatic_start_delay": self.automatic_start_delay,
            "vhd_path": self.vhd_path,
            "vhd_size": self.vhd_size,
        }

    @property
    def effective_minimum(self) -> int:
        """Minimum RAM; Hyper-V's default is 512 MB, or Startup RAM if that is less."""
        return self.settings.minimum

    @property
    def effective_maximum(self) -> int:
        """Maximum RAM; Hyper-V's default is 1 TB."""
        return self.settings.maximum

    @property
    def effective_buffer(self) -> int:
        return self.settings.buffer

    @property
    def idle_demand(self) -> int:
        """Committed memory once idle (a static VM holds Startup RAM whatever it does)."""
        if not self.dynamic:
            return self.startup
        if self.workload.idle_demand is not None:
            return self.workload.idle_demand
        return round_up(int(self.startup * IDLE_FRACTION), DEFAULT_PAGE_SIZE)

    @property
    def idle_target(self) -> int:
        """Where the balancer settles an idle VM on a roomy host: demand x (1 + buffer), clamped."""
        if not self.dynamic:
            return self.startup
        # The balancer's own target, in whole 2 MB blocks as it hands memory out.
        page = DEFAULT_PAGE_SIZE
        want = target_pages(
            self.idle_demand // page,
            self.effective_buffer,
            self.effective_minimum // page,
            self.effective_maximum // page,
        )
        return min(round_up(want * page, ALIGN), self.effective_maximum)


@dataclass(frozen=True)
class Event:
    """One step of a scenario. ``vms`` is empty for host-wide actions."""

    action: str
    vms: tuple[str, ...] = ()  # restart-vms: () means every running VM
    seconds: float | None = None  # idle: how long; settle: the timeout
    smart_paging_on_host_reboot: bool = False  # reboot-host: the seed article's reading

    def describe(self) -> str:
        names = ", ".join(self.vms)
        if self.action == "start":
            return f"start {names} one by one"
        if self.action == "idle":
            return f"idle {self.seconds:g} s"
        if self.action == "restart-vms":
            return f"restart {names or 'every running VM'} at once"
        if self.action == "restart":
            return f"restart {names} one after another"
        if self.action == "reboot-host":
            if self.smart_paging_on_host_reboot:
                return "reboot the host (as the seed article reads it: every VM restarts)"
            return "reboot the host (each VM's automatic stop and start actions)"
        return f"settle (up to {self.seconds:g} s)"


@dataclass(frozen=True)
class Scenario:
    """A whole scenario, validated. Sizes are bytes."""

    name: str
    host_memory: int
    vms: tuple[VMSpec, ...]
    events: tuple[Event, ...]
    host_reserve: int = 0
    smart_paging_path: str | None = None
    balancer_interval: float = 1.0
    # seconds after a restarted VM's guest boots before the host rebalances it
    # (vmmem.hyperv.rules.awaits_guest): Hyper-V's 50 s unless the scenario says otherwise
    balancer_start_delay: float = 50.0
    description: str = ""
    source: str = "<built-in: article>"
    scale: float = 1.0

    @property
    def available(self) -> int:
        """Memory the host can give to VMs: memory minus the reserve."""
        return self.host_memory - self.host_reserve

    def vm(self, name: str) -> VMSpec:
        for v in self.vms:
            if v.name == name:
                return v
        raise KeyError(name)

    def scaled(self, factor: float) -> Scenario:
        """Every size divided by ``factor`` and rounded to Hyper-V's rules (see scale_size).

        Boot times shrink by the same factor: a boot's CPU work is proportional to the memory
        it touches, so the share of the boot spent waiting on Smart Paging stays the same; so
        does the balancer's start delay after a restart. Idle and settle times are wall-clock
        waits and are kept.
        """
        if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor >= 1):
            raise ScenarioError(self.source, "--scale", f"expected a number >= 1, got {factor!r}")
        if factor == 1:
            return self
        vms = []
        for v in self.vms:
            w = v.workload
            startup = scale_size(v.startup, factor, floor=MIN_STARTUP)
            minimum = (
                None
                if v.minimum is None
                else min(scale_size(v.minimum, factor, floor=MIN_STARTUP), startup)
            )
            maximum = (
                None
                if v.maximum is None
                else max(scale_size(v.maximum, factor, floor=MIN_STARTUP), startup)
            )
            demand = None if w.idle_demand is None else scale_size(w.idle_demand, factor)
            boot = None if w.boot_seconds is None else w.boot_seconds / factor
            # A recorded boot shrinks with the VM: footprint, disk reads and CPU time.
            guest_scale = w.guest_scale * factor
            vhd = None if v.vhd_size is None else scale_size(v.vhd_size, factor)
            vms.append(
                dataclasses.replace(
                    v,
                    startup=startup,
                    minimum=minimum,
                    maximum=maximum,
                    workload=dataclasses.replace(
                        w, idle_demand=demand, boot_seconds=boot, guest_scale=guest_scale
                    ),
                    vhd_size=vhd,
                )
            )
        return dataclasses.replace(
            self,
            host_memory=scale_size(self.host_memory, factor),
            host_reserve=(scale_size(self.host_reserve, factor) if self.host_reserve else 0),
            vms=tuple(vms),
            scale=self.scale * factor,
            # the wait is measured in boots (the guest's driver loads late in one): it shrinks
            # with the boot times, so a scaled run keeps the same story in less time
            balancer_start_delay=self.balancer_start_delay / factor,
        )

    def with_paging_dir(self, path: str | os.PathLike[str]) -> Scenario:
        """Every VM's Smart Paging file in ``path`` (like Set-VM -SmartPagingFilePath on all)."""
        p = os.fspath(path)
        return dataclasses.replace(
            self,
            smart_paging_path=p,
            vms=tuple(dataclasses.replace(v, smart_paging_path=p) for v in self.vms),
        )

    def with_vhd_dir(self, path: str | os.PathLike[str]) -> Scenario:
        """Every VM's virtual disk in ``path`` (like New-VHD -Path for all)."""
        p = os.fspath(path)
        return dataclasses.replace(
            self, vms=tuple(dataclasses.replace(v, vhd_path=p) for v in self.vms)
        )

    def with_processors(self, count: int) -> Scenario:
        """Every VM with ``count`` virtual processors (like Set-VMProcessor -Count on all).
        SettingsError if a VM's generation allows fewer (64 for generation 1)."""
        from vmmem.hyperv.settings import check_processor_count

        for v in self.vms:
            try:
                check_processor_count(count, v.generation)
            except SettingsError as e:
                raise SettingsError(f"VM {v.name!r}: {e}") from None
        return dataclasses.replace(
            self,
            vms=tuple(dataclasses.replace(v, processor_count=count) for v in self.vms),
        )

    def with_guest(self, guest: str | None, guest_ips: float | None = None) -> Scenario:
        """Every VM boots the recorded guest ``guest`` (a shipped name or a trace file), shrunk
        by the scenario's scale as the rest of it is; a Windows model's name (WINDOWS_MODELS):
        that model; None: the synthetic boot."""
        from vmmem.hyperv.workloads import WINDOWS_MODELS

        model = guest if guest in WINDOWS_MODELS else None
        if model is not None:
            guest = None
        return dataclasses.replace(
            self,
            vms=tuple(
                dataclasses.replace(
                    v,
                    workload=dataclasses.replace(
                        v.workload,
                        guest=guest,
                        guest_ips=guest_ips,
                        guest_scale=self.scale,
                        model=model,
                    ),
                )
                for v in self.vms
            ),
        )

    def with_host_memory(self, memory: int) -> Scenario:
        return dataclasses.replace(self, host_memory=memory)

    def paging_dirs(self, default: str) -> dict[str, str]:
        """VM name -> the folder its Smart Paging file would live in."""
        out = {}
        for v in self.vms:
            out[v.name] = v.smart_paging_path or self.smart_paging_path or default
        return out

    def to_dict(self) -> dict[str, Any]:
        """The settings, for JSON reports (sizes in bytes)."""
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "scale": self.scale,
            "host": {
                "memory_bytes": self.host_memory,
                "reserve_bytes": self.host_reserve,
                "smart_paging_path": self.smart_paging_path,
                "balancer_interval": self.balancer_interval,
                "balancer_start_delay": self.balancer_start_delay,
            },
            "vms": [
                {
                    "name": v.name,
                    "startup_bytes": v.startup,
                    "minimum_bytes": v.minimum,
                    "maximum_bytes": v.maximum,
                    "buffer": v.buffer,
                    "priority": v.priority,
                    "dynamic": v.dynamic,
                    "smart_paging_path": v.smart_paging_path,
                    **v.host_settings,
                    "workload": {
                        "guest": v.workload.guest,
                        "guest_ips": v.workload.guest_ips,
                        "guest_scale": v.workload.guest_scale,
                        "boot_seconds": v.workload.boot_seconds,
                        "idle_demand_bytes": v.workload.idle_demand,
                        "boot": dict(v.workload.boot),
                        "idle": dict(v.workload.idle),
                        "model": v.workload.model,
                        "guesses": v.workload.guesses,
                    },
                }
                for v in self.vms
            ],
            "events": [
                {
                    "action": e.action,
                    "vms": list(e.vms),
                    "seconds": e.seconds,
                    "smart_paging_on_host_reboot": e.smart_paging_on_host_reboot,
                }
                for e in self.events
            ],
        }


def round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def scale_size(value: int, factor: float, floor: int = ALIGN) -> int:
    """``value / factor`` rounded to the nearest multiple of 2 MB, and at least ``floor``.

    Hyper-V's rules: whole MB, multiples of 2 MB; Startup and Minimum RAM at least 32 MB (pass
    floor=32 MB for those). Rounding to the nearest keeps ratios (4 x 512 MB on 1400 MB scaled by
    8 is 4 x 64 MB on 176 MB: 1.45 x oversubscribed either way).
    """
    scaled = value / factor
    rounded = int(round(scaled / ALIGN)) * ALIGN
    return max(rounded, floor)
