"""Arrival processes: rates against counting-process theory, horizons, order, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from servesim.core.errors import ConfigError
from servesim.workload import arrivals
from servesim.workload.arrivals import (
    MMPP2,
    Deterministic,
    Explicit,
    GammaRenewal,
    Poisson,
    make_arrivals,
)


def mmpp2_idc(p: MMPP2) -> float:
    """Limiting index of dispersion of counts of an MMPP2: Var N(t) / E N(t) as t -> inf.

    Var N(t) ~ lambda t + 2 Var(rate) tau t, with Var(rate) = p q (r_on - r_off)**2 and
    correlation time tau = 1 / (1/mean_on + 1/mean_off).
    """
    q = 1 - p.p_on
    tau = 1 / (1 / p.mean_on_s + 1 / p.mean_off_s)
    return 1 + 2 * p.p_on * q * (p.rate_on_per_s - p.rate_off_per_s) ** 2 * tau / p.rate_per_s


# Each process with the asymptotic index of dispersion of its counts (Var N / E N): 1 for
# Poisson, cv**2 for a renewal process, mmpp2_idc for the MMPP.
PROCESSES = [
    (Poisson(12.5), 1.0),
    (GammaRenewal(8.0, 0.5), 0.25),
    (GammaRenewal(8.0, 3.0), 9.0),
    (MMPP2(20.0, 1.0, 2.0, 8.0), None),
    (MMPP2(0.0, 30.0, 1.0, 0.5), None),
]


@pytest.mark.parametrize("process,idc", PROCESSES, ids=repr)
def test_count_in_horizon_matches_rate(process, idc):
    # The count N(H) has mean rate * H and variance ~ idc * rate * H; allow 5 standard deviations.
    idc = mmpp2_idc(process) if idc is None else idc
    horizon = 20_000.0
    times = process.sample(np.random.default_rng(1), horizon_s=horizon)
    expected = process.rate_per_s * horizon
    assert abs(len(times) - expected) <= 5 * math.sqrt(idc * expected)


@pytest.mark.parametrize("process,_", PROCESSES, ids=repr)
def test_horizon_sample_is_sorted_positive_and_inside(process, _):
    times = process.sample(np.random.default_rng(2), horizon_s=500.0)
    assert times.dtype == np.float64
    assert len(times) > 0
    assert np.all(np.diff(times) >= 0)
    assert times[0] > 0
    assert times[-1] < 500.0


@pytest.mark.parametrize("process,_", PROCESSES, ids=repr)
def test_n_sample_has_exactly_n_sorted_and_is_reproducible(process, _):
    a = process.sample(np.random.default_rng(3), n=5000)
    b = process.sample(np.random.default_rng(3), n=5000)
    assert len(a) == 5000 and np.all(np.diff(a) >= 0) and a[0] > 0
    assert np.array_equal(a, b)
    assert len(process.sample(np.random.default_rng(3), n=0)) == 0


def test_horizon_in_many_chunks_matches_the_n_prefix(monkeypatch):
    # Force tiny chunks so the horizon loop runs many times; the gaps drawn are the same stream.
    monkeypatch.setattr(arrivals, "_MAX_CHUNK", 64)
    p = Poisson(10.0)
    by_horizon = p.sample(np.random.default_rng(4), horizon_s=200.0)
    by_n = p.sample(np.random.default_rng(4), n=len(by_horizon))
    assert len(by_horizon) > 10 * 64
    np.testing.assert_allclose(by_horizon, by_n, rtol=1e-12)
    m = MMPP2(20.0, 1.0, 2.0, 8.0)
    times = m.sample(np.random.default_rng(4), horizon_s=2000.0)
    assert np.all(np.diff(times) >= 0) and times[-1] < 2000.0


def test_poisson_gaps_are_exponential_not_clipped():
    # Mean and P(gap < 1% of the mean) of exponential gaps, each within 5 standard errors.
    times = Poisson(2.0).sample(np.random.default_rng(5), n=200_000)
    gaps = np.diff(np.concatenate([[0.0], times]))
    assert abs(gaps.mean() - 0.5) <= 5 * 0.5 / math.sqrt(len(gaps))
    p_small = 1 - math.exp(-0.01)
    frac = np.mean(gaps < 0.005)
    assert abs(frac - p_small) <= 5 * math.sqrt(p_small * (1 - p_small) / len(gaps))


def test_gamma_gaps_have_requested_cv():
    # E[gap^2] = (1 + cv^2) / rate^2; compare within 5 standard errors of the sample mean of gap^2.
    p = GammaRenewal(4.0, 2.0)
    gaps = np.diff(np.concatenate([[0.0], p.sample(np.random.default_rng(6), n=200_000)]))
    sq = gaps**2
    assert abs(sq.mean() - (1 + 4.0) / 16) <= 5 * sq.std() / math.sqrt(len(sq))
    assert p.scv == 4.0


def test_deterministic_times_are_exact():
    p = Deterministic(4.0)
    assert p.sample(None, n=3).tolist() == [0.25, 0.5, 0.75]
    assert p.sample(None, horizon_s=1.0).tolist() == [0.25, 0.5, 0.75]  # 1.0 is not < 1.0
    assert len(p.sample(None, horizon_s=1000.0)) == 3999
    assert p.scv == 0.0


def test_mmpp2_stationary_rate_and_scv():
    m = MMPP2(20.0, 1.0, 2.0, 8.0)
    assert m.p_on == pytest.approx(0.2)
    assert m.rate_per_s == pytest.approx(0.2 * 20 + 0.8 * 1)
    assert MMPP2(5.0, 5.0, 1.0, 3.0).scv == pytest.approx(1.0)  # equal rates: plain Poisson
    assert m.scv > 1.0


def test_mmpp2_interrupted_poisson_gap_moments():
    # With rate_off = 0 the MMPP is an interrupted Poisson process, a renewal process: its gaps
    # are i.i.d., so E[gap] and E[gap^2] can be checked within 5 standard errors.
    m = MMPP2(10.0, 0.0, 1.0, 2.0)
    gaps = np.diff(m.sample(np.random.default_rng(7), n=200_001))
    m1 = 1 / m.rate_per_s
    m2 = (1 + m.scv) * m1**2
    assert abs(gaps.mean() - m1) <= 5 * gaps.std() / math.sqrt(len(gaps))
    assert abs((gaps**2).mean() - m2) <= 5 * (gaps**2).std() / math.sqrt(len(gaps))


def test_explicit_list():
    p = Explicit((0.0, 1.0, 1.0, 4.0))
    assert p.sample(None, n=2).tolist() == [0.0, 1.0]
    assert p.sample(None, horizon_s=4.0).tolist() == [0.0, 1.0, 1.0]
    assert p.rate_per_s == pytest.approx(3 / 4)
    assert math.isnan(Explicit((2.0,)).rate_per_s)
    with pytest.raises(ConfigError) as info:
        p.sample(None, n=5)
    assert info.value.field == "run.requests" and "4 times" in str(info.value)


@pytest.mark.parametrize("n,horizon", [(None, None), (10, 5.0)])
def test_exactly_one_of_n_and_horizon(n, horizon):
    with pytest.raises(ConfigError, match="exactly one"):
        Poisson(1.0).sample(np.random.default_rng(0), n=n, horizon_s=horizon)


def test_bad_amounts():
    with pytest.raises(ConfigError, match="run.requests"):
        Poisson(1.0).sample(np.random.default_rng(0), n=-1)
    with pytest.raises(ConfigError, match="run.horizon_s"):
        Poisson(1.0).sample(np.random.default_rng(0), horizon_s=0.0)


@pytest.mark.parametrize("spec,cls", [
    ({"kind": "poisson", "rate_per_s": 12.5}, Poisson),
    ({"kind": "deterministic", "rate_per_s": 2}, Deterministic),
    ({"kind": "gamma", "rate_per_s": 2, "cv": 2.0}, GammaRenewal),
    ({"kind": "mmpp2", "rate_on_per_s": 9, "rate_off_per_s": 1, "mean_on_s": 2,
      "mean_off_s": 3}, MMPP2),
    ({"kind": "list", "times_s": [0.0, 0.5, 2.0]}, Explicit),
])
def test_make_arrivals_round_trips(spec, cls):
    p = make_arrivals(spec, "workload.arrival")
    assert isinstance(p, cls)
    assert make_arrivals(p.describe(), "workload.arrival") == p


@pytest.mark.parametrize("spec,field,fragment", [
    ({"kind": "poison", "rate_per_s": 1}, "workload.arrival.kind", "did you mean 'poisson'?"),
    ({"kind": "poisson", "rate": 1}, "workload.arrival.rate", "did you mean 'rate_per_s'?"),
    ({"kind": "poisson", "rate_per_s": -2}, "workload.arrival.rate_per_s", "> 0"),
    ({"kind": "poisson", "rate_per_s": 0}, "workload.arrival.rate_per_s", "> 0"),
    ({"kind": "poisson"}, "workload.arrival.rate_per_s", "required"),
    ({"kind": "gamma", "rate_per_s": 1, "cv": 0}, "workload.arrival.cv", "> 0"),
    ({"kind": "gamma", "rate_per_s": 1, "cv": 50}, "workload.arrival.cv", "<= 10"),
    ({"kind": "mmpp2", "rate_on_per_s": 0, "rate_off_per_s": 0, "mean_on_s": 1,
      "mean_off_s": 1}, "workload.arrival.rate_on_per_s", "at least one state"),
    ({"kind": "mmpp2", "rate_on_per_s": 1, "rate_off_per_s": -1, "mean_on_s": 1,
      "mean_off_s": 1}, "workload.arrival.rate_off_per_s", ">= 0"),
    ({"kind": "mmpp2", "rate_on_per_s": 1, "rate_off_per_s": 1, "mean_on_s": 0,
      "mean_off_s": 1}, "workload.arrival.mean_on_s", "> 0"),
    ({"kind": "list", "times_s": [0, 2, 1]}, "workload.arrival.times_s", "non-decreasing"),
    ({"kind": "list", "times_s": [-1, 2]}, "workload.arrival.times_s", ">= 0"),
    ({"kind": "list", "times_s": []}, "workload.arrival.times_s", "non-empty"),
    ({"kind": "list", "times_s": "0,1"}, "workload.arrival.times_s", "a list"),
])
def test_bad_arrival_specs_name_the_full_field(spec, field, fragment):
    with pytest.raises(ConfigError) as info:
        make_arrivals(spec, "workload.arrival")
    assert info.value.field == field
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
