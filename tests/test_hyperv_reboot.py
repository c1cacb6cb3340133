"""A host reboot as Hyper-V does it (automatic stop and start actions; never Smart Paging), the
article's reading as an explicit option, restart-vms, generations, and what plan predicts."""

from __future__ import annotations

import glob
import os
import threading
from pathlib import Path

import pytest

from vmmem.errors import NotEnoughMemoryError, SettingsError
from vmmem.hyperv import Boot, Host, Idle
from vmmem.hyperv.session import GuestSession
from vmmem.lab.plan import plan_scenario
from vmmem.lab.scenario import article_scenario, parse_scenario

MB = 2**20


def article_host(folder, stop: str = "Save", delays=(0, 0, 0, 0), start: str = "StartIfRunning"):
    """The article's host at 1/8 size: 4 x 64 MB Startup on 176 MB, idle at about 40 MB."""
    host = Host("176MB", smart_paging_path=folder, balancer_interval=0.05, balancer_start_delay=0)
    for i in range(4):
        host.add_vm(
            f"vm{i + 1}",
            startup="64MB",
            minimum="32MB",
            maximum="256MB",
            workload=[Boot(cpu_time=0.2), Idle(demand="31MB", touch_interval=0.05)],
            automatic_stop_action=stop,
            automatic_start_action=start,
            automatic_start_delay=delays[i],
        )
    host.start_all(timeout=30)
    host.wait_settled(timeout=30)
    return host


def paging_files(folder) -> list[str]:
    return glob.glob(os.path.join(str(folder), "**", "*.slp"), recursive=True)


def test_save_restores_every_vm_with_its_memory_and_no_boot(disk_dir):
    with article_host(disk_dir) as host:
        before = {s.name: s.memory_assigned for s in host.status}
        boots = {n: len(vm.boot_reports) for n, vm in host.vms.items()}
        reboot = host.reboot()
        assert {s.state for s in host.status} <= {"Saved", "Running"}
        outcomes = reboot.wait(30)
        assert {o.result for o in outcomes.values()} == {"restored"}
        host.wait_settled(timeout=30)  # the saved state read back, the guests idle again
        assert {s.name: s.memory_assigned for s in host.status} == before
        assert {s.state for s in host.status} == {"Running"}
        assert {n: len(vm.boot_reports) for n, vm in host.vms.items()} == boots  # no boot ran
        # The saved state was real: written out at the Save, read back at the restore, gone.
        for vm in host.vms.values():
            c = vm.memory.counters
            assert c["page_outs"] > 0 and c["page_ins"] == c["page_outs"]
            assert c["file_created"] == c["file_deleted"] == 1
        assert paging_files(disk_dir) == []
        # And never Smart Paging: no sample of any VM shows a Smart Paging file in use.
        assert not any(v.smart_paging_file_in_use for t in host.timeline for v in t.vms)


def test_settled_waits_until_every_restore_has_read_its_saved_state(disk_dir, monkeypatch):
    """A restore that has not yet read its saved state back is not settled (CI once saw the
    host settle with half the saved pages still in the file)."""
    gate = threading.Event()
    read_saved_state = GuestSession.read_saved_state

    def held_back(self: GuestSession) -> None:
        gate.wait(30)  # a slow disk: the restore's reads have not begun
        read_saved_state(self)

    with article_host(disk_dir) as host:
        monkeypatch.setattr(GuestSession, "read_saved_state", held_back)
        outcomes = host.reboot().wait(30)
        assert {o.result for o in outcomes.values()} == {"restored"}
        assert all(vm.restoring for vm in host.vms.values())
        assert {s.phase for s in host.status} == {"restoring"}
        assert not any(s.smart_paging_file_in_use for s in host.status)  # a saved state
        with pytest.raises(TimeoutError, match="restoring"):
            host.wait_settled(timeout=0.5)
        gate.set()
        host.wait_settled(timeout=30)
        assert not any(vm.restoring for vm in host.vms.values())
        assert {s.phase for s in host.status} == {"idle"}
        for vm in host.vms.values():
            c = vm.memory.counters
            assert c["page_outs"] > 0 and c["page_ins"] == c["page_outs"]


def test_a_saved_vm_holds_its_memory_in_a_saved_state_file(disk_dir):
    with article_host(disk_dir, start="Nothing") as host:
        assert {o.result for o in host.reboot().wait(10).values()} == {"saved"}
        saved = sorted(Path(p).name.split("-")[:2] for p in paging_files(disk_dir))
        assert saved == [[f"vm{i}", "savedstate"] for i in range(1, 5)]
        assert host.available_memory == 176 * MB  # their frames went back to the host
        host.vms["vm1"].stop()  # discards vm1's saved state
        assert len(paging_files(disk_dir)) == 3
    assert paging_files(disk_dir) == []  # the host's close discards the rest


def test_shutdown_with_no_delay_starts_two_and_two_fail_with_hyperv_message(disk_dir):
    with article_host(disk_dir, stop="ShutDown") as host:
        reboot = host.reboot()
        outcomes = reboot.wait(30)
        started = sorted(n for n, o in outcomes.items() if o.result == "started")
        failed = sorted(n for n, o in outcomes.items() if o.result == "failed")
        assert (started, failed) == (["vm1", "vm2"], ["vm3", "vm4"])
        for n in failed:
            assert "Not enough memory in the system to start the virtual machine" in (
                outcomes[n].error or ""
            )
            assert host.vms[n].state == "Off"
        for n in started:
            host.vms[n].wait_booted(30)
            assert not host.vms[n].boot_report.smart_paging  # a start from Off never pages
        assert paging_files(disk_dir) == []


REBOOT = """
name = "article-reboot"
[host]
balancer_start_delay = 0
memory = "1400MB"
balancer_interval = 0.05
[[vm]]
name = "vm"
count = 4
startup = "512MB"
minimum = "32MB"
maximum = "2048MB"
automatic_stop_action = "%(stop)s"
[vm.workload]
idle_demand = "250MB"
boot_seconds = 1.6
[vm.workload.idle]
touch_interval = 0.05
[[event]]
action = "start"
[[event]]
action = "reboot-host"
"""


def test_plan_names_the_failures_and_the_delay_that_avoids_them(disk_dir):
    s = parse_scenario(__import__("tomllib").loads(REBOOT % {"stop": "ShutDown"})).scaled(8)
    p = plan_scenario(s)
    reboot = p.events[1]
    assert reboot.start_failures == ("vm3", "vm4")
    assert reboot.outcomes == {"vm1": "started", "vm2": "started", "vm3": "failed", "vm4": "failed"}
    delay = reboot.suggested_delay
    assert delay is not None and delay > 0
    assert "staggering the automatic starts" in p.verdict()
    # With that delay, in the host's start order, all four start, none on Smart Paging.
    with article_host(disk_dir, stop="ShutDown", delays=[i * delay for i in range(4)]) as host:
        outcomes = host.reboot().wait(60)
        assert {o.result for o in outcomes.values()} == {"started"}, outcomes
        for vm in host.vms.values():
            assert not vm.wait_booted(30).smart_paging
        assert paging_files(disk_dir) == []
    # And with Save, the plan sees every VM restored.
    saved = parse_scenario(__import__("tomllib").loads(REBOOT % {"stop": "Save"})).scaled(8)
    assert set(plan_scenario(saved).events[1].outcomes.values()) == {"restored"}


def test_the_articles_reading_is_an_explicit_option(disk_dir):
    with article_host(disk_dir) as host:
        reboot = host.reboot(smart_paging_on_host_reboot=True)
        # Done when made: the restarts were the host's, no start is left to a thread.
        assert reboot.done and reboot.wait(0) is reboot.outcomes
        assert {o.result for o in reboot.outcomes.values()} == {"restarted"}
        reports = host.wait_booted(timeout=60)
        assert all(r.kind == "host-restart" and r.smart_paging for r in reports)
        assert sum(r.smart_paging_peak_bytes for r in reports) > 0


def test_a_restore_that_does_not_fit_fails_and_leaves_the_vm_saved(disk_dir):
    with article_host(disk_dir, start="Nothing") as host:
        reboot = host.reboot()
        assert {o.result for o in reboot.wait(10).values()} == {"saved"}
        # Another VM takes the room first.
        host.add_vm("big", startup="128MB", minimum="128MB", workload=[Idle(touch_interval=0.05)])
        host.vms["big"].start()
        host.vms["vm1"].start()  # restores: 40 MB fits beside 128 MB
        with pytest.raises(NotEnoughMemoryError, match="Not enough memory in the system"):
            host.vms["vm2"].start()
        assert host.vms["vm2"].state == "Saved" and host.vms["vm2"].saved_pages > 0


def test_restart_vms_restarts_only_the_named_vms_at_once(disk_dir):
    with article_host(disk_dir) as host:
        host.restart_vms(["vm1", "vm2"])
        reports = [host.vms[n].wait_booted(30) for n in ("vm1", "vm2")]
        assert all(r.kind == "restart" for r in reports)
        assert len(host.vms["vm3"].boot_reports) == 1  # not restarted


def test_the_article_storm_is_restart_vms_and_needs_648_mb():
    s = article_scenario()
    assert [e.action for e in s.events] == ["start", "idle", "restart-vms", "settle"]
    storm = plan_scenario(s).events[2]
    assert storm.paging_total == 648 * MB


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(generation=1, maximum="2TB"), "at most 1048576 MB"),
        (dict(generation=3), "Generation"),
        (dict(automatic_stop_action="Hibernate"), "-AutomaticStopAction"),
        (dict(automatic_start_action="Later"), "-AutomaticStartAction"),
        (dict(automatic_start_delay=-1), "-AutomaticStartDelay"),
        (dict(automatic_start_delay=float("nan")), "-AutomaticStartDelay"),
    ],
)
def test_generation_and_host_actions_are_checked(tmp_path, kwargs, message):
    with Host("64MB", smart_paging_path=tmp_path) as host:
        with pytest.raises(SettingsError, match=message):
            host.add_vm("vm", startup="32MB", **kwargs)


def test_generation_2_allows_12_tb():
    from vmmem.hyperv import validate_settings

    assert validate_settings("vm", "512MB", maximum="12TB").maximum == 12 * 2**40


def test_a_running_static_vm_can_be_resized(disk_dir):
    """Windows Server 2016 and later: a static VM's memory changes while it runs, if the host
    has it (more) or the guest can give it back (less)."""
    work = [Boot(cpu_time=0.1), Idle(demand="20MB", touch_interval=0.05)]
    with Host(
        "256MB", smart_paging_path=disk_dir, balancer_interval=0.05, balancer_start_delay=0
    ) as host:
        static = host.add_vm("static", startup="64MB", dynamic=False, workload=work)
        other = host.add_vm("dyn", startup="64MB", minimum="32MB", workload=work)
        for vm in (static, other):
            vm.start()
            vm.wait_booted(10)
        host.wait_settled(10)
        static.startup = "128MB"
        assert static.status.memory_assigned == 128 * MB and static.startup == 128 * MB
        with pytest.raises(NotEnoughMemoryError, match="resize the virtual machine 'static'"):
            static.startup = "256MB"
        assert static.startup == 128 * MB  # unchanged by the refusal
        static.startup = "32MB"  # the guest uses 20 MB: it can give the rest back
        assert static.status.memory_assigned == 32 * MB
        with pytest.raises(SettingsError, match="cannot be changed while"):
            other.startup = "96MB"  # a dynamic VM's Startup RAM only while it is off


def test_reboot_host_through_the_command_line(disk_dir, monkeypatch):
    """`vmmem run` with a reboot-host event: each VM's outcome printed, the verdict about the
    reboot (never Smart Paging), the outcomes in the JSON, and the phases on the plot."""
    import json

    from click.testing import CliRunner

    from vmmem.cli.main import EXIT_VMS_FAILED, cli

    monkeypatch.chdir(disk_dir)
    (disk_dir / "reboot.toml").write_text(REBOOT % {"stop": "ShutDown"})
    r = CliRunner().invoke(
        cli,
        ["run", "reboot.toml", "--scale", "8", "-q", "--json", "r.json", "--plot", "r.png"],
    )
    # Every event played and was measured; two VMs did not come back: exit 4, not 0 or 1.
    assert r.exit_code == EXIT_VMS_FAILED, r.output
    assert "synthetic boot of 0.2 s CPU" in r.stdout  # which guest produced the figures
    assert "vm1 started, vm2 started, vm3 failed, vm4 failed" in r.stdout
    assert "host reboot: vm1, vm2 started; vm3, vm4 failed" in r.stdout
    data = json.loads((disk_dir / "r.json").read_text())
    assert data["outcome"] == "vms_failed" and data["error"] is None
    (event,) = [e for e in data["events"] if e["action"] == "reboot-host"]
    assert {n: o["result"] for n, o in event["outcomes"].items()} == {
        "vm1": "started",
        "vm2": "started",
        "vm3": "failed",
        "vm4": "failed",
    }
    assert "Not enough memory in the system" in event["outcomes"]["vm3"]["error"]
    assert (disk_dir / "r.png").stat().st_size > 20_000
    assert list(disk_dir.rglob("*.slp")) == []
