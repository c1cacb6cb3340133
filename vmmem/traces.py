"""Synthetic page-access traces, and export to libCacheSim so a trace can be replayed there too.

Traces are numpy arrays of guest page numbers (uint32), ready for GuestMemory.replay.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["ORACLE_GENERAL_DTYPE", "uniform_trace", "write_oracle_general", "zipf_trace"]

# libCacheSim's oracleGeneral binary record: timestamp, object id, size, next access (-1: unknown).
ORACLE_GENERAL_DTYPE = np.dtype(
    [("time", "<u4"), ("obj_id", "<u8"), ("size", "<u4"), ("next_access", "<i8")]
)


def zipf_trace(accesses: int, pages: int, alpha: float = 1.1, seed: int = 0) -> np.ndarray:
    """A skewed trace: page ranks drawn from Zipf(alpha), folded into range and shuffled over
    the pages, so the hot pages are scattered as a guest's are."""
    rng = np.random.default_rng(seed)
    ranks = rng.zipf(alpha, size=accesses) % pages
    return rng.permutation(pages).astype(np.uint32)[ranks]


def uniform_trace(accesses: int, pages: int, seed: int = 0) -> np.ndarray:
    """Every page equally likely: the worst case for any replacement policy."""
    return np.random.default_rng(seed).integers(0, pages, accesses, dtype=np.uint32)


def write_oracle_general(
    path: str | os.PathLike[str], pages: np.ndarray, page_size: int = 4096
) -> None:
    """Write a page trace as a libCacheSim oracleGeneral binary trace (one object per page,
    object ids = page + 1, since libCacheSim reserves id 0)."""
    pages = np.asarray(pages)
    records = np.zeros(pages.size, dtype=ORACLE_GENERAL_DTYPE)
    records["time"] = np.arange(pages.size) // 1000
    records["obj_id"] = pages.astype(np.uint64) + 1
    records["size"] = page_size
    records["next_access"] = -1
    records.tofile(os.fspath(path))
