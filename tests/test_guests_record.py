"""Recording a real boot end to end: build the busybox guest from Debian's packages, boot it
under QEMU TCG with the vmmem plugin, and check the trace (the one slow test, ~20 s)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_guests import check_invariants

from vmmem.errors import RecordError, RecordTimeoutError, SettingsError
from vmmem.guests import GuestTrace
from vmmem.guests.plugin import CFLAGS, compiler, plugin_path, source_dir
from vmmem.guests.record import kernel_release, parse_disk_log, record_boot, sha256_file

ROOT = Path(__file__).resolve().parent.parent
QEMU = "qemu-system-x86_64"

needs_qemu = pytest.mark.skipif(
    shutil.which(QEMU) is None or compiler() is None, reason="needs qemu-system-x86 and cc"
)


@pytest.fixture(scope="module")
def busybox_images(tmp_path_factory) -> Path:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("building the busybox guest needs apt-get and dpkg-deb")
    out = tmp_path_factory.mktemp("guest") / "busybox"
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "build_guest_images.py"), "busybox", "--out",
         str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot build the busybox guest here: {result.stderr.strip()[-500:]}")
    return out


def test_plugin_compiles_without_warnings(tmp_path):
    cc = compiler()
    if cc is None:
        pytest.skip("no C compiler")
    flags = [f for f in CFLAGS if f != "-Werror"]
    result = subprocess.run(
        [cc, *flags, f"-I{source_dir()}", "-o", str(tmp_path / "p.so"),
         str(source_dir() / "vmmem_trace.c")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_plugin_is_built_once_into_the_cache_and_rebuilt_when_forced(tmp_path, monkeypatch):
    if compiler() is None:
        pytest.skip("no C compiler")
    monkeypatch.setenv("VMMEM_CACHE_DIR", str(tmp_path / "cache"))
    first = plugin_path()
    assert first.parent == tmp_path / "cache" and first.name.startswith("vmmem_trace-")
    mtime = first.stat().st_mtime_ns
    assert plugin_path() == first and first.stat().st_mtime_ns == mtime, "reused"
    assert plugin_path(rebuild=True) == first and first.stat().st_mtime_ns != mtime
    assert b"qemu_plugin_install" in first.read_bytes()
    assert [p.name for p in first.parent.iterdir()] == [first.name], "no temp files left"


# QEMU's TCG boots at the speed of the CPU it gets: ~10 s on a quiet core, several times that
# beside a CPU hog. The deadlines only catch a hang.
@needs_qemu
@pytest.mark.timeout(600)
def test_record_the_busybox_boot(busybox_images, tmp_path):
    out = tmp_path / "bb.npz"
    trace = record_boot(out, image_dir=busybox_images, timeout=480)
    assert out.exists() and isinstance(trace, GuestTrace)
    check_invariants(trace)
    assert trace.name == "busybox" and trace.memory_size == 256 * 2**20
    # A Linux boot runs ~1.5 G instructions here and touches ~30 k pages; the init script
    # reads 4 MiB of the disk with dd.
    assert 5e8 < trace.instructions < 1e10
    assert 10_000 < trace.pages_touched < trace.memory_pages
    assert trace.disk_bytes_read >= 4 * 2**20 and trace.disk_bytes_written == 0
    assert trace.epochs == -(-trace.instructions // 1_000_000)
    # The images are built from Debian's current packages, which move on by themselves (a new
    # kernel point release): compare what must hold across versions, never bytes. The shipped
    # trace was recorded the same way, so the boot's size stays within a band of it.
    shipped = GuestTrace.load("busybox")
    assert 0.5 * shipped.instructions < trace.instructions < 2 * shipped.instructions
    assert abs(trace.pages_touched - shipped.pages_touched) < 0.25 * shipped.pages_touched
    assert shipped.disk_bytes_read <= trace.disk_bytes_read + 2**20  # init's dd, the same 4 MiB
    assert trace.disk_bytes_read <= 2 * shipped.disk_bytes_read
    # The provenance names the versions actually used: every .deb (name and version, from the
    # package itself), the kernel release (from the kernel file), and QEMU's version.
    p = trace.provenance
    meta = json.loads((busybox_images / "guest.json").read_text())
    assert p["kernel"]["sha256"] == sha256_file(busybox_images / "vmlinuz")
    assert p["initrd"]["sha256"] == sha256_file(busybox_images / "initrd.img")
    assert p["packages"] == meta["debs"]
    assert {d["package"] for d in p["packages"]} == {
        "busybox-static",
        f"linux-image-{p['kernel_release']}",
    }
    assert all(d["version"] and d["architecture"] == "amd64" for d in p["packages"])
    assert p["kernel_release"] == meta["kernel_release"]
    assert p["kernel_version"].startswith(p["kernel_release"] + " ")
    kernel_deb = next(d for d in p["packages"] if d["package"].startswith("linux-image-"))
    assert kernel_deb["version"] in p["kernel_version"]  # "... Debian 6.1.192-3 (...)"
    qemu = subprocess.run([QEMU, "--version"], capture_output=True, text=True, check=True)
    assert p["qemu_version"] == qemu.stdout.splitlines()[0].strip()
    assert "/tmp" not in trace.provenance["qemu_command"]


@needs_qemu
def test_a_guest_that_never_powers_off_times_out(busybox_images, tmp_path):
    # Without an initramfs the kernel panics looking for a root; panic=0 waits forever.
    with pytest.raises(RecordTimeoutError, match="did not power off within"):
        record_boot(
            tmp_path / "x.npz", kernel=busybox_images / "vmlinuz", memory="128MB",
            append="console=ttyS0 panic=0", timeout=2,
        )  # fmt: skip
    assert not (tmp_path / "x.npz").exists()


@needs_qemu
@pytest.mark.timeout(600)
def test_a_guest_that_dies_before_its_target_is_an_error(busybox_images, tmp_path):
    with pytest.raises(RecordError, match="without reaching its target"):
        record_boot(
            tmp_path / "x.npz", kernel=busybox_images / "vmlinuz", memory="128MB",
            append="console=ttyS0 panic=-1", timeout=480,
        )  # fmt: skip


def test_record_boot_checks_its_arguments(tmp_path):
    with pytest.raises(SettingsError, match="needs a kernel"):
        record_boot(tmp_path / "x.npz")
    with pytest.raises(SettingsError, match="is not a file"):
        record_boot(tmp_path / "x.npz", kernel=tmp_path / "missing")
    (tmp_path / "k").write_bytes(b"")
    with pytest.raises(SettingsError, match="whole MB"):
        record_boot(tmp_path / "x.npz", kernel=tmp_path / "k", memory="1000KB")
    with pytest.raises(RecordError, match="needs QEMU"):
        record_boot(tmp_path / "x.npz", kernel=tmp_path / "k", qemu="no-such-qemu")


def test_kernel_release_is_read_from_the_bzimage_header(tmp_path):
    head = bytearray(0x400)
    head[0x202:0x206] = b"HdrS"
    head[0x20E:0x210] = (0x100).to_bytes(2, "little")
    head[0x300:0x340] = b"6.1.0-99-cloud-amd64 (x@y) #1 SMP Debian 6.1.999-1\0".ljust(0x40, b"\0")
    (tmp_path / "k").write_bytes(bytes(head))
    assert kernel_release(tmp_path / "k") == (
        "6.1.0-99-cloud-amd64",
        "6.1.0-99-cloud-amd64 (x@y) #1 SMP Debian 6.1.999-1",
    )
    (tmp_path / "n").write_bytes(b"not a kernel")
    assert kernel_release(tmp_path / "n") is None


def test_disk_requests_are_tied_to_the_epoch_marker_before_them(tmp_path):
    log = tmp_path / "qemu.log"
    log.write_text(
        "virtio_blk_handle_read vdev 0x1 req 0x2 sector 0 nsectors 1\n"
        "vmmem_epoch 1\n"
        "vmmem_epoch 2\n"
        "virtio_blk_handle_write vdev 0x1 req 0x3 sector 8 nsectors 16\n"
        "virtio_blk_handle_read vdev 0x1 req 0x4 sector 2048 nsectors 256\n"
    )
    d = parse_disk_log(log)
    assert d["disk_epoch"].tolist() == [0, 2, 2]
    assert d["disk_offset"].tolist() == [0, 4096, 2048 * 512]
    assert d["disk_length"].tolist() == [512, 8192, 131072]
    assert d["disk_write"].tolist() == [False, True, False]
    assert d["disk_offset"].dtype == np.uint64
