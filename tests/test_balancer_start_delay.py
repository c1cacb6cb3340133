"""Dynamic Memory after a restart: the host leaves a restarted VM as it is until
balancer_start_delay seconds after its guest booted (Hyper-V from Server 2016: about 50 s, per
QEMU's hw/hyperv/hv-balloon.c); until then the VM runs on its Smart Paging file. Events, not
timing bands: a file cannot go before the delay is over, and a held VM's memory does not move."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from vmmem import MB
from vmmem.errors import SettingsError
from vmmem.hyperv import Boot, Host, Idle
from vmmem.hyperv.balancer import Claim, allocate
from vmmem.hyperv.rules import DEFAULT_BALANCER_START_DELAY, awaits_guest, held_claim
from vmmem.lab import load_scenario
from vmmem.lab.scenario import parse_scenario

TICK = 0.05
# Touches all of its 128 MB Startup RAM, then idles on a 64 MB working set, touching it often:
# pages evicted to the file during the boot are touched again after it.
WORKLOAD = [
    Boot(cpu_per_page=2e-6, disk_read_fraction=0.0),
    Idle(demand="64MB", touch_interval=0.01, touches=2048),
]


@pytest.mark.parametrize(
    "delay, restarted, restarting, booted_at, now, held",
    [
        (50.0, True, False, None, 0.0, True),  # booting after a restart
        (50.0, True, False, 10.0, 59.9, True),  # booted, the guest cannot answer yet
        (50.0, True, False, 10.0, 60.0, False),  # 50 s after its boot: rebalanced
        (50.0, True, True, None, 0.0, False),  # the host is dividing memory for the restart
        (50.0, False, False, None, 0.0, False),  # a start from Off: never held
        (0.0, True, False, None, 0.0, False),  # 0: the old behaviour, rebalanced at once
    ],
)
def test_the_rule(delay, restarted, restarting, booted_at, now, held):
    assert (
        awaits_guest(
            delay=delay, restarted=restarted, restarting=restarting, booted_at=booted_at, now=now
        )
        is held
    )


def test_a_held_claim_gets_what_it_has_and_no_more():
    held = held_claim(Claim("a", 50, 0, 16, 128, 154), 40)
    other = Claim("b", 50, 8, 8, 128, 154)
    assert allocate(200, [held, other]) == {"a": 40, "b": 154}
    assert allocate(30, [held, other]) == {"a": 40, "b": 8}  # floors are kept even if short
    assert DEFAULT_BALANCER_START_DELAY == 50.0


def _restart_short(host: Host):
    """Two VMs of 128 MB Startup on a 224 MB host restarted at once: each boots on Smart
    Paging with 112 MB."""
    vms = [
        host.add_vm(n, startup="128MB", minimum="32MB", maximum="512MB", workload=WORKLOAD)
        for n in ("vm1", "vm2")
    ]
    for vm in vms:
        vm.start()
        vm.wait_booted(60)
        host.wait_settled(60)  # a start from Off is never held, whatever the delay
    host.restart_vms()
    reports = host.wait_booted(120)
    assert all(r.smart_paging for r in reports)
    return vms


def _poll(condition, timeout: float = 120.0) -> None:
    """Wait for an event (a failure only if it never comes)."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "the event never came"
        time.sleep(0.01)


def test_a_held_vm_runs_on_its_file_after_its_boot(disk_dir: Path):
    with Host(
        "224MB", smart_paging_path=disk_dir, balancer_interval=TICK, balancer_start_delay=3600
    ) as host:
        vms = _restart_short(host)
        vm = vms[0]
        # Its idle guest touches pages the boot left in the file: page-ins after the boot.
        _poll(lambda: vm.boot_report.page_ins_after_boot > 0)
        assigned = [v.assigned_pages for v in vms]
        host.balance_now()
        host.balance_now()
        assert [v.assigned_pages for v in vms] == assigned  # no Dynamic Memory request yet
        report = vm.boot_report
        assert vm.smart_paging_active and not report.smart_paging_ended
        assert vm.status.smart_paging_file_in_use
        assert report.page_ins_after_boot <= vm.memory.stats.page_ins - report.page_ins


def test_the_file_lives_at_least_the_delay_after_the_boot(disk_dir: Path):
    delay = 1.0
    with Host(
        "224MB", smart_paging_path=disk_dir, balancer_interval=TICK, balancer_start_delay=delay
    ) as host:
        vms = _restart_short(host)
        for vm in vms:
            report = vm.wait_smart_paging_off(120)
            assert report.smart_paging_ended
            # created in the boot, deleted no sooner than `delay` after its end
            assert report.smart_paging_seconds >= delay
        host.wait_settled(60)


def test_delay_zero_drains_at_once_with_no_page_ins_after_the_boot(disk_dir: Path):
    with Host(
        "224MB", smart_paging_path=disk_dir, balancer_interval=TICK, balancer_start_delay=0
    ) as host:
        vms = _restart_short(host)
        for vm in vms:
            report = vm.wait_smart_paging_off(120)
            assert report.smart_paging_ended and report.page_ins_after_boot == 0
            assert report.as_dict()["page_ins_after_boot"] == 0


@pytest.mark.parametrize("bad", [-1, float("nan"), "50", True, 1e9])
def test_bad_delays_are_refused(bad):
    with pytest.raises(SettingsError, match="balancer_start_delay"):
        Host("64MB", balancer_start_delay=bad)
    text = f'[host]\nmemory = "256MB"\nbalancer_start_delay = {bad!r}\n'
    text = text.replace("nan", "nan").replace("True", "true").replace("'", '"')
    import tomllib

    from vmmem.lab.scenario_model import ScenarioError

    data = tomllib.loads(text + '[[vm]]\nname = "a"\nstartup = "128MB"\n')
    with pytest.raises(ScenarioError, match="host.balancer_start_delay"):
        parse_scenario(data, "s.toml")


def test_the_scenario_setting_its_default_and_scale():
    import tomllib

    base = '[host]\nmemory = "256MB"\n[[vm]]\nname = "a"\nstartup = "128MB"\n'
    s = parse_scenario(tomllib.loads(base), "s.toml")
    assert s.balancer_start_delay == 50.0  # Hyper-V's, when left out
    assert s.scaled(4).balancer_start_delay == 12.5  # shrinks with the boot times
    assert s.to_dict()["host"]["balancer_start_delay"] == 50.0
    # The built-in article sets 0 (the article's reading; a short default run).
    assert load_scenario(None).balancer_start_delay == 0.0
    assert MB  # sizes module in use
