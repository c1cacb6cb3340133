"""A VM's virtual processors (issue 18): processor_count sets how many guest threads its boot
runs on, each stream on its own thread and clock, the boot over when all are.

The split rules are checked against small models (which epochs, which chunks, in which order);
the threads on a real host with real paging files; the setting, the scenario key, the CLI
option, the import and the sweep axis by the errors they promise.
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from tracebuild import Disk, Epoch, write_trace

from vmmem import MB, VmmemError
from vmmem.errors import SettingsError
from vmmem.guests import DEFAULT_GUEST_IPS, GuestTrace, replay_epochs
from vmmem.guests.replay import plan_replay, processor_epochs, run_replay
from vmmem.hyperv import Boot, Host, Idle, Workload
from vmmem.hyperv.recorded import RecordedBoot
from vmmem.hyperv.settings import validate_settings
from vmmem.hyperv.workloads import Guest, windows_model
from vmmem.lab.scenario import ScenarioError, parse_scenario
from vmmem.memory import FramePool, GuestMemory

TICK = 0.05
# The vCPU of each epoch: every vCPU of a recording ran (numbered as they first appear).
VCPU_EPOCHS = st.lists(st.integers(0, 3), min_size=1, max_size=24).map(
    lambda raw: [sorted(set(raw), key=raw.index).index(v) for v in raw]
)


def _trace(folder: str, vcpus_of_epochs: list[int], **options: object) -> GuestTrace:
    epochs = [Epoch(v, [i % 97, (3 * i) % 97], written=[i % 2 == 0]) for i, v in
              enumerate(vcpus_of_epochs)]  # fmt: skip
    return GuestTrace.load(write_trace(Path(folder) / "t.npz", epochs, **options))  # type: ignore[arg-type]


# -- the split rule of a recording ------------------------------------------------------------


@settings(max_examples=60)
@given(owners=VCPU_EPOCHS, processors=st.integers(1, 6))
def test_each_epoch_runs_once_in_order_on_processor_k_mod_n(owners, processors):
    with tempfile.TemporaryDirectory() as folder:
        trace = _trace(folder, owners)
        streams = processor_epochs(trace, processors)
    k = trace.vcpus
    # N > K: the processors past the recorded vCPUs stay idle (no invented parallel work)
    assert len(streams) == (1 if k == 1 else min(processors, k))
    every = np.concatenate(streams)
    assert sorted(every.tolist()) == list(range(len(owners)))  # each epoch exactly once
    for p, stream in enumerate(streams):
        assert np.all(np.diff(stream) > 0)  # the recording's global order within a stream
        if k > 1:
            assert {owners[e] % processors for e in stream} <= {p}
    if processors == 1 or k == 1:
        assert streams[0].tolist() == list(range(len(owners)))


@settings(max_examples=40)
@given(owners=VCPU_EPOCHS, processors=st.integers(1, 4), per_epoch=st.booleans())
def test_a_processors_plan_replays_its_epochs_and_charges_their_instructions(
    owners, processors, per_epoch
):
    with tempfile.TemporaryDirectory() as folder:
        trace = _trace(folder, owners, disk=[Disk(0, 0), Disk(len(owners) - 1, 4096)])
    total_seconds = 0.0
    total_requests = 0
    for stream in processor_epochs(trace, processors):
        plan = plan_replay(
            trace, trace.memory_pages, page_size=trace.page_size, guest_ips=1e6,
            per_epoch=per_epoch, epochs=stream,
        )  # fmt: skip
        want = np.concatenate([trace.epoch(int(e))[0] for e in stream])
        assert np.array_equal(plan.pages, want)  # its epochs' accesses, in order
        seconds = [seg.seconds for seg in plan.segments]
        expected = sum(trace.epoch_instructions_of(int(e)) for e in stream) / 1e6
        assert sum(seconds) == pytest.approx(expected)
        total_seconds += sum(seconds)
        total_requests += sum(0 if s.disk is None else len(s.disk[0]) for s in plan.segments)
        replayed = run_replay(plan, lambda p, w: None, lambda o, n, w: None, lambda s: None)
        assert replayed == len(stream)
    assert total_seconds == pytest.approx(trace.instructions / 1e6)
    assert total_requests == 2  # every disk request once, with the epoch that issued it


def test_plan_refuses_epochs_out_of_order(tmp_path):
    trace = _trace(str(tmp_path), [0, 1, 0])
    with pytest.raises(SettingsError, match="epochs must increase"):
        plan_replay(trace, 4096, page_size=4096, guest_ips=1e9, epochs=np.array([2, 0]))
    with pytest.raises(SettingsError, match="processors must be a whole number"):
        processor_epochs(trace, 0)


def test_replay_epochs_runs_one_vcpus_stream(tmp_path):
    trace = _trace(str(tmp_path), [0, 1, 0, 1, 1], vcpu_instructions=[1500, 2300])
    with FramePool(64 * 4096) as pool, GuestMemory(pool, 16 * MB, paging_dir=tmp_path) as mem:
        seen: list[int] = []
        result = replay_epochs(mem, trace, vcpu=1, on_epoch=lambda p: seen.append(p.epoch))
        assert seen == [1, 3, 4] and result.epochs == 3
        assert result.instructions == 2300  # vCPU 1's, its last epoch partial
        with pytest.raises(
            SettingsError, match="vcpu must be one of the recording's vCPUs, 0 to 1"
        ):
            replay_epochs(mem, trace, vcpu=2)


# -- the split rule of a modelled boot --------------------------------------------------------


class Streams:
    """A guest of `processors` virtual processors that records what each one's stream does,
    running the streams one after another (the order between them is the threads' business)."""

    page_size = 4096

    def __init__(self, startup_pages: int, processors: int) -> None:
        self.startup_pages = self.guest_pages = self.demand = startup_pages
        self.processors = processors
        self.events: list[list[tuple[str, object]]] = [[]]

    def commit_range(self, first: int, count: int) -> None:
        pass

    def replay(self, pages: np.ndarray, writes: np.ndarray | None) -> None:
        self.events[-1].append(("pages", np.asarray(pages).copy()))

    def disk_io(self, offsets: np.ndarray, lengths: np.ndarray, writes: object) -> None:
        self.events[-1].append(("disk", np.asarray(offsets).copy()))

    def sleep(self, seconds: float) -> None:
        self.events[-1].append(("sleep", seconds))

    def run_on_processors(self, streams):
        assert 1 < len(streams) <= self.processors
        self.events = []
        for stream in streams:
            self.events.append([])
            stream(self)


def _boot(boot: Boot, processors: int, pages: int = 8192) -> list[list[tuple[str, object]]]:
    guest = Streams(pages, processors)
    boot.run(guest)  # type: ignore[arg-type]
    return guest.events


def _same(a: list[tuple[str, object]], b: list[tuple[str, object]]) -> bool:
    return len(a) == len(b) and all(
        x[0] == y[0] and np.array_equal(np.asarray(x[1]), np.asarray(y[1]))
        for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("model", ["synthetic-boot", "windows-model", "windows-model-zeroing"])
@pytest.mark.parametrize("processors", [2, 3, 5])
def test_a_modelled_boots_chunks_are_dealt_round_robin(model, processors):
    boot = (
        Boot(chunk_pages=512)
        if model == "synthetic-boot"
        else windows_model(model, chunk_pages=512)
    )
    [one] = _boot(boot, 1)
    streams = _boot(boot, processors)
    assert len(streams) == processors
    # With one processor a chunk is: its accesses, its reads, (zeroing), its CPU.
    chunks: list[list[tuple[str, object]]] = [[]]
    for event in one:
        chunks[-1].append(event)
        if event[0] == "sleep":
            chunks.append([])
    chunks.pop()
    zeroing = boot.zero_free
    for p, stream in enumerate(streams):
        mine = chunks[p::processors]
        # every chunk's own accesses, reads and CPU on processor i mod N, in order
        own = [e for c in mine for e in (c[:2] if c[1][0] == "disk" else c[:1])]
        got = [e for e in stream if not (e[0] == "pages" and _is_zeroing(e, boot))]
        got_own = [e for e in got if e[0] != "sleep"]
        assert _same(got_own, own)
        assert [e for e in stream if e[0] == "sleep"].__len__() == len(mine)
        zeroed = [e for e in stream if e[0] == "pages" and _is_zeroing(e, boot)]
        assert bool(zeroed) == (zeroing and p == 0)  # the zero page thread: processor 0 only
    all_pages = Counter(
        int(x) for s in streams for kind, v in s if kind == "pages" for x in np.asarray(v)
    )
    assert all_pages == Counter(int(x) for kind, v in one if kind == "pages" for x in np.asarray(v))
    # the same CPU in all when zeroing hides in I/O waits (the models read their disk)
    cpu = sum(float(v) for s in streams for kind, v in s if kind == "sleep")  # type: ignore[arg-type]
    assert cpu == pytest.approx(sum(float(v) for kind, v in one if kind == "sleep"))  # type: ignore[arg-type]


def _is_zeroing(event: tuple[str, object], boot: Boot) -> bool:
    """Free-list pages lie past the boot's footprint."""
    pages = np.asarray(event[1])
    return bool(pages.size) and int(pages.min()) >= boot.footprint_pages(8192)


def test_zeroing_without_reads_is_charged_on_processor_0():
    boot = Boot(chunk_pages=512, touch_fraction=0.5, zero_free=True, disk_read_fraction=0.0)
    [one] = _boot(boot, 1)
    streams = _boot(boot, 4)
    cpu = [sum(float(v) for kind, v in s if kind == "sleep") for s in streams]  # type: ignore[arg-type]
    zero_cpu = boot.zero_cpu_per_page * (8192 - boot.footprint_pages(8192))
    own = boot.cpu_per_page * boot.footprint_pages(8192) / 4  # chunks share the boot's own CPU
    assert cpu[0] == pytest.approx(own + zero_cpu)
    assert cpu[1:] == pytest.approx([own] * 3)
    assert sum(cpu) == pytest.approx(sum(float(v) for kind, v in one if kind == "sleep"))  # type: ignore[arg-type]


# -- on a real host -----------------------------------------------------------------------------


def _smp_trace(folder: Path, vcpus: int = 2) -> str:
    """A boot of `vcpus` streams over 56 MB of a 64 MB guest: each vCPU writes its own share
    of the pages, twice over, 256 pages an epoch; the epochs alternate between the vCPUs."""
    share = 56 * MB // 4096 // vcpus
    runs = [np.tile(np.arange(v * share, (v + 1) * share), 2) for v in range(vcpus)]
    epochs = [
        Epoch(v, runs[v][i : i + 256].tolist(), written=[True] * 256)
        for i in range(0, len(runs[0]), 256)
        for v in range(vcpus)
    ]
    return write_trace(folder / "smp.npz", epochs, memory_bytes=64 * MB,
                       epoch_instructions=2_000_000, disk=[Disk(3, 0), Disk(10, 8192)])  # fmt: skip


def test_a_storm_of_two_processor_vms_boots_each_vcpu_on_its_own_clock(disk_dir):
    trace_path = _smp_trace(disk_dir)
    trace = GuestTrace.load(trace_path)
    workload = [RecordedBoot(trace_path), Idle(touch_interval=0.05, touches=64)]
    with Host(
        "100MB", smart_paging_path=disk_dir / "vms", balancer_interval=TICK,
        balancer_start_delay=0,
    ) as host:  # fmt: skip
        vms = [
            host.add_vm(name, "64MB", minimum="32MB", workload=workload, processor_count=2)
            for name in ("a", "b")
        ]
        for vm in vms:
            vm.start()
            vm.wait_booted(60)
            host.wait_settled(60)
        host.restart_vms()  # 2 x 64 MB Startup on 100 MB: Smart Paging for the gap
        reports = [vm.wait_booted(60) for vm in vms]
        host.wait_settled(60)
    assert any(r.smart_paging and r.page_outs for r in reports)
    for r in reports:
        assert r.processor_count == 2 and len(r.processor_boot_times) == 2
        assert r.boot_time == max(r.processor_boot_times)
        assert r.processor_boot_times[r.last_processor] == r.boot_time
        # each processor's clock holds at least its own stream's instructions
        for v, seconds in enumerate(r.processor_boot_times):
            assert seconds >= trace.vcpu_instructions[v] / DEFAULT_GUEST_IPS
        assert r.guest_seconds == pytest.approx(
            trace.vcpu_instructions[r.last_processor] / DEFAULT_GUEST_IPS
        )
        assert r.boot_time == pytest.approx(
            r.guest_seconds + r.fault_wait_seconds + r.disk_seconds + r.memory_wait_seconds
        )
        assert r.disk_requests == 2  # both vCPUs' requests, each once


def test_a_one_vcpu_boot_runs_on_processor_0_of_four(disk_dir):
    with Host("200MB", smart_paging_path=disk_dir / "vms", balancer_interval=TICK) as host:
        vm = host.add_vm("one", "64MB", workload=[RecordedBoot("busybox", scale=8)],
                         processor_count=4)  # fmt: skip
        vm.start()
        r = vm.wait_booted(60)
    assert r.processor_count == 4 and r.last_processor == 0
    assert r.processor_boot_times[1:] == [0.0, 0.0, 0.0]  # no invented parallel work
    assert r.processor_boot_times[0] == r.boot_time


class _Streams(Workload):
    """A boot of two streams: `first` and `second` (each given its processor)."""

    phase = "boot"
    boot = True

    def __init__(self, first, second) -> None:
        self.streams = [first, second]

    def run(self, guest: Guest) -> None:
        guest.run_on_processors(self.streams)


def test_an_error_in_one_processor_stops_the_boot_with_it(disk_dir):
    def sleeper(cpu: Guest) -> None:
        cpu.sleep(3600)  # until the other processor's error stops it

    def failing(cpu: Guest) -> None:
        cpu.replay(np.arange(10, dtype=np.uint32), None)
        raise RuntimeError("processor 1 broke")

    with Host("200MB", smart_paging_path=disk_dir / "vms", balancer_interval=TICK) as host:
        vm = host.add_vm("x", "64MB", workload=[_Streams(sleeper, failing)], processor_count=2)
        vm.start()
        with pytest.raises(VmmemError, match="processor 1 broke"):
            vm.wait_booted(60)
        assert vm.state == "Off" and isinstance(vm.error, RuntimeError)
    assert not [t for t in threading.enumerate() if t.name.startswith("vm-x")]


def test_a_stop_stops_every_processors_thread(disk_dir):
    running = threading.Barrier(3)

    def forever(cpu: Guest) -> None:
        running.wait()
        while True:
            cpu.sleep(3600)

    with Host("200MB", smart_paging_path=disk_dir / "vms", balancer_interval=TICK) as host:
        vm = host.add_vm("y", "64MB", workload=[_Streams(forever, forever)], processor_count=2)
        vm.start()
        running.wait(60)  # both processors' threads are in their streams
        assert {t.name for t in threading.enumerate()} >= {"vm-y", "vm-y-cpu1"}
        vm.stop()
        assert vm.state == "Off" and vm.error is None
    assert not [t for t in threading.enumerate() if t.name.startswith("vm-y")]


def test_more_streams_than_processors_is_refused(disk_dir):
    def nothing(cpu: Guest) -> None:
        pass

    with Host("200MB", smart_paging_path=disk_dir / "vms", balancer_interval=TICK) as host:
        vm = host.add_vm("z", "64MB", workload=[_Streams(nothing, nothing)])
        vm.start()
        with pytest.raises(VmmemError, match="2 streams for 1 virtual processors"):
            vm.wait_booted(60)


# -- the setting, the scenario key, the option, the import, the axis ----------------------------


@pytest.mark.parametrize(
    ("value", "generation", "message"),
    [
        (0, 2, "of 0 is out of range: a generation 2 VM has from 1 to 240"),
        (241, 2, "of 241 is out of range: a generation 2 VM has from 1 to 240"),
        (65, 1, "of 65 is out of range: a generation 1 VM has from 1 to 64"),
        (True, 2, "must be a whole number from 1 to 240, got True"),
        (2.0, 2, "must be a whole number from 1 to 240, got 2.0"),
    ],
)
def test_processor_count_is_checked_as_hyperv_does(value, generation, message):
    with pytest.raises(
        SettingsError, match=f"Virtual processors \\(Set-VMProcessor -Count\\) {message}"
    ):
        validate_settings("v", "512MB", processor_count=value, generation=generation)
    assert validate_settings("v", "512MB", processor_count=240).processor_count == 240
    assert validate_settings("v", "512MB").processor_count == 1  # New-VM's default


def test_processor_count_changes_only_while_off(disk_dir):
    with Host("200MB", smart_paging_path=disk_dir / "vms", balancer_interval=TICK) as host:
        vm = host.add_vm("v", "64MB", workload=[Boot(cpu_per_page=1e-6)])
        vm.processor_count = 4
        assert vm.processor_count == 4 and vm.settings.processor_count == 4
        vm.start()
        with pytest.raises(SettingsError, match="Set-VMProcessor -Count cannot be changed while"):
            vm.processor_count = 2
        assert vm.wait_booted(60).processor_count == 4


def _scenario(vm: str) -> dict[str, object]:
    import tomllib

    return tomllib.loads(f'[host]\nmemory = "1400MB"\n[[vm]]\nname = "a"\nstartup = "512MB"\n{vm}')


@pytest.mark.parametrize(
    ("vm", "message"),
    [
        ("processor_count = 0", "s.toml: vm[0].processor_count: expected a whole number of "
         "virtual processors from 1 to 240 (Hyper-V's maximum for a generation 2 VM), got 0"),
        ("generation = 1\nprocessor_count = 65", "vm[0].processor_count: expected a whole number "
         "of virtual processors from 1 to 64 (Hyper-V's maximum for a generation 1 VM), got 65"),
        ('processor_count = "2"', 'vm[0].processor_count: expected a whole number of virtual '
         'processors from 1 to 240'),
        ("count = 3\nprocessor_count = true", "vm[0].processor_count: expected a whole number"),
    ],
)  # fmt: skip
def test_the_scenario_key_names_file_and_field(vm, message):
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(_scenario(vm), "s.toml")
    assert message in str(caught.value)


def test_the_scenario_key_sets_every_vm_of_a_count_block():
    s = parse_scenario(_scenario("count = 3\nprocessor_count = 4"), "s.toml")
    assert [v.processor_count for v in s.vms] == [4, 4, 4]
    assert [v.settings.processor_count for v in s.vms] == [4, 4, 4]
    assert {v["processor_count"] for v in s.to_dict()["vms"]} == {4}  # in the results' JSON
    assert parse_scenario(_scenario(""), "s.toml").vms[0].processor_count == 1


def test_cli_processors_option(tmp_path):
    from vmmem.cli.main import cli

    run = CliRunner().invoke
    r = run(cli, ["plan", "--processors", "0"])
    assert r.exit_code == 2 and "--processors" in r.output
    gen1 = tmp_path / "g1.toml"
    gen1.write_text('[host]\nmemory = "1400MB"\n[[vm]]\nname = "old"\nstartup = "512MB"\n'
                    "generation = 1\n")  # fmt: skip
    r = run(cli, ["plan", str(gen1), "--processors", "65", "--json"])
    assert r.exit_code == 2
    assert "--processors: VM 'old': Virtual processors (Set-VMProcessor -Count) of 65" in r.output
    r = run(cli, ["plan", str(gen1), "--processors", "64", "--json"])
    assert r.exit_code == 0, r.output
    for command in ("run", "compare", "plan"):
        assert "--processors N" in run(cli, [command, "--help"]).output


def test_import_takes_processor_count(tmp_path):
    from vmmem.lab.hyperv_import import export_to_toml, import_scenario

    vm = {"Name": "dc01", "State": 2, "Generation": 2, "ProcessorCount": 4,
          "DynamicMemoryEnabled": True, "MemoryStartup": 512 * MB, "MemoryMinimum": 512 * MB,
          "MemoryMaximum": 1024 * MB}  # fmt: skip
    path, host = tmp_path / "vms.json", tmp_path / "host.json"
    host.write_text(json.dumps({"Name": "hv01", "MemoryCapacity": 8192 * MB}))
    path.write_text(json.dumps([vm]))
    assert "processor_count = 4                # ProcessorCount" in export_to_toml([path, host])
    assert import_scenario([path, host]).vms[0].processor_count == 4
    path.write_text(json.dumps([vm | {"ProcessorCount": 241}]))
    with pytest.raises(ScenarioError, match="ProcessorCount: expected a whole number of virtual "
                       "processors .* from 1 to 240, got 241"):  # fmt: skip
        import_scenario([path, host])


def test_processor_count_is_a_sweep_axis(tmp_path):
    from vmmem.lab.sweep import SweepError, cell_scenario, parse_sweep

    sweep = parse_sweep({"axes": {"processor_count": [1, 4]}}, "s.toml")
    counts = []
    for cell in sweep.cells:
        s, _, _ = cell_scenario(sweep.scenario_text, sweep.scenario_source, cell.inputs, str)
        counts.append({v.processor_count for v in s.vms})
    assert counts == [{1}, {4}]
    with pytest.raises(
        ScenarioError, match=r"axes.processor_count\[0\]: expected a whole number from 1 to 240"
    ):
        parse_sweep({"axes": {"processor_count": [0]}}, "s.toml")
    gen1 = tmp_path / "g1.toml"
    gen1.write_text('[host]\nmemory = "1400MB"\n[[vm]]\nname = "old"\nstartup = "512MB"\n'
                    "generation = 1\n")  # fmt: skip
    with pytest.raises(SweepError, match="vm\\[0\\].processor_count: .* from 1 to 64"):
        parse_sweep({"scenario": str(gen1), "processor_count": 100}, "s.toml")


@pytest.mark.parametrize("processors", [1, 2, 3])
def test_a_boots_expected_cpu_is_its_latest_processors(processors):
    boot = windows_model("windows-model-zeroing", chunk_pages=512, disk_read_fraction=0.0)
    streams = _boot(boot, processors)
    cpu = [sum(float(v) for kind, v in s if kind == "sleep") for s in streams]  # type: ignore[arg-type]
    assert boot.expected_cpu_time(8192, processors) == pytest.approx(max(cpu))


def test_a_recordings_expected_cpu_is_its_latest_processors(tmp_path):
    trace = _trace(str(tmp_path), [0, 1, 2, 0, 1, 2, 0], vcpu_instructions=[2500, 1700, 1600])
    assert trace.vcpus == 3
    boot = RecordedBoot(str(tmp_path / "t.npz"), guest_ips=1000.0)
    assert boot.expected_cpu_time(8192) == pytest.approx(5.8)  # one processor: all of it
    assert boot.expected_cpu_time(8192, 2) == pytest.approx(max(2500 + 1600, 1700) / 1000)
    assert boot.expected_cpu_time(8192, 3) == pytest.approx(2.5)
    assert boot.expected_cpu_time(8192, 8) == pytest.approx(2.5)  # idle processors add nothing


def test_run_with_processors_reports_each_processor(disk_dir):
    from vmmem.cli.main import cli
    from vmmem.lab.schema import RESULT_SCHEMA, validate

    scenario = disk_dir / "two.toml"
    scenario.write_text(
        'name = "two"\n[host]\nmemory = "100MB"\nbalancer_interval = 0.05\n'
        'balancer_start_delay = 0\n[[vm]]\nname = "vm"\ncount = 2\nstartup = "64MB"\n'
        'minimum = "32MB"\n[vm.workload]\nguest = "windows-model"\nidle_demand = "16MB"\n'
    )
    out = disk_dir / "run.json"
    r = CliRunner().invoke(
        cli, ["run", str(scenario), "--processors", "3", "--paging-dir", str(disk_dir / "sp"),
              "-q", "--json", str(out)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert not validate(data, RESULT_SCHEMA)
    assert {v["processor_count"] for v in data["scenario"]["vms"]} == {3}
    for boot in data["boots"]:
        assert boot["processor_count"] == 3 and len(boot["processor_boot_times"]) == 3
        assert boot["boot_time"] == boot["processor_boot_times"][boot["last_processor"]]
        line = f"{boot['vm']}: 3 virtual processors, each booted in "
        assert line in " ".join(r.stdout.split())
