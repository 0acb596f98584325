"""Stability analysis: the individual tests on synthetic data, and Theorem 2 in miniature.

Theorem 2 check (reference "Theorem 2 boundary"): Sarathi, b_max = 512, deterministic
(m_p, m_d) = (100, 100), staircase defaults t(512) = 11.28 + 35.47 * 4 = 153.16 ms, so
mu* = 512 / 0.15316 = 3342.9 tokens/s and lambda* = mu* / 200 = 16.71 req/s. Poisson arrivals at
1.2 lambda* have the fluid slope max(0, 1.2 lambda* * 200 - mu*) = 0.2 mu* = 668.6 tokens/s
(0.6686 tokens/ms). The 99% t-CI of the W(t) slopes over 10 seeds (0..9) of 120 s must contain
it; the tolerance is that CI, nothing hand-tuned.
"""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from servesim.analysis import (
    backlog_slope,
    completion_ratio,
    envelope_growth,
    fluid_slope,
    horizon_doubling,
    slope_ci,
    study,
    verdict,
)
from servesim.analysis.stability import GRID_POINTS, step_values
from servesim.core.errors import ConfigError

MU = 512 / 0.15316
LAM = MU / 200
TABLE = {
    "run": {"horizon_s": 120.0},
    "workload": {"arrival": {"kind": "poisson", "rate_per_s": 1.0},
                 "prompt_tokens": {"kind": "deterministic", "value": 100},
                 "output_tokens": {"kind": "deterministic", "value": 100}},
    "engine": {"batching": "sarathi", "token_budget": 512},
}


def iterations_at(ends, backlog, waiting=None, running=None):
    """An iterations table whose iterations end at ``ends`` (duration 1e-6 s)."""
    ends = np.asarray(ends, dtype=float)
    n = len(ends)
    dur = np.full(n, 1e-6)
    return pd.DataFrame({
        "start_s": ends - dur, "duration_s": dur,
        "backlog_tokens": np.asarray(backlog, dtype=float),
        "waiting": np.zeros(n) if waiting is None else waiting,
        "running": np.zeros(n) if running is None else running,
    })


# -- backlog slope ------------------------------------------------------------------------------


def test_linear_trend_recovered_exactly():
    horizon = 50.0
    grid = np.linspace(horizon / 2, horizon, GRID_POINTS)
    ends = np.concatenate([[1.0, 10.0], grid - 1e-9])       # an iteration just before each point
    its = iterations_at(ends, 5.0 * ends + 7.0, waiting=np.round(2 * ends), running=ends * 0 + 3)
    assert backlog_slope(its, horizon) == pytest.approx(5.0, rel=1e-9)
    # N(t) = round(2t) + 3: slope 2 up to rounding
    assert backlog_slope(its, horizon, column="in_system") == pytest.approx(2.0, rel=1e-3)


def test_linear_trend_coarse_iterations():
    # iterations every 0.1 s with W = 3 * end: the step function's slope is 3 to O(d / H)
    ends = np.arange(0.1, 100.0001, 0.1)
    its = iterations_at(ends, 3.0 * ends)
    assert backlog_slope(its, 100.0) == pytest.approx(3.0, rel=1e-3)


def test_flat_series_has_zero_slope():
    ends = np.arange(0.05, 60.0, 0.05)
    its = iterations_at(ends, np.full(len(ends), 1234.0))
    assert backlog_slope(its, 60.0) == pytest.approx(0.0, abs=1e-9)


def test_step_function_conventions():
    its = iterations_at([2.0, 4.0], [10.0, 20.0], waiting=[1, 2], running=[3, 4])
    got = step_values(its, "backlog_tokens", np.array([0.0, 1.999, 2.0, 3.0, 4.0, 9.0]))
    assert got.tolist() == [0.0, 0.0, 10.0, 10.0, 20.0, 20.0]
    assert step_values(its, "in_system", np.array([3.0, 5.0])).tolist() == [4.0, 6.0]
    with pytest.raises(ConfigError):
        step_values(its, "nope", np.array([1.0]))
    with pytest.raises(ConfigError):
        backlog_slope(its, 0.0)


# -- fluid slope and CI -------------------------------------------------------------------------


def test_fluid_slope_by_hand():
    assert fluid_slope(20.0, 200.0, 3000.0) == pytest.approx(1000.0)   # 4000 - 3000
    assert fluid_slope(10.0, 200.0, 3000.0) == 0.0                      # below capacity
    assert fluid_slope(15.0, 200.0, 3000.0) == 0.0                      # exactly at capacity
    # Theorem 2 table: 1.2 lambda* -> 0.2 mu* = 668.58 tokens/s = 0.6686 tokens/ms
    assert fluid_slope(1.2 * LAM, 200.0, MU) == pytest.approx(0.2 * MU)
    assert fluid_slope(1.2 * LAM, 200.0, MU) / 1000 == pytest.approx(0.6686, abs=5e-5)
    assert fluid_slope(1.1 * LAM, 200.0, MU) / 1000 == pytest.approx(0.3343, abs=5e-5)


def test_slope_ci_by_hand():
    ci = slope_ci([1.0, 2.0, 3.0], confidence=0.95)
    half = stats.t.ppf(0.975, 2) / math.sqrt(3)
    assert (ci.mean, ci.sd, ci.n) == (2.0, 1.0, 3)
    assert ci.lo == pytest.approx(2 - half) and ci.hi == pytest.approx(2 + half)
    assert ci.contains(2.0) and not ci.contains(10.0)
    one = slope_ci([5.0])
    assert one.lo == -math.inf and one.hi == math.inf
    with pytest.raises(ConfigError):
        slope_ci([])


# -- completion ratio, horizon doubling, envelope -----------------------------------------------


def test_completion_ratio():
    req = pd.DataFrame({
        "arrival_s": [1.0, 2.0, 3.0, 6.0, 7.0, 20.0],
        "finish_s": [4.0, 5.0, math.nan, 9.0, math.nan, math.nan],
        "status": ["finished", "finished", "running", "finished", "rejected", "pending"],
    })
    assert completion_ratio(req) == pytest.approx(3 / 5)          # pending is not an arrival
    # window [5, 10]: finishing in it: ids 1 and 3; arriving in it: ids 3 and 4
    assert completion_ratio(req, 5.0, 10.0) == pytest.approx(1.0)
    assert math.isnan(completion_ratio(req.iloc[:0]))


def test_horizon_doubling():
    growing = horizon_doubling({60.0: 30.0, 120.0: 61.0, 240.0: 119.0})
    assert growing.growing and growing.verdict == "growing"
    assert growing.ratios == pytest.approx([61 / 30, 119 / 61])
    flat = horizon_doubling([(60.0, 80.0), (120.0, 88.0), (240.0, 90.0)])
    assert not flat.growing and flat.verdict == "not growing"
    sqrt_growth = horizon_doubling({t: math.sqrt(t) for t in (100.0, 200.0, 400.0)})
    assert sqrt_growth.growing                                       # ratio 1.41 > 1.25
    assert horizon_doubling({1.0: 0.0, 2.0: 0.0}).ratios == [1.0]
    with pytest.raises(ConfigError):
        horizon_doubling({1.0: 1.0})


def test_envelope_growth():
    t = np.linspace(0, 100, 20001)
    growing = envelope_growth(t, (10 + 0.5 * t) * (1 + np.sin(2 * np.pi * t / 10)),
                              period_hint=10.0)
    assert growing.growing and len(growing.peak_v) == 10
    # peaks at t = 2.5 + 10k, value 2 * (10 + 0.5 t): slope 1 per second
    assert growing.slope == pytest.approx(1.0, rel=1e-3)
    steady = envelope_growth(t, 50 * (1 + np.sin(2 * np.pi * t / 10)), period_hint=10.0)
    assert not steady.growing and steady.slope == pytest.approx(0.0, abs=1e-6)
    rng = np.random.default_rng(1)
    noisy = envelope_growth(t, 50 * (1 + np.sin(2 * np.pi * t / 10)) + rng.normal(0, 5, t.size))
    assert not noisy.growing
    with pytest.raises(ConfigError):
        envelope_growth([0.0, 1.0], [1.0, 2.0], windows=2)


# -- verdict rules ------------------------------------------------------------------------------


def test_verdict_rules():
    up = [100.0, 110.0, 90.0, 105.0]        # CI well above 0
    flat = [-5.0, 4.0, 1.0, -2.0]           # CI contains 0
    assert verdict(up, 0.90).state == "unstable"                      # slope > 0 and c < 0.98
    assert verdict(up, 0.99).state == "inconclusive"                  # slope > 0, all complete
    assert verdict(up, 0.99, fluid=101.0).state == "unstable"         # fluid slope in the CI
    assert verdict(up, 0.99, fluid=500.0).state == "inconclusive"     # fluid slope outside it
    assert verdict(flat, 0.99).state == "stable"
    assert verdict(flat, None, fluid=0.0).state == "stable"
    assert verdict([-50.0, -40.0, -45.0], 1.0).state == "stable"      # CI below 0
    assert verdict(flat, 0.90).state == "inconclusive"                # low completion, flat
    grows = horizon_doubling({1.0: 1.0, 2.0: 2.0, 4.0: 4.0})
    v = verdict(flat, 0.99, doubling=grows)
    assert v.state == "inconclusive" and any("horizon doubling" in e for e in v.evidence)
    v = verdict(up, 0.90, fluid=100.0, n_slopes=[1.0, 2.0, 1.5])
    assert v.slope_ci == (v.slope.lo, v.slope.hi) and v.n_slope is not None
    assert len(v.evidence) == 4


# -- Theorem 2 in miniature ---------------------------------------------------------------------


def test_theorem2_boundary_sarathi():
    seeds = list(range(10))
    df = study(TABLE, [0.8, 1.2], seeds, base_rate=LAM, horizon_s=120.0,
               mean_tokens_per_request=200.0, token_capacity=MU)
    below, above = df.iloc[0], df.iloc[1]
    assert below["fluid_slope"] == 0.0
    assert above["fluid_slope"] == pytest.approx(0.2 * MU)             # 668.6 tokens/s
    assert above["slope_lo"] <= above["fluid_slope"] <= above["slope_hi"]
    assert above["slope_lo"] > 0 and above["n_slope_lo"] > 0
    assert above["completion_ratio"] < 0.98                            # about 1/1.2
    assert below["slope_lo"] <= 0 and below["completion_ratio"] >= 0.98
    assert below["state"] == "stable"
    assert above["state"] == "unstable"
    assert list(df["arrival_rate"]) == pytest.approx([0.8 * LAM, 1.2 * LAM])


def test_study_needs_a_horizon():
    table = {**TABLE, "run": {"requests": 10}}
    with pytest.raises(ConfigError):
        study(table, [0.5], [0], base_rate=LAM)


def test_study_calls_a_capped_run_unstable():
    # FasterTransformer serves about 0.557 req/s on this workload; at 5 req/s the queue grows
    # past the cap of 50 within seconds, and the study reports the load unstable.
    from servesim.analysis.study import study

    table = {
        "run": {"horizon_s": 100.0, "max_in_system": 50},
        "workload": {"arrival": {"kind": "poisson", "rate_per_s": 1.0},
                     "prompt_tokens": {"kind": "deterministic", "value": 129},
                     "output_tokens": {"kind": "deterministic", "value": 112}},
        "engine": {"batching": "fastertransformer", "token_budget": 512},
    }
    frame = study(table, [5.0], [0, 1], base_rate=1.0)
    assert frame.state.tolist() == ["unstable"]
    assert "run.max_in_system" in frame.evidence[0]
