"""Dynamic Memory settings: one test per Hyper-V rule, with the message an admin recognises."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from vmmem import MB, TB, SettingsError
from vmmem.hyperv import Boot, Host, Idle, Trace, validate_settings

FAST = [Boot(cpu_per_page=0.0), Idle(touch_interval=0.05, touches=16)]


def refused(match: str, **kwargs: object) -> None:
    args: dict[str, object] = {"name": "vm1", "startup": "512MB"}
    args.update(kwargs)
    with pytest.raises(SettingsError, match=match):
        validate_settings(**args)  # type: ignore[arg-type]


def test_defaults_are_hyper_v_defaults() -> None:
    s = validate_settings("vm1", "1024MB")
    assert (s.minimum, s.maximum, s.buffer, s.priority, s.dynamic) == (
        512 * MB,
        1 * TB,
        20,
        50,
        True,
    )
    assert validate_settings("vm1", "256MB").minimum == 256 * MB  # capped at Startup


def test_article_settings_are_accepted() -> None:
    s = validate_settings("vm1", "512MB", "32MB", "2048MB", 20, 50)
    assert (s.startup, s.minimum, s.maximum, s.buffer) == (512 * MB, 32 * MB, 2048 * MB, 20)


def test_sizes_must_be_whole_mb() -> None:
    refused(r"-StartupBytes.*not a whole number of MB", startup=512 * MB + 4096)


def test_sizes_must_be_multiples_of_2mb() -> None:
    refused(r"-MinimumBytes.*513 MB is not properly aligned.*multiples of 2 MB", minimum="513MB")


def test_startup_at_least_32mb() -> None:
    refused(
        r"Startup RAM \(-StartupBytes\) of 30 MB is too small.*at least 32 MB",
        startup="30MB",
        minimum="30MB",
    )


def test_minimum_at_least_32mb() -> None:
    refused(r"-MinimumBytes.*16 MB is too small.*at least 32 MB", minimum="16MB")


def test_minimum_not_above_startup() -> None:
    refused(r"-MinimumBytes.*larger than.*-StartupBytes", minimum="1024MB")


def test_maximum_not_below_startup() -> None:
    refused(r"-MaximumBytes.*smaller than.*-StartupBytes", maximum="256MB")


def test_maximum_at_most_12tb() -> None:
    refused(r"-MaximumBytes.*too large.*12 TB", maximum="14TB")


@pytest.mark.parametrize("buffer", [4, 2001, 2.5])
def test_buffer_5_to_2000(buffer: object) -> None:
    refused(r"Memory buffer \(-Buffer\).*5 to 2000|-Buffer.*from 5 to 2000", buffer=buffer)


@pytest.mark.parametrize("priority", [-1, 101, "high"])
def test_priority_0_to_100(priority: object) -> None:
    refused(r"-Priority.*0 to 100|-Priority.*from 0 to 100", priority=priority)


@pytest.mark.parametrize("setting", ["minimum", "maximum", "buffer"])
def test_static_vm_refuses_dynamic_settings(setting: str) -> None:
    value = 20 if setting == "buffer" else "512MB"
    refused(r"cannot be set.*Dynamic Memory is off", dynamic=False, **{setting: value})


def test_static_vm_holds_startup() -> None:
    s = validate_settings("vm1", "512MB", dynamic=False)
    assert (s.minimum, s.maximum, s.buffer) == (512 * MB, 512 * MB, 0)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    with Host("160MB", smart_paging_path=tmp_path / "vms", balancer_interval=0.05) as h:
        yield h


def test_add_vm_refusal_creates_nothing(host: Host, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not properly aligned"):
        host.add_vm("vm1", startup="63MB")
    with pytest.raises(SettingsError, match="Trace"):
        host.add_vm("vm1", startup="32MB", workload=Trace(np.array([10**6]), boot=True))
    assert host.vms == {}
    assert not (tmp_path / "vms").exists()
    host.add_vm("vm1", startup="32MB")
    with pytest.raises(SettingsError, match="already exists"):
        host.add_vm("vm1", startup="32MB")
    assert list(host.vms) == ["vm1"]


def test_startup_and_dynamic_change_only_while_off(host: Host) -> None:
    vm = host.add_vm("vm1", startup="64MB", minimum="32MB", maximum="128MB", workload=FAST)
    vm.startup = "96MB"  # off: allowed
    vm.start()
    try:
        with pytest.raises(SettingsError, match=r"-StartupBytes cannot be changed while.*running"):
            vm.startup = "64MB"
        with pytest.raises(SettingsError, match="-DynamicMemoryEnabled cannot be changed"):
            vm.dynamic = False
        assert vm.startup == 96 * MB and vm.dynamic
    finally:
        vm.stop()
    vm.dynamic = False  # off again: allowed
    assert vm.minimum == vm.maximum == 96 * MB


def test_maximum_may_only_rise_while_running(host: Host) -> None:
    vm = host.add_vm("vm1", startup="64MB", minimum="32MB", maximum="128MB", workload=FAST)
    vm.start()
    try:
        with pytest.raises(SettingsError, match="-MaximumBytes can only be raised"):
            vm.maximum = "96MB"
        vm.maximum = "256MB"
        assert vm.maximum == 256 * MB
    finally:
        vm.stop()
    vm.maximum = "64MB"  # off: lowering is fine
    assert vm.maximum == 64 * MB


def test_minimum_may_only_fall_while_running(host: Host) -> None:
    vm = host.add_vm("vm1", startup="64MB", minimum="48MB", maximum="128MB", workload=FAST)
    vm.start()
    try:
        with pytest.raises(SettingsError, match="-MinimumBytes can only be lowered"):
            vm.minimum = "64MB"
        vm.minimum = "32MB"
        vm.buffer = 50  # buffer and priority: any time
        vm.priority = 90
        assert (vm.minimum, vm.buffer, vm.priority) == (32 * MB, 50, 90)
    finally:
        vm.stop()


def test_setters_validate_like_add_vm(host: Host) -> None:
    vm = host.add_vm("vm1", startup="64MB", minimum="32MB", maximum="128MB")
    with pytest.raises(SettingsError, match="-MinimumBytes.*larger than"):
        vm.minimum = "96MB"
    with pytest.raises(SettingsError, match="-Buffer"):
        vm.buffer = 3
    assert (vm.minimum, vm.buffer) == (32 * MB, 20)  # unchanged
    static = host.add_vm("static", startup="32MB", dynamic=False)
    with pytest.raises(SettingsError, match="Dynamic Memory is off"):
        static.buffer = 20
