"""TRAIL's preemption limit: preemptible iff c > 0 and age <= c * the *initial* prediction.

One convention for the ordering, the M/G/1 mode and the token engine (which evaluates the same
segment at integer ages), checked on the segment itself, on hand-built M/G/1 traces and against
the limited-preemption closed form.
"""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mg1_stats import ci, exp_sizes, replication_means

from servesim.engine.mg1 import run_mg1
from servesim.policies.ordering import Trail, make_ordering
from servesim.predictors import make_predictor

mg1 = pytest.importorskip("servesim.theory.mg1")


def test_an_age_exactly_at_the_limit_is_preemptible():
    s = Trail(c=0.5).segment(9.0, 4.0, 2.0, 0.0)
    assert s.preemptible and (s.value, s.slope) == (2.0, -1.0)
    assert s.until_age == math.nextafter(2.0, math.inf)
    after = Trail(c=0.5).segment(9.0, 4.0, s.until_age, 0.0)
    assert not after.preemptible and after.until_age == math.inf


def test_the_token_engine_reads_the_same_last_preemptible_count():
    # The ordered stepper re-ranks at generated = ceil(until_age): with c * y0 = 2 the request
    # is preemptible at 0, 1 and 2 generated tokens, as with c * y0 = 2.5.
    for pred in (4.0, 5.0):
        s = Trail(c=0.5).segment(9.0, pred, 0.0, 0.0)
        assert math.ceil(s.until_age) == 3


def test_c_zero_is_never_preemptible():
    o = Trail(c=0.0)
    for pred, initial in ((5.0, None), (5.0, 7.0), (0.0, 0.0)):
        s = o.segment(9.0, pred, 0.0, 0.0, initial_pred=initial)
        assert not s.preemptible and s.until_age == math.inf


def test_the_limit_reads_the_initial_prediction_and_the_rank_the_current_one():
    o = Trail(c=0.5)
    # Refined down from 12 to 10: age 5.5 is within 0.5 * 12 but not 0.5 * 10.
    s = o.segment(9.0, 10.0, 5.5, 0.0, initial_pred=12.0)
    assert s.preemptible and s.value == 4.5
    assert not o.segment(9.0, 10.0, 5.5, 0.0).preemptible
    # Refined up from 12 to 14: age 6.5 is within 0.5 * 14 but past 0.5 * 12.
    s = o.segment(9.0, 14.0, 6.5, 0.0, initial_pred=12.0)
    assert not s.preemptible and s.value == 7.5
    aged = make_ordering({"kind": "aging", "base": {"kind": "trail", "c": 0.5}, "wait_s": 1})
    assert aged.segment(9.0, 10.0, 5.5, 0.0, initial_pred=12.0).preemptible
    # The victim rule reads initial predictions too: job 1 (refined to 30, initial 8) is past
    # 0.5 * 8, so job 0 is the only preemptible one.
    assert o.victim([9, 9], [6, 30], [1, 5], [0, 1], initial_preds=[6, 8]) == 0
    assert o.victim([9, 9], [6, 30], [1, 5], [0, 1]) == 1


@given(c=st.floats(0, 2), y0=st.floats(-10, 100), pred=st.floats(-10, 100),
       age=st.floats(0, 200), preemptions=st.integers(0, 3))
def test_preemptible_iff_c_positive_and_age_within_c_times_initial(c, y0, pred, age,
                                                                   preemptions):
    o = Trail(c=c, max_preemptions=2)
    s = o.segment(1.0, pred, age, 0.0, preemptions=preemptions, initial_pred=y0)
    assert s.preemptible == (c > 0 and age <= c * y0 and preemptions < 2)
    assert s.rank_after(0.0) == (0, pred - age)
    if s.preemptible:
        # The piece [age, until_age) holds exactly the ages still within the limit.
        assert age < s.until_age and math.nextafter(s.until_age, -math.inf) <= c * y0


def finish(order, arrival, size, pred):
    r = run_mg1(make_ordering(order), arrival, size, pred)
    return list(r.finish_s), list(r.preemptions)


def test_mg1_arrival_exactly_at_the_limit_preempts():
    # Job 0 (size 4, predicted 4, c = 0.5) has age 2 = 0.5 * 4 when job 1 arrives at t = 2.
    trail = {"kind": "trail", "c": 0.5}
    assert finish(trail, [0, 2], [4, 1], [4, 1]) == ([5, 3], [1, 0])
    assert finish(trail, [0, 2.25], [4, 1], [4, 1]) == ([4, 5], [0, 0])


def test_mg1_c_zero_does_not_preempt_even_at_age_zero():
    # Two arrivals at t = 0: job 0 starts, and job 1 (shorter) arrives at its age 0.
    assert finish({"kind": "trail", "c": 0}, [0, 0], [3, 1], [3, 1]) == ([3, 4], [0, 0])
    assert finish({"kind": "trail", "c": 0.5}, [0, 0], [3, 1], [3, 1]) == ([4, 1], [1, 0])


@pytest.mark.slow
@pytest.mark.parametrize("c", [0.0, 0.5, 1.0])
def test_mg1_trail_agrees_with_the_limited_preemption_closed_form(c):
    """Exact sizes (oracle), Exp(1) sizes, lambda = 0.8. Rank x - a, preemptible while
    a <= c x (a single age: the same as a < c x in continuous time); SOAP gives
    E[T(x)] = lambda [E[S^2; S < x] + x^2 P(x < S < x/(1-c)) + (1-c)^2 E[S^2; S > x/(1-c)]]
    / (2 (1 - rho(x))^2) + int_{(1-c)x}^x dt / (1 - rho(t)) + (1-c) x,
    which is SJF's x + lambda E[S^2] / (2 (1 - rho(x))^2) at c = 0 and SRPT's at c = 1.
    CI: 8 independent replications of 10,000 jobs from an empty system, the first 1,000
    discarded, a t-based 99% interval that must hold the theory."""
    expected = mg1.mean_response_time("trail", {"kind": "exponential", "mean": 1.0},
                                      None, 0.8, c=c)
    means = replication_means(make_ordering({"kind": "trail", "c": c}), 0.8, exp_sizes,
                              predictor=make_predictor({"kind": "oracle"}), n_jobs=10_000,
                              warmup=1_000, replications=8, seed0=5000)
    lo, hi = ci(means)
    assert lo <= expected <= hi, (lo, expected, hi)


def test_mg1_closed_form_ends_are_sjf_and_srpt():
    """The closed form's ends: trail on exact sizes is SJF at c = 0, SRPT at c = 1."""
    exp = {"kind": "exponential", "mean": 1.0}
    for c, policy in ((0.0, "sjf"), (1.0, "srpt")):
        got = mg1.mean_response_time("trail", exp, None, 0.8, c=c)
        assert got == pytest.approx(mg1.mean_response_time(policy, exp, None, 0.8), rel=1e-6)
