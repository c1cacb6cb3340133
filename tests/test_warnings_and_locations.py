"""Warnings are one typed family (vmmem.errors.VmmemWarning) that the command line shows once
each, never muted; the locations are checked once per folder, with one exception type."""

from __future__ import annotations

import errno
import os
import sys
import uuid
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

import vmmem
import vmmem.lab.locations
import vmmem.workspace
from vmmem.cli.main import EXIT_REFUSED, cli
from vmmem.errors import (
    LocationRefused,
    NoCountersWarning,
    PagingFileError,
    PagingFolderError,
    RamBackedWarning,
    ScaleWarning,
    SharedFolderWarning,
    VmmemError,
    VmmemWarning,
)
from vmmem.lab.plan import plan_scenario, scale_warnings
from vmmem.lab.scenario import load_scenario

sys.path.insert(0, str(Path(__file__).parent))
from test_cli_run import fast_scenario  # noqa: E402

ROOT = Path(__file__).parent.parent


def test_every_warning_is_a_vmmem_warning_and_every_refusal_one_error():
    for w in (RamBackedWarning, NoCountersWarning, SharedFolderWarning, ScaleWarning):
        assert issubclass(w, VmmemWarning) and issubclass(w, UserWarning)
    assert vmmem.workspace.SharedFolderWarning is SharedFolderWarning
    assert vmmem.lab.locations.LocationRefused is LocationRefused is vmmem.LocationRefused
    assert issubclass(LocationRefused, VmmemError)


def test_scale_warnings_are_typed():
    full = load_scenario(str(ROOT / "examples" / "static-and-dynamic.toml"))
    found = scale_warnings(plan_scenario(full), plan_scenario(full.scaled(8)))
    assert found and all(isinstance(w, ScaleWarning) for w in found)
    assert "cannot start although it does at full size" in str(found[0])


def test_the_memory_layer_refuses_a_missing_folder_in_the_same_family(tmp_path):
    missing = tmp_path / "nope"
    with vmmem.FramePool(16 * 4096) as pool:
        with pytest.raises(PagingFolderError) as caught:
            vmmem.GuestMemory(pool, 8 * 4096, paging_dir=missing)
    e = caught.value
    assert isinstance(e, LocationRefused) and isinstance(e, PagingFileError)
    assert e.errno == errno.ENOENT and e.filename == str(missing)
    assert "does not exist" in str(e)


def test_the_memory_layer_leaves_ram_detection_to_the_location_check(tmp_path):
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with vmmem.FramePool(16 * 4096) as pool:
            vmmem.GuestMemory(pool, 8 * 4096, paging_dir="/dev/shm").close()
    assert not [w for w in seen if issubclass(w.category, VmmemWarning)]


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every entry into the location check, by Smart Paging folder."""
    real = vmmem.lab.locations.check_locations
    seen: list[str] = []

    def spy(s, host_folder):  # type: ignore[no-untyped-def]
        seen.append(s.smart_paging_path)
        return real(s, host_folder)

    for name, mod in list(sys.modules.items()):
        if name.startswith("vmmem") and getattr(mod, "check_locations", None) is real:
            monkeypatch.setattr(mod, "check_locations", spy)
    return seen


def test_compare_checks_each_location_once(disk_dir, monkeypatch, checked):
    monkeypatch.chdir(disk_dir)
    args = ["compare", "a", "b", fast_scenario(disk_dir, 0.3), "--scale", "8", "-q"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert sorted(checked) == [str(disk_dir / "a"), str(disk_dir / "b")]


def test_a_folder_that_cannot_be_made_gets_one_message(tmp_path, checked):
    (tmp_path / "file").write_text("")
    r = CliRunner().invoke(cli, ["run", "--paging-dir", str(tmp_path / "file" / "sp")])
    assert r.exit_code == EXIT_REFUSED
    assert r.stderr.strip() == (
        f"vmmem: error: Smart Paging folder {tmp_path}/file/sp cannot be made: "
        f"{tmp_path}/file is not a folder"
    )
    assert len(checked) == 1


def test_a_ram_backed_run_is_warned_about_once_not_muted(disk_dir, monkeypatch):
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    monkeypatch.chdir(disk_dir)
    paging = f"/dev/shm/vmmem-test-{uuid.uuid4().hex[:8]}"
    args = ["run", fast_scenario(disk_dir, 0.3), "--scale", "8", "--paging-dir", paging, "-q"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    err = " ".join(r.stderr.split())
    assert err.count("is RAM-backed") == 1, err  # shown with --quiet too: not progress
    assert "RamBackedWarning" not in err and "warnings.warn" not in err
    assert not os.path.exists(paging)  # made by the run, removed at its end


def test_a_library_warning_during_a_command_is_shown_once(monkeypatch):
    """A VmmemWarning raised with warnings.warn while a command runs (from any thread) is
    shown once by the command line, as a warning line, not as Python's."""
    import vmmem.lab.plan as plan

    real = plan.plan_scenario

    def warn_twice(s, *args, **kwargs):  # type: ignore[no-untyped-def]
        for _ in range(2):
            warnings.warn(RamBackedWarning("/x is RAM-backed (tmpfs)"), stacklevel=1)
        return real(s, *args, **kwargs)

    monkeypatch.setattr(plan, "plan_scenario", warn_twice)
    r = CliRunner().invoke(cli, ["plan"])
    assert r.exit_code == 0, r.output
    assert r.stderr.count("warning: /x is RAM-backed (tmpfs)") == 1, r.stderr
    assert "RamBackedWarning" not in r.stderr


def test_a_storm_per_guest_checks_each_guests_locations_once(disk_dir, monkeypatch, checked):
    """`run --guest a,b` checks every guest's folders before the first run, and each run reuses
    its guest's check instead of checking again."""
    monkeypatch.chdir(disk_dir)
    scenario = fast_scenario(disk_dir, 0.3)
    args = ["run", scenario, "--guest", "busybox,synthetic-boot", "--scale", "8", "-q"]
    args += ["--paging-dir", "sp"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert checked == [str(disk_dir / "sp")] * 2
