"""Degenerate cases where two formulas must agree exactly (to numerical integration error).

- An oracle predictor (y = x) makes SPJF = SJF, PSPJF = PSJF and SPRPT = SRPT (same rank).
- TRAIL on exact sizes: c = 1 is SRPT and c = 0 is SJF (rank x - a while a <= c x).
- FCFS is Pollaczek-Khinchine, E[T] = E[S] + lambda E[S^2] / (2 (1 - rho)), and M/M/1 gives
  1 / (mu - lambda).
- SPRPT with bounce (rank |y - a|) equals SPRPT when every prediction is at least the size
  (uniform predictions on [x, 2x]): a job's age never passes its prediction.
- SkipPredict's external costs add cheap + P(bit = 1) * expensive to E[T].
Tolerances: 1e-6 relative between closed forms (adaptive integration at 1e-9), 3e-3 where the
numeric SOAP evaluator is involved (its lattice error is below 1.5e-3 on these laws).
"""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servesim.theory.mg1 import (
    conditional_response_time,
    mean_response_time,
    price_of_misprediction,
    soap_mean_response_time,
)

LOGNORMAL = {"kind": "lognormal", "mean": 2.0, "cv": 1.2}


@pytest.mark.parametrize(("predicted", "exact"), [("spjf", "sjf"), ("pspjf", "psjf"),
                                                  ("sprpt", "srpt")])
def test_oracle_predictor_reduces_to_true_sizes(predicted, exact):
    lam = 0.35
    a = mean_response_time(predicted, LOGNORMAL, {"kind": "oracle"}, lam)
    b = mean_response_time(exact, LOGNORMAL, None, lam)
    assert a == pytest.approx(b, rel=1e-6)
    assert price_of_misprediction(predicted, LOGNORMAL, {"kind": "oracle"}, lam) == \
        pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize(("c", "other"), [(1.0, "srpt"), (0.0, "sjf")])
def test_trail_on_exact_sizes_endpoints(c, other):
    lam = 0.4
    limited = mean_response_time("trail", LOGNORMAL, None, lam, c=c)
    assert limited == pytest.approx(mean_response_time(other, LOGNORMAL, None, lam), rel=1e-6)
    numeric = soap_mean_response_time("trail", LOGNORMAL, None, lam, c=c)
    assert numeric == pytest.approx(limited, rel=3e-3)


@pytest.mark.parametrize("sizes", [
    {"kind": "lognormal", "mean": 1.5, "cv": 2.0},
    {"kind": "deterministic", "value": 2.0},
    {"kind": "uniform", "low": 0.5, "high": 3.0},
])
def test_fcfs_is_pollaczek_khinchine(sizes):
    from servesim.theory.mg1 import make_sizes

    law = make_sizes(sizes)
    lam = 0.6 / law.mean
    m1, m2 = law.mean, law.second_moment
    expected = m1 + lam * m2 / (2 * (1 - lam * m1))
    assert mean_response_time("fcfs", sizes, None, lam) == pytest.approx(expected, rel=1e-9)
    assert soap_mean_response_time("fcfs", sizes, None, lam) == pytest.approx(expected, rel=1e-3)


def test_mm1():
    assert mean_response_time("fcfs", {"kind": "exponential", "mean": 0.5}, None, 1.5) == \
        pytest.approx(1 / (2.0 - 1.5), rel=1e-9)


def test_deterministic_sizes_make_every_size_policy_fcfs():
    """All jobs tie under SJF/PSJF/SRPT with equal sizes; ties go FCFS (SOAP's rule)."""
    sizes, lam = {"kind": "deterministic", "value": 1.0}, 0.7
    fcfs = mean_response_time("fcfs", sizes, None, lam)
    for policy in ("sjf", "psjf"):
        assert mean_response_time(policy, sizes, None, lam) == pytest.approx(fcfs, rel=1e-12)


def test_bounce_equals_sprpt_when_predictions_never_fall_short():
    pred, lam = {"kind": "uniform", "alpha": 2.0, "beta": 1.0}, 0.3
    bounce = mean_response_time("sprpt_bounce", LOGNORMAL, pred, lam)
    assert bounce == pytest.approx(mean_response_time("sprpt", LOGNORMAL, pred, lam), rel=3e-3)


def test_skippredict_costs_add_per_prediction():
    pred, lam = {"kind": "lognormal", "sigma": 0.5}, 0.3
    base = dict(threshold=2.0, p_short_as_long=0.1, p_long_as_short=0.2)
    free = mean_response_time("skippredict", LOGNORMAL, pred, lam, **base)
    paid = mean_response_time("skippredict", LOGNORMAL, pred, lam, cheap_cost=0.05,
                              expensive_cost=0.4, **base)
    from servesim.theory.mg1 import make_sizes

    law = make_sizes(LOGNORMAL)
    p_long = 0.1 * law.cdf(2.0) + 0.8 * (1 - law.cdf(2.0))
    assert paid - free == pytest.approx(0.05 + 0.4 * p_long, rel=1e-6)


def test_conditional_response_time_of_fcfs_and_srpt():
    lam, x = 0.3, 1.7
    law = LOGNORMAL
    fcfs = conditional_response_time("fcfs", law, None, lam, x, x)
    assert fcfs == pytest.approx(mean_response_time("fcfs", law, None, lam) - 2.0 + x, rel=1e-9)
    srpt = conditional_response_time("srpt", law, None, lam, x, 0.0)
    sprpt = conditional_response_time("sprpt", law, {"kind": "oracle"}, lam, x, x)
    assert sprpt == pytest.approx(srpt, rel=1e-9)


@settings(max_examples=12, deadline=None)
@given(cv=st.floats(0.3, 3.0), rho=st.floats(0.1, 0.9))
def test_srpt_is_best_and_sjf_beats_fcfs(cv, rho):
    """Orderings that hold for every size law: SRPT minimises E[T] (so it beats SJF and PSJF),
    and SJF never loses to FCFS."""
    sizes = {"kind": "lognormal", "mean": 1.0, "cv": cv}
    t = {p: mean_response_time(p, sizes, None, rho) for p in ("fcfs", "sjf", "psjf", "srpt")}
    assert t["srpt"] <= min(t["sjf"], t["psjf"]) * (1 + 1e-9)
    assert t["sjf"] <= t["fcfs"] * (1 + 1e-9)
    assert math.isfinite(t["fcfs"])
