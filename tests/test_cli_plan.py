"""``vmmem plan``: the pure prediction of Smart Paging and of the remedies that avoid it."""

from __future__ import annotations

import dataclasses
import json
import os

from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from vmmem.cli.main import cli
from vmmem.lab.plan import plan_scenario
from vmmem.lab.scenario import (
    MB,
    Event,
    Scenario,
    VMSpec,
    WorkloadSpec,
    article_scenario,
    load_scenario,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def example(name: str) -> Scenario:
    return load_scenario(os.path.join(ROOT, "examples", name))


def storm(plan):
    return next(e for e in plan.events if e.action == "restart-vms")


def test_article_needs_648_mb_of_smart_paging_162_per_vm():
    p = plan_scenario(article_scenario())
    assert p.needs_smart_paging and not p.start_failures
    e = storm(p)
    assert e.needed == 2048 * MB and e.available == 1400 * MB
    assert e.paging_total == 648 * MB
    assert set(e.paging.values()) == {162 * MB}
    assert set(p.idle_assigned.values()) == {300 * MB}


def test_article_remedies():
    p = plan_scenario(article_scenario())
    by_kind = {r.kind: r for r in p.remedies}
    assert by_kind["add-memory"].works and by_kind["add-memory"].amount == 648 * MB
    assert by_kind["reduce-startup"].amount == 648 * MB
    # Minimum = Startup on all four: they could no longer all run on 1400 MB.
    m = by_kind["minimum-equals-startup"]
    assert not m.works and set(m.vms) == {"vm1", "vm2", "vm3", "vm4"}
    assert "Not enough memory in the system to start the virtual machine" in m.caveat
    # One VM off leaves 3 x 512 = 1536 > 1400: two must go.
    assert by_kind["move-vm"].works and len(by_kind["move-vm"].vms) == 2


def test_roomy_host_needs_nothing():
    s = article_scenario().with_host_memory(2048 * MB)
    p = plan_scenario(s)
    assert not p.needs_smart_paging and p.remedies == ()
    assert "no Smart Paging" in p.verdict()


def test_restart_of_one_vm_fits_while_the_others_idle():
    s = dataclasses.replace(
        article_scenario(),
        events=(Event("start", ("vm1", "vm2", "vm3", "vm4")), Event("restart", ("vm2",))),
    )
    p = plan_scenario(s)
    assert not p.needs_smart_paging  # 1400 - 3 x 250 = 650 >= 512


def test_one_vm_too_many_cannot_start_from_off():
    s = article_scenario().with_host_memory(1000 * MB)
    p = plan_scenario(s)
    assert p.start_failures  # never Smart Paging for a start from Off
    assert "Not enough memory in the system to start the virtual machine" in p.verdict()


def test_static_vm_never_pages_and_is_served_first():
    p = plan_scenario(example("static-and-dynamic.toml"))
    e = storm(p)
    assert e.paging["dc"] == 0 and e.assigned["dc"] == 512 * MB
    assert e.paging_total == 648 * MB
    assert {e.paging[n] for n in ("app1", "app2", "app3")} == {216 * MB}


def test_priority_decides_who_pages():
    s = example("mixed-priority.toml")
    e = storm(plan_scenario(s))
    prio = {v.name: v.priority for v in s.vms}
    share = {n: e.paging[n] / s.vm(n).startup for n in e.paging}
    assert share["db"] == 0
    for a in share:
        for b in share:
            if prio[a] > prio[b]:
                assert share[a] <= share[b]


def test_move_vm_picks_one_when_one_is_enough():
    s = dataclasses.replace(article_scenario(), host_memory=1600 * MB)
    p = plan_scenario(s)
    move = next(r for r in p.remedies if r.kind == "move-vm")
    assert move.works and len(move.vms) == 1


@settings(max_examples=60, deadline=None)
@given(
    host_mb=st.integers(300, 4000),
    n=st.integers(1, 6),
    startups=st.lists(st.integers(16, 512), min_size=6, max_size=6),
    prios=st.lists(st.integers(0, 100), min_size=6, max_size=6),
)
def test_plan_never_hands_out_more_than_the_host_has(host_mb, n, startups, prios):
    vms = tuple(
        VMSpec(
            f"v{i}",
            startup=startups[i] * 2 * MB,
            minimum=32 * MB,
            maximum=2048 * MB,
            buffer=20,
            priority=prios[i],
            workload=WorkloadSpec(idle_demand=startups[i] * MB),
        )
        for i in range(n)
    )
    s = Scenario(
        "h",
        host_memory=host_mb * 2 * MB,
        vms=vms,
        events=(Event("start", tuple(v.name for v in vms)), Event("restart-vms")),
    )
    p = plan_scenario(s)
    for e in p.events:
        if e.action == "restart-vms":  # simultaneous boots share the host
            assert sum(e.assigned.values()) <= s.available
        for name, b in e.paging.items():
            assert b >= 0 and b + e.assigned[name] == s.vm(name).startup
    if not p.start_failures:
        e = p.events[1]
        assert e.paging_total >= sum(v.startup for v in vms) - s.available
        if sum(v.startup for v in vms) <= s.available:
            assert e.paging_total == 0
    for r in p.remedies:
        if r.kind == "add-memory":
            assert r.works


def test_cli_plan_text_and_json():
    r = CliRunner().invoke(cli, ["plan"])
    assert r.exit_code == 0, r.output
    assert "648 MB" in r.stdout and "Minimum RAM = Startup RAM" in r.stdout
    r = CliRunner().invoke(cli, ["plan", "--json", "--scale", "8"])
    assert r.exit_code == 0
    d = json.loads(r.stdout)
    assert d["needs_smart_paging"] and d["available_bytes"] == 176 * MB
    assert {x["kind"] for x in d["remedies"]} == {
        "add-memory",
        "reduce-startup",
        "minimum-equals-startup",
        "move-vm",
    }


def test_cli_plan_warns_when_scale_changes_the_story():
    r = CliRunner().invoke(
        cli, ["plan", os.path.join(ROOT, "examples", "static-and-dynamic.toml"), "--scale", "8"]
    )
    assert r.exit_code == 0
    assert "cannot start although it does at full size" in r.stderr
