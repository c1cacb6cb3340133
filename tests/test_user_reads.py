"""What the user reads: the headline, the table's width, one name per location, the ETA, the
plot's Smart Paging panel, several scenario files, RAM-backed locations in compare, and
version-1 result files."""

from __future__ import annotations

import copy
import io
import json
import os
from dataclasses import replace

import pytest
from click.testing import CliRunner
from rich.console import Console
from test_cli_run import fast_scenario

from vmmem.cli import plots, render
from vmmem.cli.main import EXIT_USAGE, cli
from vmmem.lab.results import SCHEMA_VERSION, CompareResult, RunResult
from vmmem.lab.runner import BootEta, ProgressSink, run_scenario
from vmmem.lab.scenario import load_scenario
from vmmem.sizes import MB

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# A real `vmmem run examples/mixed-priority.toml --scale 4 --json` written by schema version 1:
# the database (the largest VM, not paging) and five VMs that paged 4.3-5.2 x.
V1_MIXED = os.path.join(HERE, "data", "run-v1-mixed.json")


def mixed_run() -> RunResult:
    with open(V1_MIXED, encoding="utf-8") as f:
        return RunResult.from_dict(json.load(f))


def render_text(fn, *args, width: int = 120, **kwargs) -> str:
    out = io.StringIO()
    fn(Console(width=width, file=out, highlight=False, color_system=None), *args, **kwargs)
    return out.getvalue()


# --- the headline ----------------------------------------------------------------------------


def test_headline_states_the_cost_of_smart_paging_not_the_largest_vms_baseline():
    run = mixed_run()
    st = run.storm_summary()
    # The storm against the largest VM's baseline: the misleading old figure.
    assert st.slowdown == pytest.approx(9.10 / 3.45, rel=0.01)
    assert st.smart_paging_vms == 5 and st.vms == 6
    assert st.smart_paging_slowest_vm == "batch1"
    assert st.smart_paging_slowdown == pytest.approx(5.19, abs=0.01)
    assert st.others_slowdown == pytest.approx(1.0, abs=0.01)
    verdict = run.verdict()
    assert verdict.startswith("5 of 6 VMs booted on Smart Paging")
    assert "batch1, booted in 9.10 s instead of 1.75 s (5.2 x slower)" in verdict
    assert "2.6 x" not in verdict
    assert "the one that did not page: 1.0 x its baseline" in verdict


def test_table_says_per_vm_which_paged():
    text = render_text(render.run_report, mixed_run())
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if "host-resta" in line}
    assert " no " in rows["db"]
    for vm in ("web1", "web2", "web3", "batch1", "batch2"):
        assert " MB " in rows[vm] and " no " not in rows[vm]


def test_one_name_per_location():
    run = mixed_run()
    text = render_text(render.run_report, run, width=400)
    folder = "/tmp/ux7trial/vmmem-vms"  # where the VMs' Smart Paging folders were
    assert f"Smart Paging files in {folder}: ext4" in text
    assert f"files in {folder}: ext4" in run.verdict()
    assert "Smart Paging on /tmp/ux7trial:" not in text


# --- the table fits ---------------------------------------------------------------------------


@pytest.mark.parametrize("width", [100, 120])
def test_run_table_fits_without_dropping_or_cutting_columns(width):
    text = render_text(render.run_report, mixed_run(), width=width)
    table = [line for line in text.splitlines() if line[:1] in "┏┃┡│└"]
    assert table and all(len(line) <= width for line in table)
    assert "…" not in "\n".join(table), "a column was cut"
    for header in ("VM", "event", "boot", "baseline", "slower", "paged", "file for", "status"):
        assert header in table[1], header
    for row in table:
        if row.startswith("│"):
            # The last column is there: the final status, or "booted" on a VM's earlier row.
            assert row.rstrip().endswith("│") and ("OK" in row or "booted" in row)


def test_wide_shows_every_column():
    narrow = render_text(render.run_report, mixed_run(), width=120)
    wide = render_text(render.run_report, mixed_run(), width=250, wide=True)
    for header in ("page-ins/outs", "fault p50/p99", "file peak", "device r/w"):
        assert header in wide and header not in narrow


def test_wide_option_on_run_compare_and_show(tmp_path):
    for command in ("run", "compare", "show"):
        r = CliRunner().invoke(cli, [command, "--help"])
        assert "--wide" in r.stdout, command
    r = CliRunner().invoke(cli, ["show", V1_MIXED, "--wide"], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    assert "page-ins/outs" in r.stdout


# --- version-1 files --------------------------------------------------------------------------


def test_show_reads_version_1_files_and_refuses_unknown_versions(tmp_path):
    assert SCHEMA_VERSION == 4
    with open(V1_MIXED, encoding="utf-8") as f:
        data = json.load(f)
    assert data["schema_version"] == 1  # read as it is: schema 4 describes version 4
    r = CliRunner().invoke(cli, ["show", V1_MIXED, "--plot", str(tmp_path / "v1.png")])
    assert r.exit_code == 0, r.output
    assert "5 of 6 VMs booted on Smart Paging" in r.stdout
    assert (tmp_path / "v1.png").read_bytes()[:4] == b"\x89PNG"
    newer = tmp_path / "v9.json"
    newer.write_text(json.dumps(dict(data, schema_version=9)))
    r = CliRunner().invoke(cli, ["show", str(newer)])
    assert r.exit_code == EXIT_USAGE and "schema version 9" in r.output


# --- the plot's Smart Paging panel ------------------------------------------------------------


def test_plot_draws_exact_peaks_over_each_files_life(tmp_path, monkeypatch):
    run = mixed_run()
    # Give one boot a version-2 life: made 0.6 s into the boot, deleted 5 s later.
    i, web1 = next(
        (i, b) for i, b in enumerate(run.boots) if b.vm == "web1" and b.kind == "host-restart"
    )
    web1 = run.boots[i] = replace(
        web1,
        smart_paging_file_created_at=web1.started_at + 0.6,
        smart_paging_file_deleted_at=web1.started_at + 5.6,
    )
    lives = {(x["vm"], x["created"]): x for x in plots.file_lives(run)}
    life = lives[("web1", web1.started_at + 0.6)]
    assert life["deleted"] == web1.started_at + 5.6
    assert life["peak"] == web1.smart_paging_peak_bytes
    # A version-1 boot: its start stands in for the file's making.
    db = next(b for b in run.boots if b.vm == "db" and b.kind == "restart")
    assert lives[("db", db.started_at)]["peak"] == db.smart_paging_peak_bytes

    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    plots.plot_run(run, str(tmp_path / "run.png"))
    ax_sp = figures[0].axes[1]
    dashed = sorted(
        round(line.get_ydata()[0], 3) for line in ax_sp.get_lines() if line.get_linestyle() == "--"
    )
    exact = sorted(
        round(b.smart_paging_peak_bytes / MB, 3) for b in run.boots if b.smart_paging_peak_bytes
    )
    assert dashed == exact  # every file's exact peak, as the core kept it
    # The once-a-tick samples missed the database's whole 0.8 s file on its restart.
    sampled_db = max(
        v.smart_paging_bytes
        for s in run.timeline
        if s.time >= db.started_at
        for v in s.vms
        if v.name == "db"
    )
    assert sampled_db < db.smart_paging_peak_bytes
    # The sampled curve rises from 0 where the file was made, not at the next tick.
    web1_line = next(
        line for line in ax_sp.get_lines() if (web1.started_at + 0.6) in list(line.get_xdata())
    )
    xs, ys = list(web1_line.get_xdata()), list(web1_line.get_ydata())
    assert ys[xs.index(web1.started_at + 0.6)] == 0


# --- the live ETA -----------------------------------------------------------------------------


def test_eta_never_grows_when_a_boot_slows_down():
    """A boot that runs fast for 1 s, then at a tenth of the speed (Smart Paging): the
    old estimate (elapsed x left / done) rose from 1 s to over 5 s; this one never rises."""
    eta = BootEta(expected_cpu=1.0)
    shown, t, done = [], 0.0, 0.0
    while done < 1.0:
        t += 0.1
        done = min(1.0, done + (0.1 if t <= 0.5 else 0.01))
        shown.append(eta.update(t, done))
    assert shown[0] == pytest.approx(0.9)  # the workload's CPU time still ahead
    assert all(b <= a for a, b in zip(shown, shown[1:], strict=False))
    assert shown[-1] == 0


def test_eta_follows_a_steady_boot():
    eta = BootEta(expected_cpu=None)
    values = [eta.update(t / 10, t / 100) for t in range(1, 100)]
    assert values[0] is None  # under 2 % done: nothing to say yet
    assert values[50] == pytest.approx(4.9, abs=0.3)  # half done in 5.1 s: 4.9 s left
    assert all(b <= a for a, b in zip(values[2:], values[3:], strict=False))


class Recorder(ProgressSink):
    """Each boot's ETAs as the live display got them, keyed by (event, VM): a VM boots once
    per event (the starts, then the restart), so no guess from the samples' times is needed."""

    def __init__(self):
        self.event = -1
        self.samples: dict[tuple[int, str], list[float]] = {}

    def event_started(self, index, count, description):
        self.event = index

    def update(self, vms, available, elapsed):
        for v in vms:
            if v.boot_elapsed is not None and v.boot_eta is not None:
                self.samples.setdefault((self.event, v.name), []).append(v.boot_eta)


def test_live_eta_of_a_real_storm_never_grows(tmp_path, monkeypatch):
    """The ETA of a VM whose Maximum RAM is 4 x its Startup (the old estimate counted
    Maximum RAM as the boot's work, so it grew through every boot)."""
    monkeypatch.chdir(tmp_path)
    # Boots of 0.5 s at 1/8 scale: several 0.1 s progress polls each, more on a loaded
    # machine (where boots only get longer); how many is not asserted, only what they show.
    s = load_scenario(fast_scenario(tmp_path, boot=4.0)).scaled(8)
    sink = Recorder()
    result = run_scenario(s, progress=sink)
    assert result.outcome == "ok"
    for key, etas in sink.samples.items():
        assert all(b <= a + 1e-9 for a, b in zip(etas, etas[1:], strict=False)), (key, etas)
    events = {event for event, _ in sink.samples}
    assert len(events) == 2, sink.samples  # the starts and the restart were both seen
    assert any(len(etas) >= 2 for etas in sink.samples.values()), "no ETA seen twice in a boot"


# --- scenario files ---------------------------------------------------------------------------


def test_scenario_takes_several_files():
    paths = [os.path.join(ROOT, "examples", n) for n in ("article.toml", "mixed-priority.toml")]
    r = CliRunner().invoke(cli, ["scenario", *paths])
    assert r.exit_code == 0, r.output
    assert "article" in r.stdout and "mixed-priority" in r.stdout
    r = CliRunner().invoke(cli, ["scenario", "--json", *paths])
    assert [d["name"] for d in json.loads(r.stdout)] == ["article", "mixed-priority"]
    r = CliRunner().invoke(cli, ["scenario", paths[0], "/nonexistent.toml"])
    assert r.exit_code == EXIT_USAGE and "/nonexistent.toml: no such file" in r.output


def test_scenario_and_plan_agree_on_memory_for_vms():
    path = os.path.join(ROOT, "examples", "mixed-priority.toml")
    scenario = CliRunner().invoke(cli, ["scenario", path], env={"COLUMNS": "200"}).stdout
    plan = CliRunner().invoke(cli, ["plan", path], env={"COLUMNS": "200"}).stdout
    assert "1,800 MB for VMs" in scenario and "2,000 MB for VMs" not in scenario
    assert "host: 2,000 MB less a reserve of 200 MB" in scenario
    assert "1,800 MB of host memory for VMs" in plan


# --- compare ----------------------------------------------------------------------------------


def test_compare_summary_says_a_location_is_ram_backed():
    disk = mixed_run()
    ram = copy.deepcopy(disk)
    ram.locations = [replace(loc, ram_backed=True, fstype="tmpfs") for loc in ram.locations]
    cmp = CompareResult(baseline=None, runs={"/var/tmp/sp": disk, "/dev/shm/sp": ram})
    summary = cmp.summary()
    assert "/dev/shm/sp (RAM-backed: no disk measured)" in summary
    assert "/var/tmp/sp (RAM" not in summary
    text = render_text(render.compare_report, cmp)
    assert "RAM" in text and all(len(line) <= 120 for line in text.splitlines())
