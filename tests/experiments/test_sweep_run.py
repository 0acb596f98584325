"""Running sweeps: executors agree, finished points are skipped, and a killed sweep loses only
the points in flight and resumes to the same results as an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from servesim.cli.main import run_cli
from servesim.experiments.execute import _recover, run_sweep
from servesim.experiments.store import CATALOG, finished_ids, query
from servesim.experiments.sweep import load_sweep


def test_serial_and_pool_agree_and_resume_skips(make_sweep, tmp_path: Path,
                                                same_results) -> None:
    sweep = load_sweep(make_sweep(policies=("orca", "vllm"), loads=(0.5, 1.2), seeds=2))
    serial = run_sweep(sweep, tmp_path / "serial", executor="serial")
    pool = run_sweep(sweep, tmp_path / "pool", executor="local", workers=2)
    assert (serial.ran, pool.ran) == (8, 8)
    same_results(tmp_path / "serial", tmp_path / "pool")
    again = run_sweep(sweep, tmp_path / "pool", executor="local", workers=2)
    assert (again.skipped, again.ran) == (8, 0)
    # Every point has its three files and exactly one catalogue row.
    ids = finished_ids(tmp_path / "pool")
    assert ids == {p.point_id for p in sweep.points}
    for point_id in ids:
        folder = tmp_path / "pool" / "points" / f"point_id={point_id}"
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["complete"] is True
        assert (folder / "requests.parquet").is_file()


def test_query_views_and_cli(make_sweep, tmp_path: Path, capsys) -> None:
    sweep = load_sweep(make_sweep(policies=("orca", "sarathi"), loads=(0.5,), seeds=2))
    out = tmp_path / "out"
    run_sweep(sweep, out, executor="serial")
    by_policy = query(out, "SELECT engine_batching, count(*) AS n, sum(completed) AS done "
                           "FROM points GROUP BY 1 ORDER BY 1")
    assert list(by_policy["engine_batching"]) == ["orca", "sarathi"]
    assert list(by_policy["n"]) == [2, 2]
    # The catalogue's completed counts are the finished rows of the per-point Parquet files.
    from_files = query(out, "SELECT p.engine_batching, count(*) AS done FROM requests r "
                            "JOIN points p USING (point_id) WHERE r.status = 'finished' "
                            "GROUP BY 1 ORDER BY 1")
    assert list(from_files["done"]) == list(by_policy["done"])
    iters = query(out, "SELECT count(DISTINCT point_id) AS n FROM iterations")
    assert int(iters["n"].iloc[0]) == 4
    assert run_cli(["query", str(out), "SELECT count(*) AS n FROM points", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 4}]
    assert run_cli(["query", str(out), "SELECT nope FROM points"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: sql:") and "\n" not in err
    assert run_cli(["query", str(tmp_path / "nothing"), "SELECT 1"]) == 2
    assert "catalog.duckdb" in capsys.readouterr().err


def _sweep_process(path: Path, out: Path, workers: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "servesim", "sweep", str(path), "--out", str(out),
         "--workers", str(workers)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for_done_lines(proc: subprocess.Popen, count: int) -> list[str]:
    """Read the per-point lines of a running sweep until ``count`` points are reported."""
    done: list[str] = []
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    while len(done) < count and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if line.startswith("point "):
            done.append(line.split()[1])
    return done


def _start_and_stop(make_sweep, out: Path, sig: int):
    """Start a 12-point sweep with two workers in its own process group, send ``sig`` once two
    points are reported, and return the sweep, the finished folders' ids and the reported
    ids."""
    # Points three times longer than elsewhere, so the sweep is surely still running when the
    # signal arrives.
    path = make_sweep(policies=("orca", "vllm", "sarathi"), loads=(0.6, 1.2), seeds=2,
                      extra='\n[sweep.set]\n"run.horizon_s" = 60.0\n')
    proc = _sweep_process(path, out, workers=2)
    reported = _wait_for_done_lines(proc, 2)
    if sig == signal.SIGKILL:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its workers, with no clean-up
    else:
        proc.send_signal(sig)  # the parent only: it stops its workers itself
    proc.communicate(timeout=60)
    assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 128 + sig)
    assert len(reported) == 2
    folders = {p.name.split("=", 1)[1]: p for p in (out / "points").iterdir()}
    finished = {i for i, folder in folders.items() if (folder / "point.json").is_file()}
    # Nothing reported as finished was lost, and the sweep did not get to the end.
    assert set(reported) <= finished
    # Only in-flight points are lost: the folders without a record are the workers' current
    # points.
    assert len(set(folders) - finished) <= 2
    return load_sweep(path), finished, reported


def test_killed_sweep_resumes_to_identical_results(make_sweep, tmp_path: Path,
                                                    same_results) -> None:
    out = tmp_path / "killed"
    sweep, finished, _ = _start_and_stop(make_sweep, out, signal.SIGKILL)
    total = len(sweep.points)
    assert len(finished) < total
    resumed = run_sweep(sweep, out, executor="serial")
    assert resumed.skipped == len(finished)
    assert resumed.ran == total - len(finished)
    assert finished_ids(out) == {p.point_id for p in sweep.points}
    reference = tmp_path / "reference"
    run_sweep(sweep, reference, executor="serial")
    same_results(out, reference)


def test_terminated_sweep_records_what_finished(make_sweep, tmp_path: Path) -> None:
    """SIGTERM stops the workers, and the parent records what it saw finish before exiting."""
    out = tmp_path / "terminated"
    _, finished, reported = _start_and_stop(make_sweep, out, signal.SIGTERM)
    catalogued = finished_ids(out)
    # Every point the parent saw finish is recorded. Workers may have completed more whose
    # results the parent never received; the next run catalogues those from their folders.
    assert set(reported) <= catalogued <= finished
    sweep = load_sweep(out.parent / "sweep.toml")
    assert _recover(sweep, out, catalogued) == finished
    assert finished_ids(out) == finished
    assert (out / CATALOG).is_file()
