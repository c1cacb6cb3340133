"""Typed, located reading of a TOML scenario's values: every error names the file, the key
and what was expected (a ScenarioError)."""

from __future__ import annotations

import math
from typing import Any

from vmmem.errors import SettingsError
from vmmem.lab.scenario_model import ALIGN, ScenarioError
from vmmem.sizes import MB, parse_size
from vmmem.validate import control_characters

__all__ = ["TomlReader", "show_value"]


class TomlReader:
    """Reads typed values out of a TOML table, raising located ScenarioErrors."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, message: str) -> ScenarioError:
        return ScenarioError(self.source, key, message)

    def check_keys(self, table: dict[str, Any], allowed: set[str], prefix: str) -> None:
        for k in table:
            if k not in allowed:
                where = f"{prefix}.{k}" if prefix else k
                raise self.fail(
                    where, "unknown key; expected one of: " + ", ".join(sorted(allowed))
                )

    def table(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a table, got {show_value(value)}")
        return value

    def size(
        self, value: Any, key: str, *, minimum: int = 0, hyperv: bool = True, what: str = "a size"
    ) -> int:
        n = _parse_size(value)
        if n is None:
            raise self.fail(
                key,
                f'expected {what} such as "512MB" or "1.5GB", got {show_value(value)}'
                + (" (a bare number is bytes)" if isinstance(value, int) else ""),
            )
        if hyperv and n % MB:
            raise self.fail(
                key,
                f"expected {what} in whole MB (Hyper-V), got {show_value(value)}"
                + (
                    ' (a bare number is bytes; write e.g. "512MB")'
                    if isinstance(value, int)
                    else ""
                ),
            )
        if hyperv and n % ALIGN:
            raise self.fail(
                key,
                f"expected {what} that is a multiple of 2 MB (Hyper-V: "
                f'"not properly aligned"), got {show_value(value)}',
            )
        if n < minimum:
            raise self.fail(key, f"expected at least {minimum // MB} MB, got {show_value(value)}")
        return n

    def integer(self, value: Any, key: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(
                key, f"expected a whole number from {lo} to {hi}, got {show_value(value)}"
            )
        return value

    def number(self, value: Any, key: str, *, positive: bool = True) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or (positive and value <= 0)
            or value < 0
        ):
            kind = "a number of seconds above 0" if positive else "a number of seconds >= 0"
            raise self.fail(key, f"expected {kind}, got {show_value(value)}")
        return float(value)

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {show_value(value)}")
        return value

    def string(self, value: Any, key: str) -> str:
        """A name or a path: non-empty, printable (it ends up in file names and tables)."""
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"expected a non-empty string, got {show_value(value)}")
        bad = control_characters(value)
        if bad:
            raise self.fail(
                key,
                f"expected printable text, got {value!r}, which contains control characters "
                f"({', '.join(bad)})",
            )
        return value


def show_value(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _parse_size(value: Any) -> int | None:
    """Bytes from an int (bytes) or a string with a unit (vmmem.parse_size); None if bad."""
    if isinstance(value, float):
        return None  # TOML floats are a slip for "1.5GB"; ask for the unit
    try:
        n = parse_size(value)
    except SettingsError:
        return None
    return n if n >= 0 else None
