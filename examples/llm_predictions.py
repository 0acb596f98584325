"""Scheduling an LLM engine by predicted output lengths: FCFS, SPJF, SPRPT and TRAIL's limited
preemption, with exact and noisy predictions, at three loads.

Run from the repository root:

    python examples/llm_predictions.py --out /tmp/llm
    python examples/llm_predictions.py --synthetic --requests 300 --seeds 0
    python examples/llm_predictions.py --set engine.kv.preemption=swap --max-preemptions 1

Every run is ``examples/llm_predictions.toml`` (a KV-limited vLLM-like engine) with the arrival
rate set to load x lambda*, lambda* from ``servesim.theory.scenario_capacity``. Lengths resample
the Azure conversation trace, read from ``<repo>/../shared/data/azure_llm_2023_conv.csv``; if it
is absent the script says so and exits with status 0, unless ``--synthetic`` asks for lognormal
lengths with the trace's means and coefficients of variation instead.

The orderings: FCFS; SPJF (non-preemptive, by prediction); SPRPT (predicted remaining, unlimited
preemption); TRAIL (SPRPT, preemptible only while generated <= c x the initial prediction) for
each c. The predictors: the true length (oracle) and lognormal noise y = x exp(sigma Z). Each
seed draws one request sequence per load, shared by every policy, so the comparisons are paired.

It prints one row per (load, predictor, ordering), averaged over seeds, and writes ``runs.csv``
(one row per run) and ``table.csv`` into ``--out`` and nowhere else.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from servesim.core.rng import Streams
from servesim.engine.ordered import run_ordered
from servesim.metrics.text import format_table as render_table
from servesim.scenario import Scenario, apply_overrides, scenario_from_dict
from servesim.theory.capacity import scenario_capacity
from servesim.workload.requests import Requests

HERE = Path(__file__).resolve().parent
SCENARIO = HERE / "llm_predictions.toml"
DATA = HERE.parent.parent / "shared" / "data" / "azure_llm_2023_conv.csv"
LOADS = (0.5, 0.7, 0.9)
TRAIL_C = (0.0, 0.2, 0.5, 0.8, 1.0)
PREDICTORS: dict[str, dict[str, Any]] = {
    "oracle": {"kind": "oracle"},
    "lognormal_0.5": {"kind": "lognormal", "sigma": 0.5},
    "lognormal_1": {"kind": "lognormal", "sigma": 1.0},
}
# The trace's length moments (mean, cv), for the synthetic fallback.
SYNTHETIC = ("workload.prompt_tokens={ kind = \"lognormal\", mean = 1155, cv = 0.96 }",
             "workload.output_tokens={ kind = \"lognormal\", mean = 211, cv = 0.77 }")
# An overloaded run stops once this many requests are in the system.
MAX_IN_SYSTEM = 2000


def orderings() -> list[tuple[str, Any]]:
    """(label, ordering spec) of every ordering that reads predictions."""
    out: list[tuple[str, Any]] = [("spjf", "spjf"), ("sprpt", "sprpt")]
    out += [(f"trail_c{c:g}", {"kind": "trail", "c": c}) for c in TRAIL_C]
    return out


def base_scenario(synthetic: bool, overrides: Sequence[str] = ()) -> Scenario | None:
    """The study's scenario, or None if it needs the trace and the trace is absent."""
    if synthetic:
        return _load([*SYNTHETIC, *overrides])
    if not DATA.is_file():
        return None
    path = json.dumps(str(DATA))
    return _load([f"workload.prompt_tokens.path={path}", f"workload.output_tokens.path={path}",
                  *overrides])


def _load(overrides: Sequence[str]) -> Scenario:
    # The script sets the order itself, so the file's [schedule] table is left out.
    raw = tomllib.loads(SCENARIO.read_text(encoding="utf-8"))
    raw.pop("schedule", None)
    return scenario_from_dict(apply_overrides(raw, overrides), base_dir=HERE)


def measure(run, label: str, predictor: str) -> dict[str, Any]:
    """One run's row: mean latency and TTFT of finished requests, preemptions, completion."""
    df = run.requests
    done = df[df["status"] == "finished"]
    return {
        "order": label, "predictor": predictor,
        "e2e_mean_s": float((done["finish_s"] - done["arrival_s"]).mean()),
        "ttft_mean_s": float((done["first_token_s"] - done["arrival_s"]).mean()),
        "e2e_p99_s": float((done["finish_s"] - done["arrival_s"]).quantile(0.99)),
        "preemptions": int(df["preemptions"].sum()),
        "priority_preemptions": int(df["priority_preemptions"].sum()),
        "recomputed_tokens": int(df["recomputed_tokens"].sum()),
        "completed": len(done), "stopped": run.stop_reason != "drained",
    }


def requests_at(scenario: Scenario, load: float, seed: int, n_requests: int) -> Requests:
    """``n_requests`` requests of the scenario's workload arriving at ``load`` x lambda*."""
    lam = load * scenario_capacity(scenario).request_capacity.value
    workload = scenario.workload
    arrival = replace(workload.arrival, rate_per_s=lam)
    return replace(workload, arrival=arrival).generate(Streams(seed), n_requests=n_requests,
                                                       horizon_s=None)


def run_point(scenario: Scenario, load: float, seed: int, n_requests: int,
              max_preemptions: int | None = None) -> list[dict]:
    """Every ordering x predictor on one request sequence at ``load`` x lambda*;
    ``max_preemptions`` caps priority preemptions per request."""
    requests = requests_at(scenario, load, seed, n_requests)
    lam = load * scenario_capacity(scenario).request_capacity.value
    engine, cost = scenario.engine, scenario.cost
    common = dict(seed=seed, max_in_system=MAX_IN_SYSTEM, max_preemptions=max_preemptions)
    rows = [measure(run_ordered(requests, engine, cost, "fcfs", None, **common), "fcfs", "-")]
    for pname, pspec in PREDICTORS.items():
        for label, ospec in orderings():
            run = run_ordered(requests, engine, cost, ospec, pspec, **common)
            rows.append(measure(run, label, pname))
    for row in rows:
        row.update(load=load, rate_per_s=lam, seed=seed)
    return rows


def study(scenario: Scenario, loads: Sequence[float], seeds: Sequence[int],
          n_requests: int, max_preemptions: int | None = None) -> pd.DataFrame:
    """One row per run."""
    rows = [row for load in loads for seed in seeds
            for row in run_point(scenario, load, seed, n_requests, max_preemptions)]
    return pd.DataFrame(rows)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Means over seeds per (load, predictor, ordering), in the study's order."""
    keys = ["load", "predictor", "order"]
    cols = ["e2e_mean_s", "ttft_mean_s", "e2e_p99_s", "preemptions", "priority_preemptions",
            "recomputed_tokens", "completed"]
    table = runs.groupby(keys, sort=False)[cols].mean().reset_index()
    table["stopped"] = runs.groupby(keys, sort=False)["stopped"].sum().to_numpy()
    return table


def best_c(table: pd.DataFrame, metric: str = "e2e_mean_s") -> pd.DataFrame:
    """Per (load, predictor), the row of ``summarise``'s table for the TRAIL c with the lowest
    seed-mean ``metric``."""
    trail = table[table["order"].str.startswith("trail_c")]
    idx = trail.groupby(["load", "predictor"], sort=False)[metric].idxmin()
    return trail.loc[idx].reset_index(drop=True)


def format_table(table: pd.DataFrame) -> str:
    columns = {
        "load": ("load", "{:.1f}"), "predictor": ("predictor", "{}"), "order": ("order", "{}"),
        "e2e_mean_s": ("E2E mean", "{:.3g}"), "ttft_mean_s": ("TTFT mean", "{:.3g}"),
        "e2e_p99_s": ("E2E p99", "{:.3g}"), "preemptions": ("preempt", "{:.0f}"),
        "priority_preemptions": ("by prio", "{:.0f}"),
        "recomputed_tokens": ("recomp tok", "{:.0f}"), "stopped": ("stopped", "{}"),
    }
    return render_table(table, columns)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None, help="write runs.csv and table.csv here")
    p.add_argument("--requests", type=int, default=800, help="requests per run (%(default)s)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (%(default)s)")
    p.add_argument("--loads", default=",".join(map(str, LOADS)),
                   help="comma-separated fractions of lambda* (%(default)s)")
    p.add_argument("--max-preemptions", type=int, default=None, metavar="N",
                   help="cap priority preemptions per request (default: no cap)")
    p.add_argument("--synthetic", action="store_true",
                   help="lognormal lengths with the trace's moments instead of the trace")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario field, as servesim run --set (repeatable)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scenario = base_scenario(args.synthetic, args.overrides)
    if scenario is None:
        print(f"Azure trace not found at {DATA}; nothing to do (use --synthetic for lognormal "
              "lengths)")
        return 0
    loads = [float(x) for x in args.loads.split(",") if x.strip()]
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    cap = scenario_capacity(scenario).request_capacity
    kv = scenario.engine.kv
    print(f"lambda* = {cap.value:.3g} requests/s; KV {kv.blocks} blocks x {kv.block_tokens} "
          f"tokens; {args.requests} requests per run, seeds {seeds}; times in seconds")
    runs = study(scenario, loads, seeds, args.requests, args.max_preemptions)
    table = summarise(runs)
    print(format_table(table))
    print("best TRAIL c by mean latency:")
    print(format_table(best_c(table)))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        runs.to_csv(args.out / "runs.csv", index=False)
        table.to_csv(args.out / "table.csv", index=False)
        print(f"outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
