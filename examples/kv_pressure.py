"""KV pressure: preemption by recompute vs swap, with vLLM and Sarathi-Serve.

Run from the repository root:

    python examples/kv_pressure.py --out /tmp/kv
    python examples/kv_pressure.py --out /tmp/kv --rates 5 --set engine.kv.blocks=4096

Every run is ``examples/kv_pressure.toml`` with the arrival rate, ``engine.batching``,
``engine.token_budget`` and ``engine.kv.preemption`` overridden (after any ``--set``). vLLM gets
b_max = 4096 (Llama-2's context length): it prefills a prompt whole, and after a recompute
preemption it prefills prompt + generated tokens whole again, so its budget must hold a long
request; Sarathi chunks and keeps its usual 512.

It prints one row per (rate, system, preemption) and writes, into ``--out`` and nowhere else,
one folder per run (``summary.json``, ``requests.parquet``, ``iterations.parquet``) and
``table.csv``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from servesim import SimResult, load_scenario, simulate, write_outputs
from servesim.metrics.text import format_table as render_table

HERE = Path(__file__).resolve().parent
SCENARIO = HERE / "kv_pressure.toml"
SYSTEMS = (("vllm", 4096), ("sarathi", 512))   # (batching, token_budget in tokens)
PREEMPTION = ("recompute", "swap")
RATES = (5.0, 5.5)                              # requests per second


def run_one(system: str, token_budget: int, preemption: str, rate_per_s: float,
            overrides: Sequence[str] = ()) -> SimResult:
    """Simulate the scenario with one system, budget, preemption mode and arrival rate."""
    return simulate(load_scenario(SCENARIO, [
        *overrides, f"workload.arrival.rate_per_s={rate_per_s!r}", f"engine.batching={system}",
        f"engine.token_budget={token_budget}", f"engine.kv.preemption={preemption}"]))


def measure(result: SimResult) -> dict[str, object]:
    """One table row: preemption work, latency, stalls and whether the run kept up."""
    s = result.summary
    engine = result.scenario.engine
    gaps = result.requests["max_token_gap_s"]
    return {
        "rate_per_s": result.scenario.workload.arrival.rate_per_s,
        "system": engine.batching,
        "preemption": engine.kv.preemption,
        "preemptions": s["preemptions"],
        "recomputed_tokens": s["recomputed_tokens"],
        "swapped_gb": s["swapped_bytes"] / 1e9,
        "e2e_mean_s": s["e2e_s"]["mean"],
        "tpot_p99_s": s["tpot_s"]["p99"],
        "max_token_gap_p99_s": s["max_token_gap_s"]["p99"],
        "max_token_gap_max_s": float(gaps.max()),
        "kv_utilization_mean": s["kv_utilization_mean"],
        "in_system_end": s["in_system_at_end"],
        "completed": s["completed"],
        "arrived": s["arrived"],
    }


def format_table(table: pd.DataFrame) -> str:
    """The table as printed: short headers, a sensible precision per column."""
    columns = {  # column: (header, format)
        "rate_per_s": ("rate/s", "{:.1f}"), "system": ("system", "{}"),
        "preemption": ("preemption", "{}"), "preemptions": ("preempt", "{}"),
        "recomputed_tokens": ("recomp tok", "{}"), "swapped_gb": ("swap GB", "{:.0f}"),
        "e2e_mean_s": ("E2E mean", "{:.3g}"), "tpot_p99_s": ("TPOT p99", "{:.3g}"),
        "max_token_gap_p99_s": ("gap p99", "{:.3g}"), "max_token_gap_max_s": ("gap max", "{:.3g}"),
        "kv_utilization_mean": ("KV use", "{:.2f}"), "in_system_end": ("N@end", "{}"),
    }
    return render_table(table, columns)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path.cwd() / "servesim-examples" / "kv_pressure",
                   help="output directory (default: ./servesim-examples/kv_pressure)")
    p.add_argument("--rates", default=",".join(map(str, RATES)),
                   help="comma-separated arrival rates, requests/s (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario field, as servesim run --set (repeatable)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rates = [float(x) for x in args.rates.split(",") if x.strip()]
    base = load_scenario(SCENARIO, args.overrides)
    kv = base.engine.kv
    print(f"KV cache {kv.blocks} blocks x {kv.block_tokens} tokens x {kv.block_bytes} B; host "
          f"{kv.host_blocks} blocks at {kv.swap_bytes_per_s:.3g} B/s; horizon "
          f"{base.run.horizon_s:g} s, warm-up {base.run.warmup_s:g} s; times in seconds")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for rate in rates:
        for system, budget in SYSTEMS:
            for preemption in PREEMPTION:
                result = run_one(system, budget, preemption, rate, args.overrides)
                write_outputs(result, args.out / f"{rate:g}-{system}-{preemption}")
                rows.append(measure(result))
    table = pd.DataFrame(rows)
    print(format_table(table))
    table.to_csv(args.out / "table.csv", index=False)
    print(f"outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
