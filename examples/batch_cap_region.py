"""Batch-size cap: a small token budget is stable where a large one is not (work-conserving).

Run from the repository root:

    python examples/batch_cap_region.py
    python examples/batch_cap_region.py --systems sarathi --seeds 0,1,2 --horizon 1000
    python examples/batch_cap_region.py --set workload.prompt_tokens.value=12 \
        --set workload.output_tokens.value=4 --set workload.arrival.rate_per_s=0.2125

Every run is ``examples/batch_cap_region.toml`` (after any ``--set``) with ``engine.batching``
and ``engine.token_budget`` overridden. The script prints, in this order:

1. the region calculator's explanation (``servesim.theory.cap_region``): the vertices of the
   stability region R with the batch-size cap, which batch attains each vertex, whether a
   work-conserving policy forms that batch when backlogged (``wc_reachable``) at each budget,
   and whether the operating point (lambda m_p, lambda m_d) lies inside R and inside the
   work-conserving saturated region at each budget;
2. for each (system, budget) a stability verdict from ``servesim.analysis.stability.study``
   (backlog slope CI over seeds + completion ratio in the second half), the mean number in
   system at the horizon, and the batches the engine actually formed most often in the second
   half of seed 0's run, with the (prefill, decode) token rates it served over that half;
3. whether the theory's prediction and the simulation's verdict agree.

It writes nothing to disk.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from servesim import simulate
from servesim.analysis.study import study
from servesim.scenario import apply_overrides, scenario_from_dict
from servesim.theory.cap_region import CapRegion, cap_region, wc_reachable, wc_saturated_region

HERE = Path(__file__).resolve().parent
SCENARIO = HERE / "batch_cap_region.toml"
SYSTEMS = ("sarathi", "orca", "greedy")
BUDGETS = (4, 8)
SEEDS = (0, 1, 2, 3, 4)
HORIZON_S = 2000.0


def load_table(overrides: Sequence[str] = (), path: Path = SCENARIO) -> dict[str, Any]:
    """The scenario table of ``path`` with ``--set``-style overrides applied (not validated)."""
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    return apply_overrides(raw, list(overrides))


def with_engine(table: dict[str, Any], system: str, budget: int) -> dict[str, Any]:
    """``table`` with engine.batching = system and engine.token_budget = budget (a copy)."""
    return apply_overrides(table, [f"engine.batching={system}", f"engine.token_budget={budget}"])


def operating_point(table: dict[str, Any]) -> tuple[float, float]:
    """(lambda m_p, lambda m_d): the prefill and decode token rates of the load, tokens/s."""
    s = scenario_from_dict(table)
    lam = s.workload.arrival.rate_per_s
    m_p = sum(c.weight * c.prompt.mean for c in s.workload.classes)
    m_d = sum(c.weight * c.output.mean for c in s.workload.classes)
    return lam * m_p, lam * m_d


def decode_limit(region: CapRegion, prefill_rate: float) -> float:
    """The largest decode rate y with (prefill_rate, y) in the region (-inf if none), tokens/s."""
    best = np.inf
    for n0, n1, off in region.equations:
        if n1 > 1e-12:
            best = min(best, (-off - n0 * prefill_rate) / n1)
        elif n0 * prefill_rate + off > 1e-9:
            return -np.inf
    return float(best)


def explain(table: dict[str, Any], budgets: Sequence[int]) -> dict[int, bool]:
    """Print the region calculator's explanation; return, per budget, whether the operating point
    is inside the work-conserving saturated region (the theory's stability prediction)."""
    s = scenario_from_dict(table)
    cost, k_max = s.cost, s.engine.max_batch_size
    if k_max is None:
        raise SystemExit("engine.max_batch_size must be set: the region needs a cap k_max")
    px, py = operating_point(table)
    big = max(budgets)
    region = cap_region(cost, big, k_max)
    print(f"operating point (lambda m_p, lambda m_d) = ({px:.4g}, {py:.4g}) tokens/s, "
          f"k_max = {k_max}")
    print(f"\nregion R at b_max = {big} (contains every smaller budget's): {region.formula}")
    rows = []
    for v in region.vertex_batches():
        row = {"vertex (prefill, decode) tok/s": f"({v.prefill_rate:.4g}, {v.decode_rate:.4g})",
               "batch (x, y)": f"({v.prefill_tokens}, {v.decode_tokens})",
               "t s": f"{float(cost.iteration_s(v.min_budget, 0, 0)):.3g}",
               "min b_max": v.min_budget}
        for b in budgets:
            row[f"WC forms it at b_max={b}"] = ("-" if v.min_budget > b
                                                else "yes" if wc_reachable(v, b, k_max) else "no")
        rows.append(row)
    print(pd.DataFrame(rows).to_string(index=False))
    predicted = {}
    print()
    for b in budgets:
        r_b = cap_region(cost, b, k_max)
        wc = wc_saturated_region(cost, b, k_max)
        inside = wc.contains(px, py)
        predicted[b] = inside
        batches = ", ".join(f"({x}, {y})" for x, y in wc.batches if x + y > 0)
        print(f"b_max = {b}: point in R: {'yes' if r_b.contains(px, py) else 'no'}; "
              f"WC saturated region vertices from batches {batches}; "
              f"decode limit at prefill {px:.4g}: {decode_limit(wc, px):.4g} tok/s "
              f"(load {py:.4g}) -> point in WC region: {'yes' if inside else 'no'}; "
              f"predicted {'stable' if inside else 'unstable'}")
    return predicted


def top_batches(table: dict[str, Any], seed: int, horizon_s: float, n: int = 4) -> str:
    """The n most frequent (prefill, decode) batches in the second half of one run, and the
    (prefill, decode) token rates the engine served over that half, tokens/s."""
    t = apply_overrides(table, [f"run.seed={seed}", f"run.horizon_s={horizon_s!r}"])
    t.get("run", {}).pop("requests", None)
    it = simulate(scenario_from_dict(t)).iterations
    half = it[it["start_s"] >= horizon_s / 2]
    counts = collections.Counter(zip(half["prefill_tokens"].astype(int),
                                     half["decode_tokens"].astype(int), strict=True))
    total = sum(counts.values())
    served = (float(half["prefill_tokens"].sum()) / (horizon_s / 2),
              float(half["decode_tokens"].sum()) / (horizon_s / 2))
    return (f"({served[0]:.3g}, {served[1]:.3g})  "
            + " ".join(f"({x},{y}):{c / total:.0%}" for (x, y), c in counts.most_common(n)))


def simulate_verdicts(table: dict[str, Any], systems: Sequence[str], budgets: Sequence[int],
                      seeds: Sequence[int], horizon_s: float) -> pd.DataFrame:
    """One row per (system, budget): the ``study`` verdict at the table's arrival rate."""
    rate = float(scenario_from_dict(table).workload.arrival.rate_per_s)
    rows = []
    for system in systems:
        for b in budgets:
            t = with_engine(table, system, b)
            df = study(t, [1.0], list(seeds), base_rate=rate, horizon_s=horizon_s)
            r = df.iloc[0]
            rows.append({"system": system, "b_max": b, "slope tok/s": r["slope_mean"],
                         "CI lo": r["slope_lo"], "CI hi": r["slope_hi"],
                         "N slope /s": r["n_slope_mean"], "done/arrived": r["completion_ratio"],
                         "verdict": r["state"],
                         "seed 0, 2nd half: served tok/s, top batches (x,y)":
                             top_batches(t, seeds[0], horizon_s)})
    return pd.DataFrame(rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help="comma-separated work-conserving systems (default: %(default)s)")
    p.add_argument("--budgets", default=",".join(map(str, BUDGETS)),
                   help="comma-separated token budgets b_max (default: %(default)s)")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)),
                   help="comma-separated seeds (default: %(default)s)")
    p.add_argument("--horizon", type=float, default=HORIZON_S,
                   help="horizon of every run, seconds (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario field, as servesim run --set (repeatable)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    budgets = [int(x) for x in args.budgets.split(",") if x.strip()]
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    table = load_table(args.overrides)
    print("== theory (servesim.theory.cap_region) ==")
    predicted = explain(table, budgets)
    print(f"\n== simulation: study(), horizon {args.horizon:g} s, seeds {seeds}, "
          "99% CI of the backlog slope over the second half ==")
    res = simulate_verdicts(table, systems, budgets, seeds, args.horizon)
    with pd.option_context("display.float_format", "{:.4g}".format, "display.width", 200):
        print(res.to_string(index=False))
    print("\n== theory vs simulation ==")
    agree_all = True
    for row in res.itertuples(index=False):
        want = "stable" if predicted[row.b_max] else "unstable"
        got = row.verdict
        agree = got == want
        agree_all &= agree
        print(f"{row.system:8s} b_max={row.b_max}: theory {want}, simulation {got}"
              f" -> {'agree' if agree else 'DISAGREE'}")
    print("all agree" if agree_all else "some disagree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
