"""Requests drawn a chunk at a time give exactly the runs of requests drawn up front, and a
horizon run holds what has arrived, not rate x horizon requests.

The workload side: for every arrival kind and length distribution, a source with chunks of 1, 2
or 5 requests hands out the same arrays as ``generate``. The engine side: every engine
``simulate`` uses (fast replica, reference stepper, ordered stepper, fast ordered replica, and
the ordered engines with predictions that are drawn whole) gives identical request and
iteration tables and summaries whether the engine pulls chunks of 3 requests or one chunk.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from servesim.api import simulate
from servesim.core.errors import ConfigError
from servesim.core.rng import Streams
from servesim.engine.replica import Replica, run_engine
from servesim.scenario import scenario_from_dict
from servesim.workload import source as source_module
from servesim.workload.build import build_workload
from servesim.workload.source import RequestSource

AZURE = ("TIMESTAMP,ContextTokens,GeneratedTokens\n"
         "2023-11-16 18:00:00.0,10,1\n"
         "2023-11-16 18:00:00.5,20,9\n"
         "2023-11-16 18:00:01.5,30,3\n"
         "2023-11-16 18:00:02.0,40,14\n")

LENGTHS = {
    "prompt_tokens": {"kind": "uniform", "low": 5, "high": 90},
    "output_tokens": {"kind": "geometric", "mean": 25},
}
MIXTURE = {"classes": [
    {"name": "chat", "weight": 2.0, "prompt_tokens": {"kind": "lognormal", "mean": 40, "cv": 1.0},
     "output_tokens": {"kind": "poisson", "mean": 20}},
    {"name": "code", "weight": 1.0, "prompt_tokens": {"kind": "deterministic", "value": 70},
     "output_tokens": {"kind": "empirical", "values": [1, 4, 30, 60]}},
    {"name": "doc", "weight": 0.5, "prompt_tokens": {"kind": "geometric", "mean": 9},
     "output_tokens": {"kind": "uniform", "low": 1, "high": 50}},
]}
ARRIVALS = {
    "poisson": {"kind": "poisson", "rate_per_s": 6.0},
    "gamma": {"kind": "gamma", "rate_per_s": 6.0, "cv": 3.0},
    "deterministic": {"kind": "deterministic", "rate_per_s": 6.0},
    "mmpp2": {"kind": "mmpp2", "rate_on_per_s": 20.0, "rate_off_per_s": 1.0, "mean_on_s": 1.0,
              "mean_off_s": 3.0},
    "list": {"kind": "list", "times_s": [0.1 * k for k in range(1, 90)]},
}


def workloads(tmp_path: Path) -> dict[str, dict]:
    """``[workload]`` tables: each arrival kind with two lengths laws, a class mixture, and
    traces (looped with their own times; lengths-only with Poisson arrivals; not looped)."""
    (tmp_path / "conv.csv").write_text(AZURE)
    (tmp_path / "lengths.csv").write_text("num_prefill_tokens,num_decode_tokens\n"
                                          + "".join(f"{5 + k},{1 + 3 * k}\n" for k in range(9)))
    out = {kind: {"arrival": arrival, **LENGTHS} for kind, arrival in ARRIVALS.items()}
    out["mixture"] = {"arrival": ARRIVALS["gamma"], **MIXTURE}
    out["trace loop"] = {"trace": {"format": "azure", "path": str(tmp_path / "conv.csv"),
                                   "loop": True}}
    out["lengths loop"] = {"arrival": ARRIVALS["poisson"],
                           "trace": {"format": "lengths_csv", "path": str(tmp_path / "lengths.csv"),
                                     "loop": True}}
    out["trace"] = {"trace": {"format": "azure", "path": str(tmp_path / "conv.csv")}}
    return out


def assert_same_requests(a, b) -> None:
    for name in ("arrival_s", "prompt_tokens", "output_tokens", "class_id"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.class_names == b.class_names


@pytest.mark.parametrize("amount", [{"n_requests": 40}, {"horizon_s": 12.0}], ids=str)
def test_chunked_source_draws_what_generate_draws(tmp_path, amount):
    for name, spec in workloads(tmp_path).items():
        workload = build_workload(spec)
        # A trace without loop has 4 rows, and is drawn whole (bounded by the file).
        asked = {"n_requests": 4} if name == "trace" and "n_requests" in amount else amount
        whole = workload.generate(Streams(5), **asked)
        assert len(whole) > 0, name
        for size in (1, 2, 5):
            source = workload.source(Streams(5), **asked, chunk_requests=size)
            chunks = []
            while (chunk := source.next()) is not None:
                assert len(chunk) <= size or name == "trace", name
                chunks.append(chunk)
            assert len(chunks) > 1 or name == "trace", name
            got = RequestSource(chunks, workload.class_names).rest()
            assert_same_requests(got, whole)


def test_request_mode_draws_are_the_first_n_of_a_longer_run(tmp_path):
    # The arrival stream is the same whatever the amount asked for: n requests are a prefix.
    for name, spec in workloads(tmp_path).items():
        if name in ("trace", "list"):
            continue
        workload = build_workload(spec)
        short = workload.generate(Streams(2), n_requests=10)
        np.testing.assert_array_equal(
            workload.generate(Streams(2), n_requests=30).arrival_s[:10], short.arrival_s,
            err_msg=name)


def test_trace_running_out_of_rows_fails_before_the_run(tmp_path):
    spec = workloads(tmp_path)["lengths loop"]
    spec["trace"]["loop"] = False
    with pytest.raises(ConfigError, match="loop = false"):
        build_workload(spec).source(Streams(0), horizon_s=1000.0)


# -- the engines -----------------------------------------------------------------------------------

ENGINE = {"batching": "sarathi", "token_budget": 96, "kv": {"blocks": 40, "block_tokens": 8,
                                                             "preemption": "swap",
                                                             "host_blocks": 12}}
ORDERED = {"order": "sprpt", "predictor": {"kind": "lognormal", "sigma": 0.8}}
# Drawn for every request at once: binned confusion and TRAIL's posterior.
BINNED = {"order": "sprpt", "predictor": {"kind": "binned", "edges": [0, 8, 32, 200],
                                          "confusion": 0.3}}
TRAIL = {"order": {"kind": "trail", "c": 0.5},
         "predictor": {"kind": "trail", "bins": [0, 8, 32, 200], "refine_every": 4,
                       "confusion": 0.2}}
ENGINES = {
    "fast": (None, "fast"),
    "reference": (None, "reference"),
    "ordered stepper": (ORDERED, "reference"),
    "fast ordered": (ORDERED, "fast"),
    "fast ordered, binned": (BINNED, "fast"),
    "ordered stepper, trail": (TRAIL, "reference"),
}
RUNS = {"horizon": {"horizon_s": 15.0}, "requests": {"requests": 60},
        "time stop": {"requests": 60, "max_time_s": 4.0},
        "in-system cap": {"horizon_s": 15.0, "max_in_system": 6}}


def scenario(workload: dict, run: dict, schedule: dict | None):
    table = {"run": {"seed": 3, **run}, "workload": workload, "engine": copy.deepcopy(ENGINE)}
    if schedule is not None:
        table["schedule"] = schedule
    return scenario_from_dict(table)


def assert_same_result(a, b) -> None:
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.iterations, b.iterations)
    assert a.summary == b.summary


@pytest.mark.parametrize("engine", ENGINES)
def test_every_engine_gives_the_same_run_from_chunks(tmp_path, engine):
    schedule, stepper = ENGINES[engine]
    specs = workloads(tmp_path)
    for name in ("poisson", "mixture", "trace loop"):
        for run_name in ("horizon", "time stop", "in-system cap"):
            sc = scenario(specs[name], RUNS[run_name], schedule)
            whole = simulate(sc, stepper=stepper)
            chunked = simulate(sc, stepper=stepper, chunk_requests=3)
            assert len(whole.requests) > 3, (name, run_name)
            assert_same_result(chunked, whole)


@pytest.mark.parametrize("kind", ["gamma", "deterministic", "mmpp2", "list", "lengths loop"])
def test_other_arrival_kinds_give_the_same_run_from_chunks(tmp_path, kind):
    for run in (RUNS["horizon"], RUNS["requests"]):
        if kind == "list" and "requests" in run:
            continue   # the list has fewer times than that
        sc = scenario(workloads(tmp_path)[kind], run, None)
        for stepper in ("fast", "reference"):
            assert_same_result(simulate(sc, stepper=stepper, chunk_requests=2),
                               simulate(sc, stepper=stepper))


def test_requests_that_had_not_arrived_are_not_in_the_records(tmp_path):
    sc = scenario(workloads(tmp_path)["poisson"], RUNS["time stop"], None)
    result = simulate(sc)
    assert result.summary["stopped_early"] and result.summary["stop_reason"] == "time"
    assert len(result.requests) < 60
    assert (result.requests["arrival_s"] <= result.summary["end_s"]).all()
    assert "pending" not in set(result.requests["status"])


def test_start_decoding_pulls_the_requests_it_names():
    # Tests put requests in before the run; the engine pulls chunks far enough to hold them.
    from engine_cases import make_config

    from servesim.engine.cost import Staircase
    from servesim.workload.requests import Requests

    reqs = Requests.from_lists([0.0, 0.1, 0.2, 5.0], [4, 4, 4, 4], [3, 3, 3, 3])
    parts = [Requests.from_lists(reqs.arrival_s[i:i + 1], reqs.prompt_tokens[i:i + 1],
                                 reqs.output_tokens[i:i + 1]) for i in range(4)]
    whole = run_engine(reqs, make_config("vllm"), Staircase(), start_decoding=[2])
    chunked = run_engine(RequestSource(parts, ("default",)), make_config("vllm"), Staircase(),
                         start_decoding=[2])
    pd.testing.assert_frame_equal(whole.requests, chunked.requests)
    pd.testing.assert_frame_equal(whole.iterations, chunked.iterations)


# -- bounded memory ------------------------------------------------------------------------------

OVERLOAD = {"arrival": {"kind": "poisson", "rate_per_s": 30.0},
            "prompt_tokens": {"kind": "deterministic", "value": 129},
            "output_tokens": {"kind": "deterministic", "value": 112}}


def test_long_overloaded_horizon_stops_at_the_cap_holding_few_requests():
    # 30/s against a capacity of about 14/s for 1e8 s would be 3e9 requests; the cap stops the
    # run after a few hundred seconds, and only the requests that arrived are drawn and kept.
    sc = scenario_from_dict({"run": {"horizon_s": 1e8, "max_in_system": 300},
                             "workload": OVERLOAD,
                             "engine": {"batching": "sarathi", "token_budget": 512}})
    source = sc.workload.source(Streams(0), horizon_s=sc.run.horizon_s)
    engine = Replica(source, sc.engine, sc.cost)
    run = engine.run(sc.run.until_s, None, sc.run.max_in_system)
    assert run.stop_reason == "max_in_system"
    assert len(run.requests) < 5_000
    assert source.drawn <= len(run.requests) + source_module.CHUNK_REQUESTS
    assert engine.n == source.drawn   # per-request state: what was drawn, not the horizon


# -- sizes refused up front ----------------------------------------------------------------------


@pytest.fixture
def small_machine(monkeypatch):
    """A machine whose memory holds 1,000 request records."""
    monkeypatch.setattr(source_module, "_memory_bytes",
                        lambda: 1000 * source_module.RECORD_BYTES)


def size_error(run: dict, workload: dict | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        scenario_from_dict({"run": run, "workload": workload or OVERLOAD})
    message = str(info.value)
    assert "\n" not in message
    return message


def test_request_count_beyond_the_records_memory_holds_is_refused(small_machine):
    message = size_error({"requests": 1001})
    assert message.startswith("run.requests: got 1001, expected at most 1,000 requests")
    assert "bytes each" in message
    scenario_from_dict({"run": {"requests": 1000}, "workload": OVERLOAD})


def test_absurd_request_count_is_refused_on_any_machine():
    message = size_error({"requests": 1_000_000_000_000})
    assert message.startswith("run.requests: got 1000000000000, expected at most")


def test_horizon_beyond_the_records_is_refused_unless_the_in_system_cap_bounds_it(small_machine):
    message = size_error({"horizon_s": 40.0})   # 30/s x 40 s = 1,200 arrivals
    assert message.startswith("run.horizon_s: got 40.0, expected a horizon of at most 33.33 s")
    assert "run.max_in_system" in message
    scenario_from_dict({"run": {"horizon_s": 30.0}, "workload": OVERLOAD})
    scenario_from_dict({"run": {"horizon_s": 1e8, "max_in_system": 100}, "workload": OVERLOAD})
    # An explicit list is bounded by its length.
    times = {"arrival": {"kind": "list", "times_s": [1.0, 2.0]},
             "prompt_tokens": OVERLOAD["prompt_tokens"], "output_tokens": OVERLOAD["output_tokens"]}
    scenario_from_dict({"run": {"horizon_s": 1e8}, "workload": times})


def test_non_finite_sizes_are_refused():
    for run in ({"horizon_s": float("inf")}, {"horizon_s": float("nan")}):
        assert "run.horizon_s" in size_error(run)


def test_network_horizon_beyond_the_records_is_refused(small_machine):
    from servesim.cluster import network_from_dict
    from servesim.cluster.study import run_network

    table = {"run": {"horizon_s": 40.0},
             "network": {"engines": {"e": {"batching": "sarathi", "token_budget": 512}},
                         "classes": {"c": {"engine": "e", **{k: OVERLOAD[k] for k in
                                                             ("prompt_tokens", "output_tokens")}}},
                         "workflows": {"w": {"arrival": OVERLOAD["arrival"], "entry": "c"}}}}
    with pytest.raises(ConfigError, match=r"^run.horizon_s: got 40.0, expected a horizon"):
        network_from_dict(table)
    table["run"]["horizon_s"] = 1.0
    net = network_from_dict(table)
    with pytest.raises(ConfigError, match=r"^--horizon-s: got 100000000.0, expected"):
        run_network(net, horizon_s=1e8)
    table["run"]["max_in_system"] = 50
    network_from_dict({**table, "run": {"horizon_s": 1e8, "max_in_system": 50}})
