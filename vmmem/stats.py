"""What the paging core counted: a guest's counters and its latency histograms (log buckets
of 12.5 %, timed inside the C fault path)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ._core import lib

__all__ = ["LatencyHistogram", "MemoryStats"]

_HIST_BUCKETS = lib.VMM_HIST_BUCKETS
_BUCKET_LOWER_NS = np.array(
    [lib.vmm_hist_lower_ns(b) for b in range(_HIST_BUCKETS + 1)], dtype=np.float64
)


class LatencyHistogram:
    """Fault latencies timed inside the C fault path: log buckets of 12.5 % width."""

    def __init__(self, counts: np.ndarray, total_ns: int) -> None:
        self.counts = counts
        self.total_ns = total_ns

    @classmethod
    def merge(cls, histograms: Iterable[LatencyHistogram]) -> LatencyHistogram:
        """One histogram of all the samples of several (e.g. every VM of a boot storm)."""
        counts = np.zeros(_HIST_BUCKETS, dtype=np.uint64)
        total = 0
        for hist in histograms:
            counts += hist.counts
            total += hist.total_ns
        return cls(counts, total)

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    @property
    def mean(self) -> float:
        """Mean latency in seconds (0.0 when empty)."""
        n = self.count
        return self.total_ns / n / 1e9 if n else 0.0

    def percentile(self, p: float) -> float:
        """Latency in seconds below which p % of the samples lie (bucket midpoint); 0.0 if empty."""
        if not 0 <= p <= 100:
            raise ValueError(f"percentile must be within 0..100, got {p}")
        n = self.count
        if n == 0:
            return 0.0
        cumulative = np.cumsum(self.counts)
        bucket = int(np.searchsorted(cumulative, max(1.0, p / 100 * n)))
        low, high = _BUCKET_LOWER_NS[bucket], _BUCKET_LOWER_NS[bucket + 1]
        return float((low + high) / 2 / 1e9)

    def cdf(self) -> tuple[np.ndarray, np.ndarray]:
        """(latency upper bounds in seconds, fraction of samples at or below) per used bucket."""
        n = self.count
        if n == 0:
            return np.zeros(0), np.zeros(0)
        used = np.nonzero(self.counts)[0]
        first, last = used[0], used[-1]
        fractions = np.cumsum(self.counts[first : last + 1]) / n
        return _BUCKET_LOWER_NS[first + 1 : last + 2] / 1e9, fractions

    def __repr__(self) -> str:
        if not self.count:
            return "LatencyHistogram(empty)"
        return (
            f"LatencyHistogram(n={self.count}, p50={self.percentile(50) * 1e6:.0f}us, "
            f"p99={self.percentile(99) * 1e6:.0f}us)"
        )


@dataclass(frozen=True)
class MemoryStats:
    """A consistent snapshot of one guest's paging counters."""

    accesses: int
    hits: int
    zero_fills: int
    page_ins: int
    page_outs: int
    clean_drops: int
    bytes_read: int
    bytes_written: int
    releases: int
    resident: int
    frame_limit: int
    file_pages: int
    file_pages_peak: int
    file_size: int
    file_created: int
    file_deleted: int
    page_in_ns: int
    page_out_ns: int
    disk_faults: int  # faults that waited on the file (victim write-back and/or page-in)
    fault_ns: int
    paged_out: int  # pages now only in the paging file: exact, kept by the core
    file_exists: int  # 1 while the paging file exists (not derived from created/deleted)
    page_in_latency: LatencyHistogram = field(repr=False)
    page_out_latency: LatencyHistogram = field(repr=False)
    # What a guest waits for a fault that touches the disk: from the fault to its frame ready.
    fault_latency: LatencyHistogram = field(repr=False)

    @property
    def faults(self) -> int:
        return self.accesses - self.hits

    def as_dict(self) -> dict[str, int | float]:
        """Plain numbers, for JSON: counters plus latency percentiles in seconds."""
        out: dict[str, int | float] = {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if not name.endswith("_latency")
        }
        for kind, hist in (
            ("page_in", self.page_in_latency),
            ("page_out", self.page_out_latency),
            ("fault", self.fault_latency),
        ):
            for p in (50, 90, 99):
                out[f"{kind}_p{p}_s"] = hist.percentile(p)
        return out
