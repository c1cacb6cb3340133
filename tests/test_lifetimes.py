"""Lifetimes: a VM's guest memory is never read after it is closed, a closed host refuses every
call, and a write of the wrong type says what it wanted.

The race: a stop (or a failed guest) closes the session's memory under the VM's lock, then
detaches the session under the lock again. A balancer tick or a status poll in between once
read the closed memory's counters ("guest memory 'vm1' is closed"). These tests hold the
teardown in that window with events and read the VM from another thread there.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmmem import MB, FramePool, GuestMemory, SettingsError, VmmemError
from vmmem.hyperv import Boot, Host, Idle, Workload
from vmmem.hyperv.session import GuestSession
from vmmem.hyperv.workloads import Guest

WAIT = 120  # seconds: only a hang reaches it


class CrashingBoot(Workload):
    """A guest that touches some memory, then crashes during its boot."""

    phase = "boot"
    boot = True

    def run(self, guest: Guest) -> None:
        guest.commit_range(0, 64)
        raise RuntimeError("the guest crashed")


class HeldTeardown:
    """Wraps GuestSession.close: after the first close that closes the memory, it signals
    `closed` and waits for `resume` before the VM detaches the session."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.closed = threading.Event()
        self.resume = threading.Event()
        original = GuestSession.close

        def close(session: GuestSession, keep_memory: bool = False) -> None:
            original(session, keep_memory)
            if session.memory.closed and not self.closed.is_set():
                self.closed.set()
                assert self.resume.wait(WAIT), "the test never let the teardown go on"

        monkeypatch.setattr(GuestSession, "close", close)


@pytest.fixture
def host(disk_dir: Path) -> Iterator[Host]:
    # A balancer that never ticks on its own: the test's tick is the one in the window.
    with Host("256MB", smart_paging_path=disk_dir / "vms", balancer_interval=3600) as h:
        yield h


def test_a_failed_guest_is_never_read_after_its_memory_closed(host, monkeypatch):
    held = HeldTeardown(monkeypatch)
    vm = host.add_vm("vm1", startup="64MB", workload=[CrashingBoot(), Idle()])
    vm.start()  # the guest thread crashes and tears the session down, without the host lock
    assert held.closed.wait(WAIT)
    try:
        assert vm.state == "Running"  # the window: memory closed, session not yet detached
        assert vm.memory is None  # never a closed memory to read
        assert vm.claim().name == "vm1" and vm.assigned_pages == 0
        assert vm.status.memory_assigned == 0
        host.balance_now()  # the balancer's tick: claims every running VM
        assert [s.memory_assigned for s in host.status] == [0]
    finally:
        held.resume.set()
    with pytest.raises(VmmemError, match="the guest crashed"):
        vm.wait_booted(WAIT)
    assert vm.state == "Off" and host.balancer_error is None


def test_a_stopping_vm_is_never_read_after_its_memory_closed(host, monkeypatch):
    vm = host.add_vm(
        "vm1",
        startup="64MB",
        workload=[Boot(cpu_per_page=0, disk_read_fraction=0.0), Idle(touch_interval=3600)],
    )
    vm.start()
    vm.wait_booted(WAIT)
    held = HeldTeardown(monkeypatch)
    stopper = threading.Thread(target=vm.stop)  # holds the host's lock while it stops the VM
    stopper.start()
    assert held.closed.wait(WAIT)
    try:
        # The status poll and a claim, from this thread, while the stop is in its window.
        assert vm.state == "Running"
        assert vm.status.memory_assigned == 0
        assert vm.claim().name == "vm1" and vm.assigned_pages == 0
    finally:
        held.resume.set()
        stopper.join(WAIT)
    assert not stopper.is_alive() and vm.state == "Off"


def test_every_host_call_after_close_raises(disk_dir):
    host = Host("256MB", smart_paging_path=disk_dir / "vms", balancer_interval=3600)
    vm = host.add_vm("vm1", startup="64MB")
    host.close()
    for call in (host.wait_settled, lambda: host.wait_settled(0), host.balance_now, vm.start):
        with pytest.raises(VmmemError, match="this host is closed"):
            call()


def test_write_of_text_names_the_type_it_wants(tmp_path):
    with FramePool(4 * MB) as pool, GuestMemory(pool, 4 * MB, paging_dir=tmp_path) as mem:
        mem.write(0, b"keep")
        with pytest.raises(SettingsError, match=r"bytes-like .*got str; encode text first"):
            mem.write(0, "abc")  # type: ignore[arg-type]
        for bad in (5, None, [1, 2], 1.5):
            with pytest.raises(SettingsError, match="write data must be bytes-like"):
                mem.write(0, bad)  # type: ignore[arg-type]
        assert mem.read(0, 4) == b"keep"  # nothing was written
        # Every bytes-like object is taken, a strided view too.
        mem.write(0, memoryview(b"abcdefgh")[::2])
        assert mem.read(0, 4) == b"aceg"
