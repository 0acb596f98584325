"""Fig. 1 stability contrast: FasterTransformer, vLLM, Orca and Sarathi at 0.75 and 0.85 lambda*.

Run from the repository root:

    python examples/fig1_contrast.py --out /tmp/fig1
    python examples/fig1_contrast.py --out /tmp/fig1 --systems vllm,orca --loads 0.8 \
        --set run.horizon_s=2000 --set run.seed=3

Every run is ``examples/fig1_contrast.toml`` with ``engine.batching`` and
``workload.arrival.rate_per_s`` overridden (after any ``--set``). It prints one row per
(system, load) and writes, into ``--out`` and nowhere else:

- ``<system>-<load>/``: the run's ``summary.json``, ``requests.parquet``, ``iterations.parquet``;
- ``table.csv``: the printed table;
- ``in_system.csv``: the number of requests in the system every 10 s, one column per run (the
  curves of Fig. 1).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from servesim import Scenario, SimResult, load_scenario, simulate, write_outputs
from servesim.metrics.text import format_table as render_table

HERE = Path(__file__).resolve().parent
SCENARIO = HERE / "fig1_contrast.toml"
SYSTEMS = ("fastertransformer", "vllm", "orca", "sarathi")
LOADS = (0.75, 0.85)
PROBE_S = 90.0          # the reference quotes the number in system at about 90 s
CURVE_STEP_S = 10.0     # sampling step of in_system.csv


def lambda_star(scenario: Scenario) -> float:
    """b_max / t(b_max) / (m_p + m_d): the highest arrival rate any policy sustains, requests/s."""
    budget = scenario.engine.token_budget
    tokens = sum(c.weight * (c.prompt.mean + c.output.mean) for c in scenario.workload.classes)
    return budget / float(scenario.cost.iteration_s(budget, 0, 0)) / tokens


def run_one(system: str, load: float, overrides: Sequence[str] = (),
            scenario_path: Path = SCENARIO) -> SimResult:
    """Simulate ``system`` at ``load`` x lambda* (lambda* of the scenario after ``overrides``)."""
    base = load_scenario(scenario_path, overrides)
    rate = load * lambda_star(base)
    return simulate(load_scenario(scenario_path, [
        *overrides, f"engine.batching={system}", f"workload.arrival.rate_per_s={rate!r}"]))


def in_system_at(result: SimResult, times: np.ndarray) -> np.ndarray:
    """Requests in the system (arrived, not finished, not rejected) at each of ``times``."""
    req = result.requests
    kept = req[req["status"] != "rejected"]
    arrivals = np.sort(kept["arrival_s"].to_numpy())
    finishes = np.sort(kept["finish_s"].dropna().to_numpy())
    return (np.searchsorted(arrivals, times, side="right")
            - np.searchsorted(finishes, times, side="right"))


def time_average_in_system(result: SimResult, start_s: float = 0.0,
                           end_s: float = float("inf")) -> float:
    """Time average of running + waiting over the iterations starting in [start_s, end_s),
    each weighted by its duration (idle gaps, with nobody in the system, are not counted)."""
    it = result.iterations
    it = it[(it["start_s"] >= start_s) & (it["start_s"] < end_s)]
    weights = it["duration_s"].to_numpy()
    if weights.sum() <= 0:
        return float("nan")
    n = (it["running"] + it["waiting"]).to_numpy()
    return float((n * weights).sum() / weights.sum())


def measure(result: SimResult, system: str, load: float) -> dict[str, object]:
    """One table row: time-average, probes, completion ratio, E2E and a growth indicator.

    The growth indicator compares the time-average number in system over the last 10 % of the
    horizon with the middle 10 % (45-55 %): about 1 when flat, above 1 when growing;
    ``growth_per_s`` is the same difference divided by the 0.45 x horizon between the windows.
    """
    horizon = float(result.scenario.run.horizon_s)
    s = result.summary
    middle = time_average_in_system(result, 0.45 * horizon, 0.55 * horizon)
    last = time_average_in_system(result, 0.9 * horizon, horizon)
    probe = int(in_system_at(result, np.array([PROBE_S]))[0]) if horizon > PROBE_S else None
    return {
        "system": system,
        "load": load,
        "rate_per_s": result.scenario.workload.arrival.rate_per_s,
        "mean_in_system": time_average_in_system(result),
        f"in_system_{PROBE_S:g}s": probe,
        "in_system_end": s["in_system_at_end"],
        "completed": s["completed"],
        "arrived": s["arrived"],
        "completed_ratio": s["completed"] / s["arrived"],
        "e2e_mean_s": s["e2e_s"]["mean"],
        "growth_last_vs_mid": last / middle,
        "growth_per_s": (last - middle) / (0.45 * horizon),
    }


def format_table(table: pd.DataFrame) -> str:
    """The table as printed: short headers, a sensible precision per column."""
    columns = {  # column: (header, format)
        "system": ("system", "{}"), "load": ("load", "{:.2f}"), "rate_per_s": ("rate/s", "{:.2f}"),
        "mean_in_system": ("N mean", "{:.0f}"), f"in_system_{PROBE_S:g}s": (f"N@{PROBE_S:g}s",
                                                                             "{:.0f}"),
        "in_system_end": ("N@end", "{:.0f}"), "completed_ratio": ("done/arrived", "{:.3f}"),
        "e2e_mean_s": ("E2E mean s", "{:.3g}"), "growth_last_vs_mid": ("last/mid", "{:.2f}"),
        "growth_per_s": ("dN/dt /s", "{:+.2f}"),
    }
    return render_table(table, columns)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path.cwd() / "servesim-examples" / "fig1_contrast",
                   help="output directory (default: ./servesim-examples/fig1_contrast)")
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help="comma-separated batching systems (default: %(default)s)")
    p.add_argument("--loads", default=",".join(map(str, LOADS)),
                   help="comma-separated loads, fractions of lambda* (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario field, as servesim run --set (repeatable)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    loads = [float(x) for x in args.loads.split(",") if x.strip()]
    base = load_scenario(SCENARIO, args.overrides)
    horizon = float(base.run.horizon_s)
    print(f"lambda* = {lambda_star(base):.4g} req/s, horizon {horizon:g} s, seed {base.run.seed}; "
          f"N = requests in system (running + waiting)")
    args.out.mkdir(parents=True, exist_ok=True)
    rows, curves = [], {}
    times = np.arange(0.0, horizon + CURVE_STEP_S / 2, CURVE_STEP_S)
    for system in systems:
        for load in loads:
            result = run_one(system, load, args.overrides)
            name = f"{system}-{load:.2f}"
            write_outputs(result, args.out / name)
            rows.append(measure(result, system, load))
            curves[name] = in_system_at(result, times)
    table = pd.DataFrame(rows)
    print(format_table(table))
    table.to_csv(args.out / "table.csv", index=False)
    pd.DataFrame({"t_s": times, **curves}).to_csv(args.out / "in_system.csv", index=False)
    print(f"outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
