"""The closed loop on the reference stepper: a hand-computed trace, equality with an open-loop
run when every client sends at once, one request per client in the system, count and horizon
modes, stops, interrupts, determinism, refusals, and ``servesim run`` / ``validate``."""

from __future__ import annotations

import dataclasses
import math
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from interrupt_cases import StopAfter
from servesim.api import simulate
from servesim.cli.main import run_cli
from servesim.cluster.closed import _Loop, check_closed_loop, run_closed_loop
from servesim.core.errors import ConfigError
from servesim.core.rng import Streams
from servesim.engine.config import BATCHING
from servesim.engine.stop import Interrupted, StopFlag
from servesim.scenario import scenario_from_dict
from servesim.workload.closed import closed_loop_of

MIXTURE = {"classes": [
    {"name": "short", "weight": 2, "prompt_tokens": {"kind": "uniform", "low": 8, "high": 64},
     "output_tokens": {"kind": "geometric", "mean": 12}},
    {"name": "long", "weight": 1, "prompt_tokens": {"kind": "uniform", "low": 64, "high": 200},
     "output_tokens": {"kind": "geometric", "mean": 40}},
]}


def table(clients=4, think=0.05, run=None, engine=None, lengths=None):
    return {
        "run": {"requests": 120, "seed": 3} if run is None else run,
        "workload": {"arrival": {"kind": "closed", "clients": clients, "think_s": think},
                     **(MIXTURE if lengths is None else lengths)},
        "engine": {"batching": "sarathi", "token_budget": 256, "kv": {"blocks": 120},
                   **(engine or {})},
    }


def records(tab, **kw):
    return simulate(scenario_from_dict(tab), **kw)


def test_hand_trace():
    # 2 clients, think 0.5 s, 1 prompt token, 2 output tokens, 1 s per iteration, vLLM batching:
    # [0,1) prefills both, [1,2) and [2,3) decode both: finish at 3; both send at 3.5, finish 6.5.
    tab = table(clients=2, think=0.5, run={"requests": 4},
                engine={"batching": "vllm", "cost": {"kind": "constant", "iteration_ms": 1000}},
                lengths={"prompt_tokens": {"kind": "deterministic", "value": 1},
                         "output_tokens": {"kind": "deterministic", "value": 2}})
    req = records(tab).requests
    assert req["arrival_s"].tolist() == [0.0, 0.0, 3.5, 3.5]
    assert req["finish_s"].tolist() == [3.0, 3.0, 6.5, 6.5]
    assert req["first_token_s"].tolist() == [2.0, 2.0, 5.5, 5.5]


def test_all_clients_at_once_equals_an_open_loop_list():
    # With as many clients as requests, everyone sends at t = 0: the open-loop run of the same
    # lengths streams with every arrival at 0 (memory pressure: preemptions included).
    n = 60
    closed = records(table(clients=n, run={"requests": n, "seed": 9}))
    open_tab = table(run={"requests": n, "seed": 9})
    open_tab["workload"]["arrival"] = {"kind": "list", "times_s": [0.0] * n}
    opened = records(open_tab, stepper="reference")
    assert closed.requests["preemptions"].sum() > 0
    assert list(closed.requests.columns) == list(opened.requests.columns)
    pd.testing.assert_frame_equal(closed.requests, opened.requests)
    pd.testing.assert_frame_equal(closed.iterations, opened.iterations)
    assert closed.summary.keys() == opened.summary.keys()


def run_loop(tab):
    sc = scenario_from_dict(tab)
    run = sc.run
    state = _Loop(closed_loop_of(sc), sc.engine, sc.cost, Streams(run.seed), run.requests,
                  run.horizon_s)
    state.engine.check = True
    t, reason = state.loop(run.until_s, None, None, StopFlag())
    return state, t, reason


@pytest.mark.parametrize("think", [0.0, 0.3, {"kind": "exponential", "mean_s": 0.5},
                                   {"kind": "uniform", "low_s": 0.0, "high_s": 1.0}])
def test_each_client_has_one_request_in_the_system(think):
    state, _, reason = run_loop(table(clients=5, think=think))
    assert reason == "drained"
    reqs = state.engine.reqs
    assert len(reqs) == 120 and {r.client for r in reqs} == set(range(5))
    for c in range(5):
        mine = [r for r in reqs if r.client == c]
        assert mine[0].arrival == 0.0
        for prev, nxt in zip(mine, mine[1:], strict=False):
            done = prev.finish_s if prev.finish_s == prev.finish_s else prev.arrival
            assert nxt.arrival == done + prev.think_s   # sent when the last one is done
    rows = state.engine.rows
    assert max(w + r for w, r in zip(rows["waiting"], rows["running"], strict=True)) <= 5


def test_think_zero_single_client_is_back_to_back():
    req = records(table(clients=1, think=0.0, run={"requests": 30, "seed": 1})).requests
    assert (req["arrival_s"].to_numpy()[1:] == req["finish_s"].to_numpy()[:-1]).all()


def test_horizon_mode():
    res = records(table(clients=6, think=0.2, run={"horizon_s": 5.0, "seed": 2}))
    req, it = res.requests, res.iterations
    assert len(req) > 20 and (req["arrival_s"] < 5.0).all()
    assert (it["start_s"] < 5.0).all()
    assert res.summary["stop_reason"] == "time" and res.summary["complete"]


def test_max_time_and_max_in_system():
    res = records(table(run={"requests": 500, "max_time_s": 2.0, "seed": 1}))
    assert res.summary["stop_reason"] == "time" and res.summary["stopped_early"]
    assert (res.iterations["start_s"] < 2.0).all() and len(res.requests) < 500
    capped = records(table(clients=10, run={"requests": 50, "max_in_system": 4}))
    assert capped.summary["stop_reason"] == "max_in_system"


def test_rejected_requests_free_their_client():
    tab = table(clients=3, think=0.1, engine={"max_model_len": 100})
    state, _, _ = run_loop(tab)
    rejected = [r for r in state.engine.reqs if r.status.name == "REJECTED"]
    assert rejected and len(state.engine.reqs) == 120
    res = records(tab)
    assert (res.requests["status"] == "rejected").sum() == len(rejected)


def test_deterministic_with_a_seed():
    a = records(table(think={"kind": "lognormal", "mean_s": 0.2, "cv": 1.0}))
    b = records(table(think={"kind": "lognormal", "mean_s": 0.2, "cv": 1.0}))
    pd.testing.assert_frame_equal(a.requests, b.requests)
    c = records(table(think={"kind": "lognormal", "mean_s": 0.2, "cv": 1.0}), seed=4)
    assert not a.requests["arrival_s"].equals(c.requests["arrival_s"])


def test_lengths_helper_gives_the_simulated_lengths():
    sc = scenario_from_dict(table())
    prompt, output = closed_loop_of(sc).lengths(Streams(3), 120)
    req = simulate(sc).requests
    assert req["prompt_tokens"].tolist() == prompt.tolist()
    assert req["output_tokens"].tolist() == output.tolist()




@pytest.mark.parametrize("with_flag", [True, False])
def test_interrupt_keeps_the_records(with_flag):
    sc = scenario_from_dict(table())
    flag = StopFlag() if with_flag else None
    sc = dataclasses.replace(sc, cost=StopAfter(sc.cost, 40, flag))
    with pytest.raises(Interrupted) as info:
        simulate(sc, stop=flag)
    result = info.value.result
    assert result is not None and result.summary["status"] == "interrupted"
    assert not result.summary["complete"] and 0 < len(result.iterations) <= 40
    assert info.value.signum == (signal.SIGTERM if with_flag else None)


def test_refusals():
    with pytest.raises(ConfigError, match=r"schedule\.order: got 'sjf'.*closed-loop"):
        simulate(scenario_from_dict({**table(), "schedule": {"order": "sjf"}}))
    wait = table(engine={"batching": "wait", "kv": {"blocks": 4000}})
    with pytest.raises(ConfigError, match=r"engine\.batching: got 'wait'"):
        simulate(scenario_from_dict(wait))
    check_closed_loop(scenario_from_dict({**table(), "workload": {
        "arrival": {"kind": "poisson", "rate_per_s": 1.0}, **MIXTURE}, "schedule": {
            "order": "sjf"}}))    # an open loop: nothing to refuse here
    sc = scenario_from_dict(table())
    with pytest.raises(ConfigError, match="run.requests"):
        run_closed_loop(closed_loop_of(sc), sc.engine, sc.cost, 0, n_requests=3, horizon_s=1.0)


def test_finite_trace_too_short_is_refused_before_the_run(tmp_path: Path):
    path = tmp_path / "lengths.csv"
    path.write_text("num_prefill_tokens,num_decode_tokens\n10,5\n20,6\n", encoding="utf-8")
    tab = table(run={"requests": 3})
    tab["workload"] = {"arrival": {"kind": "closed", "clients": 2},
                       "trace": {"format": "lengths_csv", "path": str(path)}}
    with pytest.raises(ConfigError, match=r"run\.requests: got 3, expected at most 2"):
        simulate(scenario_from_dict(tab))
    tab["run"] = {"requests": 2}
    req = simulate(scenario_from_dict(tab)).requests
    assert req["prompt_tokens"].tolist() == [10, 20]


def test_cli_run_and_validate(tmp_path: Path, capsys):
    text = """
[run]
seed = 1
requests = 80

[workload]
arrival = { kind = "closed", clients = 4, think_s = { kind = "exponential", mean_s = 0.2 } }
prompt_tokens = { kind = "uniform", low = 16, high = 128 }
output_tokens = { kind = "geometric", mean = 20 }

[engine]
batching = "vllm"
token_budget = 1024
"""
    path = tmp_path / "closed.toml"
    path.write_text(text, encoding="utf-8")
    assert run_cli(["validate", str(path)]) == 0
    assert "closed" in capsys.readouterr().out   # "closed arrivals" or "closed loop of 4 clients"
    out = tmp_path / "out"
    assert run_cli(["run", str(path), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "completed" in printed and "80" in printed
    req = pd.read_parquet(out / "requests.parquet")
    assert len(req) == 80 and (req["status"] == "finished").all()
    assert not np.isnan(req["e2e_s"]).any() and math.isfinite(req["e2e_s"].mean())


def test_packaged_example_runs(tmp_path: Path):
    from importlib import resources

    from servesim.scenario import load_scenario

    with resources.as_file(resources.files("servesim.scenarios") / "closed_loop.toml") as path:
        sc = load_scenario(path, ["run.requests=200", "run.warmup_s=2.0"])
    assert closed_loop_of(sc).clients == 8
    res = simulate(sc)
    assert (res.requests["status"] == "finished").all() and len(res.requests) == 200
    it = res.iterations
    assert (it["waiting"] + it["running"]).max() <= 8


def test_finite_trace_bounds_a_horizon_run(tmp_path: Path):
    path = tmp_path / "lengths.csv"
    path.write_text("num_prefill_tokens,num_decode_tokens\n10,5\n20,6\n30,7\n", encoding="utf-8")
    tab = table(clients=2, run={"horizon_s": 100.0})
    tab["workload"] = {"arrival": {"kind": "closed", "clients": 2, "think_s": 0.1},
                       "trace": {"format": "lengths_csv", "path": str(path)}}
    res = simulate(scenario_from_dict(tab))
    assert res.requests["prompt_tokens"].tolist() == [10, 20, 30]
    assert res.summary["stop_reason"] == "drained" and not res.summary["stopped_early"]


@pytest.mark.skipif("vllm_v1" not in BATCHING, reason="no vllm_v1 batching in this tree")
def test_requests_finishing_at_their_prefill_free_their_client():
    # vLLM v1 samples token 1 in the iteration that completes the prompt: a 1-token request
    # finishes there, and its client sends the next one at that end plus the think time.
    state, _, reason = run_loop(table(
        clients=3, think=0.1, engine={"batching": "vllm_v1", "max_batch_size": 8},
        lengths={"prompt_tokens": {"kind": "uniform", "low": 10, "high": 300},
                 "output_tokens": {"kind": "deterministic", "value": 1}}))
    assert reason == "drained"
    reqs = state.engine.reqs
    assert all(r.finish_s == r.token_times[0] for r in reqs)
    for c in range(3):
        mine = [r for r in reqs if r.client == c]
        for prev, nxt in zip(mine, mine[1:], strict=False):
            assert nxt.arrival == prev.finish_s + prev.think_s
