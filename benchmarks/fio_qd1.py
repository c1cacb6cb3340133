"""fio as the benchmarks' reference: 4 KiB transfers, psync at queue depth 1, O_DIRECT, random
offsets that may repeat, for a fixed time; what vmmem's paging core does per VM thread."""

from __future__ import annotations

import json
import subprocess
from typing import Any


def run_fio_4k(*args: str, size: int, seconds: float) -> tuple[dict[str, Any], str]:
    """Runs fio with `args` (name, target, rw, jobs) plus the flags above, over files of `size`
    bytes for `seconds`; returns the first job's JSON report and the command line."""
    cmd = [
        "fio",
        *args,
        "--bs=4k",
        "--ioengine=psync",
        "--iodepth=1",
        "--direct=1",
        f"--size={size}",
        f"--runtime={seconds}",
        "--time_based",
        "--randrepeat=0",
        "--norandommap",
        "--output-format=json",
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out[out.index("{") :])["jobs"][0], " ".join(cmd)
