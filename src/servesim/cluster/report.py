"""Metrics of network runs: per engine, per class (hop) and per workflow (task), and the
stability verdict of a network from runs over seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from servesim.analysis.stability import (
    SlopeCI,
    Verdict,
    backlog_slope,
    envelope_growth,
    slope_ci,
    step_values,
    verdict,
    window_counts,
)
from servesim.cluster.sim import NetworkRun
from servesim.cluster.theory import NetworkTheory
from servesim.metrics.summary import stats

__all__ = ["class_table", "engine_table", "network_series", "network_verdict", "rate_ci",
           "workflow_table"]


def network_series(run: NetworkRun) -> pd.DataFrame:
    """The whole network as one iteration-like series: at every iteration end of any engine,
    the sums over engines of waiting, running and backlog_tokens (each engine's value after
    its latest finished iteration). ``duration_s`` is 0, so ``step_values`` and
    ``backlog_slope`` read it as they read one engine's iterations."""
    frames = [it for it in run.iterations.values() if len(it)]
    if not frames:
        return pd.DataFrame({c: [] for c in ("start_s", "duration_s", "waiting", "running",
                                             "backlog_tokens")})
    times = np.unique(np.concatenate([(f["start_s"] + f["duration_s"]).to_numpy()
                                      for f in frames]))
    out = {"start_s": times, "duration_s": np.zeros_like(times)}
    for col in ("waiting", "running", "backlog_tokens"):
        out[col] = sum(step_values(f, col, times) for f in frames)
    return pd.DataFrame(out)


def _window(run: NetworkRun) -> tuple[float, float]:
    return run.warmup_s, max(run.end_s, run.warmup_s)


def _span(runs: Sequence[NetworkRun]) -> float:
    return sum(hi - lo for lo, hi in map(_window, runs))


def _engine_rows(run: NetworkRun, theory: NetworkTheory) -> list[dict[str, Any]]:
    lo, hi = _window(run)
    span = hi - lo
    rows = []
    for name, it in run.iterations.items():
        pool = run.pools[name]
        reps = sum(1 for p in run.pools.values() if p == pool)
        mu = theory.capacity[pool].value / reps
        rho = theory.loads.loads[pool].value
        inside = it[(it["start_s"] >= lo) & (it["start_s"] < hi)]
        tokens = float((inside["prefill_tokens"] + inside["decode_tokens"]).sum())
        rate = tokens / span if span > 0 else math.nan
        rows.append({"engine": name, "pool": pool, "theory_rho": rho,
                     "theory_tokens_per_s": rho * mu, "measured_tokens_per_s": rate,
                     "measured_load": rate / mu,
                     "busy_fraction": float(inside["duration_s"].sum()) / span
                     if span > 0 else math.nan,
                     "capacity_tokens_per_s": mu})
    return rows


def engine_table(runs: Sequence[NetworkRun], theory: NetworkTheory,
                 confidence: float = 0.99) -> pd.DataFrame:
    """Per replica: the theoretical rho_j of its pool and its token rate rho_j * mu*_j, next
    to the measured token throughput (prefill + decode tokens of iterations starting in
    [warmup, end], per second) averaged over the runs with its t-based CI over seeds
    (``lo``/``hi``; infinite with one run), the measured load (throughput / mu*) and the
    busy fraction. ``within_ci`` says whether the theoretical rate lies in the CI."""
    per_seed = pd.DataFrame([row for r in runs for row in _engine_rows(r, theory)])
    rows = []
    for name, g in per_seed.groupby("engine", sort=False):
        lo, hi = rate_ci(g["measured_tokens_per_s"], confidence)
        first = g.iloc[0]
        rows.append({"engine": name, "pool": first["pool"], "theory_rho": first["theory_rho"],
                     "measured_load": float(g["measured_load"].mean()),
                     "theory_tokens_per_s": first["theory_tokens_per_s"],
                     "measured_tokens_per_s": float(g["measured_tokens_per_s"].mean()),
                     "lo": lo, "hi": hi,
                     "within_ci": bool(lo <= first["theory_tokens_per_s"] <= hi),
                     "busy_fraction": float(g["busy_fraction"].mean()),
                     "capacity_tokens_per_s": first["capacity_tokens_per_s"]})
    return pd.DataFrame(rows)


def _stats(values: np.ndarray) -> dict[str, float]:
    # The engine's mean/percentile rule; NaN rather than None for no sample keeps columns float.
    return {k: math.nan if v is None else v for k, v in stats(values).items()}


def _pooled(runs: Sequence[NetworkRun], attr: str) -> pd.DataFrame:
    frames = []
    for r in runs:
        f = getattr(r, attr)
        frames.append(f[f["arrival_s"] >= r.warmup_s].assign(_lo=r.warmup_s))
    return pd.concat(frames, ignore_index=True)


def _finishes(runs: Sequence[NetworkRun]) -> pd.Series:
    """Per class, visits finishing inside [warm-up, end], pooled over runs."""
    counts = []
    for r in runs:
        lo, hi = _window(r)
        f = r.visits
        inside = f[(f["status"] == "finished") & (f["finish_s"] >= lo) & (f["finish_s"] <= hi)]
        counts.append(inside["class"].value_counts())
    return pd.concat(counts, axis=1).fillna(0).sum(axis=1) if counts else pd.Series(dtype=float)


def class_table(runs: Sequence[NetworkRun], theory: NetworkTheory | None = None) -> pd.DataFrame:
    """Per class, pooled over runs: visits arriving after warm-up, those finished, the
    finishing rate (visits finishing inside [warm-up, end] / summed window, so a visit that
    arrived before warm-up and finished inside counts, and one still in service at the end
    does not: an unbiased rate whatever the hop time), the traffic-equation rate, and hop time
    (visit arrival to finish) and TTFT statistics of the finished visits."""
    v = _pooled(runs, "visits")
    span = _span(runs)
    finishes = _finishes(runs)
    rows = []
    names = sorted(theory.rates) if theory is not None else sorted(v["class"].unique())
    for k in names:
        mine = v[v["class"] == k]
        done = mine[mine["status"] == "finished"]
        hop = (done["finish_s"] - done["arrival_s"]).to_numpy()
        ttft = (done["first_token_s"] - done["arrival_s"]).to_numpy()
        inside = int(finishes.get(k, 0))
        row: dict[str, Any] = {"class": k, "visits": len(mine), "finished": len(done),
                               "finishes_in_window": inside,
                               "rate_per_s": inside / span if span > 0 else math.nan}
        if theory is not None:
            row["theory_rate_per_s"] = theory.rates[k].value
        row.update({f"hop_{a}_s": b for a, b in _stats(hop).items()})
        row["ttft_mean_s"] = float(ttft.mean()) if len(ttft) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def workflow_table(runs: Sequence[NetworkRun]) -> pd.DataFrame:
    """Per workflow, pooled over runs: tasks arrived after warm-up, finished, failed, and the
    end-to-end time (task arrival to its last step's finish) of the finished ones: mean, p50,
    p90, p99."""
    t = _pooled(runs, "tasks")
    rows = []
    for w in sorted(t["workflow"].unique()):
        mine = t[t["workflow"] == w]
        done = mine[mine["status"] == "finished"]
        rows.append({"workflow": w, "tasks": len(mine), "finished": len(done),
                     "failed": int((mine["status"] == "failed").sum()),
                     **{f"e2e_{a}_s": b for a, b in _stats(done["e2e_s"].to_numpy()).items()}})
    return pd.DataFrame(rows)


def rate_ci(values: Sequence[float], confidence: float = 0.99) -> tuple[float, float]:
    """t-based CI of a mean over seeds (the same rule as ``slope_ci``)."""
    ci = slope_ci(values, confidence)
    return ci.lo, ci.hi


def network_verdict(runs: Sequence[NetworkRun], confidence: float = 0.99) -> Verdict:
    """Stability of a network from runs of it over seeds.

    Per seed: the slope of the requests in system at the engines N(t) (summed over engines;
    the verdict's backlog slope) and of their token backlog W(t) (reported only) over the
    second half of the horizon; tasks finishing and arriving in [H/2, H], pooled
    over seeds; the envelope growth of the first seed's N(t) (10 windows). These go to
    ``analysis.stability.verdict``. A run stopped by ``max_in_system`` is overloaded by
    construction: the verdict is "unstable" with that as its evidence. Failed tasks (a visit
    longer than its engine can ever serve) are left out of the completion ratio and reported
    on a line of their own: they are lost work, not a queue that grows. Runs in which no task
    arrived give "inconclusive".
    """
    capped = [r for r in runs if r.stopped_by_cap]
    if capped:
        ci = SlopeCI(math.inf, math.nan, len(capped), math.inf, math.inf, confidence)
        return Verdict("unstable", [f"{len(capped)} of {len(runs)} runs exceeded max_in_system "
                                    f"(first at {capped[0].end_s:.4g} s)"], ci, None, None)
    if not any(len(r.tasks) for r in runs):
        ci = SlopeCI(math.nan, math.nan, len(runs), -math.inf, math.inf, confidence)
        return Verdict("inconclusive", [f"no task arrived in any of {len(runs)} runs: nothing "
                                        "to judge"], ci, None, None)
    w, n, done, arrived, first, failed = [], [], 0, 0, None, 0
    for r in runs:
        series = network_series(r)
        first = series if first is None else first
        w.append(backlog_slope(series, r.horizon_s))
        n.append(backlog_slope(series, r.horizon_s, column="in_system"))
        lost = r.tasks["status"] == "failed"
        failed += int(lost.sum())
        d, a = window_counts(r.tasks[~lost], r.horizon_s / 2, r.horizon_s)
        done, arrived = done + d, arrived + a
    env = None
    if first is not None and len(first) >= 3:
        grid = np.linspace(0, runs[0].horizon_s, 1000)
        env = envelope_growth(grid, step_values(first, "in_system", grid), confidence=confidence)
    completion = done / arrived if arrived else None
    # N(t), not W(t), is the primary series: an engine's backlog counts only the tokens owed
    # at that engine, and a short first step still owes its task's long later steps.
    out = verdict(n, completion, confidence=confidence, envelope=env)
    out.evidence[0] = out.evidence[0].replace("backlog slope", "number-in-system slope N(t)", 1)
    wci = slope_ci(w, confidence)
    out.evidence.insert(1, f"engine-token backlog W(t) slope {wci.mean:.4g} tokens/s; CI "
                           f"[{wci.lo:.4g}, {wci.hi:.4g}] (reported only)")
    if failed:
        total = sum(len(r.tasks) for r in runs)
        out.evidence.append(f"{failed} of {total} tasks failed (a visit its engine can never "
                            "serve); left out of the completion ratio")
    return out
