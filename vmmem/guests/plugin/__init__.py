"""Build the vmmem QEMU TCG plugin (vmmem_trace.c) on first use and cache the shared object.

The cache folder is $VMMEM_CACHE_DIR, else $XDG_CACHE_HOME/vmmem, else ~/.cache/vmmem; the
shared object's name carries the sha256 of the plugin's sources, so an edited source is
rebuilt and an unchanged one is reused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ...errors import RecordError

__all__ = ["CFLAGS", "cache_dir", "plugin_path", "source_dir"]

CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-fvisibility=hidden"]
_SOURCES = ("vmmem_trace.c", "qemu-plugin.h")


def source_dir() -> Path:
    return Path(__file__).resolve().parent


def cache_dir() -> Path:
    env = os.environ.get("VMMEM_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "vmmem"


def _digest() -> str:
    h = hashlib.sha256()
    for name in _SOURCES:
        h.update(name.encode() + b"\0" + (source_dir() / name).read_bytes())
    h.update(" ".join(CFLAGS).encode())
    return h.hexdigest()[:16]


def compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def plugin_path(rebuild: bool = False) -> Path:
    """The path of the built plugin, compiling it first if the cache has no current build."""
    out = cache_dir() / f"vmmem_trace-{_digest()}.so"
    if out.exists() and not rebuild:
        return out
    cc = compiler()
    if cc is None:
        raise RecordError("building the QEMU plugin needs a C compiler (cc); none was found")
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".vmmem_trace-", suffix=".so", dir=out.parent)
    os.close(fd)
    src = source_dir() / "vmmem_trace.c"
    result = subprocess.run(
        [cc, *CFLAGS, f"-I{source_dir()}", "-o", tmp, str(src)], capture_output=True, text=True
    )
    if result.returncode != 0:
        os.unlink(tmp)
        raise RecordError(f"building the QEMU plugin failed:\n{result.stderr.strip()}")
    os.replace(tmp, out)
    return out
