"""``vmmem sweep``: the sweep file checked before anything runs, a local sweep interrupted and
resumed, the same sweep on a local Dask cluster giving the same table, and a worker killed
mid-cell. Tiny VMs (2 x 64 MB) with short boots keep a cell to a few seconds; every wait is on
an event (a line on stdout, a lock file appearing), never a sleep."""

from __future__ import annotations

import csv
import glob
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmmem.cli.main import cli
from vmmem.lab.scenario import ScenarioError
from vmmem.lab.sweep import AXES, RowsFile, parse_sweep, read_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = """
name = "tiny"
[host]
balancer_start_delay = 0
memory = "96MB"
balancer_interval = 0.05
[[vm]]
name = "vm"
count = 2
startup = "64MB"
minimum = "32MB"
maximum = "256MB"
buffer = 20
[vm.workload]
idle_demand = "32MB"
boot_seconds = %(boot)s
[vm.workload.idle]
touch_interval = 0.05
[[event]]
action = "start"
vms = "all"
[[event]]
action = "idle"
seconds = 0.1
[[event]]
action = "restart-vms"
[[event]]
action = "settle"
timeout = 30
"""

# Two cells: 96 MB pages (32 MB of Smart Paging), 176 MB does not.
SWEEP = """
scenario = "tiny.toml"
runs = 1
vhd_dir = "locations.ssd"
paging_dir = "locations.ssd"
[axes]
host_memory = ["96MB", "176MB"]
"""

# A deadline only for a test that would otherwise hang: never part of what is asserted.
HANG = 120.0


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ, PYTHONPATH=ROOT, COLUMNS="200")
    e.pop("VMMEM_WORKER_CONFIG", None)
    e.update(extra)
    return e


def make_sweep(folder: Path, sweep: str = SWEEP, boot: float = 0.3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.toml").write_text(TINY % {"boot": boot})
    (folder / "sweep.toml").write_text(sweep)
    return folder / "sweep.toml"


def worker_config(folder: Path, name: str) -> Path:
    (folder / "ssd").mkdir(parents=True, exist_ok=True)
    cfg = folder / "worker.toml"
    cfg.write_text(f'name = "{name}"\n[locations]\nssd = "{folder / "ssd"}"\n')
    return cfg


def sweep_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "vmmem.cli", "sweep", *args]


def read_lines_until(proc: subprocess.Popen[str], want: str) -> list[dict]:
    """JSON lines from proc's stdout until one whose event is `want` (the event we wait on)."""
    sel = selectors.DefaultSelector()
    assert proc.stdout is not None
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + HANG
    seen = []
    while time.monotonic() < deadline:
        if not sel.select(timeout=1.0):
            assert proc.poll() is None, f"ended early: {proc.stderr.read() if proc.stderr else ''}"
            continue
        line = proc.stdout.readline()
        assert line, f"stdout closed: {proc.stderr.read() if proc.stderr else ''}"
        rec = json.loads(line)
        seen.append(rec)
        if rec.get("event") == want:
            return seen
    raise AssertionError(f"no {want} line within {HANG} s: {seen}")


def paging_files(folder: Path) -> list[str]:
    return glob.glob(os.path.join(str(folder), "**", "*.slp"), recursive=True)


def locks(folder: Path) -> list[str]:
    return glob.glob(os.path.join(str(folder), "**", "vmmem-run-*.lock"), recursive=True)


# ---------------------------------------------------------------------------------------------
# the sweep file, refused before anything runs

BAD = [
    ("colour = 1\n", "colour: unknown key"),
    ('name = "../up"\n', "name: expected a name without /"),
    ("[axes]\nguest = []\n", "axes.guest: expected a non-empty list"),
    ("[axes]\nhost_memory = [720]\n", "axes.host_memory[0]:"),
    ('[axes]\nhost_memory = ["511MB"]\n', "axes.host_memory[0]: expected host memory that is"),
    ('[axes]\nbackend = ["fast"]\n', "axes.backend[0]: expected one of direct, mmap"),
    ("[axes]\nprocessors = [1, 2]\n", "axes.processors: the key is processor_count"),
    ('[axes]\nguest = ["no-such-guest"]\n', "axes.guest[0]: not a guest"),
    ("[axes]\nscale = [0.5]\n", "axes.scale[0]: expected a number from 1"),
    ("runs = 0\n", "runs: expected a whole number from 1"),
    ('scenario = "missing.toml"\n', "scenario: missing.toml: no such file"),
    ('[axes]\nvm_count = [2]\n[[cell]]\nguest = "busybox"\n', "cell: give either"),
    ('[[cell]]\nguest = "busybox"\n[[cell]]\nscale = 2.0\n', "cell[1]: expected the keys"),
    ('paging_dir = "locations.ssd"\n[axes]\npaging_dir = ["/tmp"]\n', "axes.paging_dir: also"),
    ('[axes]\nhost_memory = ["64MB", "64MB"]\n', "axes.host_memory[1]"),
    ("x = " + "[" * 40 + "]" * 40 + "\n", "nested deeper"),
]


@pytest.mark.parametrize("text,expected", BAD)
def test_a_malformed_sweep_is_refused_before_anything_runs(tmp_path, text, expected):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["sweep", str(path), "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert f"vmmem: error: {path}: " in r.output and expected in r.output, r.output
    assert "Traceback" not in r.output
    assert not out.exists()  # nothing made, nothing run


def test_vm_count_needs_one_vm_block(tmp_path):
    (tmp_path / "two.toml").write_text(
        '[host]\nmemory = "512MB"\n[[vm]]\nname = "a"\nstartup = "64MB"\n'
        '[[vm]]\nname = "b"\nstartup = "64MB"\n'
    )
    path = tmp_path / "s.toml"
    path.write_text('scenario = "two.toml"\n[axes]\nvm_count = [1, 2]\n')
    r = CliRunner().invoke(cli, ["sweep", str(path), "--plan"])
    assert r.exit_code == 2 and "axes.vm_count[0]: the base scenario has 2 [[vm]] blocks" in (
        r.output
    )


def test_every_cells_scenario_is_checked_before_anything_runs(tmp_path):
    """vm_count 1 leaves no vm2 for the scenario's event: the cell is refused, located."""
    path = make_sweep(tmp_path, '[axes]\nvm_count = [2, 1]\nhost_memory = ["96MB"]\n')
    text = (tmp_path / "tiny.toml").read_text().replace('vms = "all"', 'vms = ["vm1", "vm2"]')
    (tmp_path / "tiny.toml").write_text(text)
    (tmp_path / "sweep.toml").write_text('scenario = "tiny.toml"\n' + path.read_text())
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["sweep", str(path), "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert f"{path}: axes (vm_count=1, host_memory=96MB): event[0].vms: unknown VM" in r.output
    assert not out.exists()


def test_an_unknown_role_is_refused_naming_the_settings_file(tmp_path, monkeypatch):
    path = make_sweep(tmp_path)
    cfg = tmp_path / "w.toml"
    cfg.write_text('[locations]\nhdd = "/nowhere"\n')
    monkeypatch.setenv("VMMEM_WORKER_CONFIG", str(cfg))
    r = CliRunner().invoke(cli, ["sweep", str(path), "--out", str(tmp_path / "out")])
    assert r.exit_code == 2, r.output
    assert f"{cfg}: locations.ssd: this machine" in r.output and "it knows: hdd" in r.output


VALUE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5000)
    | st.floats(allow_nan=True)
    | st.sampled_from(["96MB", "1.5GB", "synthetic-boot", "direct", "locations.ssd", "", "x"])
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
KEYS = ["name", "scenario", "runs", "axes", "cell", "locations", "colour", *AXES]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    top=st.dictionaries(st.sampled_from(KEYS), VALUE, max_size=4),
    axes=st.dictionaries(st.sampled_from([*AXES, "processors"]), VALUE, max_size=3),
)
def test_fuzz_the_sweep_loader_refuses_with_a_located_error(tmp_path_factory, top, axes):
    data = dict(top)
    if axes:
        data["axes"] = axes
    data.setdefault("scenario", "article")
    try:
        s = parse_sweep(data, "fuzz.toml", base_dir=str(tmp_path_factory.getbasetemp()))
    except ScenarioError as e:
        assert str(e).startswith("fuzz.toml: ") or str(e).startswith("<built-in")
        return
    assert s.cells and all(c.runs == s.runs for c in s.cells)
    assert len({c.id for c in s.cells}) == len(s.cells)


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_fuzz_sweep_files_as_bytes(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("fuzz") / "s.toml"
    path.write_bytes(raw)
    from vmmem.lab.sweep import load_sweep

    try:
        load_sweep(path)
    except ScenarioError as e:
        assert str(e).startswith(f"{path}: ")


def test_cell_ids_are_stable_and_follow_the_inputs(tmp_path):
    path = make_sweep(tmp_path)
    from vmmem.lab.sweep import load_sweep

    a, b = load_sweep(path), load_sweep(path)
    assert [c.id for c in a.cells] == [c.id for c in b.cells]
    (tmp_path / "sweep.toml").write_text(SWEEP.replace("runs = 1", "runs = 2"))
    assert not {c.id for c in load_sweep(path).cells} & {c.id for c in a.cells}
    # Another value on the axis keeps the cells already there.
    (tmp_path / "sweep.toml").write_text(SWEEP.replace('"176MB"]', '"176MB", "256MB"]'))
    assert {c.id for c in a.cells} < {c.id for c in load_sweep(path).cells}


def test_the_table_keeps_whole_cells_only(tmp_path):
    path = str(tmp_path / "rows.jsonl")
    t = RowsFile(path)
    row = {"kind": "vmmem-sweep-row", "cell": "a", "run": 0, "outcome": "ok"}
    t.append_cell([row, row | {"run": 1}])
    # A writer killed mid-cell: the first line of a batch of two, then half a line.
    with open(path, "a") as f:
        f.write(json.dumps(row | {"cell": "b", "batch": "x", "batch_rows": 2}) + "\n")
        f.write('{"kind": "vmmem-sweep-row", "cell": "b", "ba')
    assert [r["cell"] for r in read_rows(path)] == ["a", "a"]
    t.append_cell([row | {"cell": "c"}])  # starts on a line of its own
    t.close()
    assert [r["cell"] for r in read_rows(path)] == ["a", "a", "c"]
    with pytest.raises(RuntimeError, match="another vmmem sweep"):
        t1 = RowsFile(path)
        try:
            RowsFile(path)
        finally:
            t1.close()


# ---------------------------------------------------------------------------------------------
# a local sweep: Ctrl-C, then resume


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory, clusters):
    """The two-cell sweep run here: interrupted with SIGINT once its first cell's line is
    out, then run again to the end. Returns what each step showed. (The first cluster's
    workers join meanwhile.)"""
    clusters.start("two")
    folder = tmp_path_factory.mktemp("local")
    path = make_sweep(folder)
    cfg = worker_config(folder, "here")
    out = folder / "out"
    e = env(VMMEM_WORKER_CONFIG=str(cfg))
    proc = subprocess.Popen(
        sweep_cmd(str(path), "--json", "--out", str(out)),
        cwd=folder,
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = read_lines_until(proc, "cell_done")
        proc.send_signal(signal.SIGINT)  # the second cell is running now
        _, err1 = proc.communicate(timeout=HANG)
    finally:
        if proc.poll() is None:
            proc.kill()
    after_interrupt = read_rows(str(out / "rows.jsonl"))
    files_after_interrupt = paging_files(folder), locks(folder / "ssd")
    resumed = subprocess.run(
        sweep_cmd(str(path), "--json", "--out", str(out)),
        cwd=folder,
        env=e,
        capture_output=True,
        text=True,
        timeout=HANG,
    )
    return {
        "folder": folder,
        "path": path,
        "out": out,
        "first": first,
        "rc1": proc.returncode,
        "err1": err1,
        "after_interrupt": after_interrupt,
        "files_after_interrupt": files_after_interrupt,
        "resumed": resumed,
    }


def test_ctrl_c_keeps_the_cells_done_and_resume_skips_them(local_sweep):
    ls = local_sweep
    assert ls["rc1"] == 130, ls["err1"]
    assert "interrupted" in ls["err1"]
    start = ls["first"][0]
    assert start["event"] == "start" and start["eta_seconds"] > 0
    assert (start["cells"], start["skipped"], start["workers"]) == (2, 0, 1)
    done = ls["first"][-1]
    assert done["event"] == "cell_done" and done["done"] == 1 and done["left"] == 1
    # The first cell whole, nothing of the interrupted one; its files deleted.
    assert [r["cell"] for r in ls["after_interrupt"]] == [done["cell"]]
    assert ls["files_after_interrupt"] == ([], [])
    r = ls["resumed"]
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert (lines[0]["cells"], lines[0]["skipped"], lines[0]["workers"]) == (2, 1, 1)
    ran = [x for x in lines if x["event"] == "cell_done"]
    assert len(ran) == 1 and ran[0]["cell"] != done["cell"] and ran[0]["done"] == 2


def test_a_local_sweep_writes_rows_summaries_and_a_plot(local_sweep):
    out = local_sweep["out"]
    rows = read_rows(str(out / "rows.jsonl"))
    assert len(rows) == 2 and {r["outcome"] for r in rows} == {"ok"}
    by_memory = {r["inputs"]["host_memory"] // 2**20: r for r in rows}
    tight, roomy = by_memory[96], by_memory[176]
    # Every figure `run` reports, the machine, and the device facts of each location.
    assert tight["figures"]["smart_paging_peak_bytes"] == 32 * 2**20
    assert roomy["figures"]["smart_paging_peak_bytes"] == 0
    assert tight["figures"]["slowdown"] > 0 and tight["figures"]["boot_time"] > 0
    assert tight["run_result"]["kind"] == "vmmem-run" and tight["run_result"]["boots"]
    assert {"hostname", "cpu_model", "kernel"} <= set(tight["machine"])
    assert tight["locations"][0]["mountpoint"] and "rotational" in tight["locations"][0]
    assert tight["resolved"]["paging_dir"] == str(local_sweep["folder"] / "ssd")
    assert tight["worker"]["name"] == "here"
    with open(out / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert [s["host_memory"] for s in summary] == ["96MB", "176MB"]
    assert float(summary[0]["slowdown_mean"]) == pytest.approx(tight["figures"]["slowdown"])
    md = (out / "summary.md").read_text()
    assert "| 96MB | here | 1/1 |" in md
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paging_files(local_sweep["folder"]) == []


def test_plan_lists_cells_needs_and_time_and_runs_nothing(local_sweep, tmp_path):
    folder = local_sweep["folder"]
    r = subprocess.run(
        sweep_cmd(str(local_sweep["path"]), "--plan", "--json", "--out", str(local_sweep["out"])),
        cwd=folder,
        env=env(VMMEM_WORKER_CONFIG=str(folder / "worker.toml")),
        capture_output=True,
        text=True,
        timeout=HANG,
    )
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["kind"] == "vmmem-sweep-plan" and len(plan["cells"]) == 2
    tight = plan["cells"][0]
    assert tight["memory_bytes"] == 96 * 2**20 and tight["smart_paging_planned_bytes"] == 32 * 2**20
    # Two dynamic VMs' worst case (64 MB each) plus 64 MB; their disks already exist.
    assert list(tight["disk_bytes"].values()) == [(2 * 64 + 64) * 2**20]
    assert tight["seconds_estimate"] > 0 and all(c["done"] for c in plan["cells"])
    assert len(read_rows(str(local_sweep["out"] / "rows.jsonl"))) == 2


# ---------------------------------------------------------------------------------------------
# on a Dask cluster

try:
    import distributed
except ImportError:  # the cluster extra: only the cluster tests need it
    distributed = None

# As docs/SWEEP.md starts one per machine: one cell at a time (one thread, resource vmmem=1).
WORKER_ARGS = ["--nthreads", "1", "--resources", "vmmem=1", "--no-nanny", "--no-dashboard"]


class Workers:
    """`dask worker` processes joining a scheduler, each with its own settings file
    (VMMEM_WORKER_CONFIG), as one per machine would."""

    def __init__(self, scheduler: str) -> None:
        self.scheduler = scheduler
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, cfg: Path, cwd: Path) -> None:
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", self.scheduler, *WORKER_ARGS]
            + ["--name", name],
            cwd=cwd,
            env=env(VMMEM_WORKER_CONFIG=str(cfg)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_joined(self, n: int) -> None:
        with distributed.Client(self.scheduler, timeout=HANG) as c:
            c.wait_for_workers(n, timeout=HANG)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class Clusters:
    """Local clusters, each a scheduler in this process and two worker processes, started on
    first use: "two" (w1 and w2, each with its own folders) and "one" (a and b with the same
    folders: one machine)."""

    LAYOUT = {"two": (("w1", "w2"), False), "one": (("a", "b"), True)}

    def __init__(self, root: Path) -> None:
        self.root = root
        self.made: dict[str, tuple[object, Workers]] = {}

    def start(self, key: str) -> None:
        if distributed is None or key in self.made:
            return
        cluster = distributed.LocalCluster(
            n_workers=0,
            processes=True,
            threads_per_worker=1,
            resources={"vmmem": 1},
            dashboard_address=":0",
        )
        workers = Workers(cluster.scheduler_address)
        self.made[key] = (cluster, workers)
        names, shared = self.LAYOUT[key]
        for n in names:
            folder = self.root / key / ("machine" if shared else n)
            workers.start(n, worker_config(folder, "machine" if shared else n), folder)

    def need(self, key: str) -> tuple[str, Workers, Path]:
        if distributed is None:
            pytest.skip('the cluster tests need distributed (pip install "vmmem[cluster]")')
        self.start(key)
        workers = self.made[key][1]
        workers.wait_joined(2)
        return workers.scheduler, workers, self.root / key

    def close(self) -> None:
        for cluster, workers in self.made.values():
            workers.stop()
            cluster.close()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def clusters(tmp_path_factory):
    c = Clusters(tmp_path_factory.mktemp("clusters"))
    try:
        yield c
    finally:
        c.close()


def table_shape(out: Path) -> tuple[list[str], list[str], set[str]]:
    with open(out / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    rows = read_rows(str(out / "rows.jsonl"))
    return (
        sorted(s["cell"] for s in summary),
        list(summary[0]),
        {k for r in rows for k in r} | {f"figures.{k}" for r in rows for k in r["figures"]},
    )


def test_a_local_dask_cluster_gives_the_same_table(local_sweep, clusters, tmp_path, monkeypatch):
    scheduler, _, workers_folder = clusters.need("two")
    path = make_sweep(tmp_path)
    # The command in this process (its output as on a terminal-less run), the workers in theirs.
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(
        cli, ["sweep", str(path), "--scheduler", scheduler, "--json", "--out", "out"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.splitlines()[0])["workers"] == 2
    assert table_shape(tmp_path / "out") == table_shape(local_sweep["out"])
    # Each worker used its own folder for the role locations.ssd.
    for row in read_rows(str(tmp_path / "out" / "rows.jsonl")):
        name = row["worker"]["name"]
        assert row["resolved"]["paging_dir"] == str(workers_folder / name / "ssd")
        assert row["worker"]["dask_name"] == name
    # Compare machines: every cell on every worker.
    every = CliRunner().invoke(
        cli, ["sweep", str(path), "--scheduler", scheduler, "--mode", "every", "--out", "ev"]
    )
    assert every.exit_code == 0, every.output
    ran = sorted(
        (x["cell"], x["worker"]["name"]) for x in read_rows(str(tmp_path / "ev/rows.jsonl"))
    )
    cells = sorted({c for c, _ in ran})
    assert ran == [(c, w) for c in cells for w in ("w1", "w2")]
    with open(tmp_path / "ev" / "summary.csv") as f:
        assert sorted(x["machines"] for x in csv.DictReader(f)) == ["w1", "w1", "w2", "w2"]
    assert paging_files(workers_folder) == [] and locks(workers_folder) == []


def wait_for_lock(folder: Path, proc: subprocess.Popen[str]) -> dict:
    """The manifest of the first run that appears under folder (polling for that event)."""
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        for lock in locks(folder):
            try:
                return json.loads(Path(lock).read_text().splitlines()[0])
            except (OSError, IndexError, ValueError):
                continue  # being written, or gone already
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)  # polling for the event, not waiting out a time
    raise AssertionError("no run started")


def test_ctrl_c_on_a_cluster_sweep_stops_the_workers_runs(clusters, tmp_path):
    scheduler, workers, folder = clusters.need("two")
    # Boots of ten minutes: only the stop ends this cell within the test's patience.
    path = make_sweep(tmp_path, SWEEP.replace('"96MB", "176MB"', '"96MB"'), boot=600.0)
    client = subprocess.Popen(
        sweep_cmd(str(path), "--scheduler", scheduler, "--json", "--out", "out"),
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_lock(folder, client)
        client.send_signal(signal.SIGINT)
        _, err = client.communicate(timeout=HANG)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 130, err
    # The worker's run stops at its next check and deletes its files: the event awaited is
    # its lock file going away.
    deadline = time.monotonic() + HANG
    while locks(folder) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert locks(folder) == [] and paging_files(folder) == []
    assert read_rows(str(tmp_path / "out" / "rows.jsonl")) == []


def test_a_worker_killed_mid_cell_its_cell_runs_elsewhere_and_no_half_row(clusters, tmp_path):
    """Both workers stand for one machine (the same folders, as a worker restarted there
    would): the one running the cell is killed once its run holds the folder; the other runs
    the cell again and first removes what the dead run left."""
    scheduler, workers, machine = clusters.need("one")
    ssd = machine / "machine" / "ssd"
    path = make_sweep(tmp_path, SWEEP.replace('"96MB", "176MB"', '"96MB"'), boot=1.0)
    client = subprocess.Popen(
        sweep_cmd(str(path), "--scheduler", scheduler, "--json", "--out", "out"),
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The event: a run's manifest appears in the folder (its first line names its pid).
        deadline = time.monotonic() + HANG
        victim = None
        while victim is None and time.monotonic() < deadline:
            for lock in locks(ssd):
                try:
                    head = json.loads(Path(lock).read_text().splitlines()[0])
                except (OSError, IndexError, ValueError):
                    continue  # being written
                victim = next((n for n, p in workers.procs.items() if p.pid == head["pid"]), None)
            assert client.poll() is None, client.communicate()
            time.sleep(0.01)  # polling for the event, not waiting out a time
        assert victim is not None, "no run started"
        killed = workers.procs[victim]
        killed.kill()
        killed.wait()
        out, err = client.communicate(timeout=HANG)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 0, err
    rows = read_rows(str(tmp_path / "out" / "rows.jsonl"))
    assert len(rows) == 1 and rows[0]["outcome"] == "ok"
    survivor = next(n for n in workers.procs if n != victim)
    assert rows[0]["worker"]["dask_name"] == survivor
    # The dead run's manifest was recognised and its files removed before the cell ran again.
    cleaned = " ".join(rows[0]["earlier_runs_cleaned"] + rows[0]["run_result"]["earlier_runs"])
    assert f"pid {killed.pid}" in cleaned, cleaned
    # Every line in the table is whole (no half row), and nothing is left in the folder.
    with open(tmp_path / "out" / "rows.jsonl") as f:
        assert [json.loads(line)["cell"] for line in f] == [rows[0]["cell"]]
    assert paging_files(machine) == [] and locks(machine) == []


def test_without_distributed_a_cluster_sweep_says_what_to_install(tmp_path, monkeypatch):
    path = make_sweep(tmp_path)
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed: ImportError
    r = CliRunner().invoke(
        cli, ["sweep", str(path), "--scheduler", "tcp://127.0.0.1:8786", "--out", str(tmp_path)]
    )
    assert r.exit_code == 1 and 'pip install "vmmem[cluster]"' in r.output, r.output
    assert not (tmp_path / "rows.jsonl").exists()


def test_the_shipped_example_is_a_sweep_of_twelve_cells():
    from vmmem.lab.sweep import load_sweep

    s = load_sweep(os.path.join(ROOT, "examples", "sweeps", "memory-x-guest.toml"))
    assert len(s.cells) == 12 and s.swept == ("guest", "host_memory") and s.runs == 2
