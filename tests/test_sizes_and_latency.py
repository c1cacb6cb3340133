"""Sizes as Hyper-V admins write them, and the fault-latency histograms' arithmetic."""

import numpy as np
import pytest

import vmmem
from vmmem.memory import LatencyHistogram

# The buckets' bounds as the histogram shows them: one sample in every bucket, and cdf() gives
# each bucket's upper bound (the next one's lower), in seconds; the first bucket starts at 0.
BUCKETS = LatencyHistogram.merge([]).counts.size
LOWER_NS = [0] + [
    round(s * 1e9) for s in LatencyHistogram(np.ones(BUCKETS, dtype=np.uint64), 0).cdf()[0]
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512MB", 512 * 2**20),  # Hyper-V's MB is 2^20
        ("512MiB", 512 * 2**20),
        ("1.5GiB", 3 * 2**29),
        ("300 mb", 300 * 2**20),
        ("4KiB", 4096),
        ("2TB", 2 * 2**40),
        ("4096", 4096),
        (8192, 8192),
    ],
)
def test_parse_size_accepts_what_admins_write(text, expected):
    assert vmmem.parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "MB", "12 parsecs", "1.5", "0.3KB", True, None, [1]])
def test_parse_size_refuses_with_the_setting_named(bad):
    with pytest.raises(vmmem.SettingsError, match="Startup RAM"):
        vmmem.parse_size(bad, "Startup RAM")


def test_format_size_uses_hyperv_units():
    assert vmmem.format_size(615 * 2**20) == "615 MB"
    assert vmmem.format_size(1536 * 2**20) == "1.5 GB"
    assert vmmem.format_size(4096) == "4 KB"
    assert vmmem.format_size(12) == "12 B"


def _hist(samples_ns):
    """A histogram filled the way the C fault path fills it."""
    lower = np.array(LOWER_NS)
    counts = np.zeros(BUCKETS, dtype=np.uint64)
    for ns in samples_ns:
        counts[np.searchsorted(lower, ns, side="right") - 1] += 1
    return LatencyHistogram(counts, int(sum(samples_ns)))


def test_bucket_bounds_are_increasing_and_tight():
    lower = LOWER_NS
    assert len(lower) == BUCKETS + 1
    assert lower[:9] == list(range(9))
    assert all(b > a for a, b in zip(lower, lower[1:], strict=False))
    # 8 sub-buckets per power of two: each bucket is at most 12.5 % of its lower bound wide
    assert all((b - a) / a <= 0.125 for a, b in zip(lower[8:], lower[9:], strict=False))


def test_percentiles_land_in_the_right_bucket():
    samples = [100_000] * 90 + [1_000_000] * 10  # 100 us, and a slow tail at 1 ms
    h = _hist(samples)
    assert h.count == 100
    assert h.mean == pytest.approx(0.00019)
    assert h.percentile(50) == pytest.approx(100e-6, rel=0.07)
    assert h.percentile(90) == pytest.approx(100e-6, rel=0.07)
    assert h.percentile(99) == pytest.approx(1e-3, rel=0.07)
    seconds, fraction = h.cdf()
    assert fraction[-1] == pytest.approx(1.0)
    assert np.all(np.diff(fraction) >= 0) and np.all(np.diff(seconds) > 0)


def test_merge_adds_samples_of_every_histogram():
    a, b = _hist([50_000] * 3), _hist([2_000_000] * 1)
    merged = LatencyHistogram.merge([a, b])
    assert merged.count == 4
    assert merged.total_ns == a.total_ns + b.total_ns
    assert merged.percentile(100) == pytest.approx(2e-3, rel=0.07)
    assert LatencyHistogram.merge([]).count == 0
    assert LatencyHistogram.merge([]).cdf()[0].size == 0


def test_empty_histogram_reads_as_zero():
    h = _hist([])
    assert h.count == 0 and h.mean == 0.0 and h.percentile(99) == 0.0
    with pytest.raises(ValueError):
        h.percentile(101)
