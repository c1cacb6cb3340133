"""A host reboot as Hyper-V does it: each VM's automatic stop action at shutdown, then its
automatic start action after its start delay when the host is back.

- Stop: `Save` (the default) saves the VM; `ShutDown` and `TurnOff` turn it off.
- Start: `StartIfRunning` (the default) starts the VMs that were running, `Start` every VM,
  `Nothing` none; each `automatic_start_delay` seconds after the host is back, in order of
  delay (then higher priority first). A saved VM is restored with the memory it had; a VM off
  needs its Startup RAM. Either start fails with "Not enough memory in the system to start the
  virtual machine" when the host cannot make that much available: a start from Off or from a
  saved state never uses Smart Paging (Microsoft's Dynamic Memory documentation).
- The seed article counts a host reboot among Smart Paging's triggers; that reading is kept as
  an explicit option (`smart_paging_on_host_reboot=True`): the running VMs then restart at once,
  booting on Smart Paging where short, as in the article's storm.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass

from ..errors import NotEnoughMemoryError
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


class HostReboot:
    """A host reboot under way: the shutdown is done when this is made; the starts follow on
    a thread of their own, each at its delay. `wait()` for them; `outcomes` says what each VM
    did."""

    def __init__(
        self,
        vms: list[VM],
        was_running: set[str],
        clock: Callable[[], float],
        lock: threading.RLock,
    ) -> None:
        self.started_at = clock()
        self._clock = clock
        self._lock = lock
        self._stop = threading.Event()
        self.outcomes: dict[str, RebootOutcome] = {}
        self._queue: list[VM] = []
        for vm in vms:
            s = vm.settings
            out = RebootOutcome(
                vm.name, s.automatic_stop_action, s.automatic_start_action, s.automatic_start_delay
            )
            self.outcomes[vm.name] = out
            starts = s.automatic_start_action == "Start" or (
                s.automatic_start_action == "StartIfRunning" and vm.name in was_running
            )
            if starts:
                self._queue.append(vm)
            else:
                out.result = "saved" if vm.state == "Saved" else "off"
        # Hyper-V staggers by delay; at the same delay, higher priority first.
        self._queue.sort(key=lambda v: (v.settings.automatic_start_delay, -v.settings.priority))
        self._thread = threading.Thread(target=self._run, name="vmmem-host-start", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for vm in self._queue:
            out = self.outcomes[vm.name]
            due = self.started_at + vm.settings.automatic_start_delay
            while (left := due - self._clock()) > 0:
                if self._stop.wait(min(left, 0.05)):
                    return
            if self._stop.is_set():
                return
            restoring = vm.state == "Saved"
            try:
                vm.start()
            except NotEnoughMemoryError as exc:
                out.result, out.error = "failed", str(exc)
            except Exception as exc:  # noqa: BLE001 - the host closed, or the VM was changed
                out.result, out.error = "failed", str(exc)
            else:
                out.result = "restored" if restoring else "started"
            out.at = self._clock()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> dict[str, RebootOutcome]:
        """Wait until every VM whose start action starts it was started (or failed)."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the host's automatic starts did not finish within {timeout} s")
        return self.outcomes

    def cancel(self) -> None:
        """Stop starting VMs (the host is closing)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    @property
    def failed(self) -> list[str]:
        return [n for n, o in self.outcomes.items() if o.result == "failed"]

    def __repr__(self) -> str:
        return "HostReboot(" + ", ".join(f"{n}: {o.result}" for n, o in self.outcomes.items()) + ")"
