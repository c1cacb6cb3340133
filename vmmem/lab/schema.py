"""A small JSON Schema checker for vmmem's own result files (no dependency on jsonschema).

It understands the subset docs/json-schema.json uses: type (with lists and null), properties,
required, additionalProperties (false, or a schema for a map's values), items, enum, const,
oneOf, local $ref, minimum and maximum. ``validate`` returns a list of problems, each with
the JSON path where it is.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from vmmem.hyperv.reports import BootReport, VMStatus
from vmmem.lab.results import READABLE_VERSIONS

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
        for key in schema.get("required", []):
            if key not in instance:
                errors.append(f"{path}: missing {key!r}")
        for key, value in instance.items():
            if key in props:
                errors.extend(validate(value, props[key], root, f"{path}.{key}"))
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unexpected {key!r}")
            elif isinstance(schema.get("additionalProperties"), dict):  # a map's values
                errors.extend(
                    validate(value, schema["additionalProperties"], root, f"{path}.{key}")
                )
    if isinstance(instance, list) and "items" in schema:
        for i, item in enumerate(instance):
            errors.extend(validate(item, schema["items"], root, f"{path}[{i}]"))
    return errors


# ---------------------------------------------------------------------------------------------
# The schema of `vmmem run --json` and `vmmem compare --json`. docs/json-schema.json is this,
# written by `python -m vmmem.lab.schema > docs/json-schema.json` (a test keeps them equal).

_num = {"type": "number"}
_nnum = {"type": ["number", "null"]}
_int = {"type": "integer", "minimum": 0}
_nint = {"type": ["integer", "null"]}
_str = {"type": "string"}
_nstr = {"type": ["string", "null"]}
_bool = {"type": "boolean"}
_nbool = {"type": ["boolean", "null"]}
_OUTCOME = {
    "enum": ["ok", "vms_failed", "failed", "interrupted"],
    "description": "ok: every event played and every VM started; vms_failed: every event "
    "played and was measured, but a host reboot's automatic start failed for a VM (Not enough "
    "memory in the system to start the virtual machine), as Hyper-V would; failed: the run "
    "stopped early (error says why); interrupted: Ctrl-C or SIGTERM",
}


def _obj(props: dict[str, Any], desc: str | None = None) -> dict[str, Any]:
    o: dict[str, Any] = {"type": "object", "properties": props, "required": sorted(props)}
    if desc:
        o["description"] = desc
    return o


def _since_v2(obj: dict[str, Any], props: dict[str, Any]) -> dict[str, Any]:
    """Fields added in schema version 2: described, but not required (version-1 files, which
    `vmmem show` still reads, do not have them)."""
    obj["properties"].update(props)
    return obj


def _arr(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _from_dataclass(
    cls: type, overrides: dict[str, dict[str, Any]] | None = None, skip: tuple[str, ...] = ()
) -> dict[str, dict[str, Any]]:
    """A record's properties from the dataclass that makes it, so the schema cannot drift from
    the code: int, float, bool, str, each optionally `| None`."""
    base: dict[str, dict[str, Any]] = {"int": _int, "float": _num, "bool": _bool, "str": _str}
    nullable: dict[str, dict[str, Any]] = {
        "int": _nint,
        "float": _nnum,
        "bool": _nbool,
        "str": _nstr,
    }
    props: dict[str, dict[str, Any]] = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind = str(f.type).replace(" ", "")
        if kind.endswith("|None"):
            props[f.name] = nullable[kind.removesuffix("|None")]
        else:
            props[f.name] = base[kind]
    props.update(overrides or {})
    return props


_STATUS = _from_dataclass(
    VMStatus,
    {
        "state": {"enum": ["Off", "Running", "Saved"]},
        "memory_status": {"enum": ["OK", "Low", "Warning", "Paging", ""]},
    },
)
# BootReport fields added in version 3: described, not required (earlier files lack them).
_V3_BOOT = (
    "guest_seconds",
    "fault_wait_seconds",
    "disk_seconds",
    "memory_wait_seconds",
    "wall_seconds",
    "emulator_seconds",
    "emulator_cpu_seconds",
)
_BOOT = _from_dataclass(
    BootReport,
    {"kind": {"enum": ["start", "restart", "reset", "host-restart"]}, "event": _int},
    skip=("page_in_latency", "fault_latency", "page_ins_after_boot", *_V3_BOOT),
)

_DEFS: dict[str, Any] = {
    "machine": _obj(
        {
            "hostname": _str,
            "system": _str,
            "kernel": _str,
            "machine": _str,
            "cpu_model": _nstr,
            "cpus": _nint,
            "memory_total_bytes": _int,
            "python": _str,
            "vmmem_version": _nstr,
        },
        "The machine the figures come from.",
    ),
    "scenario": _obj(
        {
            "name": _str,
            "description": _str,
            "source": _str,
            "scale": {"type": "number", "minimum": 1},
            "host": _since_v2(
                _obj(
                    {
                        "memory_bytes": _int,
                        "reserve_bytes": _int,
                        "smart_paging_path": _nstr,
                        "balancer_interval": _num,
                    }
                ),
                {"balancer_start_delay": _num},
            ),
            "vms": _arr(
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
                        "workload": _since_v2(
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
                )
            ),
            "events": _arr(
                _obj(
                    {
                        "action": {
                            "enum": [
                                "start",
                                "idle",
                                "restart-vms",
                                "restart",
                                "reboot-host",
                                "settle",
                            ]
                        },
                        "vms": _arr(_str),
                        "seconds": _nnum,
                        "smart_paging_on_host_reboot": _bool,
                    }
                )
            ),
        },
        "The settings as validated (sizes in bytes; null: Hyper-V's default).",
    ),
    "location": _obj(
        {
            "path": _str,
            "mountpoint": _str,
            "fstype": _str,
            "source": _str,
            "device": _nstr,
            "disk": _nstr,
            "model": _nstr,
            "rotational": _nbool,
            "kind": {"enum": ["RAM", "HDD", "SSD", "unknown"]},
            "ram_backed": _bool,
            "free_bytes": _int,
            "total_bytes": _int,
            "has_counters": _bool,
            "backing_file": _nstr,
            "device_io": {
                "oneOf": [
                    {"type": "null"},
                    _obj(
                        {
                            "read_bytes": {"type": "integer"},
                            "write_bytes": {"type": "integer"},
                            "read_count": {"type": "integer"},
                            "write_count": {"type": "integer"},
                        }
                    ),
                ]
            },
        },
        "A filesystem holding Smart Paging files; device_io: its device's own counters over "
        "the whole run (null: no block device, e.g. tmpfs).",
    ),
    "boot": _obj(
        _BOOT,
        "One boot: the Hyper-V layer's BootReport (docs/HYPERV.md) and the index of the "
        "scenario event that caused it. Times in seconds (started_at on the host clock). "
        "Since version 2: smart_paging_file_created_at / _deleted_at, the Smart Paging "
        "file's life on the host clock, as the run saw it (polled every 0.1 s; null: no "
        "file, or still there).",
    ),
    "status": _obj(
        _STATUS,
        "A VM as Get-VM shows it.",
    ),
    "sample": _obj(
        {"time": _num, "available_memory": _int, "vms": _arr({"$ref": "#/$defs/status"})},
        "The host at one balancer tick.",
    ),
    "cdf": _obj(
        {"seconds": _arr(_num), "fraction": _arr({"type": "number", "minimum": 0, "maximum": 1})},
        "Fault latency over the restart boots (faults that waited on the disk: the victim's "
        "write-back plus the page-in): the fraction of faults at or below each latency.",
    ),
    "summary": _obj(
        {
            "event": _nint,
            "vms": _int,
            "boot_time": _nnum,
            "baseline": _nnum,
            "slowdown": _nnum,
            "smart_paging_vms": _int,
            "smart_paging_peak_bytes": _int,
            "smart_paging_seconds": _nnum,
            "page_ins": _int,
            "page_outs": _int,
            "fault_p50": _nnum,
            "fault_p99": _nnum,
            "device_io_confirmed": _nbool,
        },
        "The storm (the first restart event): boot_time is its slowest boot, baseline the "
        "slowest full-memory boot of the same VMs. Since version 2, the cost of Smart "
        "Paging: smart_paging_slowest_vm is the VM that paged and slowed most against its "
        "own baseline (smart_paging_boot_time / smart_paging_baseline = "
        "smart_paging_slowdown); others_slowdown the most a VM that did not page slowed.",
    ),
    "event": _obj(
        {
            "index": _int,
            "action": _str,
            "description": _str,
            "seconds": _num,
            "note": _str,
            "outcomes": {
                "type": "object",
                "description": "reboot-host: what each VM did (RebootOutcome: vm, stop_action, "
                "start_action, start_delay, result, error, at); empty for other events",
            },
        }
    ),
    "compare_row": _obj(
        {
            "location": _str,
            "device": _nstr,
            "model": _nstr,
            "rotational": _nbool,
            "ram_backed": _nbool,
            "fstype": _nstr,
            "outcome": _OUTCOME,
            "boot_time": _nnum,
            "own_baseline": _nnum,
            "slowdown": _nnum,
            "smart_paging_peak_bytes": _int,
            "page_ins": _int,
            "page_outs": _int,
            "fault_p50": _nnum,
            "fault_p90": _nnum,
            "fault_p99": _nnum,
            "device_io_confirmed": _nbool,
        },
        "One location; slowdown = its storm time / the baseline run's storm time.",
    ),
}
_since_v2(
    _DEFS["boot"],
    {"smart_paging_file_created_at": _nnum, "smart_paging_file_deleted_at": _nnum},
)
_since_v2(
    _DEFS["summary"],
    {
        "smart_paging_slowest_vm": _nstr,
        "smart_paging_boot_time": _nnum,
        "smart_paging_baseline": _nnum,
        "smart_paging_slowdown": _nnum,
        "others_slowdown": _nnum,
    },
)
# Version 3: boot_time is the boot's own clock, its parts and the emulator's share beside it.
_since_v2(_DEFS["boot"], {name: _nnum for name in _V3_BOOT})
# page-ins from the Smart Paging file after the boot, until the host rebalanced the VM
_since_v2(_DEFS["boot"], {"page_ins_after_boot": _int})
_since_v2(_DEFS["summary"], {"emulator_seconds": _nnum, "emulator_cpu_seconds": _nnum})
_DEFS["boot"]["description"] += (
    " Since version 3, boot_time is the boot's own clock: guest_seconds (its CPU time and "
    "pauses, as declared) + fault_wait_seconds + disk_seconds + memory_wait_seconds (its "
    "waits, measured); before, the wall clock's. The emulator's share, never in boot_time: "
    "wall_seconds (the wall clock's time for the boot), emulator_seconds (how far that ran "
    "behind boot_time) and emulator_cpu_seconds (the CPU time of the VM's guest thread)."
)
_DEFS["summary"]["description"] += (
    " Since version 3: emulator_seconds and emulator_cpu_seconds, the most of the storm's boots."
)
_VERSION = {
    "enum": list(READABLE_VERSIONS),
    "description": "3 is written now; 1 and 2 (without the later fields) are still read.",
}
_DEFS["prediction"] = _obj(
    {
        "guest": _str,
        "assigned_bytes": _int,
        "page_ins": _int,
        "page_outs": _int,
        "smart_paging_peak_bytes": _int,
        "report_peak_bytes": _int,
        "no_paging_bytes": _int,
        "cpu_seconds": _num,
        "disk_reads": _int,
        "disk_writes": _int,
        "boot_seconds": _nnum,
    },
    "One restarting VM's boot predicted from its accesses (its recorded guest's trace, or the "
    "synthetic boot's) with exact LRU and the "
    "memory it gets for the whole boot: smart_paging_peak_bytes is the most held only in the "
    "file at once, report_peak_bytes the same as a boot report counts it (with never-written "
    "pages dropped), no_paging_bytes the least memory (2 MB blocks) with no paging, "
    "boot_seconds null without a latency.",
)
# Only what `vmmem plan --json` added in version 2 of its output is described: the rest of
# the plan is free-form, and a result file written before it has neither field.
_DEFS["plan"] = {
    "type": "object",
    "description": "`vmmem plan --json`.",
    "properties": {
        "latency": {
            "oneOf": [{"type": "null"}, _obj({"read": _num, "write": _num})],
            "description": "The disk latency (seconds per 4 KiB request) of the boot times.",
        },
        "events": _arr(
            {
                "type": "object",
                "properties": {
                    "predicted": {
                        "type": "object",
                        "additionalProperties": {"$ref": "#/$defs/prediction"},
                        "description": "VM -> its boot predicted from its accesses "
                        "(restart events).",
                    }
                },
            }
        ),
    },
}
_DEFS["run"] = _obj(
    {
        "kind": {"const": "vmmem-run"},
        "schema_version": _VERSION,
        "outcome": _OUTCOME,
        "error": _nstr,
        "verdict": _str,
        "started": _str,
        "duration": _num,
        "machine": {"$ref": "#/$defs/machine"},
        "settings": _obj(
            {
                "backend": {"enum": ["direct", "mmap"]},
                "policy": _str,
                "page_size": _int,
                "host_folder": _str,
                "paging_folders": _arr(_str),
            }
        ),
        "scenario": {"$ref": "#/$defs/scenario"},
        "plan": {
            "oneOf": [{"type": "null"}, {"$ref": "#/$defs/plan"}],
            "description": "What `vmmem plan` predicted for the same scenario.",
        },
        "summary": {"$ref": "#/$defs/summary"},
        "events": _arr({"$ref": "#/$defs/event"}),
        "boots": _arr({"$ref": "#/$defs/boot"}),
        "final_status": _arr({"$ref": "#/$defs/status"}),
        "locations": _arr({"$ref": "#/$defs/location"}),
        "fault_latency_cdf": {"$ref": "#/$defs/cdf"},
        "fault_latency_percentiles": _obj({"p50": _nnum, "p90": _nnum, "p99": _nnum}),
        "timeline": _arr({"$ref": "#/$defs/sample"}),
        "leftover_files": _arr(_str),
        "earlier_runs": _arr(_str),
        "warnings": _arr(_str),
    },
    "`vmmem run --json FILE`.",
)
_DEFS["compare"] = _obj(
    {
        "kind": {"const": "vmmem-compare"},
        "schema_version": _VERSION,
        "outcome": _OUTCOME,
        "error": _nstr,
        "summary": _str,
        "started": _str,
        "duration": _num,
        "machine": {"$ref": "#/$defs/machine"},
        "rows": _arr({"$ref": "#/$defs/compare_row"}),
        "baseline": {"oneOf": [{"type": "null"}, {"$ref": "#/$defs/run"}]},
        "runs": _arr(_obj({"location": _str, "run": {"$ref": "#/$defs/run"}})),
    },
    "`vmmem compare --json FILE`.",
)

RESULT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "vmmem run and compare results",
    "description": "What `vmmem run --json` and `vmmem compare --json` write (`kind` says "
    "which). Sizes are bytes, times seconds. Objects may gain fields in later "
    "versions; schema_version changes when a field changes meaning.",
    "oneOf": [{"$ref": "#/$defs/run"}, {"$ref": "#/$defs/compare"}],
    "$defs": _DEFS,
}


def schema_json() -> str:
    return json.dumps(RESULT_SCHEMA, indent=2) + "\n"


if __name__ == "__main__":
    print(schema_json(), end="")
