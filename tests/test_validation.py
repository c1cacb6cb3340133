"""Every public constructor and setter takes arbitrary values and either succeeds or raises a
VmmemError naming the parameter: never a bare TypeError/ValueError, never a hang, never a NaN
or an infinity accepted into a timer or a size."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vmmem
from vmmem import Boot, FramePool, GuestMemory, Host, Idle, Trace
from vmmem.errors import SettingsError, VmmemError
from vmmem.sizes import MB

SMALL = 256 * MB  # no example may commit more RAM than this


def _parses_big(text: str) -> bool:
    try:
        return vmmem.parse_size(text) > SMALL
    except Exception:
        return False


# Anything a caller could pass: floats incl. NaN and infinities, small and huge and negative
# ints, text, None, bytes, lists.
ANY = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(max_value=SMALL),
    st.integers(min_value=2**50),
    st.text(max_size=20).filter(lambda t: not _parses_big(t)),
    st.none(),
    st.booleans(),
    st.binary(max_size=8),
    st.lists(st.one_of(st.integers(), st.text(max_size=3)), max_size=3),
)
BAD_NUMBERS = [float("nan"), float("inf"), float("-inf"), -1, "x", None, b"1", [1]]

FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("validation")


def _attempt(make, *args, **kwargs):
    """Call make; success (closed if it can be) or a VmmemError, without long work first:
    under two seconds of this process's CPU time (not wall-clock time, which a loaded machine
    stretches; a huge allocation or a runaway loop still shows)."""
    t0 = time.process_time()
    try:
        obj = make(*args, **kwargs)
    except VmmemError:
        obj = None
    finally:
        took = time.process_time() - t0
        assert took < 2.0, f"{make} used {took:.1f} s of CPU"
    if obj is not None and hasattr(obj, "close"):
        obj.close()
    return obj


HOST_ARGS = dict(memory="64MB", balancer_interval=0.05)


@FUZZ
@given(
    key=st.sampled_from(
        [
            "memory",
            "reserve",
            "smart_paging_path",
            "balancer_interval",
            "backend",
            "page_size",
            "policy",
        ]
    ),
    value=ANY,
)
def test_host_arguments_fuzz(folder: Path, key: str, value: object) -> None:
    args = {**HOST_ARGS, "smart_paging_path": str(folder / "vms"), key: value}
    host = _attempt(Host, **args)
    if host is not None and key == "balancer_interval":
        assert math.isfinite(host.balancer_interval) and host.balancer_interval > 0


@pytest.mark.parametrize("value", BAD_NUMBERS + [0, 1e-9])
def test_host_balancer_interval_refused_by_name(value: object) -> None:
    with pytest.raises(SettingsError, match="balancer_interval") as e:
        Host("64MB", balancer_interval=value)
    assert "finite number of seconds" in str(e.value)


@pytest.mark.parametrize("value", [5, b"/tmp", "", "a\x00b", ["x"]])
def test_host_smart_paging_path_refused_by_name(value: object) -> None:
    with pytest.raises(SettingsError, match="smart_paging_path"):
        Host("64MB", smart_paging_path=value)


@pytest.mark.parametrize("key", ["backend", "policy"])
@pytest.mark.parametrize("value", [["direct"], None, 3, "nope"])
def test_host_choices_refused_by_name(key: str, value: object) -> None:
    with pytest.raises(SettingsError, match=f"^{key} "):
        Host("64MB", **{key: value})


@pytest.fixture(scope="module")
def host(folder: Path):
    with Host(**HOST_ARGS, smart_paging_path=str(folder / "vms")) as h:
        yield h


VM_KEYS = ["name", "startup", "minimum", "maximum", "buffer", "priority", "dynamic"]
VM_KEYS += ["smart_paging_path", "workload"]


@FUZZ
@given(key=st.sampled_from(VM_KEYS), value=ANY)
def test_add_vm_fuzz(host: Host, key: str, value: object) -> None:
    args = {"name": "fuzz", "startup": "32MB", key: value}
    vm = _attempt(host.add_vm, **args)
    if vm is not None:
        host.remove_vm(vm.name)


@FUZZ
@given(
    key=st.sampled_from(
        ["startup", "minimum", "maximum", "buffer", "priority", "dynamic", "smart_paging_path"]
    ),
    value=ANY,
)
def test_vm_setters_fuzz(host: Host, key: str, value: object) -> None:
    vm = host.add_vm("setters", "32MB", minimum="32MB", maximum="64MB")
    try:
        before = vm.settings
        try:
            setattr(vm, key, value)
        except VmmemError:
            assert vm.settings == before  # a refused change changes nothing
    finally:
        host.remove_vm("setters")


@FUZZ
@given(value=ANY)
def test_vm_baseline_fuzz(host: Host, value: object) -> None:
    vm = host.add_vm("baseline", "32MB")
    try:
        try:
            vm.baseline = value
        except VmmemError:
            return
        assert vm.baseline is None or (math.isfinite(vm.baseline) and vm.baseline > 0)
    finally:
        host.remove_vm("baseline")


@pytest.mark.parametrize("value", [v for v in BAD_NUMBERS if v is not None] + [0])
def test_vm_baseline_refused_by_name(host: Host, value: object) -> None:
    vm = host.add_vm("baseline2", "32MB")
    try:
        with pytest.raises(SettingsError, match="baseline"):
            vm.baseline = value
    finally:
        host.remove_vm("baseline2")


@pytest.mark.parametrize("name", ["a\x00b", "tab\there", "new\nline", "esc\x1b[31m", "\u202e"])
def test_vm_name_with_control_characters_refused(host: Host, name: str) -> None:
    with pytest.raises(SettingsError, match="control characters"):
        host.add_vm(name, "32MB")


WORKLOAD_FIELDS = {
    Boot: [
        "cpu_per_page",
        "cpu_time",
        "hot_fraction",
        "hot_ratio",
        "revisit_ratio",
        "write_ratio",
        "chunk_pages",
        "seed",
    ],
    Idle: ["demand", "fraction", "touch_interval", "touches", "write_ratio", "duration", "seed"],
}


@FUZZ
@given(
    kind_key=st.sampled_from([(k, f) for k, fs in WORKLOAD_FIELDS.items() for f in fs]),
    value=ANY,
)
def test_boot_and_idle_fuzz(kind_key: tuple[type, str], value: object) -> None:
    kind, key = kind_key
    phase = _attempt(kind, **{key: value})
    if phase is not None:
        for name in WORKLOAD_FIELDS[kind]:
            v = getattr(phase, name)
            if isinstance(v, float):
                assert math.isfinite(v), f"{kind.__name__}({key}={value!r}) kept {v}"


@FUZZ
@given(
    key=st.sampled_from(["pages", "writes", "boot", "chunk", "cpu_per_access", "name"]),
    value=ANY,
)
def test_trace_fuzz(key: str, value: object) -> None:
    args = {"pages": np.arange(4, dtype=np.uint32), key: value}
    _attempt(Trace, **args)


@pytest.mark.parametrize("kind,key", [(Boot, "cpu_time"), (Idle, "touch_interval")])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, "1", True])
def test_workload_seconds_refused_by_name(kind: type, key: str, value: object) -> None:
    with pytest.raises(SettingsError, match=re.escape(f"{kind.__name__} {key}")):
        kind(**{key: value})


@FUZZ
@given(key=st.sampled_from(["size", "page_size"]), value=ANY)
def test_frame_pool_fuzz(key: str, value: object) -> None:
    _attempt(FramePool, **{"size": "1MB", "page_size": 4096, key: value})


@FUZZ
@given(
    key=st.sampled_from(["size", "frame_limit", "paging_dir", "backend", "policy", "name"]),
    value=ANY,
)
def test_guest_memory_fuzz(folder: Path, key: str, value: object) -> None:
    with FramePool("1MB") as pool:
        args = {"size": "1MB", "frame_limit": 16, "paging_dir": str(folder), key: value}
        _attempt(GuestMemory, pool, **args)
    assert not list(folder.glob("*.slp"))


@pytest.mark.parametrize("value", [None, 123, b"/tmp", "a\x00b"])
def test_guest_memory_paging_dir_refused_by_name(value: object) -> None:
    with FramePool("1MB") as pool, pytest.raises(SettingsError, match="paging_dir"):
        GuestMemory(pool, "1MB", paging_dir=value)
