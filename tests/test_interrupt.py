"""An interrupted run keeps what it simulated: the engines stop at an iteration boundary and
hand back their records, ``simulate`` summarises them marked incomplete, ``run_to_dir`` writes
both tables and the summary, and ``servesim run`` exits 130 on SIGINT and 143 on SIGTERM."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from interrupt_cases import StopAfter
from servesim.api import simulate
from servesim.core.rng import Streams
from servesim.engine.replica import run_engine
from servesim.engine.stop import Interrupted, StopFlag
from servesim.experiments import outputs
from servesim.scenario import scenario_from_dict

TABLE = {
    "run": {"requests": 400, "seed": 1},
    "workload": {"arrival": {"kind": "poisson", "rate_per_s": 14.0},
                 "prompt_tokens": {"kind": "uniform", "low": 20, "high": 200},
                 "output_tokens": {"kind": "geometric", "mean": 60}},
    "engine": {"batching": "sarathi", "token_budget": 256, "kv": {"blocks": 600}},
}




def scenario(cost_k: int | None = None, flag: StopFlag | None = None):
    sc = scenario_from_dict(TABLE)
    if cost_k is None:
        return sc
    return dataclasses.replace(sc, cost=StopAfter(sc.cost, cost_k, flag))


@pytest.mark.parametrize("stepper", ["fast", "reference"])
def test_a_stopped_engine_keeps_exactly_what_it_simulated(stepper):
    full_sc = scenario()
    requests = full_sc.workload.generate(Streams(1), n_requests=400)
    full = run_engine(requests, full_sc.engine, full_sc.cost, stepper=stepper)
    flag = StopFlag()
    cost = StopAfter(full_sc.cost, 150, flag)
    with pytest.raises(Interrupted) as info:
        run_engine(requests, full_sc.engine, cost, stepper=stepper, stop=flag)
    part = info.value.run
    assert info.value.signum == signal.SIGTERM and part.stop_reason == "interrupted"
    assert part.stopped_early
    # The iterations so far are the uninterrupted run's first ones, bit for bit.
    n = len(part.iterations)
    assert 0 < n < len(full.iterations)
    pd.testing.assert_frame_equal(part.iterations, full.iterations.iloc[:n])
    # Every request that arrived is kept; those that finished are as in the full run.
    assert 0 < len(part.requests) < len(full.requests)
    assert (part.requests["arrival_s"] <= part.end_s).all()
    done = part.requests["status"] == "finished"
    assert done.any() and (~done).any()
    pd.testing.assert_frame_equal(part.requests[done], full.requests.iloc[:len(done)][done])


@pytest.mark.parametrize("stepper", ["fast", "reference"])
def test_a_keyboard_interrupt_inside_the_loop_keeps_the_records(stepper):
    sc = scenario(150)
    with pytest.raises(Interrupted) as info:
        simulate(sc, stepper=stepper)
    assert info.value.signum is None
    result = info.value.result
    assert result.summary["status"] == "interrupted" and not result.summary["complete"]
    assert "KeyboardInterrupt" in result.summary["error"]
    assert len(result.iterations) > 0


def test_simulate_summarises_an_interrupted_run_over_what_was_kept():
    flag = StopFlag()
    with pytest.raises(Interrupted) as info:
        simulate(scenario(200, flag), stop=flag)
    result = info.value.result
    s, req = result.summary, result.requests
    assert s["complete"] is False and s["status"] == "interrupted"
    assert s["stop_reason"] == "interrupted" and "SIGTERM" in s["error"]
    assert s["arrived"] == len(req) < 400
    assert s["completed"] == int((req["status"] == "finished").sum()) > 0
    assert s["iterations"] == len(result.iterations)
    assert s["end_s"] == pytest.approx(float(result.iterations["start_s"].iloc[-1]
                                             + result.iterations["duration_s"].iloc[-1]))


def test_run_to_dir_writes_the_partial_tables_and_a_summary_marked_interrupted(tmp_path):
    flag = StopFlag()
    out = tmp_path / "out"
    with pytest.raises(Interrupted):
        outputs.run_to_dir(scenario(200, flag), out, stop=flag)
    summary = json.loads((out / "summary.json").read_text())
    req = pd.read_parquet(out / "requests.parquet")
    it = pd.read_parquet(out / "iterations.parquet")
    assert summary["complete"] is False and summary["status"] == "interrupted"
    assert summary["arrived"] == len(req) and summary["iterations"] == len(it) > 0
    assert summary["completed"] == int((req["status"] == "finished").sum())


def test_a_second_interrupt_while_writing_leaves_a_summary_marked_interrupted(tmp_path,
                                                                           monkeypatch):
    written = outputs.write_outputs

    def interrupted_midway(result, out_dir):
        outputs._write_table(result.requests, Path(out_dir) / outputs.REQUESTS)
        raise KeyboardInterrupt

    flag = StopFlag()
    out = tmp_path / "out"
    monkeypatch.setattr(outputs, "write_outputs", interrupted_midway)
    with pytest.raises(KeyboardInterrupt):
        outputs.run_to_dir(scenario(200, flag), out, stop=flag)
    monkeypatch.setattr(outputs, "write_outputs", written)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["complete"] is False
    assert "iterations.parquet missing" in summary["error"]
    assert sorted(p.name for p in out.iterdir()) == ["requests.parquet", "summary.json"]


def test_a_stop_flag_raises_at_once_outside_an_engine_loop():
    flag = StopFlag()
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        flag.handler(signal.SIGTERM, None)
    fresh = StopFlag()
    with fresh.deferred():
        fresh.handler(signal.SIGINT, None)   # recorded, not raised
        assert fresh.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):   # a second signal forces the stop
            fresh.handler(signal.SIGINT, None)


def test_a_signal_after_the_engine_finished_keeps_the_whole_outputs(tmp_path, monkeypatch):
    """A stop that arrives while a finished run is summarised is recorded, not raised, so the
    run's complete outputs are written."""
    import servesim.api as api

    flag = StopFlag()
    real = api.summarise

    def late_signal(*args, **kwargs):
        flag.handler(signal.SIGTERM, None)
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "summarise", late_signal)
    result = outputs.run_to_dir(scenario(), tmp_path, stop=flag)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "complete" and result.summary["complete"] is True
    assert len(pd.read_parquet(tmp_path / "requests.parquet")) == len(result.requests)


# -- the command line, in a subprocess ------------------------------------------------------------

LONG = """
[run]
horizon_s = 100000.0
max_in_system = 100000
[workload]
arrival = { kind = "poisson", rate_per_s = 12.0 }
prompt_tokens = { kind = "deterministic", value = 129 }
output_tokens = { kind = "deterministic", value = 112 }
[engine]
batching = "sarathi"
token_budget = 512
"""


def _status(out: Path) -> str | None:
    try:
        return json.loads((out / "summary.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def test_servesim_run_keeps_its_outputs_on_sigint_and_sigterm(tmp_path):
    # About a minute of simulation if left alone; both runs are stopped a moment after their
    # engines start, in parallel to keep the test short.
    path = tmp_path / "long.toml"
    path.write_text(LONG)
    procs = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        out = tmp_path / sig.name
        procs[sig] = (out, subprocess.Popen(
            [sys.executable, "-m", "servesim", "run", str(path), "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"}))
    for out, proc in procs.values():
        deadline = time.monotonic() + 120
        while _status(out) != "running" and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _status(out) == "running"
    time.sleep(1.0)   # into the engine loop (the run itself takes far longer)
    for sig, (_, proc) in procs.items():
        proc.send_signal(sig)
    for sig, (out, proc) in procs.items():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 128 + sig, err
        assert err.strip().splitlines()[-1].startswith(
            f"error: interrupted; outputs in {out} are marked incomplete (partial results kept")
        summary = json.loads((out / "summary.json").read_text())
        req = pd.read_parquet(out / "requests.parquet")
        it = pd.read_parquet(out / "iterations.parquet")
        assert summary["complete"] is False and summary["status"] == "interrupted"
        assert sig.name in summary["error"]
        assert summary["arrived"] == len(req) > 0 and summary["iterations"] == len(it) > 0
        assert summary["completed"] == int((req["status"] == "finished").sum())
