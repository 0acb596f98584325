"""The fast replica is exact under first_token = "prefill" too: the random scenarios of the
plain equivalence tests (every system but WAIT, memory pressure, recompute and swap, every victim
rule, chunk caps, context-dependent costs, decode stretches, stopped runs) and the overloaded
partial-decode cases, with the fast replica's invariants checked after every iteration."""

import dataclasses

import numpy as np
import pandas as pd
from engine_cases import SYSTEMS, make_config, overload_case, random_case
from hypothesis import given, settings
from hypothesis import strategies as st

from servesim.engine.cost import Affine
from servesim.engine.replica import Replica, run_engine
from servesim.workload.requests import Requests


def prefill(case):
    requests, config, cost, until = case
    return requests, dataclasses.replace(config, first_token="prefill"), cost, until


def assert_same(requests, config, cost, until, cap=None):
    fast = Replica(requests, config, cost)
    fast.check = True
    ran = fast.run(until, None, cap)
    ref = run_engine(requests, config, cost, until_s=until, stepper="reference",
                     max_in_system=cap)
    assert ran.stop_reason == ref.stop_reason
    pd.testing.assert_frame_equal(ran.requests, ref.requests, check_exact=False, rtol=1e-9)
    pd.testing.assert_frame_equal(ran.iterations, ref.iterations, check_exact=False, rtol=1e-9)
    assert ran.end_s == ref.end_s and ran.stopped_early == ref.stopped_early
    return ran


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), system=st.sampled_from(SYSTEMS),
       cap=st.one_of(st.none(), st.integers(1, 30)))
def test_fast_equals_reference_under_prefill(seed, system, cap):
    assert_same(*prefill(random_case(np.random.default_rng(seed), system)), cap=cap)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1),
       batching=st.sampled_from(["orca", "orca", "sarathi", "greedy"]),
       cap=st.one_of(st.none(), st.integers(5, 60)))
def test_partial_decodes_match_the_reference_under_prefill(seed, batching, cap):
    assert_same(*prefill(overload_case(np.random.default_rng(seed), batching)), cap=cap)


def test_long_decode_stretches_under_prefill():
    # Few arrivals, long outputs: most iterations go through the vectorised stretch.
    rng = np.random.default_rng(3)
    reqs = Requests.from_lists(np.cumsum(rng.exponential(2.0, 30)), rng.integers(10, 200, 30),
                               rng.integers(1, 900, 30))
    for blocks in (10**6, 400):
        config = make_config("sarathi", first_token="prefill",
                             kv=dict(block_tokens=16, blocks=blocks))
        run = assert_same(reqs, config, Affine(d0_s=0.01, d1_s=2e-6), None)
        assert (run.iterations.decode_tokens.sum()
                == run.requests.output_tokens.sum() - len(reqs)) or blocks == 400
