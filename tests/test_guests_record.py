"""Recording a real boot end to end: build the busybox guest from Debian's packages, boot it
under QEMU TCG with the vmmem plugin, and check the trace (the one slow test, ~20 s)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_guests import check_invariants

from vmmem.cli.main import EXIT_USAGE, cli
from vmmem.errors import RecordError, RecordTimeoutError, SettingsError
from vmmem.guests import FORMAT, GuestTrace
from vmmem.guests.plugin import CFLAGS, compiler, plugin_path, source_dir
from vmmem.guests.record import (
    disk_arrays,
    kernel_release,
    parse_disk_log,
    parse_raw,
    record_boot,
    sha256_file,
)

ROOT = Path(__file__).resolve().parent.parent
QEMU = "qemu-system-x86_64"

needs_qemu = pytest.mark.skipif(
    shutil.which(QEMU) is None or compiler() is None, reason="needs qemu-system-x86 and cc"
)


def build_images(tmp_path_factory: pytest.TempPathFactory, guest: str) -> Path:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("building the busybox guest needs apt-get and dpkg-deb")
    out = tmp_path_factory.mktemp("guest") / guest
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "build_guest_images.py"), guest, "--out",
         str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot build the {guest} guest here: {result.stderr.strip()[-500:]}")
    return out


@pytest.fixture(scope="module")
def busybox_images(tmp_path_factory) -> Path:
    return build_images(tmp_path_factory, "busybox")


@pytest.fixture(scope="module")
def busybox_smp2_images(tmp_path_factory) -> Path:
    return build_images(tmp_path_factory, "busybox-smp2")


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
@pytest.mark.timeout(600)
def test_record_a_boot_of_two_vcpus(busybox_smp2_images, tmp_path):
    trace = record_boot(tmp_path / "bb2.npz", image_dir=busybox_smp2_images, timeout=480)
    check_invariants(trace)
    assert trace.format == FORMAT and trace.name == "busybox-smp2"
    assert "-accel tcg,thread=single -smp 2 " in trace.provenance["qemu_command"]
    # Both vCPUs ran epochs of their own; the boot is the one-vCPU busybox's, in size.
    assert trace.vcpus == 2 and trace.provenance["vcpus"] == 2
    assert sum(trace.vcpu_instructions) == trace.instructions
    for vcpu in (0, 1):
        own = trace.vcpu_epochs(vcpu)
        assert own.size >= 10 and trace.vcpu_instructions[vcpu] > 10**7
        assert own.size == -(-trace.vcpu_instructions[vcpu] // 1_000_000)
    shipped = GuestTrace.load("busybox")
    assert 0.5 * shipped.instructions < trace.instructions < 2 * shipped.instructions
    # vCPU 0 runs the firmware and starts vCPU 1: its first epoch ends first.
    assert trace.epoch_vcpu[0] == 0 and trace.vcpu_epochs(1)[0] > 0
    # Each vCPU touches pages the other never does (its stacks, its per-CPU data).
    pages = [
        set(np.concatenate([trace.epoch(e)[0] for e in trace.vcpu_epochs(v)]).tolist())
        for v in (0, 1)
    ]
    assert len(pages[0] - pages[1]) > 100 and len(pages[1] - pages[0]) > 10
    # /init reads 2 MiB at 8 MiB pinned to vCPU 0 and 2 MiB at 32 MiB pinned to vCPU 1, with
    # direct I/O: every one of those requests is tied to the vCPU that issued it.
    offset = trace.disk_offset.astype(np.int64)
    for vcpu, start in ((0, 8 << 20), (1, 32 << 20)):
        mine = (offset >= start) & (offset < start + (2 << 20))
        assert int(trace.disk_length[mine].sum()) == 2 << 20
        assert set(trace.disk_vcpu[mine].tolist()) == {vcpu}
    for e in trace.disk_epoch.tolist():  # each request lies in an epoch of its vCPU
        assert e in trace.vcpu_epochs(int(trace.epoch_vcpu[e]))


@needs_qemu
@pytest.mark.timeout(600)
def test_the_plugin_refuses_vcpus_on_several_host_threads(busybox_smp2_images, tmp_path):
    # Multi-threaded TCG, QEMU's default here: the second vCPU's first block stops QEMU.
    result = subprocess.run(
        [QEMU, "-accel", "tcg,thread=multi", "-smp", "2", "-m", "128", "-nodefaults",
         "-display", "none", "-no-reboot", "-kernel", str(busybox_smp2_images / "vmlinuz"),
         "-append", "console=ttyS0 panic=-1",
         "-plugin", f"{plugin_path()},out={tmp_path / 't.raw'},ram={128 << 20}"],
        capture_output=True, text=True, timeout=480,
    )  # fmt: skip
    assert result.returncode != 0
    assert "run QEMU with -accel tcg,thread=single" in result.stderr


@pytest.mark.parametrize("vcpus", [0, 65, True, 1.5])
def test_record_boot_checks_its_vcpus(tmp_path, vcpus):
    (tmp_path / "k").write_bytes(b"")
    with pytest.raises(SettingsError, match="vcpus must be an integer from 1 to 64"):
        record_boot(tmp_path / "x.npz", kernel=tmp_path / "k", vcpus=vcpus)


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


def test_disk_requests_are_tied_to_the_vcpu_and_epoch_marker_before_them(tmp_path):
    log = tmp_path / "qemu.log"
    log.write_text(
        "vmmem_vcpu 0 0\n"
        "virtio_blk_handle_read vdev 0x1 req 0x2 sector 0 nsectors 1\n"
        "vmmem_vcpu 0 1\n"
        "vmmem_vcpu 1 0\n"
        "virtio_blk_handle_write vdev 0x1 req 0x3 sector 8 nsectors 16\n"
        "vmmem_vcpu 0 1\n"
        "virtio_blk_handle_read vdev 0x1 req 0x4 sector 2048 nsectors 256\n"
    )
    d = parse_disk_log(log)
    assert d["disk_vcpu"].tolist() == [0, 1, 0] and d["disk_vcpu_epoch"].tolist() == [0, 0, 1]
    assert d["disk_offset"].tolist() == [0, 4096, 2048 * 512]
    assert d["disk_length"].tolist() == [512, 8192, 131072]
    assert d["disk_write"].tolist() == [False, True, False]
    assert d["disk_offset"].dtype == np.uint64
    # The raw file's epochs, in the order they ended: vCPU 0's 0, vCPU 1's 0, vCPU 0's 1.
    path = write_raw(tmp_path / "t.raw", [(0, 0, [1]), (1, 0, [2]), (0, 1, [3])], [1500, 700])
    arrays = disk_arrays(parse_raw(path), d)
    # Grouped by global epoch, in issue order within one: vCPU 0's epoch 1 ended last.
    assert arrays["disk_epoch"].tolist() == [0, 1, 2]
    assert arrays["disk_offset"].tolist() == [0, 4096, 2048 * 512]
    assert arrays["disk_epoch"].dtype == np.uint32


def write_raw(
    path: Path,
    epochs: list[tuple[int, int, list[int]]],
    vcpu_instructions: list[int],
    *,
    magic: bytes = b"VMMTRC2\0",
    version: int = 2,
    totals: bool = True,
    tail: bytes = b"",
) -> Path:
    """A raw file as the plugin writes it (vmmem_trace.c): (vCPU, its own epoch, entries) in
    the order the epochs ended."""
    vcpus = len(vcpu_instructions)
    data = magic + struct.pack("<IIQQII", version, 12, 1000, 1 << 24, vcpus, 0)
    for index, (vcpu, own, entries) in enumerate(epochs):
        data += struct.pack("<IIQII", 0x434F5045, len(entries), index, vcpu, own)
        data += struct.pack(f"<{len(entries)}I", *entries)
    if totals:
        data += struct.pack("<II6Q", 0x4C544F54, vcpus, sum(vcpu_instructions), 9, 3, 0, 0,
                            len(epochs))  # fmt: skip
        data += struct.pack(f"<{vcpus}Q", *vcpu_instructions)
    path.write_bytes(data + tail)
    return path


def test_the_raw_file_is_read_per_vcpu(tmp_path):
    path = write_raw(
        tmp_path / "t.raw", [(0, 0, [1, 2 | 1 << 31]), (1, 0, [7]), (1, 1, []), (0, 1, [3])],
        [1200, 1800],
    )  # fmt: skip
    raw = parse_raw(path)
    assert raw.epoch_offsets.tolist() == [0, 2, 3, 3, 4]
    assert raw.entries.tolist() == [1, 2 | 1 << 31, 7, 3]
    assert raw.epoch_vcpu.tolist() == [0, 1, 1, 0] and raw.vcpu_epoch.tolist() == [0, 0, 1, 1]
    assert raw.vcpu_instructions == [1200, 1800] and raw.totals["instructions"] == 3000
    assert raw.totals["epoch_instructions"] == 1000 and raw.totals["epochs"] == 4
    assert raw.global_epoch(np.array([1, 0]), np.array([1, 0])).tolist() == [2, 0]


@pytest.mark.parametrize(
    "kind, match",
    [
        ("magic", "not a vmmem_trace raw file of version 2"),
        ("version", "raw version 3"),
        ("order", r"epoch 1 \(vCPU 0's 0\) out of order"),
        ("vcpu", r"epoch 0 \(vCPU 2's 0\) out of order"),
        ("no totals", "no totals record: QEMU did not exit cleanly"),
        ("tag", "unknown record tag 0x99"),
    ],
)
def test_a_damaged_raw_file_is_an_error(tmp_path, kind, match):
    epochs = [(0, 0, [1]), (0, 0 if kind == "order" else 1, [2])]
    if kind == "vcpu":
        epochs = [(2, 0, [1])]
    path = write_raw(
        tmp_path / "t.raw", epochs, [1500, 10],
        magic=b"VMMTRC1\0" if kind == "magic" else b"VMMTRC2\0",
        version=3 if kind == "version" else 2,
        totals=kind != "no totals",
        tail=struct.pack("<II", 0x99, 0) if kind == "tag" else b"",
    )  # fmt: skip
    with pytest.raises(RecordError, match=match):
        parse_raw(path)


def test_a_vcpu_that_never_ran_is_an_error(tmp_path):
    # Under SeaBIOS it cannot happen (the firmware starts every vCPU: an AP the kernel never
    # starts, with nosmp, still runs about 930 instructions); without firmware it could.
    raw = parse_raw(write_raw(tmp_path / "t.raw", [(0, 0, [1]), (1, 0, [])], [1500, 0]))
    with pytest.raises(RecordError, match="never ran vCPU 1 of its 2"):
        raw.check_every_vcpu_ran()


def test_a_disk_request_in_an_epoch_the_raw_file_lacks_is_an_error(tmp_path):
    raw = parse_raw(write_raw(tmp_path / "t.raw", [(0, 0, [1]), (1, 0, [2])], [5, 5]))
    log = tmp_path / "qemu.log"
    log.write_text("vmmem_vcpu 1 3\nvirtio_blk_handle_read vdev 0x1 req 0x2 sector 0 nsectors 1\n")
    with pytest.raises(RecordError, match="vCPU 1's epoch 3, which the raw trace does not hold"):
        disk_arrays(raw, parse_disk_log(log))


def test_the_cli_takes_vcpus_from_1_to_64(tmp_path):
    for bad in ("0", "65"):
        r = CliRunner().invoke(
            cli, ["record-boot", str(tmp_path / "x.npz"), "--image-dir", str(tmp_path),
                  "--vcpus", bad],
        )  # fmt: skip
        assert r.exit_code == EXIT_USAGE and "--vcpus" in r.stderr, r.output
    assert not (tmp_path / "x.npz").exists()
