"""A recorded guest trace (the .npz format of docs/GUESTS.md), loaded read-only."""

from __future__ import annotations

import json
import lzma
import math
import os
import struct
import threading
import zipfile
import zlib
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.lib import format as npy

from ..errors import GuestTraceError, SettingsError
from ..validate import control_characters, open_regular_file

__all__ = [
    "FORMAT", "FORMAT_V1", "FORMATS", "MAPPINGS", "MAX_VCPUS", "PAGE_SIZE", "GuestTrace",
    "map_pages", "shipped_names",
]  # fmt: skip

# The format a recording writes. Version 2 adds the vCPU of each epoch (epoch_vcpu) and the
# provenance's vcpus and vcpu_instructions; a version 1 file (one vCPU) still loads as one.
FORMAT = "vmmem-guest-trace/2"
FORMAT_V1 = "vmmem-guest-trace/1"
FORMATS = (FORMAT_V1, FORMAT)
PAGE_SIZE = 4096
MAPPINGS = ("fold", "scale")
_ARRAYS = (
    "epoch_offsets", "pages", "written", "epoch_vcpu", "disk_epoch", "disk_offset",
    "disk_length", "disk_write",
)  # fmt: skip

# Limits no recorded boot comes near, so that a hostile file cannot take the machine's memory
# or hours of a run. The Debian 12 boot: a 2.4 MB file, 1.8 M entries, 5,814 epochs, 988
# disk requests, 5.8 G instructions, a 512 MB VM, a 1 GB disk.
MAX_FILE_BYTES = 1 << 30
MAX_ENTRIES = 1 << 26  # 320 MiB of pages and flags
MAX_EPOCHS = 1 << 22
MAX_DISK_REQUESTS = 1 << 22
MAX_INSTRUCTIONS = 10**13  # over 80 minutes of guest CPU at the default 2 G/s
MAX_MEMORY_BYTES = 12 << 40  # Hyper-V's largest VM (generation 2): 12 TB
MAX_DISK_BYTES = 64 << 40  # the largest VHDX: 64 TB
MAX_REQUEST_BYTES = 64 << 20  # 50 x Linux's default largest block request (1,280 KiB)
MAX_VCPUS = 64  # the recorder's plugin keeps state for at most 64 (vmmem_trace.c)
_MAX_TEXT = {"format": 64, "provenance": 1 << 20}  # characters
_MAX_MEMBERS = 64  # zip entries: a trace has 9 (version 1) or 10
_ZIP_END = b"PK\x05\x06"
_ZIP_END_SIZE = 22
# dtype kind and the most elements of each array ("b" bool, "iu" any integer, "U" text).
_LAYOUT = {
    "format": ("U", 0),
    "provenance": ("U", 0),
    "epoch_offsets": ("iu", MAX_EPOCHS + 1),
    "pages": ("iu", MAX_ENTRIES),
    "written": ("b", MAX_ENTRIES),
    "epoch_vcpu": ("iu", MAX_EPOCHS),  # version 2 only
    "disk_epoch": ("iu", MAX_DISK_REQUESTS),
    "disk_offset": ("iu", MAX_DISK_REQUESTS),
    "disk_length": ("iu", MAX_DISK_REQUESTS),
    "disk_write": ("b", MAX_DISK_REQUESTS),
}
_DTYPES = {
    "epoch_offsets": np.int64,
    "pages": np.uint32,
    "epoch_vcpu": np.uint16,
    "disk_epoch": np.uint32,
    "disk_offset": np.uint64,
    "disk_length": np.uint32,
}
# Provenance keys docs/GUESTS.md lists, with their JSON types ("count": a whole number >= 0;
# "file": {file, bytes, sha256} or null). Other keys are kept unread: a later recorder may add.
_REQUIRED = ("name", "kind", "memory_bytes", "epoch_instructions", "instructions")
_PROVENANCE = {
    "format": "str", "name": "str", "kind": "str", "memory_bytes": "count",
    "page_size": "count", "epoch_instructions": "count", "epochs": "count",
    "instructions": "count", "accesses": "count", "stores": "count", "io_accesses": "count",
    "outside_ram_accesses": "count", "entries": "count", "pages_touched": "count",
    "pages_written": "count", "disk_size": "count", "disk_requests": "count",
    "disk_bytes_read": "count", "disk_bytes_written": "count", "qemu_version": "str",
    "qemu_command": "str", "kernel": "file", "initrd": "file", "disk_image": "file",
    "image": "object", "plugin_sha256": "str", "recorded_at": "str",
    "recording_seconds": "seconds", "vcpus": "count", "vcpu_instructions": "counts",
}  # fmt: skip
_REQUIRED_V2 = ("vcpus", "vcpu_instructions")


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long for a path, say: then it names no file
        return False


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
    Arrays: epoch_offsets (int64, epochs + 1), pages (uint32), written (bool), epoch_vcpu
    (uint16, the vCPU whose instructions each epoch counts; all 0 in a version 1 file),
    disk_epoch (uint32), disk_offset (uint64 bytes), disk_length (uint32 bytes), disk_write
    (bool). Epochs are global, in the order they ended during the recording (vCPUs
    interleaved); vcpu_epochs(v) picks one vCPU's.
    """

    def __init__(self, path: Path, arrays: dict[str, np.ndarray], provenance: dict[str, Any]):
        self.path = path
        self.provenance = provenance
        self.format = str(arrays["format"][()])  # the file's: FORMAT_V1 or FORMAT
        for key in _ARRAYS:
            setattr(self, key, arrays[key])
        self.epoch_offsets: np.ndarray
        self.pages_array: np.ndarray = arrays["pages"]
        self.written: np.ndarray
        self.epoch_vcpu: np.ndarray
        self.disk_epoch: np.ndarray
        self.disk_offset: np.ndarray
        self.disk_length: np.ndarray
        self.disk_write: np.ndarray

    @classmethod
    def load(cls, name_or_path: str | os.PathLike[str]) -> GuestTrace:
        """A shipped guest by name, or a trace file by path, checked whole (docs/GUESTS.md,
        "The trace file"): GuestTraceError naming the file and the field otherwise."""
        try:
            text = os.fsdecode(os.fspath(name_or_path))
        except TypeError:
            text = ""
        if not text or "\x00" in text:
            raise GuestTraceError(f"{name_or_path!r} is neither a shipped guest's name nor a path")
        path = Path(text)
        if not (path.suffix == ".npz" or os.sep in text or _exists(path)):
            path = data_dir() / f"{text}.npz"
            if not _exists(path):
                raise GuestTraceError(
                    f"no shipped guest named {text!r}; shipped: {shipped_names()} "
                    "(or give a trace file's path)"
                )
        where = str(path)
        try:
            f, st = open_regular_file(path)
        except FileNotFoundError:
            raise GuestTraceError("no such file", path=where) from None
        except IsADirectoryError:
            raise GuestTraceError(
                "is a folder; expected a guest trace (.npz)", path=where
            ) from None
        except OSError as exc:
            raise GuestTraceError(f"cannot read: {exc.strerror}", path=where) from None
        except ValueError as exc:  # a FIFO, a device: never opened blocking, never read
            raise GuestTraceError(f"{exc}; expected a guest trace (.npz)", path=where) from None
        with f:
            key = (where, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            with _CACHE_LOCK:
                hit = _CACHE.get(key)
            if hit is None:
                hit = _read_trace(where, f, st.st_size)
                with _CACHE_LOCK:
                    _CACHE[key] = hit
                    while len(_CACHE) > _CACHE_SIZE:
                        del _CACHE[next(iter(_CACHE))]
        arrays, provenance = hit
        # A fresh provenance for each caller; the arrays are shared, and read-only.
        return cls(path, arrays, json.loads(provenance))

    def check_page_size(self, page_size: int) -> None:
        """Raise GuestTraceError (naming this file) unless memory of `page_size`-byte pages
        can replay it: its page numbers are of 4 KiB pages."""
        if page_size != self.page_size:
            raise GuestTraceError(
                f"the trace's page numbers are of {self.page_size}-byte pages; memory of "
                f"{page_size}-byte pages cannot replay them",
                path=str(self.path),
                field="provenance.page_size",
            )

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
    def vcpus(self) -> int:
        """The recorded VM's vCPUs (1 for a version 1 trace)."""
        return len(self.vcpu_instructions)

    @cached_property
    def vcpu_instructions(self) -> list[int]:
        """Guest instructions each vCPU ran; they sum to `instructions`."""
        counts = self.provenance.get("vcpu_instructions", [self.instructions])
        return [int(n) for n in counts]

    @cached_property
    def _vcpu_epoch_lists(self) -> tuple[np.ndarray, ...]:
        order = np.argsort(self.epoch_vcpu, kind="stable").astype(np.int64)
        bounds = np.searchsorted(self.epoch_vcpu[order], np.arange(self.vcpus + 1))
        lists = tuple(order[bounds[v] : bounds[v + 1]] for v in range(self.vcpus))
        for arr in lists:
            arr.flags.writeable = False
        return lists

    def vcpu_epochs(self, vcpu: int) -> np.ndarray:
        """The global indices (int64, increasing) of vCPU `vcpu`'s epochs: its own
        instructions in order, epoch_instructions each, the last partial."""
        if not 0 <= vcpu < self.vcpus:
            raise IndexError(f"vCPU {vcpu}: the trace has vCPUs 0 to {self.vcpus - 1}")
        return self._vcpu_epoch_lists[vcpu]

    @cached_property
    def disk_vcpu(self) -> np.ndarray:
        """The vCPU that issued each disk request (uint16): its epoch's vCPU."""
        out: np.ndarray = self.epoch_vcpu[self.disk_epoch]
        out.flags.writeable = False
        return out

    @cached_property
    def _last_epoch_of_vcpu(self) -> np.ndarray:
        return np.array([int(e[-1]) for e in self._vcpu_epoch_lists], dtype=np.int64)

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
        """Guest instructions in global epoch `epoch`: epoch_instructions, but the last epoch
        of its vCPU is partial (what that vCPU ran after its whole epochs)."""
        if not 0 <= epoch < self.epochs:
            raise IndexError(f"epoch {epoch}: the trace has epochs 0 to {self.epochs - 1}")
        vcpu = int(self.epoch_vcpu[epoch])
        if epoch != self._last_epoch_of_vcpu[vcpu]:
            return self.epoch_instructions
        whole = self._vcpu_epoch_lists[vcpu].size - 1
        return self.vcpu_instructions[vcpu] - self.epoch_instructions * whole

    def __repr__(self) -> str:
        vcpus = f", {self.vcpus} vCPUs" if self.vcpus > 1 else ""
        return (
            f"GuestTrace({self.name!r}, {self.memory_size >> 20} MB{vcpus}, {self.epochs} "
            f"epochs, {self.pages_touched} pages touched)"
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


# -- reading and checking a trace file ---------------------------------------------------------
# Loaded traces by (path, device, inode, size, mtime, ctime): a run loads its guest once per VM
# and per check. Holds the checked arrays (read-only) and the provenance's JSON text.
_CACHE: dict[tuple[Any, ...], tuple[dict[str, np.ndarray], str]] = {}
_CACHE_SIZE = 4
_CACHE_LOCK = threading.Lock()

# What a damaged archive raises from zipfile, zlib, lzma, bz2 and numpy's header parser.
_READ_ERRORS = (
    OSError, EOFError, ValueError, KeyError, IndexError, OverflowError, RuntimeError,
    NotImplementedError, struct.error, zipfile.BadZipFile, zlib.error, lzma.LZMAError,
)  # fmt: skip


def _read_trace(where: str, f: IO[bytes], size: int) -> tuple[dict[str, np.ndarray], str]:
    """The checked arrays of an open trace file of `size` bytes, and its provenance text."""
    if size > MAX_FILE_BYTES:
        raise GuestTraceError(
            f"is {size:,} bytes; a guest trace may have at most {MAX_FILE_BYTES:,}", path=where
        )
    if size < _ZIP_END_SIZE:
        what = "is empty" if size == 0 else f"is {size} bytes"
        raise GuestTraceError(f"{what}: not a guest trace (a .npz zip archive)", path=where)
    try:
        _check_zip_directory(where, f, size)
        raw: dict[str, np.ndarray] = {}
        with zipfile.ZipFile(f) as z:
            names = {info.filename: info for info in z.infolist()}
            for key, (kinds, most) in _LAYOUT.items():
                if key == "epoch_vcpu" and str(raw["format"][()]) != FORMAT:
                    continue  # version 1 (one vCPU) has none; another format is refused
                info = names.get(f"{key}.npy")
                if info is None:
                    raise GuestTraceError("missing: not a vmmem guest trace", path=where, field=key)
                with z.open(info) as member:
                    raw[key] = _read_array(where, key, member, kinds, most)
    except GuestTraceError:
        raise
    except _READ_ERRORS as exc:
        raise GuestTraceError(
            f"not a readable vmmem guest trace: {type(exc).__name__}: {exc}", path=where
        ) from None
    return _check_trace(where, raw)


def _check_zip_directory(where: str, f: IO[bytes], size: int) -> None:
    """Refuse an archive whose central directory is larger than a trace's before zipfile
    reads it whole. Finds the end record where zipfile looks for it."""
    tail = min(size, 65536 + _ZIP_END_SIZE)
    f.seek(size - tail)
    data = f.read(tail)
    if data[-_ZIP_END_SIZE : -_ZIP_END_SIZE + 4] == _ZIP_END and data[-2:] == b"\0\0":
        start = len(data) - _ZIP_END_SIZE
    else:
        start = data.rfind(_ZIP_END)
    if start < 0 or len(data) - start < _ZIP_END_SIZE:
        raise GuestTraceError("not a zip archive (a guest trace is a .npz)", path=where)
    if start >= 20 and data[start - 20 : start - 16] == b"PK\x06\x07":
        raise GuestTraceError(
            "a ZIP64 archive: a guest trace is a plain zip (numpy.savez_compressed)", path=where
        )
    entries, cd_size = struct.unpack("<HL", data[start + 10 : start + 16])
    if entries > _MAX_MEMBERS or cd_size > _MAX_MEMBERS * 1024:
        raise GuestTraceError(
            f"a zip archive of {entries} entries ({cd_size:,} bytes of directory); "
            f"a guest trace has {len(_LAYOUT)}",
            path=where,
        )
    f.seek(0)


def _read_array(where: str, key: str, member: IO[bytes], kinds: str, most: int) -> np.ndarray:
    """One .npy member, its header checked (dtype, shape, size) before its data is read."""
    version = npy.read_magic(member)
    if version == (1, 0):
        shape, fortran, dtype = npy.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, fortran, dtype = npy.read_array_header_2_0(member)
    else:
        raise GuestTraceError(f"npy format version {version} is not read", path=where, field=key)
    what = {"U": "text", "b": "bool", "iu": "integers"}[kinds]
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise GuestTraceError(f"dtype {dtype}: expected {what}", path=where, field=key)
    if dtype.kind not in kinds:
        raise GuestTraceError(f"dtype {dtype}: expected {what}", path=where, field=key)
    if kinds == "U":
        if shape != ():
            raise GuestTraceError(f"shape {shape}: expected one string", path=where, field=key)
        if dtype.itemsize // 4 > _MAX_TEXT[key]:
            raise GuestTraceError(
                f"{dtype.itemsize // 4:,} characters: at most {_MAX_TEXT[key]:,}",
                path=where,
                field=key,
            )
    else:
        if len(shape) != 1:
            raise GuestTraceError(f"shape {shape}: expected one dimension", path=where, field=key)
        if dtype.itemsize > 8:
            raise GuestTraceError(f"dtype {dtype}: expected {what}", path=where, field=key)
        if shape[0] > most:
            raise GuestTraceError(
                f"{shape[0]:,} elements: a guest trace has at most {most:,}",
                path=where,
                field=key,
            )
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    data = member.read(nbytes)
    if len(data) != nbytes:
        raise GuestTraceError(
            f"ends after {len(data):,} of its {nbytes:,} bytes", path=where, field=key
        )
    del fortran  # one dimension or none: the order is the same either way
    return np.frombuffer(data, dtype=dtype, count=count).reshape(shape)


def _check_trace(where: str, raw: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str]:
    """Every rule of docs/GUESTS.md, "The trace file"; the arrays in their documented dtypes."""

    def fail(field: str, message: str) -> GuestTraceError:
        return GuestTraceError(message, path=where, field=field)

    fmt = str(raw["format"][()])
    if fmt not in FORMATS:
        raise fail("format", f"{fmt[:64]!r}, expected one of {list(FORMATS)}")
    text = str(raw["provenance"][()])
    try:
        prov = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise fail("provenance", f"not JSON: {str(exc)[:200]}") from None
    if not isinstance(prov, dict):
        raise fail("provenance", f"expected a JSON object, got {type(prov).__name__}")
    for key in _REQUIRED + (_REQUIRED_V2 if fmt != FORMAT_V1 else ()):
        if key not in prov:
            raise fail(f"provenance.{key}", "missing")
    for key, kind in _PROVENANCE.items():
        if key in prov:
            _check_provenance_value(prov[key], kind, lambda m, k=key: fail(f"provenance.{k}", m))
    if prov.get("format", fmt) != fmt:
        raise fail("provenance.format", f"{str(prov['format'])[:64]!r}, but the file's is {fmt!r}")
    name = prov["name"]
    if not name.strip() or len(name) > 200 or control_characters(name):
        raise fail(
            "provenance.name", f"expected a printable name of 1 to 200 characters: {name[:64]!r}"
        )
    page_size = prov.get("page_size", PAGE_SIZE)
    if page_size != PAGE_SIZE:
        raise fail("provenance.page_size", f"{page_size}: a trace's pages are 4 KiB ({PAGE_SIZE})")
    memory = prov["memory_bytes"]
    if not page_size <= memory <= MAX_MEMORY_BYTES or memory % page_size:
        raise fail(
            "provenance.memory_bytes",
            f"{memory:,}: expected a multiple of {page_size} from {page_size} to 12 TB "
            "(Hyper-V's largest VM)",
        )

    offsets, pages, written = raw["epoch_offsets"], raw["pages"], raw["written"]
    n = pages.size
    epochs = offsets.size - 1
    if epochs < 1:
        raise fail("epoch_offsets", f"{offsets.size} elements: expected at least 2 (one epoch)")
    if written.size != n:
        raise fail("written", f"{written.size:,} flags for {n:,} pages: expected one per page")
    if np.any(offsets[1:] < offsets[:-1]):
        raise fail("epoch_offsets", "decreases: expected offsets that never decrease")
    if int(offsets[0]) != 0 or int(offsets[-1]) != n:
        raise fail(
            "epoch_offsets",
            f"runs from {int(offsets[0]):,} to {int(offsets[-1]):,}: expected 0 to {n:,} "
            "(the number of pages)",
        )
    memory_pages = memory // page_size
    if n and (int(pages.min()) < 0 or int(pages.max()) >= memory_pages):
        bad = int(pages.min()) if int(pages.min()) < 0 else int(pages.max())
        raise fail(
            "pages",
            f"page {bad:,} lies outside the recorded memory (0 to {memory_pages - 1:,}, "
            f"provenance.memory_bytes {memory:,})",
        )

    per_epoch = prov["epoch_instructions"]
    instructions = prov["instructions"]
    if per_epoch < 1:
        raise fail("provenance.epoch_instructions", f"{per_epoch}: expected at least 1")
    epoch_vcpu, vcpu_epochs, vcpu_instructions = _check_vcpus(fail, fmt, raw, prov, epochs)
    if sum(vcpu_instructions) != instructions:
        raise fail(
            "provenance.vcpu_instructions",
            f"sum to {sum(vcpu_instructions):,}, but provenance.instructions is {instructions:,}",
        )
    if instructions > MAX_INSTRUCTIONS:
        raise fail("provenance.instructions", f"{instructions:,}: at most {MAX_INSTRUCTIONS:,}")
    # Each vCPU's epochs count its own instructions. The recorder opens a vCPU's epoch when
    # one of its blocks reaches the boundary: its last epoch may hold no instruction at all,
    # never a whole epoch more.
    for vcpu, (count, own) in enumerate(zip(vcpu_instructions, vcpu_epochs, strict=True)):
        low, high = (own - 1) * per_epoch, min(MAX_INSTRUCTIONS, (own + 1) * per_epoch)
        if not max(1, low) <= count <= high:
            field, whose = "provenance.instructions", ""
            if len(vcpu_instructions) > 1:
                field, whose = "provenance.vcpu_instructions", f" (vCPU {vcpu})"
            raise fail(
                field,
                f"{count:,}{whose} for {own:,} epochs of {per_epoch:,}: expected at least "
                f"{max(1, low):,} (every epoch but the last is whole) and at most {high:,}",
            )

    d_epoch, d_off, d_len, d_write = (
        raw[k] for k in ("disk_epoch", "disk_offset", "disk_length", "disk_write")
    )
    r = d_epoch.size
    for key, arr in (("disk_offset", d_off), ("disk_length", d_len), ("disk_write", d_write)):
        if arr.size != r:
            raise fail(key, f"{arr.size:,} elements for {r:,} disk requests (disk_epoch)")
    disk_size = prov.get("disk_size", 0)
    if disk_size > MAX_DISK_BYTES:
        raise fail("provenance.disk_size", f"{disk_size:,}: at most 64 TB (the largest VHDX)")
    if r:
        if int(d_epoch.min()) < 0 or int(d_epoch.max()) >= epochs:
            raise fail("disk_epoch", f"an epoch outside 0 to {epochs - 1:,}")
        if np.any(d_epoch[1:] < d_epoch[:-1]):
            raise fail("disk_epoch", "decreases: expected epochs that never decrease")
        shortest, longest = int(d_len.min()), int(d_len.max())
        if shortest < 1 or longest > MAX_REQUEST_BYTES:
            raise fail(
                "disk_length",
                f"a request of {shortest if shortest < 1 else longest:,} bytes: expected 1 "
                f"to {MAX_REQUEST_BYTES:,}",
            )
        if int(d_off.min()) < 0 or int(d_off.max()) >= disk_size:
            raise fail(
                "disk_offset",
                f"a request at {int(d_off.max()) if int(d_off.min()) >= 0 else int(d_off.min()):,}"
                f" lies outside the disk (provenance.disk_size {disk_size:,})",
            )
        end = d_off.astype(np.int64) + d_len.astype(np.int64)
        if int(end.max()) > disk_size:
            raise fail(
                "disk_offset",
                f"a request ends at byte {int(end.max()):,}, past the disk's end "
                f"(provenance.disk_size {disk_size:,})",
            )
    counts = {"epochs": epochs, "entries": n, "disk_requests": r}
    if r:
        counts["disk_bytes_read"] = int(d_len[~d_write].astype(np.int64).sum())
        counts["disk_bytes_written"] = int(d_len[d_write].astype(np.int64).sum())
    for key, actual in counts.items():
        if key in prov and prov[key] != actual:
            raise fail(f"provenance.{key}", f"{prov[key]:,}, but the arrays hold {actual:,}")
    for key in ("pages_touched", "pages_written"):
        if prov.get(key, 0) > n:
            raise fail(f"provenance.{key}", f"{prov[key]:,}, more than the {n:,} entries")

    arrays = {"format": np.array(fmt)}
    raw = {**raw, "epoch_vcpu": epoch_vcpu}
    for key in _ARRAYS:
        arr = raw[key]
        if key in _DTYPES:
            arr = arr.astype(_DTYPES[key], copy=False)  # in range: checked above
        arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)
        arr.flags.writeable = False
        arrays[key] = arr
    return arrays, text


def _check_vcpus(
    fail: Any, fmt: str, raw: dict[str, np.ndarray], prov: dict[str, Any], epochs: int
) -> tuple[np.ndarray, list[int], list[int]]:
    """The trace's epoch_vcpu (all 0 in a version 1 file), each vCPU's epoch count and
    instructions, checked: vcpus 1 to MAX_VCPUS, one instruction count per vCPU, every vCPU
    with at least one epoch (a vCPU that never ran cannot boot)."""
    vcpus = prov.get("vcpus", 1)
    if not 1 <= vcpus <= MAX_VCPUS:
        raise fail("provenance.vcpus", f"{vcpus:,}: expected 1 to {MAX_VCPUS}")
    if fmt == FORMAT_V1:
        if vcpus != 1:
            raise fail("provenance.vcpus", f"{vcpus:,}: a {FORMAT_V1} trace has one vCPU")
        epoch_vcpu = np.zeros(epochs, np.uint16)
    else:
        epoch_vcpu = raw["epoch_vcpu"]
        if epoch_vcpu.size != epochs:
            raise fail(
                "epoch_vcpu", f"{epoch_vcpu.size:,} elements for {epochs:,} epochs: one each"
            )
        if int(epoch_vcpu.min()) < 0 or int(epoch_vcpu.max()) >= vcpus:
            bad = int(epoch_vcpu.min()) if int(epoch_vcpu.min()) < 0 else int(epoch_vcpu.max())
            raise fail("epoch_vcpu", f"vCPU {bad:,}: expected 0 to {vcpus - 1} (provenance.vcpus)")
    own = np.bincount(epoch_vcpu.astype(np.int64), minlength=vcpus)
    if int(own.min()) == 0:
        raise fail(
            "epoch_vcpu",
            f"vCPU {int(np.argmin(own))} has no epoch: every one of the {vcpus} vCPUs ran",
        )
    counts = prov.get("vcpu_instructions", [prov["instructions"]])
    if len(counts) != vcpus:
        raise fail(
            "provenance.vcpu_instructions",
            f"{len(counts)} counts for {vcpus} vCPUs (provenance.vcpus): one each",
        )
    return epoch_vcpu, [int(n) for n in own], counts


def _check_provenance_value(value: Any, kind: str, fail: Any) -> None:
    if kind == "str":
        if not isinstance(value, str):
            raise fail(f"expected a string, got {_json_type(value)}")
    elif kind == "count":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise fail(f"expected a whole number >= 0, got {str(value)[:64]}")
    elif kind == "seconds":
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise fail(f"expected a number of seconds >= 0, got {str(value)[:64]}")
    elif kind == "counts":
        if not isinstance(value, list) or len(value) > MAX_VCPUS:
            raise fail(f"expected a list of at most {MAX_VCPUS} whole numbers >= 0")
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int) or item < 0:
                raise fail(f"expected whole numbers >= 0, got {str(item)[:64]}")
    elif kind == "object":
        if not isinstance(value, dict):
            raise fail(f"expected a JSON object, got {_json_type(value)}")
    elif value is not None:  # "file": {file, bytes, sha256} or null
        if (
            not isinstance(value, dict)
            or not isinstance(value.get("file"), str)
            or not isinstance(value.get("sha256"), str)
            or isinstance(value.get("bytes"), bool)
            or not isinstance(value.get("bytes"), int)
            or value["bytes"] < 0
        ):
            raise fail("expected {file, bytes, sha256} or null")


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false"}
    if value is None:
        return "null"
    return names.get(type(value), f"the number {str(value)[:64]}")
