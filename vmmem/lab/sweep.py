"""Sweeps: many storms in one table. A base scenario, axes of values for the keys users vary
(guest, Smart Paging folder, virtual-disk folder, host memory, VM count, backend, scale), the
cells (their product or an explicit list) and a number of runs per cell.

A sweep file is checked whole before anything runs (`load_sweep`: every key, type and value,
every cell's scenario built as `vmmem run` would build it); an error names the file and the
field (a SweepError, a ScenarioError). Cells run one after another on this machine
(`run_local`) or on a Dask cluster (`run_cluster`, `distributed` imported only then), each cell
on one worker, all its runs there. Only the caller writes the table: one JSON line per run,
appended a whole cell at a time and fsynced (`RowsFile`), so a killed sweep loses at most the
cell in progress and a cell is never half written: each cell's lines carry a batch id and the
batch's size, and a reader keeps only whole batches (a torn last line is ignored). A cell is
identified by a hash of what decides its result (the base scenario's text, its inputs, the run
count): running the same sweep again skips the cells already in the table.

Folders can be named by role, "locations.ssd": each machine resolves a role from its own
settings file ($VMMEM_WORKER_CONFIG, else ~/.config/vmmem/worker.toml), else from the sweep's
own [locations] table, so machines with different mount points join one sweep.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import io
import itertools
import json
import math
import os
import platform
import stat
import statistics
import time
import tomllib
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vmmem.hyperv.settings import MAXIMUM_PROCESSORS_BY_GENERATION
from vmmem.lab.progress import ProgressSink
from vmmem.lab.scenario import (
    ARTICLE_SCENARIO_TOML,
    Scenario,
    ScenarioError,
    load_scenario,
    parse_scenario,
)
from vmmem.lab.scenario_model import ALIGN
from vmmem.lab.toml_reader import TomlReader, show_value
from vmmem.sizes import MB

__all__ = [
    "AXES",
    "FIGURES",
    "Cell",
    "CellResult",
    "RowsFile",
    "Sweep",
    "SweepError",
    "SweepProgress",
    "TableInUse",
    "cell_plan",
    "cell_scenario",
    "check_cell_locations",
    "load_sweep",
    "parse_sweep",
    "read_rows",
    "run_cell",
    "run_cluster",
    "run_local",
    "summarize",
    "summary_csv",
    "summary_markdown",
    "worker_settings",
]

# The keys a sweep can vary, in the order a cell's label names them.
AXES = (
    "guest",
    "host_memory",
    "vm_count",
    "processor_count",
    "paging_dir",
    "vhd_dir",
    "backend",
    "scale",
)
_NOT_SWEEPABLE = {
    "processors": "the key is processor_count (every VM's virtual processors, as a scenario's "
    "processor_count and Set-VMProcessor -Count)",
}
_TOP_KEYS = {"name", "description", "scenario", "runs", "axes", "cell", "locations", *AXES}
BUILT_IN = {"article": ARTICLE_SCENARIO_TOML}
ROLE_PREFIX = "locations."
DEFAULT_FOLDER_VALUE = "default"  # a folder axis value: where `vmmem run` puts it by default
BACKENDS = ("direct", "mmap")

# Limits, as for scenario files: a sweep file of at most 1 MiB and 16 levels of nesting.
MAX_SWEEP_BYTES = 1 << 20
MAX_DEPTH = 16
MAX_CELLS = 10_000
MAX_VALUES = 1_000
MAX_RUNS = 1_000
MAX_SCALE = 1024.0

# The run's figures a summary reports per cell (the run JSON's `summary`, plus its duration).
FIGURES = (
    "slowdown",
    "boot_time",
    "baseline",
    "smart_paging_slowdown",
    "smart_paging_peak_bytes",
    "page_ins",
    "page_outs",
    "fault_p50",
    "fault_p99",
    "duration",
)
ROW_KIND = "vmmem-sweep-row"


class SweepError(ScenarioError):
    """A sweep file (or a worker's settings file) that cannot run: names the file and field."""


class TableInUse(RuntimeError):
    """Another sweep is writing the same table (its rows file is locked)."""


# ---------------------------------------------------------------------------------------------
# the sweep file


@dataclass(frozen=True)
class Cell:
    """One combination of inputs, run `runs` times. `inputs` holds every swept and fixed key
    as normalised values (sizes in bytes, folders as absolute paths or role names)."""

    id: str
    index: int
    inputs: dict[str, Any]
    swept: tuple[str, ...]  # the keys the sweep varies (the label's keys)
    runs: int

    def label(self) -> str:
        return ", ".join(f"{k}={show_input(k, self.inputs.get(k))}" for k in self.swept) or (
            "the base scenario"
        )


@dataclass(frozen=True)
class Sweep:
    """A validated sweep file."""

    source: str
    name: str
    description: str
    scenario_ref: str  # as written: "article" or a path
    scenario_source: str  # the path read (or "<built-in: article>")
    scenario_text: str
    runs: int
    swept: tuple[str, ...]
    fixed: dict[str, Any]
    cells: tuple[Cell, ...]
    locations: dict[str, str]  # the sweep's own role -> folder table (defaults)
    digest: str  # the sweep file's bytes

    def roles(self) -> list[str]:
        """The roles its cells name (locations.ssd -> "ssd")."""
        out: list[str] = []
        for c in self.cells:
            for k in ("paging_dir", "vhd_dir"):
                v = c.inputs.get(k)
                if isinstance(v, str) and v.startswith(ROLE_PREFIX):
                    role = v[len(ROLE_PREFIX) :]
                    if role not in out:
                        out.append(role)
        return out

    def spec(self, cell: Cell) -> dict[str, Any]:
        """What a worker needs to run `cell`: plain data (it crosses to other processes)."""
        return {
            "sweep": self.name,
            "sweep_digest": self.digest,
            "cell": cell.id,
            "index": cell.index,
            "label": cell.label(),
            "swept": list(cell.swept),
            "inputs": dict(cell.inputs),
            "runs": cell.runs,
            "scenario_source": self.scenario_source,
            "scenario_text": self.scenario_text,
            "locations": dict(self.locations),
        }


def show_input(key: str, value: Any) -> str:
    """A cell's input for people: sizes in MB, the rest as written."""
    if value is None:
        return DEFAULT_FOLDER_VALUE if key in ("paging_dir", "vhd_dir") else "-"
    if key == "host_memory" and isinstance(value, int):
        return f"{value // MB}MB"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _read_toml(path: str, what: str) -> tuple[dict[str, Any], bytes]:
    """A TOML file, size- and depth-limited, regular files only (a FIFO is never waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SweepError(path, "", "no such file") from None
    except IsADirectoryError:
        raise SweepError(path, "", f"is a folder; expected a {what}") from None
    except OSError as e:
        raise SweepError(path, "", f"cannot read: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise SweepError(path, "", f"is a folder; expected a {what}")
        if not stat.S_ISREG(st.st_mode):
            raise SweepError(path, "", f"is not a regular file; expected a {what}")
        if st.st_size > MAX_SWEEP_BYTES:
            raise SweepError(
                path, "", f"is {st.st_size:,} bytes; a {what} may have at most {MAX_SWEEP_BYTES:,}"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(MAX_SWEEP_BYTES + 1)
    except OSError as e:
        raise SweepError(path, "", f"cannot read: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_SWEEP_BYTES:
        raise SweepError(path, "", f"grew past {MAX_SWEEP_BYTES:,} bytes while read")
    try:
        return tomllib.loads(raw.decode("utf-8")), raw
    except UnicodeDecodeError as e:
        raise SweepError(
            path, "", f"not a text file in UTF-8 (byte {e.start}: {e.reason}); TOML is UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise SweepError(path, "", f"not valid TOML: {e}") from None
    except RecursionError:
        raise SweepError(path, "", f"nested deeper than {MAX_DEPTH} levels") from None


def load_sweep(path: str | os.PathLike[str]) -> Sweep:
    """The sweep in a TOML file, checked whole (SweepError / ScenarioError, always located)."""
    source = os.fspath(path)
    data, raw = _read_toml(source, "TOML sweep file")
    return parse_sweep(
        data,
        source,
        base_dir=os.path.dirname(os.path.abspath(source)),
        digest=hashlib.sha256(raw).hexdigest(),
    )


def parse_sweep(
    data: dict[str, Any],
    source: str = "<sweep>",
    *,
    base_dir: str | None = None,
    digest: str | None = None,
) -> Sweep:
    """A validated Sweep from a parsed TOML document; relative paths are read from `base_dir`
    (default: the current folder). Every cell's scenario is built once here, so what would
    fail at a cell's start fails now."""
    r = TomlReader(source)
    base_dir = base_dir or os.getcwd()
    _check_depth(r, data, "", 0)
    for k in data:
        if k in _NOT_SWEEPABLE:
            raise SweepError(source, k, _NOT_SWEEPABLE[k])
    r.check_keys(data, _TOP_KEYS, "")
    name = r.string(
        data.get("name", os.path.splitext(os.path.basename(source))[0] or "sweep"), "name"
    )
    if "/" in name or name.startswith("."):
        raise r.fail(
            "name",
            "expected a name without / or a leading dot (it names the output folder, "
            f"NAME-sweep), got {show_value(name)}",
        )
    description = data.get("description", "")
    if not isinstance(description, str):
        raise r.fail("description", f"expected a string, got {show_value(description)}")
    runs = r.integer(data.get("runs", 1), "runs", 1, MAX_RUNS)

    ref = r.string(data.get("scenario", "article"), "scenario")
    scenario_source, text = _base_scenario(r, ref, base_dir)
    raw_scenario = tomllib.loads(text)

    locations: dict[str, str] = {}
    if "locations" in data:
        for role, folder in r.table(data["locations"], "locations").items():
            _check_role_name(r, role, f"locations.{role}")
            p = r.string(folder, f"locations.{role}")
            locations[role] = os.path.normpath(os.path.join(base_dir, os.path.expanduser(p)))

    fixed: dict[str, Any] = {}
    for k in AXES:
        if k in data:
            fixed[k] = _value(r, k, data[k], k, base_dir, locations, raw_scenario)

    axes: dict[str, list[Any]] = {}
    if "axes" in data:
        t = r.table(data["axes"], "axes")
        for k in t:
            if k in _NOT_SWEEPABLE:
                raise SweepError(source, f"axes.{k}", _NOT_SWEEPABLE[k])
        r.check_keys(t, set(AXES), "axes")
        for k, values in t.items():
            if k in fixed:
                raise r.fail(f"axes.{k}", f"also set at the top ({k} = ...): give it one place")
            if not isinstance(values, list) or not values:
                raise r.fail(f"axes.{k}", f"expected a non-empty list, got {show_value(values)}")
            if len(values) > MAX_VALUES:
                raise r.fail(f"axes.{k}", f"expected at most {MAX_VALUES} values")
            norm = [
                _value(r, k, v, f"axes.{k}[{i}]", base_dir, locations, raw_scenario)
                for i, v in enumerate(values)
            ]
            for i, v in enumerate(norm):
                if norm.index(v) != i:
                    raise r.fail(f"axes.{k}[{i}]", f"{show_value(values[i])} appears twice")
            axes[k] = norm

    combos: list[dict[str, Any]]
    if "cell" in data:
        if axes:
            raise r.fail("cell", "give either [axes] (every combination) or [[cell]], not both")
        raw_cells = data["cell"]
        if not isinstance(raw_cells, list) or not raw_cells:
            raise r.fail("cell", "expected one or more [[cell]] tables")
        if len(raw_cells) > MAX_CELLS:
            raise r.fail("cell", f"expected at most {MAX_CELLS:,} cells")
        combos = []
        keys0: list[str] | None = None
        for i, raw in enumerate(raw_cells):
            t = r.table(raw, f"cell[{i}]")
            for k in t:
                if k in _NOT_SWEEPABLE:
                    raise SweepError(source, f"cell[{i}].{k}", _NOT_SWEEPABLE[k])
            r.check_keys(t, set(AXES), f"cell[{i}]")
            if not t:
                raise r.fail(f"cell[{i}]", "expected at least one key, e.g. guest = ...")
            for k in t:
                if k in fixed:
                    raise r.fail(f"cell[{i}].{k}", f"also set at the top ({k} = ...)")
            if keys0 is None:
                keys0 = list(t)
            elif sorted(t) != sorted(keys0):
                raise r.fail(
                    f"cell[{i}]",
                    f"expected the keys of cell[0] ({', '.join(keys0)}), got {', '.join(t)}: "
                    "every cell names the same keys, so the table has one column per key",
                )
            combos.append(
                {
                    k: _value(r, k, v, f"cell[{i}].{k}", base_dir, locations, raw_scenario)
                    for k, v in t.items()
                }
            )
        swept = tuple(k for k in AXES if keys0 and k in keys0)
        keyed = [json.dumps(c, sort_keys=True) for c in combos]
        for i, c in enumerate(keyed):
            if keyed.index(c) != i:
                raise r.fail(f"cell[{i}]", f"the same inputs as cell[{keyed.index(c)}]")
    else:
        total = math.prod(len(v) for v in axes.values())
        if total > MAX_CELLS:
            raise r.fail("axes", f"{total:,} cells; a sweep may have at most {MAX_CELLS:,}")
        swept = tuple(k for k in AXES if k in axes)
        names = list(axes)
        combos = [dict(zip(names, vs, strict=True)) for vs in itertools.product(*axes.values())]

    scenario_digest = hashlib.sha256(text.encode()).hexdigest()
    cells = []
    for i, combo in enumerate(combos):
        inputs = {**fixed, **combo}
        where = _where(data, combo, i)
        # Built now, with roles as placeholders: what a worker would refuse is refused here.
        try:
            cell_scenario(text, scenario_source, inputs, lambda role: f"/{role}")
        except ScenarioError as e:
            raise SweepError(source, where, f"{e.key + ': ' if e.key else ''}{e.message}") from None
        cid = hashlib.sha256(
            json.dumps(
                {"scenario": scenario_digest, "inputs": inputs, "runs": runs}, sort_keys=True
            ).encode()
        ).hexdigest()[:12]
        cells.append(Cell(cid, i, inputs, swept, runs))
    return Sweep(
        source=source,
        name=name,
        description=description,
        scenario_ref=ref,
        scenario_source=scenario_source,
        scenario_text=text,
        runs=runs,
        swept=swept,
        fixed=fixed,
        cells=tuple(cells),
        locations=locations,
        digest=digest or hashlib.sha256(json.dumps(data, default=str).encode()).hexdigest(),
    )


def _where(data: dict[str, Any], combo: dict[str, Any], i: int) -> str:
    if "cell" in data:
        return f"cell[{i}]"
    return "axes (" + ", ".join(f"{k}={show_input(k, v)}" for k, v in combo.items()) + ")"


def _check_depth(r: TomlReader, value: Any, key: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise r.fail(key or "(top)", f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_depth(r, v, f"{key}.{k}" if key else str(k), depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_depth(r, v, f"{key}[{i}]", depth + 1)


def _check_role_name(r: TomlReader, role: str, key: str) -> None:
    if not role or not all(c.isalnum() or c in "-_" for c in role):
        raise r.fail(key, f"expected a role name of letters, digits, - and _, got {role!r}")


def _base_scenario(r: TomlReader, ref: str, base_dir: str) -> tuple[str, str]:
    """(source, TOML text) of the base scenario: a built-in name or a file, checked by the
    scenario loader itself (its errors keep naming the scenario file and key)."""
    if ref in BUILT_IN:
        return f"<built-in: {ref}>", BUILT_IN[ref]
    path = os.path.normpath(os.path.join(base_dir, os.path.expanduser(ref)))
    if not os.path.exists(path):
        raise r.fail(
            "scenario",
            f"{ref}: no such file (relative paths are read from the sweep file's folder); "
            f"or a built-in name: {', '.join(BUILT_IN)}",
        )
    load_scenario(path)  # every rule of a scenario file, located in that file
    _, raw = _read_toml(path, "TOML scenario file")
    return path, raw.decode("utf-8")


def _value(
    r: TomlReader,
    key: str,
    value: Any,
    where: str,
    base_dir: str,
    locations: dict[str, str],
    raw_scenario: dict[str, Any],
) -> Any:
    """One value of an axis (or a fixed setting), checked and normalised."""
    if key == "guest":
        g = r.string(value, where)
        from vmmem.guests import SYNTHETIC_BOOT, load_guest

        if g != SYNTHETIC_BOOT:
            from vmmem.errors import GuestTraceError

            try:
                load_guest(g if os.path.isabs(g) or "/" not in g else os.path.join(base_dir, g))
            except GuestTraceError as e:
                raise r.fail(where, f"not a guest vmmem can boot: {e}") from None
            if "/" in g and not os.path.isabs(g):
                g = os.path.normpath(os.path.join(base_dir, g))
        return g
    if key == "host_memory":
        return r.size(value, where, minimum=ALIGN, what="host memory")
    if key == "vm_count":
        n = r.integer(value, where, 1, 1024)
        vms = raw_scenario.get("vm")
        if not isinstance(vms, list) or len(vms) != 1:
            raise r.fail(
                where,
                f"the base scenario has {len(vms) if isinstance(vms, list) else 0} [[vm]] "
                "blocks; vm_count sets the count of a scenario with one [[vm]] block "
                "(identical VMs)",
            )
        return n
    if key == "processor_count":  # each VM's generation is checked with its scenario
        return r.integer(value, where, 1, max(MAXIMUM_PROCESSORS_BY_GENERATION.values()))
    if key in ("paging_dir", "vhd_dir"):
        p = r.string(value, where)
        if p == DEFAULT_FOLDER_VALUE:
            return None
        if p.startswith(ROLE_PREFIX):
            _check_role_name(r, p[len(ROLE_PREFIX) :], where)
            return p
        return os.path.normpath(os.path.join(base_dir, os.path.expanduser(p)))
    if key == "backend":
        if value not in BACKENDS:
            raise r.fail(where, f"expected one of {', '.join(BACKENDS)}, got {show_value(value)}")
        return value
    if key == "scale":
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or not 1 <= value <= MAX_SCALE
        ):
            raise r.fail(
                where, f"expected a number from 1 to {MAX_SCALE:g}, got {show_value(value)}"
            )
        return float(value)
    raise r.fail(where, "unknown key")  # pragma: no cover - AXES is checked first


# ---------------------------------------------------------------------------------------------
# a cell's scenario, as `vmmem run` builds it


def cell_scenario(
    text: str, source: str, inputs: dict[str, Any], resolve: Callable[[str], str]
) -> tuple[Scenario, str | None, str]:
    """(scenario, Smart Paging folder or None, backend) of a cell, built as `vmmem run` builds
    its scenario: the file (with vm_count, processor_count and host_memory set, at full size),
    scaled, the guest and the virtual-disk folder applied. `resolve(role)` gives a role's
    folder. Raises ScenarioError."""
    data = tomllib.loads(text)
    if "vm_count" in inputs:
        data["vm"][0]["count"] = inputs["vm_count"]
    if "processor_count" in inputs and isinstance(data.get("vm"), list):
        for vm in data["vm"]:  # every VM, checked with its generation as the file's own key
            if isinstance(vm, dict):
                vm["processor_count"] = inputs["processor_count"]
    if "host_memory" in inputs:
        host = data.get("host")
        if isinstance(host, dict):
            host["memory"] = f"{inputs['host_memory'] // MB}MB"
    s = parse_scenario(data, source)
    scale = float(inputs.get("scale", 1.0))
    if scale != 1:
        s = s.scaled(scale)
    guest = inputs.get("guest")
    if guest is not None:
        s = s.with_guest(None if guest == "synthetic-boot" else guest)
    vhd = _folder(inputs.get("vhd_dir"), resolve)
    if vhd is not None:
        s = s.with_vhd_dir(vhd)
    return s, _folder(inputs.get("paging_dir"), resolve), str(inputs.get("backend", "direct"))


def _folder(value: str | None, resolve: Callable[[str], str]) -> str | None:
    if value is None:
        return None
    if value.startswith(ROLE_PREFIX):
        return os.path.abspath(resolve(value[len(ROLE_PREFIX) :]))
    return os.path.abspath(value)


# ---------------------------------------------------------------------------------------------
# a machine's settings: its name and its folders by role


def worker_settings_path() -> str:
    """$VMMEM_WORKER_CONFIG, else $XDG_CONFIG_HOME/vmmem/worker.toml (~/.config/...)."""
    env = os.environ.get("VMMEM_WORKER_CONFIG")
    if env:
        return env
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(config, "vmmem", "worker.toml")


def worker_settings(path: str | None = None) -> dict[str, Any]:
    """This machine's settings: {"name": str | None, "locations": {role: folder}, "source"}.
    A missing default file is no settings; a named one ($VMMEM_WORKER_CONFIG) must exist."""
    named = path is not None or bool(os.environ.get("VMMEM_WORKER_CONFIG"))
    source = path or worker_settings_path()
    if not named and not os.path.exists(source):
        return {"name": None, "locations": {}, "source": None}
    data, _ = _read_toml(source, "TOML worker settings file")
    r = TomlReader(source)
    r.check_keys(data, {"name", "locations"}, "")
    name = r.string(data["name"], "name") if "name" in data else None
    folders: dict[str, str] = {}
    base = os.path.dirname(os.path.abspath(source))
    for role, folder in r.table(data.get("locations", {}), "locations").items():
        _check_role_name(r, role, f"locations.{role}")
        p = r.string(folder, f"locations.{role}")
        folders[role] = os.path.normpath(os.path.join(base, os.path.expanduser(p)))
    return {"name": name, "locations": folders, "source": source}


def _resolver(settings: dict[str, Any], defaults: dict[str, str]) -> Callable[[str], str]:
    def resolve(role: str) -> str:
        if role in settings["locations"]:
            return str(settings["locations"][role])
        if role in defaults:
            return defaults[role]
        known = sorted(set(settings["locations"]) | set(defaults))
        where = settings["source"] or worker_settings_path() + " (not there)"
        raise SweepError(
            where,
            f"locations.{role}",
            f"this machine ({_machine_name(settings)}) has no folder for the role {role!r}; "
            f"add it to its settings file or to the sweep's [locations]"
            + (f" (it knows: {', '.join(known)})" if known else ""),
        )

    return resolve


def _machine_name(settings: dict[str, Any]) -> str:
    return str(settings.get("name") or platform.node())


# ---------------------------------------------------------------------------------------------
# checks and the plan


def check_cell_locations(spec: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """Check a cell's folders on this machine as `vmmem run` does before it builds anything
    (LocationRefused: missing, not writable, no room for the worst case; SweepError: a role
    this machine does not know); returns warnings (RAM-backed, no counters)."""
    from vmmem.hyperv.host import DEFAULT_FOLDER
    from vmmem.lab.runner import LocationRefused, check_locations

    s, paging, _ = cell_scenario(
        spec["scenario_text"],
        spec["scenario_source"],
        spec["inputs"],
        _resolver(settings, spec["locations"]),
    )
    for what, folder in (("Smart Paging", paging), ("virtual-disk", _vhd_folder(s))):
        if folder is None:
            continue
        if not os.path.isdir(folder):
            raise LocationRefused(f"the {what} folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise LocationRefused(f"the {what} folder {folder} is not writable")
    if paging is not None:
        s = s.with_paging_dir(paging)
    _, warnings = check_locations(s, os.path.abspath(DEFAULT_FOLDER))
    return [str(w) for w in warnings]


def _vhd_folder(s: Scenario) -> str | None:
    paths = {v.vhd_path for v in s.vms if v.vhd_path}
    return next(iter(paths)) if len(paths) == 1 else None


def cell_plan(spec: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """What a cell needs, without any I/O: the worst-case disk per filesystem (every dynamic
    VM's Smart Paging file as large as its Startup RAM, the virtual disks still to make, plus
    64 MB, as the run's location check counts it), the host memory committed as RAM, the
    planner's Smart Paging prediction and a rough time; `refused` if this machine could not
    run it now."""
    from vmmem.devices import device_for_path
    from vmmem.hyperv.host import DEFAULT_FOLDER
    from vmmem.lab.locations import new_vhd_files, paging_folders
    from vmmem.lab.plan import plan_scenario
    from vmmem.lab.runner import LocationRefused

    out: dict[str, Any] = {
        "cell": spec["cell"],
        "label": spec["label"],
        "inputs": spec["inputs"],
        "runs": spec["runs"],
    }
    try:
        s, paging, backend = cell_scenario(
            spec["scenario_text"],
            spec["scenario_source"],
            spec["inputs"],
            _resolver(settings, spec["locations"]),
        )
    except SweepError as e:
        return out | {"refused": str(e)}
    if paging is not None:
        s = s.with_paging_dir(paging)
    host_folder = os.path.abspath(DEFAULT_FOLDER)
    disk: dict[str, int] = {}
    for name, folder in paging_folders(s, host_folder).items():
        v = s.vm(name)
        if v.dynamic:
            disk[folder] = disk.get(folder, 0) + v.startup
    for path, size in new_vhd_files(s, host_folder).values():
        folder = os.path.dirname(path)
        disk[folder] = disk.get(folder, 0) + size
    by_fs: dict[str, int] = {}
    for folder, need in disk.items():
        anchor = folder
        while not os.path.exists(anchor) and os.path.dirname(anchor) != anchor:
            anchor = os.path.dirname(anchor)
        mount = device_for_path(anchor).mountpoint
        by_fs[mount] = by_fs.get(mount, 0) + need
    plan = plan_scenario(s)
    out |= {
        "backend": backend,
        "paging_dir": paging,
        "disk_bytes": {m: n + 64 * MB for m, n in by_fs.items()},
        "memory_bytes": s.host_memory,
        "smart_paging_planned_bytes": sum(plan.peak_paging().values()),
        "plan_verdict": plan.verdict(),
        "start_failures": list(plan.start_failures),
        "seconds_estimate": estimate_seconds(s) * spec["runs"],
        "refused": None,
    }
    try:
        check_cell_locations(spec, settings)
    except (LocationRefused, SweepError) as e:
        out["refused"] = str(e)
    return out


def estimate_seconds(s: Scenario) -> float:
    """A rough time for one run (no I/O): each start's boot and settling, idle waits, each
    storm's boots slowed by the share of Startup RAM the plan sends to Smart Paging, and about
    two seconds to settle after it. The sweep's ETA replaces it with measured cells."""
    from vmmem.lab.plan import plan_scenario

    page = 4096

    def boot(name: str) -> float:
        v = s.vm(name)
        try:
            phase = v.workload.boot_phase()
            return float(
                phase.expected_cpu_time(v.startup // page, v.processor_count)  # type: ignore[attr-defined]
            )
        except Exception:  # an estimate: a phase without the figure counts 50 us per page
            return 50e-6 * (v.startup // page)

    plan = plan_scenario(s)
    total = 1.0  # building the host
    for e, ep in zip(s.events, plan.events, strict=False):
        if e.action == "start":
            total += sum(boot(n) + 2 * s.balancer_interval for n in e.vms)
        elif e.action == "idle":
            total += e.seconds or 0.0
        elif e.action in ("restart-vms", "restart", "reboot-host"):
            names = list(e.vms) or [v.name for v in s.vms]
            share = ep.paging_total / max(ep.needed, 1)
            longest = max((boot(n) for n in names), default=0.0)
            total += longest * (1 + 2 * share) + 2 + 2 * s.balancer_interval
    return total


# ---------------------------------------------------------------------------------------------
# running a cell (here or on a worker)


@dataclass
class CellResult:
    """A cell's runs as table rows (without their batch), or why it has none."""

    cell: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    machine: str = ""
    outcome: str = "ok"  # "ok", "interrupted", "refused", "error"
    error: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_cell(
    spec: dict[str, Any],
    *,
    progress: Callable[[int, int], ProgressSink | None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    settings: dict[str, Any] | None = None,
    worker: dict[str, Any] | None = None,
) -> CellResult:
    """Run one cell `spec["runs"]` times on this machine and return its rows.

    Before each run, what dead runs left in the cell's folders is removed (the workspace's
    rules: only files their manifests list and that are provably theirs), and a folder a live
    run holds is refused. `progress(run, runs)` may give a sink per run. A run interrupted
    (Ctrl-C, `should_stop`) ends the cell with outcome "interrupted" and no rows: a cell is
    written whole or not at all."""
    from vmmem.lab.runner import LocationRefused, check_folders_free, run_scenario

    t0 = time.monotonic()
    settings = settings if settings is not None else worker_settings()
    machine = _machine_name(settings)
    res = CellResult(cell=spec["cell"], machine=machine)
    try:
        s, paging, backend = cell_scenario(
            spec["scenario_text"],
            spec["scenario_source"],
            spec["inputs"],
            _resolver(settings, spec["locations"]),
        )
        warnings = check_cell_locations(spec, settings)
    except (LocationRefused, SweepError, ScenarioError) as e:
        res.outcome, res.error = "refused", str(e)
        return res
    resolved = {"paging_dir": paging, "vhd_dir": _vhd_folder(s)}
    folders = sorted({f for f in resolved.values() if f is not None})
    for i in range(spec["runs"]):
        sink = progress(i, spec["runs"]) if progress is not None else None
        try:
            # The run cleans its Smart Paging folders itself; the virtual-disk folder too,
            # so a worker that died mid-cell leaves nothing there for long.
            notes = check_folders_free(folders)
            run = run_scenario(
                s, paging_dir=paging, progress=sink, backend=backend, should_stop=should_stop
            )
        except LocationRefused as e:
            res.outcome, res.error, res.rows = "refused", str(e), []
            return res
        finally:
            if sink is not None:
                sink.close()
        if run.outcome == "interrupted":
            res.outcome, res.rows = "interrupted", []
            return res
        d = run.to_dict()
        summary = dict(d.get("summary") or {})
        row = {
            "kind": ROW_KIND,
            "sweep": spec["sweep"],
            "sweep_digest": spec["sweep_digest"],
            "cell": spec["cell"],
            "cell_index": spec["index"],
            "label": spec["label"],
            "run": i,
            "runs": spec["runs"],
            "inputs": {k: spec["inputs"].get(k) for k in spec["swept"]},
            "fixed": {k: v for k, v in spec["inputs"].items() if k not in spec["swept"]},
            "resolved": resolved,
            "machine": d.get("machine"),
            "worker": {"name": machine, **(worker or {})},
            "locations": d.get("locations"),
            "outcome": d.get("outcome"),
            "error": d.get("error"),
            "verdict": d.get("verdict"),
            "figures": {k: summary.get(k) for k in FIGURES if k != "duration"}
            | {"duration": d.get("duration")},
            "warnings": warnings,
            "earlier_runs_cleaned": notes,
            # The run's own JSON (docs/json-schema.json) less its per-tick timeline and
            # latency CDF: every figure `vmmem run` reports, at a few KB a row.
            "run_result": {
                k: v for k, v in d.items() if k not in ("timeline", "fault_latency_cdf")
            },
        }
        res.rows.append(row)
    res.seconds = time.monotonic() - t0
    return res


def run_cell_on_worker(spec: dict[str, Any], stop_event: str | None = None) -> dict[str, Any]:
    """The task a Dask worker runs: the cell with this machine's settings, as plain data.
    `stop_event` names a distributed.Event the client sets on Ctrl-C: the run then stops at
    its next check (at most once a second) and deletes its files."""
    worker: dict[str, Any] = {}
    should_stop: Callable[[], bool] | None = None
    try:
        dd = _distributed()
        w = dd.get_worker()
        worker = {"dask_name": str(w.name), "address": str(w.address)}
        if stop_event:
            event = dd.Event(stop_event)
            last = [0.0, False]

            def should_stop() -> bool:
                now = time.monotonic()
                if now - float(last[0]) >= 1.0:
                    last[0], last[1] = now, bool(event.is_set())
                return bool(last[1])

    except Exception:  # run outside a worker (tests, library use)
        pass
    try:
        settings = worker_settings()
    except SweepError as e:
        return CellResult(cell=spec["cell"], outcome="refused", error=str(e)).as_dict()
    if worker.get("dask_name") and not settings.get("name"):
        settings = settings | {"name": f"{platform.node()}/{worker['dask_name']}"}
    return run_cell(spec, settings=settings, worker=worker, should_stop=should_stop).as_dict()


def check_on_worker(specs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every cell's folders checked on a worker before anything runs: {"machine", "refused":
    [messages], "warnings": [...]}."""
    try:
        settings = worker_settings()
    except SweepError as e:
        return {"machine": platform.node(), "refused": [str(e)], "warnings": []}
    refused, warnings = [], []
    for spec in specs:
        try:
            warnings += check_cell_locations(spec, settings)
        except Exception as e:
            refused.append(f"cell {spec['cell']} ({spec['label']}): {e}")
    return {
        "machine": _machine_name(settings),
        "refused": refused,
        "warnings": sorted(set(warnings)),
    }


# ---------------------------------------------------------------------------------------------
# the table: JSON lines, whole cells only


class RowsFile:
    """The sweep's rows (JSON lines), held with flock while a sweep writes it: each cell's
    rows are appended in one write and fsynced, with a batch id and the batch's size."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(
            path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
        )
        try:
            if not stat.S_ISREG(os.fstat(self.fd).st_mode):
                raise OSError(f"{path} is not a regular file")
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise TableInUse(f"{path} is being written by another vmmem sweep") from None
        except BaseException:
            os.close(self.fd)
            raise

    def append_cell(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        batch = uuid.uuid4().hex[:12]
        written = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        text = "".join(
            json.dumps(
                r | {"batch": batch, "batch_rows": len(rows), "written": written},
                separators=(",", ":"),
                default=str,
            )
            + "\n"
            for r in rows
        )
        size = os.fstat(self.fd).st_size
        if size and os.pread(self.fd, 1, size - 1) != b"\n":
            text = "\n" + text  # a torn line of a killed writer: end it, it is ignored
        data = text.encode()
        while data:
            n = os.write(self.fd, data)
            data = data[n:]
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def read_rows(path: str) -> list[dict[str, Any]]:
    """The rows of whole cells in a rows file (a torn or partial batch is left out); [] if
    there is no file."""
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
    except FileNotFoundError:
        return []
    batches: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("kind") == ROW_KIND and "batch" in row:
            batches.setdefault(str(row["batch"]), []).append(row)
    out: list[dict[str, Any]] = []
    for rows in batches.values():
        if len(rows) == rows[0].get("batch_rows"):
            out.extend(rows)
    return out


def done_cells(rows: Iterable[dict[str, Any]], per_machine: bool) -> set[tuple[str, str]]:
    """(cell, machine or "") of the cells whose last whole batch in the table finished every
    run (outcome ok or vms_failed); a cell whose run failed is run again on resume."""
    return {
        key
        for key, rs in latest_batches(rows, per_machine).items()
        if all(r.get("outcome") in ("ok", "vms_failed") for r in rs)
    }


def latest_batches(
    rows: Iterable[dict[str, Any]], per_machine: bool
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(cell, machine or "") -> the rows of its last whole batch in the table."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    batch: dict[tuple[str, str], str] = {}
    for r in rows:
        key = (str(r["cell"]), _row_machine(r) if per_machine else "")
        if batch.get(key) != r["batch"]:
            batch[key] = str(r["batch"])
            out[key] = []
        out[key].append(r)
    return out


def _row_machine(r: dict[str, Any]) -> str:
    return str((r.get("worker") or {}).get("name") or (r.get("machine") or {}).get("hostname"))


# ---------------------------------------------------------------------------------------------
# summaries


def summarize(
    sweep: Sweep, rows: Sequence[dict[str, Any]], per_machine: bool = False
) -> list[dict[str, Any]]:
    """Per cell (and machine, with per_machine), over the runs of its last batch: mean,
    sample standard deviation (None for one run), min and max of each figure in FIGURES,
    from the runs that finished (outcome ok or vms_failed)."""
    ids = {c.id: c for c in sweep.cells}
    groups = {k: v for k, v in latest_batches(rows, per_machine).items() if k[0] in ids}
    out = []
    for c in sweep.cells:
        for (cid, machine), rs in groups.items():
            if cid != c.id:
                continue
            done = [r for r in rs if r.get("outcome") in ("ok", "vms_failed")]
            entry: dict[str, Any] = {"cell": c.id, "index": c.index}
            entry |= {k: show_input(k, c.inputs.get(k)) for k in c.swept}
            entry["machines"] = (
                machine if per_machine else " ".join(sorted({_row_machine(r) for r in rs}))
            )
            entry["runs"] = len(rs)
            entry["runs_ok"] = len(done)
            for f in FIGURES:
                vals = [
                    float(v)
                    for r in done
                    if isinstance(v := (r.get("figures") or {}).get(f), (int, float))
                    and not isinstance(v, bool)
                ]
                entry[f"{f}_mean"] = statistics.fmean(vals) if vals else None
                entry[f"{f}_std"] = statistics.stdev(vals) if len(vals) > 1 else None
                entry[f"{f}_min"] = min(vals) if vals else None
                entry[f"{f}_max"] = max(vals) if vals else None
            out.append(entry)
    return out


def summary_columns(sweep: Sweep) -> list[str]:
    cols = ["cell", "index", *sweep.swept, "machines", "runs", "runs_ok"]
    return cols + [f"{f}_{s}" for f in FIGURES for s in ("mean", "std", "min", "max")]


def summary_csv(sweep: Sweep, summary: Sequence[dict[str, Any]]) -> str:
    import csv

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=summary_columns(sweep), lineterminator="\n")
    w.writeheader()
    for e in summary:
        w.writerow({k: ("" if v is None else v) for k, v in e.items()})
    return buf.getvalue()


def _pm(e: dict[str, Any], f: str, fmt: Callable[[float], str]) -> str:
    m, s = e.get(f"{f}_mean"), e.get(f"{f}_std")
    if m is None:
        return "-"
    return fmt(m) + (f" +- {fmt(s)}" if s is not None else "")


def summary_markdown(sweep: Sweep, summary: Sequence[dict[str, Any]]) -> str:
    """A Markdown table per cell: slowdown (mean +- standard deviation, min-max), the storm's
    boot time, its Smart Paging peak and fault p99."""

    def x(v: float) -> str:
        return f"{v:.2f} x"

    def sec(v: float) -> str:
        return f"{v:.2f} s"

    def mbs(v: float) -> str:
        return f"{v / MB:,.0f} MB"

    def us(v: float) -> str:
        return f"{v * 1e6:,.0f} us"

    head = [*sweep.swept, "machine", "runs", "slowdown", "min-max", "storm boot", "SP peak", "p99"]
    lines = [
        f"# sweep {sweep.name}: {len(sweep.cells)} cells x {sweep.runs} run(s)",
        "",
        f"Base scenario: {sweep.scenario_ref}. Figures: mean +- standard deviation over the runs.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for e in summary:
        lo, hi = e.get("slowdown_min"), e.get("slowdown_max")
        rng = f"{lo:.2f}-{hi:.2f}" if lo is not None and hi is not None else "-"
        cells = [str(e.get(k, "")) for k in sweep.swept] + [
            str(e["machines"]),
            f"{e['runs_ok']}/{e['runs']}",
            _pm(e, "slowdown", x),
            rng,
            _pm(e, "boot_time", sec),
            _pm(e, "smart_paging_peak_bytes", mbs),
            _pm(e, "fault_p99", us),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# running a sweep


class SweepProgress:
    """What a sweep reports while it goes; the CLI shows it. The default does nothing."""

    def start(self, total: int, skipped: int, workers: int, eta: float | None = None) -> None:
        """Before the first cell: `eta` is the planner's rough time for the cells to run."""

    def cell_started(self, cell: Cell, machine: str) -> None: ...

    def run_sink(self, cell: Cell, run: int, runs: int) -> ProgressSink | None:
        return None

    def cell_done(
        self, cell: Cell, result: CellResult, done: int, left: int, eta: float | None
    ) -> None: ...

    def message(self, text: str) -> None: ...


@dataclass
class SweepOutcome:
    done: int = 0
    skipped: int = 0
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    interrupted: bool = False


def _eta(durations: list[float], left: int, parallel: int, first: float) -> float | None:
    if not durations and not first:
        return None
    per = statistics.fmean(durations) if durations else first
    return per * math.ceil(left / max(parallel, 1)) if left else 0.0


def run_local(
    sweep: Sweep,
    rows_path: str,
    progress: SweepProgress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SweepOutcome:
    """Every cell not yet in the table, one after another on this machine (two storms on one
    disk would measure each other). Ctrl-C ends it after writing the cells done."""
    progress = progress or SweepProgress()
    settings = worker_settings()
    table = RowsFile(rows_path)
    out = SweepOutcome()
    try:
        done = done_cells(read_rows(rows_path), per_machine=False)
        todo = [c for c in sweep.cells if (c.id, "") not in done]
        out.skipped = len(sweep.cells) - len(todo)
        est = _estimates(sweep, todo)
        first = statistics.fmean(est) if est else 0.0
        progress.start(len(sweep.cells), out.skipped, 1, _start_eta(est, 1))
        durations: list[float] = []
        for i, c in enumerate(todo):
            progress.cell_started(c, _machine_name(settings))

            def sink(run: int, runs: int, c: Cell = c) -> ProgressSink | None:
                return progress.run_sink(c, run, runs)

            res = run_cell(sweep.spec(c), progress=sink, should_stop=should_stop, settings=settings)
            if res.outcome == "interrupted":
                out.interrupted = True
                break
            if res.outcome == "refused":
                out.refused.append(f"cell {c.id} ({c.label()}): {res.error}")
            table.append_cell(res.rows)
            out.errors += _failed_runs(c, res)
            out.done += 1 if res.rows else 0
            durations.append(res.seconds)
            left = len(todo) - i - 1
            progress.cell_done(c, res, out.skipped + i + 1, left, _eta(durations, left, 1, first))
    finally:
        table.close()
    return out


def _failed_runs(c: Cell, res: CellResult) -> list[str]:
    """A run that failed (exit 1 of `vmmem run`) is in the table, and said: the cell runs
    again when the sweep is run again."""
    return [
        f"cell {c.id} ({c.label()}) on {res.machine}: run {r['run'] + 1} failed: {r['error']}"
        for r in res.rows
        if r.get("outcome") == "failed"
    ]


def _estimates(sweep: Sweep, todo: Sequence[Cell]) -> list[float]:
    """The planner's rough time of each cell to run (no I/O; roles need no folder)."""
    out = []
    for c in todo:
        spec = sweep.spec(c)
        try:
            s, _, _ = cell_scenario(
                spec["scenario_text"], spec["scenario_source"], spec["inputs"], lambda r: f"/{r}"
            )
            out.append(estimate_seconds(s) * c.runs)
        except Exception:  # an estimate only
            out.append(0.0)
    return out


def _start_eta(estimates: list[float], parallel: int) -> float | None:
    return sum(estimates) / max(parallel, 1) if estimates and all(estimates) else None


def run_cluster(
    sweep: Sweep,
    rows_path: str,
    scheduler: str,
    *,
    mode: str = "spread",
    progress: SweepProgress | None = None,
    client: Any = None,
) -> SweepOutcome:
    """Every cell not yet in the table on a Dask cluster's workers that offer the resource
    `vmmem` (`dask worker --resources vmmem=1`): one cell at a time per worker.

    mode "spread": each cell once, on any worker; a worker that dies mid-cell has its cell run
    again elsewhere by the scheduler (its dead run's files are removed by the next run on that
    folder). mode "every": each cell on every worker (compare machines), the rows naming the
    machine. Only this process writes the table, from completed results."""
    distributed = _distributed()
    if mode not in ("spread", "every"):
        raise ValueError(f"mode must be spread or every, got {mode!r}")
    progress = progress or SweepProgress()
    own = client is None
    if own:
        try:
            client = distributed.Client(scheduler, timeout=30)
        except Exception as e:  # a bad address, no scheduler there, a timeout
            raise RuntimeError(f"cannot connect to the scheduler: {e}") from None
    table = RowsFile(rows_path)
    out = SweepOutcome()
    try:
        workers = _vmmem_workers(client)
        if not workers:
            raise RuntimeError(
                f"no worker of {scheduler} offers the resource vmmem; start one per machine "
                "with: dask worker SCHEDULER --resources vmmem=1 --nthreads 1"
            )
        specs = [sweep.spec(c) for c in sweep.cells]
        try:
            checks = client.run(check_on_worker, specs, workers=list(workers))
        except Exception as e:
            raise RuntimeError(
                f"a worker could not check the cells ({type(e).__name__}: {e}); is vmmem "
                "installed in the workers' Python?"
            ) from None
        for addr, chk in checks.items():
            for msg in chk["refused"]:
                out.refused.append(f"worker {chk['machine']} ({addr}): {msg}")
            for w in chk["warnings"]:
                progress.message(f"warning: worker {chk['machine']}: {w}")
        if out.refused:
            return out
        names = {addr: checks[addr]["machine"] for addr in workers}
        per_machine = mode == "every"
        done = done_cells(read_rows(rows_path), per_machine=per_machine)
        jobs: list[tuple[Cell, str | None]] = []
        for c in sweep.cells:
            if mode == "spread":
                if (c.id, "") not in done:
                    jobs.append((c, None))
            else:
                jobs += [(c, a) for a in workers if (c.id, names[a]) not in done]
        total = len(sweep.cells) * (len(workers) if per_machine else 1)
        out.skipped = total - len(jobs)
        est = _estimates(sweep, [c for c, _ in jobs])
        first = statistics.fmean(est) if est else 0.0
        progress.start(total, out.skipped, len(workers), _start_eta(est, len(workers)))
        stop = distributed.Event(f"vmmem-sweep-stop-{uuid.uuid4().hex[:12]}", client=client)
        futures = {}
        for c, addr in jobs:
            f = client.submit(
                run_cell_on_worker,
                sweep.spec(c),
                stop.name,
                key=f"vmmem-cell-{c.id}-{uuid.uuid4().hex[:8]}",
                resources={"vmmem": 1},
                pure=False,
                workers=[addr] if addr else None,
                allow_other_workers=False,
            )
            futures[f] = (c, addr)
        durations: list[float] = []
        finished = 0
        pending = set(futures)
        try:
            while pending:
                try:
                    ready, pending_now = distributed.wait(
                        list(pending), timeout=1.0, return_when="FIRST_COMPLETED"
                    )
                except (TimeoutError, distributed.TimeoutError):
                    ready, pending_now = set(), pending
                pending = set(pending_now)
                if per_machine:  # a pinned cell whose worker left can never run
                    alive = set(_vmmem_workers(client))
                    for f in [f for f in pending if futures[f][1] not in alive]:
                        c, addr = futures[f]
                        f.cancel()
                        pending.discard(f)
                        finished += 1
                        out.errors.append(
                            f"cell {c.id} ({c.label()}) on {names.get(addr or '', addr)}: the "
                            "worker left the cluster; run the sweep again to resume it there"
                        )
                for f in ready:
                    c, addr = futures[f]
                    finished += 1
                    try:
                        res = CellResult(**f.result())
                    except Exception as e:
                        out.errors.append(f"cell {c.id} ({c.label()}): {type(e).__name__}: {e}")
                        continue
                    if res.outcome == "refused":
                        out.refused.append(
                            f"cell {c.id} ({c.label()}) on {res.machine}: {res.error}"
                        )
                    table.append_cell(res.rows)
                    out.errors += _failed_runs(c, res)
                    out.done += 1 if res.rows else 0
                    durations.append(res.seconds)
                    left = len(jobs) - finished
                    progress.cell_done(
                        c,
                        res,
                        out.skipped + finished,
                        left,
                        _eta(durations, left, len(workers), first),
                    )
        except KeyboardInterrupt:
            # Workers' runs stop at their next poll (their files deleted); nothing half done
            # is written here.
            stop.set()
            client.cancel(list(pending))
            out.interrupted = True
    finally:
        table.close()
        if own:
            client.close()
    return out


def _distributed() -> Any:
    """The distributed package, imported only for a cluster (an optional extra)."""
    import importlib

    try:
        return importlib.import_module("distributed")
    except ImportError:
        raise RuntimeError(
            "running on a Dask cluster needs the distributed package: "
            'pip install "vmmem[cluster]" (or pip install "distributed>=2024.1")'
        ) from None


def _vmmem_workers(client: Any) -> list[str]:
    info = client.scheduler_info(n_workers=-1) if _takes_n_workers(client) else None
    info = info or client.scheduler_info()
    return sorted(
        addr
        for addr, w in info.get("workers", {}).items()
        if (w.get("resources") or {}).get("vmmem", 0) >= 1
    )


def _takes_n_workers(client: Any) -> bool:
    import inspect

    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):
        return False
