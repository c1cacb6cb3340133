"""pytest-benchmark set-up for benchmarks/: collects bench_*.py, gives a folder on the disk.

Run with ``pytest benchmarks/`` (never part of the normal test run, whose testpaths is tests/).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vmmem import devices


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    # bench_*.py are benchmarks; a file named on the command line is collected by pytest itself.
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture
def disk_dir(tmp_path: Path) -> Path:
    """A folder on a real block device (not RAM), or the benchmark means nothing."""
    info = devices.device_for_path(tmp_path)
    if info.ram_backed:
        pytest.skip(f"{tmp_path} is RAM-backed: {info.describe()}")
    return tmp_path
