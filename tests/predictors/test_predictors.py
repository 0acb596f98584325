"""Predictors: distributional checks against the laws each spec names, and spec errors.

Tolerances are 99.9% normal-approximation intervals of the sample statistic (n = 200,000), so a
correct predictor fails a check with probability about 1e-3 per seed; the seeds are fixed.
"""

import math

import numpy as np
import pytest

from servesim.core.errors import ConfigError
from servesim.core.rng import Streams
from servesim.predictors import PredictionCost, make_predictor

N = 200_000
Z = 3.29  # two-sided 99.9% normal quantile


def sizes(seed=0, n=N):
    return Streams(seed).get("sizes").standard_exponential(n) * 100.0


def within(sample, expected):
    half = Z * sample.std(ddof=1) / math.sqrt(sample.size)
    assert abs(sample.mean() - expected) <= half, (sample.mean(), expected, half)


def test_oracle_returns_the_truth():
    x = sizes()
    assert np.array_equal(make_predictor({"kind": "oracle"}).predict(x), x)


def test_exponential_prediction_has_mean_equal_to_size():
    """y ~ Exp(mean x): E[y / x] = 1 and E[y] = E[x]."""
    x = sizes()
    y = make_predictor({"kind": "exponential"}, seed=1).predict(x)
    within(y / x, 1.0)
    within(y - x, 0.0)


def test_lognormal_log_ratio_is_normal_with_sigma():
    """ln(y / x) = sigma Z: mean 0, E[(ln y/x)^2] = sigma^2."""
    x = sizes()
    r = np.log(make_predictor({"kind": "lognormal", "sigma": 0.7}, seed=2).predict(x) / x)
    within(r, 0.0)
    within(r**2, 0.49)


def test_uniform_ratio_stays_in_bounds_with_midpoint_mean():
    x = sizes()
    r = make_predictor({"kind": "uniform", "alpha": 2.0, "beta": 0.5}, seed=3).predict(x) / x
    assert r.min() >= 0.5 and r.max() <= 2.0
    within(r, 1.25)


def test_gaussian_mean_absolute_error_is_mae():
    """y = x + N(0, s^2), s = mae sqrt(pi/2): E|y - x| = mae; negatives are kept, not clipped."""
    x = sizes()
    y = make_predictor({"kind": "gaussian", "mae": 40.0}, seed=4).predict(x)
    within(np.abs(y - x), 40.0)
    assert (y < 0).any()


def test_binned_confusion_rate_and_neighbour_reports():
    edges = [0, 50, 100, 200, 400]
    p = make_predictor({"kind": "binned", "edges": edges, "confusion": 0.3, "report": "index"},
                       seed=5)
    x = sizes()
    true_bin = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, 3)
    got = p.predict(x).astype(int)
    wrong = got != true_bin
    within(wrong.astype(float), 0.3)
    assert np.all(np.abs(got - true_bin)[wrong] == 1)


def test_binned_uniform_confusion_reaches_far_bins_and_midpoints():
    edges = [0, 50, 100, 200, 400]
    p = make_predictor({"kind": "binned", "edges": edges, "confusion": 0.3, "other": "uniform"},
                       seed=6)
    x = sizes()
    y = p.predict(x)
    assert set(np.unique(y)) <= {25.0, 75.0, 150.0, 300.0}
    true_mid = np.array([25.0, 75.0, 150.0, 300.0])[
        np.clip(np.searchsorted(edges, x, side="right") - 1, 0, 3)]
    within((y != true_mid).astype(float), 0.3)
    # Uniform over the 3 other bins: a bin-0 job misreported lands on bin 3 a third of the time.
    far = (true_mid == 25.0) & (y != 25.0)
    within((y[far] == 300.0).astype(float), 1 / 3)


def test_one_bit_error_rates():
    x = sizes()
    p = make_predictor({"kind": "one_bit", "threshold": 100.0, "p_short_as_long": 0.1,
                        "p_long_as_short": 0.25}, seed=7)
    b = p.predict(x)
    assert set(np.unique(b)) <= {0.0, 1.0}
    within(b[x <= 100.0], 0.1)
    within(1.0 - b[x > 100.0], 0.25)


def test_same_seed_same_predictions_and_rng_override():
    x = sizes(n=1000)
    spec = {"kind": "lognormal", "sigma": 1.0}
    assert np.array_equal(make_predictor(spec, seed=3).predict(x),
                          make_predictor(spec, seed=3).predict(x))
    assert not np.array_equal(make_predictor(spec, seed=3).predict(x),
                              make_predictor(spec, seed=4).predict(x))
    a = make_predictor(spec).predict(x, rng=np.random.default_rng(9))
    b = make_predictor(spec, seed=77).predict(x, rng=np.random.default_rng(9))
    assert np.array_equal(a, b)


def test_cost_is_parsed():
    p = make_predictor({"kind": "oracle", "cost": {"kind": "server_time", "seconds": 0.5}})
    assert p.cost == PredictionCost("server_time", 0.5)
    q = make_predictor({"kind": "exponential", "cost": {"kind": "external", "value": 2}})
    assert q.cost.describe() == {"kind": "external", "value": 2.0}


@pytest.mark.parametrize("spec, match", [
    ({"kind": "lognorml", "sigma": 1}, r"policy\.predictor\.kind: .*did you mean 'lognormal'"),
    ({"kind": "lognormal", "sigam": 1}, r"policy\.predictor\.sigam: .*did you mean 'sigma'"),
    ({"kind": "lognormal"}, r"policy\.predictor\.sigma: got None"),
    ({"kind": "gaussian", "mae": -1}, r"policy\.predictor\.mae: got -1"),
    ({"kind": "uniform", "alpha": 1, "beta": 2}, r"policy\.predictor\.beta: got 2"),
    ({"kind": "uniform", "alpha": 1, "beta": 1}, r"policy\.predictor\.beta: got 1"),
    ({"kind": "binned", "edges": [0, 5, 5], "confusion": 0.1}, r"policy\.predictor\.edges"),
    ({"kind": "binned", "edges": [0, 5], "confusion": 1.5}, r"policy\.predictor\.confusion"),
    ({"kind": "binned", "edges": [0, 5], "confusion": 0, "other": "neighbor"},
     r"did you mean 'neighbour'"),
    ({"kind": "one_bit", "threshold": 1, "p_short_as_long": 0.1}, r"p_long_as_short"),
    ({"kind": "trail", "bins": [0, 10], "refine_every": 0}, r"refine_every: got 0"),
    ({"kind": "prompt", "model": "linaer"}, r"did you mean 'linear'"),
    ({"kind": "oracle", "cost": {"kind": "server", "seconds": 1}}, r"did you mean 'server_time'"),
    ({"kind": "oracle", "cost": {"kind": "external", "seconds": 1}}, r"cost\.seconds"),
    ("oracle", r"policy\.predictor: got 'oracle', expected a table"),
])
def test_bad_specs_give_one_line_errors(spec, match):
    with pytest.raises(ConfigError, match=match) as info:
        make_predictor(spec)
    assert "\n" not in str(info.value)


def test_public_surface():
    import servesim.predictors as pkg

    assert set(pkg.__all__) == {
        "PREDICTORS", "Binned", "ExponentialNoise", "GaussianNoise", "LogNormalNoise", "OneBit",
        "Oracle", "PredictionCost", "Predictor", "PromptRegression", "Trail", "TrailState",
        "UniformNoise", "fit_prompt_spec", "load_alpacaeval", "make_predictor"}
    assert set(pkg.PREDICTORS) == {"oracle", "lognormal", "exponential", "uniform", "gaussian",
                                   "binned", "one_bit", "prompt", "trail", "learned",
                                   "table"}
    for name in pkg.__all__:
        assert getattr(pkg, name) is not None


def test_uniform_beta_zero_agrees_with_the_theory():
    """Sampler and theory accept the same uniform range 0 <= beta < alpha: with beta = 0 the
    ratio y / x is U[0, alpha], and the theory's conditional CDF at y = alpha x / 2 is 1/2."""
    from servesim.theory.mg1.predictors import make_predictor as predictor_model

    x = np.full(20_000, 3.0)
    r = make_predictor({"kind": "uniform", "alpha": 2.0, "beta": 0.0}, seed=5).predict(x) / x
    assert r.min() >= 0.0 and r.max() <= 2.0
    model = predictor_model({"kind": "uniform", "alpha": 2.0, "beta": 0.0})
    assert float(np.asarray(model.cdf(np.array([3.0]), np.array([3.0])))[0]) == 0.5
