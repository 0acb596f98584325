"""Stability analysis of simulation runs: is the system keeping up, or is its backlog growing?

The tests follow the reference ("Detecting stability from a run"), each usable on its own:

- ``backlog_slope``: least-squares slope of W(t) (unprocessed tokens) or N(t) (requests in the
  system) over the second half of a run; ``slope_ci`` turns per-seed slopes into a t-based CI.
- ``batch_means_slope``: one run's slope over the second half with a batch-means standard
  error, for a single-run test of growth.
- ``fluid_slope``: the fluid oracle max(0, lambda*(m_p + m_d) - mu*), tokens/s (Theorem 2).
- ``completion_ratio``: completed / arrived, optionally within a time window.
- ``horizon_doubling``: do mean numbers in system grow as the horizon doubles?
- ``envelope_growth``: do the peaks of successive cycles grow (oscillating networks)?
- ``verdict``: combines them into stable / unstable / inconclusive with the evidence.
- ``study``: runs a scenario at several loads and seeds and tabulates a verdict per load.

The exact rules are stated in each docstring and in ``docs/stability.md``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from servesim.core.errors import ConfigError

__all__ = [
    "COMPLETION_EPS",
    "DOUBLING_TOL",
    "ENVELOPE_REL_TOL",
    "GRID_POINTS",
    "DoublingResult",
    "EnvelopeResult",
    "SlopeCI",
    "TrendTest",
    "Verdict",
    "backlog_slope",
    "batch_means_slope",
    "completion_ratio",
    "envelope_growth",
    "fluid_slope",
    "horizon_doubling",
    "slope_ci",
    "step_values",
    "verdict",
    "window_counts",
]

GRID_POINTS = 1000
"""Points of the regular grid on which the second half of the horizon is sampled."""

COMPLETION_EPS = 0.02
"""epsilon of the completion-ratio test: a ratio below 1 - epsilon means overload."""

DOUBLING_TOL = 0.25
"""tol of the horizon-doubling test: growing if every successive ratio of means > 1 + tol."""

ENVELOPE_REL_TOL = 0.10
"""Envelope growth must add at least this fraction of the mean peak over the span."""


# -- backlog slope ------------------------------------------------------------------------------


def step_values(iterations: pd.DataFrame, column: str, times: np.ndarray) -> np.ndarray:
    """Sample an iteration series as a step function at ``times``.

    The value at time t is ``column`` after the last iteration that *ended* at or before t
    (end = start_s + duration_s); before any iteration has ended it is 0. ``column`` may be
    ``"in_system"``, meaning waiting + running.
    """
    times = np.asarray(times, dtype=float)
    if len(iterations) == 0:
        return np.zeros_like(times)
    ends = (iterations["start_s"] + iterations["duration_s"]).to_numpy(dtype=float)
    if column == "in_system":
        values = (iterations["waiting"] + iterations["running"]).to_numpy(dtype=float)
    else:
        if column not in iterations.columns:
            raise ConfigError("column", column,
                              "an iterations column (e.g. backlog_tokens) or 'in_system'")
        values = iterations[column].to_numpy(dtype=float)
    order = np.argsort(ends, kind="stable")
    ends, values = ends[order], values[order]
    idx = np.searchsorted(ends, times, side="right") - 1
    out = np.zeros_like(times)
    have = idx >= 0
    out[have] = values[idx[have]]
    return out


def backlog_slope(iterations: pd.DataFrame, horizon_s: float, column: str = "backlog_tokens",
                  points: int = GRID_POINTS) -> float:
    """Least-squares slope of W(t) or N(t) over the second half of [0, horizon_s].

    ``column="backlog_tokens"`` regresses W(t), the unprocessed tokens in the system (slope in
    tokens/s); ``column="in_system"`` regresses N(t) = waiting + running (requests/s). The
    iteration series is read as a step function (see ``step_values``) sampled on ``points``
    equally spaced times from horizon_s/2 to horizon_s inclusive, and the slope is that of the
    ordinary least-squares line through those samples.

    Raises ConfigError if horizon_s <= 0 or points < 2.
    """
    if not horizon_s > 0:
        raise ConfigError("horizon_s", horizon_s, "a positive number of seconds")
    if points < 2:
        raise ConfigError("points", points, "an integer >= 2")
    t = np.linspace(horizon_s / 2, horizon_s, points)
    return _ols(t, step_values(iterations, column, t))[0]


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, float]:
    """Least-squares slope of y on x, the residuals, and Sxx (the centred sum of squares)."""
    xc = x - x.mean()
    sxx = float(np.dot(xc, xc))
    slope = float(np.dot(xc, y - y.mean()) / sxx)
    return slope, y - y.mean() - slope * xc, sxx


@dataclass(frozen=True)
class SlopeCI:
    """Mean, sample sd and the t-based CI [lo, hi] of slopes over n seeds (with n == 1: sd NaN
    and CI (-inf, +inf), since one seed gives no spread)."""

    mean: float
    sd: float
    n: int
    lo: float
    hi: float
    confidence: float

    def contains(self, x: float) -> bool:
        return self.lo <= x <= self.hi


def slope_ci(slopes: Iterable[float], confidence: float = 0.99) -> SlopeCI:
    """t-based CI of the mean slope over independent seeds.

    mean +- t_{(1+confidence)/2, n-1} * sd / sqrt(n), with sd the sample sd (ddof = 1).
    With one slope the CI is (-inf, +inf). Raises ConfigError for no slopes or a confidence
    outside (0, 1).
    """
    x = np.asarray(list(slopes), dtype=float)
    if x.size == 0:
        raise ConfigError("slopes", [], "at least one slope")
    if not 0 < confidence < 1:
        raise ConfigError("confidence", confidence, "a number in (0, 1)")
    mean = float(x.mean())
    if x.size == 1:
        return SlopeCI(mean, math.nan, 1, -math.inf, math.inf, confidence)
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, x.size - 1)) * sd / math.sqrt(x.size)
    return SlopeCI(mean, sd, int(x.size), mean - half, mean + half, confidence)


def fluid_slope(arrival_rate: float, mean_tokens_per_request: float,
                token_capacity: float) -> float:
    """The fluid backlog slope max(0, lambda*(m_p + m_d) - mu*), tokens/s (Theorem 2).

    ``arrival_rate`` is lambda (requests/s), ``mean_tokens_per_request`` is m_p + m_d and
    ``token_capacity`` is mu* = b_max / t(b_max) (tokens/s). Above capacity every
    work-conserving policy's backlog W(t) grows at this rate; below it, the slope is 0.
    """
    return max(0.0, arrival_rate * mean_tokens_per_request - token_capacity)


@dataclass(frozen=True)
class TrendTest:
    """The slope of one run's series over [H/2, H] from batch means, with its standard error.

    ``slope`` and ``se`` are in units of the series per second; ``batches`` is k, and the
    standard error has k - 2 degrees of freedom.
    """

    slope: float
    se: float
    batches: int

    def lower(self, confidence: float) -> float:
        """One-sided lower confidence bound: slope - t_{confidence, k-2} * se."""
        return self.slope - float(stats.t.ppf(confidence, self.batches - 2)) * self.se

    def growing(self, confidence: float) -> bool:
        """True iff the lower bound at ``confidence`` lies above 0."""
        return self.lower(confidence) > 0


def batch_means_slope(iterations: pd.DataFrame, horizon_s: float, column: str = "in_system",
                      batches: int = 5, points: int = GRID_POINTS) -> TrendTest:
    """Slope of one run's series over [H/2, H] with a standard error that survives
    autocorrelation.

    The series (``step_values``) is sampled on ``points`` equally spaced times from H/2 to H,
    cut into ``batches`` = k consecutive blocks of equal length, and each block is averaged.
    The slope is the ordinary least-squares slope of the k block means against the block
    centres, and its standard error is sqrt(RSS / (k - 2) / Sxx) from their residuals. A slope
    over the fine grid cannot use the grid's own residuals, which are correlated over the time
    a request stays in the system; means of blocks much longer than that are nearly independent.
    Few, long blocks keep that true (default k = 5, blocks of H/10), at the price of a wide t
    quantile (k - 2 = 3 degrees of freedom).

    Raises ConfigError if horizon_s <= 0, batches < 3 or points < batches.
    """
    if not horizon_s > 0:
        raise ConfigError("horizon_s", horizon_s, "a positive number of seconds")
    if batches < 3:
        raise ConfigError("batches", batches, "an integer >= 3")
    if points < batches:
        raise ConfigError("points", points, f"an integer >= batches ({batches})")
    per = points // batches
    t = np.linspace(horizon_s / 2, horizon_s, per * batches)
    means = step_values(iterations, column, t).reshape(batches, per).mean(axis=1)
    centres = t.reshape(batches, per).mean(axis=1)
    slope, resid, sxx = _ols(centres, means)
    se = math.sqrt(float(np.dot(resid, resid)) / (batches - 2) / sxx)
    return TrendTest(slope, se, batches)


# -- completion ratio ---------------------------------------------------------------------------


def completion_ratio(requests: pd.DataFrame, start_s: float = 0.0,
                     end_s: float | None = None) -> float:
    """Completed / arrived.

    By default (start_s = 0, end_s = None) this is finished requests / all arrived requests
    (``pending`` requests, which arrive after the run stopped, are not arrivals). With a window
    [start_s, end_s] it is (requests finishing in the window) / (requests arriving in it): the
    ratio of throughput to arrival rate, which is near 1 for a stable system even when many
    requests are still in flight at the end, and near mu*/(lambda*(m_p + m_d)) < 1 for an
    overloaded one. Rejected requests count as arrived, not completed. NaN if nothing arrived.
    """
    arrival = requests["arrival_s"].to_numpy(dtype=float)
    finish = requests["finish_s"].to_numpy(dtype=float)
    status = requests["status"].to_numpy()
    hi = math.inf if end_s is None else end_s
    arrived = (arrival >= start_s) & (arrival <= hi) & (status != "pending")
    done = (status == "finished") & (finish >= start_s) & (finish <= hi)
    n_arrived = int(arrived.sum())
    return math.nan if n_arrived == 0 else float(done.sum()) / n_arrived


def window_counts(requests: pd.DataFrame, start_s: float, end_s: float) -> tuple[int, int]:
    """(completions, arrivals) within [start_s, end_s]; requests not yet arrived don't count."""
    arrival = requests["arrival_s"].to_numpy(dtype=float)
    finish = requests["finish_s"].to_numpy(dtype=float)
    status = requests["status"].to_numpy()
    arrived = (arrival >= start_s) & (arrival <= end_s) & (status != "pending")
    done = (status == "finished") & (finish >= start_s) & (finish <= end_s)
    return int(done.sum()), int(arrived.sum())


# -- horizon doubling ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DoublingResult:
    """``growing`` is True when every successive ratio of means exceeds 1 + tol."""

    horizons: list[float]
    means: list[float]
    ratios: list[float]
    tol: float
    growing: bool

    @property
    def verdict(self) -> str:
        return "growing" if self.growing else "not growing"


def horizon_doubling(means_by_horizon: Mapping[float, float] | Sequence[tuple[float, float]],
                     tol: float = DOUBLING_TOL) -> DoublingResult:
    """Do the mean numbers in system, measured at horizons T, 2T, 4T, ..., grow with T?

    Sort by horizon and form ratios mean(next) / mean(previous) (1 if both are 0, +inf if only
    the previous is 0). Verdict: **growing** if every ratio > 1 + tol, else **not growing**.
    Default tol = 0.25: a backlog growing linearly in time gives time-average means that double
    (ratio 2), sqrt(t) growth ratio 1.41; a stable system's means converge (ratio -> 1, slightly
    above 1 while the start-up transient is being diluted).

    Raises ConfigError with fewer than two horizons.
    """
    items = sorted(dict(means_by_horizon).items())
    if len(items) < 2:
        raise ConfigError("means_by_horizon", len(items), "at least two horizons")
    horizons = [float(h) for h, _ in items]
    means = [float(m) for _, m in items]
    ratios = []
    for prev, nxt in zip(means, means[1:], strict=False):
        if prev > 0:
            ratios.append(nxt / prev)
        else:
            ratios.append(1.0 if nxt <= 0 else math.inf)
    growing = all(r > 1 + tol for r in ratios)
    return DoublingResult(horizons, means, ratios, tol, growing)


# -- envelope growth ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvelopeResult:
    """Peaks per window, their regression slope (units of the series per second) and CI."""

    peak_t: list[float]
    peak_v: list[float]
    slope: float
    lo: float
    hi: float
    growing: bool

    @property
    def verdict(self) -> str:
        return "growing" if self.growing else "not growing"


def envelope_growth(series_t: Sequence[float], series_v: Sequence[float],
                    period_hint: float | None = None, windows: int = 10,
                    confidence: float = 0.99,
                    rel_tol: float = ENVELOPE_REL_TOL) -> EnvelopeResult:
    """Growth of the peaks of successive cycles of an oscillating series.

    Split [t_first, t_last] into consecutive windows of length ``period_hint`` (one per cycle;
    if None, ``windows`` equal windows), take the maximum in each non-empty window (the peak)
    and its time, and fit peak = a + slope * time by least squares. ``lo``/``hi`` are the
    t-based CI of the slope at ``confidence`` (n - 2 degrees of freedom).

    Verdict: **growing** if lo > 0 *and* the fitted rise over the span of the peaks,
    slope * (last peak time - first peak time), exceeds rel_tol (default 0.10) times the mean
    peak; else **not growing**. The second condition keeps a numerically tiny but "significant"
    slope of an exactly periodic series from counting as growth.

    Raises ConfigError if the series lengths differ or fewer than 3 windows have data.
    """
    t = np.asarray(series_t, dtype=float)
    v = np.asarray(series_v, dtype=float)
    if t.shape != v.shape or t.ndim != 1:
        raise ConfigError("series_v", v.shape, f"a 1-d series of the same length as series_t "
                                              f"{t.shape}")
    if t.size == 0:
        raise ConfigError("series_t", 0, "a non-empty series")
    t0, t1 = float(t.min()), float(t.max())
    if period_hint is not None:
        if not period_hint > 0:
            raise ConfigError("period_hint", period_hint, "a positive number of seconds")
        edges = np.arange(t0, t1 + period_hint, period_hint)
        if edges[-1] < t1:
            edges = np.append(edges, t1)
    else:
        edges = np.linspace(t0, t1, windows + 1)
    peak_t, peak_v = [], []
    bins = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, len(edges) - 2)
    for b in range(len(edges) - 1):
        mask = bins == b
        if mask.any():
            k = int(np.argmax(v[mask]))
            peak_t.append(float(t[mask][k]))
            peak_v.append(float(v[mask][k]))
    n = len(peak_t)
    if n < 3:
        raise ConfigError("windows", n, "at least 3 windows with data")
    pt, pv = np.asarray(peak_t), np.asarray(peak_v)
    tc = pt - pt.mean()
    sxx = float(np.dot(tc, tc))
    slope = float(np.dot(tc, pv - pv.mean()) / sxx) if sxx > 0 else 0.0
    resid = pv - pv.mean() - slope * tc
    se = math.sqrt(float(np.dot(resid, resid)) / (n - 2) / sxx) if sxx > 0 else math.inf
    half = float(stats.t.ppf((1 + confidence) / 2, n - 2)) * se
    lo, hi = slope - half, slope + half
    rise = slope * (pt.max() - pt.min())
    scale = abs(float(pv.mean()))
    growing = bool(lo > 0 and rise > rel_tol * scale)
    return EnvelopeResult(peak_t, peak_v, slope, lo, hi, growing)


# -- verdict ------------------------------------------------------------------------------------


@dataclass
class Verdict:
    """The combined stability verdict of one configuration (one load), over seeds.

    Attributes:
        state: "stable", "unstable" or "inconclusive" (rule in ``verdict``).
        evidence: one line per test, saying what it found.
        slope: the backlog-slope CI (``SlopeCI``, tokens/s when from W(t)).
        fluid_slope: the fluid oracle, tokens/s, or None if not known.
        completion_ratio: completed / arrived (pooled over seeds), or None.
        eps: the completion-ratio epsilon used.
        n_slope: optional CI of the N(t) slope (requests/s), reported only.
        doubling, envelope: optional results, which can only demote "stable".
    """

    state: str
    evidence: list[str]
    slope: SlopeCI
    fluid_slope: float | None
    completion_ratio: float | None
    eps: float = COMPLETION_EPS
    n_slope: SlopeCI | None = None
    doubling: DoublingResult | None = None
    envelope: EnvelopeResult | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def slope_ci(self) -> tuple[float, float]:
        return (self.slope.lo, self.slope.hi)


def verdict(slopes: Iterable[float] | SlopeCI, completion: float | None = None, *,
            fluid: float | None = None, eps: float = COMPLETION_EPS,
            confidence: float = 0.99, n_slopes: Iterable[float] | None = None,
            doubling: DoublingResult | None = None,
            envelope: EnvelopeResult | None = None) -> Verdict:
    """Combine the tests into one verdict.

    Inputs: the per-seed backlog slopes (or their ``SlopeCI``) with CI [lo, hi] at
    ``confidence``; the completion ratio c (None if not measured); the fluid slope f (None if
    not known); optional N(t) slopes, horizon-doubling and envelope results.

    Rule, checked in this order:

    1. **unstable** if (lo > 0 and c < 1 - eps), or (f > 0 and lo <= f <= hi);
    2. **stable** if lo <= 0 (the CI contains 0 or lies below it) and c >= 1 - eps
       (c = None counts as passing), *unless* the horizon-doubling or envelope test says
       "growing", which makes it inconclusive;
    3. **inconclusive** otherwise (e.g. a positive slope with all requests completing, or a
       low completion ratio with a slope CI containing 0).

    Default eps = 0.02, confidence 0.99. The N(t) slope is reported in the evidence only.
    """
    ci = slopes if isinstance(slopes, SlopeCI) else slope_ci(slopes, confidence)
    n_ci = slope_ci(n_slopes, ci.confidence) if n_slopes is not None else None
    evidence = [f"backlog slope {ci.mean:.4g} (sd {ci.sd:.3g}, n={ci.n}); "
                f"{ci.confidence:.0%} CI [{ci.lo:.4g}, {ci.hi:.4g}]"
                + (" lies above 0" if ci.lo > 0 else " contains 0" if ci.hi >= 0
                   else " lies below 0")]
    if n_ci is not None:
        evidence.append(f"number-in-system slope {n_ci.mean:.4g} /s; CI [{n_ci.lo:.4g}, "
                        f"{n_ci.hi:.4g}]")
    if fluid is not None:
        evidence.append(f"fluid slope {fluid:.4g}: "
                        + ("inside" if ci.contains(fluid) else "outside") + " the CI")
    low_completion = completion is not None and completion < 1 - eps
    if completion is not None:
        evidence.append(f"completion ratio {completion:.4f} "
                        + ("<" if low_completion else ">=") + f" 1 - eps = {1 - eps:.4g}")
    growth = []
    if doubling is not None:
        evidence.append("horizon doubling: means " + ", ".join(f"{m:.4g}" for m in doubling.means)
                        + " ratios " + ", ".join(f"{r:.3g}" for r in doubling.ratios)
                        + f" -> {doubling.verdict} (tol {doubling.tol:g})")
        growth.append(doubling.growing)
    if envelope is not None:
        evidence.append(f"envelope: peak slope {envelope.slope:.4g}, CI [{envelope.lo:.4g}, "
                        f"{envelope.hi:.4g}] -> {envelope.verdict}")
        growth.append(envelope.growing)

    if (ci.lo > 0 and low_completion) or (fluid is not None and fluid > 0 and ci.contains(fluid)):
        state = "unstable"
    elif ci.lo <= 0 and not low_completion:
        state = "inconclusive" if any(growth) else "stable"
    else:
        state = "inconclusive"
    return Verdict(state=state, evidence=evidence, slope=ci, fluid_slope=fluid,
                   completion_ratio=completion, eps=eps, n_slope=n_ci, doubling=doubling,
                   envelope=envelope)


# -- study --------------------------------------------------------------------------------------
