"""cffi builder for the paging core (out-of-line API mode).

The cdef is read from csrc/vmmem.h between the CDEF markers, so the public header is
the one source of truth for the binding. Set VMMEM_SANITIZE=1 at build time to compile
the core with AddressSanitizer and UBSan, VMMEM_SANITIZE=thread for ThreadSanitizer (run
either with LD_PRELOAD of the runtime: tools/sanitize.sh does both).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cffi import FFI

CSRC = Path(__file__).resolve().parent.parent / "csrc"
HEADER = CSRC / "vmmem.h"
# The core's translation units: the fault path and guest API, then one file per backend.
SOURCES = ["vmmem.c", "backend_direct.c", "backend_mmap.c", "stackdist.c"]
# Internal headers: the shared state, and the eviction policies' inline hooks.
DEPENDS = ["vmmem.h", "core.h", "policy.h", "policy_lru.h", "policy_clock.h", "stackdist.h"]


def read_cdef(header: Path = HEADER) -> str:
    text = header.read_text()
    match = re.search(r"/\* CDEF BEGIN \*/(.*?)/\* CDEF END \*/", text, re.S)
    if match is None:
        raise RuntimeError(f"{header}: no CDEF BEGIN/END markers")
    return match.group(1)


def compile_args() -> tuple[list[str], list[str]]:
    cflags = ["-std=c11", "-O2", "-Wall", "-Wextra", "-fno-strict-aliasing"]
    ldflags: list[str] = ["-lpthread"]
    sanitize = os.environ.get("VMMEM_SANITIZE")
    if sanitize:
        which = "thread" if sanitize == "thread" else "address,undefined"
        san = [f"-fsanitize={which}", "-fno-omit-frame-pointer", "-O1", "-g"]
        cflags += san
        ldflags += san
    return cflags, ldflags


ffibuilder = FFI()
ffibuilder.cdef(read_cdef() + read_cdef(CSRC / "stackdist.h"))
_cflags, _ldflags = compile_args()
ffibuilder.set_source(
    "vmmem._vmmem_cffi",
    '#include "vmmem.h"\n#include "stackdist.h"',
    sources=[os.path.relpath(CSRC / name) for name in SOURCES],
    depends=[os.path.relpath(CSRC / name) for name in DEPENDS],
    include_dirs=[os.path.relpath(CSRC)],
    extra_compile_args=_cflags,
    extra_link_args=_ldflags,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
