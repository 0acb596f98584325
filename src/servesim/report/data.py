"""What the report plots, read from a sweep folder: tables only, no plotting here."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from servesim.analysis.stability import step_values, verdict
from servesim.core.errors import ConfigError
from servesim.experiments.store import one_line, open_views
from servesim.experiments.sweep import LOAD_AXIS, RATE_FIELD

__all__ = ["ReportData", "latency_by_load", "load_report_data", "stability_table"]

LATENCY_METRICS = (("ttft_mean_s", "mean TTFT (s)"), ("tpot_mean_s", "mean TPOT (s)"),
                   ("e2e_mean_s", "mean E2E latency (s)"))
GRID_POINTS = 400
"""Samples per time series: enough for a smooth line, few enough for a small SVG."""
COMPOSITION_BINS = 60
"""Time bins of the batch-composition plot: coarse, since per-iteration batches are noisy."""


@dataclass
class ReportData:
    """Everything the figures need.

    Attributes:
        points: the catalogue (``points`` view), one row per finished point, plus ``label``:
            the policy and any other swept field except the load.
        x: the load axis: ``load`` (lambda / lambda*) when every point has one, else
            ``rate_per_s``.
        reference: the x value at which distributions and time series are shown.
        requests: label, ttft_s and tpot_s of every request of the points at ``reference``.
        series: one time-series frame per label (the lowest seed at ``reference``).
        composition: prefill and decode tokens per iteration in time bins, same points.
        verdicts: ``stability_table(points, x)``, read by a figure and by the page's table.
    """

    points: pd.DataFrame
    x: str
    reference: float | None
    requests: pd.DataFrame
    series: dict[str, pd.DataFrame]
    composition: dict[str, pd.DataFrame]
    verdicts: pd.DataFrame


def load_report_data(out_dir: str | Path) -> ReportData:
    """Read the catalogue, then the requests and iterations of the reference points.

    Raises ConfigError (one line) if the sweep folder cannot be read.
    """
    import duckdb

    con = open_views(out_dir)
    try:
        return _load(con)
    except duckdb.Error as e:
        raise ConfigError("DIR", str(out_dir),
                          f"a readable sweep folder ({one_line(str(e), 200)})") from None
    finally:
        con.close()


def _load(con) -> ReportData:
    """The report's tables, from a connection with the sweep's views."""
    points = con.execute("SELECT * FROM points ORDER BY policy, point_id").df()
    points["label"] = [_label(row.policy, row.params) for row in points.itertuples()]
    x = "load" if len(points) and points["load"].notna().all() else "rate_per_s"
    reference = _reference(points, x)
    chosen = _reference_points(points, x, reference)
    requests = _requests(con, chosen)
    shown = [row for row in chosen.itertuples()
             if row.seed == chosen[chosen.label == row.label].seed.min()]
    series = {row.label: _series(con, row) for row in shown}
    composition = {row.label: _composition(con, row) for row in shown}
    return ReportData(points=points, x=x, reference=reference, requests=requests,
                      series=series, composition=composition,
                      verdicts=stability_table(points, x))


def _label(policy: str, params_json: str) -> str:
    """The policy, plus any swept field other than the batching rule and the load."""
    params = json.loads(params_json)
    rest = [f"{k.split('.')[-1]}={v}" for k, v in params.items()
            if k not in ("engine.batching", LOAD_AXIS, RATE_FIELD)]
    return ", ".join([policy, *rest])


def _reference(points: pd.DataFrame, x: str) -> float | None:
    """The highest load below 1 (the busiest stable operating point), else the lowest x."""
    values = sorted(v for v in points[x].dropna().unique()) if len(points) else []
    if not values:
        return None
    if x == "load":
        below = [v for v in values if v < 1]
        if below:
            return float(below[-1])
    return float(values[0])


def _reference_points(points: pd.DataFrame, x: str, reference: float | None) -> pd.DataFrame:
    if reference is None:
        return points.iloc[0:0]
    return points[np.isclose(points[x].astype(float), reference)]


def _requests(con, chosen: pd.DataFrame) -> pd.DataFrame:
    if chosen.empty:
        return pd.DataFrame(columns=["label", "ttft_s", "tpot_s"])
    frame = con.execute(
        "SELECT point_id, ttft_s, tpot_s FROM requests "
        "WHERE point_id IN (SELECT unnest(?::VARCHAR[])) AND status = 'finished' "
        "ORDER BY point_id, id",
        [[str(i) for i in chosen.point_id]]).df()
    labels = dict(zip(chosen.point_id, chosen.label, strict=True))
    frame["label"] = frame["point_id"].map(labels)
    return frame.drop(columns=["point_id"])


def _series(con, row) -> pd.DataFrame:
    """N(t), W(t) and KV use of one point, sampled on a regular time grid."""
    it = con.execute("SELECT * FROM iterations WHERE point_id = ? ORDER BY start_s",
                     [row.point_id]).df()
    if it.empty:
        return pd.DataFrame(columns=["t_s", "in_system", "backlog_tokens", "kv_fraction"])
    end = float((it["start_s"] + it["duration_s"]).max())
    t = np.linspace(0.0, end, GRID_POINTS)
    capacity = row.kv_capacity_blocks if row.kv_capacity_blocks else math.nan
    out = pd.DataFrame({
        "t_s": t,
        "in_system": step_values(it, "in_system", t),
        "backlog_tokens": step_values(it, "backlog_tokens", t),
        "kv_fraction": step_values(it, "kv_blocks_used", t) / capacity,
    })
    return out


def _composition(con, row) -> pd.DataFrame:
    """Mean prefill and decode tokens per iteration in each of COMPOSITION_BINS time bins."""
    it = con.execute("SELECT start_s, duration_s, prefill_tokens, decode_tokens FROM iterations "
                     "WHERE point_id = ? ORDER BY start_s", [row.point_id]).df()
    if it.empty:
        return pd.DataFrame(columns=["t_s", "prefill_tokens", "decode_tokens"])
    end = float((it["start_s"] + it["duration_s"]).max())
    edges = np.linspace(0.0, end, COMPOSITION_BINS + 1)
    bins = np.clip(np.searchsorted(edges, it["start_s"].to_numpy(), side="right") - 1, 0,
                   COMPOSITION_BINS - 1)
    counts = np.bincount(bins, minlength=COMPOSITION_BINS)
    out = pd.DataFrame({"t_s": (edges[:-1] + edges[1:]) / 2})
    for col in ("prefill_tokens", "decode_tokens"):
        sums = np.bincount(bins, weights=it[col].to_numpy(dtype=float),
                           minlength=COMPOSITION_BINS)
        out[col] = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    return out


def latency_by_load(points: pd.DataFrame, x: str, metric: str,
                    confidence: float = 0.95) -> pd.DataFrame:
    """Per policy and x: the mean of ``metric`` over seeds and its t-based CI.

    mean +- t_{(1+confidence)/2, n-1} * sd / sqrt(n) over the n seeds with a value; with one
    seed the interval is the point itself. Runs stopped by ``run.max_in_system`` are left out:
    their latencies describe a truncated, overloaded run, not the load (the stability table
    marks those loads unstable).
    """
    if "stop_reason" in points:
        points = points[points["stop_reason"] != "max_in_system"]
    rows = []
    for (label, xv), group in points.groupby(["label", x], sort=True):
        values = group[metric].dropna().to_numpy(dtype=float)
        if values.size == 0:
            continue
        mean = float(values.mean())
        half = 0.0
        if values.size > 1:
            sd = float(values.std(ddof=1))
            half = float(stats.t.ppf((1 + confidence) / 2, values.size - 1)) * sd \
                / math.sqrt(values.size)
        rows.append({"label": label, "x": float(xv), "mean": mean, "lo": mean - half,
                     "hi": mean + half, "n": int(values.size)})
    return pd.DataFrame(rows, columns=["label", "x", "mean", "lo", "hi", "n"])


def stability_table(points: pd.DataFrame, x: str) -> pd.DataFrame:
    """A stability verdict per policy and x, from the per-seed backlog slopes.

    Uses ``analysis.stability.verdict`` with the W(t) slopes over the second half of each run,
    the completion ratio pooled over seeds in [H/2, H], and the fluid slope. A point stopped by
    ``run.max_in_system`` counts as unstable. Only horizon runs have slopes; others are left out.
    """
    rows = []
    for (label, xv), group in points.groupby(["label", x], sort=True):
        stopped = (group["stop_reason"] == "max_in_system").any()
        slopes = group["backlog_slope_tokens_per_s"].dropna().to_numpy(dtype=float)
        lam = float(group["lambda_star"].mean())
        base = {"label": label, "x": float(xv), "lambda_star": lam, "seeds": len(group)}
        if stopped:
            rows.append({**base, "state": "unstable", "slope_lo": math.nan,
                         "slope_hi": math.nan, "evidence": "a seed exceeded run.max_in_system"})
            continue
        if slopes.size == 0:
            continue
        arrived = group["arrived_second_half"].sum()
        completion = float(group["done_second_half"].sum() / arrived) if arrived else None
        fluid = group["fluid_slope_tokens_per_s"].dropna()
        v = verdict(slopes, completion, fluid=float(fluid.mean()) if len(fluid) else None)
        rows.append({**base, "state": v.state, "slope_lo": v.slope.lo, "slope_hi": v.slope.hi,
                     "evidence": "; ".join(v.evidence)})
    return pd.DataFrame(rows, columns=["label", "x", "lambda_star", "seeds", "state",
                                       "slope_lo", "slope_hi", "evidence"])
