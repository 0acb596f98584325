"""Timing of a stability study: 5 loads x 6 seeds x 4 policies, ~20k requests per run.

Run from anywhere (the installed ``servesim`` is imported)::

    python benchmarks/bench_stability.py [--quick] [--workers N] [--requests N]

Scenario: Fig. 1 system (staircase defaults, b_max 512, deterministic 129 prompt + 112 output
tokens, Poisson arrivals), lambda* = mu*/(m_p + m_d) = 13.87 req/s. Policies fastertransformer,
vllm, orca and sarathi; loads 0.5, 0.7, 0.9, 1.1, 1.3 x lambda*; seeds 0-5. Each run has
horizon = requests / rate (about ``--requests`` = 20000 arrivals) and ``run.max_in_system`` =
``--max-in-system`` (default 1000) to stop diverging runs early. 1000 rather than 20000: a
diverging Orca run keeps every admitted request running (prefill first, decoders starve), and its
per-iteration cost grows with the running set, so one Orca run at 1.3 lambda* with a 20000 cap
(never reached: ~4600 in system at the horizon) took 100 s alone; no stable run here comes near
1000 in system (Sarathi at 0.9 lambda* holds well under 100). One unit of work is one
(policy, load, seed) run: ``simulate`` plus the W(t) / N(t) slopes and second-half counts that
``study`` computes; the verdict per (policy, load) is then ``servesim.analysis.verdict`` (a run
stopped by ``max_in_system`` makes its (policy, load) unstable, as in ``servesim.analysis.search``).

The study runs twice: serially in this process, then over a
``concurrent.futures.ProcessPoolExecutor(--workers)`` (default 2) mapping the units. Wall and CPU
times (this process for serial; the pool's children for parallel) are printed with whether the
target (< 120 s wall for the parallel study on 2 cores) is met. Exit status 0 either way:
this is a report. ``--quick`` runs 10x fewer requests per run and enforces no target.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

POLICIES = ("fastertransformer", "vllm", "orca", "sarathi")
LOADS = (0.5, 0.7, 0.9, 1.1, 1.3)
SEEDS = tuple(range(6))
TARGET_S = 120.0
C_MS, A_MS, B0, B_MAX = 11.28, 35.47, 128, 512
PROMPT, OUTPUT = 129, 112
MU = B_MAX / ((C_MS + A_MS * math.ceil(B_MAX / B0)) / 1000.0)   # tokens/s
LAMBDA_STAR = MU / (PROMPT + OUTPUT)                             # 13.87 req/s


def table(policy: str, rate: float, horizon_s: float, cap: int) -> dict[str, Any]:
    return {
        "run": {"horizon_s": horizon_s, "max_in_system": cap},
        "workload": {"arrival": {"kind": "poisson", "rate_per_s": rate},
                     "prompt_tokens": {"kind": "deterministic", "value": PROMPT},
                     "output_tokens": {"kind": "deterministic", "value": OUTPUT}},
        "engine": {"batching": policy, "token_budget": B_MAX},
    }


def run_unit(unit: tuple[str, float, int, int, int]) -> dict[str, Any]:
    """One (policy, load, seed) run and the per-seed statistics a study needs."""
    from servesim.analysis.stability import backlog_slope, window_counts
    from servesim.api import simulate
    from servesim.scenario import scenario_from_dict

    policy, load, seed, requests, cap = unit
    rate = load * LAMBDA_STAR
    horizon = requests / rate
    res = simulate(scenario_from_dict(table(policy, rate, horizon, cap)), seed=seed)
    stopped = res.summary.get("stop_reason") == "max_in_system"
    done, arrived = window_counts(res.requests, horizon / 2, horizon)
    return {"policy": policy, "load": load, "seed": seed, "stopped": stopped,
            "w": backlog_slope(res.iterations, horizon, "backlog_tokens"),
            "n": backlog_slope(res.iterations, horizon, "in_system"),
            "done": done, "arrived": arrived, "requests": len(res.requests),
            "iterations": len(res.iterations)}


def verdicts(results: list[dict[str, Any]]) -> dict[tuple[str, float], str]:
    from servesim.analysis import fluid_slope, verdict

    out = {}
    for policy in POLICIES:
        for load in LOADS:
            rs = [r for r in results if r["policy"] == policy and r["load"] == load]
            if any(r["stopped"] for r in rs):
                out[policy, load] = "unstable*"
                continue
            done, arrived = sum(r["done"] for r in rs), sum(r["arrived"] for r in rs)
            fluid = fluid_slope(load * LAMBDA_STAR, PROMPT + OUTPUT, MU)
            v = verdict([r["w"] for r in rs], done / arrived if arrived else None, fluid=fluid,
                        n_slopes=[r["n"] for r in rs])
            out[policy, load] = v.state
    return out


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10x fewer requests, no target")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--max-in-system", type=int, default=1000)
    ap.add_argument("--skip-serial", action="store_true")
    args = ap.parse_args(argv)
    requests = args.requests // 10 if args.quick else args.requests
    cap = args.max_in_system
    units = [(p, ld, s, requests, cap) for p in POLICIES for ld in LOADS for s in SEEDS]
    print(f"stability study: {len(POLICIES)} policies x {len(LOADS)} loads x {len(SEEDS)} seeds "
          f"= {len(units)} runs, ~{requests} requests each (horizon = {requests}/rate, "
          f"max_in_system = {cap}); lambda* = {LAMBDA_STAR:.4g} req/s; "
          f"cpus = {os.cpu_count()}; loadavg = {os.getloadavg()[0]:.2f}")
    import servesim.analysis  # noqa: F401  (import cost outside the timed regions)
    import servesim.api  # noqa: F401

    timings = {}
    results: list[dict[str, Any]] = []
    if not args.skip_serial:
        c0, t0 = self_cpu(), time.perf_counter()
        results = [run_unit(u) for u in units]
        states = verdicts(results)
        timings["serial"] = (time.perf_counter() - t0, self_cpu() - c0)
    c0, t0 = children_cpu(), time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        par = list(pool.map(run_unit, units, chunksize=1))
    states_par = verdicts(par)
    timings[f"parallel({args.workers})"] = (time.perf_counter() - t0, children_cpu() - c0)
    if results:
        assert states == states_par, "serial and parallel verdicts differ"

    print("\nverdict per policy and load (* = stopped by max_in_system):")
    print(f"{'policy':<18}" + "".join(f"{ld:>13}" for ld in LOADS))
    for p in POLICIES:
        print(f"{p:<18}" + "".join(f"{states_par[p, ld]:>13}" for ld in LOADS))
    stopped = sum(r["stopped"] for r in par)
    total_req = sum(r["requests"] for r in par)
    print(f"\nruns stopped by max_in_system: {stopped}/{len(par)}; generated requests: "
          f"{total_req}; iterations: {sum(r['iterations'] for r in par)}")
    print(f"\n{'mode':<14}{'wall s':>10}{'cpu s':>10}{'gen req/wall s':>14}")
    for mode, (wall, cpu) in timings.items():
        print(f"{mode:<14}{wall:>10.2f}{cpu:>10.2f}{total_req / wall:>14.0f}")
    wall = timings[f"parallel({args.workers})"][0]
    if args.quick:
        print("\n--quick: no target enforced")
    else:
        ok = wall < TARGET_S
        print(f"\ntarget: parallel wall < {TARGET_S:.0f} s -> {'MET' if ok else 'MISS'} "
              f"({wall:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
