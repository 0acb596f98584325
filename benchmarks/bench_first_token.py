"""Why the fast replica carries ``first_token = "prefill"``: the same runs on both steppers.

Run from anywhere (the installed ``servesim`` is imported)::

    python benchmarks/bench_first_token.py [--requests N] [--repeat R] [--quick]

Sarathi-Serve and Orca at 0.9 of lambda* (128-token prompts, 64-token outputs, a staircase cost)
under vLLM's output convention, each run on the fast replica and on the reference stepper, the
records compared for equality. The best wall time of ``--repeat`` rounds (default 3) counts, with
its CPU time beside it. Nothing is written. Exit status 0 either way: this is a report.
``--quick`` runs 2,000 requests once.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from servesim.core.rng import Streams
from servesim.engine.config import EngineConfig, KVConfig
from servesim.engine.cost import Staircase
from servesim.engine.replica import run_engine
from servesim.workload.requests import Requests

PROMPT, OUTPUT = 128, 64


def requests(n: int, rate_per_s: float) -> Requests:
    gaps = Streams(1).get("arrivals").exponential(1 / rate_per_s, n)
    return Requests.from_lists(np.cumsum(gaps), np.full(n, PROMPT), np.full(n, OUTPUT))


def best(run, repeat: int):
    out = None
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        out = run()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return out, best_wall, best_cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    n, repeat = (2_000, 1) if args.quick else (args.requests, args.repeat)
    cost = Staircase()   # the paper's: 11.28 ms + 35.47 ms per 128 tokens
    budget = 512
    # lambda* = (budget / t(budget)) / (prompt + output), the compute capacity.
    rate = 0.9 * budget / cost.iteration_s(budget, 0, 0) / (PROMPT + OUTPUT)
    print(f"{n:,} requests at 0.9 lambda* = {rate:.3g}/s, first_token = \"prefill\"")
    print(f"{'batching':<10} {'stepper':<10} {'wall s':>8} {'CPU s':>8} {'us/request':>11} "
          f"{'speed-up':>9}  same records")
    for batching in ("sarathi", "orca"):
        config = EngineConfig(batching=batching, token_budget=budget, first_token="prefill",
                              kv=KVConfig(block_tokens=16, blocks=1 << 20))
        reqs = requests(n, rate)
        runs = {s: best(lambda s=s, r=reqs, c=config: run_engine(r, c, cost, stepper=s),
                        repeat)
                for s in ("fast", "reference")}
        same = runs["fast"][0].requests.equals(runs["reference"][0].requests)
        for stepper, (_, wall, cpu) in runs.items():
            speed = runs["reference"][1] / wall
            print(f"{batching:<10} {stepper:<10} {wall:8.3f} {cpu:8.3f} {1e6 * wall / n:11.1f} "
                  f"{speed:8.1f}x  {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
