"""Memory sizes as Hyper-V admins write them.

MB means 2^20 bytes, as in Hyper-V Manager and PowerShell (`512MB` = 536870912): MB and MiB
are the same here, likewise KB/KiB, GB/GiB, TB/TiB.
"""

from __future__ import annotations

import re

from .errors import SettingsError

KB = 1 << 10
MB = 1 << 20
GB = 1 << 30
TB = 1 << 40

_UNITS = {"": 1, "B": 1, "K": KB, "M": MB, "G": GB, "T": TB}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([KMGT]?)(I?B)?\s*$", re.I)

SizeLike = int | str


def parse_size(value: SizeLike, what: str = "size") -> int:
    """Return a size in bytes from an int (bytes) or a string such as "512MB", "1.5GiB".

    `what` names the setting in the error message.
    """
    if isinstance(value, bool):
        raise SettingsError(f"{what}: expected a size such as 512MB, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, str):
        raise SettingsError(f"{what}: expected a size such as 512MB, got {value!r}")
    match = _SIZE_RE.match(value)
    if match is None:
        raise SettingsError(
            f"{what}: {value!r} is not a size; write bytes or a number with a unit, "
            "e.g. 512MB, 1.5GB, 4KiB (MB = 2^20 bytes, as in Hyper-V)"
        )
    number, unit, suffix = match.groups()
    multiplier = _UNITS[unit.upper()]
    if suffix is None and unit == "" and "." in number:
        raise SettingsError(f"{what}: {value!r}: a byte count must be a whole number")
    size = float(number) * multiplier
    if not size.is_integer():
        raise SettingsError(f"{what}: {value!r} is not a whole number of bytes")
    return int(size)


def format_duration(value: float | None) -> str:
    """Seconds for people: "0.85 s", "14.1 s", "2.4 min"; "-" for None."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2f} s"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def format_mb(nbytes: float) -> str:
    """A size as Hyper-V Manager shows it, for tables: "1,400 MB", "648 MB"; GB from 100 GB."""
    if abs(nbytes) >= 100 * GB:
        return f"{nbytes / GB:,.0f} GB"
    value = nbytes / MB
    if value == int(value) or abs(value) >= 10:
        return f"{value:,.0f} MB"
    return f"{value:.1f} MB"


def format_size(nbytes: int | float) -> str:
    """A size for people, in Hyper-V's MB (2^20) or GB: "615 MB", "1.5 GB", "4 KB"."""
    nbytes = float(nbytes)
    sign = "-" if nbytes < 0 else ""
    nbytes = abs(nbytes)
    for unit, scale in (("TB", TB), ("GB", GB), ("MB", MB), ("KB", KB)):
        if nbytes >= scale:
            value = nbytes / scale
            text = f"{value:.0f}" if value >= 100 or value.is_integer() else f"{value:.1f}"
            return f"{sign}{text} {unit}"
    return f"{sign}{nbytes:.0f} B"
