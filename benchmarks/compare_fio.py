"""vmmem's page-in and page-out rates beside fio's 4 KiB QD1 direct random read and write IOPS,
measured in one run on the same folder.

A fault served from disk cannot beat the disk's own 4 KiB random read at queue depth 1 with
direct I/O, and a write-back cannot beat its random write: fio measures those bounds, vmmem
measures its paging core against them, and the ratio says how much the emulator costs on top of
the disk (the goal is at least 0.95).

A shared or virtual disk's speed drifts by 10-20 % from one second to the next, so the rounds
interleave fio and vmmem (alternating which goes first), and the verdict is the median of the
rounds' paired ratios, beside the ratio of the totals.

    python benchmarks/compare_fio.py [--dir DIR] [--backend direct|mmap] [--pages N]
                                     [--seconds S] [--json FILE]
    python benchmarks/compare_fio.py --threads 1,2,4,8 [...]

With --threads, it measures instead N threads faulting on ONE guest (random page-ins, every
access a page-in: 256 frames over the whole file) beside fio's random read with --numjobs=N
(the same flags, the same folder, the same run) for each N: several vCPUs of one VM paging at
once against the disk's throughput at that many outstanding requests (goal: 0.9 of fio each).

The device's counters are read around every phase, in both directions: a page-in phase that
writes, or a page-out phase that reads (the mmap backend's old read-before-write), shows here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import numpy as np
from fio_qd1 import run_fio_4k

import vmmem
from vmmem import devices

PAGE = 4096
CHUNK = 2048  # accesses / evictions per call, so the clock is checked often enough
GOAL = 0.95  # of fio's IOPS, median of the rounds' paired ratios
THREADS_GOAL = 0.9  # N threads on one guest, of fio --numjobs=N's IOPS
THREAD_CHUNK = 256  # accesses per call in the threaded page-in run


def run_fio(filename: str, rw: str, size: int, seconds: float) -> dict[str, Any]:
    """One fio job, 4 KiB, QD1, O_DIRECT, psync: IOPS and completion-latency percentiles."""
    job, command = run_fio_4k(
        "--name=vmmem-compare",
        f"--filename={filename}",
        f"--rw={rw}",
        "--numjobs=1",
        size=size,
        seconds=seconds,
    )
    side = job["read" if "read" in rw else "write"]
    pct = side.get("clat_ns", {}).get("percentile", {})
    return {
        "iops": side["iops"],
        "ios": side["total_ios"],
        "p50_us": pct.get("50.000000", 0) / 1e3,
        "p99_us": pct.get("99.000000", 0) / 1e3,
        "command": command,
    }


def lay_out_fio_file(filename: str, size: int) -> None:
    """Writes the whole file once, so that fio's random jobs hit allocated blocks."""
    subprocess.run(
        [
            "fio",
            "--name=layout",
            f"--filename={filename}",
            "--rw=write",
            "--bs=1m",
            "--direct=1",
            "--ioengine=psync",
            f"--size={size}",
            "--output-format=json",
        ],
        check=True,
        capture_output=True,
        text=True,
    )


def lay_out_paging_file(mem: vmmem.GuestMemory) -> None:
    """Every page written and paged out once, in page order: slot i holds page i."""
    mem.frame_limit = mem.pages
    mem.replay(np.arange(mem.pages, dtype=np.uint32), np.ones(mem.pages, dtype=bool))
    mem.frame_limit = 0


def _device_delta(before: Any, after: Any) -> dict[str, int | None]:
    if before is None or after is None:
        return {"read": None, "write": None}
    d = after - before
    return {"read": d.read_bytes, "write": d.write_bytes}


def vmmem_page_ins(
    mem: vmmem.GuestMemory, seconds: float, rng: np.random.Generator
) -> dict[str, Any]:
    """Random read faults over a clean, paged-out file, one thread."""
    mem.frame_limit = 0
    mem.frame_limit = 256  # a few frames: nearly every access faults; evictions are clean drops
    mem.reset_stats()
    info = devices.device_for_path(mem.paging_dir)
    before = devices.io_counters(info)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        mem.replay(rng.integers(0, mem.pages, size=CHUNK, dtype=np.uint32))
    elapsed = time.perf_counter() - start
    after = devices.io_counters(info)
    s = mem.stats
    assert s.page_outs == 0, "the page-in run must not write"
    dev = _device_delta(before, after)
    return {
        "ios": s.page_ins,
        "seconds": elapsed,
        "hist": s.page_in_latency,
        "device_bytes": dev["read"],
        "device_other_bytes": dev["write"],  # written during page-ins: should be ~0
        "paged_bytes": s.bytes_read,
    }


def run_fio_jobs(filename: str, jobs: int, size: int, seconds: float) -> dict[str, Any]:
    """fio's 4 KiB random read with `jobs` jobs on one file, reported as one group."""
    job, command = run_fio_4k(
        "--name=vmmem-compare-jobs",
        f"--filename={filename}",
        "--rw=randread",
        f"--numjobs={jobs}",
        "--group_reporting",
        size=size,
        seconds=seconds,
    )
    return {"iops": job["read"]["iops"], "ios": job["read"]["total_ios"], "command": command}


def vmmem_page_ins_threads(
    mem: vmmem.GuestMemory, threads: int, seconds: float, seed: int
) -> dict[str, Any]:
    """`threads` threads replaying random reads into one guest at once for `seconds`: with 256
    frames over the whole file, nearly every access is a page-in (victims are clean drops)."""
    mem.frame_limit = 0
    mem.frame_limit = 256
    mem.reset_stats()
    stop = threading.Event()
    start = threading.Barrier(threads + 1)
    waited = [0] * threads

    def vcpu(i: int) -> None:
        rng = np.random.default_rng(seed + i)
        start.wait()
        while not stop.is_set():
            waited[i] += mem.replay(rng.integers(0, mem.pages, THREAD_CHUNK, dtype=np.uint32))

    workers = [threading.Thread(target=vcpu, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    began = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - began
    s = mem.stats
    assert s.page_outs == 0, "the page-in run must not write"
    return {
        "ios": s.page_ins,
        "seconds": elapsed,
        "iops": s.page_ins / elapsed,
        "shared_waits_ns": sum(waited),
        "p50_us": s.page_in_latency.percentile(50) * 1e6,
    }


def compare_threads(
    mem: vmmem.GuestMemory, fio_file: str, size: int, counts: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    """For each thread count, interleaved rounds of fio --numjobs=N and N vmmem threads."""
    per_round = args.seconds / args.rounds
    fio: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    vm: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    for r in range(args.rounds):
        for n in counts:
            print(f"round {r + 1}/{args.rounds}: {n} thread(s) ...", file=sys.stderr)
            for fio_first in (r % 2 == 0, r % 2 == 1):
                if fio_first:
                    fio[n].append(run_fio_jobs(fio_file, n, size, per_round))
                else:
                    vm[n].append(vmmem_page_ins_threads(mem, n, per_round, seed=1000 * r))
    out: dict[str, Any] = {}
    for n in counts:
        fio_iops = sum(x["ios"] for x in fio[n]) / (per_round * len(fio[n]))
        vm_iops = sum(x["ios"] for x in vm[n]) / sum(x["seconds"] for x in vm[n])
        paired = [v["iops"] / f["iops"] for v, f in zip(vm[n], fio[n], strict=True)]
        out[str(n)] = {
            "fio_iops": fio_iops,
            "vmmem_iops": vm_iops,
            "ratio_of_totals": vm_iops / fio_iops,
            "ratio": float(np.median(paired)),
            "rounds_ratio": paired,
            "vmmem_p50_us": float(np.median([v["p50_us"] for v in vm[n]])),
            "fio_command": fio[n][0]["command"],
        }
    return out


def vmmem_page_outs(
    mem: vmmem.GuestMemory, seconds: float, rng: np.random.Generator
) -> dict[str, Any]:
    """Random dirty evictions into existing slots: a batch of random pages is faulted in with a
    write (not timed), then evicted by lowering the frame limit to 0 (timed)."""
    info = devices.device_for_path(mem.paging_dir)
    ios, elapsed, device_bytes, device_read = 0, 0.0, 0, 0
    counts, total_ns = None, 0
    while elapsed < seconds:
        mem.frame_limit = CHUNK
        batch = rng.choice(mem.pages, size=CHUNK, replace=False).astype(np.uint32)
        mem.replay(batch, np.ones(CHUNK, dtype=bool))
        mem.reset_stats()
        before = devices.io_counters(info)
        start = time.perf_counter()
        mem.frame_limit = 0
        elapsed += time.perf_counter() - start
        after = devices.io_counters(info)
        s = mem.stats
        assert s.page_outs == CHUNK and s.file_pages == mem.pages  # existing slots only
        ios += s.page_outs
        dev = _device_delta(before, after)
        device_bytes += dev["write"] or 0
        device_read += dev["read"] or 0
        hist = s.page_out_latency
        counts = hist.counts if counts is None else counts + hist.counts
        total_ns += hist.total_ns
    return {
        "ios": ios,
        "seconds": elapsed,
        "hist": vmmem.LatencyHistogram(counts, total_ns),
        "device_bytes": device_bytes if devices.io_counters(info) is not None else None,
        # read during page-outs: a write that first reads the old block shows here
        "device_other_bytes": device_read if devices.io_counters(info) is not None else None,
        "paged_bytes": ios * PAGE,
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over the rounds: IOPS = all I/Os / all time, latency from the merged histogram."""
    ios = sum(r["ios"] for r in runs)
    seconds = sum(r["seconds"] for r in runs)
    hist = vmmem.LatencyHistogram(
        sum(r["hist"].counts for r in runs), sum(r["hist"].total_ns for r in runs)
    )
    device = [r["device_bytes"] for r in runs]
    other = [r["device_other_bytes"] for r in runs]
    return {
        "iops": ios / seconds,
        "ios": ios,
        "seconds": seconds,
        "p50_us": hist.percentile(50) * 1e6,
        "p99_us": hist.percentile(99) * 1e6,
        "mean_us": hist.mean * 1e6,
        "device_bytes": None if None in device else sum(device),
        "device_other_bytes": None if None in other else sum(other),
        "paged_bytes": sum(r["paged_bytes"] for r in runs),
        "rounds_iops": [r["ios"] / r["seconds"] for r in runs],
    }


def _paired_median(vm: dict[str, Any], fio: dict[str, Any]) -> float:
    """The median over rounds of vmmem's IOPS / fio's IOPS in the same round."""
    return float(np.median(np.array(vm["rounds_iops"]) / np.array(fio["rounds_iops"])))


def _fio_summary(runs: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    ios = sum(r["ios"] for r in runs)
    return {
        "iops": ios / (seconds * len(runs)),
        "ios": ios,
        "p50_us": float(np.median([r["p50_us"] for r in runs])),
        "p99_us": float(np.median([r["p99_us"] for r in runs])),
        "rounds_iops": [r["iops"] for r in runs],
        "command": runs[0]["command"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir",
        default=None,
        help="folder to measure (default: a new folder under the system temp dir)",
    )
    parser.add_argument(
        "--backend",
        choices=sorted(vmmem.memory.BACKENDS),
        default="direct",
        help="vmmem's paging backend to measure (default direct)",
    )
    parser.add_argument(
        "--pages",
        type=int,
        default=65536,
        help="file size in 4 KiB pages, for fio and vmmem alike (default 65536 = 256 MiB)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=20.0,
        help="seconds per measurement, split over the rounds (default 20)",
    )
    parser.add_argument(
        "--rounds", type=int, default=10, help="interleaved rounds of fio and vmmem (default 10)"
    )
    parser.add_argument(
        "--json", metavar="FILE", help="also write the results as JSON ('-' = stdout)"
    )
    parser.add_argument(
        "--threads",
        metavar="N,N,...",
        help="instead: N threads paging in on one guest vs fio --numjobs=N, e.g. 1,2,4,8",
    )
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.threads.split(",")] if args.threads else []
    if any(n < 1 for n in counts):
        parser.error("--threads: thread counts are positive whole numbers")

    if shutil.which("fio") is None:
        print("fio is not installed (e.g. apt-get install fio)", file=sys.stderr)
        return 2
    own_dir = args.dir is None
    folder = tempfile.mkdtemp(prefix="vmmem-fio-") if own_dir else os.path.abspath(args.dir)
    if not os.path.isdir(folder):
        print(f"--dir {folder}: no such folder", file=sys.stderr)
        return 2
    info = devices.device_for_path(folder)
    size = args.pages * PAGE
    fio_file = os.path.join(folder, "vmmem-fio.tmp")
    results: dict[str, Any] = {
        "folder": folder,
        "device": info.device,
        "model": info.model,
        "fstype": info.fstype,
        "rotational": info.rotational,
        "ram_backed": info.ram_backed,
        "backend": args.backend,
        "pages": args.pages,
        "file_bytes": size,
        "seconds": args.seconds,
        "rounds": args.rounds,
    }
    if info.ram_backed:
        print(f"warning: {folder} is RAM-backed: these numbers measure no disk", file=sys.stderr)
    print(f"folder {folder}: {info.describe()}", file=sys.stderr)
    try:
        print(
            f"laying out a {size >> 20} MiB fio file and a {size >> 20} MiB paging file ...",
            file=sys.stderr,
        )
        lay_out_fio_file(fio_file, size)
        with (
            vmmem.FramePool(size) as pool,
            vmmem.GuestMemory(
                pool,
                size,
                frame_limit=0,
                paging_dir=folder,
                backend=args.backend,
                policy="lru",
                name="fio-compare",
            ) as mem,
        ):
            lay_out_paging_file(mem)
            os.sync()
            if counts:
                results["threads"] = compare_threads(mem, fio_file, size, counts, args)
                return _report_threads(results, info.describe(), args)
            rng = np.random.default_rng(1)
            runs: dict[str, list[dict[str, Any]]] = {k: [] for k in ("fr", "vr", "fw", "vw")}
            # Rounds interleave fio and vmmem, so drift in the device's speed hits both alike;
            # which of the two goes first alternates, so neither always follows the other.
            per_round = args.seconds / args.rounds
            for n in range(args.rounds):
                print(
                    f"round {n + 1}/{args.rounds}: fio randread, vmmem page-ins, "
                    "fio randwrite, vmmem page-outs ...",
                    file=sys.stderr,
                )
                for fio_first in (n % 2 == 0, n % 2 == 1):
                    if fio_first:
                        runs["fr"].append(run_fio(fio_file, "randread", size, per_round))
                        runs["fw"].append(run_fio(fio_file, "randwrite", size, per_round))
                    else:
                        runs["vr"].append(vmmem_page_ins(mem, per_round, rng))
                        runs["vw"].append(vmmem_page_outs(mem, per_round, rng))
            results["fio_randread"] = _fio_summary(runs["fr"], per_round)
            results["vmmem_page_in"] = _summary(runs["vr"])
            results["fio_randwrite"] = _fio_summary(runs["fw"], per_round)
            results["vmmem_page_out"] = _summary(runs["vw"])
    finally:
        if os.path.exists(fio_file):
            os.unlink(fio_file)
        if own_dir:
            try:
                os.rmdir(folder)  # our files are gone by now; anything else stays
            except OSError as exc:
                print(f"left {folder}: {exc.strerror}", file=sys.stderr)

    read_ratio = _paired_median(results["vmmem_page_in"], results["fio_randread"])
    write_ratio = _paired_median(results["vmmem_page_out"], results["fio_randwrite"])
    results["page_in_ratio"] = read_ratio
    results["page_out_ratio"] = write_ratio
    results["page_in_ratio_of_totals"] = (
        results["vmmem_page_in"]["iops"] / results["fio_randread"]["iops"]
    )
    results["page_out_ratio_of_totals"] = (
        results["vmmem_page_out"]["iops"] / results["fio_randwrite"]["iops"]
    )
    results["goal_ratio"] = GOAL

    rows = [
        ("4 KiB random read, QD1", results["fio_randread"], results["vmmem_page_in"], read_ratio),
        (
            "4 KiB random write, QD1",
            results["fio_randwrite"],
            results["vmmem_page_out"],
            write_ratio,
        ),
    ]
    print(f"\n{info.describe()}; vmmem backend {args.backend}")
    print(
        f"{'':26}{'fio IOPS':>10}{'vmmem IOPS':>12}{'ratio':>7}{'median':>8}   "
        f"{'fio p50/p99 us':>16}{'vmmem p50/p99 us':>19}"
    )
    for label, fio, vm, ratio in rows:
        verdict = "ok" if ratio >= GOAL else f"BELOW {GOAL}"
        print(
            f"{label:26}{fio['iops']:>10.0f}{vm['iops']:>12.0f}"
            f"{vm['iops'] / fio['iops']:>7.2f}{ratio:>8.2f}   "
            f"{fio['p50_us']:>7.0f} /{fio['p99_us']:>7.0f}"
            f"{vm['p50_us']:>10.0f} /{vm['p99_us']:>7.0f}   {verdict}"
        )
    pin, pout = results["vmmem_page_in"], results["vmmem_page_out"]
    if pin["device_bytes"] is not None and pout["device_bytes"] is not None:
        print(
            f"device counters: read {pin['device_bytes'] / 2**20:.1f} MiB and wrote "
            f"{pin['device_other_bytes'] / 2**20:.1f} MiB during "
            f"{pin['paged_bytes'] / 2**20:.1f} MiB of page-ins; wrote "
            f"{pout['device_bytes'] / 2**20:.1f} MiB and read "
            f"{pout['device_other_bytes'] / 2**20:.1f} MiB during "
            f"{pout['paged_bytes'] / 2**20:.1f} MiB of page-outs"
        )
        results["page_out_read_share"] = pout["device_other_bytes"] / max(1, pout["paged_bytes"])
    else:
        print("device counters: none for this folder (no block device); device I/O unconfirmed")
    if args.json:
        text = json.dumps(results, indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return 0


def _report_threads(results: dict[str, Any], device: str, args: argparse.Namespace) -> int:
    print(f"\n{device}; vmmem backend {args.backend}; N threads on one guest vs fio --numjobs=N")
    print(f"{'threads':>8}{'fio IOPS':>10}{'vmmem IOPS':>12}{'ratio':>7}{'median':>8}")
    for n, row in results["threads"].items():
        verdict = "ok" if row["ratio"] >= THREADS_GOAL else f"BELOW {THREADS_GOAL}"
        print(
            f"{n:>8}{row['fio_iops']:>10.0f}{row['vmmem_iops']:>12.0f}"
            f"{row['ratio_of_totals']:>7.2f}{row['ratio']:>8.2f}   {verdict}"
        )
    if args.json:
        text = json.dumps(results, indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
