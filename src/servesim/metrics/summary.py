"""Headline metrics of one run, from its request records and iteration series.

Conventions (``docs/outputs.md`` has the full list):

- Latency statistics and SLO attainment use the *measured requests*: finished requests that
  arrived at or after ``warmup_s``.
- Rates (throughput, goodput) count requests that finished in the *measured window*
  ``[warmup_s, end_s]`` and divide by its length ``duration_s = end_s - warmup_s``.
- Iteration statistics use iterations that started at or after ``warmup_s``.
- Counts of arrived, completed, rejected and in-system requests, and the preemption totals, cover
  the whole run.

Every value is JSON-ready: NaN (an empty sample, no SLO, no iterations) becomes None.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from servesim.scenario import SLOConfig

__all__ = ["LATENCY_COLUMNS", "add_latency_columns", "jsonable", "stats", "summarize"]

LATENCY_COLUMNS = ("ttft_s", "tpot_s", "e2e_s", "normalized_latency_s_per_token")
STAT_COLUMNS = (*LATENCY_COLUMNS, "max_token_gap_s")
PERCENTILES = (50, 90, 99)
IN_SYSTEM = ("running", "waiting", "swapped")


def add_latency_columns(requests: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of ``requests`` with the derived latency columns, seconds.

    - ``ttft_s`` = first_token_s - arrival_s;
    - ``tpot_s`` = (finish_s - first_token_s) / (output_tokens - 1), NaN if output_tokens == 1;
    - ``e2e_s`` = finish_s - arrival_s;
    - ``normalized_latency_s_per_token`` = e2e_s / output_tokens.

    Each is NaN where the request did not reach the event it needs.
    """
    df = requests.copy()
    arrival = df["arrival_s"].to_numpy(np.float64)
    first = df["first_token_s"].to_numpy(np.float64)
    finish = df["finish_s"].to_numpy(np.float64)
    output = df["output_tokens"].to_numpy(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        df["ttft_s"] = first - arrival
        df["tpot_s"] = np.where(output > 1, (finish - first) / (output - 1), np.nan)
        df["e2e_s"] = finish - arrival
        df["normalized_latency_s_per_token"] = (finish - arrival) / output
    return df


def stats(values: Any) -> dict[str, float | None]:
    """Return ``{mean, p50, p90, p99}`` of the non-NaN values (None for an empty sample).

    Percentiles interpolate linearly between order statistics (numpy's default method).
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return {"mean": None, **{f"p{q}": None for q in PERCENTILES}}
    out: dict[str, float | None] = {"mean": float(x.mean())}
    for q, v in zip(PERCENTILES, np.percentile(x, PERCENTILES), strict=True):
        out[f"p{q}"] = float(v)
    return out


def summarize(requests: pd.DataFrame, iterations: pd.DataFrame, *, end_s: float,
              warmup_s: float = 0.0, slo: SLOConfig | None = None, token_budget: int,
              kv_capacity_blocks: int | None = None, unservable: int | None = None,
              warnings: Sequence[str] = ()) -> dict[str, Any]:
    """Return the run's headline metrics as a JSON-ready dict (keys in ``docs/outputs.md``).

    ``requests`` needs the engine's request columns (the latency columns are added if missing);
    ``iterations`` the engine's iteration columns. ``end_s`` is the simulated clock at the stop,
    ``kv_capacity_blocks`` the KV cache size (None: ``kv_utilization_mean`` is null).
    ``unservable`` (requests the engine can never serve) and ``warnings`` (one-line strings) are
    echoed; a warning is added when the warm-up leaves nothing to measure.
    """
    if not set(LATENCY_COLUMNS) <= set(requests.columns):
        requests = add_latency_columns(requests)
    status = requests["status"].astype(str).to_numpy()
    finished = status == "finished"
    arrival = requests["arrival_s"].to_numpy(np.float64)
    finish = requests["finish_s"].to_numpy(np.float64)
    measured = finished & (arrival >= warmup_s)
    in_window = finished & (finish >= warmup_s) & (finish <= end_s)
    # A run that ends inside its warm-up has an empty window, never a negative one.
    duration = max(end_s - warmup_s, 0.0)
    rate = duration if duration > 0 else math.nan

    tokens = (requests["prompt_tokens"].to_numpy(np.float64)
              + requests["output_tokens"].to_numpy(np.float64))
    out: dict[str, Any] = {
        "arrived": int((status != "pending").sum()),
        "completed": int(finished.sum()),
        "rejected": int((status == "rejected").sum()),
        "in_system_at_end": int(np.isin(status, IN_SYSTEM).sum()),
        "measured_requests": int(measured.sum()),
        "completed_in_window": int(in_window.sum()),
        "end_s": float(end_s),
        "warmup_s": float(warmup_s),
        "duration_s": float(duration),
        "throughput_rps": in_window.sum() / rate,
        "throughput_tokens_per_s": tokens[in_window].sum() / rate,
    }
    sample = requests.loc[measured]
    for column in STAT_COLUMNS:
        out[column] = stats(sample[column]) if column in sample else stats([])
    for column in ("preemptions", "recomputed_tokens", "swapped_bytes"):
        out[column] = int(requests[column].sum()) if column in requests else 0
    out.update(_slo_metrics(requests, measured, in_window, slo, rate))
    out.update(_iteration_metrics(iterations, warmup_s, token_budget, kv_capacity_blocks))
    out["unservable"] = unservable
    out["warnings"] = [*warnings, *_window_warnings(end_s, warmup_s, arrival, status)]
    return jsonable(out)


def _window_warnings(end_s: float, warmup_s: float, arrival: np.ndarray,
                     status: np.ndarray) -> list[str]:
    """Say so when the warm-up leaves no window or no arrival to measure."""
    if warmup_s <= 0:
        return []
    if end_s <= warmup_s:
        return [f"the run ended at {end_s:g} s, within run.warmup_s = {warmup_s:g} s: the "
                "measured window is empty and no rate or latency was measured"]
    arrived = status != "pending"
    if arrived.any() and not (arrived & (arrival >= warmup_s)).any():
        return [f"no request arrived at or after run.warmup_s = {warmup_s:g} s: no latency was "
                "measured"]
    return []


def meets_slo(requests: pd.DataFrame, slo: SLOConfig) -> np.ndarray:
    """Boolean per request: every objective set in ``slo`` is met.

    A missing value (NaN) meets an objective only for ``tpot_s`` of a one-token output, which
    has no time per output token; an unfinished request meets nothing.
    """
    ok = requests["status"].astype(str).to_numpy() == "finished"
    for name in ("ttft_s", "tpot_s", "e2e_s"):
        limit = getattr(slo, name)
        if limit is None:
            continue
        value = requests[name].to_numpy(np.float64)
        ok &= (value <= limit) | (np.isnan(value) & (name == "tpot_s"))
    return ok


def _slo_metrics(requests: pd.DataFrame, measured: np.ndarray, in_window: np.ndarray,
                 slo: SLOConfig | None, rate: float) -> dict[str, Any]:
    if slo is None or slo.empty:
        return {"slo": None, "goodput_rps": None, "slo_attainment": None}
    ok = meets_slo(requests, slo)
    n = measured.sum()
    return {
        "slo": slo.describe(),
        "goodput_rps": (ok & in_window).sum() / rate,
        "slo_attainment": (ok & measured).sum() / n if n else None,
    }


def _iteration_metrics(iterations: pd.DataFrame, warmup_s: float, token_budget: int,
                       capacity: int | None) -> dict[str, Any]:
    it = iterations.loc[iterations["start_s"].to_numpy(np.float64) >= warmup_s]
    if len(it) == 0:
        return {"iterations": 0, "mean_batch_size": None, "kv_capacity_blocks": capacity,
                "kv_utilization_mean": None, "non_work_conserving_fraction": None}
    duration = it["duration_s"].to_numpy(np.float64)
    util = None
    if capacity and "kv_blocks_used" in it and duration.sum() > 0:
        used = it["kv_blocks_used"].to_numpy(np.float64)
        util = float((used / capacity * duration).sum() / duration.sum())
    work = it["prefill_tokens"].to_numpy(np.int64) + it["decode_tokens"].to_numpy(np.int64)
    nwc = None
    if "demand_tokens" in it:
        target = np.minimum(token_budget, it["demand_tokens"].to_numpy(np.int64))
        nwc = float((work < target).mean())
    return {
        "iterations": len(it),
        "mean_batch_size": float(it["batch_size"].mean()),
        "kv_capacity_blocks": capacity,
        "kv_utilization_mean": util,
        "non_work_conserving_fraction": nwc,
    }


def jsonable(value: Any) -> Any:
    """Return ``value`` with numpy scalars as Python numbers, NaN/inf as None, tuples as lists,
    paths and dates as strings, recursively."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [jsonable(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, _dt.date | _dt.time):
        return value.isoformat()
    return value
