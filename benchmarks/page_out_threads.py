"""Page-outs per second with N threads on one guest: what lets a VM's virtual processors
write its Smart Paging file side by side (docs/DESIGN.md, "The paging file is allocated ahead").

    python benchmarks/page_out_threads.py --dir /var/tmp --threads 1,2,4

Each thread writes its own share of a 256 MB guest whose frame limit is 1 MB, so nearly every
access evicts a dirty page; pass 1 grows the paging file, passes 2 and 3 page each page back in
and out again (a page-in, then a page-out into a slot the file already has).
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

import vmmem

PAGES = 65536  # 256 MB of 4 KiB pages
FRAMES = 256  # 1 MB


def run(folder: str, threads: int, passes: int) -> list[float]:
    """Page-outs per second of each pass."""
    rates = []
    with (
        vmmem.FramePool(64 * 2**20) as pool,
        vmmem.GuestMemory(pool, PAGES * 4096, frame_limit=FRAMES, paging_dir=folder) as mem,
    ):
        share = PAGES // threads
        for _ in range(passes):
            before = mem.counters["page_outs"]

            def write_share(k: int) -> None:
                pages = np.arange(k * share, (k + 1) * share, dtype=np.uint32)
                mem.replay(pages, np.ones(share, np.uint8))

            workers = [threading.Thread(target=write_share, args=(k,)) for k in range(threads)]
            t0 = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            seconds = time.perf_counter() - t0
            rates.append((mem.counters["page_outs"] - before) / seconds)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="/var/tmp", help="the folder for the paging file")
    ap.add_argument("--threads", default="1,2,4", help="thread counts, comma-separated")
    ap.add_argument("--passes", type=int, default=3)
    args = ap.parse_args()
    for n in (int(x) for x in args.threads.split(",")):
        rates = run(args.dir, n, args.passes)
        shown = " / ".join(f"{r:,.0f}" for r in rates)
        print(f"{n} threads: page-outs/s, pass 1 (the file grows) then the others: {shown}")


if __name__ == "__main__":
    main()
