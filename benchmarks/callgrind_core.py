"""Instructions the core executes on its hot paths, counted by callgrind: a measure that load
does not move, for comparing two builds of the core on a busy machine (wall-clock figures of
bench_hit_path.py move by tens of percent there).

Each scenario runs in its own interpreter under valgrind with collection on only inside
vmm_mem_replay or vmm_mem_replay_timed (inclusive; GuestMemory.replay calls the one its tree
has), and prints its instruction count (Ir):

  hit lru / hit clock    resident hit path: 50,000 pages made resident, then 1 M Zipf(1.1) reads
  miss lru / miss clock  fault path without I/O: the same reads with 20 % of the pages in frames
  direct lru / mmap lru  fault path with I/O: 4,096 pages written through 256 frames, then
                         3,000 random accesses (half writes): page-ins and page-outs

    python benchmarks/callgrind_core.py [TREE ...]   # each TREE: a checkout with its core built

Default TREE: this checkout. Needs valgrind.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

SCENARIOS = [
    ("hit", "lru"),
    ("hit", "clock"),
    ("miss", "lru"),
    ("miss", "clock"),
    ("direct", "lru"),
    ("mmap", "lru"),
]

DRIVER = r"""
import sys
import numpy as np
import vmmem
PAGE = 4096
kind, policy, folder, trace_path = sys.argv[1:5]
if kind in ("hit", "miss"):
    trace = np.load(trace_path)
    ws = 50_000
    frames = ws if kind == "hit" else ws // 5
    with vmmem.FramePool(frames * PAGE) as pool, vmmem.GuestMemory(
        pool, ws * PAGE, frame_limit=frames, paging_dir=folder, policy=policy
    ) as mem:
        if kind == "hit":
            mem.replay(np.arange(ws, dtype=np.uint32))
        mem.replay(trace)
else:
    n, rng = 4096, np.random.default_rng(1)
    with vmmem.FramePool(256 * PAGE) as pool, vmmem.GuestMemory(
        pool, n * PAGE, frame_limit=256, paging_dir=folder, policy=policy, backend=kind
    ) as mem:
        mem.replay(np.arange(n, dtype=np.uint32), np.ones(n, dtype=np.uint8))
        pages = rng.integers(0, n, 3000, dtype=np.uint32)
        mem.replay(pages, (rng.random(3000) < 0.5).astype(np.uint8))
"""


def count(tree: str, kind: str, policy: str, work: str, trace: str) -> int:
    out = os.path.join(work, f"callgrind.{kind}.{policy}.out")
    folder = tempfile.mkdtemp(dir=work)
    env = dict(os.environ, PYTHONPATH=tree)
    subprocess.run(
        ["valgrind", "--tool=callgrind", "--collect-atstart=no"]
        + ["--toggle-collect=vmm_mem_replay*", f"--callgrind-out-file={out}"]
        + [sys.executable, "-c", DRIVER, kind, policy, folder, trace],
        env=env,
        check=True,
        capture_output=True,
    )
    with open(out) as f:
        match = re.search(r"^summary: (\d+)", f.read(), re.M)
    assert match, out
    return int(match.group(1))


def main() -> None:
    if shutil.which("valgrind") is None:
        sys.exit("callgrind_core.py needs valgrind")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = [os.path.abspath(t) for t in sys.argv[1:]] or [here]
    sys.path.insert(0, here)
    import numpy as np

    from vmmem.traces import zipf_trace

    with tempfile.TemporaryDirectory(dir="/var/tmp") as work:
        trace = os.path.join(work, "zipf.npy")
        np.save(trace, zipf_trace(1_000_000, 50_000, 1.1, seed=42))
        # Scenario by scenario, the trees interleaved.
        for kind, policy in SCENARIOS:
            figures = [count(tree, kind, policy, work, trace) for tree in trees]
            print(f"{kind:6} {policy:5} " + "  ".join(f"{n:>14,}" for n in figures), flush=True)


if __name__ == "__main__":
    main()
