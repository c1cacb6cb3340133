"""A small synthetic guest trace in format version 2 (several vCPUs), for tests: the arrays a
recording would write, built from a list of epochs, each its vCPU's and its pages.

    epochs = [Epoch(0, [1, 2]), Epoch(1, [7], written=[True]), Epoch(0, [3])]
    path = write_trace(tmp_path / "t.npz", epochs, disk=[Disk(epoch=1, offset=0)])
    GuestTrace.load(path).vcpu_epochs(0)  # -> [0, 2]

Each vCPU's instructions default to its whole epochs plus half an epoch for its last (the
partial one); `vcpu_instructions` sets them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vmmem.guests.trace import FORMAT, PAGE_SIZE


@dataclass(frozen=True)
class Epoch:
    vcpu: int
    pages: Sequence[int]
    written: Sequence[bool] = field(default_factory=tuple)  # default: none written


@dataclass(frozen=True)
class Disk:
    epoch: int  # the global epoch that issued it
    offset: int  # bytes
    length: int = 4096
    write: bool = False


def trace_arrays(
    epochs: Sequence[Epoch],
    *,
    disk: Sequence[Disk] = (),
    vcpus: int | None = None,
    vcpu_instructions: Sequence[int] | None = None,
    epoch_instructions: int = 1000,
    memory_bytes: int = 16 << 20,
    disk_size: int = 1 << 20,
    name: str = "synthetic-smp",
) -> dict[str, Any]:
    """The arrays of a version 2 trace file (np.savez(path, **arrays) writes it)."""
    vcpus = vcpus if vcpus is not None else 1 + max(e.vcpu for e in epochs)
    own = [sum(e.vcpu == v for e in epochs) for v in range(vcpus)]
    if vcpu_instructions is None:
        vcpu_instructions = [max(1, (n - 1) * epoch_instructions + epoch_instructions // 2)
                             for n in own]  # fmt: skip
    pages = [p for e in epochs for p in e.pages]
    written = [
        bool(e.written[i]) if i < len(e.written) else False
        for e in epochs
        for i in range(len(e.pages))
    ]
    offsets = np.cumsum([0, *(len(e.pages) for e in epochs)]).astype(np.int64)
    pages_arr = np.array(pages, np.uint32)
    written_arr = np.array(written, bool)
    lengths = np.array([d.length for d in disk], np.uint32)
    writes = np.array([d.write for d in disk], bool)
    provenance = {
        "format": FORMAT,
        "name": name,
        "kind": "a synthetic trace made by tests/tracebuild.py",
        "memory_bytes": memory_bytes,
        "page_size": PAGE_SIZE,
        "epoch_instructions": epoch_instructions,
        "epochs": len(epochs),
        "instructions": int(sum(vcpu_instructions)),
        "vcpus": vcpus,
        "vcpu_instructions": [int(n) for n in vcpu_instructions],
        "entries": len(pages),
        "pages_touched": int(np.unique(pages_arr).size),
        "pages_written": int(np.unique(pages_arr[written_arr]).size),
        "disk_size": disk_size,
        "disk_requests": len(disk),
        "disk_bytes_read": int(lengths[~writes].astype(np.int64).sum()),
        "disk_bytes_written": int(lengths[writes].astype(np.int64).sum()),
    }
    return {
        "format": np.array(FORMAT),
        "epoch_offsets": offsets,
        "pages": pages_arr,
        "written": written_arr,
        "epoch_vcpu": np.array([e.vcpu for e in epochs], np.uint16),
        "disk_epoch": np.array([d.epoch for d in disk], np.uint32),
        "disk_offset": np.array([d.offset for d in disk], np.uint64),
        "disk_length": lengths,
        "disk_write": writes,
        "provenance": np.array(json.dumps(provenance)),
    }


def write_trace(path: Path, epochs: Sequence[Epoch], **options: Any) -> str:
    """Write a version 2 trace to `path` (see trace_arrays) and return its path as text."""
    with open(path, "wb") as f:
        np.savez(f, **trace_arrays(epochs, **options))
    return str(path)
