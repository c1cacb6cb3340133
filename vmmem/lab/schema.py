"""A small JSON Schema checker for vmmem's own result files (no dependency on jsonschema).

It understands the subset docs/json-schema.json uses: type (with lists and null), properties,
required, additionalProperties (false or a schema), items, enum, const, oneOf, local $ref,
minimum and maximum. ``validate`` returns a list of problems, each with the JSON path where it is.
"""

from __future__ import annotations

import json
from typing import Any

from vmmem.hyperv.reboot import RebootOutcome
from vmmem.hyperv.reports import TimelineSample, VMStatus
from vmmem.lab.repeat import CompareStats, RunStats, Spread
from vmmem.lab.results import (
    OUTCOMES,
    READABLE_VERSIONS,
    BootResult,
    CompareResult,
    CompareRow,
    EventResult,
    LatencyCDF,
    LocationResult,
    LocationRun,
    MachineFacts,
    PlanRecord,
    PredictedBoot,
    RunResult,
    StormSummary,
)
from vmmem.records import json_schema

__all__ = ["RESULT_SCHEMA", "schema_json", "validate"]

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


def validate(
    instance: Any, schema: dict[str, Any], root: dict[str, Any] | None = None, path: str = "$"
) -> list[str]:
    """Problems found in ``instance`` against ``schema`` (empty: valid)."""
    root = root if root is not None else schema
    if "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            return [f"{path}: cannot follow non-local $ref {ref}"]
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        return validate(instance, target, root, path)
    errors: list[str] = []
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](instance) for t in types):
            return [f"{path}: expected {' or '.join(types)}, got {type(instance).__name__}"]
    if "const" in schema and instance != schema["const"]:
        errors.append(f"{path}: expected {schema['const']!r}, got {instance!r}")
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: expected one of {schema['enum']}, got {instance!r}")
    if "oneOf" in schema:
        results = [validate(instance, sub, root, path) for sub in schema["oneOf"]]
        ok = [r for r in results if not r]
        if len(ok) != 1:
            best = min(results, key=len)
            errors.append(
                f"{path}: matches {len(ok)} of the oneOf choices, expected 1"
                + (f" ({best[0]})" if best else "")
            )
    if _TYPES["number"](instance):
        if "minimum" in schema and instance < schema["minimum"]:
            errors.append(f"{path}: {instance} is below {schema['minimum']}")
        if "maximum" in schema and instance > schema["maximum"]:
            errors.append(f"{path}: {instance} is above {schema['maximum']}")
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key in schema.get("required", []):
            if key not in instance:
                errors.append(f"{path}: missing {key!r}")
        for key, value in instance.items():
            if key in props:
                errors.extend(validate(value, props[key], root, f"{path}.{key}"))
            elif extra is False:
                errors.append(f"{path}: unexpected {key!r}")
            elif isinstance(extra, dict):
                errors.extend(validate(value, extra, root, f"{path}.{key}"))
    if isinstance(instance, list) and "items" in schema:
        for i, item in enumerate(instance):
            errors.extend(validate(item, schema["items"], root, f"{path}[{i}]"))
    return errors


# ---------------------------------------------------------------------------------------------
# The schema of `vmmem run --json` and `vmmem compare --json`, generated from the records that
# write the files (vmmem.lab.results, vmmem.hyperv.reports; vmmem.records). docs/json-schema.json
# is this, written by `python -m vmmem.lab.schema > docs/json-schema.json` (a test keeps them
# equal). Only what the records do not hold is written here: the scenario (the input file's
# own shape, Scenario.to_dict) and the keys `to_dict` derives (kind, version, verdict,
# summary, rows).

_num = {"type": "number"}
_nnum = {"type": ["number", "null"]}
_int = {"type": "integer", "minimum": 0}
_nint = {"type": ["integer", "null"]}
_str = {"type": "string"}
_nstr = {"type": ["string", "null"]}
_bool = {"type": "boolean"}


def _obj(props: dict[str, Any], desc: str | None = None) -> dict[str, Any]:
    o: dict[str, Any] = {"type": "object", "properties": props, "required": sorted(props)}
    if desc:
        o["description"] = desc
    return o


def _arr(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _optional(obj: dict[str, Any], props: dict[str, Any]) -> dict[str, Any]:
    """`obj` with `props` described but not required (files written before them lack them)."""
    obj["properties"].update(props)
    return obj


# Records written once into $defs under these names (others are written in place).
_NAMES: dict[type, str] = {
    MachineFacts: "machine",
    LocationResult: "location",
    BootResult: "boot",
    VMStatus: "status",
    TimelineSample: "sample",
    LatencyCDF: "cdf",
    StormSummary: "summary",
    EventResult: "event",
    RebootOutcome: "reboot_outcome",
    CompareRow: "compare_row",
    PlanRecord: "plan",
    PredictedBoot: "prediction",
    RunResult: "run",
    CompareResult: "compare",
    RunStats: "run_stats",
    CompareStats: "compare_stats",
    Spread: "spread",
}

_SCENARIO = _obj(
    {
        "name": _str,
        "description": _str,
        "source": _str,
        "scale": {"type": "number", "minimum": 1},
        "host": _optional(
            _obj(
                {
                    "memory_bytes": _int,
                    "reserve_bytes": _int,
                    "smart_paging_path": _nstr,
                    "balancer_interval": _num,
                }
            ),
            # the wait before Dynamic Memory rebalances a restarted VM (later files)
            {"balancer_start_delay": _num},
        ),
        "vms": _arr(
            _optional(
                _obj(
                    {
                        "name": _str,
                        "startup_bytes": _int,
                        "minimum_bytes": _nint,
                        "maximum_bytes": _nint,
                        "buffer": _nint,
                        "priority": {"type": "integer", "minimum": 0, "maximum": 100},
                        "dynamic": _bool,
                        "smart_paging_path": _nstr,
                        "generation": {"enum": [1, 2]},
                        "automatic_stop_action": {"enum": ["Save", "ShutDown", "TurnOff"]},
                        "automatic_start_action": {"enum": ["StartIfRunning", "Start", "Nothing"]},
                        "automatic_start_delay": _num,
                        "vhd_path": _nstr,
                        "vhd_size": _nint,
                        "workload": _optional(
                            _obj(
                                {
                                    "guest": _nstr,
                                    "guest_ips": _nnum,
                                    "guest_scale": _num,
                                    "boot_seconds": _nnum,
                                    "idle_demand_bytes": _nint,
                                    "boot": {"type": "object"},
                                    "idle": {"type": "object"},
                                }
                            ),
                            # a Windows model's name, and what the boot's figures guess
                            {"model": _nstr, "guesses": _arr(_str)},
                        ),
                    }
                ),
                # virtual processors (Set-VMProcessor -Count; later files)
                {"processor_count": {"type": "integer", "minimum": 1, "maximum": 240}},
            )
        ),
        "events": _arr(
            _obj(
                {
                    "action": {
                        "enum": ["start", "idle", "restart-vms", "restart", "reboot-host", "settle"]
                    },
                    "vms": _arr(_str),
                    "seconds": _nnum,
                    "smart_paging_on_host_reboot": _bool,
                }
            )
        ),
    },
    "The settings as validated (sizes in bytes; null: Hyper-V's default).",
)
_VERSION = {
    "enum": list(READABLE_VERSIONS),
    "description": "4 is written now; 1 to 3 (without the later fields) are still read.",
}


def _defs() -> dict[str, Any]:
    defs: dict[str, Any] = {}
    json_schema(RunResult, _NAMES, defs)
    json_schema(CompareResult, _NAMES, defs)
    run, compare = defs["run"], defs["compare"]
    # The keys to_dict derives from the fields, in the same places.
    run["properties"]["scenario"] = {"$ref": "#/$defs/scenario"}
    run["properties"].update(
        kind={"const": "vmmem-run"},
        schema_version=_VERSION,
        verdict=_str | {"description": "The headline (RunResult.verdict)."},
        summary={"$ref": "#/$defs/summary"},
    )
    compare["properties"].update(
        kind={"const": "vmmem-compare"},
        schema_version=_VERSION,
        summary=_str | {"description": "The comparison in one line."},
        rows=_arr({"$ref": "#/$defs/compare_row"}),
        runs=json_schema(list[LocationRun], _NAMES, defs),
    )
    for obj, keys in (
        (run, ("kind", "schema_version", "verdict", "summary")),
        (compare, ("kind", "schema_version", "summary", "rows", "runs")),
    ):
        obj["required"] = sorted({*obj["required"], *keys})
    # --runs N (vmmem.lab.repeat): every run's own JSON and the spread; absent with one run.
    run["properties"].update(
        repeats=_arr({"$ref": "#/$defs/run"}), stats=json_schema(RunStats, _NAMES, defs)
    )
    compare["properties"].update(
        repeats=_arr({"$ref": "#/$defs/compare"}),
        stats=json_schema(CompareStats, _NAMES, defs),
    )
    json_schema(StormSummary, _NAMES, defs)
    json_schema(CompareRow, _NAMES, defs)
    defs["scenario"] = _SCENARIO
    _spectrum_defs(defs)
    return dict(sorted(defs.items()))


def _spectrum_defs(defs: dict[str, Any]) -> None:
    """`vmmem run --guest a,b,c` and `vmmem compare --guest a,b,c` (vmmem.lab.spectrum): a
    document holding each guest's own run or compare, and the table's rows."""
    outcome = {"enum": list(OUTCOMES)}
    defs["spectrum_row"] = _obj(
        {
            "guest": _str,
            "outcome": outcome,
            "vms": _int,
            "pages_touched": _nint,
            "startup_pages": _nint,
            **{k: _int for k in ("smart_paging_peak_bytes", "page_ins", "page_outs")},
            **{k: _nnum for k in ("boot_time", "baseline", "slowdown")},
            **{
                f"predicted_{k}": _nint
                for k in ("page_ins", "page_outs", "smart_paging_peak_bytes")
            },
            "duration": _num,
        },
        "One guest's storm (`vmmem run --guest a,b,c`): pages_touched the distinct pages one "
        "VM's boot touches; the rest as the run's summary; predicted_* from the run's plan "
        "(null: none).",
    )
    grid_row = _obj(
        {
            "guest": _str,
            "outcome": outcome,
            "pages_touched": _nint,
            "baseline_boot_time": _nnum,
            "locations": _arr({"$ref": "#/$defs/compare_row"}),
        },
        "One guest (`vmmem compare --guest a,b,c`): its compare's rows, one per location.",
    )
    defs["spectrum"] = _obj(
        {
            "kind": {"const": "vmmem-spectrum"},
            "schema_version": _VERSION,
            "command": {"enum": ["run", "compare"]},
            "outcome": outcome,
            "error": _nstr,
            "summary": _str,
            "started": _str,
            "duration": _num,
            "machine": {"$ref": "#/$defs/machine"},
            "scenario": _str,
            "scale": _num,
            "rows": _arr({"oneOf": [{"$ref": "#/$defs/spectrum_row"}, grid_row]}),
            "guests": _arr(
                _obj(
                    {
                        "guest": _str,
                        "run": {"oneOf": [{"type": "null"}, {"$ref": "#/$defs/run"}]},
                        "compare": {"oneOf": [{"type": "null"}, {"$ref": "#/$defs/compare"}]},
                    }
                )
            ),
        },
        "`vmmem run --guest a,b,c` (or all, or no scenario nor --guest) and `vmmem compare "
        "--guest a,b,c`: the same storm once per guest, each guest's own result in guests.",
    )


RESULT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "vmmem run and compare results",
    "description": "What `vmmem run --json` and `vmmem compare --json` write (`kind` says "
    "which). Sizes are bytes, times seconds. Objects may gain fields in later "
    "versions; schema_version changes when a field changes meaning.",
    "oneOf": [{"$ref": "#/$defs/run"}, {"$ref": "#/$defs/compare"}, {"$ref": "#/$defs/spectrum"}],
    "$defs": _defs(),
}


def schema_json() -> str:
    return json.dumps(RESULT_SCHEMA, indent=2) + "\n"


if __name__ == "__main__":
    print(schema_json(), end="")
