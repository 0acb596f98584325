"""Reproductions from the reference ("Networks of agents"): the Rybko-Stolyar network diverges
under exit priority at rho = 0.9 per engine and is stable under the reverse priority, with the
virtual-station check flagging only the former before any run; a DAG agent pipeline and a
fork-join network at max rho_j = 0.9 are stable, with each engine's measured throughput
matching the traffic equations within a 99% CI over seeds.

Seeds 0-2 of each example; margins were checked on seeds 3-5 as well.
"""

from __future__ import annotations

import pytest

from servesim.cluster import load_network, network_theory, study_network

SEEDS = [0, 1, 2]


@pytest.fixture(scope="module")
def rs(examples_dir):
    return {name: load_network(examples_dir / f"network_rybko_stolyar{suffix}.toml")
            for name, suffix in (("exit", ""), ("entry", "_reverse"))}


def test_virtual_station_flags_exit_priority_only(rs):
    """rho_S1 = rho_S2 = lambda (32 + 256) / mu* = 0.9 in both; exit priority makes {A2, B2}
    a virtual station with load rho_A2 + rho_B2 = 2 * lambda * 256 / mu* = 1.6 >= 1."""
    bad, good = network_theory(rs["exit"].network), network_theory(rs["entry"].network)
    for th in (bad, good):
        assert th.loads.max_load.value == pytest.approx(0.9, abs=1e-4) and th.loads.stable
    [vs] = bad.virtual.flagged
    assert set(vs.classes) == {"A2", "B2"} and vs.load.value == pytest.approx(1.6, abs=1e-4)
    assert good.virtual.stations == () and good.virtual.stable


def test_rybko_stolyar_exit_priority_diverges(rs):
    """N(t) slope CI over seeds lies above 0, the windowed completion ratio is < 1 - eps, and
    the peaks of N(t) grow (envelope test): verdict unstable. Each engine idles while the
    other serves its exit class, so the measured load stays well below rho_j = 0.9."""
    st = study_network(rs["exit"], SEEDS, horizon_s=400.0)
    v = st.verdict
    assert v.state == "unstable"
    assert v.slope.lo > 0 and v.completion_ratio < 1 - v.eps
    assert v.envelope is not None and v.envelope.growing
    assert st.engines["measured_load"].mean() < 0.8   # about 0.58: idle while work waits
    assert set(st.stop_reasons) == {"time"}


def test_rybko_stolyar_entry_priority_is_stable(rs):
    st = study_network(rs["entry"], SEEDS, horizon_s=400.0)
    v = st.verdict
    assert v.state == "stable"
    assert v.envelope is not None and not v.envelope.growing
    assert st.engines["within_ci"].all()


@pytest.mark.parametrize("name", ["network_agent_dag", "network_fork_join"])
def test_dag_and_fork_join_at_rho_09_are_stable(examples_dir, name):
    """max_j rho_j = 0.9 with work-conserving engines: stable, and per engine the measured
    token throughput's 99% CI over seeds holds rho_j * mu*_j = sum_k lambda_k (m_p^k + m_d^k);
    every class's visit rate is within 5% of lambda_k."""
    sc = load_network(examples_dir / f"{name}.toml")
    st = study_network(sc, SEEDS)
    assert st.theory.loads.max_load.value == pytest.approx(0.9, abs=0.005)
    assert st.verdict.state == "stable"
    assert st.engines["within_ci"].all(), st.engines
    c = st.classes
    assert ((c["rate_per_s"] / c["theory_rate_per_s"] - 1).abs() < 0.05).all(), c
    assert (st.workflows["failed"] == 0).all()


def test_cyclic_review_loop_behind_least_kv_router(examples_dir):
    """Markov loop review -> draft (p = 0.4): lambda_draft = lambda_review = 3 / 0.6 = 5 /s;
    each measured visit rate is within 5% of it, and the least-KV router splits the writer
    pool's tokens evenly (each replica's CI holds half the pool's rate)."""
    sc = load_network(examples_dir / "network_review_loop.toml")
    st = study_network(sc, [0, 1], horizon_s=200.0)
    assert st.theory.rates["draft"].value == pytest.approx(5.0)
    c = st.classes.set_index("class")
    assert ((c["rate_per_s"] / 5.0 - 1).abs() < 0.05).all(), c
    assert st.engines["within_ci"].all(), st.engines
    assert st.verdict.state == "stable"
