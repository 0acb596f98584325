"""Reproductions from the reference ("Networks of agents"): the Rybko-Stolyar network diverges
under exit priority at rho = 0.9 per engine and is stable under the reverse priority, with the
virtual-station check flagging only the former before any run; a DAG agent pipeline and a
fork-join network at max rho_j = 0.9 are stable, with each engine's measured throughput
matching the traffic equations within a 99% count-based CI.

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


@pytest.mark.slow
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


@pytest.mark.slow
def test_rybko_stolyar_entry_priority_is_stable(rs):
    st = study_network(rs["entry"], SEEDS, horizon_s=400.0)
    v = st.verdict
    assert v.state == "stable"
    assert v.envelope is not None and not v.envelope.growing
    assert st.engines["within_ci"].all()


Z99 = 2.5758   # two-sided 99% normal quantile


def _window_tokens(runs, replicas):
    """(tokens of the replicas' iterations starting in [warm-up, end], summed window, sum over
    tasks of the squared tokens each brought to these replicas)."""
    tokens = span = squares = 0.0
    for r in runs:
        lo, hi = r.warmup_s, r.end_s
        span += hi - lo
        for name in replicas:
            it = r.iterations[name]
            inside = it[(it["start_s"] >= lo) & (it["start_s"] < hi)]
            tokens += float((inside["prefill_tokens"] + inside["decode_tokens"]).sum())
        v = r.visits
        mine = v[v["engine"].isin(replicas) & (v["finish_s"] >= lo) & (v["finish_s"] <= hi)]
        per_task = (mine["prompt_tokens"] + mine["generated_tokens"]).groupby(mine["task"]).sum()
        squares += float((per_task.astype(float) ** 2).sum())
    return tokens, span, squares


def assert_token_rate(runs, replicas, expected):
    """Tasks arrive as a Poisson process, so the tokens they bring to an engine in a window of
    length T form a compound Poisson sum with variance lambda T E[w^2] (w: one task's tokens
    there), estimated by the sum of w^2 over the tasks seen: the measured rate must lie within
    z_0.995 sqrt(sum w^2) / T of the traffic-equation rate."""
    tokens, span, squares = _window_tokens(runs, replicas)
    half = Z99 * squares ** 0.5 / span
    assert abs(tokens / span - expected) < half, (replicas, tokens / span, expected, half)
    return half / expected


def assert_class_rates(study, second_moment=None):
    """Visits of class k finishing in the pooled window T: a compound Poisson count with
    variance alpha T E[G_k^2] (G_k: visits of k per task; 1 in a DAG, so lambda_k T), so the
    rate must lie within z_0.995 sqrt(lambda_k E[G^2] / E[G] / T) of lambda_k."""
    span = sum(r.end_s - r.warmup_s for r in study.runs)
    for row in study.classes.itertuples():
        lam = row.theory_rate_per_s
        ratio = 1.0 if second_moment is None else second_moment[row[1]]
        half = Z99 * (lam * ratio / span) ** 0.5
        assert abs(row.rate_per_s - lam) < half, (row[1], row.rate_per_s, lam, half)
        assert half / lam < 0.06


@pytest.mark.slow
@pytest.mark.parametrize("name", ["network_agent_dag", "network_fork_join"])
def test_dag_and_fork_join_at_rho_09_are_stable(examples_dir, name):
    """max_j rho_j = 0.9 with work-conserving engines: stable, and per engine pool the
    measured token throughput lies in a 99% compound-Poisson CI around rho_j * mu*_j =
    sum_k lambda_k (m_p^k + m_d^k) (``assert_token_rate``); every class's visit rate lies in
    a 99% Poisson-count CI around lambda_k (``assert_class_rates``). The CIs are a few percent
    wide, so a 10% error in the traffic equations fails."""
    sc = load_network(examples_dir / f"{name}.toml")
    st = study_network(sc, SEEDS)
    assert st.theory.loads.max_load.value == pytest.approx(0.9, abs=0.005)
    assert st.verdict.state == "stable"
    for pool, spec in sc.network.engines.items():
        rel = assert_token_rate(st.runs, spec.replica_names,
                                st.theory.loads.loads[pool].value * st.theory.capacity[pool].value)
        assert rel < 0.06
    assert_class_rates(st)
    assert (st.workflows["failed"] == 0).all()


@pytest.mark.slow
def test_cyclic_review_loop_behind_least_kv_router(examples_dir):
    """Markov loop review -> draft (p = 0.4): lambda_draft = lambda_review = 3 / 0.6 = 5 /s.
    Visits per task G ~ Geometric(0.6) on {1, 2, ...}: E[G] = 1/0.6, E[G^2] = 1.4 / 0.36, so
    a class's count over T has variance 3 T E[G^2] = lambda T E[G^2] / E[G]; the measured
    rates lie in that 99% CI. The least-KV router splits the writer pool's tokens evenly:
    each replica's rate lies in its compound-Poisson 99% CI around half the pool's rate."""
    sc = load_network(examples_dir / "network_review_loop.toml")
    st = study_network(sc, [0, 1, 2, 3])
    assert st.theory.rates["draft"].value == pytest.approx(5.0)
    ratio = (1.4 / 0.36) / (1 / 0.6)
    assert_class_rates(st, {"draft": ratio, "review": ratio})
    th = st.theory
    for pool, spec in sc.network.engines.items():
        rate = th.loads.loads[pool].value * th.capacity[pool].value
        assert_token_rate(st.runs, spec.replica_names, rate)
        for name in spec.replica_names:
            assert_token_rate(st.runs, (name,), rate / spec.replicas)
    assert st.verdict.state == "stable"
