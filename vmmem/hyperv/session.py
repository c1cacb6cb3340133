"""One boot of a VM's guest: the session between power-on and power-off.

A `GuestSession` holds what lives exactly as long as one boot: the guest's memory (a
`GuestMemory` whose frame limit is the memory the host assigned), the thread that runs the
workload phases, the committed (demand) bitmap, whether the boot may page to its Smart Paging
file, and the `BootRecord` its report is made from. The VM makes one per power-on and closes it
at power-off; the host changes its assignment through the VM.

A VM with several virtual processors boots on as many guest threads (`run_on_processors`):
the guest thread runs processor 0's stream and one more thread runs each other processor's,
each through a `VirtualProcessor` with its own clock (clock.py). They replay into the one
GuestMemory at the same time: this layer holds no lock across the core's call, so their
faults can overlap as a real guest's processors' do. A stop stops them all; an error in one
stops the boot with that error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .. import devices
from ..errors import OutOfFramesError
from ..memory import GuestMemory
from ..vdisk import VirtualDisk
from .clock import BootClock
from .reports import BootReport, VMStatus, memory_status
from .rules import awaits_guest
from .settings import VMSettings

__all__ = ["CHUNK", "CHUNK_PAGING", "BootRecord", "GuestSession", "Stopped", "VirtualProcessor"]

# Accesses per replay call: small while the VM may page, so a balancer change (which waits for
# the guest's mutex) never waits behind a long run of disk I/O.
CHUNK = 4096
CHUNK_PAGING = 256


class Stopped(Exception):
    """The VM is stopping or restarting: unwind the guest thread."""


@dataclass
class BootRecord:
    """Book-keeping of one boot (mutable; reports are frozen snapshots of it)."""

    kind: str
    started_at: float = 0.0  # host clock
    t0: float = 0.0  # time.monotonic()
    assigned_at_boot: int = 0  # pages
    smart_paging: bool = False
    device: devices.DeviceInfo | None = None
    io_start: devices.IOCounters | None = None
    report: BootReport | None = None
    file_created_at: float | None = None  # monotonic
    file_deleted_at: float | None = None
    peak_paged_out: int = 0  # pages
    peak_file_size: int = 0  # bytes
    # Page-ins from the Smart Paging file after the boot, while the guest runs on it (its
    # final drain not counted): from page_ins_at_boot (the counter when the boot ended).
    page_ins_at_boot: int | None = None
    page_ins_after_boot: int = 0
    draining: bool = False


class GuestSession:
    """One boot of a VM's guest, from power-on to power-off: its memory, the thread that runs
    the workload, the memory the host assigned and the guest committed, whether it may page to
    Smart Paging, and the boot's record. What workloads call (workloads.Guest) is here.

    `lock`/`cv` are the VM's, so status reads and host changes see one consistent state.
    `close()` ends it, whatever state it is in: stops the thread, frees the memory (which
    deletes the paging file) and notes when the file went.
    """

    def __init__(
        self,
        memory: GuestMemory,
        record: BootRecord,
        startup_pages: int,
        lock: threading.RLock,
        cv: threading.Condition,
        disk: VirtualDisk | None = None,
        guest_page_folder: str | None = None,
        on_new_file: Callable[[str], None] | None = None,
        processors: int = 1,
    ) -> None:
        self.memory = memory
        self.disk = disk  # the VM's virtual disk, when its workload reads one
        self.record = record
        self.lock = lock
        self.cv = cv
        self.stop = threading.Event()
        self.booted = threading.Event()
        # The guest has waited (sleep) since its boot ended or its restore read its state back:
        # its next phase has made its first change (Idle releases down to its working set
        # before it first sleeps). Host.wait_settled waits for it.
        self.steady = threading.Event()
        self.thread: threading.Thread | None = None
        self.page_size = memory.page_size
        self.startup_pages = startup_pages
        self.guest_pages = memory.pages
        self.committed = np.zeros(0, dtype=bool)  # committed-page bitmap, grown on demand
        self.assigned = 0  # pages: the guest's frame limit
        self.demand = 0  # pages: committed memory
        self.smart_paging = False  # a paging file is allowed (restart short of Startup RAM)
        self.restarting = False  # the host is dividing memory for this restart right now
        # A restart's boot (not a start from Off), the host's balancer_start_delay, and when
        # the boot ended (monotonic): until then + delay the host leaves the VM as it is.
        self.restarted = False
        self.start_delay = 0.0
        self.booted_at: float | None = None
        # The guest's own virtual-disk I/O this boot (not paging): requests and bytes.
        self.disk_requests = 0
        self.disk_read_bytes = 0
        self.disk_write_bytes = 0
        # In-guest paging (a running guest short of memory pages to its own page file on its
        # virtual disk, as Hyper-V leaves it to the guest): where, and since when it counts.
        self.guest_page_folder = guest_page_folder
        self.on_new_file = on_new_file
        self.file_role = "smart"  # what the (next) paging file is for: "smart" or "guest"
        self._guest_base: dict[str, int] | None = None  # counters when in-guest paging began
        # The boot's own time, apart from the emulator's (clock.py), one clock per virtual
        # processor; started at launch. One processor reads the VM's fault counter (exact, as
        # it always was); several add each replay call's own fault wait.
        self.processors = processors
        vm_faults: Callable[[], int] | None = None
        if processors == 1:
            vm_faults = lambda: self.memory.counters["fault_ns"]  # noqa: E731
        self.clocks = [BootClock(vm_faults) for _ in range(processors)]
        self.clock = self.clocks[0]  # processor 0's: the guest thread's
        # CPU time of the other processors' threads (the emulator's work for them), and the
        # error that stopped the boot in one of them.
        self.processor_cpu_seconds = 0.0
        self.failure: BaseException | None = None

    def held(self) -> bool:
        """The host sends this VM no Dynamic Memory request now (rules.awaits_guest): it keeps
        what it has, and its Smart Paging file."""
        return awaits_guest(
            delay=self.start_delay,
            restarted=self.restarted,
            restarting=self.restarting,
            booted_at=self.booted_at,
            now=time.monotonic(),
        )

    # -- demand ------------------------------------------------------------------------------

    def _grow(self, top: int) -> None:
        if top > len(self.committed):
            grown = np.zeros(max(top, 2 * len(self.committed)), dtype=bool)
            grown[: len(self.committed)] = self.committed
            self.committed = grown

    def commit_range(self, first: int, count: int) -> None:
        with self.lock:
            self._check()
            self._grow(first + count)
            window = self.committed[first : first + count]
            self.demand += int(count - np.count_nonzero(window))
            window[:] = True

    def commit_pages(self, pages: np.ndarray) -> None:
        unique = np.unique(pages)
        if not unique.size:
            return
        with self.lock:
            self._check()
            self._grow(int(unique[-1]) + 1)
            new = unique[~self.committed[unique]]
            self.committed[new] = True
            self.demand += int(new.size)

    def keep_only(self, count: int) -> None:
        """The guest keeps pages [0, count) committed and frees the rest: released, no I/O."""
        with self.lock:
            self._check()
            top = len(self.committed)
            if top > count:
                self.memory.release(count, min(top, self.guest_pages) - count)
                self.committed[count:] = False
            self._grow(count)
            self.committed[:count] = True
            self.demand = int(np.count_nonzero(self.committed))
            self.cv.notify_all()
        self.observe_file()

    # -- running -----------------------------------------------------------------------------

    def _check(self) -> None:
        if self.stop.is_set():
            raise Stopped

    def sleep(self, seconds: float, clock: BootClock | None = None) -> None:
        """The guest spends `seconds` (CPU or a pause). During the boot on the boot's clock
        (`clock`: a virtual processor's; default processor 0's): the thread waits until the
        wall clock catches up with it, never longer. After the boot (not while a restore reads
        its saved state back) the first wait makes the guest `steady`."""
        if self.booted.is_set() and self.file_role != "saved":
            self.steady.set()
        if not self.booted.is_set():
            if (clock or self.clock).advance(seconds, self.stop):
                raise Stopped
        elif seconds > 0 and self.stop.wait(seconds):
            raise Stopped
        self._check()

    def _wait_for_frames(self, clock: BootClock) -> None:
        """Before a chunk of accesses: a boot on Smart Paging goes on (the host pages); a
        running guest short of memory pages inside itself, to its own page file on its
        virtual disk (never Smart Paging), once no Smart Paging file is left; without a page
        file it waits for the balancer (pressure > 100)."""
        with self.cv:
            while True:
                self._check()
                assigned = self.assigned
                # on its file: while it boots, and after, until the host answers (held)
                booting_on_file = self.smart_paging and (not self.booted.is_set() or self.held())
                if assigned > 0 and (booting_on_file or assigned >= self.demand):
                    return
                if assigned > 0 and self._page_inside_guest():
                    return
                waited = time.monotonic()
                self.cv.wait(0.05)
                if not self.booted.is_set():  # the boot waits for memory: the guest's time
                    clock.memory_wait += time.monotonic() - waited

    def _page_inside_guest(self) -> bool:
        """Switch the guest's paging file to its own page file, if it has one and no Smart
        Paging file is in the way (called with the lock held). True if it may page now."""
        if self.guest_page_folder is None or self.smart_paging or not self.booted.is_set():
            return False
        if self.file_role != "guest":
            if self.memory.paging_file.exists:
                return False  # a Smart Paging file still draining
            path = self.memory.move_paging_file(self.guest_page_folder, "pagefile")
            if self.on_new_file is not None:
                self.on_new_file(path)
            self.file_role = "guest"
            self._guest_base = self.memory.counters
        return True

    def read_saved_state(self) -> None:
        """A restore reads the guest's saved memory back from its file before the guest runs
        on (real reads, a chunk at a time so status reads get in between); the file is then
        empty and deleted, and the next paging file is Smart Paging's again. (The restore's
        power-on set `file_role` to "saved": the VM is restoring until this returns.)"""
        while True:
            self._check()
            if not self.memory.drain(max_pages=CHUNK):
                break
        self.file_role = "smart"

    def guest_paging(self) -> dict[str, int]:
        """The guest's own paging so far: page-ins and page-outs since it began, and the bytes
        in its page file now."""
        if self._guest_base is None:
            return {"page_ins": 0, "page_outs": 0, "bytes": 0}
        c = self.memory.counters
        return {
            "page_ins": c["page_ins"] - self._guest_base["page_ins"],
            "page_outs": c["page_outs"] - self._guest_base["page_outs"],
            "bytes": c["file_pages"] * self.page_size if self.file_role == "guest" else 0,
        }

    def replay(
        self, pages: np.ndarray, writes: np.ndarray | None, clock: BootClock | None = None
    ) -> None:
        """The guest's accesses, a chunk at a time (`clock`: the virtual processor's that
        makes them; default processor 0's)."""
        clock = clock or self.clock
        own_faults = not clock.reads_vm_faults
        n = len(pages)
        start = 0
        while start < n:
            if self.smart_paging and self.booted.is_set():
                self.end_smart_paging()  # the boot is over: end Smart Paging at the first chance
            self._wait_for_frames(clock)
            paging = self.smart_paging and self._may_page(min(n - start, CHUNK))
            end = min(n, start + (CHUNK_PAGING if paging else CHUNK))
            waited = self.memory.replay(
                pages[start:end], None if writes is None else writes[start:end]
            )
            if own_faults:  # the ns this call's faults were blocked on paging: this vCPU's
                clock.add_faults(waited)
            if paging:
                self.observe_file()
            start = end

    def _may_page(self, accesses: int) -> bool:
        """Could that many accesses reach the paging file now: pages in it, or too few free
        frames? If not, a boot allowed Smart Paging replays in long chunks and skips the
        file's book-keeping: with nothing to page, the small chunks were only Python's cost.
        (The host lowering the limit right after this check only lengthens one call.)"""
        c = self.memory.counters
        return c["file_pages"] > 0 or c["resident"] + accesses > c["frame_limit"]

    def observe_file(self) -> bool:
        """Note the Smart Paging file's state for the boot report; True if it exists."""
        if self.file_role != "smart":
            return False  # the guest's own page file, or its saved state: not Smart Paging
        c = self.memory.counters  # scalars only: this runs after every replay chunk
        exists = bool(c["file_exists"])
        rec = self.record
        now = time.monotonic()
        if exists:
            if rec.file_created_at is None or rec.file_deleted_at is not None:
                rec.file_created_at = rec.file_created_at or now
                rec.file_deleted_at = None
            if rec.page_ins_at_boot is not None and not rec.draining:
                rec.page_ins_after_boot = c["page_ins"] - rec.page_ins_at_boot
            rec.peak_paged_out = max(rec.peak_paged_out, c["paged_out"])
            rec.peak_file_size = max(rec.peak_file_size, c["file_size"])
        elif rec.file_created_at is not None and rec.file_deleted_at is None:
            rec.file_deleted_at = now
        return exists

    def observe_file_closed(self) -> None:
        """The memory was closed, which deletes the file: note when."""
        rec = self.record
        if rec.file_created_at is not None and rec.file_deleted_at is None:
            rec.file_deleted_at = time.monotonic()

    def end_smart_paging(self) -> None:
        """After the boot: once the assigned memory holds the demand, bring the file's pages
        back and delete it (drain). Smart Paging then stays off until the next short restart."""
        if not self.smart_paging or not self.booted.is_set():
            return
        self._check()
        if self.held():  # the host has not rebalanced it yet: it runs on its file
            self.observe_file()
            return
        if self.observe_file() and self.assigned >= self.demand:
            self.record.draining = True
            # A chunk at a time, so status reads and the balancer never wait behind the
            # whole drain (the core holds the guest's mutex for each call).
            left = 1
            while left:
                self._check()
                if self.assigned < self.demand:
                    return  # the balancer moved in between; try again next time
                try:
                    left = self.memory.drain(max_pages=CHUNK_PAGING)
                except OutOfFramesError:
                    return  # the balancer moved in between; try again next time
        with self.lock:
            if not self.observe_file():
                self.smart_paging = False
                self.cv.notify_all()

    def disk_io(
        self,
        offsets: np.ndarray,
        lengths: np.ndarray,
        writes: np.ndarray | None,
        clock: BootClock | None = None,
    ) -> None:
        """Issue the guest's own disk requests to its virtual disk (O_DIRECT: they reach the
        device), folded onto the disk's size; counted apart from paging. Their time goes on
        `clock` (the virtual processor's that issued them; default processor 0's)."""
        if self.disk is None or not len(offsets):
            return
        from ..guests import fold_disk_requests

        self._check()
        off, ln = fold_disk_requests(offsets, lengths, self.disk.size)
        io = self.disk.issue(off, ln, writes)
        (clock or self.clock).add_disk(io.seconds)
        with self.lock:  # several processors may add at once
            self.disk_requests += io.requests
            self.disk_read_bytes += io.bytes_read
            self.disk_write_bytes += io.bytes_written

    # -- virtual processors --------------------------------------------------------------------

    def run_on_processors(self, streams: Sequence[Callable[[VirtualProcessor], None]]) -> None:
        """Run stream i on virtual processor i, each on its own thread with its own clock,
        and return when all are done. One stream runs on this (the guest) thread, as a boot
        always ran. The first error in any stream stops the others and is raised here; a stop
        of the VM stops them all (Stopped)."""
        if not 1 <= len(streams) <= self.processors:
            raise ValueError(f"{len(streams)} streams for {self.processors} virtual processors")
        if len(streams) == 1:
            streams[0](VirtualProcessor(self, 0))
            return
        lock = threading.Lock()

        def run(index: int) -> None:
            try:
                streams[index](VirtualProcessor(self, index))
            except Stopped:
                pass
            except BaseException as exc:  # noqa: BLE001 - the boot stops with it, raised below
                with lock:
                    if self.failure is None and not self.stop.is_set():
                        self.failure = exc
                self.stop.set()  # every other processor unwinds at its next step
                with self.cv:
                    self.cv.notify_all()
            finally:
                if index:
                    with lock:
                        self.processor_cpu_seconds += time.thread_time()

        name = threading.current_thread().name
        threads = [
            threading.Thread(target=run, args=(i,), name=f"{name}-cpu{i}", daemon=True)
            for i in range(1, len(streams))
        ]
        for thread in threads:
            thread.start()
        try:
            run(0)
        finally:
            for thread in threads:
                thread.join()
        if self.failure is not None:
            raise self.failure
        self._check()

    def stop_clocks(self) -> tuple[float, list[float], int]:
        """The boot is over: freeze every processor's clock. Returns the boot's time (the
        latest processor's), each processor's, and which processor finished last."""
        times = [clock.stop() for clock in self.clocks]
        last = max(range(len(times)), key=times.__getitem__)
        return times[last], times, last

    def make_report(
        self,
        vm: str,
        startup_bytes: int,
        paging_dir: str,
        boot_time: float,
        baseline: float | None,
    ) -> BootReport:
        """The boot's report at its end: its counters, latencies and device bytes so far (the
        Smart Paging fields are refreshed from the record until the file is gone)."""
        boot = self.record
        stats = self.memory.stats
        self.observe_file()
        io_read = io_write = None
        if boot.io_start is not None and boot.device is not None:
            try:
                now = devices.io_counters(boot.device)
            except Exception:  # device facts are advisory
                now = None
            if now is not None:
                delta = now - boot.io_start
                io_read, io_write = delta.read_bytes, delta.write_bytes
        faults, page_out = stats.fault_latency, stats.page_out_latency
        times = [c.now() for c in self.clocks]
        last = max(range(len(times)), key=times.__getitem__)
        clock = self.clocks[last]  # the boot's time is the latest processor's: its parts
        wall = time.monotonic() - boot.t0
        # The guest thread is this boot's own (a new one per boot): its CPU time, and that of
        # the other processors' threads, is the emulator's work for the boot.
        on_thread = self.thread is threading.current_thread()
        return BootReport(
            vm=vm,
            kind=boot.kind,
            started_at=boot.started_at,
            boot_time=boot_time,
            baseline=baseline,
            slowdown=boot_time / baseline if baseline else None,
            startup_bytes=startup_bytes,
            assigned_at_boot=boot.assigned_at_boot * self.page_size,
            smart_paging=boot.smart_paging,
            page_ins=stats.page_ins,
            page_outs=stats.page_outs,
            bytes_read=stats.bytes_read,
            bytes_written=stats.bytes_written,
            fault_p50=faults.percentile(50) if faults.count else None,
            fault_p99=faults.percentile(99) if faults.count else None,
            page_out_p50=page_out.percentile(50) if page_out.count else None,
            page_out_p99=page_out.percentile(99) if page_out.count else None,
            smart_paging_peak_bytes=boot.peak_paged_out * self.page_size,
            smart_paging_file_peak_size=boot.peak_file_size,
            smart_paging_seconds=0.0,
            smart_paging_ended=False,
            paging_dir=paging_dir,
            device=boot.device.counter_key if boot.device is not None else None,
            device_read_bytes=io_read,
            device_write_bytes=io_write,
            disk_requests=self.disk_requests,
            disk_read_bytes=self.disk_read_bytes,
            disk_write_bytes=self.disk_write_bytes,
            guest_seconds=clock.guest,
            fault_wait_seconds=clock.faults,
            disk_seconds=clock.disk,
            memory_wait_seconds=clock.memory_wait,
            wall_seconds=wall,
            emulator_seconds=max(0.0, wall - boot_time),
            emulator_cpu_seconds=(
                time.thread_time() + self.processor_cpu_seconds if on_thread else None
            ),
            processor_count=self.processors,
            processor_boot_times=times,
            last_processor=last,
            page_in_latency=stats.page_in_latency,
            fault_latency=faults,
        )

    def status(self, settings: VMSettings, phase: str, paging_folder: str) -> VMStatus:
        """The running VM's memory as Get-VM shows it (and the guest's own paging, apart)."""
        s, ps = settings, self.page_size
        c = self.memory.counters  # scalars only: status is polled
        smart_file = self.file_role == "smart"
        in_use = smart_file and bool(c["file_exists"])
        assigned, demand = self.assigned * ps, self.demand * ps
        guest = self.guest_paging()
        paged_out = c["paged_out"] if in_use else 0
        return VMStatus(
            name=s.name,
            state="Running",
            phase=phase,
            memory_assigned=assigned,
            memory_demand=demand,
            memory_startup=s.startup,
            pressure=round(demand / assigned * 100, 1) if assigned else 0.0,
            memory_status=memory_status(
                running=True,
                dynamic=s.dynamic,
                paging=in_use,
                assigned=assigned,
                demand=demand,
                buffer=s.buffer,
            ),
            smart_paging_file_in_use=in_use,
            smart_paging_file_path=self.memory.paging_file.path if in_use else paging_folder,
            smart_paging_bytes=paged_out * ps,
            smart_paging_file_size=c["file_size"] if smart_file else 0,
            guest_paging_bytes=guest["bytes"],
            guest_page_ins=guest["page_ins"],
            guest_page_outs=guest["page_outs"],
        )

    # -- the end -------------------------------------------------------------------------------

    def close(self, keep_memory: bool = False) -> None:
        """End the boot: stop the guest thread, free the memory (deleting any paging file).
        `keep_memory`: a Save, which keeps the guest's memory for its saved state."""
        self.stop.set()
        with self.cv:
            self.cv.notify_all()
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self.lock:
            if not self.memory.closed and not keep_memory:
                self.memory.close()
            if self.disk is not None:
                self.disk.close()  # the file stays: a VM's disk outlives its boots
            self.observe_file_closed()
            self.assigned = 0
            self.demand = 0
            self.smart_paging = False
            self.restarting = False


class VirtualProcessor:
    """One virtual processor of a boot: what its stream does to the VM (workloads.Guest),
    on its own clock (its guest time, its faults, its disk requests, its memory waits).
    Memory, demand and Smart Paging are the VM's, shared by all its processors."""

    def __init__(self, session: GuestSession, index: int) -> None:
        self.session = session
        self.index = index
        self.clock = session.clocks[index]
        self.page_size = session.page_size
        self.startup_pages = session.startup_pages
        self.guest_pages = session.guest_pages
        self.processors = 1  # its own stream: it runs no others

    @property
    def demand(self) -> int:
        return self.session.demand

    def commit_range(self, first: int, count: int) -> None:
        self.session.commit_range(first, count)

    def commit_pages(self, pages: np.ndarray) -> None:
        self.session.commit_pages(pages)

    def keep_only(self, count: int) -> None:
        self.session.keep_only(count)

    def replay(self, pages: np.ndarray, writes: np.ndarray | None) -> None:
        self.session.replay(pages, writes, self.clock)

    def sleep(self, seconds: float) -> None:
        self.session.sleep(seconds, self.clock)

    def end_smart_paging(self) -> None:
        self.session.end_smart_paging()

    def disk_io(self, offsets: np.ndarray, lengths: np.ndarray, writes: np.ndarray | None) -> None:
        self.session.disk_io(offsets, lengths, writes, self.clock)

    def run_on_processors(self, streams: Sequence[Callable[[VirtualProcessor], None]]) -> None:
        if len(streams) != 1:
            raise ValueError("a virtual processor runs one stream")
        streams[0](self)
