"""SkipPredict in the LLM engine: a hand-checked trace, expensive predictions only for requests
whose cheap bit says long, prediction costs (external and server time), invariants under every
batching system (the [schedule] table, its errors and a scenario run through ``servesim run``
are tested in tests/test_schedule_scenario.py)."""

import numpy as np
import pytest
from engine_cases import SYSTEMS, make_config, random_case
from hypothesis import given, settings
from hypothesis import strategies as st
from ordered_cases import assert_every_request_completes

from servesim.engine.cost import Affine
from servesim.engine.ordered import prediction_totals, run_ordered
from servesim.workload.requests import Requests

ORACLE = {"kind": "oracle"}
ONE_SECOND = Affine(d0_s=1.0, d1_s=0.0)   # every iteration takes exactly 1 s


def exact_bit(threshold, **cost):
    return {"kind": "one_bit", "threshold": threshold, "p_short_as_long": 0.0,
            "p_long_as_short": 0.0, **cost}


# -- a hand-checked trace ------------------------------------------------------------------------
#
# One-second iterations, one running request at a time, prompts of one token (one prefill
# iteration, then one token per iteration), exact bits 1{output > 5} and exact predictions.
#   A (output 3) arrives at 0: prefill [0, 1), tokens at 2, 3, 4.
#   B (8, long), C (6, long), D (2, short), E (1, short) arrive at 0.5, 1.5, 2.5, 3.5 and wait:
#   A is short (tier 0), so no long request may preempt it, and later short ones rank behind it.
#   At 4 the short ones go first in arrival order: D [4, 5) + tokens 6, 7; E [7, 8) + token 9.
#   Then the long ones by predicted remaining: C (6) before B (8). C is admitted at 9, prefills
#   [9, 10) and has 1 token at 11. F (1, short) arrived at 10.5 and ranks ahead of every long
#   request: C is preempted at 11 and loses prompt + 1 token of KV. F [11, 12) + token 13.
#   At 13 C (rank 6 - 1 = 5) beats B (8): it re-prefills 2 tokens [13, 14), tokens 15..19.
#   B [19, 20), tokens 21..28.

TRACE = dict(arrival=[0.0, 0.5, 1.5, 2.5, 3.5, 10.5], output=[3, 8, 6, 2, 1, 1])
EXPECTED = {  # admitted_s, finish_s, preemptions, recomputed_tokens
    "A": (0, 4, 0, 0), "B": (19, 28, 0, 0), "C": (9, 19, 1, 2),
    "D": (4, 7, 0, 0), "E": (7, 9, 0, 0), "F": (11, 13, 0, 0)}


def trace_run(**costs):
    requests = Requests.from_lists(TRACE["arrival"], [1] * 6, TRACE["output"])
    config = make_config("sarathi", token_budget=100, max_batch_size=1,
                         kv=dict(block_tokens=1))
    full = {**ORACLE, **costs.get("full", {})}
    return run_ordered(requests, config, ONE_SECOND, "skippredict", full,
                       bit_predictor=exact_bit(5, **costs.get("bit", {})))


def test_hand_checked_trace_short_fcfs_ahead_of_long_sprpt():
    df = trace_run().requests
    cols = ["admitted_s", "finish_s", "preemptions", "recomputed_tokens"]
    rows = df[cols].to_numpy()
    got = {name: tuple(float(x) for x in row) for name, row in zip("ABCDEF", rows, strict=True)}
    assert got == EXPECTED
    assert df["cheap_bit"].tolist() == [0, 1, 1, 0, 0, 0]
    assert df["expensive_prediction"].tolist() == [False, True, True, False, False, False]
    # Only the predicted-long requests have a prediction on record.
    assert df["predicted_tokens"][[1, 2]].tolist() == [8, 6]
    assert df["predicted_tokens"][[0, 3, 4, 5]].isna().all()
    assert df["priority_preemptions"].tolist() == [0, 0, 1, 0, 0, 0]


def test_external_costs_are_booked_and_delay_nothing():
    run = trace_run(bit={"cost": {"kind": "external", "value": 0.1}},
                    full={"cost": {"kind": "external", "value": 1.0}})
    df = run.requests
    assert df["prediction_cost"].tolist() == pytest.approx([0.1, 1.1, 1.1, 0.1, 0.1, 0.1])
    assert df["finish_s"].tolist() == [4, 28, 19, 7, 9, 13]
    assert prediction_totals(run) == pytest.approx(
        {"expensive_predictions": 2, "prediction_cost": 2.6, "prediction_server_s": 0.0})


def test_server_time_costs_lengthen_the_first_iteration_that_considers_the_request():
    # Bit 0.25 s per request, expensive prediction 0.5 s. A arrives alone at 0: the first
    # iteration, [0, 1.25), pays its bit. B (long) arrived at 0.5 and is first considered at
    # 1.25: [1.25, 3) pays 0.75. C (long, 1.5) and D (short, 2.5) are first considered at 3:
    # 1 + 0.75 + 0.25 = 2 s. E (3.5) at 5: 1.25 s.
    run = trace_run(bit={"cost": {"kind": "server_time", "seconds": 0.25}},
                    full={"cost": {"kind": "server_time", "seconds": 0.5}})
    durations = run.iterations["duration_s"].tolist()
    assert durations[:4] == [1.25, 1.75, 2.0, 1.25]
    assert run.requests["prediction_server_s"].tolist() == [0.25, 0.75, 0.75, 0.25, 0.25, 0.25]
    assert run.requests["prediction_cost"].sum() == 0.0
    # Prediction work is engine time: it adds exactly its seconds to the busy time.
    assert sum(durations) == pytest.approx(len(durations) + 2.5)


def test_only_predicted_long_requests_get_the_expensive_prediction():
    rng = np.random.default_rng(7)
    n = 200
    requests = Requests.from_lists(np.sort(rng.uniform(0, 20, n)), rng.integers(1, 50, n),
                                   rng.integers(1, 60, n))
    bit = {"kind": "one_bit", "threshold": 20, "p_short_as_long": 0.2, "p_long_as_short": 0.2,
           "cost": {"kind": "external", "value": 1.0}}
    full = {"kind": "lognormal", "sigma": 0.5, "cost": {"kind": "external", "value": 10.0}}
    df = run_ordered(requests, make_config("vllm"), ONE_SECOND, "skippredict", full, 3,
                     bit_predictor=bit).requests
    long = df["cheap_bit"] == 1.0
    assert 0 < long.sum() < n   # noisy bits, both classes present
    assert (df["expensive_prediction"] == long).all()
    assert df["expensive_prediction"].sum() == long.sum()
    assert df["prediction_cost"].sum() == pytest.approx(n + 10.0 * long.sum())
    assert df["predicted_tokens"][long].notna().all() and df["predicted_tokens"][~long].isna().all()


# -- invariants under every batching system -----------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), system=st.sampled_from(SYSTEMS),
       full=st.sampled_from([ORACLE, {"kind": "lognormal", "sigma": 1.0}]),
       server_s=st.sampled_from([None, 0.01]), aging=st.booleans())
def test_invariants(seed, system, full, server_s, aging):
    requests, config, cost, _ = random_case(np.random.default_rng(seed), system)
    bit = {"kind": "one_bit", "threshold": 25, "p_short_as_long": 0.1, "p_long_as_short": 0.1}
    if server_s is not None:
        bit["cost"] = {"kind": "server_time", "seconds": server_s}
    order = {"kind": "aging", "base": "skippredict", "wait_s": 0.5} if aging else "skippredict"
    run = run_ordered(requests, config, cost, order, full, seed, bit_predictor=bit)
    assert_every_request_completes(run, config)
    df = run.requests
    done = df["status"] == "finished"
    # Expensive predictions go exactly to the considered predicted-long requests.
    assert (df["expensive_prediction"] == ((df["cheap_bit"] == 1.0) & done)).all()
    if server_s is not None:
        assert df["prediction_server_s"].sum() == pytest.approx(server_s * done.sum())

