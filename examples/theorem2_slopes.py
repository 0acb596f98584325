"""The Theorem 2 slope table: Sarathi's backlog slope at 0.9, 1.1 and 1.2 lambda* against the
fluid slope max(0, lambda (m_p + m_d) - mu*), with a confidence interval over seeds.

Run from the repository root:

    python examples/theorem2_slopes.py                     # 12 seeds, about 15 s
    python examples/theorem2_slopes.py --seeds 30 --horizon 240

For each load the script runs ``examples/theorem2_slopes.toml`` at rate load x lambda* for every
seed, regresses the unprocessed tokens W(t) over the second half of the horizon
(``servesim.analysis.study``), and prints the mean and standard deviation of the slopes in
tokens/ms (the reference's unit), their 99% t-interval, the fluid slope and the reference's
measured value. It writes nothing to disk.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from servesim.analysis.study import study
from servesim.scenario import scenario_from_dict
from servesim.theory import scenario_capacity

HERE = Path(__file__).resolve().parent
SCENARIO = HERE / "theorem2_slopes.toml"
LOADS = (0.9, 1.1, 1.2)
# The reference's reproduction: mean slope over 6 seeds of 120 s, tokens/ms.
REFERENCE_SLOPE_PER_MS = {0.9: 0.0078, 1.1: 0.3383, 1.2: 0.6683}


def slope_table(seeds: Sequence[int], horizon_s: float = 120.0,
                confidence: float = 0.99) -> pd.DataFrame:
    """One row per load: measured slope (mean, sd, CI) and the fluid slope, in tokens/ms."""
    table: dict[str, Any] = tomllib.loads(SCENARIO.read_text(encoding="utf-8"))
    cap = scenario_capacity(scenario_from_dict(table))
    mu = cap.token_capacity.value
    lam = cap.request_capacity.value
    df = study(table, list(LOADS), list(seeds), base_rate=lam, horizon_s=horizon_s,
               mean_tokens_per_request=cap.mean_tokens.value, token_capacity=mu,
               confidence=confidence)
    per_ms = 1e-3
    return pd.DataFrame({
        "load": df["load"],
        "slope_mean": df["slope_mean"] * per_ms,
        "slope_sd": df["slope_sd"] * per_ms,
        "ci_lo": df["slope_lo"] * per_ms,
        "ci_hi": df["slope_hi"] * per_ms,
        "fluid": df["fluid_slope"] * per_ms,
        "reference": [REFERENCE_SLOPE_PER_MS[x] for x in LOADS],
        "state": df["state"],
    })


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=12, help="number of seeds (0..n-1)")
    parser.add_argument("--horizon", type=float, default=120.0, help="horizon, seconds")
    args = parser.parse_args(argv)
    frame = slope_table(range(args.seeds), args.horizon)
    print("backlog slope W(t) over the second half, tokens/ms "
          f"({args.seeds} seeds, 99% t-interval)")
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    inside = ((frame["ci_lo"] <= frame["fluid"]) & (frame["fluid"] <= frame["ci_hi"])).all()
    print("fluid slope inside every interval:", "yes" if inside else "NO")
    return 0


if __name__ == "__main__":
    sys.exit(main())
