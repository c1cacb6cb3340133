"""A VM's virtual disk: a preallocated file read and written with O_DIRECT, so that a guest's
disk requests reach the device as they would from a VHDX under Hyper-V.

The file is created once (O_CREAT | O_EXCL | O_NOFOLLOW, mode 0600, space reserved with
posix_fallocate, then written with zeros once so its extents are real: a filesystem answers
reads of fallocated-but-unwritten extents with zeros and no device I/O) and reused by
every later run that asks for the same path and size; vmmem never deletes it unless
`delete()` is called. Its contents do not matter: a request reads into, or writes from, one
page-aligned buffer.

Requests are issued from Python, one `os.preadv`/`os.pwritev` per request on the O_DIRECT
descriptor, batched one epoch per call of `issue()`. The Python cost per request is a few
microseconds against a device round trip of tens of microseconds (SSD) to milliseconds (HDD);
tests/test_vdisk.py measures that share and holds it under 5 %.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import SettingsError, VirtualDiskError
from .sizes import SizeLike, format_size, parse_size

__all__ = ["ALIGN", "DiskIO", "VirtualDisk"]

ALIGN = 4096  # O_DIRECT alignment of offsets, lengths and the buffer (a 4Kn device's block)


@dataclass(frozen=True)
class DiskIO:
    """What one `issue()` did: requests, bytes asked for, and bytes moved (after alignment)."""

    requests: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    seconds: float = 0.0


class VirtualDisk:
    """A virtual-disk file of `size` bytes at `path`, opened with O_DIRECT.

    Created (0600, preallocated) when absent; reused when present as a regular file of that
    size. Raises VirtualDiskError (an OSError) with the path when the folder is missing, the
    path is a symbolic link or not a regular file, the size differs, the filesystem has no
    room (the half-made file is removed) or does not support O_DIRECT.
    """

    def __init__(self, path: str | os.PathLike[str], size: SizeLike) -> None:
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
                os.posix_fallocate(fd, 0, self.size)
                self._fill()
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
            os.fsync(self._fd)
        finally:
            buf.release()

    def _open_existing(self, flags: int) -> int:
        try:
            fd = os.open(self.path, flags)
        except OSError as exc:
            raise self._error(exc, "opening") from exc
        st = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(st.st_mode):
            problem = "is not a regular file"
        elif st.st_size != self.size:
            problem = (
                f"exists with {st.st_size} bytes, not the {self.size} asked for; vmmem does "
                "not resize or delete it: remove it or choose another path or size"
            )
        if problem:
            os.close(fd)
            raise VirtualDiskError(errno.EEXIST, f"virtual disk {self.path} {problem}", self.path)
        return fd

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
