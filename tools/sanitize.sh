#!/usr/bin/env bash
# Runs the test suite once against the C core built with AddressSanitizer and UBSan.
# Works on a copy of the tree, so the normal in-place build is left alone.
# Usage: tools/sanitize.sh [pytest args...]
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /var/tmp/vmmem-asan.XXXXXX)
trap 'rm -rf "$work"' EXIT
git -C "$src" ls-files -z --cached --others --exclude-standard | (cd "$src" && xargs -0 cp --parents -t "$work")
cd "$work"
# Every source the build lists (vmmem/_build_core.py: the core and one file per backend) is
# compiled with the sanitizers; a warning fails the run as an error does.
if ! VMMEM_SANITIZE=1 python3 vmmem/_build_core.py >build.log 2>&1 || grep -q "warning:" build.log; then
    cat build.log >&2
    echo "sanitize.sh: the sanitizer build failed or warned" >&2
    exit 1
fi
grep '^SOURCES = ' vmmem/_build_core.py # what was built (importing vmmem here would load it unpreloaded)
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
# CPython's own allocations are not ours to judge, nor libcachesim's (its pybind module frees
# a `new`ed string at exit: alloc_dealloc_mismatch); UBSan findings abort the run.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:alloc_dealloc_mismatch=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export PYTHONPATH="$work"
python3 -c "import vmmem._core as c, sys; sys.exit(0 if c.__file__.startswith('$work') else 'sanitized build not picked up: ' + c.__file__)"
python3 -m pytest -q -p no:cacheprovider "$@"
