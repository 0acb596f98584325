"""Sweep folders under stress: an edited sweep rerun into the same folder, a damaged or locked
catalogue, malformed axes, empty queries, a killed sweep process, and the report's side
effects."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from servesim.cli.main import run_cli
from servesim.core.errors import ConfigError
from servesim.experiments import store
from servesim.experiments.execute import run_sweep
from servesim.experiments.store import CATALOG, SWEEP_FILE, finished_ids, query
from servesim.experiments.sweep import MAX_POINTS, load_sweep, sweep_from_dict
from servesim.report.data import load_report_data
from servesim.report.stats import STOPPED_EARLY, latency_by_load, truncation

SHORT = '\n[sweep.set]\n"run.horizon_s" = {horizon}\n'


def _one_line_error(capsys, start: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {start}"), err
    assert "\n" not in err and "Traceback" not in err
    return err


# -- 1. an edited sweep rerun into the same folder -----------------------------------------------


def test_changed_sweep_shows_only_its_own_points(make_sweep, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    first = load_sweep(make_sweep(policies=("orca",), loads=(0.5,), seeds=2,
                                  extra=SHORT.format(horizon=10.0)))
    notes: list[str] = []
    run_sweep(first, out, executor="serial", notice=notes.append)
    assert notes == []
    # The same sweep again: same fingerprint, nothing to say.
    run_sweep(first, out, executor="serial", notice=notes.append)
    assert notes == []
    second = load_sweep(make_sweep(policies=("orca",), loads=(0.5,), seeds=2,
                                   extra=SHORT.format(horizon=12.0)))
    old_ids = {p.point_id for p in first.points}
    new_ids = {p.point_id for p in second.points}
    assert not old_ids & new_ids
    run_sweep(second, out, executor="serial", notice=notes.append)
    assert len(notes) == 1 and "another version" in notes[0] and "\n" not in notes[0]
    recorded = json.loads((out / SWEEP_FILE).read_text())
    assert set(recorded["point_ids"]) == new_ids
    # Views, requests and the report cover the current sweep only; --all-points shows both.
    assert set(query(out, "SELECT point_id FROM points")["point_id"]) == new_ids
    assert set(query(out, "SELECT DISTINCT point_id FROM requests")["point_id"]) == new_ids
    assert set(query(out, "SELECT point_id FROM points", every_point=True)["point_id"]) \
        == old_ids | new_ids
    assert set(query(out, "SELECT horizon_s FROM points")["horizon_s"]) == {12.0}
    assert set(load_report_data(out).points["point_id"]) == new_ids
    assert finished_ids(out) == old_ids | new_ids
    assert run_cli(["query", str(out), "SELECT count(*) AS n FROM points", "--json",
                    "--all-points"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 4}]


# -- 2. a damaged or locked catalogue ------------------------------------------------------------


def test_corrupt_catalogue_is_one_line_and_rebuilt(make_sweep, tmp_path: Path, capsys) -> None:
    path = make_sweep(policies=("orca",), loads=(0.5,), seeds=2, extra=SHORT.format(horizon=8.0))
    out = tmp_path / "out"
    run_sweep(load_sweep(path), out, executor="serial")
    (out / CATALOG).write_bytes(b"this is not a database" * 100)
    assert run_cli(["sweep", str(path), "--out", str(out), "--executor", "serial"]) == 2
    assert "rebuilds it" in _one_line_error(capsys, str(out / CATALOG))
    assert run_cli(["query", str(out), "SELECT * FROM points"]) == 2
    _one_line_error(capsys, str(out / CATALOG))
    assert run_cli(["report", str(out)]) == 2
    _one_line_error(capsys, str(out / CATALOG))
    # As the message says: without the catalogue the next run rebuilds it from the folders.
    (out / CATALOG).unlink()
    again = run_sweep(load_sweep(path), out, executor="serial")
    assert (again.ran, again.skipped) == (0, 2)
    assert len(query(out, "SELECT * FROM points")) == 2


def _hold_catalogue(path: Path, read_only: bool) -> subprocess.Popen:
    """Another process with the catalogue open, as `servesim query` or a notebook would."""
    code = textwrap.dedent(f"""
        import sys, time, duckdb
        con = duckdb.connect({str(path)!r}, read_only={read_only})
        print("open", flush=True)
        sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "open"
    return proc


def _release(proc: subprocess.Popen) -> None:
    proc.communicate(input="", timeout=60)


def test_reader_holding_the_catalogue_loses_no_points(make_sweep, tmp_path: Path,
                                                      monkeypatch) -> None:
    monkeypatch.setattr(store, "LOCK_WAIT_S", 0.3)
    out = tmp_path / "out"
    one = load_sweep(make_sweep(policies=("orca",), loads=(0.5,), seeds=1,
                                extra=SHORT.format(horizon=8.0)))
    run_sweep(one, out, executor="serial")
    two = load_sweep(make_sweep(policies=("orca",), loads=(0.5,), seeds=2,
                                extra=SHORT.format(horizon=8.0)))
    ids = {p.point_id for p in two.points}
    records = [out / "points" / f"point_id={i}" / "point.json" for i in sorted(ids)]
    reader = _hold_catalogue(out / CATALOG, read_only=True)
    try:
        with pytest.raises(ConfigError, match="run the sweep again to add them") as info:
            run_sweep(two, out, executor="serial")
        assert "\n" not in str(info.value)
        # The point simulated under the lock is on disk. Run again with the reader still
        # there: the point is not simulated again, and the record still waits.
        assert all(r.is_file() for r in records)
        written = [r.stat().st_mtime_ns for r in records]
        with pytest.raises(ConfigError, match="1 are not catalogued yet"):
            run_sweep(two, out, executor="serial")
        assert [r.stat().st_mtime_ns for r in records] == written
    finally:
        _release(reader)
    # Once the reader is gone, the next run only catalogues it.
    again = run_sweep(two, out, executor="serial")
    assert (again.ran, again.skipped) == (0, 2)
    assert finished_ids(out) == ids


def test_writer_holding_the_catalogue_is_one_line(make_sweep, tmp_path: Path, monkeypatch,
                                                  capsys) -> None:
    monkeypatch.setattr(store, "LOCK_WAIT_S", 0.3)
    path = make_sweep(policies=("orca",), loads=(0.5,), seeds=1, extra=SHORT.format(horizon=8.0))
    out = tmp_path / "out"
    run_sweep(load_sweep(path), out, executor="serial")
    writer = _hold_catalogue(out / CATALOG, read_only=False)
    try:
        with pytest.raises(ConfigError, match="no other process holds"):
            finished_ids(out)
        assert run_cli(["sweep", str(path), "--out", str(out), "--executor", "serial"]) == 2
        _one_line_error(capsys, str(out / CATALOG))
        assert run_cli(["query", str(out), "SELECT 1"]) == 2
        _one_line_error(capsys, str(out / CATALOG))
    finally:
        _release(writer)
    assert len(query(out, "SELECT * FROM points")) == 1


@pytest.mark.parametrize("sql", ["", "   ", "-- only a comment", "/* nothing */"])
def test_query_without_rows_is_one_line(make_sweep, tmp_path: Path, capsys, sql: str) -> None:
    path = make_sweep(policies=("orca",), loads=(0.5,), seeds=1, extra=SHORT.format(horizon=5.0))
    out = tmp_path / "out"
    if not out.exists():
        run_sweep(load_sweep(path), out, executor="serial")
    assert run_cli(["query", str(out), "--", sql]) == 2
    assert "a query that returns rows" in _one_line_error(capsys, "sql")


# -- 3-5, 7, 10. sweep files that would silently do the wrong thing ------------------------------


def _raw(base_dir: Path, **sections) -> dict:
    return {"sweep": {"scenario": str(base_dir / "base.toml"), "seeds": 1,
                      **sections.pop("sweep", {})}, **sections}


@pytest.mark.parametrize(("sections", "field", "hint"), [
    ({"grid": {"run.seed": [1, 2]}}, "grid.run.seed", "sweep.seeds"),
    ({"grid": {"run": {"seed": [1, 2]}}}, "grid.run.seed", "sweep.seeds"),
    ({"sweep": {"set": {"run.seed": 4}}}, "sweep.set.run.seed", "sweep.seeds"),
    ({"zip": [{"run.seed": [1], "engine.token_budget": [256]}]}, "zip[0].run.seed",
     "sweep.seeds"),
    ({"grid": {"engine.batching": ["orca"], "engine": {"batching": ["vllm"]}}},
     "grid.engine.batching", "an axis named once"),
    ({"grid": {"engine.batching": ["orca", "vllm", "orca"]}}, "grid.engine.batching",
     "distinct values"),
    ({"grid": {"load": [0.5, 0.50]}}, "grid.load", "distinct values"),
    ({"zip": [{"engine.token_budget": [256, 256], "engine.chunk_tokens": [128, 128]}]},
     "zip[0].engine.token_budget, zip[0].engine.chunk_tokens", "distinct values"),
    ({"sweep": {"set": {"engine.batching": "orca"}}, "grid": {"engine.batching": ["vllm"]}},
     "sweep.set.engine.batching", "not both"),
    ({"sweep": {"set": {"workload.arrival.rate_per_s": 3.0}}, "grid": {"load": [0.5]}},
     "sweep.set.workload.arrival.rate_per_s", "not both"),
    ({"sweep": {"seeds": 100_000_000_000}}, "sweep.seeds", f"at most {MAX_POINTS}"),
    ({"sweep": {"seeds": 60_000}, "grid": {"engine.batching": ["orca", "vllm"]}},
     "sweep.seeds", f"at most {MAX_POINTS}"),
])
def test_ambiguous_sweeps_are_rejected(make_sweep, sections, field: str, hint: str) -> None:
    base_dir = make_sweep().parent
    with pytest.raises(ConfigError) as info:
        sweep_from_dict(_raw(base_dir, **sections), base_dir=base_dir)
    assert info.value.field == field
    assert hint in str(info.value) and "\n" not in str(info.value)


def test_distinct_zip_rows_with_a_repeated_value_are_fine(make_sweep) -> None:
    base_dir = make_sweep().parent
    raw = _raw(base_dir, zip=[{"engine.token_budget": [256, 256],
                               "engine.chunk_tokens": [128, 256]}])
    assert len(sweep_from_dict(raw, base_dir=base_dir).points) == 2


def test_load_axis_needs_a_single_rate(tmp_path: Path) -> None:
    (tmp_path / "base.toml").write_text(textwrap.dedent("""
        [run]
        horizon_s = 10.0
        [workload]
        prompt_tokens = { kind = "deterministic", value = 64 }
        output_tokens = { kind = "deterministic", value = 16 }
        [workload.arrival]
        kind = "mmpp2"
        rate_on_per_s = 15.0
        rate_off_per_s = 5.0
        mean_on_s = 10.0
        mean_off_s = 10.0
    """), encoding="utf-8")
    raw = {"sweep": {"scenario": "base.toml"}, "grid": {"load": [0.5]}}
    with pytest.raises(ConfigError, match="'mmpp2' has no single rate") as info:
        sweep_from_dict(raw, base_dir=tmp_path)
    assert info.value.field == "grid.load"


def test_point_ids_follow_the_version(make_sweep, monkeypatch) -> None:
    """A new servesim version never reuses points simulated by an older one."""
    import servesim

    path = make_sweep(policies=("orca",), loads=(0.5,), seeds=1)
    before = [p.point_id for p in load_sweep(path).points]
    assert [p.point_id for p in load_sweep(path).points] == before
    monkeypatch.setattr(servesim, "__version__", servesim.__version__ + ".post1")
    assert not set(before) & {p.point_id for p in load_sweep(path).points}


def test_point_ids_follow_the_files_a_scenario_names(tmp_path: Path) -> None:
    """An edited lengths file gives new points: resume must not reuse the old results."""
    (tmp_path / "lengths.csv").write_text("prompt\n64\n80\n", encoding="utf-8")
    (tmp_path / "base.toml").write_text(textwrap.dedent("""
        [run]
        horizon_s = 10.0
        [workload]
        arrival = { kind = "poisson", rate_per_s = 5.0 }
        prompt_tokens = { kind = "empirical", path = "lengths.csv", column = "prompt" }
        output_tokens = { kind = "deterministic", value = 16 }
    """), encoding="utf-8")
    raw = {"sweep": {"scenario": "base.toml"}, "grid": {"engine.batching": ["orca", "vllm"]}}
    before = [p.point_id for p in sweep_from_dict(raw, base_dir=tmp_path).points]
    assert [p.point_id for p in sweep_from_dict(raw, base_dir=tmp_path).points] == before
    (tmp_path / "lengths.csv").write_text("prompt\n64\n96\n", encoding="utf-8")
    after = [p.point_id for p in sweep_from_dict(raw, base_dir=tmp_path).points]
    assert len(after) == 2 and not set(before) & set(after)


def test_latency_marks_runs_stopped_by_max_in_system() -> None:
    """A load where a seed was stopped by run.max_in_system is kept, marked truncated."""
    points = pd.DataFrame({"label": ["orca"] * 3, "load": [1.2] * 3,
                           "e2e_mean_s": [2.0, 4.0, 100.0], "arrived": [50] * 3,
                           "completed": [50] * 3, "end_s": [20.0] * 3,
                           "stop_reason": ["time", "time", "max_in_system"]})
    cut = truncation(points, "load", pd.DataFrame(columns=["label", "x", "state"]))
    table = latency_by_load(points, "load", "e2e_mean_s", cut)
    assert list(table["n"]) == [3] and list(table["reason"]) == [STOPPED_EARLY]


# -- 8. workers of a killed sweep ----------------------------------------------------------------


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found |= {int(c) for c in text}
    return found


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "zombie" not in state and " Z " not in state


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_workers_end_with_a_killed_sweep_process(make_sweep, tmp_path: Path) -> None:
    path = make_sweep(policies=("orca", "vllm", "sarathi"), loads=(0.6, 1.2), seeds=2,
                      extra=SHORT.format(horizon=40.0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "servesim", "sweep", str(path), "--out", str(tmp_path / "out"),
         "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    assert proc.stderr is not None
    while not proc.stderr.readline().startswith("point "):
        assert proc.poll() is None
    workers = _children(proc.pid)
    assert workers
    proc.send_signal(signal.SIGKILL)  # the sweep process only, not its process group
    # stderr reaches its end once every process holding it (the workers) has exited.
    _, rest = proc.communicate(timeout=120)
    assert "Traceback" not in rest and "BrokenPipeError" not in rest
    deadline = time.monotonic() + 60
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [w for w in workers if _alive(w)]
    for w in left:  # clean up after a failure
        os.kill(w, signal.SIGKILL)
    assert left == []


# -- 9. the report writes only into the sweep folder ---------------------------------------------


def test_report_writes_nothing_under_home(make_sweep, tmp_path: Path) -> None:
    path = make_sweep(policies=("orca",), loads=(0.5,), seeds=1, extra=SHORT.format(horizon=5.0))
    out = tmp_path / "out"
    run_sweep(load_sweep(path), out, executor="serial")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")}
    env["HOME"] = str(home)
    proc = subprocess.run([sys.executable, "-m", "servesim", "report", str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert list(home.iterdir()) == []
    assert (out / "report.html").is_file()
    assert not list(out.glob(".mplconfig*"))
