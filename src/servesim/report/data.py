"""What the report plots, read from a sweep folder: tables only, no plotting here."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from servesim.analysis.stability import step_values
from servesim.core.errors import ConfigError
from servesim.experiments.runner import point_dir
from servesim.experiments.store import one_line, open_views
from servesim.experiments.sweep import LOAD_AXIS, RATE_FIELD
from servesim.report.censored import censored_means
from servesim.report.limits import Limit, engine_limits
from servesim.report.stats import stability_table, truncation

__all__ = ["ReportData", "load_report_data"]

GRID_POINTS = 400
"""Samples per time series: enough for a smooth line, few enough for a small SVG."""
COMPOSITION_BINS = 60
"""Time bins of the batch-composition plot: coarse, since per-iteration batches are noisy."""


@dataclass
class ReportData:
    """Everything the figures need.

    Attributes:
        points: the catalogue (``points`` view), one row per finished point, plus ``label``:
            the policy and any other swept field except the load, and for truncated points
            the censored lower bounds of ``censored.CENSORED`` (NaN elsewhere).
        x: the load axis: ``load`` (lambda / lambda*) when every point has one, else
            ``rate_per_s``.
        reference: the x value at which distributions and time series are shown.
        requests: label, ttft_s and tpot_s of every request of the points at ``reference``.
        series: one time-series frame per label (the lowest seed at ``reference``); its
            constant column ``kv_peak_fraction`` is the run's exact peak KV use, which the
            sampled ``kv_fraction`` may step over.
        composition: prefill and decode tokens per iteration in time bins, same points.
        verdicts: ``stability_table(points, x)``, read by a figure and by the page's table.
        truncated: per (label, x), why its latencies are truncated ('' if they are not):
            ``stats.truncation``.
        limits: per label, the limit that binds first (``limits.engine_limits``).
    """

    points: pd.DataFrame
    x: str
    reference: float | None
    requests: pd.DataFrame
    series: dict[str, pd.DataFrame]
    composition: dict[str, pd.DataFrame]
    verdicts: pd.DataFrame
    truncated: dict[tuple, str]
    limits: dict[str, Limit]


def load_report_data(out_dir: str | Path) -> ReportData:
    """Read the catalogue, then the requests and iterations of the reference points.

    Raises ConfigError (one line) if the sweep folder cannot be read.
    """
    import duckdb

    con = open_views(out_dir)
    try:
        return _load(con, Path(out_dir))
    except duckdb.Error as e:
        raise ConfigError("DIR", str(out_dir),
                          f"a readable sweep folder ({one_line(str(e), 200)})") from None
    finally:
        con.close()


def _load(con, out: Path) -> ReportData:
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
    verdicts = stability_table(points, x)
    truncated = truncation(points, x, verdicts)
    summaries: dict[str, dict] = {}

    def summary(point_id: str) -> dict:
        if point_id not in summaries:
            summaries[point_id] = _summary(out, point_id)
        return summaries[point_id]

    cut = points[[bool(truncated.get((r.label, float(getattr(r, x))))) for r in
                  points.itertuples()]] if len(points) else points
    bounds = censored_means(con, cut, {p: float(summary(p).get("warmup_s") or 0.0)
                                       for p in cut["point_id"].astype(str)})
    points = points.merge(bounds, on="point_id", how="left")
    return ReportData(points=points, x=x, reference=reference, requests=requests,
                      series=series, composition=composition, verdicts=verdicts,
                      truncated=truncated, limits=engine_limits(con, points, summary))


def _summary(out: Path, point_id: str) -> dict:
    """A point's summary.json ({} if it cannot be read: the report then goes without)."""
    path = point_dir(out, point_id) / "summary.json"
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


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
    """N(t), W(t) and KV use (blocks and fraction of the cache) of one point, sampled on a
    regular time grid."""
    it = con.execute("SELECT * FROM iterations WHERE point_id = ? ORDER BY start_s",
                     [row.point_id]).df()
    if it.empty:
        return pd.DataFrame(columns=["t_s", "in_system", "backlog_tokens", "kv_blocks",
                                     "kv_fraction", "kv_peak_fraction"])
    end = float((it["start_s"] + it["duration_s"]).max())
    t = np.linspace(0.0, end, GRID_POINTS)
    capacity = row.kv_capacity_blocks if row.kv_capacity_blocks else math.nan
    blocks = step_values(it, "kv_blocks_used", t)
    return pd.DataFrame({
        "t_s": t,
        "in_system": step_values(it, "in_system", t),
        "backlog_tokens": step_values(it, "backlog_tokens", t),
        "kv_blocks": blocks,
        "kv_fraction": blocks / capacity,
    }).assign(kv_peak_fraction=float(it["kv_blocks_used"].max()) / capacity)


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
