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
