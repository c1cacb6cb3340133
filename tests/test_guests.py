"""Guest traces: the shipped ones are well formed, list as profiles, and replay through the
core exactly as an independent LRU model predicts; the replay's paging and disk I/O reach
the device."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
from conftest import settled_delta, small_ext4

import vmmem
from vmmem import devices
from vmmem.errors import GuestTraceError, SettingsError
from vmmem.guests import (
    DEFAULT_GUEST_IPS,
    SYNTHETIC_BOOT,
    GuestTrace,
    list_guests,
    map_pages,
    replay_epochs,
    shipped_names,
)
from vmmem.vdisk import VirtualDisk

PAGE = 4096


def check_invariants(trace: GuestTrace) -> None:
    """What every guest trace must satisfy (docs/GUESTS.md)."""
    off = trace.epoch_offsets
    assert off[0] == 0 and off[-1] == trace.pages.size == trace.written.size
    assert np.all(np.diff(off) >= 0), "epoch offsets must not decrease"
    assert trace.epochs == trace.provenance["epochs"]
    # Each vCPU's epochs but its last are whole, its last not empty (one vCPU: the boot's).
    assert sum(trace.vcpu_instructions) == trace.instructions
    for vcpu, count in enumerate(trace.vcpu_instructions):
        own = trace.vcpu_epochs(vcpu).size
        assert trace.epoch_instructions * (own - 1) < count <= trace.epoch_instructions * own
    assert trace.pages.dtype == np.uint32 and trace.written.dtype == np.bool_
    assert int(trace.pages.max()) < trace.memory_pages, "every page below the VM's memory"
    for e in range(trace.epochs):  # within an epoch each page once, in first-touch order
        pages, _ = trace.epoch(e)
        assert np.unique(pages).size == pages.size
    touched = set(np.unique(trace.pages).tolist())
    written = set(np.unique(trace.pages[trace.written]).tolist())
    assert written <= touched, "writes within accesses"
    assert trace.pages_touched == len(touched) == trace.provenance["pages_touched"]
    assert trace.pages_written == len(written) == trace.provenance["pages_written"]
    assert 0 < trace.pages_written < trace.pages_touched
    if trace.disk_requests:
        assert np.all(np.diff(trace.disk_epoch.astype(np.int64)) >= 0), "disk epochs in order"
        assert int(trace.disk_epoch.max()) < trace.epochs
        end = trace.disk_offset.astype(np.int64) + trace.disk_length
        assert int(end.max()) <= trace.disk_size, "disk requests within the disk"
        assert np.all(trace.disk_length > 0)
    assert trace.disk_bytes_read == trace.provenance["disk_bytes_read"]


def test_busybox_is_shipped():
    assert "busybox" in shipped_names()


@pytest.mark.parametrize("name", shipped_names())
def test_shipped_traces_are_well_formed(name):
    trace = GuestTrace.load(name)
    check_invariants(trace)
    prov = trace.provenance
    assert prov["qemu_version"].startswith("QEMU emulator version")
    for key in ("kernel", "disk_image"):
        assert len(prov[key]["sha256"]) == 64
    assert trace.path.stat().st_size < 20 * 2**20
    assert "/tmp" not in prov["qemu_command"] and "/work" not in prov["qemu_command"]


def test_list_guests_shows_recorded_and_synthetic():
    from vmmem.lab import guest_profiles

    assert SYNTHETIC_BOOT not in {g.name for g in list_guests()}
    guests = {g.name: g for g in guest_profiles("512MB")}
    models = {"windows-model", "windows-model-zeroing"}
    assert set(shipped_names()) | {SYNTHETIC_BOOT} | models == set(guests)
    synth = guests[SYNTHETIC_BOOT].to_dict()
    assert synth["kind"] == "synthetic" and synth["pages_touched"] == 512 * 256
    assert synth["guest_cpu_seconds"] == pytest.approx(512 * 256 * 50e-6)
    # It reads as much as the recorded Debian boot, per MB of Startup RAM.
    assert abs(synth["disk_bytes_read"] - guests["debian-12"].disk_bytes_read) < 32768
    bb = guests["busybox"].to_dict()
    assert bb["kind"] == "recorded" and bb["instructions"] > 10**9
    assert bb["guest_cpu_seconds"] == pytest.approx(bb["instructions"] / DEFAULT_GUEST_IPS)
    assert bb["provenance"]["kernel"]["sha256"]


def test_load_errors():
    with pytest.raises(GuestTraceError, match="no shipped guest named"):
        GuestTrace.load("no-such-guest")


def test_page_mapping_rules():
    pages = np.array([0, 5, 1000, 4095], np.uint32)
    assert map_pages(pages, 4096, 8192) is pages  # a larger VM keeps every number
    assert map_pages(pages, 4096, 1000).tolist() == [0, 5, 0, 95]
    assert map_pages(pages, 4096, 1024, "scale").tolist() == [0, 1, 250, 1023]
    with pytest.raises(SettingsError):
        map_pages(pages, 4096, 1000, "squash")


def lru_model(pages: np.ndarray, writes: np.ndarray, frames: int) -> dict[str, int]:
    """An exact LRU of `frames` frames with the core's paging rules: a fault reads a page in
    if the file holds it, else zero-fills; evicting a dirty page writes it out, a clean one
    is dropped."""
    resident: OrderedDict[int, bool] = OrderedDict()  # page -> dirty
    in_file: set[int] = set()
    c = dict.fromkeys(("hits", "page_ins", "zero_fills", "page_outs", "clean_drops"), 0)
    for p, w in zip(pages.tolist(), writes.tolist(), strict=True):
        if p in resident:
            c["hits"] += 1
            resident.move_to_end(p)
            resident[p] = resident[p] or w
            continue
        if len(resident) == frames:
            victim, dirty = resident.popitem(last=False)
            if dirty:
                c["page_outs"] += 1
                in_file.add(victim)
            else:
                c["clean_drops"] += 1
        c["page_ins" if p in in_file else "zero_fills"] += 1
        resident[p] = w
    return c


def test_replay_matches_an_lru_model_miss_for_miss(tmp_path):
    """The boot's last 200 epochs (user space: init, dd; a mix of hits and misses), folded
    into a 64 MB VM with 512 frames."""
    trace = GuestTrace.load("busybox")
    vm_size, frames, start = 64 * 2**20, 512, trace.epochs - 200
    seen: list[int] = []
    with (
        vmmem.FramePool(frames * PAGE) as pool,
        vmmem.GuestMemory(pool, vm_size, frame_limit=frames, paging_dir=tmp_path) as mem,
    ):
        result = replay_epochs(mem, trace, start=start, on_epoch=lambda p: seen.append(p.epoch))
        s = mem.stats
    assert seen == list(range(start, trace.epochs)) and result.epochs == 200
    a = int(trace.epoch_offsets[start])
    pages = map_pages(trace.pages[a:], trace.memory_pages, vm_size // PAGE)
    model = lru_model(pages, trace.written[a:], frames)
    assert s.accesses == result.entries == trace.pages.size - a
    assert model["page_outs"] > 1000 and model["page_ins"] > 1000, "the limit must bite"
    assert model["hits"] > 1000
    for key in model:
        assert getattr(s, key) == model[key], key
    assert result.instructions == trace.instructions - start * trace.epoch_instructions
    assert result.cpu_seconds == pytest.approx(result.instructions / DEFAULT_GUEST_IPS)


def test_replay_callback_can_stop_and_guest_ips_is_checked(tmp_path):
    trace = GuestTrace.load("busybox")
    with (
        vmmem.FramePool(256 * PAGE) as pool,
        vmmem.GuestMemory(pool, trace.memory_size, paging_dir=tmp_path) as mem,
    ):
        with pytest.raises(SettingsError):
            replay_epochs(mem, trace, guest_ips=0)
        r = replay_epochs(mem, trace, on_epoch=lambda p: p.epoch < 9, guest_ips=1e9)
        assert r.epochs == 10 and r.cpu_seconds == pytest.approx(10 * 1e6 / 1e9)


def test_replay_paging_and_disk_reads_reach_a_private_loop_device(tmp_path):
    """On a loop device nobody else uses: the replay's page-outs and page-ins and its virtual
    disk's reads all show in the device's own counters."""
    trace = GuestTrace.load("busybox")
    slack = 2 * 2**20
    with (
        small_ext4(160 * 2**20, tmp_path) as mnt,
        vmmem.FramePool(256 * PAGE) as pool,
        vmmem.GuestMemory(pool, 32 * 2**20, frame_limit=256, paging_dir=mnt) as mem,
        VirtualDisk(mnt / "disk.vhd", trace.disk_size) as disk,
    ):
        info = devices.device_for_path(mnt)
        assert info.device.startswith("loop") and info.has_counters
        before = devices.io_counters(info)
        result = replay_epochs(mem, trace, disk=disk, start=1200)  # its disk reads are late
        s = mem.stats
        delta = settled_delta(info, before, reads=s.page_ins + result.disk_requests)
    assert result.disk_requests > 0 and result.disk_bytes_read >= 4 * 2**20
    assert s.page_ins > 500 and s.page_outs > 500
    want_read = s.bytes_read + result.disk_bytes_read
    assert want_read <= delta.read_bytes <= want_read + slack
    assert delta.read_count >= s.page_ins + result.disk_requests
    assert s.bytes_written <= delta.write_bytes <= s.bytes_written + slack


def _run_plan(plan):
    """What run_replay does with a plan, in order: accesses, disk requests (and where they
    fall in the access stream), and the CPU time charged in all."""
    from vmmem.guests import run_replay

    pages, disks, at, seconds = [], [], [], [0.0]

    def touch(p, w):
        pages.append(p.copy())

    def disk(o, n, w):
        at.append(sum(p.size for p in pages))
        disks.append((o.copy(), n.copy(), w.copy()))

    run_replay(plan, touch, disk, lambda seg: seconds.__setitem__(0, seconds[0] + seg.seconds))
    return np.concatenate(pages), disks, at, seconds[0]


@pytest.mark.parametrize("guest", ["busybox", "debian-12"])
def test_one_loop_cut_per_epoch_or_in_batches_replays_the_same(guest):
    """replay_epochs' cut (a segment per epoch) and a VM's (segments between disk requests
    and 10 ms CPU charges) are one loop: the same accesses, requests and CPU time in order."""
    from vmmem.guests import plan_replay

    trace = GuestTrace.load(guest)
    (p1, d1, a1, s1), (p2, d2, a2, s2) = (
        _run_plan(
            plan_replay(trace, 20_000, page_size=PAGE, guest_ips=DEFAULT_GUEST_IPS, per_epoch=cut)
        )
        for cut in (True, False)
    )
    assert np.array_equal(p1, p2) and p1.size == trace.pages.size
    assert a1 == a2 and len(d1) == len(d2) > 0
    for u, v in zip(d1, d2, strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(u, v, strict=True))
    assert s1 == pytest.approx(s2, rel=1e-9)
    assert s1 == pytest.approx(trace.instructions / DEFAULT_GUEST_IPS, rel=1e-9)


def test_the_replay_plan_refuses_another_page_size():
    from vmmem.guests import plan_replay

    with pytest.raises(GuestTraceError, match="provenance.page_size"):
        plan_replay(GuestTrace.load("busybox"), 1024, page_size=8192, guest_ips=1e9)
