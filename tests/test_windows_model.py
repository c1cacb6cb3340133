"""The Windows model: each number's source, its guesses carried to every output, and the
zeroing variant zeroing in the boot's I/O waits (docs/GUESTS.md, "The Windows model")."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from click.testing import CliRunner

from vmmem.cli.main import cli as main
from vmmem.cli.render import _guests_line
from vmmem.errors import SettingsError
from vmmem.guests import DEFAULT_GUEST_IPS, load_guest
from vmmem.hyperv import Boot
from vmmem.hyperv.workloads import (
    WINDOWS_MODELS,
    ZERO_CPU_PER_PAGE,
    ZERO_INSTRUCTIONS_PER_PAGE,
    windows_model,
)
from vmmem.lab import load_scenario

PAGES = 8192  # a 32 MB VM


class Recorder:
    """A guest that records, in order, what a boot phase does: accesses and disk reads."""

    page_size = 4096
    processors = 1

    def __init__(self, startup_pages: int) -> None:
        self.startup_pages = self.guest_pages = startup_pages
        self.demand = startup_pages
        self.events: list[tuple[str, np.ndarray]] = []
        self.cpu = 0.0

    def commit_range(self, first: int, count: int) -> None:
        pass

    def replay(self, pages: np.ndarray, writes: np.ndarray | None) -> None:
        self.events.append(("pages", np.asarray(pages).copy()))

    def disk_io(self, offsets: np.ndarray, lengths: np.ndarray, writes: object) -> None:
        self.events.append(("disk", np.asarray(offsets).copy()))

    def sleep(self, seconds: float) -> None:
        self.cpu += seconds


def run(boot: Boot, pages: int = PAGES) -> Recorder:
    guest = Recorder(pages)
    boot.run(guest)  # type: ignore[arg-type]
    return guest


def test_the_zeroing_cost_is_what_the_shipped_traces_say():
    zeroing, plain = load_guest("debian-12-init-on-free"), load_guest("debian-12")
    extra = (zeroing.instructions - plain.instructions) / (
        zeroing.pages_touched - plain.pages_touched
    )
    assert extra == pytest.approx(ZERO_INSTRUCTIONS_PER_PAGE)
    assert ZERO_CPU_PER_PAGE == pytest.approx(extra / DEFAULT_GUEST_IPS)
    assert 1e-6 < ZERO_CPU_PER_PAGE < 3e-6  # about 1.8 us: far below the invented 50 us


def test_the_hyperv_model_touches_its_footprint_only():
    guest = run(windows_model("windows-model"))
    touched = np.unique(np.concatenate([p for kind, p in guest.events if kind == "pages"]))
    assert len(touched) == PAGES * 3 // 4 and touched.max() < PAGES * 3 // 4


def test_the_zeroing_model_zeroes_the_rest_in_its_io_waits_not_before():
    boot = windows_model("windows-model-zeroing")
    guest = run(boot)
    footprint = PAGES * 3 // 4
    kinds = [k for k, _ in guest.events]
    first_disk = kinds.index("disk")
    zeroing = [i for i, (k, p) in enumerate(guest.events) if k == "pages" and p.min() >= footprint]
    all_pages = np.concatenate([p for k, p in guest.events if k == "pages"])
    assert len(np.unique(all_pages)) == PAGES  # every page of Startup RAM touched
    assert zeroing and zeroing[0] > first_disk  # none before the boot's first I/O wait
    assert len(zeroing) > 2 and zeroing[0] < len(kinds) // 2  # spread over the boot
    # Its CPU is hidden in the I/O waits: the boot costs what the Hyper-V model's does.
    assert guest.cpu == pytest.approx(run(windows_model("windows-model")).cpu)
    # Without disk reads there is no idle time to hide it in: it is charged.
    quiet = run(windows_model("windows-model-zeroing", disk_read_fraction=0.0))
    zeroed = PAGES - footprint
    assert quiet.cpu == pytest.approx(guest.cpu + zeroed * ZERO_CPU_PER_PAGE)
    assert boot.expected_cpu_time(PAGES) == pytest.approx(guest.cpu)


def test_the_synthetic_boot_is_unchanged():
    guest = run(Boot())
    touched = np.unique(np.concatenate([p for k, p in guest.events if k == "pages"]))
    assert len(touched) == PAGES and guest.cpu == pytest.approx(50e-6 * PAGES)


def test_every_model_says_where_each_number_comes_from():
    for model in WINDOWS_MODELS.values():
        kinds = {p.kind for p in model.parameters}
        assert kinds <= {"measured", "cited", "guess"}
        assert all(p.source for p in model.parameters)
        assert "touch_fraction" in model.guesses and "disk_read_fraction" in model.guesses
        assert "zero_free" not in model.guesses  # cited: TLFS / Windows Internals
    assert "zero_cpu_per_page" not in WINDOWS_MODELS["windows-model-zeroing"].guesses
    with pytest.raises(SettingsError, match="no Windows model 'windows-7'"):
        windows_model("windows-7")
    with pytest.raises(SettingsError, match="touch_fraction"):
        Boot(touch_fraction=0.0)


def test_vmmem_guests_lists_the_models_with_their_sources_and_guesses():
    out = CliRunner().invoke(main, ["guests", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    profiles = {g["name"]: g for g in (data["guests"] if isinstance(data, dict) else data)}
    for name in ("windows-model", "windows-model-zeroing"):
        g = profiles[name]
        assert g["kind"] == "model" and "guesses:" in g["description"]
        assert g["provenance"]["guesses"] == list(WINDOWS_MODELS[name].guesses)
        assert {s["kind"] for s in g["provenance"]["sources"]} >= {"cited", "guess"}
    assert profiles["windows-model"]["pages_touched"] == 131072 * 3 // 4
    assert profiles["windows-model-zeroing"]["pages_touched"] == 131072
    assert profiles["synthetic-boot"]["provenance"]["guesses"] == ["cpu_per_page"]
    text = CliRunner().invoke(main, ["guests"], env={"COLUMNS": "250"}).output
    assert "windows-model-zeroing" in text and "guesses:" in text


def test_the_run_json_and_guest_line_carry_the_guesses():
    s = load_scenario(None).with_guest("windows-model")
    w = s.to_dict()["vms"][0]["workload"]
    assert w["model"] == "windows-model" and w["guest"] is None
    assert w["guesses"] == list(WINDOWS_MODELS["windows-model"].guesses)
    line = _guests_line(s.to_dict())
    assert line.startswith("model: windows-model (guesses: touch_fraction, ")
    # synthetic-boot stays the default, and says what it guesses
    plain = load_scenario(None).to_dict()
    assert plain["vms"][0]["workload"]["guesses"] == ["cpu_per_page"]
    assert "guesses: cpu_per_page" in _guests_line(plain)
    # a scenario's own cpu_per_page is what the line says, not the default's 50 us
    given = copy.deepcopy(plain)
    given["vms"][0]["workload"]["boot"] = {"cpu_per_page": 1.83e-6}
    assert _guests_line(given).startswith("synthetic boot (1.83 us of CPU per page)")
    back = load_scenario(None).with_guest("windows-model").with_guest(None).to_dict()
    assert back["vms"][0]["workload"]["model"] is None


def test_a_scenario_names_a_model_and_may_override_it(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text(
        '[host]\nmemory = "256MB"\n[[vm]]\nname = "a"\nstartup = "128MB"\n'
        '[vm.workload]\nguest = "windows-model-zeroing"\n[vm.workload.boot]\n'
        "touch_fraction = 0.5\n"
    )
    s = load_scenario(str(f))
    boot = s.vms[0].workload.boot_phase()
    assert isinstance(boot, Boot) and boot.zero_free and boot.touch_fraction == 0.5
    assert s.to_dict()["vms"][0]["workload"]["model"] == "windows-model-zeroing"
