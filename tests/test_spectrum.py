"""The same storm per guest (`vmmem run --guest a,b,c`, `--guest all`, the default `vmmem run`,
`vmmem compare --guest a,b,c`), end to end on the real disk at a small scale."""

from __future__ import annotations

import json
import os

import click
import pytest
from click.core import ParameterSource
from click.testing import CliRunner
from test_cli_run import fast_scenario  # noqa: E402

from vmmem.cli.common import EXIT_USAGE
from vmmem.cli.experiments import run_cmd
from vmmem.cli.main import cli
from vmmem.cli.spectrum import spectrum_guests
from vmmem.lab import guest_profiles
from vmmem.lab.schema import validate
from vmmem.lab.spectrum import DEFAULT_SCALE, guest_names, parse_guest_list

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GUESTS = ["busybox", "synthetic-boot"]


def _schema() -> dict:
    with open(os.path.join(ROOT, "docs", "json-schema.json"), encoding="utf-8") as f:
        return json.load(f)


def _valid(data: dict) -> None:
    assert validate(data, _schema()) == []
    try:
        import jsonschema
    except ImportError:
        return
    jsonschema.validate(data, _schema())


def _png(path: str) -> None:
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.shape[0] > 300 and img.shape[1] > 300
    assert img[..., :3].std() > 0.05  # bars, not a blank canvas


@pytest.fixture
def fast(disk_dir, monkeypatch):
    monkeypatch.chdir(disk_dir)
    # The article's storm with short boots and a fast balancer: a few seconds per guest.
    return os.path.basename(fast_scenario(disk_dir, 0.3))


def test_two_guests_one_table_json_and_plot(fast, disk_dir):
    r = CliRunner().invoke(
        cli,
        ["run", fast, "--scale", "8", "--guest", ",".join(GUESTS), "-q"]
        + ["--json", "sp.json", "--plot", "sp.png"],
    )
    assert r.exit_code == 0, r.output + r.stderr
    # One table, a row per guest, in the order given.
    lines = [line for line in r.stdout.splitlines() if line.startswith("│")]
    assert [line.split("│")[1].strip() for line in lines] == GUESTS
    assert "the guest decides the answer" in r.stdout
    data = json.loads((disk_dir / "sp.json").read_text())
    _valid(data)
    assert data["kind"] == "vmmem-spectrum" and data["command"] == "run"
    assert data["scale"] == 8 and data["scenario"] == "fast-article"
    assert [g["guest"] for g in data["guests"]] == GUESTS
    assert [row["guest"] for row in data["rows"]] == GUESTS
    for g, row in zip(data["guests"], data["rows"], strict=True):
        run = g["run"]
        assert g["compare"] is None and run["kind"] == "vmmem-run"
        # Every VM of that guest's run booted that guest (none: the synthetic boot).
        want = None if g["guest"] == "synthetic-boot" else g["guest"]
        assert {v["workload"].get("guest") for v in run["scenario"]["vms"]} == {want}
        # The row is that run's own summary, and its plan's prediction.
        for key in ("page_ins", "page_outs", "smart_paging_peak_bytes", "boot_time", "slowdown"):
            assert row[key] == run["summary"][key]
        storm = run["summary"]["event"]
        predicted = next(e["predicted"] for e in run["plan"]["events"] if e["index"] == storm)
        assert row["predicted_page_outs"] == sum(p["page_outs"] for p in predicted.values())
        assert row["vms"] == 4 and row["startup_pages"] == 64 * 2**20 // 4096
    busybox, synthetic = data["rows"]
    # The synthetic boot touches all of Startup RAM; busybox under half of it, and it fits.
    assert synthetic["pages_touched"] == synthetic["startup_pages"]
    assert busybox["pages_touched"] < busybox["startup_pages"] // 2
    assert synthetic["smart_paging_peak_bytes"] > 0 and synthetic["page_ins"] > 0
    assert busybox["smart_paging_peak_bytes"] == 0
    _png(str(disk_dir / "sp.png"))
    # `vmmem show` prints the same table again from the file.
    again = CliRunner().invoke(cli, ["show", "sp.json"])
    assert again.exit_code == 0, again.output
    assert [line for line in again.stdout.splitlines() if line.startswith("│")] == lines
    # On an 80-column terminal columns are left out (and it says so), never a guest's name.
    narrow = CliRunner(env={"COLUMNS": "80"}).invoke(cli, ["show", "sp.json"])
    rows = [line for line in narrow.stdout.splitlines() if line.startswith("│")]
    assert [line.split("│")[1].strip() for line in rows] == GUESTS
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 80
    assert "predicted" in narrow.stdout and "left out" in narrow.stdout
    # What the runs made is gone; only the kept virtual disks remain.
    assert not [
        f for _, _, files in os.walk(disk_dir / "vmmem-vms") for f in files if "paging" in f
    ]


@pytest.mark.parametrize(
    ("guest", "named"),
    [
        ("busybox,no-such-guest", "no-such-guest"),
        ("all,busybox", "'all' stands alone"),
        ("busybox,,debian-12", "an empty name"),
    ],
)
@pytest.mark.parametrize("command", ["run", "compare"])
def test_a_malformed_list_is_exit_2_naming_it_before_anything_runs(
    fast, disk_dir, command, guest, named
):
    where = ["d1", "d2"] if command == "compare" else []
    r = CliRunner().invoke(cli, [command, *where, fast, "--scale", "8", "--guest", guest])
    assert r.exit_code == EXIT_USAGE, r.output
    assert named in r.stderr and "--guest" in r.stderr
    assert "Traceback" not in r.output
    assert sorted(os.listdir(disk_dir)) == ["fast.toml"]  # nothing made


def test_all_is_every_guest_the_registry_lists():
    names = [p.name for p in guest_profiles()]
    assert guest_names() == names and len(names) >= 2
    assert parse_guest_list("all") == names
    assert parse_guest_list(" busybox , debian-12,busybox") == ["busybox", "debian-12"]
    assert parse_guest_list("busybox") is None  # one guest: the single run, as before


def test_the_default_run_is_every_guest_at_the_default_scale():
    def decide(scenario, guest, scale, source):
        with click.Context(run_cmd) as ctx:
            ctx.set_parameter_source("scale", source)
            return spectrum_guests(scenario, guest, scale)

    # `vmmem run`: every guest, at the scale that makes it about a minute.
    assert decide(None, None, 1.0, ParameterSource.DEFAULT) == (guest_names(), DEFAULT_SCALE)
    # `vmmem run --scale 2`: every guest, at the scale given.
    assert decide(None, None, 2.0, ParameterSource.COMMANDLINE) == (guest_names(), 2.0)
    # A scenario or one guest: the single run, as before.
    assert decide("x.toml", None, 1.0, ParameterSource.DEFAULT) is None
    assert decide(None, "debian-12", 1.0, ParameterSource.DEFAULT) is None
    with pytest.raises(click.ClickException, match="--guest-ips goes with --guest"):
        with click.Context(run_cmd) as ctx:
            ctx.set_parameter_source("scale", ParameterSource.DEFAULT)
            spectrum_guests(None, None, 1.0, 3e9)
    assert decide("x.toml", "busybox,debian-12", 4.0, ParameterSource.COMMANDLINE) == (
        ["busybox", "debian-12"],
        4.0,
    )


def test_compare_grid_a_row_per_guest_a_column_per_location(fast, disk_dir):
    r = CliRunner().invoke(
        cli,
        ["compare", "d1", "d2", fast, "--scale", "8", "--guest", ",".join(GUESTS), "-q"]
        + ["--no-baseline", "--json", "grid.json", "--plot", "grid.png"],
    )
    assert r.exit_code == 0, r.output + r.stderr
    header = next(line for line in r.stdout.splitlines() if line.startswith("┃"))
    assert [c.strip() for c in header.split("┃")[1:-1]] == ["guest", "baseline run", "d1", "d2"]
    rows = [line for line in r.stdout.splitlines() if line.startswith("│")]
    assert [line.split("│")[1].strip() for line in rows] == GUESTS
    data = json.loads((disk_dir / "grid.json").read_text())
    _valid(data)
    assert data["kind"] == "vmmem-spectrum" and data["command"] == "compare"
    assert [g["guest"] for g in data["guests"]] == GUESTS
    for g, row in zip(data["guests"], data["rows"], strict=True):
        assert g["run"] is None and g["compare"]["kind"] == "vmmem-compare"
        assert [c["location"] for c in row["locations"]] == ["d1", "d2"]
        assert row["locations"] == g["compare"]["rows"]
    synthetic = data["rows"][1]
    assert all(c["smart_paging_peak_bytes"] > 0 for c in synthetic["locations"])
    assert "slowdown against each guest's baseline from" in data["summary"]
    _png(str(disk_dir / "grid.png"))
