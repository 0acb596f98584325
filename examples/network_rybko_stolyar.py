"""The Rybko-Stolyar network on two LLM engines: exit priority diverges, entry priority is
stable, at rho = 0.9 per engine in both.

Run from the repository root:

    python examples/network_rybko_stolyar.py
    python examples/network_rybko_stolyar.py --seeds 5 --horizon-s 600

For each priority assignment it prints the virtual-station check (made before any run), the
per-engine loads, the requests in system at each engine over time for the first seed, and the
stability verdict with its evidence (N(t) slope CI over seeds, completion ratio, envelope
growth). It writes nothing to disk. The parameters, and why they show the effect in a short
run, are in examples/network_rybko_stolyar.toml and docs/networks.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from servesim.analysis.stability import step_values
from servesim.cluster import NetworkStudy, load_network, study_network

HERE = Path(__file__).resolve().parent
SCENARIOS = {"exit priority (S1: B2 > A1, S2: A2 > B1)": HERE / "network_rybko_stolyar.toml",
             "entry priority (S1: A1 > B2, S2: B1 > A2)":
                 HERE / "network_rybko_stolyar_reverse.toml"}


def run(path: Path, seeds: Sequence[int], horizon_s: float) -> NetworkStudy:
    """Every seed of one scenario, with the theory and the verdict."""
    return study_network(load_network(path), list(seeds), horizon_s)


def trace(study: NetworkStudy, points: int = 9) -> list[str]:
    """Requests in system at each engine, first seed, at evenly spaced times."""
    first = study.runs[0]
    times = np.linspace(0, first.horizon_s, points)
    lines = ["  t (s)    " + " ".join(f"{t:7.0f}" for t in times)]
    for name, it in first.iterations.items():
        counts = step_values(it, "in_system", times)
        lines.append(f"  N_{name:<6} " + " ".join(f"{n:7.0f}" for n in counts))
    return lines


def report(label: str, study: NetworkStudy) -> list[str]:
    th = study.theory
    loads = ", ".join(f"rho_{e} = {q.value:.3f}" for e, q in th.loads.loads.items())
    measured = ", ".join(f"{r.engine}: {r.measured_load:.3f}" for r in
                         study.engines.itertuples())
    return [label, f"  theory: {loads}; virtual stations: {th.virtual_note}",
            f"  measured load: {measured}", *trace(study),
            f"  verdict: {study.verdict.state}",
            *(f"    - {line}" for line in study.verdict.evidence)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--horizon-s", type=float, default=400.0,
                        help="simulated seconds per run (default 400)")
    args = parser.parse_args(argv)
    for label, path in SCENARIOS.items():
        print("\n".join(report(label, run(path, range(args.seeds), args.horizon_s))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
