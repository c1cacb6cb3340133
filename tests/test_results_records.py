"""Results are typed records up to the output: the JSON, its reader and docs/json-schema.json
come from one definition of each record, and `vmmem show` reads every version it claims to.

The stored files are real outputs of earlier vmmem versions, as written:
  run-v1-mixed.json       schema 1: `vmmem run examples/mixed-priority.toml --scale 4 --json`
  run-v2-reboot.json      schema 2 (commit 7155b3a): `vmmem run reboot-storm.toml --scale 8`
  compare-v2-reboot.json  schema 2 (commit 7155b3a): `vmmem compare reboot-storm.toml DIR
                          --scale 8`
  run-v3-reboot.json      schema 3 (commit 3f33b16, before the records): the same run
  run-v4-reboot.json      schema 4 (the devices' queue depth, processor_count): the same run
(the v2/v3 files re-serialized without indentation, nothing else changed).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import tomllib
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmmem.cli.main import EXIT_USAGE, cli
from vmmem.hyperv.reboot import RebootOutcome
from vmmem.hyperv.reports import TimelineSample, VMStatus
from vmmem.lab.plan import plan_scenario
from vmmem.lab.results import (
    SCHEMA_VERSION,
    BootResult,
    CompareResult,
    CompareRow,
    DeviceIO,
    EventResult,
    LatencyCDF,
    LocationResult,
    MachineFacts,
    PlanRecord,
    RunResult,
    StormSummary,
)
from vmmem.lab.scenario import parse_scenario
from vmmem.lab.schema import RESULT_SCHEMA, validate
from vmmem.records import RecordError, from_json, to_json

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
RUNS = {
    1: "run-v1-mixed.json",
    2: "run-v2-reboot.json",
    3: "run-v3-reboot.json",
    4: "run-v4-reboot.json",
}


def load(name: str) -> dict[str, Any]:
    with open(os.path.join(DATA, name), encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def test_the_current_version_is_4():
    # 4 added the devices' busy and queue time, over the run and over the storm, and each
    # VM's processor_count and each boot's per-processor times (issue 18): new fields only,
    # every earlier one means what it meant.
    assert SCHEMA_VERSION == 4


@pytest.mark.parametrize("name", [*RUNS.values(), "compare-v2-reboot.json"])
def test_show_reads_a_file_of_every_version(name, tmp_path):
    data = load(name)
    r = CliRunner().invoke(
        cli, ["show", os.path.join(DATA, name), "--plot", str(tmp_path / "p.png")]
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    if data["kind"] == "vmmem-compare":
        assert data["summary"] in " ".join(r.stdout.split())
    elif data["schema_version"] > 1:  # version 1's headline said less, and was reworded
        assert data["verdict"] in " ".join(r.stdout.split())


def test_a_version_4_file_reads_back_to_the_same_json():
    """Read into records and written again, a file of today's version is the same JSON, key
    for key, in the same order, with the verdict and the summary derived again."""
    data = load(RUNS[4])
    again = RunResult.from_dict(data).to_dict()
    assert again == data
    assert json.dumps(again) == json.dumps(data)  # the order of the keys too


def added_in(cls: type, version: int) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.metadata.get("since", 1) == version]


def test_a_version_3_file_reads_back_to_the_same_json():
    """Read into records and written again, a version-3 file is the same JSON, key for key, in
    the same order, with the verdict and the summary derived again; only the fields version 4
    added are new, unset (not recorded)."""
    data = load(RUNS[3])
    again = RunResult.from_dict(data).to_dict()
    assert again["schema_version"] == 4 and not validate(again, RESULT_SCHEMA)
    again["schema_version"] = 3
    summary = added_in(StormSummary, 4)
    assert {k: again["summary"].pop(k) for k in summary} == dict.fromkeys(summary)
    loc = again["locations"][0]
    assert added_in(LocationResult, 4) == ["storm_io"] and loc.pop("storm_io") is None
    device_io = added_in(DeviceIO, 4)
    assert {k: loc["device_io"].pop(k) for k in device_io} == dict.fromkeys(device_io)
    # one virtual processor: the boot's time is processor 0's
    processors = {"processor_count": 1, "processor_boot_times": None, "last_processor": None}
    for boot in again["boots"]:
        assert {k: boot.pop(k) for k in processors} == processors
    assert again == data
    assert json.dumps(again) == json.dumps(data)  # the order of the keys too


def test_a_version_2_file_reads_with_the_version_3_fields_unset():
    data = load(RUNS[2])
    run = RunResult.from_dict(data)
    assert all(isinstance(b, BootResult) for b in run.boots)
    assert {b.emulator_cpu_seconds for b in run.boots} == {None}
    assert run.emulator_note() is None
    reboot = run.events[-1]
    assert reboot.action == "reboot-host"
    assert {n: o.result for n, o in reboot.outcomes.items()} == dict.fromkeys(
        ("vm1", "vm2", "vm3"), "restored"
    )
    again = run.to_dict()
    assert again["schema_version"] == SCHEMA_VERSION and not validate(again, RESULT_SCHEMA)
    for i, b in enumerate(data["boots"]):  # every version-2 field as it was
        assert {k: again["boots"][i][k] for k in b} == b
    assert again["verdict"] == data["verdict"]


def test_a_version_1_file_is_brought_to_todays_shape():
    run = RunResult.from_dict(load(RUNS[1]))
    # Version 1 kept a short status in its timeline: read as whole VMStatus records.
    first = run.timeline[0].vms[0]
    assert isinstance(first, VMStatus) and first.name == "db"
    assert first.memory_startup == 256 * 2**20  # from the VM's final status
    assert first.pressure == pytest.approx(268435456 / 322961408 * 100)
    assert run.fault_latency_percentiles is None  # not stored: read from the CDF
    # Written again, only the scenario (kept as the file had it, an older input) differs.
    problems = validate(run.to_dict(), RESULT_SCHEMA["$defs"]["run"], RESULT_SCHEMA)
    assert problems and all(p.startswith("$.scenario.") for p in problems)


def test_a_comparison_reads_back():
    data = load("compare-v2-reboot.json")
    cmp = CompareResult.from_dict(data)
    assert cmp.baseline is not None and len(cmp.runs) == 1
    again = cmp.to_dict()
    assert not validate(again, RESULT_SCHEMA)
    assert again["summary"] == data["summary"]
    # A version-2 file: the percentiles derived again, the queue depth not recorded.
    assert [to_json(r) for r in cmp.rows()] == [
        r
        | {k: again["rows"][0][k] for k in r if k.startswith("fault_p")}
        | {"device_queue_depth": None}
        for r in data["rows"]
    ]


# --- one definition of each record ----------------------------------------------------------


RECORDS = {
    "boot": BootResult,
    "status": VMStatus,
    "sample": TimelineSample,
    "event": EventResult,
    "reboot_outcome": RebootOutcome,
    "location": LocationResult,
    "machine": MachineFacts,
    "cdf": LatencyCDF,
    "summary": StormSummary,
    "compare_row": CompareRow,
}


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_the_schema_of_a_record_is_its_fields(name):
    cls = RECORDS[name]
    written = [f.name for f in dataclasses.fields(cls) if f.metadata.get("json", True)]
    schema = RESULT_SCHEMA["$defs"][name]
    assert list(schema["properties"]) == written
    # Required: every field but those a later version added (older files lack them).
    later = {f.name for f in dataclasses.fields(cls) if f.metadata.get("since", 1) > 1}
    assert set(schema["required"]) == set(written) - later


def test_a_field_added_in_a_later_version_says_so_and_has_a_default():
    for cls in RECORDS.values():
        for f in dataclasses.fields(cls):
            if f.metadata.get("since", 1) > 1:
                assert f.default is not dataclasses.MISSING or (
                    f.default_factory is not dataclasses.MISSING
                ), f"{cls.__name__}.{f.name}"
    desc = RESULT_SCHEMA["$defs"]["boot"]["properties"]["emulator_seconds"]["description"]
    assert "Since version 3" in desc


def test_the_plan_record_holds_what_the_planner_writes():
    with open(os.path.join(DATA, "reboot-storm.toml"), "rb") as f:
        s = parse_scenario(tomllib.load(f)).scaled(8)
    written = plan_scenario(s).to_dict()
    assert to_json(from_json(PlanRecord, written)) == written


def test_a_bad_field_is_named_with_its_path(tmp_path):
    data = load(RUNS[1])  # version 1: not checked against the schema, read by the records
    data["boots"][2]["page_ins"] = "many"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    r = CliRunner().invoke(cli, ["show", str(path)])
    assert r.exit_code == EXIT_USAGE
    assert "$.boots[2].page_ins: expected an integer" in r.stderr
    assert "Traceback" not in r.output


# Any JSON value in place of one of the file's values: read, or refused naming the place.
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=5,
)


def _paths(v: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(v, dict):
        return [at] + [p for k, x in v.items() for p in _paths(x, (*at, k))]
    if isinstance(v, list):
        return [at] + [p for i, x in enumerate(v[:2]) for p in _paths(x, (*at, i))]
    return [at]


V1 = load(RUNS[1])
V1_PATHS = [p for p in _paths(V1) if p]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(where=st.sampled_from(V1_PATHS), value=_json)
def test_any_value_anywhere_is_read_or_refused_by_name(where, value):
    data = copy.deepcopy(V1)
    target = data
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    try:
        run = RunResult.from_dict(data)
    except RecordError as e:
        assert str(e).startswith("$")
        return
    run.to_dict()  # whatever was read can be written again
