#!/usr/bin/env python3
"""Measure this machine's native instructions per second on real guest code, without KVM
and without hardware performance counters.

The instruction count comes from QEMU's TCG with the vmmem plugin (exact), the time from the
host running the very same static binary natively:

1. boot the busybox guest (tools/build_guest_images.py busybox) under the recorder with an
   extra initramfs layer whose /measure script runs a workload (or nothing) and powers off;
   the difference in guest instructions is the workload's count (user and kernel);
2. run the same script with the same static busybox natively, best of 5;
3. print instructions / seconds, per workload (see WORKLOADS).

Usage: python tools/measure_guest_ips.py [--images build/guests/busybox]
"""

from __future__ import annotations

import argparse
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from build_guest_images import newc_cpio  # noqa: E402

from vmmem.guests.record import record_boot  # noqa: E402

SCRIPT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
{work}
echo "vmmem-guest: boot reached its target"
poweroff -f
"""
# Two workloads: compression (user-mode, compute-bound) and process creation (fork, exec,
# page faults, exit: kernel-bound, as much of a boot is). Each runs twice.
WORKLOADS = {
    "gzip": "gzip -c -6 /input > /dev/null; gzip -c -6 /input > /dev/null",
    "exec": "i=0; while [ $i -lt 1000 ]; do /bin/busybox true; i=$((i+1)); done",
}


def layered_initrd(base: Path, out: Path, work: str, data: bytes) -> None:
    extra = newc_cpio(
        [
            ("measure", stat.S_IFREG | 0o755, SCRIPT.format(work=work).encode()),
            ("input", stat.S_IFREG | 0o644, data),
        ]
    )
    out.write_bytes(base.read_bytes() + extra)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, default=ROOT / "build" / "guests" / "busybox")
    ap.add_argument("--input-mb", type=int, default=8)
    a = ap.parse_args()
    img = a.images
    # Input: the guest's own kernel image bytes, cut to size (deterministic, real data).
    data = (img / "vmlinuz").read_bytes()[: a.input_mb << 20]
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        bb = t / "busybox"
        subprocess.run(
            ["sh", "-c", f"cd {t} && apt-get download -qq busybox-static && "
             f"dpkg-deb -x busybox-static_*.deb root && cp root/bin/busybox {bb}"],
            check=True, capture_output=True,
        )  # fmt: skip
        (t / "input").write_bytes(data)
        counts = {}
        for label, work in (("none", ":"), *WORKLOADS.items()):
            initrd = t / f"initrd-{label}.img"
            layered_initrd(img / "initrd.img", initrd, work, data)
            trace = record_boot(
                t / f"{label}.npz", kernel=img / "vmlinuz", initrd=initrd, memory="256MB",
                append="console=ttyS0 panic=-1 quiet rdinit=/measure", name=label,
                timeout=900,
            )  # fmt: skip
            counts[label] = trace.instructions
        for label, work in WORKLOADS.items():
            insns = counts[label] - counts["none"]
            # Natively: the same static busybox binary, the same script, the same bytes.
            native = work.replace("/input", str(t / "input")).replace("/bin/busybox", str(bb))
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                subprocess.run([str(bb), "sh", "-c", native], check=True)
                best = min(best, time.perf_counter() - t0)
            print(f"{label}: {insns:,} guest instructions (boot with it {counts[label]:,}, "
                  f"without {counts['none']:,}); native best of 5: {best:.3f} s; "
                  f"{insns / best:.2e} instructions/s")  # fmt: skip


if __name__ == "__main__":
    main()
