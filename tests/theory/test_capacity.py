"""Theory: capacity of one engine (Dai et al. 2025, arXiv 2504.07347), checked by hand.

Staircase defaults: t(b) = c + a*ceil(b/b0), c = 11.28 ms, a = 35.47 ms, b0 = 128, so
t(512) = 11.28 + 4*35.47 = 153.16 ms, t(387) = 153.16 ms, t(258) = 117.69 ms,
t(3) = t(2) = 46.75 ms.
"""

import numpy as np
import pytest

from servesim.engine.cost import Affine, PiecewiseLinear, Staircase
from servesim.theory import (
    Quantity,
    cap_region,
    fastertransformer_cycle_capacity,
    load,
    request_capacity,
    scenario_capacity,
    static_batching_capacity,
    token_capacity,
    vertex_budgets,
    wc_reachable,
    wc_saturated_region,
)
from servesim.workload.arrivals import Poisson
from servesim.workload.build import Workload, WorkloadClass
from servesim.workload.distributions import Deterministic

STAIR = Staircase()


def one_class(rate, prompt=129, output=112):
    return Workload(Poisson(rate), (WorkloadClass("default", 1.0, Deterministic(prompt),
                                                  Deterministic(output)),))


def two_classes(rate):
    return Workload(Poisson(rate), (
        WorkloadClass("short", 0.25, Deterministic(100), Deterministic(50)),
        WorkloadClass("long", 0.75, Deterministic(200), Deterministic(100)),
    ))


def test_token_capacity_staircase():
    """mu* = b_max / t(b_max) = 512 / 0.15316 s = 3342.9 tokens/s, exact."""
    mu = token_capacity(STAIR, 512)
    assert isinstance(mu, Quantity)
    assert mu.value == pytest.approx(512 / 0.15316, rel=1e-12)
    assert mu.value == pytest.approx(3342.9, abs=0.05)
    assert mu.unit == "tokens/s" and mu.exact
    assert "b_max / t(b_max)" in mu.formula and "2504.07347" in mu.source


def test_token_capacity_piecewise():
    """mu* = b_max / (c + a*max(0, b_max - b0)) = 512 / (0.01 + 0.001*(512-256)) = 1924.8."""
    mu = token_capacity(PiecewiseLinear(c_s=0.01, a_s=0.001, b0=256), 512)
    assert mu.value == pytest.approx(512 / 0.266, rel=1e-12) and mu.exact


def test_token_capacity_context_model_is_approximate():
    """Affine fallback: mu* ~= b_max / t(x, y, C) with s = m_d/(m_p+m_d) = 112/241, y = s*512,
    x = 512 - y, C = y*(m_p + m_d/2) = y*185; t = d0 + d1*(x + C)."""
    w = one_class(10.0)
    mu = token_capacity(Affine(d0_s=0.01, d1_s=1e-5), 512, w)
    y = 512 * 112 / 241
    t = 0.01 + 1e-5 * ((512 - y) + 185 * y)
    assert mu.value == pytest.approx(512 / t, rel=1e-12)
    assert mu.value == pytest.approx(1130.41, abs=0.01)
    assert not mu.exact and "context" in mu.formula
    explicit = token_capacity(Affine(d0_s=0.01, d1_s=1e-5), 512, decode_share=0.0,
                              context_per_decode=0.0)
    assert explicit.value == pytest.approx(512 / (0.01 + 1e-5 * 512))
    with pytest.raises(ValueError, match="workload"):
        token_capacity(Affine(d0_s=0.01, d1_s=1e-5), 512)


def test_request_capacity_and_load_single_class():
    """lambda* = mu*/(m_p + m_d) = 3342.9/241 = 13.87 req/s; rho = 12.48*241/3342.9 = 0.900."""
    cap = request_capacity(STAIR, 512, one_class(12.48))
    assert cap.mean_tokens.value == 241
    assert cap.request_capacity.value == pytest.approx(512 / 0.15316 / 241, rel=1e-12)
    assert cap.request_capacity.value == pytest.approx(13.87, abs=0.005)
    assert cap.load.value == pytest.approx(12.48 * 241 * 0.15316 / 512, rel=1e-12)
    assert cap.load.value == pytest.approx(0.9, abs=0.001)
    assert load(STAIR, 512, one_class(12.48)).value == cap.load.value
    assert load(STAIR, 512, one_class(1.0), rate_per_s=12.48).value == pytest.approx(
        cap.load.value)


def test_request_capacity_multi_class():
    """rho = sum_k lambda_k (m_p^k + m_d^k) / mu*, lambda_k = lambda w_k: at lambda = 10,
    (2.5*150 + 7.5*300) / 3342.9 = 2625 / 3342.9 = 0.7853; lambda* = mu* / (0.25*150 + 0.75*300)
    = 3342.9 / 262.5 = 12.735 req/s."""
    cap = request_capacity(STAIR, 512, two_classes(10.0))
    mu = 512 / 0.15316
    assert cap.mean_tokens.value == pytest.approx(262.5)
    assert cap.load.value == pytest.approx(2625 / mu, rel=1e-12)
    assert cap.load.value == pytest.approx(0.7853, abs=1e-4)
    assert cap.request_capacity.value == pytest.approx(mu / 262.5, rel=1e-12)
    assert cap.request_capacity.value == pytest.approx(12.735, abs=1e-3)


def test_fastertransformer_cycle():
    """k = floor(512/129) = 3; cycle = t(387) + 112*t(3) = 0.15316 + 112*0.04675 = 5.38916 s;
    capacity k/cycle = 0.5567 req/s."""
    ft = fastertransformer_cycle_capacity(STAIR, 512, 129, 112)
    assert ft.batch_requests.value == 3
    assert ft.cycle_s.value == pytest.approx(0.15316 + 112 * 0.04675, rel=1e-12)
    assert ft.request_capacity.value == pytest.approx(3 / 5.38916, rel=1e-9)
    assert ft.request_capacity.value == pytest.approx(0.557, abs=5e-4)
    assert ft.token_capacity.value == pytest.approx(3 * 241 / 5.38916, rel=1e-9)
    with pytest.raises(ValueError, match="does not fit"):
        fastertransformer_cycle_capacity(STAIR, 128, 129, 112)


def test_fastertransformer_cycle_context_model():
    """Affine: cycle = t(3*129) + sum_{j<112} (d0 + d1*3*(129 + j))
    = 0.01387 + 112*0.01 + 3e-5*(112*129 + 111*112/2) = 1.75379 s."""
    ft = fastertransformer_cycle_capacity(Affine(d0_s=0.01, d1_s=1e-5), 512, 129, 112)
    expected = 0.01 + 1e-5 * 387 + 112 * 0.01 + 3e-5 * (112 * 129 + 111 * 112 / 2)
    assert ft.cycle_s.value == pytest.approx(expected, rel=1e-12)
    assert ft.cycle_s.exact


def test_static_batching():
    """k = min(k_max, floor(b_max/v_p)) = min(2, 3) = 2; cycle = t(258) + 112*t(2)
    = 0.11769 + 112*0.04675 = 5.35369 s; capacity 2/cycle = 0.37357 req/s."""
    sb = static_batching_capacity(STAIR, 512, 2, 129, 112)
    assert sb.batch_requests.value == 2
    assert sb.cycle_s.value == pytest.approx(0.11769 + 112 * 0.04675, rel=1e-12)
    assert sb.request_capacity.value == pytest.approx(2 / 5.35369, rel=1e-9)
    same = static_batching_capacity(STAIR, 512, 64, 129, 112)
    ft = fastertransformer_cycle_capacity(STAIR, 512, 129, 112)
    assert same.request_capacity.value == ft.request_capacity.value


# Tiny staircase: c = a = 1 s, b0 = 2, so t(1) = t(2) = 2 s and t(3) = t(4) = 3 s.
TINY = Staircase(c_s=1.0, a_s=1.0, b0=2)


def test_cap_region_vertices_tiny():
    """Region = conv({0} U {(x, y)/t(x+y)}), x+y <= 4, y <= 2, y <= 1 if x > 0. Candidates:
    (1,0)/2, (0,1)/2, (2,0)/2, (0,2)/2 = (0,1), (1,1)/2, (3,0)/3, (2,1)/3, (4,0)/3 = (4/3,0),
    (3,1)/3 = (1,1/3). Hull vertices: (0,0), (4/3,0), (1,1/3), (0,1)."""
    reg = cap_region(TINY, 4, 2)
    got = {tuple(np.round(v, 12)) for v in reg.vertices}
    assert got == {(0.0, 0.0), (round(4 / 3, 12), 0.0), (1.0, round(1 / 3, 12)), (0.0, 1.0)}
    batches = {(vb.prefill_tokens, vb.decode_tokens): vb.min_budget for vb in vertex_budgets(reg)}
    assert batches == {(4, 0): 4, (3, 1): 4, (0, 2): 2}
    assert reg.exact


def test_cap_region_membership_tiny():
    """Stable iff x, y >= 0 and strictly inside the non-axis edges of the hull above:
    (4/3,0)-(1,1/3) gives x + y < 4/3 and (1,1/3)-(0,1) gives y < 1 - 2x/3."""
    reg = cap_region(TINY, 4, 2)
    assert reg.contains(0.5, 0.5)           # 0.5 < 1 - 1/3 = 0.667
    assert reg.contains(1.2, 0.0)           # on the x axis, below 4/3
    assert reg.contains(0.0, 0.99)
    assert not reg.contains(1.0, 0.34)      # above 1 - 2/3 = 0.333
    assert not reg.contains(1.0, 1 / 3)     # a vertex: boundary, not stable
    assert not reg.contains(4 / 3, 0.0)
    assert not reg.contains(0.0, 1.0)
    assert not reg.contains(1.2, 0.2)       # 1.4 > 4/3
    assert not reg.contains(-0.1, 0.1)


def test_cap_region_generic_enumeration_matches_token_only():
    """A context-free Affine with decode_s = d1 is t = d0 + d1*(x+y), the same as a piecewise
    model with b0 = 0; enumerating all (x, y) gives the same hull as the extreme-split shortcut."""
    aff = cap_region(Affine(d0_s=0.5, d1_s=0.1, decode_s=0.1), 6, 3, context_per_decode=0.0)
    pw = cap_region(PiecewiseLinear(c_s=0.5, a_s=0.1, b0=0), 6, 3)
    assert sorted(map(tuple, np.round(aff.vertices, 12))) == \
        sorted(map(tuple, np.round(pw.vertices, 12)))
    assert not aff.exact


def test_small_budget_vertex_beats_large_budget_wc():
    """Staircase c = 0.1 s, a = 1 s, b0 = 4, k_max = 2: t(b) = 1.1 s for b <= 4, 2.1 s for 5..8.

    The batch (3, 1) gives the vertex (3, 1)/1.1 = (2.727, 0.909) and needs only budget 4. A
    work-conserving policy with b_max = 8 forms, while backlogged, only maximal batches: (8,0),
    (7,1) [rates /2.1] and (0,2) [/1.1 = (0, 1.818)]. Its region's edge from (0, 1.818) to
    (7/2.1, 1/2.1) gives y < 1.818 - 0.4026 x, i.e. y < 0.791 at x = 2.55. The load
    (lambda m_p, lambda m_d) = 0.85*(3, 1) = (2.55, 0.85) is inside the full cap region and inside
    the b_max = 4 WC region (x + y = 3.4 < 40/11 and y < 1.818 - x/3 = 0.968) but outside the
    b_max = 8 WC region: the smaller budget is stable where the larger is not.
    """
    cost = Staircase(c_s=0.1, a_s=1.0, b0=4)
    lam, m_p, m_d = 0.85, 3, 1
    point = (lam * m_p, lam * m_d)
    full8 = cap_region(cost, 8, 2)
    assert full8.contains(*point)
    assert wc_saturated_region(cost, 4, 2).contains(*point)
    assert not wc_saturated_region(cost, 8, 2).contains(*point)
    vertex = next(v for v in vertex_budgets(full8) if (v.prefill_tokens, v.decode_tokens)
                  == (3, 1))
    assert vertex.prefill_rate == pytest.approx(3 / 1.1)
    assert vertex.min_budget == 4
    assert wc_reachable(vertex, 4, 2)
    assert not wc_reachable(vertex, 8, 2)


def test_scenario_capacity():
    """scenario_capacity(s) = request_capacity(s.cost, s.engine.token_budget, s.workload):
    lambda* = 13.87 req/s for the default staircase, b_max 512 and 129 + 112 tokens."""
    from types import SimpleNamespace

    from servesim.engine.config import EngineConfig
    scenario = SimpleNamespace(cost=STAIR, engine=EngineConfig(token_budget=512),
                               workload=one_class(12.48))
    cap = scenario_capacity(scenario)
    assert cap.request_capacity.value == pytest.approx(13.87, abs=0.005)
