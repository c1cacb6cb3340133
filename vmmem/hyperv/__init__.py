"""Hyper-V Dynamic Memory on the paging core: hosts, VMs, the balancer, Smart Paging on restart.

See docs/HYPERV.md for the API, docs/HYPERV-RULES.md sections 2-4 for the rules it follows
(each in one function: `settings`, `balancer`, `rules`).
"""

from __future__ import annotations

from .balancer import Claim, allocate, claim_for, target_pages
from .host import DEFAULT_FOLDER, Host
from .reports import BootReport, TimelineSample, VMStatus, memory_status
from .settings import VMSettings, validate_settings
from .vm import VM
from .workloads import Boot, Idle, Trace, Workload

__all__ = [
    "DEFAULT_FOLDER",
    "VM",
    "Boot",
    "BootReport",
    "Claim",
    "Host",
    "Idle",
    "TimelineSample",
    "Trace",
    "VMSettings",
    "VMStatus",
    "Workload",
    "allocate",
    "claim_for",
    "memory_status",
    "target_pages",
    "validate_settings",
]
