"""How a boot storm scales: 4, 8, 16, 32 and 64 VMs booting at once on one frame pool, each on
its own Smart Paging file in one folder, one thread per VM, against the disk's own latency at
the same queue depth (fio, 4 KiB random read/write, psync QD1, O_DIRECT, one job per VM).

Each VM's boot is a trace on the paging core: it writes every page of its memory once (the
boot filling its Startup RAM), then reads them all back in random order, with frames for only
half of them, so about every other access pages out or in. Reported per VM count and backend:
the storm's duration, pages paged per VM, the mean paging latency beside fio's at that queue
depth (the slowdown), aggregate transfers/s beside fio's IOPS, the emulator's overhead share
(the VMs' time not spent waiting on the disk: CPU for the guests' trace, locks, Python), and
the process's RSS.

    pytest benchmarks/bench_storm_scaling.py                      # 4 MiB guests: short
    VMMEM_BENCH_STORM_MB=256 pytest benchmarks/bench_storm_scaling.py  # 64 x 256 MB: long
    VMMEM_BENCH_STORM_VMS=4,64 VMMEM_BENCH_STORM_BACKENDS=mmap pytest ...
"""

from __future__ import annotations

import gc
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from fio_qd1 import run_fio_4k

import vmmem
from vmmem import devices

PAGE = 4096
MiB = 2**20
GUEST_MB = int(os.environ.get("VMMEM_BENCH_STORM_MB", "4"))
VM_COUNTS = [int(n) for n in os.environ.get("VMMEM_BENCH_STORM_VMS", "4,8,16,32,64").split(",")]
BACKENDS = os.environ.get("VMMEM_BENCH_STORM_BACKENDS", "direct,mmap").split(",")
FIO_SECONDS = float(os.environ.get("VMMEM_BENCH_STORM_FIO_SECONDS", "3"))
CHUNK = 2048

_results: dict[tuple[str, int], dict[str, Any]] = {}
_fio: dict[int, dict[str, float] | None] = {}


def boot_trace(pages: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    order = np.concatenate(
        [np.arange(pages, dtype=np.uint32), rng.permutation(pages).astype(np.uint32)]
    )
    writes = np.concatenate([np.ones(pages, dtype=bool), np.zeros(pages, dtype=bool)])
    return order, writes


def fio_at_depth(folder: Path, jobs: int, file_bytes: int) -> dict[str, float] | None:
    """fio with `jobs` jobs (one file each, psync QD1, direct, 4 KiB, random 50/50
    read/write): the disk's aggregate IOPS and mean completion latency at that depth."""
    if shutil.which("fio") is None:
        return None
    job, command = run_fio_4k(
        "--name=storm",
        f"--directory={folder}",
        "--rw=randrw",
        "--rwmixread=50",
        f"--numjobs={jobs}",
        "--group_reporting",
        size=file_bytes,
        seconds=FIO_SECONDS,
    )
    ios = job["read"]["total_ios"] + job["write"]["total_ios"]
    lat_ns = (
        job["read"]["clat_ns"]["mean"] * job["read"]["total_ios"]
        + job["write"]["clat_ns"]["mean"] * job["write"]["total_ios"]
    ) / max(1, ios)
    for n in range(jobs):  # exactly the files fio made: <name>.<job>.0
        (folder / f"storm.{n}.0").unlink(missing_ok=True)
    return {
        "iops": job["read"]["iops"] + job["write"]["iops"],
        "mean_latency_s": lat_ns / 1e9,
        "command": command,
    }


def storm(pool: vmmem.FramePool, folder: Path, n: int, backend: str) -> dict[str, Any]:
    pages = GUEST_MB * MiB // PAGE
    mems = [
        vmmem.GuestMemory(
            pool,
            pages * PAGE,
            frame_limit=pages // 2,
            paging_dir=folder,
            backend=backend,
            name=f"vm{i}",
        )
        for i in range(n)
    ]
    traces = [boot_trace(pages, seed=i) for i in range(n)]
    busy = [0.0] * n
    barrier = threading.Barrier(n + 1)

    def boot(i: int) -> None:
        order, writes = traces[i]
        barrier.wait()
        start = time.perf_counter()
        for s in range(0, order.size, CHUNK):
            mems[i].replay(order[s : s + CHUNK], writes[s : s + CHUNK])
        busy[i] = time.perf_counter() - start

    info = devices.device_for_path(folder)
    threads = [threading.Thread(target=boot, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    before = devices.io_counters(info)
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    after = devices.io_counters(info)
    gc.collect()
    rss = psutil.Process().memory_info().rss
    counters = [m.counters for m in mems]
    for m in mems:
        m.close()
    transfers = sum(c["page_ins"] + c["page_outs"] for c in counters)
    io_ns = sum(c["page_in_ns"] + c["page_out_ns"] for c in counters)
    fault_ns = sum(c["fault_ns"] for c in counters)
    return {
        "vms": n,
        "backend": backend,
        "guest_bytes": pages * PAGE,
        "storm_seconds": wall,
        "pages_paged_per_vm": transfers / n,
        "pages_paged_per_vm_min_max": [
            min(c["page_ins"] + c["page_outs"] for c in counters),
            max(c["page_ins"] + c["page_outs"] for c in counters),
        ],
        "transfers_per_s": transfers / wall,
        "mean_transfer_latency_s": io_ns / 1e9 / max(1, transfers),
        "overhead_share": 1 - fault_ns / 1e9 / sum(busy),
        "rss_bytes": rss,
        "rss_beyond_pool_bytes": rss - pool.size,
        "device_read_bytes": None if before is None else (after - before).read_bytes,
        "device_write_bytes": None if before is None else (after - before).write_bytes,
        "paged_bytes": transfers * PAGE,
    }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", VM_COUNTS)
def test_storm_scaling(benchmark, disk_dir, n, backend):
    pages = GUEST_MB * MiB // PAGE
    if n not in _fio:
        fio_dir = disk_dir / "fio"
        fio_dir.mkdir()
        _fio[n] = fio_at_depth(fio_dir, n, pages * PAGE)
    fio = _fio[n]
    with vmmem.FramePool(n * (pages // 2) * PAGE) as pool:
        out: dict[str, Any] = {}

        def run() -> None:
            out.update(storm(pool, disk_dir, n, backend))

        benchmark.pedantic(run, rounds=1, iterations=1)
    if fio is not None:
        out["fio_iops"] = fio["iops"]
        out["fio_mean_latency_s"] = fio["mean_latency_s"]
        out["slowdown_vs_fio_latency"] = out["mean_transfer_latency_s"] / fio["mean_latency_s"]
        out["throughput_vs_fio"] = out["transfers_per_s"] / fio["iops"]
        out["fio_command"] = fio["command"]
    _results[(backend, n)] = out
    direct = _results.get(("direct", n))
    if backend != "direct" and direct is not None:
        out["storm_vs_direct"] = out["storm_seconds"] / direct["storm_seconds"]
    benchmark.extra_info.update(out)
    line = (
        f"\n{n:>2} VMs x {GUEST_MB} MiB, {backend}: storm {out['storm_seconds']:.2f} s, "
        f"{out['pages_paged_per_vm']:.0f} pages paged per VM, "
        f"{out['transfers_per_s']:.0f} transfers/s, "
        f"mean {out['mean_transfer_latency_s'] * 1e6:.0f} us"
    )
    if fio is not None:
        line += (
            f" (fio {n} jobs: {fio['iops']:.0f} IOPS, mean {fio['mean_latency_s'] * 1e6:.0f} us;"
            f" slowdown {out['slowdown_vs_fio_latency']:.2f}, throughput "
            f"{out['throughput_vs_fio']:.2f} x fio)"
        )
    line += (
        f", overhead share {out['overhead_share'] * 100:.1f} %, RSS {out['rss_bytes'] / MiB:.0f}"
        f" MiB ({out['rss_beyond_pool_bytes'] / MiB:.0f} MiB beyond the pool)"
    )
    if "storm_vs_direct" in out:
        line += f", {out['storm_vs_direct']:.2f} x direct's storm"
    print(line)
