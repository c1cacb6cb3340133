"""A recorded guest trace (the .npz format of docs/GUESTS.md), loaded read-only."""

from __future__ import annotations

import json
import os
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GuestTraceError, SettingsError

__all__ = ["FORMAT", "MAPPINGS", "PAGE_SIZE", "GuestTrace", "map_pages", "shipped_names"]

FORMAT = "vmmem-guest-trace/1"
PAGE_SIZE = 4096
MAPPINGS = ("fold", "scale")
_ARRAYS = (
    "epoch_offsets", "pages", "written", "disk_epoch", "disk_offset", "disk_length", "disk_write",
)  # fmt: skip


def data_dir() -> Path:
    return Path(str(resources.files("vmmem.guests") / "data"))


def shipped_names() -> list[str]:
    """The names of the guest traces shipped in the package (vmmem/guests/data/NAME.npz)."""
    folder = data_dir()
    return sorted(p.stem for p in folder.glob("*.npz")) if folder.is_dir() else []


def map_pages(pages: np.ndarray, recorded_pages: int, vm_pages: int, rule: str = "fold") -> Any:
    """Map a recorded guest's page numbers onto a VM of `vm_pages` pages.

    A VM at least as large as the recorded guest keeps every page number (a guest given more
    memory than it was recorded with does not touch more during its boot; Linux touches
    memory on demand). A smaller VM maps page p by the rule:
      fold   p mod vm_pages: low memory, where firmware and the kernel image sit, keeps its
             numbers, and every 2 MB run stays contiguous (the default);
      scale  p * vm_pages // recorded_pages: the layout shrinks proportionally.
    Both alias distinct recorded pages onto one page, so a smaller VM touches fewer pages
    than the recording did; guest_trace.pages_touched is the recording's count.
    """
    if rule not in MAPPINGS:
        raise SettingsError(f"page mapping {rule!r} is not known; use one of {list(MAPPINGS)}")
    if vm_pages <= 0:
        raise SettingsError(f"the VM must have at least one page, got {vm_pages}")
    if vm_pages >= recorded_pages:
        return pages
    if rule == "fold":
        return (pages % np.uint32(vm_pages)).astype(np.uint32)
    return (pages.astype(np.uint64) * vm_pages // recorded_pages).astype(np.uint32)


class GuestTrace:
    """A recorded guest boot: pages touched per epoch of guest instructions, and disk requests.

    Load a shipped one by name (`GuestTrace.load("busybox")`) or any trace file by path.
    Arrays: epoch_offsets (int64, epochs + 1), pages (uint32), written (bool), disk_epoch
    (uint32), disk_offset (uint64 bytes), disk_length (uint32 bytes), disk_write (bool).
    """

    def __init__(self, path: Path, arrays: dict[str, np.ndarray], provenance: dict[str, Any]):
        self.path = path
        self.provenance = provenance
        for key in _ARRAYS:
            setattr(self, key, arrays[key])
        self.epoch_offsets: np.ndarray
        self.pages_array: np.ndarray = arrays["pages"]
        self.written: np.ndarray
        self.disk_epoch: np.ndarray
        self.disk_offset: np.ndarray
        self.disk_length: np.ndarray
        self.disk_write: np.ndarray

    @classmethod
    def load(cls, name_or_path: str | os.PathLike[str]) -> GuestTrace:
        text = os.fspath(name_or_path)
        path = Path(text)
        if not (path.suffix == ".npz" or os.sep in text or path.exists()):
            path = data_dir() / f"{text}.npz"
            if not path.exists():
                raise GuestTraceError(
                    f"no shipped guest named {text!r}; shipped: {shipped_names()} "
                    "(or give a trace file's path)"
                )
        try:
            with np.load(path, allow_pickle=False) as z:
                fmt = str(z["format"]) if "format" in z else None
                if fmt != FORMAT:
                    raise GuestTraceError(f"{path}: format {fmt!r}, expected {FORMAT!r}")
                arrays = {k: z[k] for k in _ARRAYS}
                provenance = json.loads(str(z["provenance"]))
        except (OSError, KeyError, ValueError) as exc:
            if isinstance(exc, GuestTraceError):
                raise
            raise GuestTraceError(f"{path}: not a readable vmmem guest trace: {exc}") from exc
        return cls(path, arrays, provenance)

    # -- what it is -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return str(self.provenance["name"])

    @property
    def kind(self) -> str:
        return str(self.provenance["kind"])

    @property
    def memory_size(self) -> int:
        """The recorded VM's RAM in bytes."""
        return int(self.provenance["memory_bytes"])

    @property
    def page_size(self) -> int:
        return int(self.provenance.get("page_size", PAGE_SIZE))

    @property
    def memory_pages(self) -> int:
        return self.memory_size // self.page_size

    @property
    def epochs(self) -> int:
        return int(self.epoch_offsets.size - 1)

    @property
    def epoch_instructions(self) -> int:
        return int(self.provenance["epoch_instructions"])

    @property
    def instructions(self) -> int:
        return int(self.provenance["instructions"])

    @property
    def entries(self) -> int:
        """Recorded (page, epoch) entries: what a replay feeds the core."""
        return int(self.pages_array.size)

    @cached_property
    def pages_touched(self) -> int:
        return int(np.unique(self.pages_array).size)

    @cached_property
    def pages_written(self) -> int:
        return int(np.unique(self.pages_array[self.written]).size)

    @property
    def disk_requests(self) -> int:
        return int(self.disk_epoch.size)

    @property
    def disk_bytes_read(self) -> int:
        return int(self.disk_length[~self.disk_write].astype(np.int64).sum())

    @property
    def disk_bytes_written(self) -> int:
        return int(self.disk_length[self.disk_write].astype(np.int64).sum())

    @property
    def disk_size(self) -> int:
        return int(self.provenance.get("disk_size", 0))

    def epoch_instructions_of(self, epoch: int) -> int:
        """Guest instructions in one epoch (the last one is partial)."""
        if epoch < self.epochs - 1:
            return self.epoch_instructions
        return self.instructions - self.epoch_instructions * (self.epochs - 1)

    def __repr__(self) -> str:
        return (
            f"GuestTrace({self.name!r}, {self.memory_size >> 20} MB, {self.epochs} epochs, "
            f"{self.pages_touched} pages touched)"
        )

    # -- per epoch ---------------------------------------------------------------------------

    def epoch(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Epoch i's pages (first-touch order) and their written flags."""
        a, b = int(self.epoch_offsets[i]), int(self.epoch_offsets[i + 1])
        return self.pages_array[a:b], self.written[a:b]

    @cached_property
    def disk_epoch_offsets(self) -> np.ndarray:
        """Index of each epoch's first disk request (epochs + 1 entries)."""
        return np.searchsorted(self.disk_epoch, np.arange(self.epochs + 1), side="left")

    def disk(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Epoch i's disk requests: byte offsets, byte lengths, write flags."""
        a, b = int(self.disk_epoch_offsets[i]), int(self.disk_epoch_offsets[i + 1])
        return self.disk_offset[a:b], self.disk_length[a:b], self.disk_write[a:b]
