"""The exceptions vmmem raises (every one is a VmmemError) and the warnings it gives (every
one is a VmmemWarning; str() of one is its message for people)."""

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


class LocationRefused(VmmemError):
    """A folder for a run's files cannot be used: missing where it must exist, not a folder,
    not writable, writable by every user without the sticky bit, too little free space, a
    virtual disk there that vmmem did not make, or in use by another run. The message names
    the folder and the problem."""


class PagingFolderError(LocationRefused, PagingFileError):
    """A paging file's folder does not exist, is not a folder or is not writable (the memory
    layer's own check; carries errno, strerror and filename as OSError does)."""


class VmmemWarning(UserWarning):
    """Base class of every warning vmmem gives: the work goes on, but a person should know."""


class LocationWarning(VmmemWarning):
    """A location is used, but what is measured there, or who can touch the files, is off."""


class RamBackedWarning(LocationWarning):
    """The paging folder lives in RAM (tmpfs, ramfs, zram): its paging I/O measures nothing."""


class NoCountersWarning(LocationWarning):
    """The folder's filesystem has no block-device counters (NFS, FUSE ...): that paging
    reached a device cannot be confirmed."""


class SharedFolderWarning(LocationWarning):
    """A folder other users can write (sticky) or own: used, but they can see the run's files
    or (an owner) remove them. vmmem's own checks keep their files safe from it."""


class ScaleWarning(VmmemWarning):
    """--scale changed the story: at that scale a VM fails to start, or Smart Paging is or is
    no longer needed, unlike at full size (Hyper-V's 32 MB floor and 2 MB rounding)."""


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
