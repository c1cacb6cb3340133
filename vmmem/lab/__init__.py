"""The lab: scenarios (TOML), plans, runs, comparisons of locations, and their typed results.

It drives the Hyper-V layer (`vmmem.hyperv`) and reads devices (`vmmem.devices`); the command
line (`vmmem.cli`) only calls it and renders what it returns. Library users and the benchmarks
call the same functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vmmem.guests import GuestProfile

from vmmem.lab.scenario import (
    ARTICLE_SCENARIO_TOML,
    Event,
    Scenario,
    ScenarioError,
    VMSpec,
    WorkloadSpec,
    article_scenario,
    load_scenario,
    parse_scenario,
)

__all__ = [
    "guest_profiles",
    "ARTICLE_SCENARIO_TOML",
    "Event",
    "Scenario",
    "ScenarioError",
    "VMSpec",
    "WorkloadSpec",
    "article_scenario",
    "load_scenario",
    "parse_scenario",
]


def guest_profiles(startup_ram: str | int = "512MB") -> list[GuestProfile]:
    """Every guest a VM can boot (`vmmem guests`): the shipped recorded boots, and the
    synthetic boot and the Windows models with their figures for a VM of `startup_ram`."""
    from vmmem.guests import list_guests
    from vmmem.hyperv import Boot
    from vmmem.hyperv.workloads import WINDOWS_MODELS

    models = [m.boot().profile(startup_ram, m) for m in WINDOWS_MODELS.values()]
    return list_guests(Boot().profile(startup_ram)) + models
