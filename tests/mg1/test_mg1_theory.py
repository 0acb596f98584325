"""M/G/1 simulation against servesim.theory.mg1 (closed forms and the SOAP evaluator).

Formulas checked (notation of docs/predictions.md; rho'_y is the load of jobs predicted below y):
- SPRPT: E[T(x,y)] = lambda[int_0^y int t^2 g + int_y^inf int_{z-y}^inf (t-(z-y))^2 g]
  / (2(1-rho'_y)^2) + int_0^x da / (1 - rho'_{(y-a)^+}), with Exp(1) sizes and y ~ Exp(mean x),
  and with lognormal sizes (mean 1, cv 1.5) and y = x exp(0.5 Z);
- 1-bit, bit b = 1{x > 1} flipped with probabilities 0.1 (short read long) and 0.2 (long read
  short): two-class priority, non-preemptive x + R/(1-rho_0) and x + R/((1-rho_0)(1-rho)),
  preemptive x + R_0/(1-rho_0) and R/((1-rho_0)(1-rho)) + x/(1-rho_0), R = lambda E[S^2]/2;
- TRAIL with c = 0.5 and exact sizes (rank x - a while a <= c x, then not preemptible), whose
  E[T] follows from SOAP.

CI method: independent replications, as in test_crosscheck.py: 10 seeds, 10,000 jobs each from
an empty system, the first 1,000 discarded, a t-based 99% interval that must hold the theory.
"""

import numpy as np
import pytest
from mg1_stats import ci, exp_sizes, replication_means

from servesim.engine.mg1 import simulate_mg1
from servesim.policies.ordering import make_ordering
from servesim.predictors import make_predictor

mg1 = pytest.importorskip("servesim.theory.mg1")
pytestmark = pytest.mark.slow  # replications for a CI: seconds per test

EXP = {"kind": "exponential", "mean": 1.0}
LOGNORMAL = {"kind": "lognormal", "mean": 1.0, "cv": 1.5}
ONE_BIT = {"kind": "one_bit", "threshold": 1.0, "p_short_as_long": 0.1, "p_long_as_short": 0.2}


def lognormal_sizes(rng, n):
    """Continuous lognormal with mean 1 and cv 1.5."""
    sigma2 = np.log1p(1.5**2)
    return rng.lognormal(-sigma2 / 2, np.sqrt(sigma2), n)


CASES = {  # id: (ordering, sizes sampler, size spec, predictor spec, theory policy, params, rate)
    "sprpt-exp": ("sprpt", exp_sizes, EXP, {"kind": "exponential"}, "sprpt", {}, 0.8),
    "one_bit": ("one_bit", exp_sizes, EXP, ONE_BIT, "one_bit", {}, 0.8),
    "one_bit_preemptive": ("one_bit_preemptive", exp_sizes, EXP, ONE_BIT,
                           "one_bit_preemptive", {}, 0.8),
    "trail-c0.5": ({"kind": "trail", "c": 0.5}, exp_sizes, EXP, {"kind": "oracle"},
                   "trail", {"c": 0.5}, 0.8),
    "sprpt-lognormal": ("sprpt", lognormal_sizes, LOGNORMAL, {"kind": "lognormal", "sigma": 0.5},
                        "sprpt", {}, 0.7),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_simulation_agrees_with_theory(case):
    order, sampler, size_spec, pred_spec, policy, params, rate = CASES[case]
    theory_pred = None if pred_spec["kind"] == "oracle" else pred_spec
    expected = mg1.mean_response_time(policy, size_spec, theory_pred, rate, **params)
    means = replication_means(make_ordering(order), rate, sampler,
                              predictor=make_predictor(pred_spec), n_jobs=10_000, warmup=1_000,
                              replications=10, seed0=2000)
    lo, hi = ci(means)
    assert lo <= expected <= hi, (lo, expected, hi)


def test_skippredict_with_external_costs_agrees_with_theory():
    """SkipPredict (cheap bit as above, expensive y ~ Exp(mean x) for bit-1 jobs), external costs
    0.05 per bit and 0.2 per expensive prediction: E[T] + E[cost] against the theory's bit 0:
    x + R_0/(1-rho_0), bit 1: SPRPT behind the bit-0 load, plus the costs. Same CI method."""
    rate = 0.8
    expected = mg1.mean_response_time(
        "skippredict", EXP, {"kind": "exponential"}, rate, threshold=1.0, p_short_as_long=0.1,
        p_long_as_short=0.2, cheap_cost=0.05, expensive_cost=0.2)
    cheap = make_predictor({**ONE_BIT, "cost": {"kind": "external", "value": 0.05}})
    full = make_predictor({"kind": "exponential", "cost": {"kind": "external", "value": 0.2}})
    means = []
    for r in range(10):
        res = simulate_mg1(make_ordering("skippredict"), rate, 10_000, exp_sizes,
                           predictor=full, bit_predictor=cheap, seed=3000 + r)
        means.append((res.response_s + res.prediction_cost)[1_000:].mean())
    lo, hi = ci(np.asarray(means))
    assert lo <= expected <= hi, (lo, expected, hi)
