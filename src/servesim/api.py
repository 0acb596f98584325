"""The one-call library entry point: a Scenario in, request records and a summary out."""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd

from servesim.core.rng import Streams
from servesim.engine.ordered import prediction_totals, preemption_totals, run_ordered
from servesim.engine.replica import run_engine
from servesim.engine.servable import unservable_requests
from servesim.engine.state import EngineRun
from servesim.engine.stop import Interrupted, StopFlag, signal_name
from servesim.metrics.summary import add_latency_columns, jsonable, summarize
from servesim.scenario import Scenario
from servesim.workload.closed import ClosedLoop, closed_loop_of
from servesim.workload.source import CHUNK_REQUESTS

__all__ = ["SimResult", "run_header", "simulate", "versions"]


@dataclass
class SimResult:
    """The outputs of one run.

    Attributes:
        summary: headline metrics plus the scenario echo, seed and versions (JSON-ready).
        requests: one row per request: the engine's columns plus the latency columns.
        iterations: one row per engine iteration.
        scenario: the scenario that was run.
        seed: the root seed actually used.
    """

    summary: dict[str, Any]
    requests: pd.DataFrame
    iterations: pd.DataFrame
    scenario: Scenario
    seed: int


def versions() -> dict[str, str]:
    """Versions of servesim, Python and numpy, for reproducibility."""
    try:
        own = metadata.version("servesim")
    except metadata.PackageNotFoundError:
        own = "unknown"
    return {"servesim": own, "python": platform.python_version(), "numpy": np.__version__}


def run_header(scenario: Scenario, seed: int) -> dict[str, Any]:
    """What a summary says before any metric: the scenario echo, seed, versions and the
    resolved configuration (derived KV blocks, cost and workload descriptions)."""
    kv = scenario.engine.kv
    return jsonable({
        "seed": seed,
        "versions": versions(),
        "scenario": scenario.source,
        "resolved": {
            "workload": scenario.workload.describe(),
            "cost": scenario.cost.describe(),
            "kv_blocks": kv.blocks,
            "kv_block_bytes": kv.block_bytes,
            "slo": scenario.slo.describe(),
        },
    })


def simulate(scenario: Scenario, *, seed: int | None = None,
             progress: Callable[[float], None] | None = None, stepper: str = "fast",
             stop: StopFlag | None = None, chunk_requests: int = CHUNK_REQUESTS) -> SimResult:
    """Run one scenario and summarise it.

    ``seed`` overrides ``scenario.run.seed``. The run stops at ``run.horizon_s`` (horizon mode)
    or ``run.max_time_s`` (request-count mode, if set; otherwise when every request finished).
    ``progress`` receives the fraction done, in [0, 1], now and then. A ``[schedule]`` with a
    non-FCFS order or a predictor runs through ``run_ordered``: on the fast ordered replica where
    it applies (``stepper="fast"``), else on the ordered stepper; its summary adds the priority
    preemption and prediction totals.

    A closed-loop workload (``arrival = { kind = "closed", ... }``) runs its clients on the
    reference stepper (``servesim.cluster.closed``; ``stepper`` and ``chunk_requests`` do not
    apply), with the same records and summary; a ``[schedule]`` ordering is refused there.

    The requests are drawn ``chunk_requests`` at a time as the engine's clock reaches them
    (``servesim.workload.source``; the chunk size never changes the results), so memory grows
    with the requests that arrived, not with the horizon. ``stop`` is a flag a signal handler
    sets (``servesim.engine.stop``): the run then stops at the next iteration boundary.

    Raises ConfigError if ``seed`` is not an integer >= 0, the workload cannot supply the
    requests asked for, or a closed loop meets a ``[schedule]`` ordering or WAIT batching;
    SimulationError if the engine breaks an invariant; Interrupted (a KeyboardInterrupt) when
    interrupted, whose ``result`` is the SimResult over what was simulated (``"complete":
    false, "status": "interrupted"``), or None if nothing was.
    """
    run = scenario.run
    seed = run.seed if seed is None else seed
    loop = closed_loop_of(scenario)
    if loop is not None:
        return _simulate_closed(scenario, loop, seed, progress, stop)
    streams = Streams(seed)
    requests = scenario.workload.source(streams, n_requests=run.requests,
                                        horizon_s=run.horizon_s, chunk_requests=chunk_requests)
    schedule = scenario.schedule
    try:
        if schedule.ordered:   # a non-FCFS order or a predictor: the ordered engines
            result = run_ordered(requests, scenario.engine, scenario.cost, schedule.order,
                                 schedule.make_predictor(seed), seed, until_s=run.until_s,
                                 max_in_system=run.max_in_system,
                                 max_preemptions=schedule.max_preemptions,
                                 stepper="auto" if stepper == "fast" else stepper,
                                 progress=progress, stop=stop)
        else:
            result = run_engine(requests, scenario.engine, scenario.cost, until_s=run.until_s,
                                progress=progress, stepper=stepper,
                                max_in_system=run.max_in_system, stop=stop)
    except Interrupted as e:
        if e.run is None:
            raise
        partial = summarise(scenario, seed, e.run, interrupted=e.signum)
        raise Interrupted(e.run, e.signum, partial) from None
    return summarise(scenario, seed, result)


def _simulate_closed(scenario: Scenario, loop: ClosedLoop, seed: int,
                     progress: Callable[[float], None] | None,
                     stop: StopFlag | None) -> SimResult:
    """A closed-loop scenario, on the reference stepper (``servesim.cluster.closed``)."""
    # Imported here: the cluster package (networks, their reports) is needed by closed loops only.
    from servesim.cluster.closed import check_closed_loop, run_closed_loop

    check_closed_loop(scenario)
    run = scenario.run
    try:
        result = run_closed_loop(loop, scenario.engine, scenario.cost, seed,
                                 n_requests=run.requests, horizon_s=run.horizon_s,
                                 until_s=run.until_s, max_in_system=run.max_in_system,
                                 progress=progress, stop=stop)
    except Interrupted as e:
        if e.run is None:
            raise
        partial = summarise(scenario, seed, e.run, interrupted=e.signum)
        raise Interrupted(e.run, e.signum, partial) from None
    return summarise(scenario, seed, result)


def summarise(scenario: Scenario, seed: int, result: EngineRun,
              interrupted: int | None | bool = False) -> SimResult:
    """The SimResult of an engine run of ``scenario``: records with latency columns and the
    summary. ``interrupted`` (False, or the signal number, None for a plain KeyboardInterrupt)
    marks a run stopped by an interruption: ``"complete": false, "status": "interrupted"``
    and an ``"error"`` saying what the metrics cover."""
    run = scenario.run
    schedule = scenario.schedule
    records = add_latency_columns(result.requests)
    unservable, warnings = unservable_requests(records, scenario.engine)
    metrics = summarize(records, result.iterations, end_s=result.end_s, warmup_s=run.warmup_s,
                        slo=scenario.slo, token_budget=scenario.engine.token_budget,
                        kv_capacity_blocks=scenario.engine.kv.blocks, unservable=unservable,
                        warnings=warnings)
    state: dict[str, Any] = {"complete": True, "status": "complete"}
    if interrupted is not False:
        state = {"complete": False, "status": "interrupted",
                 "error": f"interrupted ({signal_name(interrupted)}) at {result.end_s:.6g} s "
                          "simulated: the tables and metrics cover the "
                          f"{len(result.requests)} requests that arrived and the "
                          f"{len(result.iterations)} iterations run by then"}
    summary = {**state, **run_header(scenario, seed),
               "stopped_early": bool(result.stopped_early), "stop_reason": result.stop_reason,
               **metrics}
    if schedule.ordered:
        summary.update({k: v for k, v in preemption_totals(result).items()
                        if k.startswith("priority_")})
        summary.update(prediction_totals(result))
    from servesim.analysis.run_verdict import run_verdict  # scipy loads only once a run ends

    summary["verdict"] = run_verdict(records, result.iterations, end_s=result.end_s,
                                     stop_reason=result.stop_reason)
    return SimResult(summary=summary, requests=records, iterations=result.iterations,
                     scenario=scenario, seed=seed)
