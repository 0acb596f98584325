"""Running one sweep point: simulate, measure what the catalogue and report read, write files.

``run_point`` is what every executor calls, in the parent (serial), in a pool worker or in a
Ray task. It never touches the catalogue: only the parent process writes that.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from servesim.core.errors import ServesimError
from servesim.experiments.sweep import Point

__all__ = ["METRIC_COLUMNS", "POINT_RECORD", "PointError", "PointResult", "describe",
           "point_dir", "read_record", "run_point", "write_point"]

POINT_RECORD = "point.json"

_STATS = ("mean", "p50", "p90", "p99")

# Catalogue columns a run fills in, with their DuckDB types, in catalogue order.
METRIC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("policy", "VARCHAR"),
    ("rate_per_s", "DOUBLE"),
    ("lambda_star", "DOUBLE"),
    ("load", "DOUBLE"),
    ("token_capacity", "DOUBLE"),
    ("mean_tokens", "DOUBLE"),
    ("horizon_s", "DOUBLE"),
    ("stop_reason", "VARCHAR"),
    ("arrived", "BIGINT"),
    ("completed", "BIGINT"),
    ("rejected", "BIGINT"),
    ("in_system_at_end", "BIGINT"),
    ("end_s", "DOUBLE"),
    ("throughput_rps", "DOUBLE"),
    ("throughput_tokens_per_s", "DOUBLE"),
    *((f"{metric}_{stat}_s", "DOUBLE") for metric in ("ttft", "tpot", "e2e") for stat in _STATS),
    ("preemptions", "BIGINT"),
    ("kv_capacity_blocks", "BIGINT"),
    ("kv_utilization_mean", "DOUBLE"),
    ("mean_batch_size", "DOUBLE"),
    ("non_work_conserving_fraction", "DOUBLE"),
    ("goodput_rps", "DOUBLE"),
    ("slo_attainment", "DOUBLE"),
    ("backlog_slope_tokens_per_s", "DOUBLE"),
    ("in_system_slope_per_s", "DOUBLE"),
    ("fluid_slope_tokens_per_s", "DOUBLE"),
    ("done_second_half", "BIGINT"),
    ("arrived_second_half", "BIGINT"),
    ("sim_wall_s", "DOUBLE"),
)


class PointError(ServesimError):
    """A sweep point failed; the message names the point and the original one-line error."""


@dataclass
class PointResult:
    """What a point hands back to the parent.

    Attributes:
        point_id: the point's key.
        record: the catalogue record: point_id, sweep, seed, params and ``row``, the values for
            ``METRIC_COLUMNS`` (missing ones are NULL).
        frames: (summary, requests, iterations) until written; kept only when the worker does
            not write them itself (Ray tasks, whose file system may not be the parent's).
        error: a one-line error message if the point failed with a ServesimError.
    """

    point_id: str
    record: dict[str, Any] = field(default_factory=dict)
    frames: tuple[dict[str, Any], pd.DataFrame, pd.DataFrame] | None = None
    error: str | None = None


def point_dir(out_dir: str | Path, point_id: str) -> Path:
    """The folder of one point: ``DIR/points/point_id=<id>`` (a Hive-style partition)."""
    return Path(out_dir) / "points" / f"point_id={point_id}"


def run_point(point: Point, base_dir: str | None, out_dir: str | None,
              sweep_name: str = "sweep") -> PointResult:
    """Simulate ``point``; write its files into its folder under ``out_dir`` when given,
    otherwise return them in ``frames`` for the parent to write.

    A ServesimError becomes ``error`` (exceptions with their own constructors do not survive
    pickling between processes); anything else propagates.
    """
    from servesim.api import SimResult, simulate
    from servesim.scenario import scenario_from_dict

    try:
        scenario = scenario_from_dict(point.table, base_dir=Path(base_dir) if base_dir else None)
        start = time.perf_counter()
        result: SimResult = simulate(scenario, seed=point.seed)
        wall = time.perf_counter() - start
    except ServesimError as e:
        return PointResult(point.point_id, error=f"{type(e).__name__}: {e}")
    record = {"point_id": point.point_id, "sweep": sweep_name, "seed": point.seed,
              "params": point.params, "row": _row(point, scenario, result, wall)}
    out = PointResult(point.point_id, record,
                      frames=(result.summary, result.requests, result.iterations))
    if out_dir is not None:
        write_point(out_dir, out)
    return out


def write_point(out_dir: str | Path, result: PointResult) -> None:
    """Write a point's tables and summary, then ``point.json`` (its catalogue record, with each
    file's size and hash) last: a folder whose files match its ``point.json`` holds a finished
    point."""
    from servesim.experiments.integrity import FILES_KEY, digest_files
    from servesim.experiments.outputs import OUTPUT_FILES, atomic_write, write_frames

    assert result.frames is not None
    folder = point_dir(out_dir, result.point_id)
    write_frames(*result.frames, folder)
    result.record[FILES_KEY] = digest_files(folder, OUTPUT_FILES)
    text = json.dumps(result.record, default=str)
    atomic_write(folder / POINT_RECORD, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    result.frames = None


def read_record(out_dir: str | Path, point_id: str) -> dict[str, Any] | None:
    """The catalogue record a finished point left in its folder, or None if it has none."""
    path = point_dir(out_dir, point_id) / POINT_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if record.get("point_id") == point_id else None


def describe(params: dict[str, Any], seed: Any) -> str:
    """A point's axis values and seed as ``engine.batching='orca', load=0.9, seed=2``."""
    return ", ".join([*(f"{k}={v!r}" for k, v in params.items()), f"seed={seed}"])


def _row(point: Point, scenario: Any, result: Any, wall_s: float) -> dict[str, Any]:
    s = result.summary
    rate = _rate(scenario)
    row: dict[str, Any] = {
        "policy": scenario.engine.batching,
        "rate_per_s": rate,
        "lambda_star": point.lambda_star,
        "load": rate / point.lambda_star if rate is not None and point.lambda_star > 0
        else None,
        "token_capacity": point.token_capacity,
        "mean_tokens": point.mean_tokens,
        "horizon_s": scenario.run.horizon_s,
        "sim_wall_s": wall_s,
    }
    for key in ("stop_reason", "arrived", "completed", "rejected", "in_system_at_end", "end_s",
                "throughput_rps", "throughput_tokens_per_s", "preemptions",
                "kv_capacity_blocks", "kv_utilization_mean", "mean_batch_size",
                "non_work_conserving_fraction", "goodput_rps", "slo_attainment"):
        row[key] = s.get(key)
    for metric in ("ttft", "tpot", "e2e"):
        stats = s.get(f"{metric}_s") or {}
        for stat in _STATS:
            row[f"{metric}_{stat}_s"] = stats.get(stat)
    row.update(_stability(scenario, result, rate, point))
    return {k: _clean(v) for k, v in row.items()}


def _rate(scenario: Any) -> float | None:
    arrival = scenario.workload.arrival
    rate = getattr(arrival, "rate_per_s", None) if arrival is not None else None
    return float(rate) if isinstance(rate, int | float) else None


def _stability(scenario: Any, result: Any, rate: float | None, point: Point) -> dict[str, Any]:
    """What the stability verdict needs from one seed: slopes and second-half counts."""
    from servesim.analysis.stability import fluid_slope
    from servesim.analysis.study import measure_run

    horizon = scenario.run.horizon_s
    if horizon is None or result.summary.get("stop_reason") == "max_in_system":
        return {}
    run = measure_run(result, horizon)
    out: dict[str, Any] = {
        "backlog_slope_tokens_per_s": run.w_slope,
        "in_system_slope_per_s": run.n_slope,
        "done_second_half": run.done,
        "arrived_second_half": run.arrived,
    }
    if rate is not None and math.isfinite(point.mean_tokens):
        out["fluid_slope_tokens_per_s"] = fluid_slope(rate, point.mean_tokens,
                                                      point.token_capacity)
    return out


def _clean(value: Any) -> Any:
    """NaN -> None (SQL NULL); numpy scalars -> Python numbers."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
