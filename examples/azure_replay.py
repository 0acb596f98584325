"""Replay the Azure LLM conversation trace on Llama-2-7B / A100-80GB: Sarathi-Serve vs vLLM.

Run from the repository root:

    python examples/azure_replay.py --out /tmp/azure

The trace is read from ``<repo>/../shared/data/azure_llm_2023_conv.csv``; if it is absent the
script says so and exits with status 0. Every run is ``examples/azure_replay.toml`` with
``engine.batching`` and ``engine.token_budget`` overridden (after any ``--set``; choose them with
``--systems sarathi:2048,vllm:16384``). By default:

- Sarathi-Serve with b_max = 512: long prompts are chunked, so any budget works;
- vLLM with b_max = 8192: vanilla vLLM prefills a prompt whole in one iteration, so a prompt
  longer than the budget can never be served and is rejected at arrival. The trace's longest
  prompt is 14,050 tokens and the next longest 7,930; 8192 serves all but that one request
  (16384 would serve it too; the other results barely move). Real vLLM enforces the same
  rule: max_num_batched_tokens >= max_model_len.

It prints one row per system and writes, into ``--out`` and nowhere else, one folder per run
(``summary.json``, ``requests.parquet``, ``iterations.parquet``) and ``table.csv``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from servesim import SimResult, load_scenario, simulate, write_outputs
from servesim.metrics.text import format_table as render_table

HERE = Path(__file__).resolve().parent
SCENARIO = HERE / "azure_replay.toml"
DATA = HERE.parent.parent / "shared" / "data" / "azure_llm_2023_conv.csv"
SYSTEMS = (("sarathi", 512), ("vllm", 8192))   # (batching, token_budget in tokens)


def run_one(system: str, token_budget: int, overrides: Sequence[str] = (),
            data: Path = DATA) -> SimResult:
    """Simulate the trace at ``data`` with ``system`` and ``token_budget``."""
    return simulate(load_scenario(SCENARIO, [
        *overrides, f"workload.trace.path={json.dumps(str(data))}",
        f"engine.batching={system}", f"engine.token_budget={token_budget}"]))


def measure(result: SimResult) -> dict[str, object]:
    """One table row: latency percentiles, throughput, preemptions and rejections."""
    s = result.summary
    row: dict[str, object] = {"system": result.scenario.engine.batching,
                              "b_max": result.scenario.engine.token_budget,
                              "completed": s["completed"], "rejected": s["rejected"],
                              "preemptions": s["preemptions"]}
    for key in ("ttft_s", "tpot_s", "e2e_s"):
        row[f"{key[:-2]}_p50_s"] = s[key]["p50"]
        row[f"{key[:-2]}_p99_s"] = s[key]["p99"]
    row.update(throughput_rps=s["throughput_rps"],
               throughput_tokens_per_s=s["throughput_tokens_per_s"], end_s=s["end_s"],
               kv_utilization_mean=s["kv_utilization_mean"])
    return row


def format_table(table: pd.DataFrame) -> str:
    """The table as printed: short headers, a sensible precision per column."""
    columns = {  # column: (header, format)
        "system": ("system", "{}"), "b_max": ("b_max", "{}"), "completed": ("done", "{}"),
        "rejected": ("rej", "{}"), "preemptions": ("preempt", "{}"),
        "ttft_p50_s": ("TTFT p50", "{:.3g}"), "ttft_p99_s": ("TTFT p99", "{:.3g}"),
        "tpot_p50_s": ("TPOT p50", "{:.3g}"), "tpot_p99_s": ("TPOT p99", "{:.3g}"),
        "e2e_p50_s": ("E2E p50", "{:.3g}"), "e2e_p99_s": ("E2E p99", "{:.3g}"),
        "throughput_rps": ("req/s", "{:.2f}"), "throughput_tokens_per_s": ("tok/s", "{:.0f}"),
        "end_s": ("end s", "{:.0f}"), "kv_utilization_mean": ("KV use", "{:.2f}"),
    }
    return render_table(table, columns)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path.cwd() / "servesim-examples" / "azure_replay",
                   help="output directory (default: ./servesim-examples/azure_replay)")
    p.add_argument("--systems", default=",".join(f"{s}:{b}" for s, b in SYSTEMS),
                   help="comma-separated batching:token_budget pairs (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario field, as servesim run --set (repeatable)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    systems = [(name.strip(), int(budget)) for name, _, budget in
               (item.partition(":") for item in args.systems.split(",") if item.strip())]
    if not DATA.is_file():
        print(f"skipped: the Azure trace is not at {DATA}. Get "
              "data/AzureLLMInferenceTrace_conv.csv from github.com/Azure/AzurePublicDataset "
              "and save it there to run this example.")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for system, budget in systems:
        result = run_one(system, budget, args.overrides)
        if not rows:
            kv = result.summary["resolved"]
            print(f"{result.summary['arrived']} requests from {DATA.name}; KV cache "
                  f"{kv['kv_blocks']} blocks of {result.scenario.engine.kv.block_tokens} tokens; "
                  "latencies in seconds")
        write_outputs(result, args.out / f"{system}-{budget}")
        rows.append(measure(result))
    table = pd.DataFrame(rows)
    print(format_table(table))
    table.to_csv(args.out / "table.csv", index=False)
    print(f"outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
