"""Thin binding over the C paging core: the cffi module and error-code translation."""

from __future__ import annotations

import errno as errno_codes
import os

try:
    from ._vmmem_cffi import ffi, lib
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "vmmem's C core is not built; install the package with `pip install .` "
        "(or `pip install -e .` in a checkout) on a machine with a C compiler"
    ) from exc

from .errors import (
    GuestAddressError,
    OutOfFramesError,
    PagingFileError,
    SettingsError,
    VmmemError,
)

__all__ = ["ffi", "lib", "raise_for"]

_CORE_MESSAGES = {
    lib.VMM_EINVAL: (SettingsError, "invalid argument"),
    lib.VMM_ERANGE: (GuestAddressError, "guest address out of range"),
    lib.VMM_ENOFRAME: (
        OutOfFramesError,
        "no page frame for this guest: its frame limit is 0, or the pool is exhausted "
        "and it holds no page it could evict",
    ),
    lib.VMM_ELIMIT: (SettingsError, "frame limit is larger than the frame pool"),
    lib.VMM_EBUSY: (VmmemError, "a paging file exists now: its path cannot change"),
    lib.VMM_ENOMEM: (VmmemError, "the host could not allocate memory for the paging core"),
    lib.VMM_EFRAMES: (
        OutOfFramesError,
        "cannot empty the Smart Paging file: the frame limit (or the pool) cannot hold "
        "every page of the guest; raise the limit or release pages first",
    ),
}


def raise_for(rc: int, path: str | None = None, doing: str = "") -> None:
    """Raise the exception for a C return code (no-op for VMM_OK)."""
    if rc == lib.VMM_OK:
        return
    if rc == lib.VMM_ENODIRECT:
        folder = os.path.dirname(path) if path else "the paging folder"
        raise PagingFileError(
            errno_codes.EINVAL,
            f"the filesystem of {folder} refused direct I/O (O_DIRECT); "
            "use backend='mmap' for this folder",
            path,
        )
    if rc in _CORE_MESSAGES:
        cls, message = _CORE_MESSAGES[rc]
        raise cls(f"{message}{f' ({doing})' if doing else ''}")
    if -4096 < rc < 0:
        code = -rc
        reason = os.strerror(code)
        raise PagingFileError(code, f"{reason}{f' while {doing}' if doing else ''}", path)
    raise VmmemError(f"paging core returned unknown code {rc}")
