"""Public API contract: names, one-line ConfigErrors (nearest name, impossible load), the price
of misprediction and the best 1-bit threshold (a minimum over thresholds of the two-class
priority formulas in docs/mg1.md)."""

import pytest

from servesim.core.errors import ConfigError
from servesim.theory.mg1 import (
    best_one_bit_threshold,
    mean_response_time,
    price_of_misprediction,
)

EXP = {"kind": "exponential", "mean": 1.0}


def test_unknown_policy_suggests_nearest():
    with pytest.raises(ConfigError, match="did you mean 'sprpt'"):
        mean_response_time("sprp", EXP, None, 0.5)


def test_load_at_or_above_one_is_impossible():
    with pytest.raises(ConfigError) as err:
        mean_response_time("fcfs", EXP, None, 1.0)
    assert "\n" not in str(err.value) and "impossible" in str(err.value)


def test_unknown_parameter_and_predictor_kind():
    with pytest.raises(ConfigError, match="params.cc"):
        mean_response_time("trail", EXP, None, 0.5, cc=0.3)
    with pytest.raises(ConfigError, match="did you mean 'lognormal'"):
        mean_response_time("spjf", EXP, {"kind": "lognorm", "sigma": 1}, 0.5)
    with pytest.raises(ConfigError, match="one_bit"):
        mean_response_time("spjf", EXP, {"kind": "one_bit", "threshold": 1}, 0.5)


def test_price_of_misprediction_grows_with_noise():
    prices = [price_of_misprediction("sprpt", EXP, {"kind": "lognormal", "sigma": s}, 0.7)
              for s in (0.1, 0.5, 1.5)]
    assert 1 < prices[0] < prices[1] < prices[2]


def test_gaussian_predictions_may_be_negative():
    value = mean_response_time("sprpt", EXP, {"kind": "gaussian", "mae": 0.5}, 0.5)
    exact = mean_response_time("srpt", EXP, None, 0.5)
    assert exact < value < mean_response_time("fcfs", EXP, None, 0.5)


@pytest.mark.parametrize("preemptive", [False, True])
def test_best_one_bit_threshold_is_a_minimum(preemptive):
    policy = "one_bit_preemptive" if preemptive else "one_bit"
    best = best_one_bit_threshold(EXP, None, 0.8, preemptive=preemptive)
    for t in (0.3, best.threshold * 0.8, best.threshold * 1.25, 3.0):
        assert best.mean_response_time <= mean_response_time(policy, EXP, None, 0.8,
                                                             threshold=t) + 1e-9
