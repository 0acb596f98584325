"""vLLM v1 batching (``batching = "vllm_v1"``): each scheduling rule in a hand-computed step trace.

Every iteration costs T = 0.1 s (``Constant``), so the k-th iteration of a busy engine ends at
k T. Batches are written as request letter, phase and tokens: ``Ap3`` is a 3-token prefill chunk
of A, ``Bd1`` a decode token of B. The default output convention of vllm_v1 is
first_token = "prefill": the iteration that completes a prompt emits its first token.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from first_token_cases import T, check_tokens, in_steps, phases, random_case, run_trace
from servesim.core.errors import ConfigError
from servesim.engine.config import EngineConfig, KVConfig
from servesim.engine.cost import Constant
from servesim.engine.replica import Replica, run_engine
from servesim.policies import vllm_v1
from servesim.policies.batching import make_policy
from servesim.policies.vllm_v1 import VLLMv1
from servesim.workload.requests import Requests


def run(arrivals, prompts, outputs, stepper="fast", **engine):
    return run_trace(Requests.from_lists(arrivals, prompts, outputs), stepper,
                     batching="vllm_v1", **engine)


def test_registered_with_vllm_defaults():
    config = EngineConfig(batching="vllm_v1")
    assert isinstance(make_policy("vllm_v1"), VLLMv1)
    assert config.first_token == "prefill" and config.chunks and config.prompt_limit is None
    assert "vLLM 0.32" in vllm_v1.__doc__


def test_running_first_threshold_caps_both_chunks_and_budget_runs_out_in_order():
    """Budget 4, threshold 3, A and B prompts of 8, two output tokens each.
    1: both wait; A takes min(8, 3, 4) = 3 (the threshold caps a waiting chunk), B the 1 left.
    2: running in order: A 3 (capped by the threshold), B the 1 left; nothing else.
    3: A's last 2 complete its prompt and emit token 1 at 3T; B takes the 2 left.
    4: A decodes token 2 (finishes at 4T); B takes min(4, 3, 3) = 3.
    5: B's last token of prompt, token 1 at 5T. 6: B decodes token 2 and finishes."""
    res = run([0, 0], [8, 8], [2, 2], token_budget=4, chunk_tokens=3)
    assert phases(res) == ["Ap3 Bp1", "Ap3 Bp1", "Ap2 Bp2", "Ad1 Bp3", "Bp1", "Bd1"]
    assert in_steps(res, "first_token_s") == [3, 5]
    assert in_steps(res, "finish_s") == [4, 6]


def test_waiting_requests_fcfs_while_seats_last():
    """max_num_seqs = 2: C waits for a seat although the budget (10) has room. A and B emit
    token 1 at T (their prefill), 2 and 3 at 2T and 3T; C (one output token) is admitted at
    3T and finishes with its prefill at 4T."""
    res = run([0, 0, 0], [2, 2, 1], [3, 3, 1], token_budget=10, max_batch_size=2)
    assert phases(res) == ["Ap2 Bp2", "Ad1 Bd1", "Ad1 Bd1", "Cp1"]
    assert in_steps(res, "first_token_s") == [1, 1, 4]
    assert in_steps(res, "finish_s") == [3, 3, 4]
    assert list(res.iterations.running) == [2, 2, 0, 0]


def test_a_waiting_chunk_is_allocated_whole_or_blocks_the_queue():
    """4-token blocks, 3 blocks. A's 8-token prompt takes 2 blocks; B's 5 tokens need 2 blocks
    and only 1 is free: B is not shrunk to fit (vLLM allocates a chunk whole) and C, which
    would fit, waits behind it (head of line). At 2T A finishes and both are admitted."""
    res = run([0, 0, 0], [8, 5, 1], [2, 1, 1], token_budget=16,
              kv=dict(block_tokens=4, blocks=3))
    assert phases(res) == ["Ap8", "Ad1", "Bp5 Cp1"]
    assert in_steps(res, "finish_s") == [2, 3, 3]


def test_a_request_is_admitted_only_if_all_it_owes_fits():
    """4-token blocks, 4 blocks, threshold 8. A (prompt 8) takes 2 blocks. B's first chunk
    (8 tokens, 2 blocks) would fit the 2 left, but its whole 12-token prompt needs 3: B waits
    (vLLM's scheduler_reserve_full_isl). At T A decodes into a third block; it finishes at 2T.
    Then B is alone in the engine, so the threshold no longer applies: all 12 tokens at once,
    and its one output token with them at 3T."""
    res = run([0, 0], [8, 12], [2, 1], token_budget=16, chunk_tokens=8,
              kv=dict(block_tokens=4, blocks=4))
    assert phases(res) == ["Ap8", "Ad1", "Bp12"]
    assert in_steps(res, "finish_s") == [2, 3]


def test_watermark_applies_once_something_runs():
    """One-token blocks, 10 blocks, watermark 0.2 (2 blocks). A (prompt 7) enters the empty
    engine; B (prompt 2) would fit the 3 blocks left but not beside the watermark, so it waits
    until A finishes with its prefill at T."""
    res = run([0, 0], [7, 2], [1, 1], token_budget=16,
              kv=dict(block_tokens=1, blocks=10, watermark=0.2))
    assert phases(res) == ["Ap7", "Bp2"]
    assert in_steps(res, "finish_s") == [1, 2]


def test_preempted_request_goes_first_and_its_reprefill_emits_the_next_token():
    """One-token blocks, 6 blocks, threshold 2. A and B (prompt 2, 4 output tokens) prefill
    (4 blocks; token 1 at T) and decode (6 blocks; token 2 at 2T). At 2T both need a block and
    none is free: B, the last running request, is preempted by recompute (3 tokens dropped)
    and put first in the queue; A decodes alone. C arrives at 2.5T behind B; at 3T B's 4
    owed tokens need 4 blocks and 1 is free, and C (which would fit) waits behind B.
    A finishes at 4T. B re-prefills prompt + generated = 4 tokens in two chunks (C beside the
    first) and that re-prefill emits token 3 at 6T; token 4 at 7T."""
    res = run([0, 0, 2.5 * T], [2, 2, 1], [4, 4, 1], token_budget=16, chunk_tokens=2,
              kv=dict(block_tokens=1, blocks=6))
    assert phases(res) == ["Ap2 Bp2", "Ad1 Bd1", "Ad1", "Ad1", "Bp2 Cp1", "Bp2", "Bd1"]
    assert list(res.requests.preemptions) == [0, 1, 0]
    assert list(res.requests.recomputed_tokens) == [0, 3, 0]
    assert in_steps(res, "first_token_s") == [1, 1, 5]
    assert in_steps(res, "finish_s") == [4, 7, 5]
    gaps = res.requests.max_token_gap_s
    assert gaps[0] == pytest.approx(T) and gaps[1] == pytest.approx(4 * T)
    assert np.isnan(gaps[2])   # one token: no gap


def test_nothing_is_admitted_in_a_step_that_preempted():
    """first_token = "decode", one-token blocks, 7 blocks; A and B: prompt 2, 3 output tokens.
    After two steps they hold 6 blocks (token 1 at 2T). At 2T both need a block, 1 is free:
    B is preempted (3 blocks back). A's decode leaves 3 free, exactly what B's re-prefill
    (prompt + 1 generated) needs, yet B is not re-admitted in this step (as vLLM). At 3T
    A's next block leaves 2: B waits until A finishes at 4T, then re-prefills 3 tokens and
    decodes tokens 2 and 3 (6T, 7T)."""
    res = run([0, 0], [2, 2], [3, 3], token_budget=16, first_token="decode",
              kv=dict(block_tokens=1, blocks=7))
    assert phases(res) == ["Ap2 Bp2", "Ad1 Bd1", "Ad1", "Ad1", "Bp3", "Bd1", "Bd1"]
    assert in_steps(res, "first_token_s") == [2, 2]
    assert in_steps(res, "finish_s") == [4, 7]
    assert res.requests.max_token_gap_s[1] == pytest.approx(4 * T)


def test_a_running_prefill_that_cannot_grow_preempts_instead_of_shrinking():
    """4-token blocks, 4 blocks, budget 8. A (prompt 4) and B (prompt 12, one output token)
    start together (B's 12 tokens fit the 3 blocks left when it is admitted). At T A decodes
    (its 5th token needs a block) and B's next 7 tokens need 2 more blocks, 3 in all, with 2
    free: vLLM does not shrink B's chunk, it preempts B (the last running request, 4 tokens
    dropped). B comes back only when its whole 12 tokens fit again, after A finishes at 6T:
    8 + 4 tokens, finishing with its prefill at 8T."""
    res = run([0, 0], [4, 12], [6, 1], token_budget=8, kv=dict(block_tokens=4, blocks=4))
    assert phases(res) == ["Ap4 Bp4", "Ad1", "Ad1", "Ad1", "Ad1", "Ad1", "Bp8", "Bp4"]
    assert list(res.requests.preemptions) == [0, 1]
    assert list(res.requests.recomputed_tokens) == [0, 4]
    assert in_steps(res, "finish_s") == [6, 8]


def _view(running, waiting=(), budget=4, limit=1 << 30, free=100, max_batch=10, watermark=0):
    reqs = [SimpleNamespace(id=i, need=n, computed=c) for i, (n, c) in enumerate(running)]
    queue = [SimpleNamespace(id=len(reqs) + i, need=n, computed=0)
             for i, n in enumerate(waiting)]
    return SimpleNamespace(running=reqs, waiting=queue, budget=budget, chunk_limit=limit,
                           block_tokens=16, free_blocks=free, max_batch=max_batch,
                           n_running=len(reqs), n_waiting=len(queue),
                           watermark_blocks=watermark), reqs, queue


def test_budget_spent_mid_running_list_leaves_the_rest_for_the_next_step():
    """The plan on a view: running [A prefill owing 10, B decoder, C decoder], budget 4. A's
    chunk takes the whole budget, so B and C (behind it in the running list) wait this step,
    and so does the waiting request D. With A owing 4 and budget 6, A takes 4, B and C a
    token each, and D nothing (the budget is spent)."""
    view, (a, b, c), (d,) = _view([(10, 0), (0, 5), (0, 7)], waiting=[3], budget=4)
    plan = VLLMv1().plan(view)
    assert plan.decoders == [] and plan.chunks == [(a, 4)]
    view, (a, b, c), (d,) = _view([(4, 0), (0, 5), (0, 7)], waiting=[3], budget=6)
    plan = VLLMv1().plan(view)
    assert plan.decoders == [b, c] and plan.chunks == [(a, 4)]


def test_waiting_requests_are_not_admitted_when_running_ones_overflow_memory():
    """If the running requests' blocks already exceed the free ones (the engine will preempt),
    the plan admits nothing."""
    view, (a,), _ = _view([(0, 16)], waiting=[1], free=0)
    plan = VLLMv1().plan(view)
    assert plan.decoders == [a] and plan.chunks == []


def test_watermark_is_not_applied_to_the_first_admission():
    """An empty engine with 8 free blocks and a watermark of 2: a 7-block prompt enters (the
    other systems keep the watermark free for every admission)."""
    view, _, (a,) = _view([], waiting=[7 * 16], budget=1 << 20, free=8, watermark=2)
    assert VLLMv1().plan(view).chunks == [(a, 7 * 16)]
    view, _, _ = _view([(0, 5)], waiting=[16], budget=1 << 20, free=2, watermark=2)
    assert VLLMv1().plan(view).chunks == []   # 1 block + 2 > the 2 free, as one runs


def test_vllm_v1_refuses_swap_and_other_victims():
    with pytest.raises(ConfigError, match="recompute"):
        EngineConfig(batching="vllm_v1", kv=KVConfig(preemption="swap"))
    with pytest.raises(ConfigError, match="newest"):
        EngineConfig(batching="vllm_v1", kv=KVConfig(victim="most_blocks"))


def test_fast_replica_hands_vllm_v1_to_the_reference():
    config = EngineConfig(batching="vllm_v1", first_token="decode")
    with pytest.raises(ConfigError, match="reference"):
        Replica(Requests.from_lists([0], [4], [2]), config, Constant(T))
    res = run([0, 0], [8, 8], [2, 2], stepper="reference", token_budget=4, chunk_tokens=3)
    assert phases(res) == phases(run([0, 0], [8, 8], [2, 2], token_budget=4, chunk_tokens=3))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), first_token=st.sampled_from(["decode", "prefill"]),
       drain=st.booleans())
def test_vllm_v1_conserves_tokens_and_respects_every_limit(seed, first_token, drain):
    requests, config, cost, until = random_case(np.random.default_rng(seed), "vllm_v1",
                                                first_token, swap=False)
    res = run_engine(requests, config, cost, until_s=None if drain else until,
                     check_invariants=True, record_batches=True)
    req, it = res.requests, res.iterations
    assert (it.kv_blocks_used <= config.kv.blocks).all() and (it.kv_blocks_used >= 0).all()
    assert (it.batch_size <= config.max_batch_size).all()
    assert (it.running <= config.max_batch_size).all()
    # Chunked prefill is always on, so no iteration exceeds the budget.
    assert (it.prefill_tokens + it.decode_tokens <= config.token_budget).all()
    done = req[req.status == "finished"]
    assert (done.generated_tokens == done.output_tokens).all()
    assert done.finish_s.notna().all() and (done.first_token_s <= done.finish_s).all()
    assert req[req.status != "finished"].finish_s.isna().all()
    check_tokens(res, first_token)
    if drain:
        assert set(req.status) <= {"finished", "rejected"} and not res.stopped_early
