"""The ordered stepper: FCFS is the plain engine, SPJF orders admissions, hand-checked SPRPT and
TRAIL preemption traces, and invariants under every preemptive ordering."""

import numpy as np
import pandas as pd
import pytest
from engine_cases import SYSTEMS, make_config, random_case
from hypothesis import given, settings
from hypothesis import strategies as st
from ordered_cases import assert_every_request_completes

from servesim.core.errors import ConfigError
from servesim.engine.config import EngineConfig
from servesim.engine.cost import Affine
from servesim.engine.ordered import OrderedStepper, preemption_totals, run_ordered
from servesim.engine.replica import run_engine
from servesim.policies.ordering import make_ordering
from servesim.predictors import make_predictor
from servesim.workload.requests import Requests

ORACLE = {"kind": "oracle"}
TRAIL_PREDICTOR = {"kind": "trail", "bins": [0, 8, 16, 32, 64], "refine_every": 4,
                   "confusion": 0.2}
ONE_SECOND = Affine(d0_s=1.0, d1_s=0.0)   # every iteration takes exactly 1 s


# -- FCFS through the ordered stepper is the plain engine ---------------------------------------


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), system=st.sampled_from(SYSTEMS),
       predictor=st.sampled_from([None, ORACLE, TRAIL_PREDICTOR]))
def test_fcfs_gives_the_reference_records(seed, system, predictor):
    requests, config, cost, until = random_case(np.random.default_rng(seed), system)
    ref = run_engine(requests, config, cost, until_s=until, stepper="reference")
    ordered = run_ordered(requests, config, cost, "fcfs", predictor, seed, until_s=until)
    pd.testing.assert_frame_equal(ordered.requests[list(ref.requests.columns)], ref.requests)
    pd.testing.assert_frame_equal(ordered.iterations, ref.iterations)
    assert (ordered.end_s, ordered.stop_reason) == (ref.end_s, ref.stop_reason)
    assert ordered.requests["priority_preemptions"].sum() == 0


# -- SPJF with exact predictions and no memory pressure -----------------------------------------


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), system=st.sampled_from(["vllm", "sarathi", "orca"]))
def test_oracle_spjf_admits_the_shortest_waiting_request(seed, system):
    # One request at a time, so every admission chooses among all who have arrived.
    rng = np.random.default_rng(seed)
    n = 25
    arrivals = np.sort(rng.uniform(0, 20, n))
    outputs = rng.integers(1, 30, n)
    requests = Requests.from_lists(arrivals, rng.integers(1, 20, n), outputs)
    config = make_config(system, token_budget=64, max_batch_size=1)
    df = run_ordered(requests, config, ONE_SECOND, "spjf", ORACLE).requests
    assert (df["status"] == "finished").all()
    assert (df["predicted_tokens"] == df["output_tokens"]).all()
    for i in range(n):
        a = df["admitted_s"][i]
        rivals = df[(df["arrival_s"] <= a) & (df["admitted_s"] > a)]
        assert (rivals["output_tokens"] >= df["output_tokens"][i]).all()


@pytest.mark.parametrize(("order", "finish"), [("fcfs", [3, 4, 6]), ("spjf", [6, 1, 3])])
def test_partial_decodes_serve_decoders_in_rank_order(order, finish):
    # Three requests decode from the start (outputs 3, 1, 2); a budget of one token lets one
    # decoder take a token per iteration: FCFS takes admission order, SPJF the shortest first.
    requests = Requests.from_lists([0.0, 0.0, 0.0], [1, 1, 1], [3, 1, 2])
    stepper = OrderedStepper(requests, make_config("sarathi", token_budget=1), ONE_SECOND,
                             make_ordering(order), make_predictor(ORACLE))
    for i in range(3):
        stepper.start_decoding(i)
    assert stepper.run().requests["finish_s"].tolist() == finish


# -- hand-checked preemption traces -------------------------------------------------------------
#
# One-second iterations, one running request at a time (max_batch_size = 1), no memory limit.
# A (prompt 2, output 6) arrives at 0: prefill [0,1), tokens at 2, 3, ... B (prompt 3, output 2)
# arrives at ``b_arrival`` and is blocked by A's batch slot.

A_B = dict(prompt=[2, 3], output=[6, 2])


def trace(order, b_arrival=2.5, preemption="recompute", b_output=2, **kw):
    requests = Requests.from_lists([0.0, b_arrival], A_B["prompt"], [A_B["output"][0], b_output])
    config = make_config("sarathi", token_budget=100, max_batch_size=1,
                         kv=dict(block_tokens=1, preemption=preemption, host_blocks=100,
                                 block_bytes=1, swap_bytes_per_s=1e9))
    return run_ordered(requests, config, ONE_SECOND, order, ORACLE, record_batches=True, **kw)


def rows(run):
    cols = ["admitted_s", "first_token_s", "finish_s", "preemptions", "priority_preemptions",
            "recomputed_tokens"]
    return [tuple(float(x) for x in r) for r in run.requests[cols].to_numpy()]


NO_PREEMPTION = [(0, 2, 7, 0, 0, 0), (7, 9, 10, 0, 0, 0)]
# At t = 3 A has 2 tokens (rank 6 - 2 = 4) and B ranks 2: A is preempted and loses its 4 tokens
# of KV; B runs [3, 6); A re-prefills prompt + generated = 4 tokens at [6, 7), then its tokens 3-6
# come at 8, 9, 10, 11.
PREEMPTED = [(0, 2, 11, 1, 1, 4), (3, 5, 6, 0, 0, 0)]


def test_fcfs_and_spjf_trace_never_preempt():
    assert rows(trace("fcfs")) == NO_PREEMPTION
    assert rows(trace("spjf")) == NO_PREEMPTION


def test_sprpt_trace_preempts_the_longer_remaining():
    run = trace("sprpt")
    assert rows(run) == PREEMPTED
    assert run.batches[3] == [(1, "p", 3)]
    assert run.batches[6] == [(0, "p", 4)]
    assert preemption_totals(run) == {"preemptions": 1, "recomputed_tokens": 4,
                                      "priority_preemptions": 1, "priority_recomputed_tokens": 4}


@pytest.mark.parametrize(("c", "expected"), [
    (0.0, NO_PREEMPTION),     # c = 0 never preempts
    (0.2, NO_PREEMPTION),     # 2 tokens > 0.2 * 6
    (1 / 3, PREEMPTED),       # 2 <= 1/3 * 6: the bound is inclusive
    (0.5, PREEMPTED),
    (1.0, PREEMPTED),         # unlimited
])
def test_trail_preempts_only_within_c_times_the_prediction(c, expected):
    assert rows(trace({"kind": "trail", "c": c})) == expected


def test_trail_cap_on_preemptions():
    assert rows(trace({"kind": "trail", "c": 1.0, "max_preemptions": 0})) == NO_PREEMPTION
    assert rows(trace("sprpt", max_preemptions=0)) == NO_PREEMPTION


def test_trail_boundary_at_a_later_arrival():
    # B (output 1) arrives at 4.5; at t = 5 A has 4 tokens and ranks 6 - 4 = 2 > 1: it is
    # preemptible iff 4 <= 6c. An equal rank would not preempt (B with output 2).
    later = dict(b_arrival=4.5, b_output=1)
    assert rows(trace({"kind": "trail", "c": 0.6}, **later))[0][3] == 0
    assert rows(trace("sprpt", b_arrival=4.5))[0][3] == 0
    # A loses 6 tokens at t = 5; B runs [5, 7); A re-prefills 6 tokens at [7, 8), and its tokens
    # 5 and 6 come at 9 and 10.
    assert rows(trace({"kind": "trail", "c": 2 / 3}, **later)) == \
        [(0, 2, 10, 1, 1, 6), (5, 7, 7, 0, 0, 0)]


def test_sprpt_swap_trace_parks_the_victim_without_recompute():
    # A's 4 blocks go to host memory at t = 3 and come back when B finishes; no re-prefill.
    run = trace("sprpt", preemption="swap")
    df = run.requests
    assert df["finish_s"].tolist() == pytest.approx([10, 6], abs=1e-6)
    assert df["recomputed_tokens"].tolist() == [0, 0]
    assert df["swapped_bytes"].tolist() == [8, 0]   # 4 one-byte blocks out and back
    assert df["priority_preemptions"].tolist() == [1, 0]


def test_oracle_trail_with_c_one_is_sprpt():
    for seed in range(6):
        requests, config, cost, until = random_case(np.random.default_rng(seed))
        a = run_ordered(requests, config, cost, "sprpt", ORACLE, seed, until_s=until)
        b = run_ordered(requests, config, cost, {"kind": "trail", "c": 1.0}, ORACLE, seed,
                        until_s=until)
        pd.testing.assert_frame_equal(a.requests, b.requests)


@pytest.mark.parametrize(("wait_s", "first"), [(4.0, 1), (5.0, 2), (None, 2)])
def test_aging_boosts_a_request_that_waited_long_enough(wait_s, first):
    # A (output 4) runs [0, 5). B (output 10) arrives at 0.5, C (output 1) at 1.5. SPJF admits C
    # at 5, unless B's boost came due by then: at 0.5 + wait_s.
    requests = Requests.from_lists([0.0, 0.5, 1.5], [1, 1, 1], [4, 10, 1])
    config = make_config("sarathi", token_budget=64, max_batch_size=1)
    order = "spjf" if wait_s is None else {"kind": "aging", "base": "spjf", "wait_s": wait_s}
    admitted = run_ordered(requests, config, ONE_SECOND, order, ORACLE).requests["admitted_s"]
    assert admitted[first] == 5.0


def test_trail_refinement_happens_every_k_tokens_as_events():
    # Two requests decode side by side; refine_every = 4, so A (output 10) is refined at 4 and 8
    # generated tokens and B (output 6) at 4, each in one batched call per iteration.
    predictor = make_predictor({**TRAIL_PREDICTOR, "confusion": 0.0})
    calls = []
    refine = predictor.refine

    def spy(state, generated, rows=None, rng=None):
        calls.append((sorted(np.asarray(rows).tolist()), np.asarray(generated).tolist()))
        return refine(state, generated, rows=rows, rng=rng)

    predictor.refine = spy
    requests = Requests.from_lists([0.0, 0.0], [3, 3], [10, 6])
    run = run_ordered(requests, make_config("sarathi"), ONE_SECOND, "sprpt", predictor)
    assert calls == [([0, 1], [4, 4]), ([0], [8])]
    assert (run.requests["status"] == "finished").all()


# -- invariants under every preemptive ordering -------------------------------------------------

ORDERS = ["sprpt", "spjf", "pspjf", "srpt", "sjf", "sprpt_bounce", "mlfq",
          {"kind": "trail", "c": 0.5, "max_preemptions": 2}, {"kind": "trail", "c": 1.0},
          {"kind": "aging", "base": "sprpt", "wait_s": 0.3}]
PREDICTORS = [ORACLE, {"kind": "lognormal", "sigma": 1.0}, TRAIL_PREDICTOR]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), system=st.sampled_from(SYSTEMS),
       order=st.sampled_from(ORDERS), predictor=st.sampled_from(PREDICTORS),
       cap=st.sampled_from([None, 1, 3]))
def test_invariants(seed, system, order, predictor, cap):
    requests, config, cost, _ = random_case(np.random.default_rng(seed), system)
    run = run_ordered(requests, config, cost, order, predictor, seed, max_preemptions=cap)
    assert_every_request_completes(run, config)
    df, it = run.requests, run.iterations
    done = df["status"] == "finished"
    # Prefill work is the prompts plus exactly the tokens lost to recompute preemptions.
    assert it["prefill_tokens"].sum() == df["prompt_tokens"][done].sum() + \
        df["recomputed_tokens"].sum()
    assert (df["priority_preemptions"] <= df["preemptions"]).all()
    own = order.get("max_preemptions") if isinstance(order, dict) else None
    limit = min(x for x in (cap, own, 1 << 30) if x is not None)
    assert (df["priority_preemptions"] <= limit).all()


def test_errors_are_one_line_with_a_suggestion():
    requests = Requests.from_lists([0.0], [4], [4])
    config = EngineConfig()
    with pytest.raises(ConfigError, match="did you mean 'sprpt'"):
        run_ordered(requests, config, ONE_SECOND, "sprtp", ORACLE)
    with pytest.raises(ConfigError, match="schedule.predictor"):
        run_ordered(requests, config, ONE_SECOND, "spjf", None)
    with pytest.raises(ConfigError, match="schedule.bit_predictor"):
        run_ordered(requests, config, ONE_SECOND, "skippredict", ORACLE)
