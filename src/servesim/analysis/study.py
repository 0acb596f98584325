"""Running a scenario at several loads and seeds, and measuring what the stability tests need.

``stability.py`` holds the tests on one run; this module drives the simulations behind them, for
``study`` (verdicts per load) and for the empirical lambda* search in ``search.py``.
``measure_run`` measures one run; the sweep runner uses it for each point's catalogue row.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from servesim.analysis.stability import (
    COMPLETION_EPS,
    backlog_slope,
    fluid_slope,
    verdict,
    window_counts,
)
from servesim.core.errors import ConfigError
from servesim.core.progress import Progress, part, run_fraction
from servesim.scenario import Scenario, scenario_from_dict, set_field

if TYPE_CHECKING:
    from servesim.api import SimResult


def timed_table(table: Mapping[str, Any], rate_field: str, rate: float,
                horizon_s: float | None) -> tuple[dict[str, Any], float]:
    """A deep copy of ``table`` with ``rate_field`` = rate, run time-bounded: ``horizon_s`` if
    given (replacing ``run.requests``), else the table's own ``run.horizon_s``. Returns the
    table and its horizon, seconds.

    Raises ConfigError if there is no horizon.
    """
    out = copy.deepcopy(dict(table))
    set_field(out, rate_field, float(rate))
    run = out.setdefault("run", {})
    if horizon_s is not None:
        run.pop("requests", None)
        run["horizon_s"] = float(horizon_s)
    horizon = run.get("horizon_s")
    if horizon is None:
        raise ConfigError("run.horizon_s", None, "a horizon: stability tests need time-bounded "
                                                 "runs")
    return out, float(horizon)


@dataclass
class Measurements:
    """Per-seed backlog slopes and pooled second-half counts of one scenario.

    Attributes:
        w_slopes: backlog-token slopes over [H/2, H], tokens/s, one per seed.
        n_slopes: number-in-system slopes over [H/2, H], requests/s, one per seed.
        done, arrived: completions and arrivals within [H/2, H], summed over seeds.
        stopped: seeds stopped by ``run.max_in_system`` (measuring ends at the first one).
    """

    w_slopes: list[float] = field(default_factory=list)
    n_slopes: list[float] = field(default_factory=list)
    done: int = 0
    arrived: int = 0
    stopped: int = 0

    @property
    def completion(self) -> float | None:
        return self.done / self.arrived if self.arrived else None


@dataclass(frozen=True)
class RunMeasurement:
    """What the stability tests read from one run over its second half [H/2, H].

    Attributes:
        w_slope: backlog-token slope, tokens/s.
        n_slope: number-in-system slope, requests/s.
        done, arrived: completions and arrivals within [H/2, H].
    """

    w_slope: float
    n_slope: float
    done: int
    arrived: int


def measure_run(result: SimResult, horizon_s: float) -> RunMeasurement:
    """Measure one time-bounded run of horizon ``horizon_s`` (not one stopped by
    ``run.max_in_system``, whose second half is cut short).

    Raises ConfigError if horizon_s <= 0.
    """
    done, arrived = window_counts(result.requests, horizon_s / 2, horizon_s)
    return RunMeasurement(
        w_slope=backlog_slope(result.iterations, horizon_s, "backlog_tokens"),
        n_slope=backlog_slope(result.iterations, horizon_s, "in_system"),
        done=done, arrived=arrived)


def measure(scenario: Scenario, seeds: Sequence[int], horizon_s: float,
            progress: Progress | None = None) -> Measurements:
    """Run ``scenario`` once per seed and collect what the stability tests read.

    A seed stopped by ``run.max_in_system`` settles the question (the run is overloaded), so
    measuring stops there. ``progress`` counts runs ("seed 2/6"), one unit per seed; it ends
    at the full count even when measuring stops early.

    Raises ConfigError if there are no seeds.
    """
    from servesim.api import simulate

    if not seeds:
        raise ConfigError("seeds", list(seeds), "at least one seed")
    out = Measurements()
    n = len(seeds)
    for i, seed in enumerate(seeds):
        what = f"seed {i + 1}/{n}"
        if progress is not None:
            progress(what, i, n)
        res = simulate(scenario, seed=int(seed),
                       progress=run_fraction(part(progress, i, 1, n), what))
        if res.summary.get("stop_reason") == "max_in_system":
            out.stopped += 1
            break
        run = measure_run(res, horizon_s)
        out.w_slopes.append(run.w_slope)
        out.n_slopes.append(run.n_slope)
        out.done += run.done
        out.arrived += run.arrived
    if progress is not None:
        progress(f"seed {n}/{n}", n, n)
    return out


def study(scenario_table: Mapping[str, Any], loads: Sequence[float], seeds: Sequence[int], *,
          base_rate: float, rate_field: str = "workload.arrival.rate_per_s",
          horizon_s: float | None = None, mean_tokens_per_request: float | None = None,
          token_capacity: float | None = None, confidence: float = 0.99,
          eps: float = COMPLETION_EPS, progress: Progress | None = None) -> pd.DataFrame:
    """Run a scenario at several loads and seeds and give a verdict per load (serially).

    For each load the arrival rate ``rate_field`` is set to load * base_rate (a deep copy of
    the table is edited), the run is time-bounded (``horizon_s`` if given, which replaces
    ``run.requests``; otherwise the table's ``run.horizon_s``) and ``simulate`` is called once
    per seed. Per seed: the W(t) and N(t) slopes over the second half, and the completions and
    arrivals within the second half [H/2, H]. The verdict uses the W(t) slopes, the completion
    ratio pooled over seeds in that window (see ``completion_ratio``: the whole-run ratio is
    biased low by the requests in flight at the horizon), and the fluid slope when both
    ``mean_tokens_per_request`` and ``token_capacity`` are given.

    Returns a DataFrame, one row per load: load, arrival_rate, horizon_s, seeds, slope_mean,
    slope_sd, slope_lo, slope_hi (tokens/s), n_slope_mean, n_slope_lo, n_slope_hi
    (requests/s), fluid_slope, completion_ratio, state, evidence (lines joined by "; ").

    A load at which a seed is stopped by ``run.max_in_system`` is "unstable", with NaN slopes.
    ``progress`` counts runs, loads x seeds in all ("load 0.9 (12.5 req/s), seed 3/6").

    Raises ConfigError if no horizon is given or there are no seeds.
    """
    rows = []
    n = len(seeds)
    for index, load in enumerate(loads):
        rate = float(load) * float(base_rate)
        table, horizon = timed_table(scenario_table, rate_field, rate, horizon_s)
        got = measure(scenario_from_dict(table), seeds, horizon,
                      part(progress, index * n, n, len(loads) * n,
                           f"load {float(load):g} ({rate:.4g} req/s), "))
        fluid = None
        if mean_tokens_per_request is not None and token_capacity is not None:
            fluid = fluid_slope(rate, mean_tokens_per_request, token_capacity)
        if got.stopped:
            rows.append(_stopped_row(load, rate, horizon, len(seeds), fluid,
                                     table["run"].get("max_in_system")))
            continue
        v = verdict(got.w_slopes, got.completion, fluid=fluid, eps=eps, confidence=confidence,
                    n_slopes=got.n_slopes)
        assert v.n_slope is not None
        rows.append({
            "load": float(load), "arrival_rate": rate, "horizon_s": horizon,
            "seeds": len(seeds), "slope_mean": v.slope.mean, "slope_sd": v.slope.sd,
            "slope_lo": v.slope.lo, "slope_hi": v.slope.hi, "n_slope_mean": v.n_slope.mean,
            "n_slope_lo": v.n_slope.lo, "n_slope_hi": v.n_slope.hi, "fluid_slope": fluid,
            "completion_ratio": got.completion, "state": v.state,
            "evidence": "; ".join(v.evidence),
        })
    return pd.DataFrame(rows)


def _stopped_row(load: float, rate: float, horizon: float, seeds: int, fluid: float | None,
                 cap: Any) -> dict[str, Any]:
    nan = float("nan")
    return {"load": float(load), "arrival_rate": rate, "horizon_s": horizon, "seeds": seeds,
            "slope_mean": nan, "slope_sd": nan, "slope_lo": nan, "slope_hi": nan,
            "n_slope_mean": nan, "n_slope_lo": nan, "n_slope_hi": nan, "fluid_slope": fluid,
            "completion_ratio": None, "state": "unstable",
            "evidence": f"a seed stopped with more than {cap} requests in system "
                        "(run.max_in_system)"}
