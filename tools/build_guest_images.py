#!/usr/bin/env python3
"""Build the guest images that vmmem's shipped guest traces were recorded from.

Everything comes from Debian's packages through this machine's own apt configuration
(``apt-get download`` and ``mmdebstrap``); no host name appears here. The guests:

``busybox``
    Debian's cloud kernel (``linux-image-cloud-amd64``, its ``boot/vmlinuz-*``) and an
    initramfs holding ``busybox-static``, the four virtio modules the disk needs, and an
    ``/init`` script that mounts the pseudo filesystems, loads the modules, reads the first
    4 MiB of the virtio disk ``/dev/vda`` and then runs ``poweroff -f``. The disk is a small
    raw file of zeros. The cpio archive is written by this script with sorted names, fixed
    owners and a fixed mtime, so the same packages give the same bytes.

``debian-12``
    A Debian 12 root filesystem built with ``mmdebstrap`` (variant ``minbase`` plus
    ``systemd-sysv``, ``udev``, ``kmod`` and ``linux-image-cloud-amd64``, which brings
    ``initramfs-tools``) into an ext4 raw image (``mke2fs -d``). The kernel and initramfs are
    the ones Debian installed into the image's ``/boot``. A unit
    ``vmmem-poweroff.service`` (``WantedBy=`` and ``After=multi-user.target``) powers the
    machine off at once when multi-user.target is reached, which ends the recording.
    ``SOURCE_DATE_EPOCH`` is fixed so mmdebstrap's output is as reproducible as Debian allows.

``debian-12-init-on-free``
    The same images as ``debian-12``; only the kernel command line adds ``init_on_free=1``,
    so the kernel zeroes every page it frees, including all free memory when it hands it to
    the page allocator during boot: nearly every page of the VM's RAM is written.

``busybox-smp2``
    ``busybox`` with two vCPUs (``guest.json``'s ``vcpus``: the recorder runs ``-smp 2``); its
    ``/init`` reads 2 MiB of the disk at 8 MiB pinned to vCPU 0 and 2 MiB at 32 MiB pinned
    to vCPU 1 (``taskset``, direct I/O), then powers off: the test of the recorder's
    attribution of disk requests to vCPUs.

``debian-12-smp2``, ``debian-12-smp4``
    The ``debian-12`` recipe (built again: the mirror's current packages) with ``vcpus`` 2
    or 4 in ``guest.json``.

``debian-12-tomcat``
    ``debian-12`` plus Debian's ``tomcat10`` (OpenJDK 17), in a 1 GB VM. A drop-in gives the
    JVM a fixed 512 MB heap touched at start (``CATALINA_OPTS=-Xms512m -Xmx512m
    -XX:+AlwaysPreTouch -XX:+UseG1GC``, as Elasticsearch configures its JVM: heap fixed, half
    of RAM, pre-touched, G1). The power-off
    unit here waits (``After=tomcat10.service``) until Tomcat answers an HTTP request on
    port 8080, i.e. the server is ready, then powers off.

Usage (as root, for mmdebstrap and apt-get)::

    python tools/build_guest_images.py busybox   [--out DIR]
    python tools/build_guest_images.py debian-12 [--out DIR]
    python tools/build_guest_images.py debian-12-init-on-free [--out DIR]
    python tools/build_guest_images.py debian-12-tomcat [--out DIR]
    python tools/build_guest_images.py busybox-smp2 | debian-12-smp2 | debian-12-smp4 [--out DIR]

The default ``--out`` is ``build/guests`` in the work tree. Each guest gets a folder with
``vmlinuz``, ``initrd.img``, ``disk.img`` and ``guest.json`` (what
:func:`vmmem.guests.record.record_boot` reads through ``--image-dir``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

SOURCE_DATE_EPOCH = 1700000000  # fixed mtime for everything this script writes
VIRTIO_MODULES = [  # load order matters
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/drivers/block/virtio_blk.ko",
]

BUSYBOX_INIT = """#!/bin/busybox sh
# vmmem busybox guest: mount, load the virtio disk driver, read the disk, power off.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in {modules}; do insmod /lib/modules/$m; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
dd if=/dev/vda of=/dev/null bs=65536 count=64 2>/dev/null
echo "vmmem-guest: boot reached its target"
poweroff -f
"""

# Two vCPUs, each reading its own 2 MiB of the disk with direct I/O, pinned with taskset: the
# requests at 8 MiB are vCPU 0's and those at 32 MiB vCPU 1's, which checks the recorder's
# attribution of disk requests to vCPUs (tests/test_guests_record.py).
BUSYBOX_SMP2_INIT = """#!/bin/busybox sh
# vmmem busybox-smp2 guest: as busybox, then one pinned direct read per vCPU.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in {modules}; do insmod /lib/modules/$m; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
echo "vmmem-guest: $(nproc) vCPUs online"
taskset 1 dd if=/dev/vda of=/dev/null bs=65536 count=32 skip=128 iflag=direct
taskset 2 dd if=/dev/vda of=/dev/null bs=65536 count=32 skip=512 iflag=direct
echo "vmmem-guest: boot reached its target"
poweroff -f
"""

POWEROFF_UNIT = """[Unit]
Description=vmmem: power off once multi-user.target is reached (ends the recording)
After=multi-user.target
DefaultDependencies=no

[Service]
Type=oneshot
ExecStartPre=/bin/sh -c 'echo "vmmem-guest: boot reached its target" > /dev/ttyS0'
ExecStart=/usr/bin/systemctl poweroff --force --force

[Install]
WantedBy=multi-user.target
"""

# The server guest's target is "Tomcat serves requests", not multi-user.target: Tomcat's unit
# is Type=simple (started = forked), so readiness is asked of the server itself. Tomcat binds
# its port early (bindOnInit) but answers only once its connector has started, after every
# web application is deployed: the first HTTP answer (any status) is the end of its startup.
TOMCAT_POWEROFF_UNIT = """[Unit]
Description=vmmem: power off once Tomcat answers HTTP (ends the recording)
After=multi-user.target tomcat10.service
Wants=tomcat10.service
DefaultDependencies=no

[Service]
Type=oneshot
TimeoutStartSec=infinity
ExecStartPre=/bin/sh -c 'until curl -s -o /dev/null --max-time 30 http://127.0.0.1:8080/; \
do sleep 0.5; done'
ExecStartPre=/bin/sh -c 'echo "vmmem-guest: boot reached its target" > /dev/ttyS0'
ExecStart=/usr/bin/systemctl poweroff --force --force

[Install]
WantedBy=multi-user.target
"""
TOMCAT_HEAP = "512m"
# CATALINA_OPTS, not JAVA_OPTS: Debian's tomcat-start.sh sets JAVA_OPTS from
# /etc/default/tomcat10, over the unit's environment; CATALINA_OPTS is Tomcat's variable for
# options of the server JVM only, and nothing in Debian's scripts sets it. G1 as Elasticsearch
# sets it (the JVM would pick Serial GC on one vCPU).
TOMCAT_DROPIN = f"""[Service]
Environment="CATALINA_OPTS=-Xms{TOMCAT_HEAP} -Xmx{TOMCAT_HEAP} -XX:+AlwaysPreTouch -XX:+UseG1GC"
"""
DEBIAN_PACKAGES = ["systemd-sysv", "udev", "kmod", "linux-image-cloud-amd64", "initramfs-tools"]
DEBIAN_APPEND = "root=/dev/vda ro console=ttyS0 panic=-1 quiet"


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(args), file=sys.stderr)
    return subprocess.run(args, check=True, **kw)


def apt_download(names: list[str], into: Path) -> list[Path]:
    into.mkdir(parents=True, exist_ok=True)
    os.chmod(into, 0o777)  # apt-get download drops privileges to _apt
    run("apt-get", "download", *names, cwd=into)
    return sorted(into.glob("*.deb"))


def deb_versions(debs: list[Path]) -> list[dict[str, str]]:
    """Each .deb's package name, version and architecture, from its own control file (file
    names escape an epoch's colon), for the provenance of traces recorded from the images."""
    fields = ("Package", "Version", "Architecture")
    out = []
    for deb in debs:
        values = subprocess.run(
            ["dpkg-deb", "-f", str(deb), *fields], check=True, capture_output=True, text=True
        ).stdout
        info = dict(line.split(": ", 1) for line in values.splitlines() if ": " in line)
        out.append({k.lower(): info.get(k, "") for k in fields})
    return sorted(out, key=lambda d: d["package"])


def installed_versions(rootfs: Path) -> list[dict[str, str]]:
    """Every package installed in a root filesystem, as deb_versions gives them."""
    rows = subprocess.run(
        ["dpkg-query", f"--admindir={rootfs / 'var/lib/dpkg'}", "-W",
         "-f", "${Package}\t${Version}\t${Architecture}\n"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    keys = ("package", "version", "architecture")
    return [dict(zip(keys, r.split("\t"), strict=True)) for r in rows.splitlines()]


def kernel_package() -> str:
    out = subprocess.run(
        ["apt-cache", "depends", "linux-image-cloud-amd64"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends: linux-image-"):
            return line.split()[1]
    raise SystemExit("linux-image-cloud-amd64 does not name a kernel package")


def newc_cpio(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A reproducible 'newc' cpio archive: (name, mode, data) sorted by name, root-owned."""
    out = bytearray()

    def add(name: str, mode: int, data: bytes, ino: int) -> None:
        nameb = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, SOURCE_DATE_EPOCH, len(data), 0, 0, 0, 0, len(nameb), 0]
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields))
        out.extend(nameb)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data) in enumerate(sorted(entries), start=1):
        add(name, mode, data, ino)
    add("TRAILER!!!", 0, b"", 0)
    return bytes(out)


def build_busybox(
    out: Path,
    *,
    name: str = "busybox",
    kind: str = "busybox initramfs",
    init: str = BUSYBOX_INIT,
    vcpus: int = 1,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        kpkg = kernel_package()
        debs = apt_download([kpkg, "busybox-static"], tmpd / "debs")
        for deb in debs:
            run("dpkg-deb", "-x", str(deb), str(tmpd / "root"))
        root = tmpd / "root"
        (vmlinuz,) = sorted((root / "boot").glob("vmlinuz-*"))
        (moddir,) = sorted((root / "lib" / "modules").iterdir())
        shutil.copyfile(vmlinuz, out / "vmlinuz")
        d = stat.S_IFDIR | 0o755
        f = stat.S_IFREG | 0o644
        x = stat.S_IFREG | 0o755
        entries: list[tuple[str, int, bytes]] = [
            (n, d, b"") for n in ("bin", "dev", "proc", "sys", "lib", "lib/modules")
        ]
        entries.append(("bin/busybox", x, (root / "bin" / "busybox").read_bytes()))
        mods = []
        for rel in VIRTIO_MODULES:
            module = Path(rel).name
            entries.append((f"lib/modules/{module}", f, (moddir / rel).read_bytes()))
            mods.append(module)
        entries.append(("init", x, init.format(modules=" ".join(mods)).encode()))
        (out / "initrd.img").write_bytes(newc_cpio(entries))
        disk = out / "disk.img"
        with open(disk, "wb") as fh:
            fh.truncate(64 << 20)
        meta: dict[str, object] = {
            "name": name,
            "kind": kind,
            "memory_mb": 256,
            "append": "console=ttyS0 panic=-1 quiet",
            "packages": sorted(p.name for p in debs),
            "debs": deb_versions(debs),
            "kernel_release": moddir.name,
        }
        if vcpus > 1:
            meta["vcpus"] = vcpus
        (out / "guest.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{name} guest in {out}")


def build_busybox_smp2(out: Path) -> None:
    build_busybox(
        out,
        name="busybox-smp2",
        kind="busybox initramfs, 2 vCPUs, one pinned disk read each",
        init=BUSYBOX_SMP2_INIT,
        vcpus=2,
    )


def build_debian(
    out: Path,
    *,
    name: str = "debian-12",
    kind: str = "debian 12 systemd multi-user.target",
    memory_mb: int = 512,
    append: str = DEBIAN_APPEND,
    extra_packages: tuple[str, ...] = (),
    poweroff_unit: str = POWEROFF_UNIT,
    dropins: dict[str, str] | None = None,
    vcpus: int = 1,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        rootfs = Path(tmp) / "rootfs"
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(SOURCE_DATE_EPOCH))
        unit = "/etc/systemd/system/vmmem-poweroff.service"
        unit_file = Path(tmp) / "vmmem-poweroff.service"
        unit_file.write_text(poweroff_unit)
        packages = [*DEBIAN_PACKAGES, *extra_packages]
        hooks = [
            f"--customize-hook=upload {unit_file} {unit}",
            '--customize-hook=mkdir -p "$1/etc/systemd/system/multi-user.target.wants"',
            f'--customize-hook=ln -sf {unit} "$1/etc/systemd/system/multi-user.target.wants/"',
            "--customize-hook=echo '/dev/vda / ext4 defaults 0 1' > \"$1/etc/fstab\"",
            '--customize-hook=echo vmmem-guest > "$1/etc/hostname"',
            '--customize-hook=chroot "$1" passwd -d root',
        ]
        for i, (service, text) in enumerate(sorted((dropins or {}).items())):
            dropin = Path(tmp) / f"dropin{i}.conf"
            dropin.write_text(text)
            folder = f"/etc/systemd/system/{service}.d"
            hooks += [
                f'--customize-hook=mkdir -p "$1{folder}"',
                f"--customize-hook=upload {dropin} {folder}/vmmem.conf",
            ]
        run(
            "mmdebstrap",
            "--variant=minbase",
            "--include=" + ",".join(packages),
            *hooks,
            "bookworm",
            str(rootfs),
            env=env,
        )
        (vmlinuz,) = sorted((rootfs / "boot").glob("vmlinuz-*"))
        (initrd,) = sorted((rootfs / "boot").glob("initrd.img-*"))
        shutil.copyfile(vmlinuz, out / "vmlinuz")
        shutil.copyfile(initrd, out / "initrd.img")
        used = int(
            subprocess.run(
                ["du", "-sb", str(rootfs)], capture_output=True, text=True, check=True
            ).stdout.split()[0]
        )
        size_mb = max(1024, (used * 2 >> 20) // 64 * 64 + 64)
        disk = out / "disk.img"
        disk.unlink(missing_ok=True)
        run(
            "mke2fs",
            "-q",
            "-t",
            "ext4",
            "-E",
            "hash_seed=00000000-0000-0000-0000-000000000000",
            "-U",
            "00000000-0000-0000-0000-000000000001",
            "-d",
            str(rootfs),
            str(disk),
            f"{size_mb}M",
            env=env,
        )
        meta = {
            "name": name,
            "kind": kind,
            "memory_mb": memory_mb,
            "append": append,
            "packages": [
                "mmdebstrap minbase bookworm",
                "systemd-sysv",
                "udev",
                "kmod",
                "linux-image-cloud-amd64",
                "initramfs-tools",
            ],
            "debs": installed_versions(rootfs),
            "kernel_release": vmlinuz.name.removeprefix("vmlinuz-"),
        }
        meta["packages"] += extra_packages
        if vcpus > 1:
            meta["vcpus"] = vcpus
        if dropins:
            meta["systemd_dropins"] = dict(sorted(dropins.items()))
        (out / "guest.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{name} guest in {out}")


def build_debian_init_on_free(out: Path) -> None:
    build_debian(
        out,
        name="debian-12-init-on-free",
        kind="debian 12 multi-user.target, init_on_free=1 (kernel zeroes all free memory)",
        append=DEBIAN_APPEND + " init_on_free=1",
    )


def build_debian_tomcat(out: Path) -> None:
    build_debian(
        out,
        name="debian-12-tomcat",
        kind=f"debian 12 + tomcat10 (OpenJDK 17, {TOMCAT_HEAP} heap pre-touched) until it serves",
        memory_mb=1024,
        extra_packages=("tomcat10", "curl"),
        poweroff_unit=TOMCAT_POWEROFF_UNIT,
        dropins={"tomcat10.service": TOMCAT_DROPIN},
    )


def build_debian_smp(vcpus: int) -> Callable[[Path], None]:
    def build(out: Path) -> None:
        build_debian(
            out,
            name=f"debian-12-smp{vcpus}",
            kind=f"debian 12 systemd multi-user.target, {vcpus} vCPUs",
            vcpus=vcpus,
        )

    return build


BUILDERS: dict[str, Callable[[Path], None]] = {
    "busybox": build_busybox,
    "busybox-smp2": build_busybox_smp2,
    "debian-12": build_debian,
    "debian-12-init-on-free": build_debian_init_on_free,
    "debian-12-tomcat": build_debian_tomcat,
    "debian-12-smp2": build_debian_smp(2),
    "debian-12-smp4": build_debian_smp(4),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("guest", choices=sorted(BUILDERS))
    ap.add_argument("--out", type=Path, default=None, help="folder (default build/guests/GUEST)")
    a = ap.parse_args()
    out = a.out or Path(__file__).resolve().parent.parent / "build" / "guests" / a.guest
    BUILDERS[a.guest](out)


if __name__ == "__main__":
    main()
