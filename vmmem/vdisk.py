"""A VM's virtual disk: a preallocated file read and written with O_DIRECT, so that a guest's
disk requests reach the device as they would from a VHDX under Hyper-V.

The file is created once (O_CREAT | O_EXCL | O_NOFOLLOW, mode 0600, space reserved with
posix_fallocate, then written with zeros once so its extents are real: a filesystem answers
reads of fallocated-but-unwritten extents with zeros and no device I/O) and reused by
every later run that asks for the same path and size; vmmem never deletes it unless
`delete()` is called (or `vmmem clean --disks`). Its contents do not matter: a request reads
into, or writes from, one page-aligned buffer.

A disk is used again only when it is provably one vmmem made: a regular file (not a symlink),
owned by the running user, with one name (link count 1: a hard link could be a user's file),
of the disk's size plus one 4 KiB block past the guest's end that holds vmmem's marker (a
magic, the size and a SHA-256 of both, written last when the disk was made; the guest never
reaches it). Anything else is refused with VirtualDiskError naming the file and why, and is
never written.

Requests are issued from Python, one `os.preadv`/`os.pwritev` per request on the O_DIRECT
descriptor, batched one epoch per call of `issue()`. The Python cost per request is a few
microseconds against a device round trip of tens of microseconds (SSD) to milliseconds (HDD);
tests/test_vdisk.py measures that share and holds it under 5 %.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import mmap
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import SettingsError, VirtualDiskError
from .sizes import SizeLike, format_size, parse_size

__all__ = [
    "ALIGN",
    "MARKER_BYTES",
    "DiskIO",
    "KeptDisk",
    "VirtualDisk",
    "disk_problem",
    "find_kept_disks",
    "remove_kept_disk",
]

ALIGN = 4096  # O_DIRECT alignment of offsets, lengths and the buffer (a 4Kn device's block)
MARKER_BYTES = ALIGN  # vmmem's marker: one block past the guest's end of the disk
_MAGIC = b"vmmem virtual disk v1\n"
DISK_SUFFIX = ".vmdisk"
# The names the Hyper-V layer gives its disks (settings.vhd_file_name): <vm>-<MB>MB.vmdisk.
_DISK_NAME_RE = re.compile(r"^(?P<vm>.+)-(?P<mb>[0-9]+)MB\.vmdisk$")


def _marker(size: int) -> bytes:
    """The marker block: magic, a JSON line (tool, size, when), and the SHA-256 of both."""
    body = json.dumps(
        {"tool": "vmmem", "size": size, "created": round(time.time(), 3)}, sort_keys=True
    ).encode()
    payload = _MAGIC + body + b"\n"
    return (payload + hashlib.sha256(payload).hexdigest().encode() + b"\n").ljust(ALIGN, b"\0")


def _marker_size(block: bytes) -> int | None:
    """The guest size a marker block records, or None when it is not an intact vmmem marker."""
    if not block.startswith(_MAGIC):
        return None
    lines = block.rstrip(b"\0").split(b"\n")
    if len(lines) < 3:
        return None
    payload = lines[0] + b"\n" + lines[1] + b"\n"
    if hashlib.sha256(payload).hexdigest().encode() != lines[2]:
        return None
    try:
        rec = json.loads(lines[1])
        size = rec["size"] if rec.get("tool") == "vmmem" else None
    except (ValueError, AttributeError, KeyError):
        return None
    return size if isinstance(size, int) and size > 0 else None


def _problem(fd: int, st: os.stat_result, size: int | None) -> str | None:
    """Why the open file `fd` is not a disk vmmem made (of `size`, if given), or None.
    Reads only its last block (the marker); never writes."""
    me = os.geteuid()
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_uid != me:
        return (
            f"is owned by uid {st.st_uid}, not by you (uid {me}): vmmem uses and deletes only "
            "disks it made"
        )
    if st.st_nlink != 1:
        return (
            f"has {st.st_nlink} names (hard links), so it may be someone's file under another "
            "name: vmmem uses and deletes only a disk with one name"
        )
    if size is not None and st.st_size != size + MARKER_BYTES:
        old = " (a disk of an older vmmem, without its marker?)" if st.st_size == size else ""
        return (
            f"exists with {st.st_size} bytes, not the {size + MARKER_BYTES} of a "
            f"{format_size(size)} vmmem disk{old}; vmmem does not resize or delete it: remove "
            "it or choose another path or size"
        )
    if st.st_size < 2 * MARKER_BYTES or st.st_size % ALIGN:
        return "is not a vmmem disk (its size is not a whole number of 4 KiB blocks plus one)"
    try:
        block = os.pread(fd, MARKER_BYTES, st.st_size - MARKER_BYTES)
    except OSError as exc:
        return f"cannot be read to check vmmem's marker: {exc.strerror or exc}"
    recorded = _marker_size(block)
    if recorded is None:
        return (
            "has no vmmem marker in its last block: vmmem did not make it (or a run was "
            "stopped while making it); vmmem does not use or delete it: remove it yourself "
            "or choose another path"
        )
    if recorded != st.st_size - MARKER_BYTES:
        return f"has a vmmem marker for {recorded} bytes, not its own {st.st_size - MARKER_BYTES}"
    return None


def disk_problem(path: str | os.PathLike[str], size: int | None = None) -> str | None:
    """Why the existing file at `path` is not a disk vmmem made (of `size` guest bytes, when
    given): "is a symbolic link", "is owned by uid N ...", "has 2 names ...", a size or marker
    problem; None when it is one. Opens without following a symlink and without blocking on a
    FIFO; reads only the marker block."""
    p = os.path.abspath(os.fspath(path))
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link; vmmem does not follow one to a disk"
        return f"cannot be opened: {exc.strerror or exc}"
    try:
        return _problem(fd, os.fstat(fd), size)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class KeptDisk:
    """A `*.vmdisk` file found in a folder: kept between runs on purpose."""

    path: str
    size: int  # bytes of the file
    allocated: int  # bytes its blocks take on the filesystem
    problem: str | None  # None: provably a disk vmmem made (and may delete)

    @property
    def ours(self) -> bool:
        return self.problem is None

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "size": self.size,
            "allocated": self.allocated,
            "vmmem_made": self.ours,
            "problem": self.problem,
        }


def find_kept_disks(folder: str | os.PathLike[str]) -> list[KeptDisk]:
    """The `<vm>-<N>MB.vmdisk` files directly in `folder`, each with whether vmmem provably
    made it (symlinks are listed, as not vmmem's)."""
    top = os.path.abspath(os.fspath(folder))
    try:
        names = sorted(os.listdir(top))
    except OSError:
        return []
    out = []
    for name in names:
        m = _DISK_NAME_RE.match(name)
        if m is None:
            continue
        path = os.path.join(top, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        problem = disk_problem(path, int(m["mb"]) * 2**20)
        out.append(KeptDisk(path, st.st_size, st.st_blocks * 512, problem))
    return out


def remove_kept_disk(disk: KeptDisk) -> bool:
    """Delete a kept disk if it is still provably vmmem's (checked again on the open file, and
    its name must still be that file). Returns whether it was deleted."""
    m = _DISK_NAME_RE.match(os.path.basename(disk.path))
    if m is None:
        return False
    try:
        fd = os.open(disk.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if _problem(fd, st, int(m["mb"]) * 2**20) is not None:
            return False
        now = os.lstat(disk.path)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return False
        os.unlink(disk.path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


@dataclass(frozen=True)
class DiskIO:
    """What one `issue()` did: requests, bytes asked for, and bytes moved (after alignment)."""

    requests: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    seconds: float = 0.0


class VirtualDisk:
    """A virtual-disk file of `size` bytes at `path`, opened with O_DIRECT.

    Created (0600, preallocated, `size` plus vmmem's marker block) when absent; reused only
    when present as a disk vmmem made (see the module docstring). Raises VirtualDiskError (an
    OSError) with the path when the folder is missing, the path is a symbolic link, not a
    regular file, owned by another user, has more than one name, has another size or no vmmem
    marker, the filesystem has no room (the half-made file is removed) or does not support
    O_DIRECT. A refused file is never written.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        size: SizeLike,
        *,
        on_create: Callable[[str, os.stat_result], None] | None = None,
        on_made: Callable[[str], None] | None = None,
    ) -> None:
        """Open the disk at `path`, making it (zero-filled, then vmmem's marker) if there is
        none. `on_create(path, stat)` is called as soon as a new file exists and `on_made(path)`
        once it is whole, so a run's manifest can name a disk whose making a SIGKILL cut short
        (by its inode: only that very file is ever removed as unfinished)."""
        self.path = os.path.abspath(os.fspath(path))
        self.size = parse_size(size, "virtual disk size")
        if self.size <= 0 or self.size % ALIGN:
            raise SettingsError(
                f"virtual disk size must be a positive multiple of {ALIGN} bytes, got {self.size}"
            )
        self.created = False
        self._fd = -1
        self._buf: mmap.mmap | None = None
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_DIRECT
        try:
            fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            self.created = True
        except FileExistsError:
            fd = self._open_existing(flags)
        except OSError as exc:
            raise self._error(exc, "creating") from exc
        self._fd = fd
        if self.created:
            try:
                if on_create is not None:
                    on_create(self.path, os.fstat(fd))
                os.posix_fallocate(fd, 0, self.size + MARKER_BYTES)
                self._fill()
                if on_made is not None:
                    on_made(self.path)
            except OSError as exc:
                self.close()
                os.unlink(self.path)
                raise self._error(exc, f"reserving {format_size(self.size)} for") from exc
            except BaseException:
                self.close()
                os.unlink(self.path)
                raise

    def _fill(self) -> None:
        """Write zeros over the whole file once, as creating a fixed VHDX does: fallocate
        alone leaves unwritten extents, which a filesystem reads back as zeros without
        touching the device, so boot reads would cost nothing."""
        chunk = 1 << 20
        buf = self._buffer(chunk)
        try:
            for start in range(0, self.size, chunk):
                n = min(chunk, self.size - start)
                os.pwritev(self._fd, [buf[:n]], start)
            # The marker last: a disk whose making was cut short has none, and is refused.
            buf[:MARKER_BYTES] = _marker(self.size)
            os.pwritev(self._fd, [buf[:MARKER_BYTES]], self.size)
            buf[:MARKER_BYTES] = bytes(MARKER_BYTES)
            os.fsync(self._fd)
        finally:
            buf.release()

    def _open_existing(self, flags: int) -> int:
        """Open an existing disk for reuse, only when it is provably vmmem's: checked on the
        open file (fstat and its marker), so nothing can be swapped in between."""
        try:
            # O_NONBLOCK: a FIFO in the disk's place must not hang the open (no effect on a
            # file); O_DIRECT once it is checked (the marker is read through the page cache).
            fd = os.open(self.path, (flags & ~os.O_DIRECT) | os.O_NONBLOCK)
        except OSError as exc:
            raise self._error(exc, "opening") from exc
        try:
            problem = _problem(fd, os.fstat(fd), self.size)
            if problem is None:
                # The same open file, now with O_DIRECT for the guest's requests.
                fcntl.fcntl(fd, fcntl.F_SETFL, os.O_DIRECT)
                return fd
        except OSError as exc:
            os.close(fd)
            raise self._error(exc, "opening") from exc
        os.close(fd)
        raise VirtualDiskError(errno.EEXIST, f"virtual disk {self.path} {problem}", self.path)

    def _error(self, exc: OSError, doing: str) -> VirtualDiskError:
        why = {
            errno.ELOOP: "the path is a symbolic link; vmmem does not follow one to a disk",
            errno.ENOENT: "its folder does not exist",
            errno.ENOSPC: "no space left on the filesystem",
            errno.EINVAL: "the filesystem does not support O_DIRECT (tmpfs?)",
            errno.EACCES: "permission denied",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        return VirtualDiskError(
            exc.errno or errno.EIO, f"{doing} virtual disk {self.path}: {why}", self.path
        )

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._buf is not None:
            self._buf.close()
            self._buf = None

    def delete(self) -> None:
        """Close and remove the file (the only way vmmem removes a virtual disk), but only
        while its path still names the file this disk opened: a file someone renamed or put
        in its place is left alone. A closed disk deletes nothing."""
        ours = False
        if self._fd >= 0:
            try:
                mine, now = os.fstat(self._fd), os.lstat(self.path)
                ours = (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)
            except OSError:
                pass
        self.close()
        if ours:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> VirtualDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("created" if self.created else "reused")
        return f"VirtualDisk({self.path!r}, {format_size(self.size)}, {state})"

    def _buffer(self, n: int) -> memoryview:
        if self._buf is None or len(self._buf) < n:
            if self._buf is not None:
                self._buf.close()
            self._buf = mmap.mmap(-1, max(n, 1 << 20))  # anonymous: page-aligned
        return memoryview(self._buf)[:n]

    # -- I/O --------------------------------------------------------------------------------

    def _span(self, offset: int, length: int) -> tuple[int, int]:
        """The aligned span covering [offset, offset + length), clipped to the disk."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise SettingsError(
                f"disk request {offset}+{length} lies outside the {self.size}-byte disk"
            )
        start = offset - offset % ALIGN
        end = min(self.size, -(-(offset + length) // ALIGN) * ALIGN)
        return start, end - start

    def read(self, offset: int, length: int) -> int:
        """Read the aligned span covering the request from the device; returns bytes read."""
        return self._io(offset, length, False)

    def write(self, offset: int, length: int) -> int:
        """Write the aligned span covering the request to the device; returns bytes written."""
        return self._io(offset, length, True)

    def _io(self, offset: int, length: int, write: bool) -> int:
        if self.closed:
            raise VirtualDiskError(errno.EBADF, f"virtual disk {self.path} is closed", self.path)
        start, n = self._span(int(offset), int(length))
        if n == 0:
            return 0
        buf = self._buffer(n)
        try:
            if write:
                done = os.pwritev(self._fd, [buf], start)
            else:
                done = os.preadv(self._fd, [buf], start)
        except OSError as exc:
            raise self._error(exc, "writing" if write else "reading") from exc
        finally:
            buf.release()
        if done != n:
            raise VirtualDiskError(
                errno.EIO, f"virtual disk {self.path}: short transfer at {start}", self.path
            )
        return n

    def issue(self, offsets: Any, lengths: Any, writes: Any = None) -> DiskIO:
        """Issue a batch of requests in order (one epoch's): byte offsets and lengths, and
        optional write flags (default: all reads). Returns what reached the device."""
        import time

        off = np.asarray(offsets, dtype=np.int64)
        ln = np.asarray(lengths, dtype=np.int64)
        wr = np.zeros(off.shape, bool) if writes is None else np.asarray(writes, dtype=bool)
        if not off.shape == ln.shape == wr.shape or off.ndim != 1:
            raise SettingsError(
                "issue: offsets, lengths and writes must be 1-D and one per request"
            )
        t0 = time.perf_counter()
        read = written = 0
        for o, n, w in zip(off.tolist(), ln.tolist(), wr.tolist(), strict=True):
            if w:
                written += self._io(o, n, True)
            else:
                read += self._io(o, n, False)
        return DiskIO(int(off.size), read, written, time.perf_counter() - t0)
