"""TRAIL in the theory: limited preemption on predictions (SOAP), its closed form on exact sizes.

Rank (the simulator's Trail ordering, without refinement): r(x, y, a) = y - a while c > 0 and
a <= c y (inclusive), then -inf (never preempted); c = 0 ranks y on arrival only (SPJF). With
y = x this is limited-preemption SRPT, whose SOAP-derived closed form is
    T(x) = lambda[E[S^2; S <= x] + x^2 P(x < S < x/(1-c)) + (1-c)^2 E[S^2; S >= x/(1-c)]]
           / (2(1 - rho(x))^2) + int_{(1-c)x}^x dt / (1 - rho(t)) + (1 - c) x.
Ends: c = 0 is SPJF; c >= 1 is SPRPT when predictions are >= 0 (a job past its prediction has a
negative rank no newcomer beats, and no waiting job can hold a negative rank).
Tolerance 3e-3 relative wherever SOAP is involved (its lattice error, docs/mg1.md).
"""

import numpy as np
import pytest

from servesim.core.errors import ConfigError
from servesim.theory.mg1 import (
    conditional_response_time,
    evaluate,
    mean_response_time,
    policy_rank,
    price_of_misprediction,
    soap_mean_response_time,
)

EXP = {"kind": "exponential", "mean": 1.0}
LOGNORMAL = {"kind": "lognormal", "mean": 1.0, "cv": 1.5}
PRED = {"kind": "exponential"}


def test_trail_reads_the_predictor_so_its_price_is_not_one():
    exact = evaluate("trail", EXP, None, 0.8, c=0.5)
    assert exact.method == "closed form" and "x/(1-c')" in exact.formula
    # Predictions that are off cost time: far beyond SOAP's error (the simulator agrees, see
    # tests/mg1/test_trail_on_predictions.py).
    assert price_of_misprediction("trail", EXP, PRED, 0.8, c=0.5) > 1.1


@pytest.mark.parametrize(("c", "other"), [(0.0, "spjf"), (1.0, "sprpt")])
def test_trail_on_predictions_ends_are_spjf_and_sprpt(c, other):
    trail = evaluate("trail", EXP, PRED, 0.7, c=c)
    assert trail.method == "SOAP numeric" and "a <= c y" in trail.formula
    assert trail.mean_response_time == pytest.approx(mean_response_time(other, EXP, PRED, 0.7),
                                                     rel=3e-3)


@pytest.mark.parametrize("c", [0.3, 0.8])
def test_on_exact_sizes_the_soap_path_equals_the_closed_form(c):
    closed = mean_response_time("trail", LOGNORMAL, None, 0.6, c=c)
    assert evaluate("trail", LOGNORMAL, {"kind": "oracle"}, 0.6, c=c).method == "closed form"
    numeric = soap_mean_response_time("trail", LOGNORMAL, {"kind": "oracle"}, 0.6, c=c)
    assert numeric == pytest.approx(closed, rel=3e-3)


def test_c_above_one_is_srpt_on_exact_sizes():
    srpt = mean_response_time("srpt", LOGNORMAL, None, 0.6)
    assert mean_response_time("trail", LOGNORMAL, None, 0.6, c=2.5) == pytest.approx(srpt,
                                                                                    rel=1e-9)


def test_rank_boundary_is_inclusive_and_c_zero_never_preempts():
    rank = policy_rank("trail", c=0.5)
    x, y = np.array([9.0, 9.0, 9.0]), np.array([4.0, 4.0, 4.0])
    got = rank(x, y, np.array([0.0, 2.0, np.nextafter(2.0, 3.0)]))
    assert got[0] == 4.0 and got[1] == 2.0 and got[2] == -np.inf
    never = policy_rank("trail", c=0.0)(x, y, np.array([0.0, 1e-12, 1.0]))
    assert never[0] == 4.0 and np.all(never[1:] == -np.inf)
    # A negative prediction (Gaussian noise) is never within c y: ranked on arrival only.
    neg = policy_rank("trail", c=0.5)(np.array([1.0, 1.0]), np.array([-1.0, -1.0]),
                                      np.array([0.0, 0.1]))
    assert neg[0] == -1.0 and neg[1] == -np.inf


def test_conditional_response_time_on_predictions_rises_with_the_prediction():
    t = conditional_response_time("trail", EXP, PRED, 0.5, 1.0, np.array([0.2, 1.0, 5.0]), c=0.5)
    assert np.all(np.diff(t) > 0)


def test_closed_method_with_predictions_and_simulator_only_params_are_refused():
    with pytest.raises(ConfigError, match="exact sizes only"):
        evaluate("trail", EXP, PRED, 0.5, method="closed")
    with pytest.raises(ConfigError, match="params.max_preemptions: got 2.*no preemption cap"):
        mean_response_time("trail", EXP, PRED, 0.5, max_preemptions=2)
    with pytest.raises(ConfigError, match="params.margin.*margin -> 0"):
        mean_response_time("sprpt_bounce", EXP, PRED, 0.5, margin=0.01)
    with pytest.raises(ConfigError, match="one_bit"):
        mean_response_time("trail", EXP, {"kind": "one_bit", "threshold": 1.0}, 0.5)
