"""Does the emulator's own cost stay out of a storm's figure? The article's storm at each scale,
with the synthetic boot and a recorded one, the virtual disks on a real disk and on tmpfs.

For each run, per VM: the storm's boot against its baseline (the same VM booted alone, with all
its Startup RAM), and what the difference is made of. A boot's time is guest time plus measured
waits (docs/DESIGN.md), so a storm that does not page is slower than alone by its virtual-disk
requests' extra time (the disk's contention) and nothing else; on tmpfs that is the page cache's
copy and a wait for the GIL. Beside it, the emulator's share: its thread's CPU time per boot and
how far the wall clock ran behind the boot's time.

    python benchmarks/bench_emulator_overhead.py [--scales 1,2,4] [--guests synthetic,debian-12]
        [--vhd disk,shm] [--dir /var/tmp] [--json FILE]

Goals (checked, exit 1 if missed): a storm without paging is within its disk contention
(storm - baseline <= the extra disk time + 1 ms, per VM), and the emulator's wall clock keeps
within 10 % of a boot's time (median over the storm's boots) on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from typing import Any

from vmmem.lab import article_scenario
from vmmem.lab.runner import run_scenario


def one(scale: float, guest: str, vhd: str, folder: str) -> dict[str, Any]:
    work = tempfile.mkdtemp(prefix="vmmem-bench-", dir=folder)
    vhd_dir = tempfile.mkdtemp(prefix="vmmem-bench-vhd-", dir="/dev/shm") if vhd == "shm" else None
    cwd = os.getcwd()
    try:
        os.chdir(work)  # the VMs' folders (./vmmem-vms) go here, and go with it
        s = article_scenario().scaled(scale)
        if guest != "synthetic":
            s = s.with_guest(guest)
        if vhd_dir is not None:
            s = s.with_vhd_dir(vhd_dir)
        result = run_scenario(s)
    finally:
        os.chdir(cwd)
        shutil.rmtree(work, ignore_errors=True)  # made by mkdtemp above: ours alone
        if vhd_dir is not None:
            shutil.rmtree(vhd_dir, ignore_errors=True)
    if result.outcome != "ok":
        raise SystemExit(f"{guest} at scale {scale} ({vhd}): {result.outcome} {result.error}")
    alone = {b.vm: b for b in result.boots if b.kind == "start"}
    rows = []
    for b in result.storm_boots():
        a = alone[b.vm]
        paged = b.page_ins + b.page_outs
        rows.append(
            {
                "vm": b.vm,
                "boot": b.boot_time,
                "alone": a.boot_time,
                "slowdown": b.boot_time / a.boot_time,
                "extra": b.boot_time - a.boot_time,
                "extra_disk": b.disk_seconds - a.disk_seconds,
                "faults": b.fault_wait_seconds,
                "memory_wait": b.memory_wait_seconds,
                "paged": paged,
                "emulator_cpu": b.emulator_cpu_seconds,
                "behind": b.emulator_seconds,
                "wall": b.wall_seconds,
            }
        )
    st = result.storm_summary()
    return {
        "scale": scale,
        "guest": guest,
        "vhd": vhd,
        "storm": st.boot_time,
        "baseline": st.baseline,
        "slowdown": st.slowdown,
        "vms": rows,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scales", default="1,2,4")
    p.add_argument("--guests", default="synthetic,debian-12")
    p.add_argument("--vhd", default="disk,shm", help="where the virtual disks go: disk, shm")
    p.add_argument("--dir", default="/var/tmp", help="a folder on the disk to run in")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    runs = []
    missed = []
    for scale in (float(x) for x in args.scales.split(",")):
        for guest in args.guests.split(","):
            for vhd in args.vhd.split(","):
                r = one(scale, guest, vhd, args.dir)
                runs.append(r)
                vms = r["vms"]
                behind = statistics.median(v["behind"] / v["boot"] for v in vms)
                print(
                    f"scale {scale:g} {guest:>10} vhd on {vhd:>4}: storm {r['storm']:.3f} s, "
                    f"alone {r['baseline']:.3f} s, {r['slowdown']:.3f} x; per VM extra "
                    + ", ".join(f"{v['extra'] * 1e3:.0f}" for v in vms)
                    + " ms (disk "
                    + ", ".join(f"{v['extra_disk'] * 1e3:.0f}" for v in vms)
                    + " ms, faults "
                    + ", ".join(f"{v['faults'] * 1e3:.0f}" for v in vms)
                    + f" ms); paged {sum(v['paged'] for v in vms):,} pages; emulator CPU "
                    f"{max(v['emulator_cpu'] for v in vms):.3f} s per boot, wall behind "
                    f"{behind * 100:.1f} % (median)"
                )
                for v in vms:
                    if not v["paged"] and v["extra"] > v["extra_disk"] + v["memory_wait"] + 1e-3:
                        missed.append(f"{guest} x{scale:g} {vhd} {v['vm']}: beyond its disk")
                if behind > 0.10:
                    missed.append(f"{guest} x{scale:g} {vhd}: wall {behind:.0%} behind")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(runs, f, indent=2)
    for m in missed:
        print(f"goal missed: {m}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
