"""`--runs N` and `--warmup K` (vmmem.lab.repeat), and the table exports: the statistics on
constructed numbers, the outlier rule, the verdict respecting the spread, and end to end
through the CLI on a small storm on the real disk."""

from __future__ import annotations

import csv
import json
import math
import os
import statistics

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from test_cli_run import FAST, check_against_schema

from vmmem.cli.main import cli
from vmmem.lab.repeat import (
    LocationStats,
    RunStats,
    Spread,
    _verdict,
    differ,
    outliers,
    repeat,
    spread,
)
from vmmem.lab.results import StormSummary

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@given(st.lists(finite, min_size=1, max_size=40))
def test_spread_matches_the_statistics_module(xs: list[float]) -> None:
    sp = spread(xs)
    assert sp is not None
    assert sp.n == len(xs)
    assert math.isclose(sp.mean, statistics.mean(xs), rel_tol=1e-9, abs_tol=1e-6)
    ref_sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    assert math.isclose(sp.sd, ref_sd, rel_tol=1e-6, abs_tol=1e-6)
    assert (sp.min, sp.max) == (min(xs), max(xs))


def test_spread_leaves_unmeasured_out() -> None:
    assert spread([None, None]) is None
    sp = spread([None, 2.0, 4.0])
    assert sp == Spread(n=2, mean=3.0, sd=math.sqrt(2), min=2.0, max=4.0)


def test_outliers_beyond_the_fences_and_a_slow_first_run() -> None:
    # Q1 = 10, Q3 = 10.75 (inclusive quartiles), IQR 0.75: the fence is at 11.875.
    assert outliers([10.0, 10.0, 11.0, 10.0, 11.0, 30.0]) == [5]
    assert outliers([10.0, 10.0, 11.0, 10.0, 11.0, 11.5]) == []
    assert outliers([10.0, 10.0, 11.0, 10.0, 11.0, -20.0]) == [5]
    # The first run more than 1.5 x the others' median (3 runs or more): named.
    assert outliers([16.0, 10.0, 10.0]) == [0]
    assert outliers([14.0, 10.0, 10.0]) == []
    assert outliers([30.0, 10.0]) == []  # two runs: nothing to judge by
    assert outliers([10.0, None, 10.0, 10.0, 10.0, 50.0]) == [5]
    # Beyond the fence of a tight cluster but within 5 % of the median: jitter, not named.
    assert outliers([1.0, 1.0, 1.0, 1.0, 1.03]) == []
    assert outliers([1.0, 1.0, 1.0, 1.0, 1.06]) == [4]


def test_outlier_warning_reads_as_hyperfines() -> None:
    summaries = [StormSummary(boot_time=t) for t in (16.0, 10.0, 10.0, 10.0)]
    stats = RunStats.of(summaries, warmup=0)
    assert len(stats.outliers) == 1
    assert stats.outliers[0].startswith("Statistical outliers were detected in boot time")
    assert "boot time (run 1)" in stats.outliers[0] and "over 4 runs" in stats.outliers[0]
    assert RunStats.of(summaries[1:], warmup=0).outliers == []


def _loc(name: str, times: list[float]) -> LocationStats:
    return LocationStats(name, RunStats.of([StormSummary(boot_time=t) for t in times], 0))


def test_the_verdict_respects_the_spread() -> None:
    tight_a, tight_b = [10.0, 10.1, 9.9, 10.0], [12.0, 12.1, 11.9, 12.0]
    # Means 20 % apart, spreads tiny: they differ.
    assert differ(spread(tight_a), spread(tight_b)) is True
    v = _verdict([_loc("/a", tight_a), _loc("/b", tight_b)])
    assert "/b is slower than /a" in v and "beyond their spread" in v
    # The same means, but runs that move by more: mean +- 2 sd overlap, no difference claimed.
    loose_a, loose_b = [8.0, 12.0, 9.0, 11.0], [10.0, 14.0, 11.0, 13.0]
    assert statistics.mean(loose_b) / statistics.mean(loose_a) > 1.15
    assert differ(spread(loose_a), spread(loose_b)) is False
    v = _verdict([_loc("/a", loose_a), _loc("/b", loose_b)])
    assert "do not differ beyond their spread" in v
    # One run each: no spread, no claim.
    assert differ(spread([1.0]), spread([5.0])) is None
    assert "no spread" in _verdict([_loc("/a", [1.0]), _loc("/b", [5.0])])


@given(st.lists(finite, min_size=2, max_size=10), st.lists(finite, min_size=2, max_size=10))
def test_differ_is_non_overlap_of_two_sd(a: list[float], b: list[float]) -> None:
    sa, sb = spread(a), spread(b)
    assert sa is not None and sb is not None
    ma, sda, mb, sdb = (
        statistics.mean(a),
        statistics.stdev(a),
        statistics.mean(b),
        statistics.stdev(b),
    )
    apart = ma + 2 * sda < mb - 2 * sdb or mb + 2 * sdb < ma - 2 * sda
    margin = 1e-6 * (1 + abs(ma) + abs(mb) + sda + sdb)
    gap = max(mb - 2 * sdb - (ma + 2 * sda), ma - 2 * sda - (mb + 2 * sdb))
    if abs(gap) > margin:  # away from the edge, where rounding could decide
        assert differ(sa, sb) is apart


def test_repeat_discards_warmups_and_stops_at_a_failure() -> None:
    calls: list[tuple[int, bool]] = []

    def once(i: int, warm: bool) -> str:
        calls.append((i, warm))
        return "bad" if i == 4 else f"r{i}"

    assert repeat(once, runs=3, warmup=2) == ["r2", "r3", "bad"]  # no stop: all kept
    assert calls == [(0, True), (1, True), (2, False), (3, False), (4, False)]
    calls.clear()
    assert repeat(once, runs=5, warmup=0, stop=lambda r: r == "bad") == [
        "r0", "r1", "r2", "r3", "bad",
    ]  # fmt: skip
    with pytest.raises(ValueError):
        repeat(once, runs=0)


# ---------------------------------------------------------------------------------------------
# end to end


@pytest.fixture
def fast(disk_dir) -> str:
    path = disk_dir / "fast.toml"
    path.write_text(FAST % {"boot": 0.5})
    return str(path)


def test_run_twice_keeps_each_runs_figures_and_exports(disk_dir, fast, monkeypatch) -> None:
    monkeypatch.chdir(disk_dir)
    out = disk_dir / "out"
    out.mkdir()
    r = CliRunner().invoke(
        cli,
        [
            "run",
            fast,
            "--scale",
            "8",
            "--runs",
            "2",
            "--warmup",
            "1",
            "-q",
            "--json",
            str(out / "r.json"),
            "--export-csv",
            str(out / "r.csv"),
            "--export-markdown",
            str(out / "r.md"),
            "--plot",
            str(out / "r.png"),
        ],  # fmt: skip
    )
    assert r.exit_code == 0, r.output
    assert "over 2 runs, after 1 warm-up run(s) discarded" in r.output
    assert "mean +- sd (min .. max)" in r.output
    data = json.loads((out / "r.json").read_text())
    check_against_schema(data)
    assert len(data["repeats"]) == 2
    times = [run["summary"]["boot_time"] for run in data["repeats"]]
    assert all(t > 0 for t in times)
    stats = data["stats"]
    assert (stats["runs"], stats["warmup"]) == (2, 1)
    assert math.isclose(stats["boot_time"]["mean"], statistics.mean(times))
    assert math.isclose(stats["boot_time"]["sd"], statistics.stdev(times))
    assert stats["boot_time"]["min"] == min(times)
    # The document itself is the first run's: `vmmem show` reads it.
    assert data["summary"] == data["repeats"][0]["summary"]
    shown = CliRunner().invoke(cli, ["show", str(out / "r.json"), "--plot", str(out / "s.png")])
    assert shown.exit_code == 0, shown.output
    assert "over 2 runs" in shown.output and "mean +- sd (min .. max)" in shown.output
    assert os.path.getsize(out / "s.png") > 10_000
    # CSV: a row per boot, with the raw and the spread columns.
    with open(out / "r.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    boots = data["repeats"][0]["boots"]
    assert len(rows) == len(boots) == 8
    assert {row["vm"] for row in rows} == {"vm1", "vm2", "vm3", "vm4"}
    restart = [row for row in rows if row["event"] == "restart"]
    assert len(restart) == 4 and all(row["runs"] == "2" for row in restart)
    vm1 = next(row for row in restart if row["vm"] == "vm1")
    each = [
        next(b for b in run["boots"] if b["vm"] == "vm1" and b["event"] == 2)["boot_time"]
        for run in data["repeats"]
    ]
    assert math.isclose(float(vm1["boot_time_s_mean"]), statistics.mean(each), rel_tol=1e-5)
    # Markdown: the header, the rule, a row per boot.
    lines = (out / "r.md").read_text().splitlines()
    assert lines[0].startswith("| vm | event | boot_time_s |") and "boot_time_s_sd" in lines[0]
    assert set(lines[1]) <= set("|-")
    assert len(lines) == 2 + len(boots)
    assert all(line.startswith("| vm") for line in lines[2:])
    assert os.path.getsize(out / "r.png") > 10_000


def test_one_run_writes_todays_json(disk_dir, fast, monkeypatch) -> None:
    monkeypatch.chdir(disk_dir)
    r = CliRunner().invoke(
        cli, ["run", fast, "--scale", "8", "-q", "--json", "one.json", "--export-csv", "one.csv"]
    )
    assert r.exit_code == 0, r.output
    data = json.loads((disk_dir / "one.json").read_text())
    assert "repeats" not in data and "stats" not in data
    check_against_schema(data)
    with open(disk_dir / "one.csv", newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert "runs" not in header and "boot_time_s" in header


def test_compare_twice_exports_a_row_per_location(disk_dir, fast, monkeypatch) -> None:
    monkeypatch.chdir(disk_dir)
    r = CliRunner().invoke(
        cli,
        [
            "compare",
            str(disk_dir / "a"),
            str(disk_dir / "b"),
            fast,
            "--scale",
            "8",
            "--runs",
            "2",
            "-q",
            "--json",
            "c.json",
            "--export-csv",
            "c.csv",
            "--export-markdown",
            "c.md",
        ],  # fmt: skip
    )
    assert r.exit_code == 0, r.output
    assert "over 2 runs" in r.output
    data = json.loads((disk_dir / "c.json").read_text())
    assert "beyond their spread" in data["stats"]["verdict"]
    check_against_schema(data)
    assert len(data["repeats"]) == 2
    assert [x["location"] for x in data["stats"]["locations"]] == [
        str(disk_dir / "a"), str(disk_dir / "b"),
    ]  # fmt: skip
    assert data["stats"]["baseline"]["runs"] == 2
    with open(disk_dir / "c.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [row["location"] for row in rows] == [
        "baseline",
        str(disk_dir / "a"),
        str(disk_dir / "b"),
    ]
    for row in rows[1:]:
        assert row["runs"] == "2" and float(row["boot_time_s_mean"]) > 0
    lines = (disk_dir / "c.md").read_text().splitlines()
    assert lines[0].startswith("| location |") and len(lines) == 2 + 3


@pytest.mark.parametrize(
    "args, says",
    [
        (["--export-csv", "{d}/missing/x.csv"], "--export-csv"),
        (["--export-markdown", "{d}"], "--export-markdown"),
        (["--export-csv", "{d}/t.csv", "--json", "{d}/t.csv"], "both name"),
        (["--export-csv", "{d}/t.csv", "--export-markdown", "{d}/t.csv"], "both name"),
    ],
)
def test_bad_destinations_are_refused_before_running(disk_dir, fast, args, says) -> None:
    args = [a.format(d=disk_dir) for a in args]
    for command in (["run", fast], ["compare", str(disk_dir / "a"), fast]):
        r = CliRunner().invoke(cli, [*command, "--runs", "3", *args])
        assert r.exit_code == 2, r.output
        assert says in r.output
        assert "Traceback" not in r.output
        # Refused before anything ran: no VM folder nor Smart Paging folder made.
        assert not (disk_dir / "a").exists()


def test_the_spectrum_refuses_runs_with_a_clear_message() -> None:
    r = CliRunner().invoke(cli, ["run", "--guest", "busybox,synthetic-boot", "--runs", "2"])
    assert r.exit_code == 2, r.output
    assert "--runs" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["run", "--runs", "0"])
    assert r.exit_code == 2
