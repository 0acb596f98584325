"""Tiny sweeps for the experiments tests: a few hundred requests per point, every file in
tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

# The Fig. 1 cost and sizes with an ample KV cache; lambda* = 13.87 requests/s.
BASE = """
[run]
seed = 0
horizon_s = 20.0
max_in_system = 1500

[workload]
arrival = { kind = "poisson", rate_per_s = 8.0 }
prompt_tokens = { kind = "deterministic", value = 129 }
output_tokens = { kind = "deterministic", value = 112 }

[engine]
batching = "sarathi"
token_budget = 512
kv = { block_tokens = 16, blocks = 100000 }
cost = { kind = "staircase", c_ms = 11.28, a_ms = 35.47, b0 = 128 }
"""

SWEEP = """
[sweep]
scenario = "base.toml"
name = "tiny"
seeds = {seeds}

[grid]
"engine.batching" = {policies}
load = {loads}
"""

# Columns measured on the wall clock: the only ones that may differ between identical runs.
WALL_CLOCK = ["sim_wall_s", "finished_unix_s"]


@pytest.fixture(scope="session")
def base_scenario_text() -> str:
    return BASE


@pytest.fixture
def make_sweep(tmp_path: Path) -> Callable[..., Path]:
    """Write base.toml and a sweep file into tmp_path; return the sweep file's path."""

    def make(policies=("orca", "vllm"), loads=(0.5, 1.2), seeds=2, extra: str = "",
             name: str = "sweep.toml") -> Path:
        (tmp_path / "base.toml").write_text(BASE, encoding="utf-8")
        text = SWEEP.format(seeds=seeds, policies=list(policies), loads=list(loads))
        path = tmp_path / name
        path.write_text(text.replace("'", '"') + extra, encoding="utf-8")
        return path

    return make


def comparable(out_dir: Path) -> dict[str, pd.DataFrame]:
    """A sweep folder's catalogue and tables, sorted, without wall-clock columns."""
    from servesim.experiments.store import query

    points = query(out_dir, "SELECT * FROM points ORDER BY point_id").drop(columns=WALL_CLOCK)
    requests = query(out_dir, "SELECT * FROM requests ORDER BY point_id, id")
    iterations = query(out_dir, "SELECT * FROM iterations ORDER BY point_id, start_s")
    return {"points": points, "requests": requests, "iterations": iterations}


def assert_same_results(a: Path, b: Path) -> None:
    left, right = comparable(a), comparable(b)
    for name in left:
        assert len(left[name]) > 0, name
        pd.testing.assert_frame_equal(left[name], right[name], check_exact=True)


@pytest.fixture
def same_results() -> Callable[[Path, Path], None]:
    return assert_same_results


@pytest.fixture
def results_of() -> Callable[[Path], dict[str, pd.DataFrame]]:
    """``comparable``: a sweep folder's catalogue and tables without wall-clock columns."""
    return comparable
