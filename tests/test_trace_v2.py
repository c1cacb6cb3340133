"""Guest trace format version 2: recordings with several vCPUs (docs/GUESTS.md, "The trace
file"). Each epoch counts one vCPU's instructions; the API answers per vCPU, checked against
a plain Python model of the same epochs; version 1 files load as one vCPU."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tracebuild import Disk, Epoch, write_trace

from vmmem.guests import FORMAT, GuestTrace, replay_epochs, shipped_names
from vmmem.guests.trace import FORMAT_V1, FORMATS
from vmmem.memory import FramePool, GuestMemory

MB = 1 << 20


def test_the_format_has_a_version_and_reads_both():
    assert FORMAT == "vmmem-guest-trace/2"
    assert FORMATS == ("vmmem-guest-trace/1", FORMAT)


@pytest.mark.parametrize("name", ["busybox", "debian-12"])
def test_a_version_1_trace_loads_as_one_vcpu(name):
    trace = GuestTrace.load(name)
    assert trace.format == FORMAT_V1 and trace.vcpus == 1
    assert trace.vcpu_instructions == [trace.instructions]
    assert trace.epoch_vcpu.dtype == np.uint16 and trace.epoch_vcpu.size == trace.epochs
    assert not trace.epoch_vcpu.any()
    epochs = trace.vcpu_epochs(0)
    assert epochs.dtype == np.int64 and np.array_equal(epochs, np.arange(trace.epochs))
    assert trace.disk_vcpu.dtype == np.uint16 and trace.disk_vcpu.size == trace.disk_requests
    assert not trace.disk_vcpu.any()
    last = trace.instructions - (trace.epochs - 1) * trace.epoch_instructions
    assert trace.epoch_instructions_of(trace.epochs - 1) == last
    assert trace.epoch_instructions_of(0) == trace.epoch_instructions


def test_a_small_two_vcpu_trace(tmp_path):
    # vCPU 0 ends epochs 0 and 2, vCPU 1 epochs 1 and 3: 2.5 and 1.2 epochs of 1000.
    epochs = [
        Epoch(0, [1, 2], written=[True]),
        Epoch(1, [7]),
        Epoch(0, [3, 1]),
        Epoch(1, [9, 7], written=[False, True]),
    ]
    disk = [Disk(0, 0), Disk(1, 4096, write=True), Disk(3, 8192, length=512)]
    trace = GuestTrace.load(
        write_trace(tmp_path / "t.npz", epochs, disk=disk, vcpu_instructions=[1500, 1200])
    )
    assert trace.format == FORMAT and trace.vcpus == 2 and trace.epochs == 4
    assert trace.vcpu_instructions == [1500, 1200] and trace.instructions == 2700
    assert trace.epoch_vcpu.tolist() == [0, 1, 0, 1]
    assert trace.vcpu_epochs(0).tolist() == [0, 2] and trace.vcpu_epochs(1).tolist() == [1, 3]
    assert [trace.epoch_instructions_of(e) for e in range(4)] == [1000, 1000, 500, 200]
    assert trace.disk_vcpu.tolist() == [0, 1, 1]
    assert trace.pages_touched == 5 and trace.pages_written == 2
    pages, written = trace.epoch(3)
    assert pages.tolist() == [9, 7] and written.tolist() == [False, True]
    assert "2 vCPUs" in repr(trace)
    for bad in (-1, 2):
        with pytest.raises(IndexError, match="the trace has vCPUs 0 to 1"):
            trace.vcpu_epochs(bad)
    with pytest.raises(IndexError, match="the trace has epochs 0 to 3"):
        trace.epoch_instructions_of(4)


def test_the_derived_arrays_are_read_only(tmp_path):
    trace = GuestTrace.load(write_trace(tmp_path / "t.npz", [Epoch(0, [1]), Epoch(1, [2])],
                                        disk=[Disk(1, 0)]))  # fmt: skip
    for arr in (trace.epoch_vcpu, trace.vcpu_epochs(1), trace.disk_vcpu):
        with pytest.raises(ValueError):
            arr[0] = 0


def test_a_two_vcpu_trace_replays_in_its_global_order(tmp_path):
    epochs = [Epoch(1, [5, 6], written=[True, True]), Epoch(0, [5]), Epoch(1, [7])]
    trace = GuestTrace.load(write_trace(tmp_path / "t.npz", epochs))
    with FramePool(4 * MB) as pool, GuestMemory(pool, 4 * MB, paging_dir=tmp_path) as memory:
        result = replay_epochs(memory, trace)
        assert result.epochs == 3 and result.instructions == trace.instructions
        assert memory.resident_pages == 3


# -- against a model ----------------------------------------------------------------------------


@st.composite
def smp_boots(draw: st.DrawFn) -> tuple[list[Epoch], list[Disk], list[int]]:
    """Up to 4 vCPUs' epochs interleaved at random, each with a few pages and disk requests,
    and instructions anywhere a vCPU's epochs allow."""
    vcpus = draw(st.integers(1, 4))
    order = draw(st.lists(st.integers(0, vcpus - 1), min_size=vcpus, max_size=30))
    order = list(range(vcpus)) + order  # every vCPU runs
    order = draw(st.permutations(order))
    epochs = [Epoch(v, draw(st.lists(st.integers(0, 4095), max_size=5, unique=True)))
              for v in order]  # fmt: skip
    per = 1000
    counts = []
    for v in range(vcpus):
        own = order.count(v)
        counts.append(draw(st.integers(max(1, (own - 1) * per), (own + 1) * per)))
    requests = sorted(draw(st.lists(st.integers(0, len(order) - 1), max_size=8)))
    disk = [Disk(e, 4096 * i) for i, e in enumerate(requests)]
    return epochs, disk, counts


@settings(max_examples=60)
@given(boot=smp_boots())
def test_the_per_vcpu_api_matches_a_model(tmp_path_factory, boot):
    epochs, disk, counts = boot
    path = write_trace(
        tmp_path_factory.mktemp("smp") / "t.npz", epochs, disk=disk, vcpu_instructions=counts
    )
    trace = GuestTrace.load(path)
    assert trace.vcpus == len(counts) and trace.vcpu_instructions == counts
    assert trace.instructions == sum(counts)
    for v in range(trace.vcpus):
        mine = [i for i, e in enumerate(epochs) if e.vcpu == v]
        assert trace.vcpu_epochs(v).tolist() == mine
        # Every epoch of a vCPU but its last is whole; the last holds what is left.
        model = [1000] * (len(mine) - 1) + [counts[v] - 1000 * (len(mine) - 1)]
        assert [trace.epoch_instructions_of(e) for e in mine] == model
    assert trace.disk_vcpu.tolist() == [epochs[d.epoch].vcpu for d in disk]
    assert trace.entries == sum(len(e.pages) for e in epochs)


def test_no_shipped_trace_is_of_an_unknown_format():
    for name in shipped_names():
        assert GuestTrace.load(name).format in FORMATS
