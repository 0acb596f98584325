"""Replay an observed run through the simulator and measure the error per metric.

An observed run (``servesim observe``) is a folder with ``requests.parquet`` in the simulator's
request schema plus ``token_times_s`` (every output token's time) and, optionally,
``summary.json``. The replay builds the very same request list (arrival times, prompt and
output lengths) as a ``Requests`` and runs it on the reference stepper with the scenario's
batching system, budgets, KV cache and cost model, keeping every request's token times.

Choices, stated once:

- Rows the server refused (``status == "refused"``) never reached the engine and are not
  replayed. Failed and timed-out rows are replayed with their full lengths: they loaded the
  engine while they ran, and the simulator does not model a client giving up.
- Arrivals are the observed ``arrival_s`` (a client's lag in sending is part of what it
  observed). ``--request-overhead-ms`` delays each request's entry into the simulated engine
  by the server's per-request overhead, which ``calibrate`` estimates; latencies still count
  from the observed arrival.
- A row's prompt length is the server's count (``prompt_tokens_server``) when it is known
  (> 0), else the requested ``prompt_tokens``: the engine prefilled what it tokenized.
- Latency metrics compare only the requests that finished in both runs. Inter-token latency
  (ITL) pools every gap between consecutive tokens of those requests; TPOT is
  (E2E - TTFT) / (output - 1). Throughput is each side's finished requests over the span from
  the first arrival to its last finish.
- The stability verdict is ``analysis.run_verdict`` applied to both record sets alike: its
  backlog and number-in-system series are rebuilt from each run's records (arrivals, token
  times, finishes), since an observed run has no iteration series. The simulator's own
  verdict over its iterations is reported beside it.
- ``rel_error = (simulated - observed) / observed``. The per-request E2E error is the median of
  the absolute per-request relative errors (the signed median is reported too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from servesim.core.errors import ConfigError
from servesim.metrics.summary import add_latency_columns, jsonable, stats
from servesim.real.fidelity_input import (
    REQUIRED_COLUMNS,
    Observed,
    load_observed,
    replay_prompt_tokens,
    server_warnings,
)

__all__ = ["METRICS", "REQUIRED_COLUMNS", "FidelityResult", "Observed", "Replay", "compare",
           "load_observed", "records_series", "replay", "run_fidelity"]

METRICS = ("ttft_s", "itl_s", "tpot_s", "e2e_s")
STATS = ("mean", "p50", "p90", "p99")
NOT_REPLAYED = ("refused",)



@dataclass
class Replay:
    """The simulated run of an observed request list.

    Attributes:
        records: one row per replayed request, sorted by arrival, with the latency columns,
            ``token_times_s`` and ``observed_row`` (the row of the observed file it replays).
        iterations: the engine's iteration series.
        token_times: per replayed request, its tokens' times.
        end_s: the simulated clock at the end.
        stop_reason: the engine's stop reason.
    """

    records: pd.DataFrame
    iterations: pd.DataFrame
    token_times: list[np.ndarray]
    end_s: float
    stop_reason: str


@dataclass
class FidelityResult:
    """``report`` is the JSON object ``servesim fidelity --json`` prints."""

    report: dict[str, Any]
    observed: Observed
    replay: Replay
    warnings: list[str] = field(default_factory=list)


# -- replay -----------------------------------------------------------------------------------


def replayed_rows(observed: Observed) -> np.ndarray:
    """Indices of the observed rows to replay (all but refused), in arrival order."""
    status = observed.records["status"].astype(str).to_numpy()
    keep = np.flatnonzero(~np.isin(status, NOT_REPLAYED))
    arrival = observed.records["arrival_s"].to_numpy(np.float64)[keep]
    return keep[np.argsort(arrival, kind="stable")]


def replay(observed: Observed, scenario: Any, request_overhead_s: float = 0.0) -> Replay:
    """Run the observed request list through ``scenario``'s engine on the reference stepper.

    ``request_overhead_s`` delays each request's entry into the engine by the server's
    per-request overhead (HTTP, tokenizing; ``calibrate`` estimates it) while its latencies
    still count from its observed arrival.

    Raises ConfigError if the scenario orders requests other than FCFS (the observed engines
    serve first come, first served), replays no request, or the overhead is not a time >= 0.
    """
    from servesim.engine.reference import ReferenceStepper
    from servesim.workload.requests import Requests

    if scenario.schedule.ordered:
        raise ConfigError("schedule", "an ordering or predictor", "none: fidelity replays "
                          "first-come-first-served engines (drop the [schedule] table)")
    rows = replayed_rows(observed)
    if not len(rows):
        raise ConfigError(str(observed.path), "only refused requests",
                          "at least one request that reached the engine")
    if not 0 <= request_overhead_s < 1e6:
        raise ConfigError("--request-overhead-ms", request_overhead_s * 1e3,
                          "a time >= 0 milliseconds")
    obs = observed.records
    arrival = obs["arrival_s"].to_numpy(np.float64)[rows]
    requests = Requests.from_lists(arrival + request_overhead_s,
                                   replay_prompt_tokens(obs)[rows],
                                   obs["output_tokens"].to_numpy(np.int64)[rows])
    stepper = ReferenceStepper(requests, scenario.engine, scenario.cost)
    run = stepper.run()
    # The reference keeps each request's token times; the records keep only the first and the
    # largest gap.
    times = [np.asarray(r.token_times, dtype=np.float64) for r in stepper.reqs[:len(run.requests)]]
    records = run.requests.copy()
    records["arrival_s"] = arrival[:len(records)]
    records = add_latency_columns(records)
    records["observed_row"] = rows[:len(records)]
    records["token_times_s"] = times
    return Replay(records, run.iterations, times, float(run.end_s), run.stop_reason)


# -- the verdict from records -----------------------------------------------------------------


def records_series(records: pd.DataFrame, token_times: list[np.ndarray]) -> pd.DataFrame:
    """An iteration-like series rebuilt from request records, for ``run_verdict``.

    One row per event (arrival, token, end of a request) with zero duration; ``waiting`` counts
    requests arrived without a first token, ``running`` those between first token and end, and
    ``backlog_tokens`` the prompt tokens not yet answered by a first token plus the output
    tokens not yet emitted. A request that never finished leaves at its finish time if it has
    one, else at its last token (or its arrival).
    """
    arrival = records["arrival_s"].to_numpy(np.float64)
    prompt = records["prompt_tokens"].to_numpy(np.float64)
    output = records["output_tokens"].to_numpy(np.float64)
    finish = records["finish_s"].to_numpy(np.float64)
    n_tok = np.array([len(t) for t in token_times], dtype=np.float64)
    # Without token times (a benchmark that kept only TTFT), the first token's column.
    first = np.array([t[0] if len(t) else np.nan for t in token_times])
    if "first_token_s" in records.columns:
        first = np.where(np.isfinite(first), first,
                         records["first_token_s"].to_numpy(np.float64))
    last = np.array([t[-1] if len(t) else a for t, a in zip(token_times, arrival, strict=True)])
    end = np.where(np.isfinite(finish), finish, last)
    started = np.isfinite(first)
    parts = [
        (arrival, 1.0, 0.0, prompt + output),
        (first[started], -1.0, 1.0, -prompt[started]),
        (end[started], 0.0, -1.0, -np.maximum(output - n_tok, 0)[started]),
        (end[~started], -1.0, 0.0, -(prompt + output)[~started]),
    ]
    tokens = np.concatenate([np.empty(0), *token_times])
    t = np.concatenate([p[0] for p in parts] + [tokens])
    dw = np.concatenate([np.full(len(p[0]), p[1]) for p in parts] + [np.zeros(len(tokens))])
    dr = np.concatenate([np.full(len(p[0]), p[2]) for p in parts] + [np.zeros(len(tokens))])
    db = np.concatenate([p[3] for p in parts] + [-np.ones(len(tokens))])
    order = np.argsort(t, kind="stable")
    return pd.DataFrame({"start_s": t[order], "duration_s": np.zeros(len(t)),
                         "waiting": np.cumsum(dw[order]), "running": np.cumsum(dr[order]),
                         "backlog_tokens": np.cumsum(db[order])})


def records_verdict(records: pd.DataFrame, token_times: list[np.ndarray]) -> dict[str, Any]:
    """``run_verdict`` over the series ``records_series`` rebuilds."""
    from servesim.analysis.run_verdict import run_verdict

    series = records_series(records, token_times)
    end_s = float(series["start_s"].max()) if len(series) else 0.0
    return run_verdict(records, series, end_s=end_s, stop_reason="drained")


# -- comparing --------------------------------------------------------------------------------


def _rel(sim: float | None, obs: float | None) -> float | None:
    if sim is None or obs is None or not np.isfinite(sim) or not np.isfinite(obs) or obs == 0:
        return None
    return (sim - obs) / obs


def _triple(obs: float | None, sim: float | None) -> dict[str, float | None]:
    return {"observed": obs, "simulated": sim, "rel_error": _rel(sim, obs)}


def _metric(obs_values: np.ndarray, sim_values: np.ndarray) -> dict[str, Any]:
    o, s = stats(obs_values), stats(sim_values)
    return {k: _triple(o[k], s[k]) for k in STATS}


def _throughput(records: pd.DataFrame, finished: np.ndarray) -> float | None:
    if not finished.any():
        return None
    span = float(records["finish_s"].to_numpy(np.float64)[finished].max()
                 - records["arrival_s"].to_numpy(np.float64).min())
    return float(finished.sum()) / span if span > 0 else None


def _gaps(times: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.empty(0), *(np.diff(t) for t in times)])


def _counts(observed: Observed, rows: np.ndarray, obs: pd.DataFrame, sim: Replay,
            both: np.ndarray) -> dict[str, int]:
    """How many requests were observed, replayed, finished on each side and compared."""
    status = obs["status"].astype(str).to_numpy()
    sim_status = sim.records["status"].astype(str).to_numpy()
    asked = observed.records["prompt_tokens"].to_numpy()[rows]
    return {
        "observed_rows": len(observed.records), "replayed": len(rows),
        "not_replayed_refused": len(observed.records) - len(rows),
        "finished_observed": int((status == "finished").sum()),
        "finished_simulated": int((sim_status == "finished").sum()),
        "rejected_simulated": int((sim_status == "rejected").sum()),
        "compared": int(both.sum()),
        "prompt_tokens_from_server": int((obs["prompt_tokens"].to_numpy() != asked).sum()),
        "itl_gaps_compared": int(sum(max(len(sim.token_times[i]) - 1, 0)
                                     for i in np.flatnonzero(both))),
    }


def compare(observed: Observed, sim: Replay) -> dict[str, Any]:
    """The error table (the ``--json`` object, before the run description and warnings)."""
    rows = sim.records["observed_row"].to_numpy()
    obs = add_latency_columns(observed.records.iloc[rows].reset_index(drop=True))
    # The replayed prompt length, so TPOT and the series use what both engines served.
    obs["prompt_tokens"] = replay_prompt_tokens(observed.records)[rows]
    obs_times = [observed.token_times[i] for i in rows]
    obs_done = obs["status"].astype(str).to_numpy() == "finished"
    sim_done = sim.records["status"].astype(str).to_numpy() == "finished"
    both = obs_done & sim_done
    metrics = {}
    for name in ("ttft_s", "tpot_s", "e2e_s"):
        metrics[name] = _metric(obs[name].to_numpy(np.float64)[both],
                                sim.records[name].to_numpy(np.float64)[both])
    idx = np.flatnonzero(both)
    if observed.has_token_times:
        metrics["itl_s"] = _metric(_gaps([obs_times[i] for i in idx]),
                                   _gaps([sim.token_times[i] for i in idx]))
    else:
        metrics["itl_s"] = _metric(np.empty(0), _gaps([sim.token_times[i] for i in idx]))
    metrics = {k: metrics[k] for k in METRICS}
    e2e_obs = obs["e2e_s"].to_numpy(np.float64)[both]
    e2e_rel = (sim.records["e2e_s"].to_numpy(np.float64)[both] - e2e_obs) / e2e_obs
    e2e_rel = e2e_rel[np.isfinite(e2e_rel)]
    verdict_obs = records_verdict(obs, obs_times)
    verdict_sim = records_verdict(sim.records, sim.token_times)
    return jsonable({
        "metrics": metrics,
        "throughput_rps": _triple(_throughput(obs, obs_done), _throughput(sim.records, sim_done)),
        "e2e_median_request_rel_error": float(np.median(np.abs(e2e_rel))) if len(e2e_rel)
        else None,
        "e2e_median_request_signed_rel_error": float(np.median(e2e_rel)) if len(e2e_rel)
        else None,
        "verdict": {"observed": verdict_obs["state"], "simulated": verdict_sim["state"]},
        "verdict_detail": {"observed": verdict_obs, "simulated": verdict_sim},
        "requests": _counts(observed, rows, obs, sim, both),
    })


def run_fidelity(observed_dir: str | Path, scenario_path: str | Path, *,
                 request_overhead_s: float = 0.0) -> FidelityResult:
    """Read the observed run, replay it through the scenario and compare (the ``--json``
    object is ``result.report``).

    Raises ConfigError for a missing or malformed observed folder or scenario file.
    """
    from servesim.cli.file_kinds import load_cli_scenario

    observed = load_observed(observed_dir)
    scenario = load_cli_scenario(Path(scenario_path))
    sim = replay(observed, scenario, request_overhead_s)
    warnings = server_warnings(observed.summary, scenario.engine)
    if not observed.has_token_times:
        warnings.append("the observed run has no token_times_s column: inter-token latency "
                        "is not compared")
    report = compare(observed, sim)
    if report["requests"]["compared"] == 0:
        warnings.append("no request finished in both runs: no latency is compared")
    rejected = report["requests"]["rejected_simulated"]
    if rejected:
        warnings.append(f"{rejected} replayed requests do not fit the scenario's engine "
                        "(engine.kv.blocks, engine.max_model_len) and were rejected")
    if sim.stop_reason != "drained":
        warnings.append(f"the simulated replay stopped early ({sim.stop_reason})")
    from servesim.analysis.run_verdict import run_verdict

    engine_verdict = run_verdict(sim.records, sim.iterations, end_s=sim.end_s,
                                 stop_reason=sim.stop_reason)
    report["verdict_detail"]["simulated_engine"] = engine_verdict
    e = scenario.engine
    report["run"] = jsonable({
        "observed_dir": str(observed_dir), "scenario": str(scenario_path),
        "batching": e.batching, "token_budget": e.token_budget,
        "max_batch_size": e.max_batch_size, "chunk_tokens": e.chunk_tokens,
        "kv_blocks": e.kv.blocks, "kv_block_tokens": e.kv.block_tokens,
        "first_token": getattr(e, "first_token", None), "cost": scenario.cost.describe(),
        "request_overhead_s": request_overhead_s, "simulated_end_s": sim.end_s,
        "simulated_stop_reason": sim.stop_reason,
        "simulated_iterations": len(sim.iterations),
        "observed_model": observed.summary.get("model"),
        "observed_endpoint": observed.summary.get("endpoint"),
    })
    report["warnings"] = warnings
    return FidelityResult(report, observed, sim, warnings)
