"""`vmmem scenario import`: a Hyper-V host's PowerShell export becomes a scenario that plans and
runs without editing. The fixtures in tests/data/hyperv/ hold what Windows PowerShell 5.1 and
PowerShell 7 write (make_fixtures.py there says how each was shaped); tools/Export-VmmemHost.ps1
cannot run here, so these tests hold its output format."""

from __future__ import annotations

import codecs
import json
import os
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmmem.cli.main import cli
from vmmem.lab.hyperv_import import (
    VM_PROPERTIES,
    ExportError,
    export_to_toml,
    import_scenario,
    looks_like_export,
)
from vmmem.lab.plan import plan_scenario
from vmmem.lab.scenario import load_scenario, parse_scenario
from vmmem.sizes import MB

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "hyperv"
PS51 = [str(DATA / f) for f in ("ps51-vm.json", "ps51-vmmemory.json", "ps51-vmhost.json")]
PS7 = str(DATA / "host-ps7.json")
PS51_COMBINED = str(DATA / "host-ps51.json")


def ps7_data() -> dict:
    return json.loads((DATA / "host-ps7.json").read_text(encoding="utf-8"))


def write(tmp_path: Path, data: object, name: str = "host.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return str(path)


# Get-VM's property -> the same in Get-VMMemory's, kept equal so that only Get-VM's is tested.
SAME = {"Name": "VMName", "MemoryStartup": "Startup", "MemoryMinimum": "Minimum"}


def with_vm(tmp_path: Path, index: int = 1, **changes: object) -> str:
    """The PowerShell 7 export with one VM's properties changed (None removes one)."""
    data = ps7_data()
    for k, v in changes.items():
        if v is None:
            data["VM"][index].pop(k, None)
        else:
            data["VM"][index][k] = v
            if k in SAME:
                data["VMMemory"][index][SAME[k]] = v
    return write(tmp_path, data)


def refused(paths: list[str]) -> ExportError:
    with pytest.raises(ExportError) as e:
        export_to_toml(paths)
    return e.value


# ---------------------------------------------------------------------------------------------
# The fixtures as PowerShell writes them


def test_windows_powershell_51_files_utf16_with_integers():
    """Three files as `... | ConvertTo-Json > file` writes them in 5.1: UTF-16 LE with a BOM,
    enums as integers, read by their documented meaning."""
    assert (DATA / "ps51-vm.json").read_bytes()[:2] == codecs.BOM_UTF16_LE
    s = import_scenario(PS51)
    assert s.name == "HV-LAB01"
    assert s.host_memory == 1536 * MB and s.host_reserve == 0
    dc, web1, web2, test = s.vms
    assert (dc.name, dc.dynamic, dc.startup, dc.priority) == ("dc01", False, 512 * MB, 80)
    # StartAction 4 = Start, StopAction 4 = ShutDown; 3 = StartIfRunning / Save; 2 = Nothing /
    # TurnOff (Msvm_VirtualSystemSettingData's AutomaticStartupAction / AutomaticShutdownAction)
    assert (dc.automatic_start_action, dc.automatic_stop_action) == ("Start", "ShutDown")
    assert (web1.automatic_start_action, web1.automatic_stop_action) == ("StartIfRunning", "Save")
    assert (test.automatic_start_action, test.automatic_stop_action) == ("Start", "TurnOff")
    assert (web1.startup, web1.minimum, web1.maximum) == (512 * MB, 256 * MB, 1024 * MB)
    assert (web1.buffer, web1.priority, test.buffer, test.priority) == (20, 50, 10, 10)
    # Running VMs start and idle at their MemoryDemand; the Off VM is not started.
    assert web1.workload.idle_demand == 250 * MB and web2.workload.idle_demand == 220 * MB
    start = s.events[0]
    assert start.action == "start" and start.vms == ("dc01", "web01", "web02")
    assert [e.action for e in s.events] == [
        "start",
        "idle",
        "restart-vms",
        "settle",
        "reboot-host",
        "settle",
    ]


def test_every_value_names_where_it_came_from():
    text = export_to_toml(PS51)
    lines = text.splitlines()

    def line(prefix: str, after: int = 0) -> str:
        return next(x for x in lines[after:] if x.startswith(prefix))

    assert "Get-VMHost MemoryCapacity: 1,610,612,736 bytes" in line("memory =")
    assert "ps51-vmhost.json" in line("memory =")
    assert "root reserve: not in these files" in line("reserve =")
    web = lines.index(next(x for x in lines if x.startswith('name = "web01"')))
    assert "MemoryStartup: 536,870,912 bytes = 512 MB" in line("startup =", web)
    assert "Get-VMMemory Buffer (" in line("buffer =", web) and "vmmemory" in line("buffer =", web)
    assert "AutomaticStopAction 3 (Msvm_VirtualSystemSettingData: Save state)" in line(
        "automatic_stop_action", web
    )
    assert "AutomaticStartAction 3 (Msvm_VirtualSystemSettingData: Restart if previously" in (
        line("automatic_start_action", web)
    )
    assert "MemoryDemand: 262,144,000 bytes = 250 MB" in line("idle_demand", web)
    assert 'ps51-vm.json: VM[1] ("web01"), State Running' in lines[web - 1]
    # A person can read it and it reads back as the same scenario.
    assert parse_scenario(tomllib.loads(text), "x").vms == import_scenario(PS51).vms


def test_powershell_7_combined_file_estimates_the_root_reserve():
    """The script's file under PowerShell 7 (-EnumsAsStrings names, ISO date): the root reserve
    is MemoryCapacity - the balancer's Available Memory - the running VMs' MemoryAssigned."""
    s = import_scenario([PS7])
    assert s.host_memory == 1536 * MB
    assert s.host_reserve == (1536 - 360 - (512 + 300 + 264)) * MB
    text = export_to_toml([PS7])
    assert "exported 2026-11-29T18:30:00+00:00; 7.4.6 (PSVersion)" in text
    assert "an estimate" in text
    assert [v.name for v in s.vms] == ["dc01", "web01", "web02", "test01"]


def test_windows_powershell_51_combined_file_with_date_and_registry_reserve():
    """The script's file under 5.1: UTF-8 with a BOM, CRLF, "\\/Date(ms)\\/", MemoryReserve."""
    raw = (DATA / "host-ps51.json").read_bytes()
    assert raw.startswith(codecs.BOM_UTF8) and b"\\/Date(1795977000000)\\/" in raw
    s = import_scenario([PS51_COMBINED])
    assert s.host_reserve == 128 * MB
    text = export_to_toml([PS51_COMBINED])
    assert "exported 2026-11-29 18:30:00 UTC" in text
    assert "registry MemoryReserve = 128 MB" in text


def test_single_vm_is_an_object_not_an_array():
    s = import_scenario(
        [
            str(DATA / "ps7-single-vm.json"),
            str(DATA / "ps7-single-vmmemory.json"),
            str(DATA / "ps51-vmhost.json"),
        ]
    )
    assert [v.name for v in s.vms] == ["web01"] and s.vms[0].workload.idle_demand == 250 * MB


def test_files_in_any_order_and_recognised_by_content(tmp_path):
    names = ["a.txt", "b", "c.data"]
    copies = []
    for src, name in zip(reversed(PS51), names, strict=True):
        dst = tmp_path / name
        dst.write_bytes(Path(src).read_bytes())
        copies.append(str(dst))
    assert import_scenario(copies).vms == import_scenario(PS51).vms


@pytest.mark.parametrize(
    "encoding, bom",
    [
        ("utf-8", b""),
        ("utf-8", codecs.BOM_UTF8),
        ("utf-16-le", codecs.BOM_UTF16_LE),
        ("utf-16-be", codecs.BOM_UTF16_BE),
        ("utf-16-le", b""),
        ("utf-16-be", b""),
        ("utf-32-le", codecs.BOM_UTF32_LE),
    ],
)
def test_encodings_powershell_writes(tmp_path, encoding, bom):
    text = (DATA / "host-ps7.json").read_text(encoding="utf-8").replace("web01", "wéb01")
    path = tmp_path / "host.json"
    path.write_bytes(bom + text.replace("\n", "\r\n").encode(encoding))
    assert looks_like_export(path)
    assert [v.name for v in import_scenario([str(path)]).vms][1] == "wéb01"


def test_ansi_code_page_is_refused_with_advice(tmp_path):
    text = (DATA / "host-ps7.json").read_text(encoding="utf-8").replace("web01", "wéb01")
    path = tmp_path / "ansi.json"
    path.write_bytes(text.encode("cp1252"))
    e = refused([str(path)])
    assert e.source == str(path) and "Out-File -Encoding utf8" in str(e)


def test_powershell_51_array_wrapper_is_unwrapped(tmp_path):
    """Windows PowerShell 5.1 can write an array as {"value": [...], "Count": n}."""
    data = ps7_data()
    data["VM"] = {"value": data["VM"], "Count": len(data["VM"])}
    assert len(import_scenario([write(tmp_path, data)]).vms) == 4


# ---------------------------------------------------------------------------------------------
# Integers: only what Microsoft documents


@pytest.mark.parametrize(
    "prop, value, field",
    [
        ("State", 32783, "State"),  # RunningCritical: written without a value in the enum
        ("State", 7, "State"),
        ("AutomaticStartAction", 5, "AutomaticStartAction"),
        ("AutomaticStopAction", 0, "AutomaticStopAction"),
    ],
)
def test_integers_not_documented_are_refused_asking_for_names(tmp_path, prop, value, field):
    e = refused([with_vm(tmp_path, **{prop: value})])
    assert e.key == f'VM[1] ("web01").{field}'
    assert "-EnumsAsStrings" in e.message and str(value) in e.message


@pytest.mark.parametrize(
    "value, names",
    [(2, "Running"), (9, "Paused"), ("running", "Running"), ("Paused", "Paused")],
)
def test_states_that_hold_memory_start(tmp_path, value, names):
    s = import_scenario([with_vm(tmp_path, State=value)])
    assert "web01" in s.events[0].vms


@pytest.mark.parametrize("value", [3, 6, "Off", "Saved"])
def test_off_and_saved_vms_are_not_started(tmp_path, value):
    path = with_vm(tmp_path, State=value)
    s = import_scenario([path])
    assert "web01" not in s.events[0].vms and "web01" in [v.name for v in s.vms]
    if value in (6, "Saved"):
        assert "Saved on the host" in export_to_toml([path])


@pytest.mark.parametrize("value", [4, 10, 32773, "Starting", "Saving", "RunningCritical"])
def test_transitions_and_critical_states_are_refused(tmp_path, value):
    e = refused([with_vm(tmp_path, State=value)])
    assert e.key.endswith(".State")
    assert "export again" in e.message or "Critical" in e.message


# ---------------------------------------------------------------------------------------------
# What Hyper-V would refuse, and malformed exports


def test_minimum_above_startup_is_refused_at_the_field(tmp_path):
    e = refused([with_vm(tmp_path, MemoryMinimum=1024 * MB)])
    assert e.source.endswith("host.json") and e.key == 'VM[1] ("web01").MemoryMinimum'
    assert "Hyper-V would refuse" in e.message and "Minimum RAM" in e.message


def test_unaligned_startup_is_refused(tmp_path):
    e = refused([with_vm(tmp_path, MemoryStartup=511 * MB)])
    assert e.key.endswith(".MemoryStartup") and "aligned" in e.message


def test_buffer_hyper_v_refuses_names_the_vmmemory_file(tmp_path):
    vmmemory = json.loads(codecs.decode((DATA / "ps51-vmmemory.json").read_bytes(), "utf-16"))
    vmmemory[1]["Buffer"] = 2
    path = write(tmp_path, vmmemory, "vmmemory.json")
    e = refused([PS51[0], path, PS51[2]])
    assert e.source == path and e.key.endswith(".Buffer")


def test_get_vm_and_get_vmmemory_from_different_moments(tmp_path):
    vmmemory = json.loads(codecs.decode((DATA / "ps51-vmmemory.json").read_bytes(), "utf-16"))
    vmmemory[2]["Startup"] = 1024 * MB
    e = refused([PS51[0], write(tmp_path, vmmemory, "vmmemory.json"), PS51[2]])
    assert e.key == 'VMMemory[2] ("web02").Startup' and "different times" in e.message


def test_truncated_depth_is_refused_naming_the_depth():
    for name in ("truncated-depth.json", "truncated-vmmemory.json"):
        e = refused([str(DATA / name)])
        assert "-Depth" in e.message and e.source.endswith(name)


def test_missing_parts_are_named(tmp_path):
    assert "Get-VMHost" in str(refused([PS51[0]]))
    assert "no VM" in str(refused([PS51[2]]))
    e = refused([with_vm(tmp_path, MemoryStartup=None)])
    assert e.key.endswith(".MemoryStartup") and "missing" in e.message
    e = refused([write(tmp_path, {"Name": "x"}, "other.json")])
    assert "not a Hyper-V export" in e.message and "Name" in e.message
    e = refused([PS7, PS51_COMBINED])
    assert "second" in e.message


def test_duplicate_vm_names_are_refused(tmp_path):
    e = refused([with_vm(tmp_path, Name="WEB02")])
    assert "a second VM named" in e.message


def test_not_json_and_empty_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"VM": [', encoding="utf-8")
    assert "not valid JSON" in str(refused([str(bad)]))
    empty = tmp_path / "empty.json"
    empty.write_bytes(codecs.BOM_UTF16_LE)
    assert "empty" in str(refused([str(empty)]))
    assert "no such file" in str(refused([str(tmp_path / "none.json")]))


def test_demand_above_startup_and_demand_not_reported(tmp_path):
    path = with_vm(tmp_path, MemoryDemand=900 * MB)
    assert import_scenario([path]).vm("web01").workload.idle_demand == 512 * MB
    assert "at most its Startup RAM" in export_to_toml([path])
    path = with_vm(tmp_path, MemoryDemand=0)
    assert import_scenario([path]).vm("web01").workload.idle_demand == 300 * MB
    assert "MemoryAssigned (MemoryDemand 0" in export_to_toml([path])


def test_names_with_quotes_and_backslashes_survive_toml(tmp_path):
    data = ps7_data()
    data["VMHost"]["Name"] = 'HV "lab" \\ 01'
    data["VM"][1]["Name"] = data["VMMemory"][1]["VMName"] = "web 01 ü's"
    data["VM"][1]["Path"] = "D:\\VMs\\x\x01y"  # a control character: shown as "?"
    s = import_scenario([write(tmp_path, data)])
    assert s.name == 'HV "lab" \\ 01' and s.vms[1].name == "web 01 ü's"
    assert "D:\\VMs\\x?y" in export_to_toml([str(tmp_path / "host.json")])


def test_names_hyper_v_allows_but_a_folder_cannot_hold_are_refused(tmp_path):
    e = refused([with_vm(tmp_path, Name="web/01")])
    assert e.key.endswith(".Name") and "cannot be used" in e.message


def test_toml_scenarios_are_not_taken_for_exports(tmp_path):
    for text in (
        '[host]\nmemory = "1GB"\n',
        "[[vm]]\n",
        "# c\nname = 'x'\n",
        "[ host ]\n",
        '["my host"]  # c\n',
        "[1]\n",
    ):
        p = tmp_path / "s.toml"
        p.write_text(text)
        assert not looks_like_export(p)
    assert looks_like_export(DATA / "ps51-vm.json") and looks_like_export(PS7)
    for example in (ROOT / "examples").glob("*.toml"):
        assert not looks_like_export(example)


# ---------------------------------------------------------------------------------------------
# The command line


def test_import_to_stdout_and_to_a_file(tmp_path):
    r = CliRunner().invoke(cli, ["scenario", "import", *PS51])
    assert r.exit_code == 0, r.output
    assert r.stdout == export_to_toml(PS51)
    out = tmp_path / "hv.toml"
    r = CliRunner().invoke(cli, ["scenario", "import", PS7, "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_text(encoding="utf-8") == export_to_toml([PS7])
    assert f"next: vmmem plan {out}" in r.stderr
    assert load_scenario(out).vms == import_scenario([PS7]).vms


def test_import_errors_exit_2_without_traceback(tmp_path):
    for args in (
        [str(DATA / "truncated-depth.json")],
        [with_vm(tmp_path, State=32783)],
        [PS51[0]],
        [PS7, "-o", str(tmp_path / "no" / "such" / "folder.toml")],
    ):
        r = CliRunner().invoke(cli, ["scenario", "import", *args])
        assert r.exit_code == 2, r.output
        assert "Traceback" not in r.output and "vmmem: error:" in r.stderr
    r = CliRunner().invoke(cli, ["scenario", "import"])
    assert r.exit_code == 2
    export = tmp_path / "host.json"
    export.write_bytes(Path(PS7).read_bytes())
    r = CliRunner().invoke(cli, ["scenario", "import", str(export), "-o", str(export)])
    assert r.exit_code == 2 and "one of the exports read" in r.stderr
    assert export.read_bytes() == Path(PS7).read_bytes()


def test_scenario_still_checks_files_and_mentions_import():
    r = CliRunner().invoke(cli, ["scenario", str(ROOT / "examples" / "article.toml")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["scenario", "--help"])
    assert "vmmem scenario import FILE..." in r.stdout
    r = CliRunner().invoke(cli, ["scenario", "import", "--help"])
    assert "Get-VMMemory -VMName *" in r.stdout


def test_plan_answers_for_the_host_from_the_export():
    """`vmmem plan HOST.json`: the patch night needs Smart Paging (how much per VM), remedies,
    and which VM fails at a host reboot."""
    r = CliRunner().invoke(cli, ["plan", PS51_COMBINED, "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data == plan_scenario(import_scenario([PS51_COMBINED])).to_dict()
    events = {e["action"]: e for e in data["events"]}
    paging = events["restart-vms"]["smart_paging_bytes"]
    assert paging == {"dc01": 0, "web01": 64 * MB, "web02": 64 * MB}
    assert events["reboot-host"]["outcomes"]["test01"] == "failed"
    r = CliRunner().invoke(cli, ["plan", PS51_COMBINED])
    assert r.exit_code == 0 and "test01 cannot start" in r.stdout


def test_compare_takes_the_export_and_refuses_a_bad_one(tmp_path, monkeypatch):
    """compare reads the export where a scenario file goes (the run itself is run's, tested
    end to end below: here the storm is stopped before it starts)."""
    import vmmem.lab.compare

    seen = []

    class Stop(Exception):
        pass

    def stop_before_running(s, *args, **kwargs):
        seen.append(s)
        raise Stop

    monkeypatch.setattr(vmmem.lab.compare, "compare_locations", stop_before_running)
    r = CliRunner().invoke(cli, ["compare", str(tmp_path), PS7, "--scale", "8", "--quiet"])
    assert isinstance(r.exception, Stop), r.output
    assert seen and seen[0].vms == import_scenario([PS7]).scaled(8).vms
    r = CliRunner().invoke(cli, ["compare", str(tmp_path), str(DATA / "truncated-depth.json")])
    assert r.exit_code == 2 and "-Depth" in r.stderr
    r = CliRunner().invoke(cli, ["run", str(DATA / "truncated-depth.json"), "--scale", "8"])
    assert r.exit_code == 2 and "-Depth" in r.stderr


def test_import_plan_run_end_to_end(disk_dir, monkeypatch):
    """The whole path: the exported file, imported without editing, planned, and run at 1/8
    size on a real disk."""
    monkeypatch.chdir(disk_dir)
    r = CliRunner().invoke(cli, ["scenario", "import", PS51_COMBINED, "-o", "hv.toml"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["plan", "hv.toml", "--scale", "8", "--json"])
    assert r.exit_code == 0, r.output
    planned = json.loads(r.stdout)
    assert planned["needs_smart_paging"] is True
    r = CliRunner().invoke(cli, ["run", "hv.toml", "--scale", "8", "--json", "run.json"])
    # Every event ran and was measured; test01 not starting at the host reboot is the answer
    # (exit 4, outcome vms_failed), as the plan said.
    assert r.exit_code == 4, r.output
    data = json.loads((disk_dir / "run.json").read_text())
    assert data["outcome"] == "vms_failed"
    storm = [b for b in data["boots"] if b["kind"] == "restart"]
    assert {b["vm"] for b in storm} == {"dc01", "web01", "web02"}
    assert {b["vm"] for b in storm if b["smart_paging"]} <= {"web01", "web02"}
    assert "test01 failed" in r.stdout  # the host reboot, as planned
    assert "every Smart Paging file is gone" in r.stdout
    assert not [f for _, _, fs in os.walk(disk_dir) for f in fs if f.endswith(".slp")]


# ---------------------------------------------------------------------------------------------
# Fuzzing: any JSON, any value in any field: a located ExportError or a scenario that reads back


FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2, 3, 4, 6, 9, 32783, 2 * MB, 32 * MB, 511 * MB, 2**63, -MB]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(
        [
            "Running",
            "Off",
            "Saved",
            "Start",
            "Save",
            "Microsoft.HyperV.PowerShell.VMMemory",
            "@{Name=x}",
            "\\/Date(1795977000000)\\/",
            "/Date(99999999999999999)/",
            "2026-13-45",
            "web01",
            "a/b",
            "",
            " ",
        ]
    ),
)
JSON = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(
                st.text(max_size=8),
                st.sampled_from(
                    ["Name", "VMName", "MemoryStartup", "MemoryCapacity", "VM", "VMHost", "value"]
                ),
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=12,
)


def check_import(paths: list[str]) -> None:
    try:
        text = export_to_toml(paths)
    except ExportError as e:
        assert e.source and str(e)
        return
    # What was written must read back with the scenario reader and Hyper-V's checks.
    parse_scenario(tomllib.loads(text), "fuzz")


@FUZZ
@given(doc=JSON)
def test_fuzz_any_json_document(tmp_path, doc):
    check_import([write(tmp_path, doc, "any.json")])


VM_FIELDS = (*VM_PROPERTIES, "Unknown")
MEMORY_FIELDS = ("VMName", "DynamicMemoryEnabled", "Startup", "Minimum", "Maximum", "Buffer")
MEMORY_FIELDS += ("Priority",)
TOP_FIELDS = ("ExportedAt", "MemoryReserve", "BalancerAvailableMemory", "VM", "VMMemory")


@FUZZ
@given(
    changes=st.lists(
        st.tuples(
            st.sampled_from(["VM", "VMMemory", "VMHost", "top"]),
            st.integers(min_value=0, max_value=3),
            st.sampled_from(
                VM_FIELDS + MEMORY_FIELDS + TOP_FIELDS + ("MemoryCapacity", "Name", "Format")
            ),
            st.one_of(SCALAR, JSON),
            st.booleans(),  # remove the field instead
        ),
        min_size=1,
        max_size=4,
    ),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-be", "utf-16-le"]),
)
def test_fuzz_a_real_export_with_values_changed(tmp_path, changes, encoding):
    data = ps7_data()
    for section, index, prop, value, remove in changes:
        if section == "top":
            target = data
        elif section == "VMHost":
            target = data.get("VMHost")
            if not isinstance(target, dict):
                continue  # an earlier change removed or replaced it
        else:
            items = data.get(section)
            if not isinstance(items, list) or not items or not isinstance(items[0], dict):
                continue
            target = items[index % len(items)]
        if remove:
            target.pop(prop, None)
        else:
            target[prop] = value
    path = tmp_path / "host.json"
    path.write_bytes(json.dumps(data).encode(encoding))
    check_import([str(path)])


@FUZZ
@given(raw=st.binary(max_size=200))
def test_fuzz_bytes(tmp_path, raw):
    path = tmp_path / "raw.json"
    path.write_bytes(raw)
    check_import([str(path)])
    looks_like_export(path)


@FUZZ
@given(doc=JSON)
def test_fuzz_the_command_never_shows_a_traceback(tmp_path, doc):
    r = CliRunner().invoke(cli, ["scenario", "import", write(tmp_path, doc, "any.json")])
    assert r.exit_code in (0, 2), r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception


# ---------------------------------------------------------------------------------------------
# The script and the docs hold the same format as the reader


def test_export_script_writes_what_the_reader_reads():
    script = (ROOT / "tools" / "Export-VmmemHost.ps1").read_text(encoding="utf-8")
    assert script.startswith("<#") and ".SYNOPSIS" in script and ".EXAMPLE" in script
    select = script[script.index("$vms = @(Get-VM") : script.index("$memory = @()")]
    for prop in VM_PROPERTIES:
        assert prop in select, prop
    for prop in ("State", "AutomaticStartAction", "AutomaticStopAction"):
        assert f"[string]$_.{prop}" in select  # names, not 5.1's integers
    for key in ("VMHost", "VM ", "VMMemory", "MemoryReserve", "BalancerAvailableMemory"):
        assert f"\n    {key}" in script, key
    assert "'vmmem-hyperv-export'" in script and "ExportedAt" in script
    assert "-Depth 4" in script and "Out-File -FilePath $Path -Encoding utf8" in script
    for prop in ("VMName", "Buffer", "Priority", "Startup", "Minimum", "Maximum"):
        assert prop in script[script.index("Get-VMMemory -VMName *") :]


def test_the_docs_show_what_the_import_writes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("HV-LAB01-vmmem.json").write_bytes(Path(PS51_COMBINED).read_bytes())
    text = export_to_toml(["HV-LAB01-vmmem.json"])
    doc = (ROOT / "docs" / "IMPORT.md").read_text(encoding="utf-8")
    excerpt = doc[doc.index("```toml\n") + 8 :]
    excerpt = excerpt[: excerpt.index("```")]
    shown = [x for x in excerpt.splitlines() if x.strip() and x != "..."]
    assert len(shown) > 30
    for line in shown:
        assert line in text.splitlines(), line
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "vmmem scenario import tests/data/hyperv/host-ps51.json -o hv-lab01.toml" in readme
    plan = plan_scenario(import_scenario([PS51_COMBINED]))
    restart = next(e for e in plan.events if e.action == "restart-vms")
    assert restart.paging_total == 128 * MB and "128 MB of Smart Paging" in readme


def test_top_level_fields_are_named_plainly(tmp_path):
    data = ps7_data()
    data["MemoryReserve"] = "lots"
    e = refused([write(tmp_path, data)])
    assert e.key == "MemoryReserve"
    e = refused([write(tmp_path, "Microsoft.HyperV.PowerShell.VirtualMachine", "one.json")])
    assert "-Depth" in e.message


def test_plain_get_vm_without_select_object(tmp_path):
    """`Get-VM | ConvertTo-Json` (5.1) holds the same properties among many others, some
    nested and truncated at the default depth: the ones vmmem reads are all top-level."""
    vms = json.loads(codecs.decode((DATA / "ps51-vm.json").read_bytes(), "utf-16"))
    for v in vms:
        v.update(
            VMName=v["Name"],
            CreationTime="/Date(1795977000000)/",
            Uptime={"Ticks": 0, "Days": 0, "TotalSeconds": 0},
            NetworkAdapters=["Microsoft.HyperV.PowerShell.VMNetworkAdapter"],
            HardDrives=["Microsoft.HyperV.PowerShell.HardDiskDrive"],
        )
    path = write(tmp_path, vms, "getvm.json")
    assert import_scenario([path, *PS51[1:]]).vms == import_scenario(PS51).vms


def test_an_export_that_is_a_fifo_is_refused_without_waiting(tmp_path):
    """`scenario import` and every command that takes a SCENARIO open only regular files: a
    FIFO without a writer is refused at once (it used to hang the JSON sniffing)."""
    import threading

    fifo = tmp_path / "host.json"
    os.mkfifo(fifo)
    done = threading.Event()
    results: list[object] = []

    def invoke() -> None:
        results.append(CliRunner().invoke(cli, ["scenario", "import", str(fifo)]))
        done.set()

    threading.Thread(target=invoke, daemon=True).start()
    if not done.wait(120):
        with open(fifo, "w"):
            pass  # unblock the hung open so the thread ends
        pytest.fail("scenario import waited on a FIFO")
    r = results[0]
    assert r.exit_code == 2 and "FIFO" in r.stderr, r.output
