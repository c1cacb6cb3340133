"""Record a real guest boot under QEMU TCG into a vmmem guest trace (docs/GUESTS.md).

QEMU runs one vCPU under TCG with the vmmem_trace plugin, which writes the guest's
guest-physical 4 KiB page accesses in epochs of a fixed number of instructions to a raw
file, and marks each epoch's start in QEMU's log. The guest's disk is a virtio-blk device
with ioeventfd off, so QEMU handles each request in the vCPU thread while the guest's notify
instruction executes: the virtio_blk_handle_read/write trace events then land in the log
between the markers of the epoch that issued them. The disk image is attached with
snapshot=on, so a recording never changes it.

The guest must power itself off when its boot reaches its target and print the target
marker on its serial console first (the images of tools/build_guest_images.py do); a guest
that does not within `timeout` seconds is killed and RecordTimeoutError raised.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RecordError, RecordTimeoutError, SettingsError
from ..sizes import MB, SizeLike, parse_size
from . import plugin as _plugin
from .trace import FORMAT, PAGE_SIZE, GuestTrace

__all__ = [
    "TARGET_MARKER",
    "kernel_release",
    "parse_raw",
    "parse_disk_log",
    "record_boot",
    "sha256_file",
]

TARGET_MARKER = "vmmem-guest: boot reached its target"
DISK_EVENTS = ("virtio_blk_handle_read", "virtio_blk_handle_write")
_WRITE_BIT = np.uint32(0x80000000)
_TAG_EPOCH, _TAG_TOTALS = 0x434F5045, 0x4C544F54
_DISK_RE = re.compile(r"^(virtio_blk_handle_(read|write)) .*\bsector (\d+) nsectors (\d+)")
_EPOCH_RE = re.compile(r"^vmmem_epoch (\d+)$")


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_raw(path: str | os.PathLike[str]) -> tuple[dict[str, int], np.ndarray, np.ndarray]:
    """Read the plugin's raw file: (totals, epoch_offsets int64[E+1], entries uint32[N]).

    Entries keep the plugin's write bit (0x80000000). Epoch records arrive in order 0..E-1.
    """
    data = np.fromfile(os.fspath(path), dtype=np.uint8)
    if data.size < 32 or bytes(data[:8]) != b"VMMTRC1\0":
        raise RecordError(f"{path}: not a vmmem_trace raw file (was the plugin loaded?)")
    version, page_shift = data[8:16].view("<u4")
    epoch_insns, ram_bytes = data[16:32].view("<u8")
    if version != 1 or page_shift != 12:
        raise RecordError(f"{path}: raw version {version}, page shift {page_shift} not known")
    pos = 32
    offsets = [0]
    chunks = []
    totals: dict[str, int] | None = None
    while pos < data.size:
        tag, n = (int(v) for v in data[pos : pos + 8].view("<u4"))
        if tag == _TAG_EPOCH:
            (index,) = data[pos + 8 : pos + 16].view("<u8")
            if index != len(offsets) - 1:
                raise RecordError(f"{path}: epoch {index} out of order")
            chunks.append(data[pos + 16 : pos + 16 + 4 * n].view("<u4"))
            offsets.append(offsets[-1] + n)
            pos += 16 + 4 * n
        elif tag == _TAG_TOTALS:
            vals = data[pos + 8 : pos + 56].view("<u8")
            names = ("instructions", "accesses", "stores", "io_accesses", "outside_ram", "epochs")
            totals = {k: int(v) for k, v in zip(names, vals, strict=True)}
            pos += 56
        else:
            raise RecordError(f"{path}: unknown record tag {tag:#x} at byte {pos}")
    if totals is None:
        raise RecordError(f"{path}: no totals record: QEMU did not exit cleanly")
    totals["epoch_instructions"] = int(epoch_insns)
    totals["ram_bytes"] = int(ram_bytes)
    entries = np.concatenate(chunks) if chunks else np.zeros(0, np.uint32)
    return totals, np.asarray(offsets, np.int64), entries.astype(np.uint32)


def parse_disk_log(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The disk requests in QEMU's log, each tied to the epoch whose marker precedes it."""
    epoch = 0
    rows: list[tuple[int, int, int, bool]] = []
    with open(path, errors="replace") as fh:
        for line in fh:
            line = line.rstrip("\n")
            m = _EPOCH_RE.match(line)
            if m:
                epoch = int(m.group(1))
                continue
            m = _DISK_RE.match(line)
            if m:
                rows.append((epoch, int(m.group(3)) * 512, int(m.group(4)) * 512, m[2] == "write"))
    arr = np.array(rows, dtype=np.int64).reshape(-1, 4)
    return {
        "disk_epoch": arr[:, 0].astype(np.uint32),
        "disk_offset": arr[:, 1].astype(np.uint64),
        "disk_length": arr[:, 2].astype(np.uint32),
        "disk_write": arr[:, 3].astype(bool),
    }


def _qemu_version(qemu: str) -> str:
    out = subprocess.run([qemu, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0].strip() if out.stdout else "unknown"


def kernel_release(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """(release, banner) from an x86 bzImage's setup header, e.g. ("6.1.0-57-cloud-amd64",
    "6.1.0-57-cloud-amd64 (debian-kernel@...) #1 SMP ... Debian 6.1.192-3 (...)"); None if the
    file is not a bzImage that names its version. Read from the kernel itself, so the
    provenance says what booted whatever a guest.json claims."""
    with open(path, "rb") as fh:
        head = fh.read(0x10000)
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        return None
    (pointer,) = struct.unpack_from("<H", head, 0x20E)
    if pointer == 0 or 0x200 + pointer >= len(head):
        return None
    banner = head[0x200 + pointer :].split(b"\0", 1)[0].decode("ascii", "replace").strip()
    return (banner.split()[0], banner) if banner else None


def _file_record(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def record_boot(
    out: str | os.PathLike[str],
    *,
    image_dir: str | os.PathLike[str] | None = None,
    kernel: str | os.PathLike[str] | None = None,
    initrd: str | os.PathLike[str] | None = None,
    disk: str | os.PathLike[str] | None = None,
    memory: SizeLike | None = None,
    append: str | None = None,
    name: str | None = None,
    kind: str | None = None,
    epoch_instructions: int = 1_000_000,
    timeout: float = 600.0,
    qemu: str = "qemu-system-x86_64",
    target_marker: str | None = TARGET_MARKER,
) -> GuestTrace:
    """Boot a guest under QEMU TCG with the vmmem plugin and write its guest trace to `out`
    (a compressed .npz, docs/GUESTS.md). Returns the trace, loaded from `out`.

    image_dir: a folder made by tools/build_guest_images.py (vmlinuz, initrd.img, disk.img,
    guest.json); kernel/initrd/disk/memory/append/name/kind override what it says.
    memory: the VM's RAM (default guest.json's memory_mb, else 512MB). target_marker: a line
    the guest prints on its serial console when its boot reaches its target (None: any clean
    power-off counts). Raises RecordError (QEMU or cc missing, QEMU failed, target not
    reached) or RecordTimeoutError (no power-off within `timeout` s; QEMU is killed).
    """
    meta: dict[str, Any] = {}
    if image_dir is not None:
        folder = Path(image_dir)
        meta_file = folder / "guest.json"
        if meta_file.exists():
            meta = json.loads(meta_file.read_text())
        kernel = kernel or folder / "vmlinuz"
        if initrd is None and (folder / "initrd.img").exists():
            initrd = folder / "initrd.img"
        if disk is None and (folder / "disk.img").exists():
            disk = folder / "disk.img"
    if kernel is None:
        raise SettingsError("record_boot needs a kernel (or an image_dir holding vmlinuz)")
    kernel_p = Path(kernel)
    initrd_p = Path(initrd) if initrd is not None else None
    disk_p = Path(disk) if disk is not None else None
    for p in (kernel_p, initrd_p, disk_p):
        if p is not None and not p.is_file():
            raise SettingsError(f"record_boot: {p} is not a file")
    mem_bytes = (
        parse_size(memory, "memory") if memory is not None else meta.get("memory_mb", 512) * MB
    )
    if mem_bytes <= 0 or mem_bytes % MB or mem_bytes > 3 * 1024 * MB:
        raise SettingsError("record_boot: memory must be whole MB, at most 3 GB (below PCI hole)")
    if not isinstance(epoch_instructions, int) or epoch_instructions < 1000:
        raise SettingsError("record_boot: epoch_instructions must be an integer >= 1000")
    append = append if append is not None else meta.get("append", "console=ttyS0 panic=-1")
    name = name or meta.get("name") or kernel_p.stem
    kind = kind or meta.get("kind") or "recorded boot"
    if shutil.which(qemu) is None:
        raise RecordError(f"recording needs QEMU ({qemu}); install qemu-system-x86")
    so = _plugin.plugin_path()

    out_p = Path(out)
    with tempfile.TemporaryDirectory(prefix="vmmem-record-") as tmp:
        raw, log, console = Path(tmp, "trace.raw"), Path(tmp, "qemu.log"), Path(tmp, "console")
        args = [
            "-accel", "tcg", "-smp", "1", "-m", str(mem_bytes // MB),
            "-nodefaults", "-display", "none", "-no-reboot",
            "-serial", f"file:{console}",
            "-kernel", str(kernel_p),
        ]  # fmt: skip
        if initrd_p is not None:
            args += ["-initrd", str(initrd_p)]
        args += ["-append", append]
        if disk_p is not None:
            args += [
                "-drive", f"file={disk_p},format=raw,if=none,id=vd0,snapshot=on",
                "-device", "virtio-blk-pci,drive=vd0,ioeventfd=off",
            ]  # fmt: skip
        args += [
            "-plugin", f"{so},out={raw},ram={mem_bytes},epoch={epoch_instructions}",
            "-d", "plugin," + ",".join(f"trace:{e}" for e in DISK_EVENTS),
            "-D", str(log),
        ]  # fmt: skip
        cmd = [qemu, *args]
        env = dict(os.environ, TMPDIR=tmp)  # snapshot=on's overlay goes here, and goes with it
        t0 = time.monotonic()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=env,
        )  # fmt: skip
        try:
            qemu_out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise RecordTimeoutError(
                f"the guest {name!r} did not power off within {timeout:g} s; QEMU was killed. "
                f"Console tail:\n{_tail(console)}"
            ) from None
        seconds = time.monotonic() - t0
        text = console.read_text(errors="replace") if console.exists() else ""
        if proc.returncode != 0:
            raise RecordError(
                f"QEMU exited with status {proc.returncode}:\n"
                f"{qemu_out.decode(errors='replace').strip()[-2000:]}\nConsole tail:\n"
                f"{_tail(console)}"
            )
        if target_marker and target_marker not in text:
            raise RecordError(
                f"the guest {name!r} powered off without reaching its target (no "
                f"{target_marker!r} on its console). Console tail:\n{_tail(console)}"
            )
        totals, offsets, entries = parse_raw(raw)
        disk_arrays = parse_disk_log(log) if disk_p is not None else parse_disk_log(os.devnull)
        pages = entries & ~_WRITE_BIT
        written = (entries & _WRITE_BIT) != 0
        touched = np.unique(pages)
        pages_written = np.unique(pages[written])
        d_len = disk_arrays["disk_length"].astype(np.int64)
        d_w = disk_arrays["disk_write"]

        def shown(p: Path) -> str:  # no temp or host paths in the provenance
            s = str(p)
            for full, short in (
                (str(raw), "trace.raw"), (str(log), "qemu.log"), (str(console), "console"),
                (str(so), "vmmem_trace.so"), (str(kernel_p), kernel_p.name),
                (str(disk_p), disk_p.name if disk_p else ""),
                (str(initrd_p), initrd_p.name if initrd_p else ""),
            ):  # fmt: skip
                if full and full != "None":
                    s = s.replace(full, short)
            return s

        release = kernel_release(kernel_p)
        provenance = {
            "format": FORMAT,
            "name": name,
            "kind": kind,
            "memory_bytes": mem_bytes,
            "page_size": PAGE_SIZE,
            "epoch_instructions": epoch_instructions,
            "epochs": int(offsets.size - 1),
            "instructions": totals["instructions"],
            "vcpus": 1,
            "vcpu_instructions": [totals["instructions"]],
            "accesses": totals["accesses"],
            "stores": totals["stores"],
            "io_accesses": totals["io_accesses"],
            "outside_ram_accesses": totals["outside_ram"],
            "entries": int(entries.size),
            "pages_touched": int(touched.size),
            "pages_written": int(pages_written.size),
            "disk_size": disk_p.stat().st_size if disk_p else 0,
            "disk_requests": int(d_len.size),
            "disk_bytes_read": int(d_len[~d_w].sum()),
            "disk_bytes_written": int(d_len[d_w].sum()),
            "qemu_version": _qemu_version(qemu),
            # What booted, from the kernel file, and the packages the images were built from
            # (guest.json's "debs": each .deb's name and version), so a trace says which
            # versions it measured after Debian has moved on.
            "kernel_release": release[0] if release else meta.get("kernel_release"),
            "kernel_version": release[1] if release else None,
            "packages": list(meta.get("debs", [])),
            "qemu_command": " ".join(shown(Path(a)) for a in cmd),
            "kernel": _file_record(kernel_p),
            "initrd": _file_record(initrd_p),
            "disk_image": _file_record(disk_p),
            "image": meta,
            "plugin_sha256": sha256_file(so),
            "recorded_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "recording_seconds": round(seconds, 2),
        }
        out_p.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out_p.with_name(out_p.name + ".part.npz")
        arrays: dict[str, Any] = {
            "format": np.array(FORMAT),
            "epoch_offsets": offsets,
            "pages": pages.astype(np.uint32),
            "written": written,
            "epoch_vcpu": np.zeros(offsets.size - 1, np.uint16),
            "provenance": np.array(json.dumps(provenance, sort_keys=True)),
            **disk_arrays,
        }
        np.savez_compressed(tmp_out, **arrays)
        os.replace(tmp_out, out_p)
    return GuestTrace.load(out_p)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no console output)"
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    return "\n".join(text.strip().splitlines()[-lines:]) or "(no console output)"


def main(argv: list[str] | None = None) -> None:
    """python -m vmmem.guests.record OUT.npz --image-dir DIR [--timeout S] [--epoch N]"""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m vmmem.guests.record", description=__doc__)
    ap.add_argument("out")
    ap.add_argument("--image-dir", required=True)
    ap.add_argument("--memory", default=None, help="VM RAM, e.g. 512MB (default: guest.json)")
    ap.add_argument("--epoch", type=int, default=1_000_000, help="instructions per epoch")
    ap.add_argument("--timeout", type=float, default=600.0)
    a = ap.parse_args(argv)
    trace = record_boot(
        a.out,
        image_dir=a.image_dir,
        memory=a.memory,
        epoch_instructions=a.epoch,
        timeout=a.timeout,
    )
    p = trace.provenance
    print(
        f"{trace.name}: {trace.instructions:,} instructions in {trace.epochs} epochs, "
        f"{trace.pages_touched:,} pages touched, {trace.pages_written:,} written, "
        f"{trace.disk_bytes_read:,} disk bytes read; {p['recording_seconds']} s -> {a.out}"
    )


if __name__ == "__main__":
    main()
