"""A VM's settings as properties, each set through the VM's one rule-checked change
(`VM._change`, by `settings.change_settings`). Kept apart from vm.py, which runs the VM."""

from __future__ import annotations

import os

from ..sizes import SizeLike
from .settings import VMSettings, smart_paging_folder

__all__ = ["SettingsProperties"]


class SettingsProperties:
    """Get-VM/Set-VM style properties over `_settings`; VM provides `_change` and `_host`."""

    _settings: VMSettings

    def _change(self, **changes: object) -> None:
        raise NotImplementedError

    def _host_folder(self) -> str:
        raise NotImplementedError

    @property
    def startup(self) -> int:
        return self._settings.startup

    @startup.setter
    def startup(self, value: SizeLike) -> None:
        self._change(startup=value)

    @property
    def minimum(self) -> int:
        return self._settings.minimum

    @minimum.setter
    def minimum(self, value: SizeLike) -> None:
        self._change(minimum=value)

    @property
    def maximum(self) -> int:
        return self._settings.maximum

    @maximum.setter
    def maximum(self, value: SizeLike) -> None:
        self._change(maximum=value)

    @property
    def buffer(self) -> int:
        return self._settings.buffer

    @buffer.setter
    def buffer(self, value: int) -> None:
        self._change(buffer=value)

    @property
    def priority(self) -> int:
        return self._settings.priority

    @priority.setter
    def priority(self, value: int) -> None:
        self._change(priority=value)

    @property
    def dynamic(self) -> bool:
        return self._settings.dynamic

    @dynamic.setter
    def dynamic(self, value: bool) -> None:
        self._change(dynamic=value)

    @property
    def smart_paging_path(self) -> str:
        """The VM's Smart Paging folder (its own folder under the host's by default)."""
        return smart_paging_folder(
            self._host_folder(), self._settings.name, self._settings.smart_paging_path
        )

    @smart_paging_path.setter
    def smart_paging_path(self, value: str | os.PathLike[str] | None) -> None:
        self._change(smart_paging_path=value)

    @property
    def generation(self) -> int:
        """1 or 2, fixed when the VM is made (New-VM -Generation)."""
        return self._settings.generation

    @property
    def processor_count(self) -> int:
        """Virtual processors (Set-VMProcessor -Count): the guest threads a boot runs on
        (docs/GUESTS.md, "Replay"). Changed only while the VM is off."""
        return self._settings.processor_count

    @processor_count.setter
    def processor_count(self, value: int) -> None:
        self._change(processor_count=value)

    @property
    def automatic_stop_action(self) -> str:
        """What a host reboot does to the VM first: Save, ShutDown or TurnOff."""
        return self._settings.automatic_stop_action

    @automatic_stop_action.setter
    def automatic_stop_action(self, value: str) -> None:
        self._change(automatic_stop_action=value)

    @property
    def automatic_start_action(self) -> str:
        """What the host does with the VM when it is back: StartIfRunning, Start or Nothing."""
        return self._settings.automatic_start_action

    @automatic_start_action.setter
    def automatic_start_action(self, value: str) -> None:
        self._change(automatic_start_action=value)

    @property
    def automatic_start_delay(self) -> float:
        """Seconds after the host is back before the automatic start action."""
        return self._settings.automatic_start_delay

    @automatic_start_delay.setter
    def automatic_start_delay(self, value: float) -> None:
        self._change(automatic_start_delay=value)
