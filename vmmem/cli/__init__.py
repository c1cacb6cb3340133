"""The ``vmmem`` command line: scenarios, plans, runs, comparisons, disks, reports and plots.

Entry point: ``vmmem = "vmmem.cli.main:main"``; ``python -m vmmem.cli`` does the same.
"""

from vmmem.cli.scenario import (
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
