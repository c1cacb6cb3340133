"""Output files (--json, --plot): checked before anything runs, written atomically.

A storm takes minutes; finding only afterwards that the folder of --json does not exist, or that
matplotlib cannot write .xyz, loses the run. So every destination is checked first, and a file
is written to a temporary name in its own folder and renamed over the destination: a reader
never sees half a file and an interrupted write leaves the old one in place.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

__all__ = ["OutputError", "check_output", "plot_formats", "write_atomically"]


class OutputError(Exception):
    """An output destination that cannot be written; the message names the option."""


def plot_formats() -> dict[str, str]:
    """Extension -> description of every format matplotlib can write here."""
    from matplotlib.backend_bases import FigureCanvasBase

    return dict(FigureCanvasBase.get_supported_filetypes())


def check_output(option: str, path: str, *, plot: bool = False) -> None:
    """Raise OutputError unless ``path`` can be written: its folder exists and is writable, it
    is not a folder or a special file, and (plot=True) its extension is a matplotlib format
    (checked last: it imports matplotlib)."""
    if not path or "\x00" in path:
        raise OutputError(f"{option} {path!r}: not a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: the folder {folder} is not writable")
    if os.path.isdir(path):
        raise OutputError(f"{option} {path}: is a folder; give a file name")
    if os.path.lexists(path) and not os.path.isfile(path):
        raise OutputError(f"{option} {path}: exists and is not a regular file")
    if plot:
        ext = os.path.splitext(path)[1].lstrip(".").lower()
        formats = plot_formats()
        if ext not in formats:
            got = (
                f".{ext} is not a format the plot can be written in"
                if ext
                else ("has no extension, and the plot's format is taken from it")
            )
            raise OutputError(
                f"{option} {path}: {got}; use one of {', '.join('.' + f for f in sorted(formats))}"
            )


def write_atomically(path: str, write: Callable[[str], None]) -> None:
    """Call write(temporary_path) for a file in path's folder, then rename it to path.

    The temporary file has path's extension (matplotlib picks the format from it) and gets the
    permissions a plain open() would give (0666 less the umask). Removed on any failure.
    """
    folder = os.path.dirname(os.path.abspath(path))
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{ext}", dir=folder)
    try:
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
