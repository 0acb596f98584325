"""Partial decodes on the fast replica: the parked frontier gives the reference's records.

Orca with a small token budget and no batch-size cap in overload runs many partial decodes:
prefill chunks take the budget first, so only the oldest few decoders take a token and the
youngest sit out. The fast replica parks those behind a frontier with one lazy shift of their
bases; these scenarios move the frontier both ways every few ticks, park and unpark preemption
victims, swap decoders back in behind a parked tail, and (with chunk caps) finish an older
prefill after younger ones, which dissolves the frontier.
"""

import numpy as np
import pandas as pd
from engine_cases import make_config, overload_case
from hypothesis import given, settings
from hypothesis import strategies as st

from servesim.engine.cost import Staircase
from servesim.engine.replica import Replica, run_engine
from servesim.workload.requests import Requests


class _Watched(Replica):
    """The fast replica checking its aggregates after every iteration and recording the
    largest number of decoders it held parked at once."""

    max_parked = 0

    def check_invariants(self) -> None:
        super().check_invariants()
        self.max_parked = max(self.max_parked, len(self.tail))


def fast_and_reference(requests, config, cost, until, cap=None):
    """Both steppers' runs; the fast one checks its invariants after every iteration."""
    fast = _Watched(requests, config, cost)
    fast.check = True
    ran = fast.run(until, None, cap)
    ref = run_engine(requests, config, cost, until_s=until, stepper="reference",
                     max_in_system=cap)
    assert ran.stop_reason == ref.stop_reason
    # Times accumulate in the same order on both, so equality is exact; rtol is a formality.
    pd.testing.assert_frame_equal(ran.requests, ref.requests, check_exact=False, rtol=1e-9)
    pd.testing.assert_frame_equal(ran.iterations, ref.iterations, check_exact=False, rtol=1e-9)
    assert ran.end_s == ref.end_s
    assert ran.stopped_early == ref.stopped_early
    return fast


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1),
       batching=st.sampled_from(["orca", "orca", "orca", "sarathi", "greedy"]),
       cap=st.one_of(st.none(), st.integers(5, 60)))
def test_partial_decodes_match_the_reference(seed, batching, cap):
    fast_and_reference(*overload_case(np.random.default_rng(seed), batching), cap=cap)


def test_overloaded_orca_parks_many_decoders_and_matches_the_reference():
    # Ample memory, no cap: the frontier must carry real work, not an empty tail.
    parked = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        n = 150
        requests = Requests.from_lists(np.cumsum(rng.exponential(0.002, n)),
                                       rng.integers(1, 30, n), rng.integers(20, 70, n))
        config = make_config("orca", token_budget=40, kv=dict(block_tokens=4))
        parked.append(fast_and_reference(requests, config, Staircase(), None).max_parked)
    assert min(parked) >= 20
