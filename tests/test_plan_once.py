"""`vmmem run` and `vmmem compare` plan each distinct scenario once and pass the Plan along:
the scaled scenario, its full size (for the scale warnings) and compare's baseline."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

import vmmem.lab.plan
from vmmem.cli.main import cli

sys.path.insert(0, str(Path(__file__).parent))
from test_cli_run import fast_scenario  # noqa: E402


@pytest.fixture
def planned(monkeypatch: pytest.MonkeyPatch) -> Counter[tuple[str, int, int]]:
    """Every entry into the planner, by (scenario name, scale, host memory); the spy replaces
    plan_scenario wherever a vmmem module holds it."""
    real = vmmem.lab.plan.plan_scenario
    seen: Counter[tuple[str, int, int]] = Counter()

    def spy(s, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen[(s.name, s.scale, s.host_memory)] += 1
        return real(s, *args, **kwargs)

    for name, mod in list(sys.modules.items()):
        if name.startswith("vmmem") and getattr(mod, "plan_scenario", None) is real:
            monkeypatch.setattr(mod, "plan_scenario", spy)
    return seen


def test_run_plans_its_scenario_once_and_the_full_size_once(disk_dir, monkeypatch, planned):
    monkeypatch.chdir(disk_dir)
    (disk_dir / "sp").mkdir()
    args = ["run", fast_scenario(disk_dir, 0.3), "--scale", "8", "--paging-dir", "sp", "-q"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert sorted(planned.values()) == [1, 1], planned  # the scaled run, its full size
    assert {scale for _, scale, _ in planned} == {1, 8}


def test_compare_plans_each_distinct_scenario_once(disk_dir, monkeypatch, planned):
    monkeypatch.chdir(disk_dir)
    (disk_dir / "a").mkdir()
    (disk_dir / "b").mkdir()
    args = ["compare", "a", "b", fast_scenario(disk_dir, 0.3), "--scale", "8", "-q"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    # the scaled storm (run on both folders), its baseline (more memory), its full size
    assert sorted(planned.values()) == [1, 1, 1], planned
    assert len({mem for _, scale, mem in planned if scale == 8}) == 2


def test_plan_command_plans_once(planned):
    r = CliRunner().invoke(cli, ["plan"])
    assert r.exit_code == 0, r.output
    assert list(planned.values()) == [1]
