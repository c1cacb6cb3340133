"""What the user reads, continued: a host reboot's failed starts (outcome and exit code), the
top-level help, `--guest synthetic-boot`, the reboot plan's figures and whole-second stagger
(and `start_delay_step` to write it), the run table's labels and states, the plot, the
table at 80 columns, the final state after an interrupt, and the README's library example."""

from __future__ import annotations

import io
import json
import os
import tomllib
from dataclasses import replace

import pytest
from click.testing import CliRunner
from rich.console import Console

from vmmem.cli import plots, render
from vmmem.cli.experiments import apply_guest_options
from vmmem.cli.main import EXIT_VMS_FAILED, cli
from vmmem.lab.plan import plan_scenario
from vmmem.lab.results import RunResult
from vmmem.lab.scenario import ScenarioError, article_scenario, parse_scenario
from vmmem.sizes import MB

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# The article's four VMs shut down by a host reboot and started from Off together: at 1/8
# size two start and two fail ("Not enough memory in the system to start the virtual machine").
REBOOT = """
name = "article-reboot"
[host]
balancer_start_delay = 0
memory = "1400MB"
balancer_interval = 0.05
[[vm]]
name = "vm"
count = 4
startup = "512MB"
minimum = "32MB"
maximum = "2048MB"
automatic_stop_action = "ShutDown"
%(extra)s
[vm.workload]
idle_demand = "250MB"
boot_seconds = 1.6
[vm.workload.idle]
touch_interval = 0.05
[[event]]
action = "start"
[[event]]
action = "reboot-host"
"""


def reboot_scenario(extra: str = ""):
    return parse_scenario(tomllib.loads(REBOOT % {"extra": extra}))


def render_text(fn, *args, width: int = 120, **kwargs) -> str:
    out = io.StringIO()
    fn(Console(width=width, file=out, highlight=False, color_system=None), *args, **kwargs)
    return out.getvalue()


# --- a host reboot that cannot start every VM -------------------------------------------------


def test_a_reboot_with_failed_starts_is_its_own_outcome(disk_dir, monkeypatch):
    """The run is complete (every event played and measured) but two VMs are down: outcome
    vms_failed, exit code 4 (not 0, which would hide it; not 1, a failure of the tool); a
    comparison goes on past it and says the same."""
    from vmmem.lab.compare import compare_locations

    monkeypatch.chdir(disk_dir)
    s = reboot_scenario().scaled(8)
    cmp = compare_locations(s, [str(disk_dir)])
    # No Smart Paging to avoid, so the baseline is the same host: its starts fail too, and
    # the comparison still goes on to the folder.
    assert cmp.baseline is not None and cmp.baseline.outcome == "vms_failed"
    run = cmp.runs[str(disk_dir)]
    assert run.outcome == "vms_failed" and run.error is None
    assert run.failed_starts() == ["vm3", "vm4"]
    assert cmp.outcome == "vms_failed"
    assert "vm3, vm4 failed" in run.verdict()
    (disk_dir / "r.toml").write_text(REBOOT % {"extra": ""})
    r = CliRunner().invoke(cli, ["run", "r.toml", "--scale", "8", "-q"])
    assert r.exit_code == EXIT_VMS_FAILED == 4, r.output


def test_exit_code_4_is_documented_where_the_others_are():
    help_text = CliRunner().invoke(cli, ["--help"]).output
    assert "  4 " in help_text and "vms_failed" in help_text
    with open(os.path.join(ROOT, "docs", "CLI.md"), encoding="utf-8") as f:
        doc = f.read()
    assert "| 4 |" in doc and "`vms_failed`" in doc
    with open(os.path.join(ROOT, "docs", "json-schema.json"), encoding="utf-8") as f:
        assert "vms_failed" in f.read()


# --- the top-level help -----------------------------------------------------------------------


def test_top_level_help_teaches_what_the_commands_do_now():
    text = CliRunner().invoke(cli, ["--help"]).output
    assert "reboot storm" not in text  # the article's storm is a restart of the VMs
    assert "will a host restart need Smart Paging" not in text
    assert "restart storm" in text and "host reboot" in text
    start_here = text.split("Start here:")[1].split("Options:")[0]
    for command in ("plan", "disks", "run", "compare", "guests", "scenario", "show", "clean"):
        assert f"vmmem {command}" in start_here, command


# --- --guest NAME takes every name `vmmem guests` lists ----------------------------------------


def test_every_listed_guest_is_accepted_by_guest():
    r = CliRunner().invoke(cli, ["guests", "--json"])
    names = [g["name"] for g in json.loads(r.output)["guests"]]
    assert "synthetic-boot" in names
    s = article_scenario().scaled(8)
    for name in names:
        apply_guest_options(s, name, None, None)  # raises CliFailure if refused


def test_guest_synthetic_boot_replaces_a_scenarios_recorded_guest():
    s = article_scenario().scaled(8).with_guest("debian-12")
    out = apply_guest_options(s, "synthetic-boot", None, None)
    assert all(v.workload.guest is None for v in out.vms)
    r = CliRunner().invoke(cli, ["run", "--guest", "synthetic-boot", "--guest-ips", "3e9"])
    assert r.exit_code == 2 and "--guest-ips is for a recorded guest" in r.output
    # A scenario file may name it too.
    s2 = parse_scenario(
        tomllib.loads(
            REBOOT.replace("[vm.workload]", "[vm.workload]\nguest = 'synthetic-boot'")
            % {"extra": ""}
        )
    )
    assert all(v.workload.guest is None for v in s2.vms)


# --- the reboot plan ---------------------------------------------------------------------------


def test_the_reboot_plan_says_what_the_starts_need():
    p = plan_scenario(reboot_scenario().scaled(8))
    reboot = p.events[1]
    assert reboot.needed == 4 * 64 * MB  # four starts from Off, 64 MB Startup RAM each
    assert "0 MB" not in render_text(render.plan, p).split("reboot the host")[1].split("\n")[0]
    saved = parse_scenario(
        tomllib.loads((REBOOT % {"extra": ""}).replace('"ShutDown"', '"Save"'))
    ).scaled(8)
    ps = plan_scenario(saved)
    assert ps.events[1].needed == sum(ps.idle_assigned.values())  # restored as they were


def test_the_suggested_stagger_is_whole_seconds_and_start_delay_step_expresses_it():
    for scale in (1, 8):
        p = plan_scenario(reboot_scenario().scaled(scale))
        delay = p.events[1].suggested_delay
        assert delay is not None and delay == int(delay), delay
        assert f"start_delay_step = {delay:g}" in p.verdict()
        staggered = reboot_scenario(f"start_delay_step = {delay:g}").scaled(scale)
        assert [v.automatic_start_delay for v in staggered.vms] == [i * delay for i in range(4)]
        fixed = plan_scenario(staggered)
        assert not fixed.start_failures, fixed.verdict()
        assert set(fixed.events[1].outcomes.values()) == {"started"}


def test_start_delay_step_adds_to_the_first_delay():
    s = reboot_scenario("automatic_start_delay = 5\nstart_delay_step = 2")
    assert [v.automatic_start_delay for v in s.vms] == [5, 7, 9, 11]
    assert s.to_dict()["vms"][3]["automatic_start_delay"] == 11


@pytest.mark.parametrize(
    "extra, message",
    [
        ("start_delay_step = -1", "start_delay_step: expected a number of seconds >= 0"),
        ('start_delay_step = "2s"', "start_delay_step: expected a number of seconds >= 0"),
        ("start_delay_step = 40000", "start_delay_step: expected the last VM's delay"),
    ],
)
def test_start_delay_step_is_checked(extra, message):
    with pytest.raises(ScenarioError, match=message):
        reboot_scenario(extra)


def test_start_delay_step_needs_a_count_block():
    text = (REBOOT % {"extra": "start_delay_step = 2"}).replace("count = 4\n", "")
    with pytest.raises(ScenarioError, match="start_delay_step: only used with count of 2"):
        parse_scenario(tomllib.loads(text))


# --- the run's table and plot for a host reboot -------------------------------------------------


@pytest.fixture(scope="module")
def reboot_run(tmp_path_factory) -> RunResult:
    """A real run of the reboot (1/8 size, about 2 s): vm3 and vm4 fail to start."""
    from vmmem.devices import device_for_path
    from vmmem.lab.runner import run_scenario

    folder = tmp_path_factory.mktemp("reboot")
    assert not device_for_path(folder).ram_backed
    old = os.getcwd()
    os.chdir(folder)  # the host's default folder, ./vmmem-vms
    try:
        run = run_scenario(reboot_scenario().scaled(8))
    finally:
        os.chdir(old)
    assert run.outcome == "vms_failed", run.error
    return run


def table_rows(text: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.split("│")[1:-1]]
        for line in text.splitlines()
        if line.startswith("│")
    ]


def test_table_tells_first_starts_from_starts_after_the_reboot(reboot_run):
    text = render_text(render.run_report, reboot_run, width=160)
    rows = table_rows(text)
    events = [(r[0], r[1]) for r in rows]
    assert events[:4] == [(f"vm{i}", "start") for i in range(1, 5)]
    assert ("vm1", "start after reboot") in events and ("vm2", "start after reboot") in events
    # The starts the reboot could not make are rows too, and say so.
    failed = {r[0]: r for r in rows if r[2] == "failed"}
    assert set(failed) == {"vm3", "vm4"}
    assert all(
        r[1] == "start after reboot" and "not enough memory" in r[-1] for r in failed.values()
    )
    # The first rows show how those boots went, not the VM's state at the end (Off).
    for r in rows[:4]:
        assert r[-1] == "booted", r
    assert {r[0]: r[-1] for r in rows[4:6]} == {"vm1": "OK", "vm2": "OK"}


def test_plot_marks_the_reboot_and_keeps_failures_clear_of_the_legend(
    reboot_run, tmp_path, monkeypatch
):
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    plots.plot_run(reboot_run, str(tmp_path / "r.png"))
    fig = figures[0]
    ax_mem, ax_sp, ax_boot = fig.axes[:3]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = ax_mem.get_legend().get_window_extent(renderer)
    texts = {t.get_text(): t for t in ax_mem.texts}
    for name in ("vm3", "vm4"):
        mark = texts[f"{name} FAILED to start"].get_window_extent(renderer)
        assert not mark.overlaps(legend), name
        assert mark.x1 <= ax_mem.get_window_extent(renderer).x1 + 1  # inside the panel
    # The reboot's phases: the stop and the automatic starts, in the legend.
    labels = ax_mem.get_legend_handles_labels()[1]
    assert "host reboot: VMs stopped" in labels and "automatic starts" in labels
    (phase,) = plots.reboot_phases(reboot_run)
    starts = [o.at for o in reboot_run.events[1].outcomes.values()]
    assert phase["down"] <= min(starts) and phase["last_start"] == max(starts)
    # Nothing paged: the Smart Paging panel says so instead of an empty axis.
    assert any("no Smart Paging" in t.get_text() for t in ax_sp.texts)
    assert list(ax_sp.get_yticks()) == []
    # The boot panel: a slowdown over every bar that has one, and the failed starts named.
    boot_texts = [t.get_text() for t in ax_boot.texts]
    assert sum(t.endswith(" x") for t in boot_texts) == 6
    assert boot_texts.count("failed\nto start") == 2


def test_every_bar_with_a_slowdown_is_labelled(tmp_path, monkeypatch):
    """Boots 1.6-1.9 x their baseline without Smart Paging were drawn without a figure."""
    with open(os.path.join(HERE, "data", "run-v1-mixed.json"), encoding="utf-8") as f:
        run = RunResult.from_dict(json.load(f))
    slow = [i for i, b in enumerate(run.boots) if not b.smart_paging_peak_bytes][:2]
    for i, factor in zip(slow, (1.6, 1.9), strict=True):
        b = run.boots[i]
        run.boots[i] = replace(b, boot_time=(b.baseline or 0.0) * factor, slowdown=factor)
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    plots.plot_run(run, str(tmp_path / "m.png"))
    labels = [t.get_text() for t in figures[0].axes[2].texts]
    assert "1.6 x" in labels and "1.9 x" in labels
    assert len(labels) == len(run.boots)


# --- the table at 80 columns, and after an interrupt ------------------------------------------


def mixed() -> RunResult:
    with open(os.path.join(HERE, "data", "run-v1-mixed.json"), encoding="utf-8") as f:
        return RunResult.from_dict(json.load(f))


@pytest.mark.parametrize("width", [80, 90])
def test_run_table_at_80_columns_keeps_the_status_and_says_what_it_left_out(width):
    text = render_text(render.run_report, mixed(), width=width)
    table = [line for line in text.splitlines() if line[:1] in "┏┃┡│└"]
    assert all(len(line) <= width for line in table)
    assert "…" not in "\n".join(table), "a column was cut"
    header = table[1]
    for kept in ("VM", "event", "boot", "slower", "status"):
        assert kept in header, kept
    rows = table_rows("\n".join(table))
    assert all(r[-1] in ("OK", "booted") for r in rows), rows  # never blank
    left = [c for c in ("fault p99", "file for") if c not in header]
    assert left and f"{', '.join(left)} left out" in text.replace("\n", " ")


def test_reboot_table_at_80_columns(reboot_run):
    text = render_text(render.run_report, reboot_run, width=80)
    rows = table_rows(text)
    assert [r[-1] for r in rows if r[0] == "vm3"] == ["booted", "Off: not enough memory"]
    assert "…" not in text


def test_after_an_interrupt_the_status_says_the_file_is_gone():
    run = mixed()
    run.outcome = "interrupted"
    run.final_status = [
        replace(st, memory_status="Paging", smart_paging_file_in_use=True)
        if st.name == "batch1"
        else st
        for st in run.final_status
    ]
    text = render_text(render.run_report, run, width=160)
    assert "file in use" not in text
    (batch1,) = [r for r in table_rows(text) if r[0] == "batch1"]
    assert batch1[-1] == "was Paging when interrupted; file deleted"
    assert "every Smart Paging file was deleted" in text


def test_live_table_at_80_columns_leaves_columns_out_instead_of_cutting_them():
    from vmmem.lab.progress import VMProgress

    vms = [
        VMProgress(
            name=f"batch{i}",
            state="Running",
            phase="booting",
            memory_assigned=180 * MB,
            memory_demand=512 * MB,
            memory_startup=512 * MB,
            pressure=100,
            memory_status="Paging",
            smart_paging_file_in_use=True,
            smart_paging_file_path="/x",
            smart_paging_bytes=332 * MB,
            smart_paging_file_size=332 * MB,
            guest_paging_bytes=0,
            guest_page_ins=0,
            guest_page_outs=0,
            boot_elapsed=12.3,
            boot_eta=40.1,
        )
        for i in range(3)
    ]
    title = "event 3/4: restart vm1, vm2, vm3, vm4 at once"
    narrow = render_text(
        lambda c: c.print(render.progress_table(vms, 100 * MB, 33.3, title, 80)), width=80
    )
    wide = render_text(
        lambda c: c.print(render.progress_table(vms, 100 * MB, 33.3, title, 120)), width=120
    )
    assert "…" not in narrow and all(len(line) <= 80 for line in narrow.splitlines())
    rows = table_rows(narrow)
    assert len(rows) == 3 and all("Paging" in r and "332 MB" in r and "40.1 s" in r for r in rows)
    assert "state" not in narrow and "Running" in wide  # left out only where it does not fit
