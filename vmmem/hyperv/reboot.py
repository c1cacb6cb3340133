"""A host reboot under way: the starts of `rules.reboot_schedule`, made on a thread at their
delays, and what each VM did.

The rules (which VMs are saved or turned off, which start, in what order, after what delay)
are in `vmmem.hyperv.rules`; a start is the host's own (`Host.start_vm`): a saved VM is
restored with the memory it had, a VM off needs its Startup RAM, either fails with "Not enough
memory in the system to start the virtual machine" when the host cannot make that much
available, and neither uses Smart Paging (Microsoft's Dynamic Memory documentation).
The seed article counts a host reboot among Smart Paging's triggers; that reading is kept as
an explicit option (`Host.reboot(smart_paging_on_host_reboot=True)`): the running VMs then
restart at once, booting on Smart Paging where short (`HostReboot.restarted`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from ..errors import NotEnoughMemoryError
from .rules import RebootSchedule, RebootStart
from .vm import VM

__all__ = ["HostReboot", "RebootOutcome"]


@dataclass
class RebootOutcome:
    """What one VM did through a host reboot."""

    vm: str
    stop_action: str  # Save, ShutDown, TurnOff (or "restart" in the article's reading)
    start_action: str  # StartIfRunning, Start, Nothing
    start_delay: float  # seconds
    # "restored", "started", "failed", "saved" (left saved: Nothing), "off" (not started),
    # "restarted" (the article's reading), "pending" (its delay has not come yet)
    result: str = "pending"
    error: str | None = None
    at: float | None = None  # host clock when it was started or restored

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _no_start(vm: VM) -> None:
    raise AssertionError("nothing to start")  # pragma: no cover - no start is queued


class HostReboot:
    """A host reboot under way: the shutdown is done when this is made; the starts follow on
    a thread of their own, each at its delay. `wait()` for them; `outcomes` says what each VM
    did."""

    def __init__(
        self,
        outcomes: dict[str, RebootOutcome],
        starts: Sequence[tuple[VM, RebootStart]],
        start: Callable[[VM], None],
        clock: Callable[[], float],
    ) -> None:
        """`starts` (in order, each at its delay after now on `clock`) are made by `start`
        (the host's start) on a thread; `outcomes` (one per VM) record them. Made by
        `automatic` or `restarted`."""
        self.started_at = clock()
        self._clock = clock
        self._start = start
        self._stop = threading.Event()
        self.outcomes = outcomes
        self._queue = list(starts)
        self._thread: threading.Thread | None = None
        if self._queue:
            self._thread = threading.Thread(target=self._run, name="vmmem-host-start", daemon=True)
            self._thread.start()

    @classmethod
    def automatic(
        cls,
        vms: Sequence[VM],
        schedule: RebootSchedule,
        start: Callable[[VM], None],
        clock: Callable[[], float],
    ) -> HostReboot:
        """Hyper-V's reading: the shutdown of `schedule` is done; its automatic starts follow,
        each by `start` at its delay."""
        by_name = {vm.name: vm for vm in vms}
        outcomes = {}
        for vm in vms:
            s = vm.settings
            outcomes[vm.name] = RebootOutcome(
                vm.name,
                s.automatic_stop_action,
                s.automatic_start_action,
                s.automatic_start_delay,
                schedule.left.get(vm.name, "pending"),
            )
        return cls(outcomes, [(by_name[s.name], s) for s in schedule.starts], start, clock)

    @classmethod
    def restarted(cls, vms: Sequence[VM], clock: Callable[[], float]) -> HostReboot:
        """The seed article's reading, done: the host restarted `vms` at once (before this is
        made); nothing is left to start."""
        at = clock()
        outcomes = {
            vm.name: RebootOutcome(
                vm.name, "restart", vm.settings.automatic_start_action, 0.0, "restarted", at=at
            )
            for vm in vms
        }
        return cls(outcomes, [], _no_start, clock)

    def _run(self) -> None:
        for vm, start in self._queue:
            out = self.outcomes[vm.name]
            due = self.started_at + start.delay
            while (left := due - self._clock()) > 0:
                if self._stop.wait(min(left, 0.05)):
                    return
            if self._stop.is_set():
                return
            restoring = vm.state == "Saved"
            try:
                self._start(vm)
            except NotEnoughMemoryError as exc:
                out.result, out.error = "failed", str(exc)
            except Exception as exc:  # noqa: BLE001 - the host closed, or the VM was changed
                out.result, out.error = "failed", str(exc)
            else:
                out.result = "restored" if restoring else "started"
            out.at = self._clock()

    @property
    def done(self) -> bool:
        return self._thread is None or not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> dict[str, RebootOutcome]:
        """Wait until every VM whose start action starts it was started (or failed)."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"the host's automatic starts did not finish within {timeout} s")
        return self.outcomes

    def cancel(self) -> None:
        """Stop starting VMs (the host is closing)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    @property
    def failed(self) -> list[str]:
        return [n for n, o in self.outcomes.items() if o.result == "failed"]

    def __repr__(self) -> str:
        return "HostReboot(" + ", ".join(f"{n}: {o.result}" for n, o in self.outcomes.items()) + ")"
