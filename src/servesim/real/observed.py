"""Observed requests as the simulator's tables: ``requests.parquet``, ``iterations.parquet`` and
``summary.json``, written through ``servesim.experiments.outputs``.

``requests.parquet`` has the simulator's request columns (``REQUEST_COLUMNS``, the latency
columns of ``add_latency_columns``), same names, same units, seconds from the run start, plus:

- ``error`` (str, "" when none), ``token_times_s`` (list<double>, every output token's time),
  ``prompt_tokens_server`` (int, -1 unknown): what the server counted (``usage``, else its
  tokenize endpoint);
- ``prompt_tokens_requested``, ``output_tokens_requested``: what the workload asked for;
- ``sent_s`` (when the request left the client), ``http_status``, ``finish_reason``.

``prompt_tokens`` is what the server processed when it said (else what was asked) and
``output_tokens`` what it generated for a finished request (else what was asked), so a replay
of the table runs the requests the server actually served. ``status`` is "finished" (the
simulator's spelling), "failed", "timeout" or "refused" ("running"/"waiting" in an interrupted
run). Unknown engine-side columns: ``admitted_s`` NaN, ``preemptions``, ``recomputed_tokens``
and ``swapped_bytes`` 0 (the server's own preemption counter, when its ``/metrics`` has one, is
in the summary's ``server.counters_delta``).

``iterations.parquet`` is derived, not measured: the number waiting (arrived, no token yet) and
running (streaming) and the backlog of owed tokens on a uniform time grid, so the run's verdict
and the plots of requests in system work on observed runs as on simulated ones. The summary's
iteration metrics (batch size, KV use) stay null: the client cannot see the engine's steps.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from servesim.engine.state import ITERATION_COLUMNS, REQUEST_COLUMNS, iteration_frame
from servesim.metrics.summary import add_latency_columns, jsonable, stats, summarize

__all__ = ["EXTRA_COLUMNS", "GRID_POINTS", "begin_output", "derived_iterations", "server_info",
           "summarize_observed",
           "observed_frame", "observed_summary", "request_frame", "write_observed"]

EXTRA_COLUMNS = ("error", "token_times_s", "prompt_tokens_server", "prompt_tokens_requested",
                 "output_tokens_requested", "sent_s", "http_status", "finish_reason")
GRID_POINTS = 2000
"""Points of the derived iteration grid over the run (at least 1 ms apart)."""
_INT = ("id", "prompt_tokens", "output_tokens", "generated_tokens", "preemptions",
        "recomputed_tokens", "prompt_tokens_server", "prompt_tokens_requested",
        "output_tokens_requested", "http_status")
_FLOAT = ("arrival_s", "admitted_s", "first_token_s", "finish_s", "swapped_bytes",
          "max_token_gap_s", "sent_s")


def request_frame(columns: dict[str, Any]) -> pd.DataFrame:
    """The requests table from per-request columns (``token_times_s`` a list of sequences),
    with the simulator's dtypes; missing engine-side columns get their unknown values."""
    n = len(columns["id"])
    defaults: dict[str, Any] = {"admitted_s": math.nan, "preemptions": 0,
                                "recomputed_tokens": 0, "swapped_bytes": 0.0, "error": "",
                                "prompt_tokens_server": -1, "sent_s": math.nan,
                                "http_status": 0, "finish_reason": "", "class": "default"}
    data: dict[str, Any] = {}
    for name in (*REQUEST_COLUMNS, *EXTRA_COLUMNS):
        if name in columns:
            data[name] = columns[name]
        elif name in defaults:
            data[name] = [defaults[name]] * n
        elif name == "prompt_tokens_requested":
            data[name] = columns["prompt_tokens"]
        elif name == "output_tokens_requested":
            data[name] = columns["output_tokens"]
    times = [np.asarray(t, np.float64) for t in data["token_times_s"]]
    data["token_times_s"] = times
    if "generated_tokens" not in columns:
        data["generated_tokens"] = [len(t) for t in times]
    if "max_token_gap_s" not in columns:
        data["max_token_gap_s"] = [float(np.diff(t).max()) if len(t) > 1 else math.nan
                                   for t in times]
    df = pd.DataFrame({k: data[k] for k in (*REQUEST_COLUMNS, *EXTRA_COLUMNS)})
    for name in _INT:
        df[name] = df[name].astype(np.int64)
    for name in _FLOAT:
        df[name] = df[name].astype(np.float64)
    for name in ("class", "status", "error", "finish_reason"):
        df[name] = df[name].astype(str)
    return df


def observed_frame(run: Any) -> pd.DataFrame:
    """The requests table of an ``ObservedRun`` (see the module docstring for the columns)."""
    cols: dict[str, list[Any]] = {name: [] for name in (
        "id", "class", "arrival_s", "prompt_tokens", "output_tokens", "status", "first_token_s",
        "finish_s", "token_times_s", "error", "prompt_tokens_server", "prompt_tokens_requested",
        "output_tokens_requested", "sent_s", "http_status", "finish_reason")}
    for rec in run.records:
        out = rec.outcome
        times = out.token_times_s()
        server = out.prompt_tokens_server if out.prompt_tokens_server >= 0 else \
            (rec.fitted_tokens if rec.fitted_tokens is not None else -1)
        finished = out.status == "finished"
        row = {"id": rec.id, "class": rec.class_name, "arrival_s": rec.arrival_s,
               "prompt_tokens": server if server > 0 else rec.prompt_tokens,
               "output_tokens": len(times) if finished and times else rec.output_tokens,
               "status": out.status,
               "first_token_s": times[0] if times else math.nan,
               "finish_s": times[-1] if finished and times else math.nan,
               "token_times_s": times, "error": out.error or _short_output(out, rec, times),
               "prompt_tokens_server": server, "prompt_tokens_requested": rec.prompt_tokens,
               "output_tokens_requested": rec.output_tokens, "sent_s": out.sent_s,
               "http_status": out.http_status, "finish_reason": out.finish_reason}
        for name, value in row.items():
            cols[name].append(value)
    return request_frame(cols)


def _short_output(out: Any, rec: Any, times: list[float]) -> str:
    if out.status == "finished" and len(times) != rec.output_tokens:
        return f"the server generated {len(times)} tokens, {rec.output_tokens} were asked for"
    return ""


def derived_iterations(requests: pd.DataFrame, end_s: float,
                       points: int = GRID_POINTS) -> pd.DataFrame:
    """A uniform grid over [0, end_s]: per step, the requests waiting and running at its start,
    the owed tokens (prompt until the first token, then the output not yet streamed), the tokens
    streamed and the prompts completed during it (see the module docstring)."""
    if not end_s > 0 or len(requests) == 0:
        return iteration_frame({c: [] for c in ITERATION_COLUMNS})
    step = max(end_s / points, 1e-3)
    m = int(math.ceil(end_s / step)) + 1
    grid = np.arange(m) * step

    def index(t: np.ndarray) -> np.ndarray:   # first grid point at or after t
        t = np.where(np.isnan(t), np.inf, t)
        return np.minimum(np.ceil(t / step - 1e-9), m).astype(np.int64)

    arrival = requests["arrival_s"].to_numpy(np.float64)
    first = requests["first_token_s"].to_numpy(np.float64)
    times = requests["token_times_s"].tolist()
    last = np.array([t[-1] if len(t) else np.nan for t in times])
    gone = np.where(np.isnan(last), requests["sent_s"].to_numpy(np.float64), last)
    status = requests["status"].to_numpy()
    gone = np.where(np.isin(status, ("running", "waiting")), np.inf, gone)
    gone = np.where(np.isnan(gone), arrival, gone)
    a, f, g = index(arrival), np.minimum(index(first), index(gone)), index(gone)
    prompt = requests["prompt_tokens"].to_numpy(np.int64)
    output = requests["output_tokens"].to_numpy(np.int64)

    def span(lo: np.ndarray, hi: np.ndarray, weight: np.ndarray) -> np.ndarray:
        diff = np.zeros(m + 1)
        np.add.at(diff, lo, weight)
        np.add.at(diff, hi, -weight)
        return np.cumsum(diff)[:m]

    ones = np.ones(len(a))
    waiting = span(a, f, ones)
    running = span(f, g, ones)
    owed = span(a, g, output.astype(float)) + span(a, f, prompt.astype(float))
    flat = np.concatenate([np.asarray(t, np.float64) for t in times]) if times else np.empty(0)
    owner_gone = np.repeat(g, [len(t) for t in times])
    owed -= span(index(flat), owner_gone, np.ones(len(flat)))
    decode = np.bincount(np.minimum(index(flat), m - 1), minlength=m)[1:]
    firsts = ~np.isnan(first)
    prefill = np.bincount(np.minimum(index(first[firsts]), m - 1), weights=prompt[firsts],
                          minlength=m)[1:]
    cols = {"start_s": grid[:-1], "duration_s": np.full(m - 1, step),
            "prefill_tokens": prefill, "decode_tokens": decode,
            "batch_size": running[:-1], "kv_blocks_used": np.zeros(m - 1),
            "waiting": waiting[:-1], "running": running[:-1],
            "backlog_tokens": np.maximum(owed[:-1], 0), "demand_tokens": np.maximum(owed[:-1], 0)}
    return iteration_frame({k: np.rint(v) if k not in ("start_s", "duration_s") else v
                            for k, v in cols.items()})


def observed_summary(requests: pd.DataFrame, iterations: pd.DataFrame, *, end_s: float,
                     header: dict[str, Any], extras: dict[str, Any], warmup_s: float = 0.0,
                     slo: Any = None, token_budget: int = 0,
                     interrupted: int | None | bool = False) -> dict[str, Any]:
    """The simulator's summary of observed ``requests`` (``summarize``, the run's verdict over
    the derived ``iterations``), with ``header`` first and the observed ``extras`` after."""
    from servesim.analysis.run_verdict import run_verdict
    from servesim.engine.stop import signal_name

    empty = iteration_frame({c: [] for c in ITERATION_COLUMNS})
    metrics = summarize(requests, empty, end_s=end_s, warmup_s=warmup_s, slo=slo,
                        token_budget=token_budget)
    status = requests["status"].to_numpy()
    stop_reason = "drained"
    state: dict[str, Any] = {"complete": True, "status": "complete"}
    if interrupted is not False:
        stop_reason = "interrupted"
        state = {"complete": False, "status": "interrupted",
                 "error": f"interrupted ({signal_name(interrupted)}) at {end_s:.6g} s: the "
                          f"tables cover the {len(requests)} requests sent or due by then"}
    counts = {s: int((status == s).sum()) for s in ("finished", "failed", "timeout", "refused",
                                                    "running", "waiting")}
    sent = requests["sent_s"].to_numpy(np.float64) - requests["arrival_s"].to_numpy(np.float64)
    summary = {**state, **header, "source": "observed",
               "stopped_early": bool(counts["running"] + counts["waiting"]),
               "stop_reason": stop_reason, **metrics, "statuses": counts,
               "client_wait_s": stats(sent), **extras}
    summary["warnings"] = [*metrics.get("warnings", []), *extras.get("warnings", [])]
    summary["iterations_source"] = ("derived from the observed token times on a uniform grid "
                                    "(waiting, running, owed tokens); not engine steps")
    summary["verdict"] = run_verdict(add_latency_columns(requests), iterations, end_s=end_s,
                                     stop_reason=stop_reason)
    return jsonable(summary)


def begin_output(out_dir: str | Path, header: dict[str, Any]) -> Path:
    """Create ``out_dir``, remove tables an earlier run left there and write a summary saying
    ``"complete": false, "status": "running"``."""
    from servesim.experiments.outputs import ITERATIONS, REQUESTS, write_summary

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in (REQUESTS, ITERATIONS):
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
    write_summary({"complete": False, "status": "running", **header}, out)
    return out


def write_observed(summary: dict[str, Any], requests: pd.DataFrame, iterations: pd.DataFrame,
                   out_dir: str | Path) -> Path:
    """Write the tables, then the summary, into ``out_dir`` (``write_frames``); return it."""
    from servesim.experiments.outputs import write_frames

    return write_frames(summary, add_latency_columns(requests), iterations, out_dir)


def summarize_observed(run: Any, server_params: dict[str, Any] | None = None
                       ) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """The summary, requests table and derived iterations of an ``ObservedRun``.

    ``server_params`` (what the user says the server runs with, e.g. ``max_num_seqs``) join
    what the server reports under ``summary["server"]``.
    """
    from servesim.api import run_header

    requests = observed_frame(run)
    iterations = derived_iterations(requests, run.end_s)
    scenario = run.scenario
    synthetic = run.prompts.startswith("synthetic")
    server_count = requests["prompt_tokens_server"].to_numpy()
    asked = requests["prompt_tokens_requested"].to_numpy()
    mismatches = int(((server_count >= 0) & (server_count != asked)).sum()) if synthetic else 0
    extras = {"endpoint": run.endpoint, "model": run.model, "api": run.api, "loop": run.loop,
              "prompts": run.prompts, "started_at": run.started_at,
              "concurrency": run.concurrency, "timeout_s": run.timeout_s,
              "load_average": run.load_average, "server": server_info(run.server, server_params),
              "prompt_token_mismatches": mismatches,
              "prompt_token_check": "server count against the requested length" if synthetic
              else "none: real prompts take the server's count as their length",
              "warnings": list(run.warnings)}
    summary = observed_summary(requests, iterations, end_s=run.end_s,
                               header=run_header(scenario, run.seed), extras=extras,
                               warmup_s=scenario.run.warmup_s, slo=scenario.slo,
                               token_budget=scenario.engine.token_budget,
                               interrupted=run.interrupted)
    return summary, requests, iterations


def server_info(server: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the server said about itself: the models it lists (with ``max_model_len`` where
    given), the labels of its config gauges, the change of its counters over the run (such as
    vLLM's preemptions), and the user's ``params``."""
    models = server.get("models") or []
    out: dict[str, Any] = {"models": [m.get("id") for m in models]}
    lengths = [m["max_model_len"] for m in models if isinstance(m.get("max_model_len"), int)]
    if lengths:
        out["max_model_len"] = lengths[0]
    before, after = server.get("metrics_before"), server.get("metrics_after")
    if after is not None:
        out["config"] = after.get("config", {})
        old = (before or {}).get("counters", {})
        out["counters_delta"] = {k: v - old.get(k, 0.0) for k, v in after["counters"].items()
                                 if v - old.get(k, 0.0) != 0}
    out["metrics_endpoint"] = after is not None
    out.update(params or {})
    return out
