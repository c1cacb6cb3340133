"""The lab: scenarios (TOML), plans, runs, comparisons of locations, and their typed results.

It drives the Hyper-V layer (`vmmem.hyperv`) and reads devices (`vmmem.devices`); the command
line (`vmmem.cli`) only calls it and renders what it returns. Library users and the benchmarks
call the same functions.
"""

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
