"""The same boot storm with the Smart Paging files in each location in turn, plus a baseline
on a host with enough memory: what `vmmem compare` runs, callable from the library too."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

from vmmem.hyperv.host import DEFAULT_FOLDER
from vmmem.lab.locations import CheckedLocations, check_locations
from vmmem.lab.plan import Plan, plan_scenario
from vmmem.lab.progress import ProgressSink
from vmmem.lab.results import CompareResult
from vmmem.lab.runner import run_scenario
from vmmem.lab.scenario import Scenario

__all__ = ["baseline_scenario", "check_compare_locations", "compare_locations"]


def baseline_scenario(s: Scenario, plan: Plan | None = None) -> Scenario:
    """The same scenario on a host with enough memory that no restart needs Smart Paging.
    `plan`: the plan of `s` when the caller has it (else `s` is planned here)."""
    p = plan if plan is not None else plan_scenario(s)
    extra = next((r.amount for r in p.remedies if r.kind == "add-memory"), 0)
    return s.with_host_memory(s.host_memory + extra) if extra else s


def check_compare_locations(s: Scenario, folders: Sequence[str]) -> dict[str, CheckedLocations]:
    """The one location check of a comparison, every folder before anything runs
    (LocationRefused on the first that cannot take the worst case): per folder, what its run
    will use (the VMs' own folders for their virtual disks, as run_scenario places them) and
    the warnings for people (RAM-backed, no counters, others can write it)."""
    host_folder = os.path.abspath(DEFAULT_FOLDER)
    return {
        folder: check_locations(s.with_paging_dir(os.path.abspath(folder)), host_folder)
        for folder in folders
    }


def compare_locations(
    s: Scenario,
    folders: Sequence[str],
    *,
    plan: Plan | None = None,
    checked: dict[str, CheckedLocations] | None = None,
    baseline: bool = True,
    backend: str = "direct",
    policy: str = "lru",
    progress: Callable[[int, int, str | None], ProgressSink | None] | None = None,
    on_done: Callable[[ProgressSink | None], None] | None = None,
) -> CompareResult:
    """Run `s` with every VM's Smart Paging file in each folder in turn (after the baseline,
    unless `baseline` is False). Stops at the first run that fails or is interrupted; a run
    whose host reboot could not start a VM (outcome "vms_failed") was measured in full, so the
    comparison goes on, and its outcome is "vms_failed" too.

    `progress(index, count, folder)` may return a sink for that run (folder None: the
    baseline); `on_done(sink)` is called after each run, whatever happened.
    """
    if not folders:
        raise ValueError("give at least one folder")
    if checked is None:
        checked = check_compare_locations(s, folders)
    plan = plan if plan is not None else plan_scenario(s)
    base = baseline_scenario(s, plan) if baseline else s
    base_plan = plan_scenario(base) if base is not s else plan
    cmp = CompareResult(baseline=None, runs={})
    t0 = time.monotonic()
    steps: list[str | None] = ([None] if baseline else []) + list(folders)
    for i, folder in enumerate(steps):
        sink = progress(i, len(steps), folder) if progress is not None else None
        try:
            run = run_scenario(
                base if folder is None else s,
                paging_dir=folders[0] if folder is None else folder,
                plan=base_plan if folder is None else plan,
                # The baseline's Smart Paging folder is the first folder's: so is its check
                # (more host memory changes neither the worst case nor the folders).
                locations=checked[folders[0] if folder is None else folder],
                progress=sink,
                backend=backend,
                policy=policy,
            )
        finally:
            if on_done is not None:
                on_done(sink)
        if folder is None:
            cmp.baseline = run
        else:
            cmp.runs[folder] = run
        if run.outcome == "vms_failed":  # measured in full: go on to the next location
            cmp.outcome = "vms_failed"
        elif run.outcome != "ok":
            cmp.outcome, cmp.error = run.outcome, run.error or run.verdict()
            break
    cmp.duration = time.monotonic() - t0
    return cmp
