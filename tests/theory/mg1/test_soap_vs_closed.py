"""Closed forms against the numeric SOAP evaluator (Scully, Harchol-Balter, Scheller-Wolf 2018).

Lognormal sizes (mean 1, cv 1.5) with lognormal multiplicative noise (sigma 0.5), rho = 0.7.
SOAP: E[T(x,y)] = lambda sum_i E[X_i^old[r]^2] / (2 (1 - rho_0^old[r]) (1 - rho^new[r]))
+ int_0^x da / (1 - rho^new[r_worst(a)]), r = r_worst(0), averaged over g(x, y).
Each closed form (docs/mg1.md) is a special case. Tolerance 3e-3 relative: the evaluator's
lattice and rank-table interpolation error, measured below 1.5e-3 on this and finer lattices.
"""

import numpy as np
import pytest

from servesim.theory.mg1 import Rank, mean_response_time, soap_mean_response_time

SIZES = {"kind": "lognormal", "mean": 1.0, "cv": 1.5}
NOISE = {"kind": "lognormal", "sigma": 0.5}
LAM = 0.7
POLICIES = [
    ("sjf", {}), ("psjf", {}), ("srpt", {}), ("spjf", {}), ("pspjf", {}), ("sprpt", {}),
    ("one_bit", {"threshold": 1.0}),
    ("one_bit_preemptive", {"threshold": 1.0}),
    ("skippredict", {"threshold": 1.0, "p_short_as_long": 0.1, "p_long_as_short": 0.1}),
]


@pytest.mark.parametrize(("policy", "params"), POLICIES, ids=[p for p, _ in POLICIES])
def test_closed_form_matches_soap(policy, params):
    closed = mean_response_time(policy, SIZES, NOISE, LAM, **params)
    numeric = soap_mean_response_time(policy, SIZES, NOISE, LAM, **params)
    assert numeric == pytest.approx(closed, rel=3e-3)


def test_one_bit_predictor_spec_matches_soap():
    bit = {"kind": "one_bit", "threshold": 0.8, "p_short_as_long": 0.2, "p_long_as_short": 0.1}
    for policy in ("one_bit", "one_bit_preemptive"):
        closed = mean_response_time(policy, SIZES, bit, LAM)
        assert soap_mean_response_time(policy, SIZES, bit, LAM) == pytest.approx(closed, rel=3e-3)


def test_custom_rank_callable_without_breaks():
    """A plain callable (no declared breaks, resolved on the age grid): SRPT written by hand."""
    numeric = soap_mean_response_time(lambda x, y, a: x - a, SIZES, None, 0.5)
    assert numeric == pytest.approx(mean_response_time("srpt", SIZES, None, 0.5), rel=3e-3)


def test_non_monotone_rank_with_declared_kink():
    """Rank |y - a| given as a Rank with its kink at a = y: with predictions that undershoot
    (y in [0.2 x, x]) the rank rises again before completion, so E[T] must differ from SPRPT's
    closed form by more than the evaluator's error (it equals it when y >= x, see
    test_special_cases)."""
    pred = {"kind": "uniform", "alpha": 1.0, "beta": 0.2}
    rank = Rank(lambda x, y, a: np.abs(y - a), lambda x, y: np.clip(y, 0, x),
                piecewise_linear=True)
    bounce = soap_mean_response_time(rank, SIZES, pred, 0.5)
    plain = mean_response_time("sprpt", SIZES, pred, 0.5)
    assert np.isfinite(bounce) and abs(bounce / plain - 1) > 1e-3
