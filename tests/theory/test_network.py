"""Theory: networks of engines (Dai et al. 2025) and virtual stations (Rybko & Stolyar 1992)."""

import pytest

from servesim.core.errors import ConfigError
from servesim.theory.network import (
    VIRTUAL_STATION_SOURCE,
    engine_loads,
    traffic_equations,
    virtual_station_check,
)

# Feedback network: alpha = (a: 1, b: 0, c: 0.5); a -> b w.p. 1; b -> a w.p. 0.5, b -> c w.p. 0.5.
ALPHA = {"a": 1.0, "b": 0.0, "c": 0.5}
ROUTING = {("a", "b"): 1.0, ("b", "a"): 0.5, ("b", "c"): 0.5}


def test_traffic_equations_with_feedback():
    """lambda = alpha + P^T lambda: lambda_a = 1 + lambda_b/2, lambda_b = lambda_a, so both are 2;
    lambda_c = 0.5 + lambda_b/2 = 1.5."""
    lam = traffic_equations(ALPHA, ROUTING)
    assert {k: q.value for k, q in lam.items()} == pytest.approx({"a": 2.0, "b": 2.0, "c": 1.5})
    assert lam["a"].unit == "1/s"


def test_traffic_equations_closed_loop_is_singular():
    """a -> b -> a with probability 1: I - P^T is singular (no request ever leaves)."""
    with pytest.raises(ConfigError) as info:
        traffic_equations({"a": 1.0, "b": 0.0}, {("a", "b"): 1.0, ("b", "a"): 1.0})
    assert info.value.field == "routing"


def test_traffic_equations_row_sum_above_one():
    """Each row of P must sum to <= 1: 0.7 + 0.5 = 1.2 is rejected."""
    with pytest.raises(ConfigError) as info:
        traffic_equations(ALPHA, {("a", "b"): 0.7, ("a", "c"): 0.5})
    assert info.value.field == "routing[('a', *)]"
    assert info.value.value == pytest.approx(1.2)


def test_traffic_equations_unknown_class():
    """A routing key must name classes listed in external_rates."""
    with pytest.raises(ConfigError, match="routing"):
        traffic_equations(ALPHA, {("a", "z"): 0.5})


def test_engine_loads():
    """rho_j = sum_{k at j} lambda_k*(m_p^k + m_d^k)/mu*_j:
    rho_e1 = (2*(10+40) + 1.5*(20+0))/200 = 0.65; rho_e2 = 2*(5+5)/100 = 0.2; max = 0.65."""
    lam = traffic_equations(ALPHA, ROUTING)
    out = engine_loads(lam, {"a": "e1", "b": "e2", "c": "e1"},
                       {"a": (10, 40), "b": (5, 5), "c": (20, 0)}, {"e1": 200.0, "e2": 100.0})
    assert out.loads["e1"].value == pytest.approx(0.65)
    assert out.loads["e2"].value == pytest.approx(0.2)
    assert out.max_load.value == pytest.approx(0.65)
    assert out.bottleneck == "e1" and out.stable


def test_engine_loads_overloaded():
    """max_j rho_j >= 1 is unstable: rho = 3*(10+40)/100 = 1.5."""
    out = engine_loads({"a": 3.0}, {"a": "e"}, {"a": (10, 40)}, {"e": 100.0})
    assert out.max_load.value == pytest.approx(1.5)
    assert not out.stable and "unstable" in out.verdict


def test_engine_loads_missing_capacity():
    """Every engine a class uses needs a positive capacity."""
    with pytest.raises(ConfigError) as info:
        engine_loads({"a": 1.0}, {"a": "e"}, {"a": (1, 1)}, {"f": 1.0})
    assert info.value.field == "engine_capacity_tokens_per_s['e']"


# Rybko-Stolyar: A visits S1 (10 tokens) then S2 (80 tokens); B visits S2 (10) then S1 (80).
# lambda_A = lambda_B = 1/s, mu = 100 tokens/s: rho_S1 = rho_S2 = (10 + 80)/100 = 0.9.
RS_ALPHA = {"A1": 1.0, "A2": 0.0, "B1": 1.0, "B2": 0.0}
RS_ROUTING = {("A1", "A2"): 1.0, ("B1", "B2"): 1.0}
RS_ENGINE = {"A1": "S1", "A2": "S2", "B1": "S2", "B2": "S1"}
RS_TOKENS = {"A1": (5, 5), "A2": (40, 40), "B1": (5, 5), "B2": (40, 40)}
RS_MU = {"S1": 100.0, "S2": 100.0}


def rs_check(priorities):
    return virtual_station_check(RS_ALPHA, RS_ROUTING, RS_ENGINE, RS_TOKENS, RS_MU, priorities)


def test_rybko_stolyar_engine_loads_are_below_one():
    """rho_S1 = rho_S2 = (1*10 + 1*80)/100 = 0.9 < 1, so max_j rho_j < 1 passes."""
    lam = traffic_equations(RS_ALPHA, RS_ROUTING)
    out = engine_loads(lam, RS_ENGINE, RS_TOKENS, RS_MU)
    assert out.loads["S1"].value == pytest.approx(0.9)
    assert out.loads["S2"].value == pytest.approx(0.9)
    assert out.stable


def test_rybko_stolyar_exit_priority_is_flagged():
    """Exit priority (S1: B2 > A1, S2: A2 > B1) makes {A2, B2} a virtual station with load
    rho_A2 + rho_B2 = 80/100 + 80/100 = 1.6 >= 1: unstable."""
    report = rs_check({"S1": ["B2", "A1"], "S2": ["A2", "B1"]})
    assert len(report.flagged) == 1
    vs = report.flagged[0]
    assert set(vs.classes) == {"A2", "B2"}
    assert vs.load.value == pytest.approx(1.6)
    assert not report.stable and "A2" in report.verdict
    assert vs.load.source == VIRTUAL_STATION_SOURCE


def test_rybko_stolyar_reverse_priority_is_not_flagged():
    """Entry priority (S1: A1 > B2, S2: B1 > A2) forms no virtual station."""
    report = rs_check({"S1": ["A1", "B2"], "S2": ["B1", "A2"]})
    assert report.stations == () and report.stable


def test_no_priorities_means_no_virtual_station():
    """Engines without a strict priority order form no virtual station."""
    assert rs_check({}).stations == ()


def test_virtual_station_below_one_is_reported_but_not_flagged():
    """Exit priority with light second steps: rho_A2 + rho_B2 = 0.4 + 0.4 = 0.8 < 1."""
    tokens = {"A1": (5, 5), "A2": (20, 20), "B1": (5, 5), "B2": (20, 20)}
    report = virtual_station_check(RS_ALPHA, RS_ROUTING, RS_ENGINE, tokens, RS_MU,
                                   {"S1": ["B2", "A1"], "S2": ["A2", "B1"]})
    assert len(report.stations) == 1 and report.flagged == ()
    assert report.stations[0].load.value == pytest.approx(0.8)


def test_priority_list_must_match_engine_classes():
    """priorities[e] must list each class at e exactly once."""
    with pytest.raises(ConfigError) as info:
        rs_check({"S1": ["B2"], "S2": ["A2", "B1"]})
    assert info.value.field == "priorities['S1']"


def test_lu_kumar_single_route_is_flagged():
    """Lu-Kumar: one route 1 -> 2 -> 3 -> 4, classes 1, 4 at S1 and 2, 3 at S2, priorities
    4 > 1 and 2 > 3. {2, 4} is a virtual station with load (60 + 60)/100 = 1.2 >= 1, although
    rho_S1 = rho_S2 = (10 + 60)/100 = 0.7."""
    alpha = {1: 1.0, 2: 0.0, 3: 0.0, 4: 0.0}
    routing = {(1, 2): 1.0, (2, 3): 1.0, (3, 4): 1.0}
    engine = {1: "S1", 2: "S2", 3: "S2", 4: "S1"}
    tokens = {1: (10, 0), 2: (60, 0), 3: (10, 0), 4: (60, 0)}
    report = virtual_station_check(alpha, routing, engine, tokens, RS_MU,
                                   {"S1": [4, 1], "S2": [2, 3]})
    assert [v.classes for v in report.flagged] == [(2, 4)]
    assert report.flagged[0].load.value == pytest.approx(1.2)
    fifo_like = virtual_station_check(alpha, routing, engine, tokens, RS_MU,
                                      {"S1": [1, 4], "S2": [3, 2]})
    assert fifo_like.stations == ()


def test_traffic_equations_with_forks():
    """A fork spawns two children per completion: lambda_child = 2 lambda_parent, and a join
    class fed half a share from each child gets lambda_parent again (lambda = alpha + P^T lambda
    with rows of P summing to 2)."""
    rates = traffic_equations({"plan": 1.5, "work": 0.0, "merge": 0.0},
                              {("plan", "work"): 2.0, ("work", "merge"): 0.5}, forks=True)
    assert rates["work"].value == pytest.approx(3.0)
    assert rates["merge"].value == pytest.approx(1.5)


def test_traffic_equations_forks_must_die_out():
    """Spawning two of yourself on every completion never empties: spectral radius 2 >= 1."""
    with pytest.raises(ConfigError, match="spectral radius"):
        traffic_equations({"a": 1.0}, {("a", "a"): 2.0}, forks=True)
