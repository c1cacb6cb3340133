"""Replay each shipped guest through the core on this machine's disk: with enough memory and
with a frame limit of a share of the pages it touches (the rest in a paging file beside its
virtual disk), and show the boot time that results for guest_ips x 0.5, x 1 and x 2.

Boot time = guest CPU (instructions / guest_ips) + the replay's wall time (the core's
paging I/O and the virtual disk's reads, which the guest waits for). Below the Hyper-V layer:
no balancer, one VM, a fixed frame limit.

    python benchmarks/guest_replay.py [--dir /var/tmp] [--shares 1,0.5,0.25]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import vmmem
from vmmem.guests import DEFAULT_GUEST_IPS, GuestTrace, replay_epochs, shipped_names
from vmmem.vdisk import VirtualDisk


def replay_seconds(trace: GuestTrace, share: float, folder: str) -> tuple[float, dict]:
    frames = max(64, int(trace.pages_touched * share))
    disk_path = os.path.join(folder, f"{trace.name}.vhd")
    with (
        vmmem.FramePool(frames * trace.page_size) as pool,
        vmmem.GuestMemory(
            pool, trace.memory_size, frame_limit=frames, paging_dir=folder, name=trace.name
        ) as mem,
        VirtualDisk(disk_path, trace.disk_size) as disk,
    ):
        r = replay_epochs(mem, trace, disk=disk)
        s = mem.stats
        return r.replay_seconds, {
            "frames": frames,
            "page_ins": s.page_ins,
            "page_outs": s.page_outs,
            "disk_reads": r.disk_requests,
        }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--shares", default="1,0.5,0.25")
    a = ap.parse_args()
    shares = [float(x) for x in a.shares.split(",")]
    ips = [DEFAULT_GUEST_IPS * f for f in (0.5, 1.0, 2.0)]
    head = "| guest | frames (share of pages touched) | page-ins | page-outs | disk reads |"
    head += " replay s |" + "".join(f" boot s @ {g / 1e9:g} G ips |" for g in ips)
    print(head)
    print("|" + " --- |" * (6 + len(ips)))
    with tempfile.TemporaryDirectory(dir=a.dir, prefix="vmmem-guest-replay-") as folder:
        for name in shipped_names():
            trace = GuestTrace.load(name)
            base = None
            for share in shares:
                wall, c = replay_seconds(trace, share, folder)
                boots = [trace.instructions / g + wall for g in ips]
                if base is None:
                    base = boots
                cells = "".join(
                    f" {b:.2f} ({b / b0:.2f}x) |" for b, b0 in zip(boots, base, strict=True)
                )
                print(
                    f"| {name} | {c['frames']} ({share:g}) | {c['page_ins']} | "
                    f"{c['page_outs']} | {c['disk_reads']} | {wall:.2f} |{cells}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
