"""Prediction speed: what `vmmem plan --guest` costs per guest, with no I/O.

Goal: the largest shipped guest (by trace entries) predicted in under a second: its whole
page-in/page-out curve (one stack-distance pass) and one simulation at a frame limit that
pages (three quarters of what it touches), in a VM of its recorded size. The trace is loaded
once, outside the timing (the planner loads each guest once).

    pytest benchmarks/bench_predict.py
"""

from __future__ import annotations

import pytest

from vmmem.guests import GuestTrace, shipped_names
from vmmem.guests.predict import predict_boot

GOAL_SECONDS = 1.0


def largest_shipped() -> GuestTrace:
    return max((GuestTrace.load(n) for n in shipped_names()), key=lambda t: t.entries)


@pytest.mark.parametrize("mapping", ["fold", "scale"])
def test_largest_shipped_guest_predicted_in_under_a_second(benchmark, mapping):
    trace = largest_shipped()
    # fold: the VM of the recorded size; scale: a quarter of it, as --scale 4 shrinks it
    vm_pages = trace.memory_pages if mapping == "fold" else trace.memory_pages // 4
    frames = max(1, trace.pages_touched * 3 // 4 * vm_pages // trace.memory_pages)

    def predict():
        return predict_boot(trace, vm_pages, frames, mapping=mapping, cpu_seconds=0.0, disk_reads=0)

    p = benchmark.pedantic(predict, rounds=5, iterations=1, warmup_rounds=1)
    assert p.page_outs > 0  # it pages: the simulation ran as well as the curve
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(
        {
            "guest": trace.name,
            "entries": trace.entries,
            "vm_pages": vm_pages,
            "frames": frames,
            "page_ins": p.page_ins,
            "page_outs": p.page_outs,
            "accesses_per_s": trace.entries / median,
        }
    )
    assert median < GOAL_SECONDS, f"{trace.name}: {median:.3f} s per prediction"
