"""Argument checks shared by the public constructors and setters.

Every check raises SettingsError (a VmmemError) naming the parameter and saying what is
allowed, so a caller never sees a bare TypeError or ValueError, and a NaN or an infinity
never slips through a comparison (``nan <= 0`` is False) into a timer or a size.
"""

from __future__ import annotations

import math
import os
import stat
import unicodedata
from typing import Any, BinaryIO

import numpy as np

from .errors import SettingsError

__all__ = [
    "check_choice",
    "check_flag",
    "check_name",
    "check_number",
    "check_path",
    "check_whole",
    "control_characters",
    "open_regular_file",
]


def _is_real(value: Any) -> bool:
    return not isinstance(value, (bool, np.bool_)) and isinstance(
        value, (int, float, np.integer, np.floating)
    )


def check_number(
    name: str,
    value: Any,
    *,
    low: float = 0.0,
    high: float | None = None,
    low_open: bool = False,
    unit: str = "",
) -> float:
    """A finite real number within [low, high] (low excluded when low_open); as a float."""
    unit_text = f" {unit}" if unit else ""
    if low_open:
        allowed = f"a finite number{unit_text} greater than {low:g}"
        if high is not None:
            allowed += f" and at most {high:g}"
    elif high is not None:
        allowed = f"a finite number{unit_text} from {low:g} to {high:g}"
    else:
        allowed = f"a finite number{unit_text}, {low:g} or more"
    if not _is_real(value):
        raise SettingsError(f"{name} must be {allowed}, got {value!r}")
    try:
        number = float(value)
    except OverflowError:
        raise SettingsError(f"{name} must be {allowed}, got {value!r}") from None
    if (
        not math.isfinite(number)
        or number < low
        or (low_open and number == low)
        or (high is not None and number > high)
    ):
        raise SettingsError(f"{name} must be {allowed}, got {value!r}")
    return number


def check_whole(name: str, value: Any, low: int = 0, high: int | None = None) -> int:
    """A whole number (int or numpy integer, not bool) within [low, high]."""
    allowed = f"a whole number from {low}" + (f" to {high}" if high is not None else " up")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise SettingsError(f"{name} must be {allowed}, got {value!r}")
    number = int(value)
    if number < low or (high is not None and number > high):
        raise SettingsError(f"{name} must be {allowed}, got {value!r}")
    return number


def check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise SettingsError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(name: str, value: Any, choices: Any) -> str:
    """One of `choices` (strings); anything else, hashable or not, is refused by name."""
    if not isinstance(value, str) or value not in choices:
        raise SettingsError(f"{name} {value!r} is not known; use one of {sorted(choices)}")
    return value


def control_characters(text: str) -> list[str]:
    """The control characters (NUL, newline, escape, ...) in `text`, as escapes: '\\x00'."""
    return sorted(
        {repr(c)[1:-1] for c in text if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")}
    )


def check_name(name: str, value: Any) -> str:
    """A non-empty name of printable characters (it ends up in file names and tables)."""
    if not isinstance(value, str) or not value.strip():
        raise SettingsError(f"{name} must be a non-empty string, got {value!r}")
    bad = control_characters(value)
    if bad:
        raise SettingsError(
            f"{name} {value!r} cannot be used: it contains control characters "
            f"({', '.join(bad)}); use printable characters only"
        )
    return value


def check_path(name: str, value: Any, *, allow_none: bool = False) -> str | None:
    """A folder path: a non-empty str or os.PathLike of str, without NUL; None if allowed."""
    if value is None and allow_none:
        return None
    what = "a folder path (str or os.PathLike)" + (" or None" if allow_none else "")
    if not isinstance(value, (str, os.PathLike)):
        raise SettingsError(f"{name} must be {what}, got {value!r}")
    try:
        path = os.fspath(value)
    except TypeError:
        raise SettingsError(f"{name} must be {what}, got {value!r}") from None
    if not isinstance(path, str):
        raise SettingsError(f"{name} must be {what} of text, got {value!r}")
    if not path:
        raise SettingsError(f"{name} must be {what}, got ''")
    if "\x00" in path:
        raise SettingsError(f"{name} {path!r} cannot be used: it contains a NUL character")
    return path


_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def open_regular_file(path: str | os.PathLike[str]) -> tuple[BinaryIO, os.stat_result]:
    """An input file opened for reading, and its fstat, only if it is a regular file.

    Opened with O_NONBLOCK, so a FIFO without a writer cannot hang the open, then checked on
    the open descriptor (no window between a check and the open). A symlink to a regular file
    is followed: this only reads what the caller named. Raises OSError as open() does
    (IsADirectoryError for a folder), and ValueError("is a FIFO, not a regular file") for
    anything else that is not a regular file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(21, "Is a directory", os.fspath(path))
        if not stat.S_ISREG(st.st_mode):
            kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a file")
            raise ValueError(f"is {kind}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st
    except BaseException:
        os.close(fd)
        raise
