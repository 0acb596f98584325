"""WAIT and Nested WAIT: hand-worked step traces, the threshold rules, validation, and
properties over random memory-bound cases (KV never over capacity, each request finishes once).

Traces use the staircase cost, where any batch of at most 128 tokens takes the same time, so only
the batch contents matter.
"""

import numpy as np
import pytest
from engine_cases import make_config, random_case
from hypothesis import given, settings
from hypothesis import strategies as st

from servesim.core.errors import ConfigError
from servesim.engine.config import EngineConfig, WaitConfig
from servesim.engine.cost import Staircase
from servesim.engine.replica import run_engine
from servesim.policies.batching import StepPlan, make_policy, policy_class
from servesim.policies.wait import practical_thresholds, segment_shares
from servesim.scenario import scenario_from_dict
from servesim.theory.fluid import PromptType, wait_thresholds
from servesim.workload.requests import Requests


def run(requests, batching, stepper="fast", **wait):
    config = make_config(batching, token_budget=100, wait=WaitConfig(**wait))
    return run_engine(requests, config, Staircase(), stepper=stepper, record_batches=True)


def phases(result, names):
    return [" ".join(f"{names[i]}{p}" for i, p, _ in b) for b in result.batches]


@pytest.mark.parametrize("stepper", ["fast", "reference"])
def test_wait_trace_threshold_two(stepper):
    # One class, n = 2; A, B, C arrive together (prompt 2, output 2).
    # 1: 3 waiting >= 2: admit the first two.   2-3: A, B decode (stage cap 2); C alone is
    # below the threshold and waits. 4: nothing would move, so the fullest gate opens (C).
    reqs = Requests.from_lists([0, 0, 0], [2, 2, 2], [2, 2, 2])
    res = run(reqs, "wait", stepper, thresholds=[2])
    assert phases(res, "ABC") == ["Ap Bp", "Ad Bd", "Ad Bd", "Cp", "Cd", "Cd"]
    assert (res.requests.status == "finished").all()


def test_wait_trace_two_types_and_stage_caps():
    # Types x (n = 1) and y (n = 2). x1, x2, y1 arrive at 0; y2 arrives during iteration 2.
    # 1: x eligible (2 >= 1) admits x1; y (1 < 2) waits.  2: x1 decodes, x2 admitted.
    # 3: y now has 2 waiting: both admitted; x1 and x2 are at different stages, one each.
    # 4-5: each stage of each type holds at most its threshold, so everything decodes.
    reqs = Requests.from_lists([0, 0, 0, 0.05], [2, 2, 2, 2], [2, 2, 3, 1],
                               class_id=[0, 0, 1, 1], class_names=("x", "y"))
    res = run(reqs, "wait", thresholds=[1, 2])
    names = ["x1", "x2", "y1", "y2"]
    assert phases(res, names) == [
        "x1p", "x1d x2p", "x1d x2d y1p y2p", "x2d y1d y2d", "y1d", "y1d"]


def test_wait_stage_cap_holds_back_a_crowded_stage():
    # n = 1 and three requests already decoding at the same stage: one per iteration moves.
    reqs = Requests.from_lists([0, 0, 0], [2, 2, 2], [1, 1, 1])
    config = make_config("wait", token_budget=100, wait=WaitConfig(thresholds=[1]))
    res = run_engine(reqs, config, Staircase(), start_decoding=[0, 1, 2], record_batches=True)
    assert phases(res, "ABC") == ["Ad", "Bd", "Cd"]


def test_nested_wait_trace_prefix_and_entry_gate():
    # Segments [0, 1) and [1, inf) with thresholds 1 and 2. Z (output 10) is already decoding
    # and is the oldest running request, which no gate holds. A, B (prompt 2, output 3) arrive
    # at 0, C (output 1) at 0.2 s, i.e. before iteration 6 (iterations take 46.75 ms).
    # 1-2: A, then B admitted (queue >= 1).  3: A has 1 token: it waits at the entry of
    # segment 2 (1 < 2).  4-5: A and B both wait there (2 >= 2), but segment 1's gate is not
    # met (empty queue), so the prefix of open gates is empty; Z keeps the engine busy.
    # 6: C arrives, both gates are met: A and B move on and C is admitted.
    reqs = Requests.from_lists([0, 0, 0, 0.2], [2, 2, 2, 2], [10, 3, 3, 1])
    config = make_config("nested_wait", token_budget=100,
                         wait=WaitConfig(segments=(1,), thresholds=(1, 2)))
    res = run_engine(reqs, config, Staircase(), start_decoding=[0], record_batches=True)
    assert phases(res, "ZABC") == [
        "Zd Ap", "Zd Ad Bp", "Zd Bd", "Zd", "Zd", "Zd Ad Bd Cp", "Zd Ad Bd Cd", "Zd", "Zd", "Zd"]


def test_nested_wait_opens_the_fullest_gate_rather_than_idle():
    # No arrivals will ever meet segment 1's gate, so the waiting survivors are released.
    reqs = Requests.from_lists([0, 0], [2, 2], [3, 3])
    res = run(reqs, "nested_wait", segments=[1], thresholds=[1, 2])
    # B (not the oldest) waits at the entry of segment 2 while A finishes, then goes alone.
    assert phases(res, "AB") == ["Ap", "Ad Bp", "Ad Bd", "Ad", "Bd", "Bd"]


def test_explicit_decoders_and_stepper_choice():
    assert policy_class("wait").explicit_decoders and policy_class("nested_wait").explicit_decoders
    assert not policy_class("sarathi").explicit_decoders
    plan = StepPlan(5, [], decoders=["a", "b"])
    assert plan.decode == 2 and StepPlan(3, []).decoders is None
    assert make_policy("wait").name == "wait"


def test_practical_thresholds_match_the_reference_rule():
    """n_j = B*rho_j/(l'_j+1), rho_j = lambda_j/sum(lambda); rounded down (at least 1)."""
    # Classes x (3/4 of arrivals, output 10) and y (1/4, output 30), B = 88:
    # n_x = 88 * 0.75 / 11 = 6, n_y = 88 * 0.25 / 31 = 0.71 -> 1.
    n = practical_thresholds(np.array([3, 1]), np.array([11, 31]), 88.0)
    ref = wait_thresholds([PromptType(3.0, 5, 10), PromptType(1.0, 5, 30)], 88.0)
    assert n == pytest.approx([q.value for q in ref])
    reqs = Requests.from_lists(np.zeros(8), [5] * 8, [10] * 6 + [30] * 2,
                               class_id=[0] * 6 + [1] * 2, class_names=("x", "y"))
    policy = make_policy("wait")
    policy.prepare(make_config("wait", wait=WaitConfig(memory_budget=88)), reqs)
    assert policy.n == [6, 1]


def test_default_budget_fills_the_kv_cache():
    # 100 blocks of 16 = 1600 tokens; a request holds l + l'/2 = 40 + 20 = 60 on average, so
    # B = 1600/60 = 26.67 and n = 26.67/41 = 0.65 -> 1; with 1000 blocks n = 266.7/41 -> 6.
    reqs = Requests.from_lists(np.zeros(4), [40] * 4, [40] * 4)
    for blocks, n in ((100, 1), (1000, 6)):
        policy = make_policy("wait")
        policy.prepare(make_config("wait", kv=dict(blocks=blocks)), reqs)
        assert policy.n == [n]


def test_nested_practical_thresholds_from_output_survival():
    """rho_s = P(D > a_(s-1))/sum; L_s = E[min(D, a_s) - a_(s-1) | D > a_(s-1)] (+1 in s = 1)."""
    shares, iters = segment_shares(np.array([2, 4, 8, 8]), [4])
    assert shares == pytest.approx([1.0, 0.5])           # 2 of 4 outlive 4 tokens
    assert iters == pytest.approx([(2 + 4 + 4 + 4) / 4 + 1, 4.0])
    n = practical_thresholds(shares, iters, 60.0)
    assert n == pytest.approx([60 * (2 / 3) / 4.5, 60 * (1 / 3) / 4])


@pytest.mark.parametrize("kwargs, field", [
    (dict(thresholds="fast"), "engine.wait.thresholds"),
    (dict(thresholds=[1, 0]), "engine.wait.thresholds"),
    (dict(thresholds=[]), "engine.wait.thresholds"),
    (dict(memory_budget=-1), "engine.wait.memory_budget"),
    (dict(segments=[4, 4]), "engine.wait.segments"),
    (dict(segments=[0]), "engine.wait.segments"),
])
def test_wait_config_rejects_bad_values(kwargs, field):
    with pytest.raises(ConfigError) as e:
        WaitConfig(**kwargs)
    assert e.value.field == field and "\n" not in str(e.value)


def test_config_and_run_time_validation():
    with pytest.raises(ConfigError, match="segments apply to"):
        EngineConfig(batching="wait", wait=WaitConfig(segments=(4,)))
    reqs = Requests.from_lists([0, 0], [2, 2], [2, 2], class_id=[0, 1], class_names=("x", "y"))
    with pytest.raises(ConfigError, match="one per request class"):
        run(reqs, "wait", thresholds=[1])
    with pytest.raises(ConfigError, match="one per segment"):
        run(reqs, "nested_wait", thresholds=[1], segments=[3])
    with pytest.raises(ConfigError, match="KV cache is unlimited"):
        run_engine(reqs, EngineConfig(batching="wait"), Staircase())


def test_scenario_wait_table():
    base = {"run": {"requests": 5},
            "workload": {"arrival": {"kind": "poisson", "rate_per_s": 1},
                         "prompt_tokens": {"kind": "deterministic", "value": 8},
                         "output_tokens": {"kind": "deterministic", "value": 4}},
            "engine": {"batching": "nested_wait",
                       "wait": {"thresholds": [2, 1], "segments": [2], "memory_budget": 9}}}
    wait = scenario_from_dict(base).engine.wait
    assert wait == WaitConfig(thresholds=(2.0, 1.0), memory_budget=9, segments=(2,))
    base["engine"]["batching"] = "sarathi"
    with pytest.raises(ConfigError, match="applies to batching"):
        scenario_from_dict(base)
    base["engine"].update(batching="wait", wait={"threshold": 2})
    with pytest.raises(ConfigError, match="thresholds"):
        scenario_from_dict(base)


def _case(seed, batching):
    """A random memory-bound case from the engine tests, with 1-3 request classes and random
    WAIT parameters."""
    rng = np.random.default_rng(seed)
    requests, config, cost, until = random_case(rng, "sarathi")
    k = int(rng.integers(1, 4))
    requests = Requests.from_lists(requests.arrival_s, requests.prompt_tokens,
                                   requests.output_tokens, rng.integers(0, k, len(requests)),
                                   tuple("abc"[:k]))
    segments = tuple(sorted(set(rng.integers(1, 30, int(rng.integers(0, 3))).tolist())))
    groups = k if batching == "wait" else len(segments) + 1
    thresholds = "practical" if rng.random() < 0.5 else \
        tuple(float(x) for x in rng.uniform(0.5, 6, groups))
    wait = WaitConfig(thresholds=thresholds, memory_budget=float(rng.uniform(1, 60)),
                      segments=segments if batching == "nested_wait" else ())
    config = EngineConfig(batching=batching, token_budget=config.token_budget,
                          max_batch_size=config.max_batch_size, chunk_tokens=config.chunk_tokens,
                          kv=config.kv, wait=wait)
    return requests, config, cost, until


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), batching=st.sampled_from(["wait", "nested_wait"]),
       drain=st.booleans())
def test_kv_within_capacity_and_each_request_finishes_once(seed, batching, drain):
    requests, config, cost, until = _case(seed, batching)
    res = run_engine(requests, config, cost, until_s=None if drain else until,
                     check_invariants=True)
    req, it = res.requests, res.iterations
    assert (it.kv_blocks_used >= 0).all() and (it.kv_blocks_used <= config.kv.blocks).all()
    assert (it.batch_size <= config.max_batch_size).all()
    assert (np.diff(it.start_s) > 0).all()
    assert it.decode_tokens.sum() == req.generated_tokens.sum()
    assert (req.generated_tokens <= req.output_tokens).all()
    done = req[req.status == "finished"]
    assert (done.generated_tokens == done.output_tokens).all()
    assert done.finish_s.notna().all() and req[req.status != "finished"].finish_s.isna().all()
    if drain:
        assert set(req.status) <= {"finished", "rejected"} and not res.stopped_early
        assert it.prefill_tokens.sum() == (done.prompt_tokens + done.recomputed_tokens).sum()


def test_fast_replica_refuses_a_policy_that_names_its_decoders():
    """The fast replica only skips through "oldest k decoders" plans; building it directly for
    WAIT is a one-line ConfigError (run_engine picks the reference stepper instead)."""
    from servesim.engine.replica import Replica

    config = make_config("wait", token_budget=100, wait=WaitConfig(thresholds=[1]))
    with pytest.raises(ConfigError, match="engine.batching"):
        Replica(Requests.from_lists([0.0], [4], [2]), config, Staircase())
