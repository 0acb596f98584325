"""The report's numbers: intervals over seeds, axis scales, truncated points, verdicts.

Plain functions over the ``points`` table; nothing here draws.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy import stats

from servesim.analysis.stability import verdict
from servesim.report.censored import CENSORED

__all__ = ["LOG_RATIO", "MIN_SEEDS_FOR_CI", "UNFINISHED_FRACTION", "axis_scale",
           "latency_by_load", "log_t_interval", "log_ticks", "stability_table", "truncation"]

LOG_RATIO = 30.0
"""A panel whose positive values span at least this ratio (max / min) gets a log axis: on a
linear one the small values collapse into a line at zero."""
MIN_SEEDS_FOR_CI = 3
"""Fewer seeds than this draw no interval: with two, t_{0.975,1} = 12.7 makes the bar span
orders of magnitude and says nothing."""
UNFINISHED_FRACTION = 0.5
"""A horizon run that leaves more than this fraction of its arrivals unfinished has latencies
measured on the few requests that got through: they are cut off by the horizon."""
STOPPED = "max_in_system"
STOPPED_EARLY = "stopped early by run.max_in_system"
CUT_BY_HORIZON = "more than half of the requests unfinished at the horizon"
GROWING = "backlog grows (unstable), so the value depends on the horizon"


def log_t_interval(values: Iterable[float], confidence: float = 0.95,
                   min_n: int = MIN_SEEDS_FOR_CI) -> tuple[float, float, float] | None:
    """The geometric mean of positive values and its t-interval in log space.

    exp(mean(log x) +- t_{(1+confidence)/2, n-1} * sd(log x) / sqrt(n)): both ends are positive
    and the interval is symmetric on a log axis. Returns (centre, lo, hi), or None if fewer
    than ``min_n`` finite values remain. Raises ValueError if a value is <= 0.
    """
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if (x <= 0).any():
        raise ValueError(f"log_t_interval needs positive values, got {x[x <= 0][0]!r}")
    if x.size < max(min_n, 2):
        return None
    logs = np.log(x)
    centre = float(logs.mean())
    half = float(stats.t.ppf((1 + confidence) / 2, x.size - 1)) * float(logs.std(ddof=1)) \
        / math.sqrt(x.size)
    return math.exp(centre), math.exp(centre - half), math.exp(centre + half)


def axis_scale(values: Iterable[float], ratio: float = LOG_RATIO) -> str:
    """'log' if the finite values are all positive and span at least ``ratio``, else 'linear'.

    A value <= 0 cannot be drawn on a log axis, so it keeps the axis linear.
    """
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if x.size < 2 or (x <= 0).any():
        return "linear"
    return "log" if x.max() / x.min() >= ratio else "linear"


def log_ticks(values) -> list[float]:
    """1-2-5 tick values spanning the positive finite ``values``: the default log ticks of plotly
    label 20 and 0.2 alike as "2"."""
    x = np.asarray([v for v in values if np.isfinite(v) and v > 0], dtype=float)
    if x.size == 0:
        return []
    low, high = x.min(), x.max()
    ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(low)) - 1,
                                          math.ceil(math.log10(high)) + 1) for m in (1, 2, 5)]
    return [t for t in ticks if low / 2.5 <= t <= high * 2.5]


def _count(value) -> int:
    return 0 if value is None or pd.isna(value) else int(value)


def _point_reason(row, unstable: bool) -> str:
    """Why one point's latencies are not the load's: '' if they are."""
    if row.stop_reason == STOPPED:
        return STOPPED_EARLY
    arrived, completed = _count(row.arrived), _count(row.completed)
    if row.stop_reason == "time" and arrived \
            and 1 - completed / arrived > UNFINISHED_FRACTION:
        return CUT_BY_HORIZON
    return GROWING if unstable else ""


def truncation(points: pd.DataFrame, x: str, verdicts: pd.DataFrame) -> dict[tuple, str]:
    """Per (label, x): why its latencies are truncated, '' if they are not.

    A point is truncated if it was stopped by ``run.max_in_system`` (STOPPED_EARLY), if more
    than UNFINISHED_FRACTION of its arrivals were unfinished at the horizon (CUT_BY_HORIZON),
    or if the verdict at its load is unstable (GROWING: the backlog grows, so the latency is
    whatever the horizon allowed). Any truncated seed makes its (label, x) truncated, with the
    first of those reasons that applies; the value is then a lower bound.
    """
    unstable = {(r.label, float(r.x)) for r in verdicts.itertuples() if r.state == "unstable"}
    out: dict[tuple, str] = {}
    for (label, xv), group in points.groupby(["label", x], sort=True):
        key = (label, float(xv))
        reasons = {_point_reason(row, key in unstable) for row in group.itertuples()}
        out[key] = next((r for r in (STOPPED_EARLY, CUT_BY_HORIZON, GROWING) if r in reasons),
                        "")
    return out


def latency_by_load(points: pd.DataFrame, x: str, metric: str, truncated: dict[tuple, str],
                    confidence: float = 0.95) -> pd.DataFrame:
    """Per label and x: the geometric mean of ``metric`` over seeds and its log-space CI.

    Columns: label, x, centre, lo, hi (NaN with fewer than MIN_SEEDS_FOR_CI seeds), n (seeds
    with a value), reason (``truncated``'s entry: '' for a value that is the load's).
    Truncated points are kept, marked, so an overloaded policy still shows its trend; where
    ``points`` has the metric's censored lower bound (``censored.CENSORED``) they use it.
    """
    rows = []
    for (label, xv), group in points.groupby(["label", x], sort=True):
        reason = truncated.get((label, float(xv)), "")
        column = CENSORED.get(metric) if reason else None
        if column not in group or not group[column].notna().any():
            column = metric
        values = group[column].dropna().to_numpy(dtype=float)
        values = values[values > 0]
        if values.size == 0:
            continue
        ci = log_t_interval(values, confidence)
        centre = ci[0] if ci else float(np.exp(np.log(values).mean()))
        lo, hi = (ci[1], ci[2]) if ci else (math.nan, math.nan)
        rows.append({"label": label, "x": float(xv), "centre": centre, "lo": lo, "hi": hi,
                     "n": int(values.size), "reason": reason})
    return pd.DataFrame(rows, columns=["label", "x", "centre", "lo", "hi", "n", "reason"])


def stability_table(points: pd.DataFrame, x: str) -> pd.DataFrame:
    """A stability verdict per policy and x, from the per-seed backlog slopes.

    Uses ``analysis.stability.verdict`` with the W(t) slopes over the second half of each run,
    the completion ratio pooled over seeds in [H/2, H], and the fluid slope. A point stopped by
    ``run.max_in_system`` counts as unstable. Only horizon runs have slopes; others are left out.
    ``slope_lo``/``slope_hi`` bound the mean backlog slope (tokens/s) at ``slope_confidence``.
    """
    rows = []
    for (label, xv), group in points.groupby(["label", x], sort=True):
        stopped = (group["stop_reason"] == STOPPED).any()
        slopes = group["backlog_slope_tokens_per_s"].dropna().to_numpy(dtype=float)
        lam = float(group["lambda_star"].mean())
        base = {"label": label, "x": float(xv), "lambda_star": lam, "seeds": len(group)}
        if stopped:
            rows.append({**base, "state": "unstable", "slope_lo": math.nan,
                         "slope_hi": math.nan, "slope_confidence": math.nan,
                         "evidence": "a seed exceeded run.max_in_system"})
            continue
        if slopes.size == 0:
            continue
        arrived = group["arrived_second_half"].sum()
        completion = float(group["done_second_half"].sum() / arrived) if arrived else None
        fluid = group["fluid_slope_tokens_per_s"].dropna()
        v = verdict(slopes, completion, fluid=float(fluid.mean()) if len(fluid) else None)
        rows.append({**base, "state": v.state, "slope_lo": v.slope.lo, "slope_hi": v.slope.hi,
                     "slope_confidence": v.slope.confidence, "evidence": "; ".join(v.evidence)})
    return pd.DataFrame(rows, columns=["label", "x", "lambda_star", "seeds", "state",
                                       "slope_lo", "slope_hi", "slope_confidence", "evidence"])
