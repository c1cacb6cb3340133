"""A real Hyper-V host as a scenario: what an administrator exports with PowerShell, read back.

Input: one or more JSON files, each recognised by its content (never by its name):

- ``Get-VM | Select-Object Name, State, Generation, ProcessorCount, DynamicMemoryEnabled,
  MemoryStartup, MemoryMinimum, MemoryMaximum, MemoryAssigned, MemoryDemand,
  AutomaticStartAction, AutomaticStartDelay, AutomaticStopAction, SmartPagingFilePath, Path |
  ConvertTo-Json`` (a plain ``Get-VM | ConvertTo-Json`` holds the same properties);
- ``Get-VMMemory -VMName * | ConvertTo-Json``: Buffer and Priority, which Get-VM lacks;
- ``Get-VMHost | ConvertTo-Json``: MemoryCapacity;
- the file ``tools/Export-VmmemHost.ps1`` writes: all three, plus the host's root reserve
  (the ``MemoryReserve`` registry value, or the Dynamic Memory balancer's available memory).

Output: a scenario TOML a person can read and edit, every value commented with where it came
from (``export_to_toml``), or the validated Scenario (``import_scenario``).

What PowerShell writes, and how it is read:

- Windows PowerShell 5.1 writes enums as integers, PowerShell 7 too unless ``-EnumsAsStrings``;
  both are read. Integers are taken only where Microsoft documents them (the tables below);
  any other integer is refused with a request to export with ``-EnumsAsStrings``.
- ConvertTo-Json writes a single object, not a one-element array: both are read. Windows
  PowerShell 5.1 may wrap an array as ``{"value": [...], "Count": n}``: unwrapped.
- Sizes are bytes. Dates are ``\\/Date(ms)\\/`` (5.1) or ISO 8601 (7).
- A file may start with a byte-order mark and be UTF-8, UTF-16 LE or BE (what ``Out-File``
  and ``>`` write in 5.1).
- ConvertTo-Json's default ``-Depth 2`` writes nested objects as their type name
  ("Microsoft.HyperV.PowerShell.VMMemory") or as "@{Name=...}": refused, naming the depth.

How a host becomes a scenario: every VM keeps its settings (Hyper-V's own checks, from
vmmem.hyperv.settings, refuse what Hyper-V would refuse); a Running (or Paused) VM is started by
the first event and idles at its MemoryDemand; an Off or Saved VM is not started, so it holds
no memory, as on the host. The events are the questions a host raises: the patch night (every
running VM restarts at once) and a host reboot (each VM's automatic stop and start actions).

Every error is a ScenarioError naming the file and the field.
"""

from __future__ import annotations

import codecs
import datetime as _dt
import json
import math
import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vmmem.errors import SettingsError
from vmmem.hyperv.settings import (
    MAXIMUM_PROCESSORS_BY_GENERATION,
    MEMORY_ALIGNMENT,
    validate_settings,
)
from vmmem.lab.scenario_model import Scenario, ScenarioError
from vmmem.sizes import MB
from vmmem.validate import open_regular_file

__all__ = [
    "ExportError",
    "HostExport",
    "export_to_toml",
    "import_scenario",
    "looks_like_export",
    "read_exports",
]

# ---------------------------------------------------------------------------------------------
# What the integers mean, from Microsoft's own sources.

# Microsoft.HyperV.PowerShell.VMState. PowerShell's source mirrors it ("This is the same as
# VMState in \vm\ux\powershell\objects\common\Types.cs"): PowerShell/PowerShell,
# src/System.Management.Automation/engine/remoting/commands/PSRemotingCmdlet.cs, enum VMState;
# each value is the WMI Msvm_ComputerSystem.EnabledState it corresponds to.
VM_STATES = {
    1: "Other",
    2: "Running",  # EnabledState Enabled
    3: "Off",  # Disabled
    4: "Stopping",  # ShuttingDown
    6: "Saved",  # Enabled but offline
    9: "Paused",  # Quiesce
    10: "Starting",
    11: "Reset",
    32773: "Saving",
    32776: "Pausing",
    32777: "Resuming",
    32779: "FastSaved",
    32780: "FastSaving",
    32781: "ForceShutdown",
    32782: "ForceReboot",
}
# The "...Critical" states follow in that enum without written values: their names are read
# (-EnumsAsStrings), their integers are not guessed.
CRITICAL_STATES = (
    "RunningCritical",
    "OffCritical",
    "StoppingCritical",
    "SavedCritical",
    "PausedCritical",
    "StartingCritical",
    "ResetCritical",
    "SavingCritical",
    "PausingCritical",
    "ResumingCritical",
    "FastSavedCritical",
    "FastSavingCritical",
)
# The states a host can be imported in: a VM holding its memory (Running, Paused) or not (Off,
# Saved). The others are moments of a transition: export again once it is over.
SETTLED_STATES = ("Running", "Paused", "Off", "Saved")

# Get-VM's AutomaticStartAction and AutomaticStopAction are Msvm_VirtualSystemSettingData's
# AutomaticStartupAction and AutomaticShutdownAction (inherited from
# CIM_VirtualSystemSettingData), https://learn.microsoft.com/windows/win32/hyperv_v2/
# msvm-virtualsystemsettingdata and .../cim-virtualsystemsettingdata:
#   AutomaticStartupAction: None (2), Restart if previously active (3), Always startup (4)
#   AutomaticShutdownAction: Turn Off (2), Save state (3), Shutdown (4)
# named as Set-VM -AutomaticStartAction / -AutomaticStopAction take them.
START_ACTIONS = {2: "Nothing", 3: "StartIfRunning", 4: "Start"}
STOP_ACTIONS = {2: "TurnOff", 3: "Save", 4: "ShutDown"}
_WMI_START = {2: "None", 3: "Restart if previously active", 4: "Always startup"}
_WMI_STOP = {2: "Turn Off", 3: "Save state", 4: "Shutdown"}

# Get-VM | Select-Object ... : the properties the brief command selects.
VM_PROPERTIES = (
    "Name",
    "State",
    "Generation",
    "ProcessorCount",
    "DynamicMemoryEnabled",
    "MemoryStartup",
    "MemoryMinimum",
    "MemoryMaximum",
    "MemoryAssigned",
    "MemoryDemand",
    "AutomaticStartAction",
    "AutomaticStartDelay",
    "AutomaticStopAction",
    "SmartPagingFilePath",
    "Path",
)
EXPORT_FORMAT = "vmmem-hyperv-export"  # what tools/Export-VmmemHost.ps1 writes in "Format"
IDLE_SECONDS = 3.0
SETTLE_TIMEOUT = 300.0

_ASK_STRINGS = (
    "export again with ConvertTo-Json -EnumsAsStrings (PowerShell 7), or with "
    "tools/Export-VmmemHost.ps1, which writes the names"
)
_ASK_DEPTH = (
    "the export is truncated: ConvertTo-Json stopped at its default -Depth 2 and wrote this "
    "object as text; export again with ConvertTo-Json -Depth 4 (tools/Export-VmmemHost.ps1 does)"
)
_TRUNCATED = re.compile(r"^(@\{.*\}|(Microsoft|System)\.[A-Za-z0-9_.`\[\], ]+)$", re.S)


class ExportError(ScenarioError):
    """A Hyper-V export that cannot be read: names the file and the field."""


# ---------------------------------------------------------------------------------------------
# Reading files


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def _encoding(raw: bytes) -> tuple[str, int, str]:
    """The encoding of ``raw``, the length of its byte-order mark, and a word for people."""
    for bom, name in _BOMS:
        if raw.startswith(bom) and not (name == "utf-32-le" and len(raw) % 4):
            return name, len(bom), f"{name.upper()} with a byte-order mark"
    # Without a mark: UTF-16 shows as a zero byte beside every ASCII character.
    head = raw[:64]
    if len(head) >= 2 and head[1::2].count(0) > len(head) // 4 and head[0] != 0:
        return "utf-16-le", 0, "UTF-16-LE"
    if len(head) >= 2 and head[0::2].count(0) > len(head) // 4 and head[1] != 0:
        return "utf-16-be", 0, "UTF-16-BE"
    return "utf-8", 0, "UTF-8"


def _decode(raw: bytes, source: str) -> str:
    name, skip, what = _encoding(raw)
    try:
        text = raw[skip:].decode(name)
    except UnicodeDecodeError as e:
        raise ExportError(
            source,
            "",
            f"not readable as {what} (byte {e.start + skip}: {e.reason}); Set-Content writes "
            "the system's ANSI code page: write the file with Out-File -Encoding utf8",
        ) from None
    return text.lstrip("\ufeff")


# An export of a host at Hyper-V's limit (1,024 VMs, every property) is a few MB.
MAX_EXPORT_BYTES = 64 * 2**20


def _read(source: str) -> bytes:
    try:
        # Only a regular file: a FIFO is refused, never waited on (O_NONBLOCK open).
        f, _ = open_regular_file(source)
        with f:
            data = f.read(MAX_EXPORT_BYTES + 1)
    except FileNotFoundError:
        raise ExportError(source, "", "no such file") from None
    except IsADirectoryError:
        raise ExportError(source, "", "is a folder; expected a JSON export file") from None
    except OSError as e:
        raise ExportError(source, "", f"cannot read: {e.strerror or e}") from None
    except ValueError as e:  # not a regular file
        raise ExportError(source, "", str(e)) from None
    if len(data) > MAX_EXPORT_BYTES:
        raise ExportError(
            source, "", f"is over {MAX_EXPORT_BYTES:,} bytes: larger than any host's export"
        )
    return data


def looks_like_export(path: str | os.PathLike[str]) -> bool:
    """Whether the file at ``path`` holds JSON (a Hyper-V export) rather than TOML: its first
    character, after any byte-order mark and white space, opens a JSON object or array (a TOML
    scenario starts with a key, a comment or a [table] header followed by a name)."""
    try:
        f, _ = open_regular_file(path)
        with f:
            raw = f.read(4096)
    except (OSError, ValueError):
        return False  # the scenario loader reports it
    name, skip, _ = _encoding(raw)
    text = raw[skip:].decode(name, errors="ignore").lstrip("\ufeff \t\r\n")
    if text.startswith("{"):
        return True
    # "[" opens a JSON array or a TOML table header ("[host]", "[[vm]]", '["a b"]'). An export
    # is an array of objects ("[{"), or of strings (a truncated one) across several lines.
    if re.match(r"\[\s*[\{\]]", text):
        return True
    first_line = text.split("\n", 1)[0]
    return bool(re.match(r'\[\s*"', text)) and not re.fullmatch(
        r"\[[^\]]*\]\s*(#.*)?", first_line.strip()
    )


def _load_json(source: str) -> Any:
    text = _decode(_read(source), source)
    if not text.strip():
        raise ExportError(source, "", "empty: expected the JSON ConvertTo-Json writes")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise ExportError(
            source, "", f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"
        ) from None
    except (ValueError, RecursionError) as e:
        raise ExportError(source, "", f"not valid JSON ({e})") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# ---------------------------------------------------------------------------------------------
# Typed, located values


@dataclass
class _Ctx:
    """Where a record came from, for messages: the file and the record's name in it."""

    source: str
    where: str  # e.g. 'VM[2] ("web1")'

    def fail(self, prop: str, message: str) -> ExportError:
        key = f"{self.where}.{prop}" if prop and self.where else prop or self.where
        return ExportError(self.source, key, message)


def _show(value: Any) -> str:
    if isinstance(value, str):
        shown = json.dumps(value if len(value) <= 60 else value[:57] + "...", ensure_ascii=False)
        return _printable(shown)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return repr(value)


class _Record:
    """One object of an export, its properties looked up without regard to case (PowerShell's
    ConvertFrom-Json does the same)."""

    def __init__(self, data: dict[str, Any], ctx: _Ctx):
        self.ctx = ctx
        self.data = {str(k).lower(): v for k, v in data.items()}

    def has(self, prop: str) -> bool:
        return self.data.get(prop.lower()) is not None

    def raw(self, prop: str) -> Any:
        return self.data.get(prop.lower())

    def _scalar(self, prop: str, expected: str) -> Any:
        v = self.raw(prop)
        if v is None:
            raise self.ctx.fail(prop, f"missing: expected {expected}")
        if isinstance(v, (dict, list)):
            raise self.ctx.fail(prop, f"expected {expected}, got {_show(v)}")
        if isinstance(v, str) and _TRUNCATED.match(v) and expected != "a name":
            raise self.ctx.fail(prop, f"holds {_show(v)}: {_ASK_DEPTH}")
        return v

    def integer(self, prop: str, lo: int, hi: int, what: str = "a whole number") -> int:
        v = self._scalar(prop, what)
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.ctx.fail(prop, f"expected {what}, got {_show(v)}")
        if not lo <= v <= hi:
            raise self.ctx.fail(prop, f"expected {what} from {lo} to {hi}, got {v}")
        return v

    def size(self, prop: str) -> int:
        return self.integer(prop, 0, 2**63 - 1, "a size in bytes")

    def boolean(self, prop: str) -> bool:
        v = self._scalar(prop, "true or false")
        if not isinstance(v, bool):
            raise self.ctx.fail(prop, f"expected true or false, got {_show(v)}")
        return v

    def text(self, prop: str) -> str:
        v = self._scalar(prop, "a name")
        if not isinstance(v, str) or not v.strip():
            raise self.ctx.fail(prop, f"expected a non-empty string, got {_show(v)}")
        return v

    def optional_text(self, prop: str) -> str | None:
        v = self.raw(prop)
        return v if isinstance(v, str) and v.strip() else None

    def enum(self, prop: str, ints: dict[int, str], names: Sequence[str], doc: str) -> str:
        """A PowerShell enum written as its integer (5.1; 7 by default) or its name
        (-EnumsAsStrings): the name, as Set-VM takes it."""
        v = self._scalar(prop, "one of " + ", ".join(names))
        if isinstance(v, str):
            for known_name in names:
                if v.strip().lower() == known_name.lower():
                    return known_name
            raise self.ctx.fail(prop, f"expected one of {', '.join(names)}, got {_show(v)}")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.ctx.fail(prop, f"expected one of {', '.join(names)}, got {_show(v)}")
        if isinstance(v, float) and not v.is_integer():
            raise self.ctx.fail(prop, f"expected one of {', '.join(names)}, got {_show(v)}")
        n = int(v)
        if n not in ints:
            known = ", ".join(f"{i} ({name})" for i, name in ints.items())
            raise self.ctx.fail(
                prop,
                f"the integer {n} is not one {doc} documents ({known}), so its meaning "
                f"cannot be confirmed: {_ASK_STRINGS}",
            )
        return ints[n]


# ---------------------------------------------------------------------------------------------
# What an export holds


@dataclass
class VMRecord:
    """One VM as Get-VM (and Get-VMMemory) showed it. Sizes in bytes."""

    name: str
    source: str
    where: str
    state: str
    dynamic: bool
    startup: int
    minimum: int | None
    maximum: int | None
    assigned: int | None
    demand: int | None
    generation: int | None
    processors: int | None
    start_action: str | None
    start_action_raw: Any
    stop_action: str | None
    stop_action_raw: Any
    start_delay: int | None
    smart_paging_path: str | None
    path: str | None
    buffer: int | None = None
    priority: int | None = None
    memory_source: str | None = None  # the Get-VMMemory file, when one named this VM


@dataclass
class HostExport:
    """Everything read from the files given, with where each part came from."""

    sources: list[str] = field(default_factory=list)
    kinds: dict[str, list[str]] = field(default_factory=dict)  # file -> what it held
    vms: list[VMRecord] = field(default_factory=list)
    host_name: str | None = None
    host_source: str | None = None
    capacity: int | None = None
    processors: int | None = None
    reserve_registry_mb: int | None = None  # MemoryReserve (MB), when set
    balancer_available_mb: float | None = None  # the balancer's Available Memory (MB)
    reserve_source: str | None = None
    exported_at: str | None = None
    ps_version: str | None = None


def _unwrap(value: Any) -> Any:
    """Windows PowerShell 5.1 writes some arrays as {"value": [...], "Count": n}."""
    if isinstance(value, dict):
        keys = {str(k).lower() for k in value}
        if keys == {"value", "count"} and isinstance(_get(value, "value"), list):
            return _get(value, "value")
    return value


def _get(d: dict[str, Any], key: str) -> Any:
    for k, v in d.items():
        if str(k).lower() == key.lower():
            return v
    return None


def _records(value: Any, source: str, label: str) -> list[_Record]:
    """The objects of one section: a single object (ConvertTo-Json unwraps one-element
    arrays) or an array of them."""
    value = _unwrap(value)
    items = value if isinstance(value, list) else [value]
    out = []
    for i, item in enumerate(items):
        where = f"{label}[{i}]" if isinstance(value, list) else label
        item = _unwrap(item)
        if isinstance(item, str) and _TRUNCATED.match(item):
            raise ExportError(source, where, f"holds {_show(item)}: {_ASK_DEPTH}")
        if not isinstance(item, dict):
            raise ExportError(source, where, f"expected an object, got {_show(item)}")
        name = _get(item, "Name") if label != "VMMemory" else _get(item, "VMName")
        if isinstance(name, str) and name.strip():
            where = f'{where} ("{_printable(name)}")'
        out.append(_Record(item, _Ctx(source, where)))
    return out


def _kind(doc: Any) -> str | None:
    """What one JSON document is, from its content."""
    doc = _unwrap(doc)
    if isinstance(doc, dict):
        keys = {str(k).lower() for k in doc}
        if str(_get(doc, "Format")) == EXPORT_FORMAT or {"vmhost", "vm"} <= keys:
            return "combined"
    first = doc[0] if isinstance(doc, list) and doc else doc
    first = _unwrap(first)
    if isinstance(first, str) and _TRUNCATED.match(first):
        return "truncated"
    if not isinstance(first, dict):
        return None
    keys = {str(k).lower() for k in first}
    if "memorystartup" in keys and "name" in keys:
        return "Get-VM"
    if "vmname" in keys and "startup" in keys and ({"buffer", "priority"} & keys):
        return "Get-VMMemory"
    if "memorycapacity" in keys:
        return "Get-VMHost"
    return None


def read_exports(paths: Sequence[str | os.PathLike[str]]) -> HostExport:
    """Read every file, recognise what each holds, and gather the host. Raises ExportError."""
    out = HostExport()
    memory: list[_Record] = []
    if not paths:
        raise ExportError("<import>", "", "no file given")
    for p in paths:
        source = os.fspath(p)
        out.sources.append(source)
        doc = _load_json(source)
        kind = _kind(doc)
        if kind == "combined":
            _read_combined(out, doc, source, memory)
        elif kind == "Get-VM":
            out.kinds.setdefault(source, []).append("Get-VM")
            _add_vms(out, _records(doc, source, "VM"))
        elif kind == "Get-VMMemory":
            out.kinds.setdefault(source, []).append("Get-VMMemory")
            memory.extend(_records(doc, source, "VMMemory"))
        elif kind == "Get-VMHost":
            out.kinds.setdefault(source, []).append("Get-VMHost")
            _set_host(out, _records(doc, source, "VMHost"), source)
        elif kind == "truncated":
            items = _unwrap(doc)
            first = items[0] if isinstance(items, list) else items
            where = "[0]" if isinstance(items, list) else ""
            raise ExportError(source, where, f"holds {_show(first)}: {_ASK_DEPTH}")
        else:
            raise ExportError(source, "", _unknown_message(doc))
    _merge_memory(out, memory)
    if not out.vms:
        raise ExportError(
            ", ".join(out.sources),
            "",
            "no VM: give Get-VM's output (Get-VM | Select-Object Name, State, ... | "
            "ConvertTo-Json) or the file tools/Export-VmmemHost.ps1 writes",
        )
    if out.capacity is None:
        raise ExportError(
            ", ".join(out.sources),
            "",
            "no host memory: give Get-VMHost's output too (Get-VMHost | ConvertTo-Json, for "
            "MemoryCapacity), or the file tools/Export-VmmemHost.ps1 writes",
        )
    return out


def _unknown_message(doc: Any) -> str:
    doc = _unwrap(doc)
    first = doc[0] if isinstance(doc, list) and doc else doc
    found = ""
    if isinstance(first, dict):
        keys = sorted(str(k) for k in first)[:12]
        found = f" (it has: {', '.join(keys) or 'no properties'})"
    elif isinstance(doc, list) and not doc:
        found = " (an empty array: did Get-VM find no VM?)"
    else:
        found = f" (it holds {_show(first)})"
    return (
        "not a Hyper-V export vmmem knows" + found + ": expected the JSON of Get-VM | "
        "Select-Object Name, State, ..., Get-VMMemory -VMName *, Get-VMHost, or the file "
        "tools/Export-VmmemHost.ps1 writes"
    )


def _read_combined(out: HostExport, doc: Any, source: str, memory: list[_Record]) -> None:
    doc = _unwrap(doc)
    top = _Record(doc, _Ctx(source, ""))
    kinds = out.kinds.setdefault(source, [])
    kinds.append("tools/Export-VmmemHost.ps1")
    for prop in ("VMHost", "VM"):
        if top.raw(prop) is None:
            raise ExportError(source, prop, f"missing: the export holds no {prop}")
    _set_host(out, _records(top.raw("VMHost"), source, "VMHost"), source)
    vms = _unwrap(top.raw("VM"))
    if vms == []:
        raise ExportError(source, "VM", "empty: the host has no VM")
    _add_vms(out, _records(vms, source, "VM"))
    if top.raw("VMMemory") is not None and _unwrap(top.raw("VMMemory")) != []:
        memory.extend(_records(top.raw("VMMemory"), source, "VMMemory"))
    reserve = top.raw("MemoryReserve")
    if reserve is not None:
        out.reserve_registry_mb = _Record(doc, _Ctx(source, "")).integer(
            "MemoryReserve", 0, 2**40, "the MemoryReserve registry value in MB"
        )
        out.reserve_source = source
    available = top.raw("BalancerAvailableMemory")
    if available is not None:
        if (
            isinstance(available, bool)
            or not isinstance(available, (int, float))
            or not math.isfinite(available)
        ):
            raise ExportError(
                source,
                "BalancerAvailableMemory",
                f"expected a number of MB, got {_show(available)}",
            )
        out.balancer_available_mb = float(available)
        out.reserve_source = out.reserve_source or source
    when = top.raw("ExportedAt")
    if when is not None:
        out.exported_at = _date(when, _Ctx(source, "ExportedAt"))
    version = top.raw("PSVersion")
    if isinstance(version, str):
        out.ps_version = _printable(version)


_MS_DATE = re.compile(r"^/Date\((-?\d{1,15})([+-]\d{4})?\)/$")


def _date(value: Any, ctx: _Ctx) -> str:
    """A date as PowerShell writes it: "\\/Date(ms)\\/" (5.1), ISO 8601 (7), or 5.1's Get-Date
    object {"value": ..., "DateTime": ...}; returned as ISO 8601 (UTC where known)."""
    if isinstance(value, dict):
        value = _get(value, "value")
    if isinstance(value, str):
        m = _MS_DATE.match(value.strip())
        if m:
            try:
                t = _dt.datetime.fromtimestamp(int(m.group(1)) / 1000, _dt.UTC)
            except (OverflowError, OSError, ValueError):
                raise ctx.fail("", f"a date out of range: {_show(value)}") from None
            return t.strftime("%Y-%m-%d %H:%M:%S UTC")
        try:
            return _dt.datetime.fromisoformat(value.strip()).isoformat(timespec="seconds")
        except ValueError:
            pass
    raise ctx.fail("", f'expected a date ("\\/Date(ms)\\/" or ISO 8601), got {_show(value)}')


def _set_host(out: HostExport, records: list[_Record], source: str) -> None:
    if len(records) != 1:
        raise ExportError(source, "VMHost", f"expected one host, got {len(records)}")
    r = records[0]
    if out.capacity is not None:
        raise ExportError(
            source, "VMHost", f"a second host: {out.host_source} already gave one; give one host"
        )
    out.capacity = r.size("MemoryCapacity")
    name = r.optional_text("Name") or r.optional_text("ComputerName")
    out.host_name = _printable(name) if name else None
    if r.has("LogicalProcessorCount"):
        out.processors = r.integer("LogicalProcessorCount", 1, 1 << 20)
    out.host_source = source


def _add_vms(out: HostExport, records: list[_Record]) -> None:
    for r in records:
        vm = _vm(r)
        for other in out.vms:
            if other.name.lower() == vm.name.lower():
                raise r.ctx.fail(
                    "Name",
                    f'a second VM named "{vm.name}" (also {other.source}: {other.where}): '
                    "Hyper-V allows it, a scenario names each VM once; rename one, or export "
                    "each host's VMs once",
                )
        out.vms.append(vm)


def _vm(r: _Record) -> VMRecord:
    name = r.text("Name")
    state = r.enum(
        "State",
        VM_STATES,
        tuple(VM_STATES.values()) + CRITICAL_STATES,
        "PowerShell's VMState (Msvm_ComputerSystem.EnabledState)",
    )
    if state not in SETTLED_STATES:
        why = (
            "its storage cannot be reached (a Critical state): fix that, then export again"
            if state.endswith("Critical")
            else "a transition: export again once it has finished"
        )
        raise r.ctx.fail("State", f"{state}: {why} (readable states: Running, Paused, Off, Saved)")
    dynamic = r.boolean("DynamicMemoryEnabled")
    startup = r.size("MemoryStartup")
    minimum = r.size("MemoryMinimum") if dynamic else None
    maximum = r.size("MemoryMaximum") if dynamic else None
    start_raw, stop_raw = r.raw("AutomaticStartAction"), r.raw("AutomaticStopAction")
    generation = r.integer("Generation", 1, 2) if r.has("Generation") else None
    return VMRecord(
        name=name,
        source=r.ctx.source,
        where=r.ctx.where,
        state=state,
        dynamic=dynamic,
        startup=startup,
        minimum=minimum,
        maximum=maximum,
        assigned=r.size("MemoryAssigned") if r.has("MemoryAssigned") else None,
        demand=r.size("MemoryDemand") if r.has("MemoryDemand") else None,
        generation=generation,
        processors=(
            r.integer(
                "ProcessorCount",
                1,
                MAXIMUM_PROCESSORS_BY_GENERATION[generation or 2],
                f"a whole number of virtual processors (Hyper-V's maximum for a generation "
                f"{generation or 2} VM)",
            )
            if r.has("ProcessorCount")
            else None
        ),
        start_action=(
            r.enum(
                "AutomaticStartAction",
                START_ACTIONS,
                tuple(START_ACTIONS.values()),
                "Msvm_VirtualSystemSettingData.AutomaticStartupAction",
            )
            if start_raw is not None
            else None
        ),
        start_action_raw=start_raw,
        stop_action=(
            r.enum(
                "AutomaticStopAction",
                STOP_ACTIONS,
                tuple(STOP_ACTIONS.values()),
                "Msvm_VirtualSystemSettingData.AutomaticShutdownAction",
            )
            if stop_raw is not None
            else None
        ),
        stop_action_raw=stop_raw,
        start_delay=(
            r.integer("AutomaticStartDelay", 0, 86400, "a number of seconds")
            if r.has("AutomaticStartDelay")
            else None
        ),
        smart_paging_path=r.optional_text("SmartPagingFilePath"),
        path=r.optional_text("Path"),
    )


def _merge_memory(out: HostExport, memory: list[_Record]) -> None:
    """Buffer and Priority from Get-VMMemory, matched by VMName; its Startup, Minimum, Maximum
    and DynamicMemoryEnabled must agree with Get-VM's (else the files are from two moments)."""
    by_name = {v.name.lower(): v for v in out.vms}
    seen: set[str] = set()
    for r in memory:
        name = r.text("VMName")
        vm = by_name.get(name.lower())
        if vm is None:
            raise r.ctx.fail(
                "VMName",
                f'"{_printable(name)}" is not among the VMs of Get-VM\'s output '
                f"({', '.join(v.name for v in out.vms) or 'none'}): export both at the same time",
            )
        if name.lower() in seen:
            raise r.ctx.fail("VMName", f'a second Get-VMMemory entry for "{_printable(name)}"')
        seen.add(name.lower())
        checks: list[tuple[str, Any, Any]] = []
        if r.has("DynamicMemoryEnabled"):
            checks.append(("DynamicMemoryEnabled", r.boolean("DynamicMemoryEnabled"), vm.dynamic))
        if r.has("Startup"):
            checks.append(("Startup", r.size("Startup"), vm.startup))
        if vm.dynamic:
            if r.has("Minimum"):
                checks.append(("Minimum", r.size("Minimum"), vm.minimum))
            if r.has("Maximum"):
                checks.append(("Maximum", r.size("Maximum"), vm.maximum))
        for prop, got, want in checks:
            if got != want:
                raise r.ctx.fail(
                    prop,
                    f"{_show(got)} but Get-VM ({vm.source}, {vm.where}) says {_show(want)}: "
                    "the two exports were taken at different times; export both again",
                )
        if vm.dynamic:
            vm.buffer = r.integer("Buffer", 0, 10**6, "a percentage")
        vm.priority = r.integer("Priority", 0, 10**6, "a number from 0 to 100")
        vm.memory_source = r.ctx.source


# ---------------------------------------------------------------------------------------------
# Writing the scenario


def _printable(text: str) -> str:
    """``text`` fit for a TOML comment or a message: control characters shown as '?'."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _toml_string(text: str) -> str:
    out = []
    for c in text:
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif not c.isprintable() or c == "\x7f":
            out.append(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _mb(n: int) -> str:
    return f'"{n // MB}MB"'


def _human(n: int) -> str:
    return f"{n:,} bytes" if n % MB else f"{n:,} bytes = {n // MB:,} MB"


class _Lines:
    """TOML lines with their comments lined up."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, text: str = "", comment: str | None = None) -> None:
        if comment:
            text = f"{text:<34} # {_printable(comment)}" if text else f"# {_printable(comment)}"
        self.lines.append(text)

    def note(self, comment: str) -> None:
        self.lines.append(f"# {_printable(comment)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _enum_origin(prop: str, raw: Any, name: str, wmi: dict[int, str]) -> str:
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return f"{prop} {int(raw)} (Msvm_VirtualSystemSettingData: {wmi[int(raw)]})"
    return f"{prop} {name}"


def _check_vm(vm: VMRecord) -> None:
    """Hyper-V's own checks (vmmem.hyperv.settings), located at the export's field."""
    try:
        validate_settings(
            vm.name,
            vm.startup,
            vm.minimum,
            vm.maximum,
            vm.buffer,
            50 if vm.priority is None else vm.priority,
            vm.dynamic,
            generation=vm.generation or 2,
            automatic_stop_action=vm.stop_action or "Save",
            automatic_start_action=vm.start_action or "StartIfRunning",
            automatic_start_delay=vm.start_delay or 0,
        )
    except SettingsError as e:
        msg = str(e)
        # The setting the message is about is the first PowerShell parameter it names.
        named = [
            (msg.find(key), p)
            for key, p in (
                ("-StartupBytes", "MemoryStartup"),
                ("-MinimumBytes", "MemoryMinimum"),
                ("-MaximumBytes", "MemoryMaximum"),
                ("-Buffer", "Buffer"),
                ("-Priority", "Priority"),
                ("-Generation", "Generation"),
            )
            if key in msg
        ]
        prop = min(named)[1] if named else "Name"
        source = vm.memory_source if prop in ("Buffer", "Priority") else vm.source
        where = vm.where
        raise ExportError(
            source or vm.source, f"{where}.{prop}", f"Hyper-V would refuse this VM: {msg}"
        ) from None


def export_to_toml(paths: Sequence[str | os.PathLike[str]]) -> str:
    """The scenario TOML for the host in ``paths``, each value commented with its origin.
    Raises ExportError for an export that cannot be read or holds what Hyper-V would refuse."""
    h = read_exports(paths)
    for vm in h.vms:
        _check_vm(vm)
    assert h.capacity is not None and h.host_source is not None
    files = ", ".join(os.path.basename(s) for s in h.sources)
    host_name = h.host_name or os.path.splitext(os.path.basename(h.sources[0]))[0] or "host"
    running = [v for v in h.vms if v.state in ("Running", "Paused")]
    t = _Lines()
    t.note("A Hyper-V host, imported by `vmmem scenario import` from:")
    for s in h.sources:
        what = " + ".join(h.kinds.get(s, []))
        t.note(f"  {s}: {what}")
    if h.exported_at or h.ps_version:
        bits = [f"exported {h.exported_at}" if h.exported_at else "", h.ps_version or ""]
        t.note("  " + "; ".join(b for b in bits if b) + (" (PSVersion)" if h.ps_version else ""))
    t.note("Each value says where it came from. Edit freely; `vmmem scenario FILE` checks it.")
    t.add(f"name = {_toml_string(host_name)}")
    t.add(
        "description = "
        + _toml_string(
            f"Hyper-V host {host_name}: {len(h.vms)} VM{'s' if len(h.vms) != 1 else ''}, "
            f"{len(running)} running "
            f"(imported from {files})"
        )
    )
    t.add()
    t.add("[host]")
    memory = h.capacity // MEMORY_ALIGNMENT * MEMORY_ALIGNMENT
    if memory < MEMORY_ALIGNMENT:
        raise ExportError(
            h.host_source, "VMHost.MemoryCapacity", f"expected at least 2 MB, got {h.capacity}"
        )
    note = "" if memory == h.capacity else ", rounded down to 2 MB"
    t.add(
        f"memory = {_mb(memory)}",
        f"Get-VMHost MemoryCapacity: {_human(h.capacity)}{note} ({h.host_source})",
    )
    reserve, reserve_notes = _reserve(h, running, memory)
    t.add(f"reserve = {_mb(reserve)}", reserve_notes[0])
    for n in reserve_notes[1:]:
        t.note(n)
    if h.processors:
        t.note(f"Get-VMHost LogicalProcessorCount: {h.processors} (not modelled)")

    for vm in h.vms:
        t.add()
        _vm_toml(t, vm)

    t.add()
    t.note("What the host faces. Edit or remove events as you like (docs/CLI.md, Events).")
    if running:
        t.add("[[event]]")
        t.add('action = "start"', "the VMs Get-VM showed running, one by one; each then")
        t.add(
            "vms = [" + ", ".join(_toml_string(v.name) for v in running) + "]",
            "idles at its MemoryDemand. Off and Saved VMs are not started",
        )
        t.add("[[event]]")
        t.add('action = "idle"')
        t.add(f"seconds = {IDLE_SECONDS:g}")
        t.add("[[event]]")
        t.add('action = "restart-vms"', "the patch night: every running VM restarts at once")
        t.add("[[event]]")
        t.add('action = "settle"')
        t.add(f"timeout = {SETTLE_TIMEOUT:g}")
    t.add("[[event]]")
    t.add(
        'action = "reboot-host"',
        "the host reboots: each VM's automatic stop action, then its start action",
    )
    t.add("[[event]]")
    t.add('action = "settle"')
    t.add(f"timeout = {SETTLE_TIMEOUT:g}")
    return t.text()


def _reserve(h: HostExport, running: list[VMRecord], memory: int) -> tuple[int, list[str]]:
    """The host's root reserve (memory Hyper-V never gives to VMs) and where it came from."""
    notes: list[str]
    if h.reserve_registry_mb is not None:
        reserve = h.reserve_registry_mb * MB
        notes = [
            f"root reserve: registry MemoryReserve = {h.reserve_registry_mb} MB "
            f"({h.reserve_source})"
        ]
    elif h.balancer_available_mb is not None:
        held = sum(v.assigned or 0 for v in running)
        available = max(h.balancer_available_mb, 0.0) * MB
        reserve = max(int(h.capacity or 0) - int(available) - held, 0)
        notes = [
            "root reserve: MemoryCapacity - the balancer's Available Memory - running VMs'",
            f"  MemoryAssigned = {h.capacity:,} - {int(available):,} - {held:,} bytes, rounded "
            f"up to 2 MB (an estimate, {h.reserve_source})",
        ]
    else:
        reserve = 0
        notes = [
            "root reserve: not in these files, so VMs may use all of MemoryCapacity; Hyper-V",
            "  keeps some for the host: set it here, or export with tools/Export-VmmemHost.ps1",
        ]
    reserve = -(-reserve // MEMORY_ALIGNMENT) * MEMORY_ALIGNMENT
    if reserve >= memory:
        raise ExportError(
            h.reserve_source or h.host_source or "",
            "MemoryReserve",
            f"a root reserve of {reserve // MB} MB leaves no memory of the host's "
            f"{memory // MB} MB for VMs",
        )
    return reserve, notes


def _vm_toml(t: _Lines, vm: VMRecord) -> None:
    src = f"{vm.source}: {vm.where}"
    t.add("[[vm]]", f"{src}, State {vm.state}")
    t.add(f"name = {_toml_string(vm.name)}", "Name")
    t.add(f"startup = {_mb(vm.startup)}", f"MemoryStartup: {_human(vm.startup)}")
    t.add(f"dynamic = {'true' if vm.dynamic else 'false'}", "DynamicMemoryEnabled")
    if vm.dynamic:
        assert vm.minimum is not None and vm.maximum is not None
        t.add(f"minimum = {_mb(vm.minimum)}", f"MemoryMinimum: {_human(vm.minimum)}")
        t.add(f"maximum = {_mb(vm.maximum)}", f"MemoryMaximum: {_human(vm.maximum)}")
        if vm.buffer is not None:
            t.add(f"buffer = {vm.buffer}", f"Get-VMMemory Buffer ({vm.memory_source})")
        else:
            t.add("buffer = 20", "Hyper-V's default: Buffer is in Get-VMMemory's output only")
    if vm.priority is not None:
        t.add(f"priority = {vm.priority}", f"Get-VMMemory Priority ({vm.memory_source})")
    else:
        t.add("priority = 50", "Hyper-V's default: Priority is in Get-VMMemory's output only")
    if vm.generation is not None:
        t.add(f"generation = {vm.generation}", "Generation")
    else:
        t.add("generation = 2", "Hyper-V's default: Generation not in the export")
    if vm.processors is not None:
        t.add(f"processor_count = {vm.processors}", "ProcessorCount: its boot's guest threads")
    else:
        t.add("processor_count = 1", "New-VM's default: ProcessorCount not in the export")
    if vm.stop_action is not None:
        origin = _enum_origin("AutomaticStopAction", vm.stop_action_raw, vm.stop_action, _WMI_STOP)
        t.add(f"automatic_stop_action = {_toml_string(vm.stop_action)}", origin)
    else:
        t.add('automatic_stop_action = "Save"', "Hyper-V's default: not in the export")
    if vm.start_action is not None:
        origin = _enum_origin(
            "AutomaticStartAction", vm.start_action_raw, vm.start_action, _WMI_START
        )
        t.add(f"automatic_start_action = {_toml_string(vm.start_action)}", origin)
    else:
        t.add('automatic_start_action = "StartIfRunning"', "Hyper-V's default: not in the export")
    delay = 0 if vm.start_delay is None else vm.start_delay
    t.add(
        f"automatic_start_delay = {delay}",
        "AutomaticStartDelay (seconds)" if vm.start_delay is not None else "not in the export",
    )
    if vm.state == "Saved":
        t.note("Saved on the host: it holds no host memory, so it is not started here (like Off).")
        t.note(
            "  At a host reboot StartIfRunning leaves it as it is; Start would restore it, which"
        )
        t.note("  this scenario models as a start from Off (its Startup RAM).")
    if vm.state == "Paused":
        t.note("Paused on the host: it holds its memory as a running VM does, so it runs here.")
    for label, value in (("SmartPagingFilePath", vm.smart_paging_path), ("Path", vm.path)):
        if value:
            t.note(f"{label} on the host: {value} (vmmem's folders are given to run/compare)")
    _workload_toml(t, vm)


def _workload_toml(t: _Lines, vm: VMRecord) -> None:
    if not vm.dynamic:
        if vm.state in ("Running", "Paused"):
            t.note("static memory: it holds its Startup RAM whatever its demand")
        return
    if vm.state not in ("Running", "Paused"):
        t.note(
            f"{vm.state}: no MemoryDemand to idle at; if it starts, it idles at vmmem's default "
            "(250/512 of Startup RAM)"
        )
        return
    demand, origin = vm.demand, "MemoryDemand"
    if not demand:
        # No demand reported (no integration services): the balancer cannot shrink it, so it
        # keeps what it was assigned.
        demand, origin = vm.assigned, "MemoryAssigned (MemoryDemand 0: the guest reports none)"
    if not demand:
        t.note("no MemoryDemand or MemoryAssigned: idles at vmmem's default (250/512 of Startup)")
        return
    idle = min(max(-(-demand // MB) * MB, MB), vm.startup)
    note = f"{origin}: {_human(demand)}"
    if demand > vm.startup:
        note += "; an idle guest here holds at most its Startup RAM"
    elif idle != demand:
        note += ", rounded up to 1 MB"
    if vm.assigned is not None and origin == "MemoryDemand":
        note += f" (MemoryAssigned {vm.assigned // MB:,} MB)"
    t.add("[vm.workload]")
    t.add(f"idle_demand = {_mb(idle)}", note)


def import_scenario(paths: Sequence[str | os.PathLike[str]]) -> Scenario:
    """The validated Scenario for the host in ``paths`` (the TOML `export_to_toml` writes, read
    back with the scenario reader). Raises ScenarioError."""
    from vmmem.lab.scenario import parse_scenario

    text = export_to_toml(paths)
    source = os.fspath(paths[0]) if len(paths) == 1 else ", ".join(os.fspath(p) for p in paths)
    return parse_scenario(tomllib.loads(text), source)
