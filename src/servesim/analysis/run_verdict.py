"""A stability verdict from one run alone, for the run summary and the ``servesim run`` table.

The tests are those of ``stability.py`` applied to one run's own window [A/2, A], where A is
the time of the last arrival (the horizon of a time-bounded run, the stop time of a run cut
short, the end of the arrivals of a request-count run): the batch-means trend of the backlog
W(t) with its confidence interval (``batch_means_slope``), the completion ratio over the
window (``completion_ratio``) and the envelope of the number in system
(``envelope_growth``), combined by ``verdict``. A run stopped by ``run.max_in_system`` is
unstable, as in ``study`` and the lambda* search. One run says less than many seeds: this is
a first look, and ``servesim stability`` the test.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from servesim.analysis.stability import (
    COMPLETION_EPS,
    SlopeCI,
    batch_means_slope,
    completion_ratio,
    envelope_growth,
    step_values,
    verdict,
)
from servesim.core.errors import ConfigError
from servesim.metrics.summary import jsonable

__all__ = ["MIN_WINDOW_ITERATIONS", "run_verdict"]

MIN_WINDOW_ITERATIONS = 50
"""Fewer iterations than this in [A/2, A] leave too little to judge."""

_BATCHES = 5   # blocks of A/10: long against a sojourn, as in the lambda* search


def run_verdict(requests: pd.DataFrame, iterations: pd.DataFrame, *, end_s: float,
                stop_reason: str, confidence: float = 0.99,
                eps: float = COMPLETION_EPS) -> dict[str, Any]:
    """The verdict of one run, JSON-ready: ``state`` ("stable", "unstable", "inconclusive"),
    ``headline`` (one phrase such as "looks unstable: backlog grows 12.3 req/s"), the window,
    the slopes with their CIs, the completion ratio and the evidence lines of ``verdict``."""
    window = _window(requests, end_s)
    if window is None:
        return jsonable(_stopped(_undecided("no request arrived", None), stop_reason))
    lo_s, hi_s = window
    ends = (iterations["start_s"] + iterations["duration_s"]).to_numpy(dtype=float)
    in_window = int(((ends >= lo_s) & (ends <= hi_s)).sum())
    if in_window < MIN_WINDOW_ITERATIONS:
        out = _undecided(f"too short to judge: {in_window} iterations in the second half of "
                         f"the arrivals [{lo_s:.4g}, {hi_s:.4g}] s", window)
        return jsonable(_stopped(out, stop_reason))
    w = _trend_ci(batch_means_slope(iterations, hi_s, "backlog_tokens", _BATCHES), confidence)
    n = _trend_ci(batch_means_slope(iterations, hi_s, "in_system", _BATCHES), confidence)
    completion = completion_ratio(requests, lo_s, hi_s)
    envelope = _envelope(iterations, lo_s, hi_s, confidence)
    v = verdict(w, None if math.isnan(completion) else completion, eps=eps,
                confidence=confidence, envelope=envelope)
    evidence = [_trend_line("backlog W(t)", w, "tokens/s", window),
                _trend_line("number in system N(t)", n, "req/s", window), *v.evidence[1:]]
    out = {
        "state": v.state,
        "headline": _headline(v.state, w, n, completion),
        "window_s": [lo_s, hi_s],
        "confidence": confidence,
        "backlog_slope_tokens_per_s": _ci_dict(w),
        "in_system_slope_per_s": _ci_dict(n),
        "completion_ratio": None if math.isnan(completion) else completion,
        "envelope": None if envelope is None else envelope.verdict,
        "evidence": evidence,
    }
    return jsonable(_stopped(out, stop_reason))


def _window(requests: pd.DataFrame, end_s: float) -> tuple[float, float] | None:
    """[A/2, A], A = the last arrival at or before the stop (None if nothing arrived)."""
    status = requests["status"].to_numpy()
    arrival = requests["arrival_s"].to_numpy(dtype=float)[status != "pending"]
    arrival = arrival[arrival <= end_s]
    if arrival.size == 0 or not float(arrival.max()) > 0:
        return None
    last = float(arrival.max())
    return last / 2, last


def _trend_ci(trend: Any, confidence: float) -> SlopeCI:
    """The batch-means slope as a two-sided CI at ``confidence`` (k - 2 degrees of freedom)."""
    from scipy import stats

    half = float(stats.t.ppf((1 + confidence) / 2, trend.batches - 2)) * trend.se
    return SlopeCI(trend.slope, trend.se, trend.batches, trend.slope - half, trend.slope + half,
                   confidence)


def _envelope(iterations: pd.DataFrame, lo_s: float, hi_s: float, confidence: float):
    """Envelope of N(t) over the window, sampled on a grid (None if too few windows)."""
    t = np.linspace(lo_s, hi_s, 1000)
    try:
        return envelope_growth(t, step_values(iterations, "in_system", t),
                               confidence=confidence)
    except ConfigError:
        return None


def _trend_line(what: str, ci: SlopeCI, unit: str, window: tuple[float, float]) -> str:
    where = "lies above 0" if ci.lo > 0 else "contains 0" if ci.hi >= 0 else "lies below 0"
    return (f"{what} slope {ci.mean:.4g} {unit} over [{window[0]:.4g}, {window[1]:.4g}] s; "
            f"{ci.confidence:.0%} batch-means CI [{ci.lo:.4g}, {ci.hi:.4g}] {where}")


def _ci_dict(ci: SlopeCI) -> dict[str, float]:
    return {"slope": ci.mean, "se": ci.sd, "lo": ci.lo, "hi": ci.hi, "batches": ci.n}


def _headline(state: str, w: SlopeCI, n: SlopeCI, completion: float) -> str:
    done = "" if math.isnan(completion) else f"; completion ratio {completion:.3f}"
    if state == "unstable":
        return f"looks unstable: backlog grows {w.mean:.4g} tokens/s ({n.mean:.3g} req/s){done}"
    if state == "stable":
        return (f"looks stable: no backlog growth (slope {w.mean:.4g} tokens/s, "
                f"{w.confidence:.0%} CI [{w.lo:.4g}, {w.hi:.4g}]){done}")
    return (f"inconclusive: backlog slope {w.mean:.4g} tokens/s ({n.mean:.3g} req/s){done}; "
            "run longer or use servesim stability")


def _undecided(reason: str, window: tuple[float, float] | None) -> dict[str, Any]:
    return {"state": "inconclusive", "headline": f"inconclusive: {reason}",
            "window_s": None if window is None else list(window), "evidence": [reason]}


def _stopped(out: dict[str, Any], stop_reason: str) -> dict[str, Any]:
    """A run cut by ``run.max_in_system`` is overloaded, whatever its short window shows."""
    if stop_reason != "max_in_system":
        return out
    out["evidence"] = ["stopped by run.max_in_system: the number in system exceeded its cap",
                       *out["evidence"]]
    if out["state"] != "unstable":
        out["state"] = "unstable"
        out["headline"] = "looks unstable: stopped by run.max_in_system"
    return out
