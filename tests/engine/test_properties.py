"""Properties over random small scenarios and every batching system."""

import numpy as np
from engine_cases import SYSTEMS, random_case
from hypothesis import given, settings
from hypothesis import strategies as st

from servesim.engine.replica import run_engine


def simulate(seed, system, drain):
    requests, config, cost, until = random_case(np.random.default_rng(seed), system)
    run = run_engine(requests, config, cost, until_s=None if drain else until,
                     check_invariants=True)
    return run, config


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), system=st.sampled_from(SYSTEMS))
def test_drained_run_conserves_tokens_and_finishes_each_request_once(seed, system):
    run, _ = simulate(seed, system, drain=True)
    req, it = run.requests, run.iterations
    assert set(req.status) <= {"finished", "rejected"}
    done = req[req.status == "finished"]
    assert done.finish_s.notna().all() and req[req.status == "rejected"].finish_s.isna().all()
    assert (done.generated_tokens == done.output_tokens).all()
    assert it.decode_tokens.sum() == done.output_tokens.sum()
    assert it.prefill_tokens.sum() == (done.prompt_tokens + done.recomputed_tokens).sum()
    assert not run.stopped_early


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), system=st.sampled_from(SYSTEMS),
       drain=st.booleans())
def test_limits_order_and_latency_relations_hold(seed, system, drain):
    run, config = simulate(seed, system, drain)
    req, it = run.requests, run.iterations
    assert (it.kv_blocks_used >= 0).all() and (it.kv_blocks_used <= config.kv.blocks).all()
    assert (it.batch_size <= config.max_batch_size).all()
    tokens = it.prefill_tokens + it.decode_tokens
    # Only a lone whole re-prefill after a recompute may exceed the budget.
    over = tokens > config.token_budget
    assert ((it.batch_size[over] == 1) & (it.decode_tokens[over] == 0)).all()
    assert (np.diff(it.start_s) > 0).all()
    assert (it.start_s.iloc[:-1].to_numpy() + it.duration_s.iloc[:-1].to_numpy()
            <= it.start_s.iloc[1:].to_numpy()).all()
    assert it.decode_tokens.sum() == req.generated_tokens.sum()
    started = req[req.first_token_s.notna()]
    assert (started.arrival_s <= started.admitted_s).all()
    assert (started.admitted_s < started.first_token_s).all()
    done = req[req.finish_s.notna()]
    assert (done.first_token_s <= done.finish_s).all()   # TTFT <= E2E
