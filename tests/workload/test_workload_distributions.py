"""Token-length distributions: exact moments against samples, support >= 1, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special

from servesim.core.errors import ConfigError, TraceError
from servesim.workload.distributions import (
    Deterministic,
    Empirical,
    Geometric,
    LogNormal,
    Poisson,
    UniformInt,
    ceil_lognormal_moments,
    make_token_dist,
)

N = 200_000


def assert_moments(dist, n: int = N, seed: int = 0) -> None:
    """Sample mean and variance agree with the reported moments within 5 standard errors.

    The mean's standard error is sqrt(variance / n). For the variance we average (x - mean)**2,
    an unbiased estimate since the mean is known; its standard error is the sample standard
    deviation of (x - mean)**2 over sqrt(n). Five standard errors make a false failure a
    ~6e-7 event per check (normal approximation), so the suite does not flake.
    """
    x = dist.sample(np.random.default_rng(seed), n)
    assert x.dtype == np.int64 and x.shape == (n,)
    assert x.min() >= 1
    se_mean = math.sqrt(dist.variance / n)
    assert abs(x.mean() - dist.mean) <= 5 * se_mean + 1e-12
    d2 = (x - dist.mean) ** 2
    se_var = d2.std() / math.sqrt(n)
    assert abs(d2.mean() - dist.variance) <= 5 * se_var + 1e-12
    assert dist.scv == pytest.approx(dist.variance / dist.mean**2)


@pytest.mark.parametrize("dist", [
    Deterministic(129),
    UniformInt(3, 17),
    UniformInt(5, 5),
    Geometric(8.0),
    Geometric(1.0),
    Poisson(20.0),
    Poisson(1.0),
    LogNormal(112, 1.0),
    LogNormal(3, 0.5),
    LogNormal(0.4, 2.0),
    Empirical((1, 2, 2, 9, 40)),
], ids=repr)
def test_sample_moments_match_reported_moments(dist):
    assert_moments(dist)


def test_closed_form_moments():
    assert (Deterministic(129).mean, Deterministic(129).variance, Deterministic(129).scv) == (
        129.0, 0.0, 0.0)
    assert UniformInt(3, 17).mean == 10.0
    assert UniformInt(3, 17).variance == pytest.approx((15**2 - 1) / 12)
    assert Geometric(8).variance == pytest.approx((1 - 1 / 8) * 64)
    assert Poisson(20).variance == 19.0
    e = Empirical((1, 2, 2, 9))
    assert e.mean == 3.5 and e.variance == pytest.approx(np.var([1, 2, 2, 9]))


def test_degenerate_cases_are_constant():
    rng = np.random.default_rng(3)
    assert np.all(Geometric(1.0).sample(rng, 100) == 1)
    assert np.all(Poisson(1.0).sample(rng, 100) == 1)
    assert np.all(UniformInt(5, 5).sample(rng, 100) == 5)


def _brute_ceil_lognormal(mu: float, sigma: float, k_max: int) -> tuple[float, float]:
    """E[ceil X] and E[ceil X^2] from the pmf P(ceil X = k) = F(k) - F(k - 1), k = 1..k_max."""
    k = np.arange(1, k_max + 1, dtype=np.float64)
    with np.errstate(divide="ignore"):
        cdf = special.ndtr((np.log(np.arange(0, k_max + 1)) - mu) / sigma)
    pmf = np.diff(cdf)
    return float(np.sum(k * pmf)), float(np.sum(k * k * pmf))


@pytest.mark.parametrize("mean,cv", [(112, 1.0), (3, 0.5), (0.4, 2.0), (50, 0.05)])
def test_lognormal_moments_match_brute_force_pmf(mean, cv):
    d = LogNormal(mean, cv)
    m1, m2 = _brute_ceil_lognormal(d.mu, d.sigma, 5_000_000)
    assert d.mean == pytest.approx(m1, rel=1e-9)
    assert d.variance + d.mean**2 == pytest.approx(m2, rel=1e-9)


@pytest.mark.parametrize("mean,cv", [(112, 1.0), (100, 100.0), (1e6, 5.0)])
def test_lognormal_tail_correction_agrees_with_exact_sum(mean, cv):
    # Truncating the exact sum early and adding the Euler-Maclaurin tail changes nothing.
    d = LogNormal(mean, cv)
    exact = ceil_lognormal_moments(d.mu, d.sigma)
    early = ceil_lognormal_moments(d.mu, d.sigma, max_terms=4096)
    assert early == pytest.approx(exact, rel=1e-10)


def test_lognormal_integer_mean_is_about_half_above_continuous():
    d = LogNormal(112, 1.0)
    assert d.mean_continuous == 112
    assert d.mean == pytest.approx(112.5, abs=1e-6)
    assert d.variance == pytest.approx(112**2 + 1 / 12, rel=1e-6)
    assert d.describe() == {"kind": "lognormal", "mean": 112.0, "cv": 1.0}


def test_same_seed_same_samples():
    for d in [UniformInt(1, 100), Geometric(5), Poisson(7), LogNormal(50, 2), Empirical((1, 5))]:
        a = d.sample(np.random.default_rng(42), 1000)
        b = d.sample(np.random.default_rng(42), 1000)
        assert np.array_equal(a, b)


@pytest.mark.parametrize("spec", [
    {"kind": "deterministic", "value": 129},
    {"kind": "uniform", "low": 2, "high": 9},
    {"kind": "geometric", "mean": 12.5},
    {"kind": "poisson", "mean": 30},
    {"kind": "lognormal", "mean": 112, "cv": 1.0},
    {"kind": "empirical", "values": [3, 1, 4, 1, 5]},
])
def test_make_token_dist_round_trips_through_describe(spec):
    d = make_token_dist(spec, "workload.output_tokens")
    again = make_token_dist(d.describe(), "workload.output_tokens")
    assert again == d
    assert d.describe()["kind"] == spec["kind"]


def test_empirical_from_file(tmp_path):
    path = tmp_path / "lengths.csv"
    path.write_text("id,out\n1,5\n2,7\n\n3,9\n")
    d = Empirical.from_file(path, "out")
    assert d.values == (5, 7, 9)
    again = make_token_dist(d.describe(), "f")
    assert again == d
    rel = make_token_dist({"kind": "empirical", "path": "lengths.csv", "column": "out"}, "f",
                          base_dir=tmp_path)
    assert rel.values == (5, 7, 9)


def test_empirical_from_file_bad_cell_names_line(tmp_path):
    path = tmp_path / "lengths.csv"
    path.write_text("id,out\n1,5\n2,x\n")
    with pytest.raises(TraceError, match=r":3:2: column 'out': got 'x', expected an integer >= 1"):
        Empirical.from_file(path, "out")


def _error(spec, field="workload.output_tokens") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        make_token_dist(spec, field)
    assert "\n" not in str(info.value)
    return info.value


@pytest.mark.parametrize("spec,field,fragment", [
    ({"kind": "lognormall", "mean": 1, "cv": 1}, "workload.output_tokens.kind",
     "did you mean 'lognormal'?"),
    ({"kind": "lognormal", "meen": 1, "cv": 1}, "workload.output_tokens.meen",
     "did you mean 'mean'?"),
    ({"kind": "lognormal", "mean": 100}, "workload.output_tokens.cv", "required"),
    ({"kind": "lognormal", "mean": 100, "cv": 0}, "workload.output_tokens.cv", "> 0"),
    ({"kind": "lognormal", "mean": 100, "cv": -1}, "workload.output_tokens.cv", "> 0"),
    ({"kind": "lognormal", "mean": -5, "cv": 1}, "workload.output_tokens.mean", "> 0"),
    ({"kind": "lognormal", "mean": "big", "cv": 1}, "workload.output_tokens.mean", "a number"),
    ({"kind": "geometric", "mean": 0.5}, "workload.output_tokens.mean", ">= 1"),
    ({"kind": "poisson", "mean": 0}, "workload.output_tokens.mean", ">= 1"),
    ({"kind": "deterministic", "value": 0}, "workload.output_tokens.value", ">= 1"),
    ({"kind": "deterministic", "value": 2.5}, "workload.output_tokens.value", "an integer"),
    ({"kind": "uniform", "low": 9, "high": 3}, "workload.output_tokens.high", ">= 9"),
    ({"kind": "empirical", "values": [1, 0]}, "workload.output_tokens.values", ">= 1"),
    ({"kind": "empirical", "values": []}, "workload.output_tokens.values", "non-empty"),
    ({"kind": "empirical"}, "workload.output_tokens.values", "either values"),
    ({"kind": "empirical", "values": [1], "path": "x.csv"}, "workload.output_tokens.values",
     "not both"),
    ({"kind": "empirical", "path": "nope.csv", "column": "c"}, "workload.output_tokens.path",
     "an existing file"),
    ({"mean": 3}, "workload.output_tokens.kind", "required"),
])
def test_bad_specs_name_the_full_field(spec, field, fragment):
    err = _error(spec)
    assert err.field == field
    assert fragment in str(err)


def test_not_a_table():
    err = _error(112)
    assert err.field == "workload.output_tokens"


def test_direct_construction_validates():
    with pytest.raises(ConfigError, match="lognormal.cv"):
        LogNormal(100, 0)
    with pytest.raises(ConfigError, match="uniform.high"):
        UniformInt(5, 4)
    with pytest.raises(ConfigError, match="empirical.values"):
        Empirical((1, True))


dists = st.one_of(
    st.integers(1, 10**9).map(Deterministic),
    st.tuples(st.integers(1, 10**6), st.integers(0, 10**6)).map(
        lambda t: UniformInt(t[0], t[0] + t[1])),
    st.floats(1, 1e9).map(Geometric),
    st.floats(1, 1e9).map(Poisson),
    st.tuples(st.floats(1e-3, 1e9), st.floats(1e-3, 100)).map(lambda t: LogNormal(*t)),
    st.lists(st.integers(1, 10**9), min_size=1, max_size=20).map(lambda v: Empirical(tuple(v))),
)


@settings(max_examples=150, deadline=None)
@given(dist=dists, seed=st.integers(0, 2**32 - 1))
def test_any_valid_distribution_samples_integers_at_least_one(dist, seed):
    x = dist.sample(np.random.default_rng(seed), 64)
    assert x.dtype == np.int64
    assert x.shape == (64,)
    assert np.all(x >= 1)
    assert dist.mean >= 1
    assert dist.variance >= 0


@pytest.mark.parametrize("dist,support", [
    (Deterministic(7), (7, 7)),
    (UniformInt(3, 9), (3, 9)),
    (Geometric(1.0), (1, 1)),
    (Geometric(5.0), (1, None)),
    (Poisson(1.0), (1, 1)),
    (Poisson(4.0), (1, None)),
    (LogNormal(100.0, 1.0), (1, None)),
    (Empirical((4, 2, 9)), (2, 9)),
])
def test_support_bounds_every_draw(dist, support) -> None:
    assert dist.support == support
    low, high = support
    draws = dist.sample(np.random.default_rng(0), 2000)
    assert draws.min() >= low and (high is None or draws.max() <= high)
