"""Traffic equations of forks, joins and loops; carried tokens; routers; bounded overload."""

from __future__ import annotations

import math

import numpy as np
import pytest
from cluster_cases import COST, D, engine
from scipy import stats

from servesim.cluster import Network, StepClass, Workflow, network_theory, simulate_network
from servesim.cluster.engine import ClusterEngine, Visit
from servesim.cluster.routers import make_router
from servesim.core.errors import ConfigError
from servesim.engine.config import EngineConfig
from servesim.workload.arrivals import Poisson


def _loop(p_back: float, rate: float = 2.0) -> Network:
    engines = {"w": engine("w", 256), "c": engine("c", 256)}
    classes = {"draft": StepClass("draft", "w", D(40), D(10), routing=(("review", 1.0),),
                                  carry_output=True),
               "review": StepClass("review", "c", D(20), D(5), routing=(("draft", p_back),))}
    return Network(engines, classes, {"t": Workflow("t", Poisson(rate), ("draft",))})


def test_markov_loop_rates_and_carried_tokens():
    """lambda_draft = alpha + p lambda_review and lambda_review = lambda_draft, so both are
    alpha / (1 - p) = 2 / 0.6; review's prompt carries draft's output: m_p = 20 + 10; rho_w =
    lambda (40 + 10) / mu*, mu* = 256 / 0.257 s."""
    th = network_theory(_loop(0.4))
    assert th.rates["draft"].value == pytest.approx(2 / 0.6)
    assert th.rates["review"].value == pytest.approx(2 / 0.6)
    assert th.tokens["review"] == (30.0, 5.0)
    assert th.loads.loads["w"].value == pytest.approx(2 / 0.6 * 50 / (256 / 0.257))


def test_markov_loop_visit_counts_match_the_geometric_law():
    """Each task makes G drafts, G ~ Geometric(1 - p) (mean 1/(1-p) = 2.5 at p = 0.6); the
    mean over tasks lies in its 99% CI: 2.5 +- z sd / sqrt(n), sd = sqrt(p)/(1-p)."""
    run = simulate_network(_loop(0.6, rate=1.0), 1, horizon_s=400.0, drain=True)
    drafts = run.visits[run.visits["class"] == "draft"].groupby("task").size()
    n = len(drafts)
    half = stats.norm.ppf(0.995) * math.sqrt(0.6) / 0.4 / math.sqrt(n)
    assert abs(drafts.mean() - 2.5) < half
    assert (run.tasks["status"] == "finished").all()


def test_fork_and_join_rates():
    """A fork spawns both children per finish (P row sum 2, beyond theory.network's
    substochastic check); the join fires once per task: every class has lambda = alpha; the
    join's prompt carries both parents' outputs: 5 + 3 + 4."""
    engines = {"e": engine("e"), "f": engine("f")}
    classes = {"s": StepClass("s", "e", D(10), D(1), next=("a", "b")),
               "a": StepClass("a", "f", D(10), D(3), next=("j",), carry_output=True),
               "b": StepClass("b", "f", D(10), D(4), next=("j",), carry_output=True),
               "j": StepClass("j", "e", D(5), D(1), join=True)}
    th = network_theory(Network(engines, classes, {"w": Workflow("w", Poisson(1.5), ("s",))}))
    assert {k: q.value for k, q in th.rates.items()} == pytest.approx(
        {"s": 1.5, "a": 1.5, "b": 1.5, "j": 1.5})
    assert th.tokens["j"] == (12.0, 1.0)


def test_next_edges_must_not_cycle():
    engines = {"e": engine("e")}
    classes = {"a": StepClass("a", "e", D(1), D(1), next=("b",)),
               "b": StepClass("b", "e", D(1), D(1), next=("a",))}
    with pytest.raises(ConfigError, match="next edges without a cycle"):
        Network(engines, classes, {"w": Workflow("w", Poisson(1.0), ("a",))})


def _replicas(n: int) -> list[ClusterEngine]:
    return [ClusterEngine(f"r/{i}", EngineConfig(token_budget=64), COST) for i in range(n)]


def _load(e: ClusterEngine, k: int, prompt: int = 10) -> None:
    for _ in range(k):
        e.inject(Visit(0, 0.0, prompt, 1, task=None, cls="a", engine=e.name))


def test_routers_pick_as_documented():
    """Round robin cycles; JSQ takes the fewest in system; least-KV the fewest KV blocks;
    power-of-d with d = n is JSQ; power-of-d draws only from its own stream."""
    rng = np.random.default_rng(0)
    reps = _replicas(3)
    rr = make_router("round_robin", reps, 2, rng)
    assert [rr.pick().name for _ in range(4)] == ["r/0", "r/1", "r/2", "r/0"]
    _load(reps[0], 3)
    _load(reps[1], 1)
    _load(reps[2], 2)
    assert make_router("jsq", reps, 2, rng).pick().name == "r/1"
    assert make_router("power_of_d", reps, 3, rng).pick().name == "r/1"
    kv = _replicas(2)
    _load(kv[0], 1, prompt=200)
    _load(kv[1], 2, prompt=10)
    kv[0].step(0.0)
    kv[1].step(0.0)
    assert kv[0].in_system < kv[1].in_system + 1
    assert make_router("least_kv", kv, 2, rng).pick().name == "r/1"
    a = make_router("power_of_d", _replicas(8), 2, np.random.default_rng(5))
    b = make_router("power_of_d", _replicas(8), 2, np.random.default_rng(5))
    assert [a.pick().name for _ in range(20)] == [b.pick().name for _ in range(20)]
    with pytest.raises(ConfigError, match="did you mean 'jsq'"):
        make_router("jsg", reps, 2, rng)


def test_overload_stops_bounded_and_says_why():
    """At rho = 3 the run exceeds max_in_system long before the horizon and says so."""
    engines = {"e": engine("e", 64)}
    classes = {"a": StepClass("a", "e", D(100), D(20))}
    net = Network(engines, classes, {"w": Workflow("w", Poisson(30.0), ("a",))})
    run = simulate_network(net, 0, horizon_s=1000.0, max_in_system=200)
    assert run.stop_reason == "max_in_system" and run.end_s < 100
    assert run.stopped_by_cap
    assert (run.tasks["status"] == "unfinished").sum() > 200
