"""Dynamic Memory settings of one VM, validated the way Hyper-V validates them.

Rules (docs/HYPERV-RULES.md section 2): sizes are whole MB and multiples of 2 MB; Startup RAM
>= 32 MB; Minimum 32 MB .. Startup; Maximum Startup .. 12 TB; Buffer 5 .. 2000 %; Priority
0 .. 100; Minimum, Maximum and Buffer are refused for a static VM; virtual processors 1 .. 240
(generation 2) or 1 .. 64 (generation 1). Messages name the PowerShell parameter so a Hyper-V
admin recognises them.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import SettingsError
from ..memory import BACKENDS, POLICIES
from ..sizes import MB, TB, SizeLike, format_size, parse_size
from ..validate import check_choice, check_name, check_number, check_path

if TYPE_CHECKING:
    from .workloads import Workload

__all__ = [
    "DEFAULT_BUFFER",
    "DEFAULT_GENERATION",
    "DEFAULT_MAXIMUM",
    "DEFAULT_MINIMUM",
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_PRIORITY",
    "MAXIMUM_RAM",
    "MEMORY_ALIGNMENT",
    "MAXIMUM_RAM_BY_GENERATION",
    "MAXIMUM_PROCESSORS_BY_GENERATION",
    "MINIMUM_RAM",
    "START_ACTIONS",
    "STOP_ACTIONS",
    "VMSettings",
    "check_balancer_start_delay",
    "check_host_arguments",
    "check_processor_count",
    "DEFAULT_PROCESSOR_COUNT",
    "change_settings",
    "vhd_file_name",
    "vhd_size_for",
    "check_size",
    "smart_paging_folder",
    "validate_settings",
]

MINIMUM_RAM = 32 * MB  # the smallest Startup or Minimum RAM Hyper-V accepts
MAXIMUM_RAM = 12 * TB  # generation 2 VMs, Windows Server 2016+
MAXIMUM_RAM_BY_GENERATION = {1: 1 * TB, 2: MAXIMUM_RAM}  # generation 1 VMs: 1 TB
DEFAULT_GENERATION = 2
# Virtual processors per VM (Set-VMProcessor -Count): New-VM gives a VM one; at most 240 for a
# generation 2 VM and 64 for generation 1 ("Plan for Hyper-V scalability in Windows Server",
# Microsoft Learn, maximums for virtual machines).
DEFAULT_PROCESSOR_COUNT = 1
MAXIMUM_PROCESSORS_BY_GENERATION = {1: 64, 2: 240}
# What a VM does when its host shuts down, and when the host starts again (Set-VM
# -AutomaticStopAction / -AutomaticStartAction / -AutomaticStartDelay), Hyper-V's defaults first.
STOP_ACTIONS = ("Save", "ShutDown", "TurnOff")
START_ACTIONS = ("StartIfRunning", "Start", "Nothing")
MAX_START_DELAY = 86400  # seconds; Hyper-V takes an int32 but a day is plenty here
MEMORY_ALIGNMENT = 2 * MB  # "not properly aligned" otherwise
# The host's page (x86-64's 4 KiB): Host(page_size=...) takes others; code without a host at
# hand (the planner, a scenario's sizes, the disk checks) counts in this one.
DEFAULT_PAGE_SIZE = 4096
DEFAULT_MINIMUM = 512 * MB  # Hyper-V's default Minimum RAM (capped at Startup)
DEFAULT_MAXIMUM = 1 * TB  # Hyper-V's default Maximum RAM (1048576 MB)
DEFAULT_BUFFER = 20
DEFAULT_PRIORITY = 50

# The PowerShell names a Hyper-V admin knows each setting by.
PS_NAMES = {
    "startup": "-StartupBytes",
    "minimum": "-MinimumBytes",
    "maximum": "-MaximumBytes",
    "buffer": "-Buffer",
    "priority": "-Priority",
    "dynamic": "-DynamicMemoryEnabled",
    "smart_paging_path": "-SmartPagingFilePath",
    "generation": "-Generation",
    "processor_count": "Set-VMProcessor -Count",
    "automatic_stop_action": "-AutomaticStopAction",
    "automatic_start_action": "-AutomaticStartAction",
    "automatic_start_delay": "-AutomaticStartDelay",
    "vhd_path": "-Path (New-VHD)",
    "vhd_size": "-SizeBytes (New-VHD)",
}
_TITLES = {
    "startup": "Startup RAM",
    "minimum": "Minimum RAM",
    "maximum": "Maximum RAM",
    "buffer": "Memory buffer",
    "priority": "Memory weight (priority)",
    "generation": "Generation",
    "processor_count": "Virtual processors",
    "automatic_stop_action": "Automatic stop action",
    "automatic_start_action": "Automatic start action",
    "automatic_start_delay": "Automatic start delay",
    "vhd_path": "Virtual disk folder",
    "vhd_size": "Virtual disk size",
}


def smart_paging_folder(
    host_folder: str | os.PathLike[str], vm_name: str, smart_paging_path: str | None
) -> str:
    """A VM's Smart Paging folder: its own setting, else its folder under the host's (as
    Hyper-V keeps the file with the VM's other files). Absolute."""
    return os.path.abspath(smart_paging_path or os.path.join(os.fspath(host_folder), vm_name))


def vhd_file_name(vm_name: str, size: int) -> str:
    """A VM's virtual-disk file name: its size is in the name, so runs at other sizes
    (--scale) each keep their own disk and reuse it."""
    return f"{vm_name}-{size // MB}MB.vmdisk"


def vhd_size_for(
    settings: VMSettings, phases: Sequence[Workload], page_size: int, startup_pages: int
) -> int:
    """A VM's virtual-disk size: its setting, else four times what its workload reads
    (each phase's disk_size_hint); 0: it reads no disk, and has none."""
    if settings.vhd_size is not None:
        return settings.vhd_size
    return max((p.disk_size_hint(startup_pages, page_size) for p in phases), default=0)


@dataclass(frozen=True)
class VMSettings:
    """A VM's memory settings, checked. Sizes in bytes; buffer in percent.

    For a static VM (dynamic=False) minimum == maximum == startup and buffer == 0.
    """

    name: str
    startup: int
    minimum: int
    maximum: int
    buffer: int
    priority: int
    dynamic: bool
    smart_paging_path: str | None
    generation: int = DEFAULT_GENERATION
    automatic_stop_action: str = "Save"
    automatic_start_action: str = "StartIfRunning"
    automatic_start_delay: float = 0.0  # seconds after the host starts
    vhd_path: str | None = None  # the virtual disk's folder (None: the VM's own folder)
    vhd_size: int | None = None  # bytes (None: sized by what the boot reads)
    processor_count: int = DEFAULT_PROCESSOR_COUNT  # virtual processors: guest threads

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _label(key: str) -> str:
    return f"{_TITLES[key]} ({PS_NAMES[key]})"


def check_size(key: str, value: SizeLike) -> int:
    """Bytes of a memory setting: whole MB and a multiple of 2 MB, as Hyper-V requires."""
    nbytes = parse_size(value, _label(key))
    if nbytes <= 0:
        raise SettingsError(f"{_label(key)} must be positive, got {value!r}")
    if nbytes % MB:
        raise SettingsError(
            f"{_label(key)} of {value!r} ({nbytes} bytes) is not a whole number of MB: "
            "memory sizes are given in MB and must be multiples of 2 MB"
        )
    if nbytes % MEMORY_ALIGNMENT:
        raise SettingsError(
            f"{_label(key)} of {nbytes // MB} MB is not properly aligned: "
            "memory sizes must be multiples of 2 MB"
        )
    return nbytes


def _check_int(key: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(
            f"{_label(key)} must be a whole number from {low} to {high}, got {value!r}"
        )
    if not low <= value <= high:
        raise SettingsError(
            f"{_label(key)} of {value} is out of range: it must be from {low} to {high}"
        )
    return value


def validate_settings(
    name: str,
    startup: SizeLike,
    minimum: SizeLike | None = None,
    maximum: SizeLike | None = None,
    buffer: int | None = None,
    priority: int = DEFAULT_PRIORITY,
    dynamic: bool = True,
    smart_paging_path: str | os.PathLike[str] | None = None,
    *,
    generation: int = DEFAULT_GENERATION,
    automatic_stop_action: str = "Save",
    automatic_start_action: str = "StartIfRunning",
    automatic_start_delay: float = 0.0,
    vhd_path: str | os.PathLike[str] | None = None,
    vhd_size: SizeLike | None = None,
    processor_count: int = DEFAULT_PROCESSOR_COUNT,
) -> VMSettings:
    """Check a VM's settings as New-VM / Set-VMMemory / Set-VMProcessor would; return them in
    bytes.

    None means "not given": Minimum defaults to 512 MB (or Startup if less), Maximum to 1 TB,
    Buffer to 20 % (Hyper-V's defaults). Maximum RAM is at most 12 TB for a generation 2 VM
    and 1 TB for generation 1; virtual processors at most 240 and 64. Raises SettingsError
    saying what is wrong.
    """
    check_name("the VM name", name)
    if any(c in name for c in '/\\:*?"<>|') or name in (".", ".."):
        raise SettingsError(
            f"the VM name {name!r} cannot be used: it names the VM's folder, so it may not "
            'contain / \\ : * ? " < > |'
        )
    if not isinstance(dynamic, bool):
        raise SettingsError(f"{PS_NAMES['dynamic']} must be True or False, got {dynamic!r}")
    gen = _check_int("generation", generation, 1, 2)
    max_ram = MAXIMUM_RAM_BY_GENERATION[gen]
    processors = check_processor_count(processor_count, gen)
    host_actions = _check_host_actions(
        automatic_stop_action, automatic_start_action, automatic_start_delay
    )
    disk = _check_disk(vhd_path, vhd_size)
    startup_b = check_size("startup", startup)
    if startup_b < MINIMUM_RAM:
        raise SettingsError(
            f"{_label('startup')} of {format_size(startup_b)} is too small: "
            f"it must be at least {MINIMUM_RAM // MB} MB"
        )
    if startup_b > max_ram:
        raise SettingsError(
            f"{_label('startup')} of {format_size(startup_b)} is too large: "
            f"it must be at most {max_ram // MB} MB ({format_size(max_ram)}) for a "
            f"generation {gen} VM"
        )
    priority_v = _check_int("priority", priority, 0, 100)
    path = check_path(PS_NAMES["smart_paging_path"], smart_paging_path, allow_none=True)

    if not dynamic:
        given = [
            key
            for key, v in (("minimum", minimum), ("maximum", maximum), ("buffer", buffer))
            if v is not None
        ]
        if given:
            names = ", ".join(PS_NAMES[k] for k in given)
            raise SettingsError(
                f"{names} cannot be set for {name!r}: Dynamic Memory is off "
                f"({PS_NAMES['dynamic']} $false), so the VM always has its Startup RAM. "
                "Turn Dynamic Memory on, or leave them out"
            )
        return VMSettings(
            name,
            startup_b,
            startup_b,
            startup_b,
            0,
            priority_v,
            False,
            path,
            gen,
            *host_actions,
            *disk,
            processors,
        )

    minimum_b = (
        min(DEFAULT_MINIMUM, startup_b) if minimum is None else check_size("minimum", minimum)
    )
    maximum_b = (
        max(DEFAULT_MAXIMUM, startup_b) if maximum is None else check_size("maximum", maximum)
    )
    buffer_v = DEFAULT_BUFFER if buffer is None else _check_int("buffer", buffer, 5, 2000)
    if minimum_b < MINIMUM_RAM:
        raise SettingsError(
            f"{_label('minimum')} of {format_size(minimum_b)} is too small: "
            f"it must be at least {MINIMUM_RAM // MB} MB"
        )
    if minimum_b > startup_b:
        raise SettingsError(
            f"{_label('minimum')} of {format_size(minimum_b)} is larger than "
            f"{_label('startup')} of {format_size(startup_b)}: Minimum RAM must not exceed "
            "Startup RAM"
        )
    if maximum_b < startup_b:
        raise SettingsError(
            f"{_label('maximum')} of {format_size(maximum_b)} is smaller than "
            f"{_label('startup')} of {format_size(startup_b)}: Maximum RAM must be at least "
            "Startup RAM"
        )
    if maximum_b > max_ram:
        raise SettingsError(
            f"{_label('maximum')} of {format_size(maximum_b)} is too large: "
            f"it must be at most {max_ram // MB} MB ({format_size(max_ram)}) for a "
            f"generation {gen} VM"
        )
    return VMSettings(
        name,
        startup_b,
        minimum_b,
        maximum_b,
        buffer_v,
        priority_v,
        True,
        path,
        gen,
        *host_actions,
        *disk,
        processors,
    )


def check_processor_count(value: object, generation: int = DEFAULT_GENERATION) -> int:
    """A VM's virtual processors (Set-VMProcessor -Count): a whole number from 1 to Hyper-V's
    maximum for its generation (240 for generation 2, 64 for generation 1)."""
    high = MAXIMUM_PROCESSORS_BY_GENERATION[generation]
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(
            f"{_label('processor_count')} must be a whole number from 1 to {high}, got {value!r}"
        )
    if not 1 <= value <= high:
        raise SettingsError(
            f"{_label('processor_count')} of {value} is out of range: a generation "
            f"{generation} VM has from 1 to {high} virtual processors"
        )
    return value


def _check_disk(
    vhd_path: str | os.PathLike[str] | None, vhd_size: SizeLike | None
) -> tuple[str | None, int | None]:
    """The virtual disk's folder and size, as New-VHD takes them."""
    if vhd_path is not None and not isinstance(vhd_path, (str, os.PathLike)):
        raise SettingsError(f"{_label('vhd_path')} must be a folder, got {vhd_path!r}")
    path = None if vhd_path is None else os.fspath(vhd_path)
    if path is not None and (not path or "\0" in path):
        raise SettingsError(f"{_label('vhd_path')} must be a folder, got {path!r}")
    if vhd_size is None:
        return path, None
    size = parse_size(vhd_size, _label("vhd_size"))
    if size < MB or size % MB:
        raise SettingsError(
            f"{_label('vhd_size')} must be a whole number of MB, at least 1 MB, got {vhd_size!r}"
        )
    return path, size


def _check_host_actions(stop: object, start: object, delay: object) -> tuple[str, str, float]:
    """The VM's automatic stop and start actions and start delay, as Set-VM takes them."""
    if stop not in STOP_ACTIONS:
        raise SettingsError(
            f"{_label('automatic_stop_action')} must be one of {', '.join(STOP_ACTIONS)}, "
            f"got {stop!r}"
        )
    if start not in START_ACTIONS:
        raise SettingsError(
            f"{_label('automatic_start_action')} must be one of {', '.join(START_ACTIONS)}, "
            f"got {start!r}"
        )
    if (
        isinstance(delay, bool)
        or not isinstance(delay, (int, float))
        or not math.isfinite(delay)
        or not 0 <= delay <= MAX_START_DELAY
    ):
        raise SettingsError(
            f"{_label('automatic_start_delay')} must be a number of seconds from 0 to "
            f"{MAX_START_DELAY}, got {delay!r}"
        )
    return str(stop), str(start), float(delay)


BALANCER_INTERVAL_RANGE = (0.001, 3600.0)  # seconds: Hyper-V rebalances about once a second


def check_balancer_start_delay(value: object) -> float:
    """Seconds after a restarted VM's guest boots before the host rebalances it (rules.py,
    awaits_guest): a finite number from 0 (at once) to an hour."""
    return check_number("balancer_start_delay", value, low=0.0, high=3600.0, unit="of seconds")


def check_host_arguments(
    balancer_interval: object, backend: object, policy: object, smart_paging_path: object
) -> tuple[float, str, str, str | None]:
    """Host's non-size arguments, checked (sizes go through parse_size): the balancer interval
    a finite number of seconds in BALANCER_INTERVAL_RANGE, known backend and policy names, a
    folder path or None."""
    low, high = BALANCER_INTERVAL_RANGE
    interval = check_number(
        "balancer_interval", balancer_interval, low=low, high=high, unit="of seconds"
    )
    return (
        interval,
        check_choice("backend", backend, BACKENDS),
        check_choice("policy", policy, POLICIES),
        check_path("smart_paging_path", smart_paging_path, allow_none=True),
    )


def change_settings(settings: VMSettings, key: str, value: object, *, running: bool) -> VMSettings:
    """`settings` with one setting changed, by Hyper-V's rules: Startup, Dynamic Memory on/off
    and the Smart Paging folder only while the VM is off; while it runs Maximum may only rise
    and Minimum only fall; Minimum, Maximum and Buffer only with Dynamic Memory on. Raises
    SettingsError naming the PowerShell parameter."""
    s = settings
    # A static VM's memory may be resized while it runs (Windows Server 2016 and later); the
    # host checks the memory is there (Host.resize_running).
    resizable = key == "startup" and not s.dynamic
    if (
        running
        and key in ("startup", "dynamic", "smart_paging_path", "generation", "processor_count")
        and not resizable
    ):
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
                f"(now {format_size(old)}, asked {format_size(new)}): turn it off to lower it"
            )
        if key == "minimum" and new > old:
            raise SettingsError(
                f"{PS_NAMES['minimum']} can only be lowered while {s.name!r} is running "
                f"(now {format_size(old)}, asked {format_size(new)}): turn it off to raise it"
            )
    kwargs = dataclasses.asdict(s)
    if not s.dynamic:
        for k in ("minimum", "maximum", "buffer"):
            kwargs.pop(k)
    kwargs[key] = value
    if key == "dynamic" and value is False:
        for k in ("minimum", "maximum", "buffer"):
            kwargs.pop(k, None)
    return validate_settings(**kwargs)
