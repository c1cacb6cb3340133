"""The exceptions vmmem raises. Every one is a VmmemError."""

from __future__ import annotations


class VmmemError(Exception):
    """Base class of every vmmem error."""


class SettingsError(VmmemError, ValueError):
    """A size or setting is not allowed; the message says what was wrong and what is."""


class GuestAddressError(VmmemError, IndexError):
    """A guest-physical address or page number lies outside the guest's memory."""


class OutOfFramesError(VmmemError):
    """A fault found no frame: the frame limit is 0, or the pool is empty with nothing to evict."""


class PagingFileError(VmmemError, OSError):
    """The Smart Paging file could not be created, written or read.

    Carries errno, strerror and filename (the paging file's path) as OSError does.
    """


class NotEnoughMemoryError(VmmemError):
    """Hyper-V's refusal to start a VM: not enough memory in the system."""


class RamBackedWarning(UserWarning):
    """The paging folder lives in RAM (tmpfs, ramfs, zram): its paging I/O measures nothing."""


class VirtualDiskError(VmmemError, OSError):
    """A virtual-disk file could not be created, opened, read or written.

    Carries errno, strerror and filename (the disk's path) as OSError does.
    """


class GuestTraceError(VmmemError, ValueError):
    """A guest trace is missing, unknown by name, or not a valid vmmem guest trace.

    `path` and `field` (an array, or provenance.KEY) say where, when known; the message
    starts with them ("trace.npz: pages: ...").
    """

    def __init__(self, message: str, *, path: str | None = None, field: str | None = None):
        self.path = path
        self.field = field
        where = "".join(f"{part}: " for part in (path, field) if part)
        super().__init__(where + message)


class RecordError(VmmemError):
    """Recording a guest boot under QEMU failed: QEMU or the compiler is missing, QEMU
    failed, or the guest did not reach its target (the message carries the console's tail)."""


class RecordTimeoutError(RecordError, TimeoutError):
    """The guest did not power off within the recording's timeout; QEMU was killed."""
