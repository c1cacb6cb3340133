"""The shipped guests span what Hyper-V hosts run: each loads, carries the provenance that
lets it be rebuilt and re-recorded, and has the property it is shipped for (docs/GUESTS.md,
"Shipped guests"). Nothing here records or downloads: it reads the shipped trace files."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from test_guests import check_invariants

from vmmem.cli.main import cli
from vmmem.guests import FORMAT, GuestTrace, shipped_names

GIB = 1 << 30
ZEROING = "debian-12-init-on-free"
SERVER = "debian-12-tomcat"
NEW = (ZEROING, SERVER)
SMP = {"debian-12-smp2": 2, "debian-12-smp4": 4}  # recorded with several vCPUs


def test_the_spectrum_is_shipped():
    assert {"busybox", "debian-12", ZEROING, SERVER, *SMP} <= set(shipped_names())


@pytest.mark.parametrize("name", NEW)
def test_a_new_guest_loads_with_its_provenance(name):
    trace = GuestTrace.load(name)
    check_invariants(trace)
    prov = trace.provenance
    image = prov["image"]
    assert prov["name"] == image["name"] == name
    assert trace.memory_size == image["memory_mb"] << 20 == prov["memory_bytes"]
    assert prov["qemu_version"].startswith("QEMU emulator version")
    assert image["kernel_release"].endswith("-cloud-amd64")
    assert f"-append {image['append']}" in prov["qemu_command"]
    assert "root=/dev/vda" in image["append"]
    versions = {d["package"]: d["version"] for d in image["debs"]}
    assert versions[f"linux-image-{image['kernel_release']}"]
    assert versions["systemd"]
    for key in ("kernel", "initrd", "disk_image"):
        assert len(prov[key]["sha256"]) == 64
    assert trace.path.stat().st_size < 20 * 2**20


def test_the_zeroing_boot_touches_nearly_all_of_its_ram():
    zero, plain = GuestTrace.load(ZEROING), GuestTrace.load("debian-12")
    assert "init_on_free=1" in zero.provenance["image"]["append"].split()
    assert "init_on_free=1" not in plain.provenance["image"]["append"]
    assert zero.memory_size == plain.memory_size
    # init_on_free=1 zeroes every page freed to the allocator, all free memory at boot: the
    # kernel writes what the plain boot never touches (38 % of the same RAM).
    assert zero.pages_touched >= 0.95 * zero.memory_pages
    assert zero.pages_written >= 0.95 * zero.memory_pages
    assert plain.pages_touched < 0.5 * plain.memory_pages


def test_the_server_boot_claims_its_heap_when_its_service_starts():
    server, plain = GuestTrace.load(SERVER), GuestTrace.load("debian-12")
    image = server.provenance["image"]
    opts = image["systemd_dropins"]["tomcat10.service"]
    assert "-XX:+AlwaysPreTouch" in opts
    heap = [o for o in opts.replace('"', " ").split() if o.startswith("-Xmx")]
    assert heap and f"-Xms{heap[0][4:]}" in opts, "a fixed heap: -Xms = -Xmx"
    assert heap[0].endswith("m")
    heap_pages = int(heap[0][4:-1]) << 20 >> 12
    versions = {d["package"] for d in image["debs"]}
    assert {"tomcat10", "openjdk-17-jre-headless"} <= versions
    # The pre-touched heap comes on top of what the plain boot touches.
    assert server.pages_touched >= plain.pages_touched + heap_pages
    assert server.pages_touched >= 3 * plain.pages_touched


def test_a_large_vm_is_among_them():
    sizes = {n: GuestTrace.load(n).memory_size for n in shipped_names()}
    assert sizes[SERVER] >= GIB
    assert max(sizes.values()) >= GIB


def test_vmmem_guests_shows_each_with_provenance():
    r = CliRunner().invoke(cli, ["guests", "--json"])
    assert r.exit_code == 0, r.output
    guests = {g["name"]: g for g in json.loads(r.stdout)["guests"]}
    for name in NEW:
        g = guests[name]
        image = g["provenance"]["image"]
        assert g["kind"] == "recorded" and g["memory_size"] == image["memory_mb"] << 20
        assert image["kernel_release"] and image["append"] and image["debs"]
        assert g["provenance"]["qemu_version"]
    r = CliRunner().invoke(cli, ["guests"], env={"COLUMNS": "160"})
    assert r.exit_code == 0
    for name in NEW:
        assert name in r.stdout


@pytest.mark.parametrize("name", list(SMP))
def test_the_debian_boot_with_several_vcpus(name):
    trace, plain = GuestTrace.load(name), GuestTrace.load("debian-12")
    check_invariants(trace)
    prov, image = trace.provenance, trace.provenance["image"]
    assert trace.format == FORMAT and trace.vcpus == SMP[name] == prov["vcpus"] == image["vcpus"]
    assert f"-accel tcg,thread=single -smp {trace.vcpus} " in prov["qemu_command"]
    assert (
        trace.memory_size == plain.memory_size
        and image["append"] == plain.provenance["image"]["append"]
    )
    assert trace.epoch_instructions == plain.epoch_instructions == 1_000_000
    # Every vCPU ran a real share of the boot (Linux schedules work on all of them), and the
    # whole is the one-vCPU boot's size: the same systemd start, spread out.
    assert sum(trace.vcpu_instructions) == trace.instructions
    assert min(trace.vcpu_instructions) > 0.1 * trace.instructions
    assert 0.9 * plain.instructions < trace.instructions < 1.5 * plain.instructions
    assert abs(trace.pages_touched - plain.pages_touched) < 0.1 * plain.pages_touched
    # The same disk reads (the same image, the same units started), issued by every vCPU.
    assert abs(trace.disk_bytes_read - plain.disk_bytes_read) < 0.1 * plain.disk_bytes_read
    assert set(trace.disk_vcpu.tolist()) == set(range(trace.vcpus))
    assert trace.path.stat().st_size < 5 * 2**20


def test_vmmem_guests_shows_each_guests_vcpus():
    r = CliRunner().invoke(cli, ["guests", "--json"])
    guests = {g["name"]: g for g in json.loads(r.stdout)["guests"]}
    assert guests["debian-12"]["vcpus"] == 1
    for name, vcpus in SMP.items():
        assert guests[name]["vcpus"] == vcpus
    assert guests["synthetic-boot"]["vcpus"] is None  # a model: the VM's processor count
    r = CliRunner().invoke(cli, ["guests"], env={"COLUMNS": "200"})
    rows = {
        cells[0]: cells[3]
        for line in r.stdout.splitlines()
        if line.startswith("│") and (cells := [c.strip() for c in line.split("│")[1:]])[0]
    }
    assert rows["debian-12-smp4"] == "4" and rows["busybox"] == "1"
    assert rows["synthetic-boot"] == "model"
