"""The article's reboot storm at full size, on real RAM and a real Smart Paging folder.

Host: 1400 MB for VMs. Four VMs: Startup 512 MB, Minimum 32 MB, Maximum 2048 MB, Buffer 20 %.
They are started one by one (each boots with its Startup RAM: that boot is the baseline),
idle and balloon down to about 300 MB; then all four restart at once and need 4 x 512 MB of
the 1400: each boots on its own Smart Paging file for the gap (about 648 MB in all). Printed:
boot times, baseline, slowdown, Smart Paging bytes and duration, fault latencies, and the bytes
the device under the folder read and wrote by its own counters.

    python benchmarks/bench_reboot_storm.py [--dir DIR] [--cpu-per-page S] [--interval S]
                                            [--backend direct|mmap] [--json FILE]

Every figure is measured in this run; nothing is assumed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import vmmem
from vmmem import devices, format_size
from vmmem.hyperv import Boot, Host, Idle

MB = vmmem.MB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir",
        default=None,
        help="host folder; each VM's Smart Paging folder is DIR/<vm> "
        "(default: ./vmmem-vms, Host's default)",
    )
    parser.add_argument(
        "--cpu-per-page",
        type=float,
        default=50e-6,
        help="guest CPU seconds per Startup page during boot (default 50e-6: "
        "a 512 MB boot with enough memory takes about 6.6 s)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=1.0,
        help="balancer interval in seconds (Hyper-V: about 1)",
    )
    parser.add_argument("--backend", default="direct", choices=("direct", "mmap"))
    parser.add_argument("--json", default=None, help="write every figure to this JSON file")
    args = parser.parse_args(argv)

    workload = [Boot(cpu_per_page=args.cpu_per_page), Idle(touch_interval=0.5)]
    began = time.monotonic()
    with Host(
        "1400MB", smart_paging_path=args.dir, balancer_interval=args.interval, backend=args.backend
    ) as host:
        os.makedirs(host.folder, exist_ok=True)
        info = devices.device_for_path(host.folder)
        print(f"Smart Paging folder: {info.describe()}")
        if info.ram_backed:
            print("warning: this folder is RAM: the paging I/O below measures nothing real")
        vms = [
            host.add_vm(
                f"vm{i}",
                startup="512MB",
                minimum="32MB",
                maximum="2048MB",
                buffer=20,
                workload=workload,
            )
            for i in range(1, 5)
        ]

        print("\nStarting the four VMs one by one (baseline boots, all Startup RAM) ...")
        for vm in vms:
            vm.start()
            report = vm.wait_booted()
            host.wait_settled()
            print(
                f"  {vm.name}: booted in {report.boot_time:.2f} s, settled at "
                f"{format_size(vm.status.memory_assigned)}"
            )
        steady = host.status
        print(
            "Steady state: "
            + ", ".join(
                f"{s.name} {format_size(s.memory_assigned)} ({s.memory_status})" for s in steady
            )
            + f"; host available {format_size(host.available_memory)}"
        )

        print("\nRestarting all four at once (the patch-night reboot storm) ...")
        storm_start = host.clock()
        io_before = devices.io_counters(info)
        host.restart()
        at_restart = host.status
        reports = host.wait_booted()
        storm_boot = max(r.started_at + r.boot_time for r in reports) - storm_start
        host.wait_settled()
        settled_after = host.clock() - storm_start
        io_after = devices.io_counters(info)
        finals = [vm.boot_report for vm in vms]
        after = host.status

    left = [
        os.path.join(d, f)
        for d, _, files in os.walk(args.dir or "vmmem-vms")
        for f in files
        if f.endswith(".slp")
    ]

    header = (
        f"{'VM':<5}{'given':>9}{'boot s':>9}{'base s':>8}{'slow x':>8}{'SP peak':>9}"
        f"{'SP s':>7}{'page-ins':>10}{'page-outs':>11}{'p50 ms':>8}{'p99 ms':>8}"
    )
    print("\n" + header)
    for status, r in zip(at_restart, finals, strict=True):
        p50 = f"{r.fault_p50 * 1e3:.2f}" if r.fault_p50 is not None else "-"
        p99 = f"{r.fault_p99 * 1e3:.2f}" if r.fault_p99 is not None else "-"
        print(
            f"{r.vm:<5}{format_size(status.memory_assigned):>9}{r.boot_time:>9.2f}"
            f"{r.baseline or 0:>8.2f}{r.slowdown or 0:>8.2f}"
            f"{format_size(r.smart_paging_peak_bytes):>9}{r.smart_paging_seconds:>7.1f}"
            f"{r.page_ins:>10}{r.page_outs:>11}{p50:>8}{p99:>8}"
        )
    bridged = sum(r.smart_paging_peak_bytes for r in finals)
    paged = sum(r.bytes_written + r.bytes_read for r in finals)
    mean_base = sum(r.baseline or 0 for r in finals) / len(finals)
    print(
        f"\nStorm: every VM booted after {storm_boot:.2f} s (baseline {mean_base:.2f} s: "
        f"{storm_boot / mean_base:.1f} x slower); settled (files gone, statuses OK) after "
        f"{settled_after:.1f} s"
    )
    print(
        f"Smart Paging bridged {format_size(bridged)} in all (article: about 648 MB); the "
        f"core paged {format_size(paged)} through the files during the boots"
    )
    if io_before is not None and io_after is not None:
        delta = io_after - io_before
        print(
            f"Device {info.device} by its own counters, restart to settled: read "
            f"{format_size(delta.read_bytes)}, wrote {format_size(delta.write_bytes)}"
        )
    else:
        delta = None
        print("Device counters: none for this folder (no block device): I/O not confirmed")
    print(
        "After: "
        + ", ".join(f"{s.name} {format_size(s.memory_assigned)} ({s.memory_status})" for s in after)
        + f"; paging files left: {len(left)}; total run {time.monotonic() - began:.0f} s"
    )

    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "device": info.describe(),
                    "steady": [s.as_dict() for s in steady],
                    "at_restart": [s.as_dict() for s in at_restart],
                    "reports": [r.as_dict() for r in finals],
                    "storm_boot_s": storm_boot,
                    "settled_after_s": settled_after,
                    "device_read_bytes": delta.read_bytes if delta else None,
                    "device_write_bytes": delta.write_bytes if delta else None,
                    "paging_files_left": left,
                },
                f,
                indent=2,
            )
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
