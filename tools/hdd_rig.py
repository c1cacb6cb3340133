#!/usr/bin/env python3
"""An HDD-like device made on this machine, for comparing Smart Paging locations.

    sudo python tools/hdd_rig.py --iops 150 --mount /mnt/hdd-150iops -- \
        vmmem compare /mnt/hdd-150iops/sp /var/tmp/sp --vhd-dir /mnt/hdd-150iops/vhds --scale 8

Makes a file-backed loop device (direct I/O to its file, so the host's page cache does not
answer for it) with ext4 on it, mounts it, throttles it to --iops reads and --iops writes per
second for a cgroup of its own (cgroup v1 blkio), runs the command in that cgroup, and always
tears it all down (unmount, detach, remove the cgroup, the image and the mount point if it
made it). The filesystem is new, so the folders the command names under the mount point do
not exist yet: vmmem makes the ones it is given. 150 IOPS is the random rate of a 7200 rpm
disk. Needs root, losetup, mkfs.ext4 and cgroup v1 blkio.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile

BLKIO = "/sys/fs/cgroup/blkio"


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iops", type=int, default=150, help="read and write IOPS (default 150)")
    ap.add_argument("--size", default="2G", help="size of the device (default 2G)")
    ap.add_argument("--mount", required=True, help="where to mount it (made if missing)")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- the command to run in it")
    args = ap.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.error("give the command to run after --")
    if os.geteuid() != 0:
        ap.error("needs root (losetup, mount, cgroups)")
    work = tempfile.mkdtemp(prefix="vmmem-rig-", dir="/var/tmp")
    image = os.path.join(work, "hdd.img")
    dev = cgroup = None
    mounted = made_mount = False
    try:
        _run("truncate", "-s", args.size, image)
        _run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", image)
        dev = _run("losetup", "--find", "--show", "--direct-io=on", image)
        made_mount = not os.path.lexists(args.mount)
        os.makedirs(args.mount, exist_ok=True)
        _run("mount", "-o", "noatime", dev, args.mount)
        mounted = True
        st = os.stat(dev)
        majmin = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        cgroup = tempfile.mkdtemp(prefix="vmmem-hdd-", dir=BLKIO)
        for knob in ("read_iops_device", "write_iops_device"):
            with open(os.path.join(cgroup, f"blkio.throttle.{knob}"), "w") as f:
                f.write(f"{majmin} {args.iops}\n")
        print(f"rig: {dev} ({args.size}, {args.iops} IOPS) on {args.mount}", file=sys.stderr)
        procs = os.path.join(cgroup, "cgroup.procs")
        return subprocess.call(["sh", "-c", f'echo $$ > {procs} && exec "$@"', "rig", *cmd])
    finally:
        if mounted:
            subprocess.run(["umount", "-l", args.mount], capture_output=True)
        if dev:
            subprocess.run(["losetup", "-d", dev], capture_output=True)
        if cgroup:
            with contextlib.suppress(OSError):
                os.rmdir(cgroup)
        with contextlib.suppress(OSError):
            os.unlink(image)
        with contextlib.suppress(OSError):
            os.rmdir(work)
        if made_mount:
            with contextlib.suppress(OSError):
                os.rmdir(args.mount)  # only if empty (unmounted), never anything in it


if __name__ == "__main__":
    sys.exit(main())
