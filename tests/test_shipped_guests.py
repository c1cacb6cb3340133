"""The shipped guests span what Hyper-V hosts run: each loads, carries the provenance that
lets it be rebuilt and re-recorded, and has the property it is shipped for (docs/GUESTS.md,
"Shipped guests"). Nothing here records or downloads: it reads the shipped trace files."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from test_guests import check_invariants

from vmmem.cli.main import cli
from vmmem.guests import GuestTrace, shipped_names

GIB = 1 << 30
ZEROING = "debian-12-init-on-free"
SERVER = "debian-12-tomcat"
NEW = (ZEROING, SERVER)


def test_the_spectrum_is_shipped():
    assert {"busybox", "debian-12", ZEROING, SERVER} <= set(shipped_names())


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
