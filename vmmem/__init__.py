"""vmmem: Hyper-V Dynamic Memory and Smart Paging, emulated on real RAM and real disks.

The paging core (C) gives each emulated VM a guest-physical page array backed by real host
RAM frames up to its assigned memory, the rest paged to a real Smart Paging file. On top of
it, the Hyper-V layer runs hosts, VMs and the balancer, and measures what a boot storm costs.
"""

from __future__ import annotations

from .errors import (
    GuestAddressError,
    LocationRefused,
    NotEnoughMemoryError,
    OutOfFramesError,
    PagingFileError,
    RamBackedWarning,
    SettingsError,
    VmmemError,
    VmmemWarning,
)
from .hyperv import VM, Boot, BootReport, Host, Idle, TimelineSample, Trace, VMStatus
from .memory import (
    FramePool,
    GuestMemory,
    LatencyHistogram,
    MemoryStats,
    PageState,
    SmartPagingFile,
)
from .sizes import GB, KB, MB, TB, format_size, parse_size

__version__ = "0.1.0"

__all__ = [
    "GB",
    "KB",
    "MB",
    "TB",
    "VM",
    "Boot",
    "BootReport",
    "FramePool",
    "Host",
    "Idle",
    "TimelineSample",
    "Trace",
    "VMStatus",
    "GuestAddressError",
    "GuestMemory",
    "LocationRefused",
    "LatencyHistogram",
    "MemoryStats",
    "NotEnoughMemoryError",
    "OutOfFramesError",
    "PageState",
    "PagingFileError",
    "RamBackedWarning",
    "SettingsError",
    "SmartPagingFile",
    "VmmemError",
    "VmmemWarning",
    "format_size",
    "parse_size",
]
