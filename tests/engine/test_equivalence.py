"""Every fast path is exact: random scenarios give identical records on both steppers.

Random small scenarios cover every batching system, KV pressure with recompute and swap, every
victim rule, partial decodes, chunk caps, context-dependent costs (vectorised decode stretches)
and runs stopped mid-way.
"""

import numpy as np
import pandas as pd
from engine_cases import SYSTEMS, make_config, random_case
from hypothesis import given, settings
from hypothesis import strategies as st

from servesim.engine.replica import run_engine


def assert_same(requests, config, cost, until, cap=None):
    fast = run_engine(requests, config, cost, until_s=until, stepper="fast", max_in_system=cap)
    ref = run_engine(requests, config, cost, until_s=until, stepper="reference",
                     max_in_system=cap)
    assert fast.stop_reason == ref.stop_reason
    # Times accumulate in the same order on both, so equality is exact; rtol is a formality.
    pd.testing.assert_frame_equal(fast.requests, ref.requests, check_exact=False, rtol=1e-9)
    pd.testing.assert_frame_equal(fast.iterations, ref.iterations, check_exact=False, rtol=1e-9)
    assert fast.end_s == ref.end_s
    assert fast.stopped_early == ref.stopped_early


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), system=st.sampled_from(SYSTEMS))
def test_fast_equals_reference(seed, system):
    assert_same(*random_case(np.random.default_rng(seed), system))


def test_fast_equals_reference_on_long_decode_stretches():
    # Few arrivals, long outputs: most iterations go through the vectorised stretch.
    from servesim.engine.cost import Affine
    from servesim.workload.requests import Requests

    rng = np.random.default_rng(3)
    reqs = Requests.from_lists(np.cumsum(rng.exponential(2.0, 30)), rng.integers(10, 200, 30),
                               rng.integers(100, 900, 30))
    for blocks in (10**6, 400):
        config = make_config("sarathi", kv=dict(block_tokens=16, blocks=blocks))
        assert_same(reqs, config, Affine(d0_s=0.01, d1_s=2e-6), None)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), system=st.sampled_from(SYSTEMS),
       cap=st.integers(1, 30))
def test_fast_equals_reference_with_in_system_cap(seed, system, cap):
    assert_same(*random_case(np.random.default_rng(seed), system), cap=cap)
