#!/usr/bin/env bash
# Runs the test suite once against the C core built with AddressSanitizer and UBSan, or with
# --tsan the concurrency and memory tests against the core built with ThreadSanitizer.
# Works on a copy of the tree, so the normal in-place build is left alone.
# Usage: tools/sanitize.sh [--tsan] [pytest args...]
set -euo pipefail
mode=asan
if [[ "${1:-}" == "--tsan" ]]; then
    mode=tsan
    shift
fi
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /var/tmp/vmmem-$mode.XXXXXX)
trap 'rm -rf "$work"' EXIT
git -C "$src" ls-files -z --cached --others --exclude-standard | (cd "$src" && xargs -0 cp --parents -t "$work")
cd "$work"
# The interpreter itself, not a wrapper script (pyenv's shims are bash, which crashes with
# libtsan preloaded): the sanitizer runtime is preloaded into this binary only.
python=$(python3 -c 'import sys; print(sys.executable)')
# Every source the build lists (vmmem/_build_core.py: the core and one file per backend) is
# compiled with the sanitizers; a warning fails the run as an error does.
flavour=1
[[ $mode == tsan ]] && flavour=thread
if ! VMMEM_SANITIZE=$flavour "$python" vmmem/_build_core.py >build.log 2>&1 || grep -q "warning:" build.log; then
    cat build.log >&2
    echo "sanitize.sh: the sanitizer build failed or warned" >&2
    exit 1
fi
grep '^SOURCES = ' vmmem/_build_core.py # what was built (importing vmmem here would load it unpreloaded)
export PYTHONPATH="$work"
if [[ $mode == tsan ]]; then
    # CPython and NumPy are not instrumented, so TSan sees only the core's accesses (and the
    # libc calls it intercepts): a report names a race in csrc/ or in how it is called. The
    # tests where threads share one guest or one pool, and the memory tests; the rest of the
    # suite is Python over the same calls. A report fails the run (exit code 66).
    export LD_PRELOAD="$(gcc -print-file-name=libtsan.so)"
    export TSAN_OPTIONS="halt_on_error=1:exitcode=66:second_deadlock_stack=1"
    # Those tests unless the arguments name tests (options alone, such as -x, keep the list).
    names_tests=0
    for arg in "$@"; do [[ $arg != -* ]] && names_tests=1; done
    [[ $names_tests == 0 ]] && set -- "$@" tests/test_concurrent_faults.py tests/test_threads.py \
        tests/test_memory_model.py tests/test_memory_errors.py tests/test_paging_file.py
else
    export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
    # CPython's own allocations are not ours to judge, nor libcachesim's (its pybind module
    # frees a `new`ed string at exit: alloc_dealloc_mismatch); UBSan findings abort the run.
    export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:alloc_dealloc_mismatch=0
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi
"$python" -c "import vmmem._core as c, sys; sys.exit(0 if c.__file__.startswith('$work') else 'sanitized build not picked up: ' + c.__file__)"
"$python" -m pytest -q -p no:cacheprovider "$@"
