"""Scenario files: a host, its VMs and what happens to them, read from TOML and checked up front.

A scenario is validated completely before anything runs: every size, every Dynamic Memory rule
Hyper-V enforces, every event. An error names the file, the key and what was expected, e.g.::

    examples/bad.toml: vm[2].startup: expected a size in whole MB that is a multiple of 2 MB
    (Hyper-V: "not properly aligned"), got "511MB"

File layout (all sizes are strings with a unit, "512MB", "1.5GB"; MB = 2^20 bytes as in
Hyper-V; a bare integer is bytes)::

    name = "article"
    description = "..."

    [host]
    memory = "1400MB"            # memory available to VMs
    reserve = "0MB"              # kept back for the host itself, never given to VMs
    smart_paging_path = "..."    # optional: default Smart Paging folder for every VM
    balancer_interval = 1.0      # seconds between balancer passes
    balancer_start_delay = 50    # seconds after a restarted VM's guest boots before the host
                                 # rebalances it (default 50, as Hyper-V from Server 2016;
                                 # 0: at once); shrinks with --scale as boot times do

    [[vm]]
    name = "vm"
    count = 4                    # optional: vm1 .. vm4, identical
    startup = "512MB"
    minimum = "32MB"             # dynamic VMs only
    maximum = "2048MB"           # dynamic VMs only
    buffer = 20                  # percent, dynamic VMs only
    priority = 50                # 0 .. 100
    dynamic = true
    smart_paging_path = "..."    # optional, per VM
    generation = 2               # 1: Maximum RAM up to 1 TB; 2 (default): up to 12 TB
    processor_count = 1          # virtual processors (Set-VMProcessor -Count): the guest
                                 #   threads its boot runs on; 1 .. 240 (generation 1: 64)
    automatic_stop_action = "Save"          # at a host reboot: Save, ShutDown or TurnOff
    automatic_start_action = "StartIfRunning"  # then: StartIfRunning, Start or Nothing
    automatic_start_delay = 0    # seconds after the host is back
    start_delay_step = 1         # optional, with count: each next VM starts this much later
    [vm.workload]
    boot_seconds = 6.5           # how long a boot takes with enough memory (default: 50 us
                                 # of guest CPU per 4 KiB page of Startup RAM)
    idle_demand = "250MB"        # committed memory once idle (default: 250/512 of Startup)
    [vm.workload.boot]           # optional Boot settings (docs/HYPERV.md): cpu_per_page,
    hot_fraction = 0.1           #   hot_fraction, hot_ratio, revisit_ratio, write_ratio,
                                 #   chunk_pages, seed
    [vm.workload.idle]           # optional Idle settings: touch_interval, touches,
    touch_interval = 0.5         #   write_ratio, seed

    [[event]]
    action = "start"             # start, wait for the boot, let it settle; next VM
    vms = "all"                  # or ["vm1", "vm2"]
    [[event]]
    action = "idle"
    seconds = 5
    [[event]]
    action = "restart-vms"       # these VMs (default "all": every running VM) restart at
    vms = "all"                  #   the same instant: the boot storm (Smart Paging where short)
    [[event]]
    action = "reboot-host"       # the host reboots: each VM's automatic stop action (Save,
                                 #   ShutDown, TurnOff), then its automatic start action after
                                 #   its delay; never Smart Paging. With
    smart_paging_on_host_reboot = false  # true: the seed article's reading, a restart storm
    [[event]]
    action = "restart"           # one or more VMs restart, one after another
    vms = ["vm1"]
    [[event]]
    action = "settle"            # wait until no Smart Paging file is left (or timeout)
    timeout = 120
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import replace
from typing import Any

from vmmem.errors import SettingsError
from vmmem.hyperv.settings import MAX_START_DELAY, MAXIMUM_PROCESSORS_BY_GENERATION
from vmmem.lab.scenario_model import (
    ALIGN,
    MAX_MEMORY,
    MIN_STARTUP,
    Event,
    Scenario,
    ScenarioError,
    VMSpec,
    WorkloadSpec,
    scale_size,
)
from vmmem.lab.toml_reader import TomlReader, show_value
from vmmem.sizes import MB
from vmmem.validate import open_regular_file

__all__ = [
    "ARTICLE_SCENARIO_TOML",
    "EVENT_ACTIONS",
    "Event",
    "MB",
    "Scenario",
    "ScenarioError",
    "VMSpec",
    "WorkloadSpec",
    "article_scenario",
    "load_scenario",
    "parse_scenario",
    "scale_size",
]


# Settings of the Boot and Idle phases a scenario may pass on (docs/HYPERV.md), and their types.
BOOT_PARAMS = {
    "cpu_per_page": float,
    "hot_fraction": float,
    "hot_ratio": float,
    "revisit_ratio": float,
    "write_ratio": float,
    "chunk_pages": int,
    "seed": int,
    "disk_read_fraction": float,
    "disk_request_bytes": int,
    "touch_fraction": float,
    "zero_cpu_per_page": float,
    "disk_span_factor": float,
}
IDLE_PARAMS = {"touch_interval": float, "touches": int, "write_ratio": float, "seed": int}

# "restart-host" is the name earlier versions gave "restart-vms" of every running VM: still read.
EVENT_ACTIONS = ("start", "idle", "restart-vms", "restart", "reboot-host", "settle", "restart-host")


# ---------------------------------------------------------------------------------------------
# parsing


_TOP_KEYS = {"name", "description", "host", "vm", "event"}
_HOST_KEYS = {"memory", "reserve", "smart_paging_path", "balancer_interval", "balancer_start_delay"}
_VM_KEYS = {
    "name",
    "count",
    "startup",
    "minimum",
    "maximum",
    "buffer",
    "priority",
    "dynamic",
    "smart_paging_path",
    "workload",
    "generation",
    "processor_count",
    "automatic_stop_action",
    "automatic_start_action",
    "automatic_start_delay",
    "start_delay_step",
    "vhd_path",
    "vhd_size",
}
# Limits no real host reaches: Hyper-V runs at most 1,024 VMs per host (Windows Server 2016
# and later, "Plan for Hyper-V scalability in Windows Server", Microsoft Learn); a scenario's
# deepest value is vm.workload.boot.KEY; 1 MiB holds 1,024 VMs with every key and comments.
MAX_VMS = 1024
MAX_DEPTH = 16
MAX_SCENARIO_BYTES = 1 << 20
_TOO_MANY_VMS = (
    f"more than {MAX_VMS:,} VMs; Hyper-V runs at most {MAX_VMS:,} VMs on one host "
    "(Windows Server 2016 and later)"
)
_WORKLOAD_KEYS = {"boot_seconds", "idle_demand", "boot", "idle", "guest", "guest_ips"}
_EVENT_KEYS = {"action", "vms", "seconds", "timeout", "smart_paging_on_host_reboot"}


def parse_scenario(data: dict[str, Any], source: str = "<scenario>") -> Scenario:
    """A validated Scenario from a parsed TOML document. Raises ScenarioError."""
    r = TomlReader(source)
    _check_depth(r, data)
    r.check_keys(data, _TOP_KEYS, "")
    name = r.string(
        data.get("name", os.path.splitext(os.path.basename(source))[0] or "scenario"), "name"
    )
    description = data.get("description", "")
    if not isinstance(description, str):
        raise r.fail("description", f"expected a string, got {show_value(description)}")

    if "host" not in data:
        raise r.fail("host", 'missing: expected a [host] table with memory = "..."')
    host = r.table(data["host"], "host")
    r.check_keys(host, _HOST_KEYS, "host")
    if "memory" not in host:
        raise r.fail("host.memory", 'missing: expected the memory available to VMs, e.g. "1400MB"')
    memory = r.size(host["memory"], "host.memory", minimum=ALIGN)
    reserve = r.size(host.get("reserve", 0), "host.reserve")
    if reserve >= memory:
        raise r.fail(
            "host.reserve",
            f"expected less than host.memory ({memory // MB} MB), got {reserve // MB} MB",
        )
    host_paging = host.get("smart_paging_path")
    if host_paging is not None:
        host_paging = r.string(host_paging, "host.smart_paging_path")
    interval = r.number(host.get("balancer_interval", 1.0), "host.balancer_interval")
    from vmmem.hyperv.rules import DEFAULT_BALANCER_START_DELAY
    from vmmem.hyperv.settings import check_balancer_start_delay

    start_delay = host.get("balancer_start_delay", DEFAULT_BALANCER_START_DELAY)
    try:
        start_delay = check_balancer_start_delay(start_delay)
    except SettingsError as e:
        raise r.fail("host.balancer_start_delay", str(e)) from None

    raw_vms = data.get("vm")
    if raw_vms is None:
        raise r.fail("vm", "missing: expected at least one [[vm]] table")
    if not isinstance(raw_vms, list) or not raw_vms:
        raise r.fail("vm", "expected one or more [[vm]] tables")
    vms: list[VMSpec] = []
    for i, raw in enumerate(raw_vms):
        vms.extend(_parse_vm(r, raw, f"vm[{i}]", host_paging))
        if len(vms) > MAX_VMS:
            raise r.fail(f"vm[{i}]", _TOO_MANY_VMS)
    names = [v.name for v in vms]
    for n in names:
        if names.count(n) > 1:
            raise r.fail("vm", f'expected unique VM names, "{n}" appears {names.count(n)} times')

    raw_events = data.get("event")
    events: tuple[Event, ...]
    if raw_events is None:
        events = (
            Event("start", tuple(names)),
            Event("idle", seconds=3.0),
            Event("restart-vms"),
            Event("settle", seconds=120.0),
        )
    else:
        if not isinstance(raw_events, list) or not raw_events:
            raise r.fail("event", "expected one or more [[event]] tables")
        events = tuple(
            _parse_event(r, raw, f"event[{i}]", names) for i, raw in enumerate(raw_events)
        )
    _check_event_order(r, events, names)
    return Scenario(
        name=name,
        description=description,
        source=source,
        host_memory=memory,
        host_reserve=reserve,
        smart_paging_path=host_paging,
        balancer_interval=interval,
        balancer_start_delay=start_delay,
        vms=tuple(vms),
        events=events,
    )


def _check_depth(r: TomlReader, data: dict[str, Any]) -> None:
    """Refuse values nested deeper than MAX_DEPTH tables and arrays (walked without
    recursion: the document may come from anywhere)."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, key, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise r.fail(key, f"nested deeper than a scenario can be (at most {MAX_DEPTH} levels)")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            if isinstance(v, (dict, list)):
                sub = f"{key}[{k}]" if isinstance(k, int) else (f"{key}.{k}" if key else k)
                stack.append((v, sub, depth + 1))


def _parse_vm(r: TomlReader, raw: Any, key: str, host_paging: str | None) -> list[VMSpec]:
    t = r.table(raw, key)
    r.check_keys(t, _VM_KEYS, key)
    if "name" not in t:
        raise r.fail(f"{key}.name", "missing: expected the VM's name")
    name = r.string(t["name"], f"{key}.name")
    count = r.integer(t.get("count", 1), f"{key}.count", 1, MAX_VMS)
    dynamic = r.boolean(t.get("dynamic", True), f"{key}.dynamic")
    if "startup" not in t:
        raise r.fail(f"{key}.startup", 'missing: expected Startup RAM, e.g. "512MB"')
    startup = r.size(t["startup"], f"{key}.startup", minimum=MIN_STARTUP, what="Startup RAM")
    if not dynamic:
        for k in ("minimum", "maximum", "buffer"):
            if k in t:
                raise r.fail(
                    f"{key}.{k}",
                    "not allowed for a static VM (dynamic = false): "
                    "Hyper-V refuses Minimum, Maximum and Buffer without Dynamic "
                    "Memory; remove it or set dynamic = true",
                )
    minimum = maximum = buffer = None
    if "minimum" in t:
        minimum = r.size(t["minimum"], f"{key}.minimum", minimum=MIN_STARTUP, what="Minimum RAM")
        if minimum > startup:
            raise r.fail(
                f"{key}.minimum",
                f"expected at most Startup RAM ({startup // MB} MB), got {minimum // MB} MB",
            )
    if "maximum" in t:
        maximum = r.size(t["maximum"], f"{key}.maximum", minimum=startup, what="Maximum RAM")
        if maximum > MAX_MEMORY:
            raise r.fail(
                f"{key}.maximum", f"expected at most 12 TB, got {show_value(t['maximum'])}"
            )
    if "buffer" in t:
        buffer = r.integer(t["buffer"], f"{key}.buffer", 5, 2000)
    priority = r.integer(t.get("priority", 50), f"{key}.priority", 0, 100)
    paging = t.get("smart_paging_path")
    paging = r.string(paging, f"{key}.smart_paging_path") if paging is not None else None

    w = r.table(t.get("workload", {}), f"{key}.workload")
    r.check_keys(w, _WORKLOAD_KEYS, f"{key}.workload")
    boot = None
    if "boot_seconds" in w:
        boot = r.number(w["boot_seconds"], f"{key}.workload.boot_seconds")
    demand = None
    if "idle_demand" in w:
        demand = r.size(
            w["idle_demand"],
            f"{key}.workload.idle_demand",
            minimum=MB,
            hyperv=False,
            what="the idle guest's committed memory",
        )
        if demand > startup and dynamic:
            raise r.fail(
                f"{key}.workload.idle_demand",
                f"expected at most Startup RAM ({startup // MB} MB) for an idle guest, "
                f"got {demand // MB} MB",
            )
        if dynamic and demand > (maximum if maximum is not None else startup):
            raise r.fail(f"{key}.workload.idle_demand", "expected at most Maximum RAM")
    boot_params = _phase_params(r, w.get("boot", {}), f"{key}.workload.boot", BOOT_PARAMS)
    idle_params = _phase_params(r, w.get("idle", {}), f"{key}.workload.idle", IDLE_PARAMS)
    if "cpu_per_page" in boot_params and boot is not None:
        raise r.fail(
            f"{key}.workload.boot.cpu_per_page",
            "give either boot_seconds or boot.cpu_per_page, not both",
        )
    guest = r.string(w["guest"], f"{key}.workload.guest") if "guest" in w else None
    if guest == "synthetic-boot":  # vmmem guests lists it: the default boot, named
        guest = None
    from vmmem.hyperv.workloads import WINDOWS_MODELS

    model = guest if guest in WINDOWS_MODELS else None  # a model: its [boot] keys override it
    if model is not None:
        guest = None
    guest_ips = r.number(w["guest_ips"], f"{key}.workload.guest_ips") if "guest_ips" in w else None
    if guest is None and guest_ips is not None:
        raise r.fail(f"{key}.workload.guest_ips", "only used with workload.guest")
    if guest is not None and (boot is not None or boot_params):
        raise r.fail(
            f"{key}.workload.guest",
            "a recorded guest's boot is the recording: leave out boot_seconds and [boot]",
        )
    workload = WorkloadSpec(
        boot_seconds=boot,
        idle_demand=demand,
        boot=boot_params,
        idle=idle_params,
        guest=guest,
        guest_ips=guest_ips,
        model=model,
    )

    names = [name] if count == 1 else [f"{name}{i}" for i in range(1, count + 1)]
    host_settings: dict[str, Any] = {}
    for k in ("generation", "automatic_stop_action", "automatic_start_action"):
        if k in t:
            host_settings[k] = t[k]
    if "processor_count" in t:
        gen = t.get("generation", 2)
        high = MAXIMUM_PROCESSORS_BY_GENERATION.get(gen, MAXIMUM_PROCESSORS_BY_GENERATION[2])
        count_key, value = f"{key}.processor_count", t["processor_count"]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise r.fail(
                count_key,
                f"expected a whole number of virtual processors from 1 to {high} (Hyper-V's "
                f"maximum for a generation {gen} VM), got {show_value(value)}",
            )
        host_settings["processor_count"] = value
    if "vhd_path" in t:
        host_settings["vhd_path"] = r.string(t["vhd_path"], f"{key}.vhd_path")
    if "vhd_size" in t:
        host_settings["vhd_size"] = r.size(t["vhd_size"], f"{key}.vhd_size", minimum=MB)
    if "automatic_start_delay" in t:
        host_settings["automatic_start_delay"] = r.number(
            t["automatic_start_delay"], f"{key}.automatic_start_delay", positive=False
        )
    delays = _start_delays(r, t, key, count, host_settings.get("automatic_start_delay", 0.0))
    if "start_delay_step" in t:
        host_settings.pop("automatic_start_delay", None)
    specs = [
        VMSpec(
            name=n,
            startup=startup,
            minimum=minimum,
            maximum=maximum,
            buffer=buffer,
            priority=priority,
            dynamic=dynamic,
            smart_paging_path=paging,
            workload=workload,
            **host_settings,
        )
        for n in names
    ]
    if "start_delay_step" in t:
        specs = [replace(v, automatic_start_delay=d) for v, d in zip(specs, delays, strict=True)]
    _check_with_hyperv(r, key, specs[-1])  # the last of a count block has the longest delay
    return specs


def _start_delays(
    r: TomlReader, t: dict[str, Any], key: str, count: int, first: float
) -> list[float]:
    """A count block's automatic start delays: `automatic_start_delay` for the first VM, then
    `start_delay_step` seconds more for each next one (a stagger, as Hyper-V hosts set it with
    a different -AutomaticStartDelay per VM)."""
    if "start_delay_step" not in t:
        return [first] * count
    step = r.number(t["start_delay_step"], f"{key}.start_delay_step", positive=False)
    if count < 2:
        raise r.fail(f"{key}.start_delay_step", "only used with count of 2 or more")
    last = first + (count - 1) * step
    if last > MAX_START_DELAY:
        raise r.fail(
            f"{key}.start_delay_step",
            f"expected the last VM's delay ({first:g} + {count - 1} x {step:g} = {last:g} s) "
            f"at most {MAX_START_DELAY} s",
        )
    return [first + i * step for i in range(count)]


def _check_with_hyperv(r: TomlReader, key: str, spec: VMSpec) -> None:
    """The Hyper-V layer's own checks (settings, workload phases), located at this [[vm]]:
    whatever the layer would refuse at run time is refused here, before anything runs."""

    try:
        spec.settings  # noqa: B018 - validates, with the Hyper-V layer's rules
    except SettingsError as e:
        raise r.fail(key, str(e)) from None
    w = spec.workload
    boot_key = "guest" if w.guest is not None else "boot"
    for table, build in ((boot_key, w.boot_phase), ("idle", w.idle_phase)):
        try:
            build()
        except SettingsError as e:
            raise r.fail(f"{key}.workload.{table}", str(e)) from None


def _phase_params(r: TomlReader, raw: Any, key: str, allowed: dict[str, type]) -> dict[str, Any]:
    t = r.table(raw, key)
    r.check_keys(t, set(allowed), key)
    out: dict[str, Any] = {}
    for k, v in t.items():
        kind = allowed[k]
        ok = (not isinstance(v, bool)) and (
            isinstance(v, int) if kind is int else isinstance(v, (int, float))
        )
        if not ok or v < 0 or (isinstance(v, float) and not math.isfinite(v)):
            what = "a whole number >= 0" if kind is int else "a number >= 0"
            raise r.fail(f"{key}.{k}", f"expected {what}, got {show_value(v)}")
        out[k] = kind(v)
    return out


def _parse_event(r: TomlReader, raw: Any, key: str, names: list[str]) -> Event:
    t = r.table(raw, key)
    r.check_keys(t, _EVENT_KEYS, key)
    if "action" not in t:
        raise r.fail(f"{key}.action", "missing: expected one of " + ", ".join(EVENT_ACTIONS))
    action = t["action"]
    if action not in EVENT_ACTIONS:
        raise r.fail(
            f"{key}.action", f"expected one of {', '.join(EVENT_ACTIONS)}, got {show_value(action)}"
        )
    vms: tuple[str, ...] = ()
    if action == "restart-host":
        action = "restart-vms"  # its old name; every running VM
        if "vms" in t:
            raise r.fail(f"{key}.vms", 'not used by "restart-host" (every running VM)')
    if action in ("start", "restart", "restart-vms"):
        raw_vms = t.get("vms", "all")
        if raw_vms == "all":
            # restart-vms of "all": every VM running at that moment
            vms = () if action == "restart-vms" else tuple(names)
        elif isinstance(raw_vms, list) and raw_vms and all(isinstance(v, str) for v in raw_vms):
            for v in raw_vms:
                if v not in names:
                    raise r.fail(
                        f"{key}.vms", f'unknown VM "{v}"; the scenario has: ' + ", ".join(names)
                    )
            vms = tuple(raw_vms)
        else:
            raise r.fail(
                f"{key}.vms", f'expected "all" or a list of VM names, got {show_value(raw_vms)}'
            )
    elif "vms" in t:
        raise r.fail(f"{key}.vms", f'not used by "{action}" (it concerns the whole host)')
    seconds = None
    if action == "idle":
        if "seconds" not in t:
            raise r.fail(f"{key}.seconds", "missing: expected how long to idle, in seconds")
        seconds = r.number(t["seconds"], f"{key}.seconds", positive=False)
    elif action == "settle":
        seconds = r.number(t.get("timeout", 120.0), f"{key}.timeout")
    for k in ("seconds", "timeout"):
        if k in t and not (
            (k == "seconds" and action == "idle") or (k == "timeout" and action == "settle")
        ):
            raise r.fail(f"{key}.{k}", f'not used by "{action}"')
    article = False
    if "smart_paging_on_host_reboot" in t:
        if action != "reboot-host":
            raise r.fail(f"{key}.smart_paging_on_host_reboot", f'not used by "{action}"')
        article = r.boolean(t["smart_paging_on_host_reboot"], f"{key}.smart_paging_on_host_reboot")
    return Event(action, vms, seconds, article)


def _check_event_order(r: TomlReader, events: tuple[Event, ...], names: list[str]) -> None:
    """VMs must be started before they restart, and not started twice."""
    running: set[str] = set()
    for i, e in enumerate(events):
        if e.action == "start":
            for v in e.vms:
                if v in running:
                    raise r.fail(f"event[{i}].vms", f'"{v}" is already running; a VM starts once')
                running.add(v)
        elif e.action in ("restart", "restart-vms"):
            for v in e.vms:
                if v not in running:
                    raise r.fail(
                        f"event[{i}].vms",
                        f'"{v}" is not running yet: start it in an earlier "start" event',
                    )
            if not running:
                raise r.fail(
                    f"event[{i}].action", 'no VM is running yet: add a "start" event first'
                )


def load_scenario(path: str | os.PathLike[str] | None) -> Scenario:
    """The scenario in a TOML file, or the built-in article scenario when ``path`` is None.

    Raises ScenarioError (file not found, not TOML, or a bad value: always located).
    """
    if path is None:
        return article_scenario()
    source = os.fspath(path)
    from vmmem.lab.hyperv_import import import_scenario, looks_like_export

    if looks_like_export(source):  # a Hyper-V host's PowerShell export (docs/IMPORT.md)
        return import_scenario([source])
    try:
        f, st = open_regular_file(source)
        with f:
            # Sized before it is parsed: a huge file would take minutes and gigabytes.
            if st.st_size > MAX_SCENARIO_BYTES:
                raise ScenarioError(
                    source,
                    "",
                    f"is {st.st_size:,} bytes; a scenario file may have at most "
                    f"{MAX_SCENARIO_BYTES:,} (1 MiB: {MAX_VMS:,} VMs with every key fit in "
                    "a few hundred KB)",
                )
            text = f.read(MAX_SCENARIO_BYTES + 1)
        if len(text) > MAX_SCENARIO_BYTES:  # it grew after fstat
            raise ScenarioError(source, "", f"grew past {MAX_SCENARIO_BYTES:,} bytes while read")
        data = tomllib.loads(text.decode("utf-8"))
    except ScenarioError:
        raise
    except FileNotFoundError:
        raise ScenarioError(source, "", "no such file") from None
    except IsADirectoryError:
        raise ScenarioError(source, "", "is a folder; expected a TOML scenario file") from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(source, "", f"not valid TOML: {e}") from None
    except RecursionError:
        # tomllib recurses once per level of nested arrays or inline tables.
        raise ScenarioError(
            source, "", f"nested deeper than a scenario can be (at most {MAX_DEPTH} levels)"
        ) from None
    except UnicodeDecodeError as e:
        raise ScenarioError(
            source, "", f"not a text file in UTF-8 (byte {e.start}: {e.reason}); TOML is UTF-8"
        ) from None
    except OSError as e:
        raise ScenarioError(source, "", f"cannot read: {e.strerror}") from None
    except ValueError as e:  # not a regular file (a FIFO, a device): never waited on
        raise ScenarioError(source, "", f"{e}; expected a TOML scenario file") from None
    return parse_scenario(data, source)


ARTICLE_SCENARIO_TOML = """\
# The reboot storm from Aidan Finn's "Smart Paging in Hyper-V Dynamic Memory" (2014).
# Four identical idle VMs fit a 1400 MB host once ballooned down to about 300 MB each; patching
# restarts all four at once and they need 4 x 512 MB = 2048 MB to boot: about 648 MB of it comes
# from Smart Paging files, for the boot only.
name = "article"
description = "4 x 512 MB Startup on a 1400 MB host, all restarted at once (the article's example)"

[host]
memory = "1400MB"
reserve = "0MB"
# Hyper-V from Server 2016 rebalances a restarted VM only about 50 s after its guest booted
# (the default when left out): its Smart Paging file then lives that much longer. 0 is the
# article's reading, the file gone right after the boot, and keeps this run short.
balancer_start_delay = 0

[[vm]]
name = "vm"
count = 4
startup = "512MB"
minimum = "32MB"
maximum = "2048MB"
buffer = 20
priority = 50
[vm.workload]
idle_demand = "250MB"    # + 20 % buffer: each idles at about 300 MB
# boot_seconds: left to the default, 50 us of guest CPU per 4 KiB page (512 MB: about 6.6 s)

[[event]]
action = "start"         # one by one: each boots, then balloons down before the next starts
vms = "all"

[[event]]
action = "idle"
seconds = 3

[[event]]
action = "restart-vms"   # the patch night: every VM restarts at once, the boot storm

[[event]]
action = "settle"        # the guests go idle, balloon down, the Smart Paging files go away
timeout = 300
"""


def article_scenario() -> Scenario:
    """The article's scenario (docs/HYPERV-RULES.md section 1), the default of every command."""
    return parse_scenario(tomllib.loads(ARTICLE_SCENARIO_TOML), "<built-in: article>")
