"""Sweep throughput: points per minute with 1 and 2 workers, and the overhead per point.

Run from the repository root (the installed ``servesim`` is imported)::

    python benchmarks/bench_sweep.py --out DIR [--seeds N] [--horizon-s H]

The sweep is the Fig. 1 scenario (examples/fig1_contrast.toml: staircase cost, b_max 512,
129 + 112 tokens, lambda* = 13.87 req/s) over 4 policies x 3 loads (0.5, 0.7, 0.9) x 8 seeds
(96 points), with ``run.horizon_s`` = H (default 60 s: about 400-750 requests per point).
It runs twice into fresh folders under DIR (the only place anything is written): with
``--workers 1`` (points run in this process, already warmed up) and ``--workers 2`` (a pool of
two spawned processes, whose start-up counts).

Reported per run: wall time, points per minute, the time spent inside ``simulate`` summed over
points, and the overhead per point: (workers x wall - simulate time) / points, that is the
worker-seconds a point costs beyond its simulation (validation, latency columns, slopes,
Parquet and JSON writes, the catalogue, pool start-up and any idle worker at the end). Exit
status 0: this is a report, not a test.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ("fastertransformer", "vllm", "orca", "sarathi")
LOADS = (0.5, 0.7, 0.9)


def _sweep_file(folder: Path, seeds: int, horizon_s: float) -> Path:
    base = ROOT / "examples" / "fig1_contrast.toml"
    text = (f'[sweep]\nscenario = "{base.as_posix()}"\nname = "bench"\nseeds = {seeds}\n'
            f'set = {{ "run.horizon_s" = {horizon_s} }}\n[grid]\n'
            f'"engine.batching" = {list(POLICIES)}\nload = {list(LOADS)}\n').replace("'", '"')
    path = folder / "bench_sweep.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _run(sweep_path: Path, out: Path, workers: int) -> dict[str, float]:
    from servesim.experiments.execute import run_sweep
    from servesim.experiments.sweep import load_sweep

    if out.exists():
        shutil.rmtree(out)
    sweep = load_sweep(sweep_path)
    start = time.perf_counter()
    run = run_sweep(sweep, out, executor="local", workers=workers)
    wall = time.perf_counter() - start
    n = run.ran
    return {"workers": workers, "points": n, "wall_s": wall, "points_per_min": 60 * n / wall,
            "sim_s": run.sim_wall_s, "sim_per_point_ms": 1000 * run.sim_wall_s / n,
            "overhead_per_point_ms": 1000 * (workers * wall - run.sim_wall_s) / n}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the sweep outputs")
    parser.add_argument("--seeds", type=int, default=8, help="seeds per (policy, load)")
    parser.add_argument("--horizon-s", type=float, default=60.0, help="simulated s per point")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    # Imports paid once per process are part of a pool's start-up, not of a point: warm this
    # process up as a long sweep would be.
    import duckdb  # noqa: F401
    import scipy.stats  # noqa: F401

    import servesim.analysis  # noqa: F401
    sweep_path = _sweep_file(args.out, args.seeds, args.horizon_s)
    load_before = os.getloadavg()[0]
    rows = [_run(sweep_path, args.out / f"workers_{w}", w) for w in (1, 2)]
    print(f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}; load average (1 min) {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")
    print(f"- sweep: {len(POLICIES)} policies x {len(LOADS)} loads x {args.seeds} seeds = "
          f"{rows[0]['points']} points, horizon {args.horizon_s:g} s each")
    print()
    print("| workers | points | wall s | points / min | simulate ms / point | "
          "overhead ms / point |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['points']} | {r['wall_s']:.2f} | {r['points_per_min']:.0f} "
              f"| {r['sim_per_point_ms']:.1f} | {r['overhead_per_point_ms']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
