"""The output convention ``[engine] first_token``: "decode" (the paper's, D decode iterations
after the prefill) or "prefill" (vLLM's: the iteration that completes the prompt emits token 1,
then D - 1 decode iterations), on every batching system and every stepper.

Hand-computed cases use a constant cost of T = 0.1 s per iteration.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from first_token_cases import T, check_tokens, in_steps, phases, random_case, run_trace
from servesim.cluster import EngineSpec, Network, StepClass, Workflow, simulate_network
from servesim.core.errors import ConfigError
from servesim.engine.config import BATCHING, EngineConfig
from servesim.engine.cost import Constant, PiecewiseLinear
from servesim.engine.ordered import run_ordered
from servesim.engine.ordered_replica import OrderedReplica
from servesim.engine.reference import ReferenceStepper
from servesim.engine.replica import Replica, run_engine
from servesim.policies.ordering import make_ordering
from servesim.scenario import scenario_from_dict
from servesim.workload.arrivals import Poisson
from servesim.workload.distributions import UniformInt
from servesim.workload.requests import Requests

PLAIN = ("static", "fastertransformer", "vllm", "orca", "sarathi", "greedy")


def run(requests, first_token, batching="sarathi", stepper="fast", **engine):
    return run_trace(requests, stepper, batching=batching, first_token=first_token, **engine)


def test_defaults_and_bad_values():
    assert EngineConfig().first_token == "decode"
    assert EngineConfig(batching="vllm").first_token == "decode"
    assert EngineConfig(batching="vllm_v1").first_token == "prefill"
    assert EngineConfig(batching="vllm_v1", first_token="decode").first_token == "decode"
    with pytest.raises(ConfigError) as err:
        EngineConfig(first_token="prefil")
    message = str(err.value)
    assert "\n" not in message and "engine.first_token" in message
    assert "did you mean 'prefill'?" in message


def test_scenario_field():
    workload = {"arrival": {"kind": "poisson", "rate_per_s": 1.0},
                "prompt_tokens": {"kind": "deterministic", "value": 8},
                "output_tokens": {"kind": "deterministic", "value": 4}}
    table = {"run": {"requests": 5}, "workload": workload, "engine": {"first_token": "prefill"}}
    assert scenario_from_dict(table).engine.first_token == "prefill"
    table["engine"] = {"batching": "vllm_v1"}
    assert scenario_from_dict(table).engine.first_token == "prefill"
    table["engine"] = {"first_token": "decod"}
    with pytest.raises(ConfigError, match="did you mean 'decode'"):
        scenario_from_dict(table)
    table["engine"] = {"first_token": 1}
    with pytest.raises(ConfigError, match="engine.first_token"):
        scenario_from_dict(table)


@pytest.mark.parametrize("batching", BATCHING)
def test_one_request_on_every_system(batching):
    """Prompt 6, three output tokens. "decode": prefill at T, tokens at 2T, 3T, 4T.
    "prefill": token 1 with the prefill at T, then 2T and 3T. One output token: "prefill"
    finishes with the prefill at T, "decode" a step later."""
    one = Requests.from_lists([0], [6], [3])
    kv = dict(blocks=1000)   # finite: WAIT derives its memory budget from the cache
    decode, prefill = run(one, "decode", batching, kv=kv), run(one, "prefill", batching, kv=kv)
    assert phases(decode) == ["Ap6", "Ad1", "Ad1", "Ad1"]
    assert phases(prefill) == ["Ap6", "Ad1", "Ad1"]
    assert in_steps(decode, "first_token_s") == [2] and in_steps(decode, "finish_s") == [4]
    assert in_steps(prefill, "first_token_s") == [1] and in_steps(prefill, "finish_s") == [3]
    assert decode.requests.max_token_gap_s[0] == pytest.approx(T)
    assert prefill.requests.max_token_gap_s[0] == pytest.approx(T)
    single = Requests.from_lists([0], [6], [1])
    assert phases(run(single, "prefill", batching, kv=kv)) == ["Ap6"]
    assert in_steps(run(single, "prefill", batching, kv=kv), "finish_s") == [1]
    assert in_steps(run(single, "decode", batching, kv=kv), "finish_s") == [2]


@pytest.mark.parametrize("stepper", ["fast", "reference"])
def test_recompute_reprefill_emits_the_next_token(stepper):
    """vllm, one-token blocks, 5 blocks; A and B: prompt 2, three output tokens.
    1: both prefill (4 blocks), token 1 each at T. 2: both need a block, one is free: B (the
    newest) is preempted, dropping its 2 tokens, and owes prompt + generated = 3; A decodes
    token 2. 3: B's 3 blocks do not fit the 2 free; A's token 3 finishes it at 3T.
    4: B re-prefills 3 tokens, which emits its token 2 at 4T. 5: token 3 at 5T."""
    two = Requests.from_lists([0, 0], [2, 2], [3, 3])
    res = run(two, "prefill", "vllm", stepper, token_budget=16,
              kv=dict(block_tokens=1, blocks=5))
    assert phases(res) == ["Ap2 Bp2", "Ad1", "Ad1", "Bp3", "Bd1"]
    assert list(res.requests.preemptions) == [0, 1]
    assert list(res.requests.recomputed_tokens) == [0, 2]
    assert in_steps(res, "first_token_s") == [1, 1]
    assert in_steps(res, "finish_s") == [3, 5]
    assert res.requests.max_token_gap_s[1] == pytest.approx(3 * T)


def test_the_fast_ordered_replica_hands_prefill_to_the_ordered_stepper():
    one = Requests.from_lists([0], [6], [3])
    config = EngineConfig(first_token="prefill")
    with pytest.raises(ConfigError, match="first_token"):
        OrderedReplica(one, config, Constant(T), make_ordering("fcfs"))
    with pytest.raises(ConfigError, match="first_token"):
        run_ordered(one, config, Constant(T), "fcfs", stepper="fast")
    plain = run_engine(one, config, Constant(T), stepper="reference").requests
    ordered = run_ordered(one, config, Constant(T), "fcfs").requests
    pd.testing.assert_frame_equal(ordered[plain.columns], plain)


def test_early_decoders_run_on_the_reference_under_prefill():
    """start_decoding (a test hook) puts a request in decoding with its prefill done; under
    "prefill" only the reference stepper takes it, so run_engine picks it."""
    two = Requests.from_lists([0, 0], [4, 4], [2, 2])
    config = EngineConfig(first_token="prefill")
    with pytest.raises(ConfigError, match="start_decoding"):
        Replica(two, config, Constant(T)).start_decoding(0)
    fast = run_engine(two, config, Constant(T), start_decoding=[0])
    ref = run_engine(two, config, Constant(T), start_decoding=[0], stepper="reference")
    pd.testing.assert_frame_equal(fast.requests, ref.requests)


def _same_runs(a, b) -> None:
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.iterations, b.iterations)
    assert a.batches == b.batches


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), system=st.sampled_from(PLAIN),
       first_token=st.sampled_from(["decode", "prefill"]), drain=st.booleans())
def test_every_system_conserves_tokens_and_the_steppers_agree(seed, system, first_token, drain):
    """Fast and reference agree, request and iteration tables and batches, under both
    conventions; every token is a decode step or a completed prefill; memory and batch limits
    hold."""
    requests, config, cost, until = random_case(np.random.default_rng(seed), system,
                                                first_token)
    until = None if drain else until
    runs = [run_engine(requests, config, cost, until_s=until, stepper=s, record_batches=True,
                       check_invariants=True) for s in ("fast", "reference")]
    _same_runs(*runs)
    res = runs[0]
    req, it = res.requests, res.iterations
    assert (it.kv_blocks_used <= config.kv.blocks).all()
    assert (it.batch_size <= config.max_batch_size).all()
    check_tokens(res, first_token)
    done = req[req.status == "finished"]
    assert (done.generated_tokens == done.output_tokens).all()
    assert (done.first_token_s <= done.finish_s).all()
    if first_token == "prefill":
        assert (done.first_token_s > done.admitted_s).all()
    if drain:
        assert set(req.status) <= {"finished", "rejected"}


@pytest.mark.parametrize("batching", ["sarathi", "vllm_v1"])
@pytest.mark.parametrize("first_token", ["decode", "prefill"])
def test_ordered_stepper_with_fcfs_is_the_plain_engine(first_token, batching):
    requests, config, cost, _ = random_case(np.random.default_rng(7), batching, first_token,
                                            swap=batching != "vllm_v1")
    plain = run_engine(requests, config, cost, stepper="reference").requests
    ordered = run_ordered(requests, config, cost, "fcfs", stepper="reference").requests
    pd.testing.assert_frame_equal(ordered[plain.columns], plain)


@pytest.mark.parametrize("batching", ["sarathi", "vllm_v1"])
def test_network_engine_follows_the_convention(batching):
    """A one-engine network is the reference stepper, under "prefill" too (including the
    requests that finish with their prefill)."""
    config = EngineConfig(batching=batching, token_budget=48, first_token="prefill")
    cost = PiecewiseLinear(0.001, 0.001, 0)
    engines = {"e": EngineSpec("e", config, cost)}
    classes = {"a": StepClass("a", "e", UniformInt(1, 90), UniformInt(1, 6))}
    net = Network(engines, classes, {"w": Workflow("w", Poisson(20.0), ("a",))})
    v = simulate_network(net, 3, horizon_s=10.0, drain=True).visits
    assert (v["output_tokens"] == 1).any()
    reqs = Requests.from_lists(v["arrival_s"], v["prompt_tokens"], v["output_tokens"])
    ref = ReferenceStepper(reqs, config, cost).run().requests
    for col in ("admitted_s", "first_token_s", "finish_s"):
        np.testing.assert_array_equal(v[col].to_numpy(), ref[col].to_numpy())
