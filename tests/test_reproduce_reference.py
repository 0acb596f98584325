"""Reproduce the reference's stability claims with the verdict machinery of
``servesim.analysis.stability`` (``study``), on scaled-down runs.

(a) Batch-size cap (reference "Batch-size cap"; docs/theory.md, "Small budgets can beat large
    ones under work conservation"): at token rates 0.85 x (3, 1) = (2.55, 0.85) tokens/s with
    k_max = 2 on the staircase c = 0.1 s, a = 1 s, b0 = 4, a work-conserving policy is stable at
    b_max = 4 and unstable at b_max = 8, and the region calculator says the same.
(b) Fig. 1 contrast (reference "Stability contrast (Fig. 1 style)") at 0.75 and 0.85 lambda*.

Horizons and seeds were checked on ten (a) / three (b) disjoint seed sets; the seeds used here
are fixed, so the tests are deterministic.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from servesim.analysis.study import study
from servesim.scenario import apply_overrides, scenario_from_dict
from servesim.theory.cap_region import cap_region, wc_reachable, wc_saturated_region

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

CAP_HORIZON_S = 3000.0      # ~2,550 requests; b_max = 8 locks into its slow cycle well before H/2
CAP_SEEDS = (0, 1, 2, 3, 4)
FIG1_HORIZON_S = 300.0
FIG1_SEEDS = (0, 1, 2, 3, 4)


def _table(name: str, overrides: list[str]) -> dict[str, Any]:
    raw = tomllib.loads((EXAMPLES / f"{name}.toml").read_text(encoding="utf-8"))
    return apply_overrides(raw, overrides)


# -- (a) batch-size cap ---------------------------------------------------------------------------


def test_batch_cap_region_calculator() -> None:
    s = scenario_from_dict(_table("batch_cap_region", []))
    assert s.engine.max_batch_size == 2
    lam = s.workload.arrival.rate_per_s
    point = (lam * 3, lam * 1)
    assert point == pytest.approx((2.55, 0.85))
    # Inside R at both budgets.
    assert cap_region(s.cost, 4, 2).contains(*point)
    assert cap_region(s.cost, 8, 2).contains(*point)
    # The vertex (3, 1) / 1.1 s needs only b_max = 4 and is not maximal under b_max = 8.
    vertex = next(v for v in cap_region(s.cost, 8, 2).vertex_batches()
                  if (v.prefill_tokens, v.decode_tokens) == (3, 1))
    assert (vertex.prefill_rate, vertex.decode_rate) == pytest.approx((3 / 1.1, 1 / 1.1))
    assert wc_reachable(vertex, 4, 2)
    assert not wc_reachable(vertex, 8, 2)
    # Inside the work-conserving saturated region at 4, outside at 8.
    assert wc_saturated_region(s.cost, 4, 2).contains(*point)
    assert not wc_saturated_region(s.cost, 8, 2).contains(*point)


@pytest.mark.slow
@pytest.mark.parametrize("system", ["sarathi", "orca", "greedy"])
def test_batch_cap_small_budget_stable_large_unstable(system: str) -> None:
    states = {}
    for budget in (4, 8):
        table = _table("batch_cap_region",
                       [f"engine.batching={system}", f"engine.token_budget={budget}"])
        df = study(table, [1.0], CAP_SEEDS, base_rate=0.85, horizon_s=CAP_HORIZON_S)
        states[budget] = df.iloc[0]["state"]
    assert states == {4: "stable", 8: "unstable"}


# -- (b) Fig. 1 contrast ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fig1_states() -> dict[tuple[str, float], str]:
    base = scenario_from_dict(_table("fig1_contrast", []))
    budget = base.engine.token_budget
    tokens = sum(c.weight * (c.prompt.mean + c.output.mean) for c in base.workload.classes)
    lam_star = budget / float(base.cost.iteration_s(budget, 0, 0)) / tokens
    assert lam_star == pytest.approx(13.87, abs=0.01)
    states = {}
    for system in ("fastertransformer", "vllm", "orca", "sarathi"):
        table = _table("fig1_contrast", [f"engine.batching={system}"])
        df = study(table, [0.75, 0.85], FIG1_SEEDS, base_rate=lam_star,
                   horizon_s=FIG1_HORIZON_S)
        for row in df.itertuples(index=False):
            states[(system, float(row.load))] = row.state
    return states


@pytest.mark.slow
@pytest.mark.parametrize("load", [0.75, 0.85])
def test_fig1_fastertransformer_unstable(fig1_states: dict, load: float) -> None:
    assert fig1_states[("fastertransformer", load)] == "unstable"


@pytest.mark.slow
@pytest.mark.parametrize("system", ["orca", "sarathi"])
@pytest.mark.parametrize("load", [0.75, 0.85])
def test_fig1_work_conserving_stable(fig1_states: dict, system: str, load: float) -> None:
    assert fig1_states[(system, load)] == "stable"


@pytest.mark.slow
def test_fig1_vllm(fig1_states: dict) -> None:
    assert fig1_states[("vllm", 0.85)] == "unstable"
    # At 0.75 lambda* vLLM is stable but holds ~500-650 requests after a long climb; 300 s runs
    # come out stable or inconclusive depending on the seeds, so only "not unstable" is asserted.
    assert fig1_states[("vllm", 0.75)] != "unstable"


# -- (c) the Theorem 2 slope table ----------------------------------------------------------------


@pytest.mark.slow
def test_theorem2_slope_table() -> None:
    """Theorem 2 boundary (reference table): Sarathi, b_max = 512, (100, 100) tokens, 120 s. The
    fluid slope max(0, lambda (m_p + m_d) - mu*) = 0, 0.3343 and 0.6686 tokens/ms at 0.9, 1.1 and
    1.2 lambda* lies inside the 99% t-interval of the second-half W(t) slopes over 12 seeds, and
    so does the reference's measured mean (0.0078, 0.3383, 0.6683)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("theorem2_slopes",
                                                  EXAMPLES / "theorem2_slopes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    frame = module.slope_table(range(12))
    assert list(frame["load"]) == [0.9, 1.1, 1.2]
    assert list(frame["fluid"]) == pytest.approx([0.0, 0.3343, 0.6686], abs=5e-5)
    assert ((frame["ci_lo"] <= frame["fluid"]) & (frame["fluid"] <= frame["ci_hi"])).all()
    assert ((frame["ci_lo"] <= frame["reference"])
            & (frame["reference"] <= frame["ci_hi"])).all()
    assert list(frame["state"]) == ["stable", "unstable", "unstable"]
