"""The article's reboot storm at full size, on real RAM and a real Smart Paging folder, through
the lab's runner (the same code as `vmmem run`), with a summary a benchmark log keeps.

Host: 1400 MB for VMs. Four VMs: Startup 512 MB, Minimum 32 MB, Maximum 2048 MB, Buffer 20 %.
They start one by one (each boot with its Startup RAM is its baseline), idle and balloon down
to about 300 MB; then all four restart at once (restart-vms) and need 4 x 512 MB of the 1400:
each boots on its own Smart Paging file for the gap (about 648 MB in all).

    python benchmarks/bench_reboot_storm.py [--paging-dir DIR] [--guest NAME] [--scale F]
                                            [--backend direct|mmap] [--json FILE]

Every figure is measured in this run; nothing is assumed.
"""

from __future__ import annotations

import argparse
import json
import sys

from vmmem.lab import article_scenario
from vmmem.lab.runner import run_scenario
from vmmem.records import to_json
from vmmem.sizes import format_duration, format_mb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paging-dir", default=None, help="every Smart Paging file here")
    parser.add_argument("--guest", default=None, help="a recorded guest (vmmem guests)")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink everything by F")
    parser.add_argument("--backend", default="direct", choices=("direct", "mmap"))
    parser.add_argument("--json", default=None, help="write the whole result to this file")
    args = parser.parse_args(argv)

    s = article_scenario().scaled(args.scale)
    if args.guest:
        s = s.with_guest(args.guest)
    result = run_scenario(s, paging_dir=args.paging_dir, backend=args.backend)
    st = result.storm_summary()
    for b in result.storm_boots():
        print(
            f"{b.vm}: {format_duration(b.boot_time)} (baseline "
            f"{format_duration(b.baseline)}), Smart Paging peak "
            f"{format_mb(b.smart_paging_peak_bytes)}, page-ins/outs "
            f"{b.page_ins:,}/{b.page_outs:,}, "
            f"boot disk reads {format_mb(b.disk_read_bytes)}"
        )
    print(result.verdict())
    print(f"device I/O confirmed by the device's counters: {result.device_io_confirmed()}")
    print(f"storm summary: {json.dumps(to_json(st))}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result.to_dict(), f, indent=2)
    return 0 if result.outcome == "ok" and not result.leftover_files else 1


if __name__ == "__main__":
    sys.exit(main())
