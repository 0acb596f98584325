"""Explicit joins and merges, refused configurations (WAIT, duplicates, requests that never
fit, endless loops), strict priority at chunk granularity, the router's view of finishing
visits, and the report's rates and verdict on failed or absent tasks."""

from __future__ import annotations

import math

import pytest
from cluster_cases import D, engine

from servesim.cluster import (
    EngineSpec,
    Network,
    StepClass,
    Workflow,
    class_table,
    network_theory,
    network_verdict,
    simulate_network,
)
from servesim.cluster.engine import ClusterEngine, Visit
from servesim.core.errors import ConfigError
from servesim.engine.config import EngineConfig, KVConfig
from servesim.engine.cost import PiecewiseLinear
from servesim.workload.arrivals import Deterministic, Explicit, Poisson


def _one_engine(classes, workflows, **kw) -> Network:
    return Network({"e": engine("e", **kw)}, classes, workflows)


def test_routed_branches_merge_once_per_arrival():
    """a routes to x or y (1/2 each), both feed z by next without ``join``: z is a merge,
    lambda_z = lambda_x + lambda_y = alpha (edge weight 1), and every task visits z once."""
    cls = {"a": StepClass("a", "e", D(10), D(2), routing=(("x", 0.5), ("y", 0.5))),
           "x": StepClass("x", "e", D(10), D(2), next=("z",)),
           "y": StepClass("y", "e", D(10), D(2), next=("z",)),
           "z": StepClass("z", "e", D(10), D(2))}
    net = _one_engine(cls, {"w": Workflow("w", Poisson(2.0), ("a",))})
    assert network_theory(net).rates["z"].value == pytest.approx(2.0)
    run = simulate_network(net, 0, horizon_s=20.0, drain=True)
    per_task = run.visits[run.visits["class"] == "z"].groupby("task").size()
    assert len(run.tasks) > 10 and len(per_task) == len(run.tasks) and (per_task == 1).all()
    assert (run.tasks["status"] == "finished").all()


def test_two_workflows_share_a_downstream_class():
    """plan_a and plan_b, in separate workflows, both feed answer: lambda_answer = 2 + 2 and
    each task visits answer once (an implicit join used to lose them all)."""
    cls = {"plan_a": StepClass("plan_a", "e", D(10), D(3), next=("answer",)),
           "plan_b": StepClass("plan_b", "e", D(10), D(3), next=("answer",)),
           "answer": StepClass("answer", "e", D(10), D(3))}
    wfs = {"wa": Workflow("wa", Poisson(2.0), ("plan_a",)),
           "wb": Workflow("wb", Poisson(2.0), ("plan_b",))}
    net = _one_engine(cls, wfs)
    assert network_theory(net).rates["answer"].value == pytest.approx(4.0)
    run = simulate_network(net, 0, horizon_s=20.0, drain=True)
    assert (run.tasks["visits"] == 2).all() and len(run.tasks) > 20
    assert (run.visits["class"] == "answer").sum() == len(run.tasks)


@pytest.mark.parametrize("case, message", [
    ("one_parent", "at least two classes"),
    ("routed_parent", "always reaches"),
    ("two_workflows", "always reaches"),
    ("routing_into_join", "no routing edge into a join"),
])
def test_malformed_joins_are_refused(case, message):
    cls = {"a": StepClass("a", "e", D(1), D(1), next=("x", "y")),
           "x": StepClass("x", "e", D(1), D(1), next=("z",)),
           "y": StepClass("y", "e", D(1), D(1), next=("z",)),
           "z": StepClass("z", "e", D(1), D(1), join=True)}
    wfs = {"w": Workflow("w", Poisson(1.0), ("a",))}
    if case == "one_parent":
        cls["y"] = StepClass("y", "e", D(1), D(1))
    elif case == "routed_parent":
        cls["a"] = StepClass("a", "e", D(1), D(1), next=("x",), routing=(("y", 0.5),))
    elif case == "two_workflows":
        wfs = {"w": Workflow("w", Poisson(1.0), ("x",)), "v": Workflow("v", Poisson(1.0), ("y",))}
    else:
        cls["a"] = StepClass("a", "e", D(1), D(1), next=("x", "y"), routing=(("z", 0.5),))
    with pytest.raises(ConfigError, match=message) as info:
        _one_engine(cls, wfs)
    assert info.value.field == "network.classes.z.join" and "\n" not in str(info.value)


@pytest.mark.parametrize("where", ["next", "entry", "priority"])
def test_duplicate_names_are_refused(where):
    cls = {"a": StepClass("a", "e", D(1), D(1), next=("b", "b") if where == "next" else ("b",)),
           "b": StepClass("b", "e", D(1), D(1))}
    entry = ("a", "a") if where == "entry" else ("a",)
    prio = ("a", "a") if where == "priority" else ()
    field = {"next": "network.classes.a.next", "entry": "network.workflows.w.entry",
             "priority": "network.engines.e.priority"}[where]
    with pytest.raises(ConfigError, match="at most once") as info:
        _one_engine(cls, {"w": Workflow("w", Poisson(1.0), entry)}, priority=prio)
    assert info.value.field == field


@pytest.mark.parametrize("batching", ["wait", "nested_wait"])
def test_wait_systems_are_refused_in_networks(batching):
    e = EngineSpec("e", EngineConfig(batching=batching, token_budget=64), PiecewiseLinear(
        0.001, 0.001, 0))
    with pytest.raises(ConfigError, match="single engines") as info:
        Network({"e": e}, {"a": StepClass("a", "e", D(1), D(1))},
                {"w": Workflow("w", Poisson(1.0), ("a",))})
    assert info.value.field == "network.engines.e.batching"


def _sized(config: EngineConfig, carry: bool = False, join: bool = False) -> Network:
    e = EngineSpec("e", config, PiecewiseLinear(0.001, 0.001, 0))
    cls = {"a": StepClass("a", "e", D(10), D(30), next=("x", "y"), carry_output=carry),
           "x": StepClass("x", "e", D(10), D(30), next=("z",), carry_output=carry),
           "y": StepClass("y", "e", D(10), D(30), next=("z",), carry_output=carry),
           "z": StepClass("z", "e", D(10), D(3), join=join)}
    return Network({"e": e}, cls, {"w": Workflow("w", Poisson(1.0), ("a",))})


def test_requests_that_can_never_fit_are_refused():
    """Prompt 40 (10 + 30 carried) fits a vLLM budget of 64; a join's 10 + 2 * 30 = 70 does
    not; 32 tokens of KV (2 blocks of 16) hold no 10 + 30 request."""
    vllm = EngineConfig(batching="vllm", token_budget=64)
    _sized(vllm, carry=True)
    _sized(EngineConfig(batching="sarathi", token_budget=64), carry=True, join=True)
    with pytest.raises(ConfigError, match="at most 64 tokens") as info:
        _sized(vllm, carry=True, join=True)
    assert info.value.field == "network.classes.z.prompt_tokens" and info.value.value == 70
    tiny = EngineConfig(token_budget=64, kv=KVConfig(block_tokens=16, blocks=2))
    with pytest.raises(ConfigError, match="at most 32") as info:
        _sized(tiny)
    assert info.value.field == "network.classes.a.prompt_tokens"


def test_loop_that_never_exits_and_rate_less_lists_name_their_field():
    cls = {"a": StepClass("a", "e", D(1), D(1), routing=(("b", 1.0),)),
           "b": StepClass("b", "e", D(1), D(1), routing=(("a", 1.0),))}
    with pytest.raises(ConfigError, match="never finishes") as info:
        _one_engine(cls, {"w": Workflow("w", Poisson(1.0), ("a",))})
    assert info.value.field == "network.classes.a.routing"
    net = _one_engine({"a": StepClass("a", "e", D(1), D(1))},
                      {"w": Workflow("w", Explicit((1.0, 1.0)), ("a",))})
    with pytest.raises(ConfigError) as info:
        network_theory(net)
    assert info.value.field == "network.workflows.w.arrival" and "nan" not in str(info.value)


def test_high_priority_prompt_preempts_the_chunks_of_a_running_low_prefill():
    """Budget 64, t = 1 ms + 1 ms/token. lo (256-token prompt) starts at 0 and fills
    iterations [0, 65 ms) and [65, 130 ms); hi (64 tokens) arrives at 70 ms. Strict priority at
    chunk granularity admits hi at the next iteration, 130 ms, taking the whole budget, and
    hi's one output token comes in the iteration after: 260 ms. lo's last two chunks follow."""
    cls = {"lo": StepClass("lo", "e", D(256), D(1)), "hi": StepClass("hi", "e", D(64), D(1))}
    net = _one_engine(cls, {"lo": Workflow("lo", Explicit((0.0,)), ("lo",)),
                            "hi": Workflow("hi", Explicit((0.07,)), ("hi",))},
                      priority=("hi", "lo"))
    v = simulate_network(net, 0, horizon_s=5.0, drain=True).visits.set_index("class")
    assert v.loc["hi", "admitted_s"] == pytest.approx(0.130, abs=1e-12)
    assert v.loc["hi", "finish_s"] == pytest.approx(0.260, abs=1e-12)
    assert v.loc["lo", "finish_s"] > v.loc["hi", "finish_s"]
    assert (v["status"] == "finished").all()


def test_router_view_keeps_finishing_visits_until_their_iteration_ends():
    """An iteration that finishes a visit is applied when planned; until its end the engine
    still shows the visit and its KV block to routers."""
    e = ClusterEngine("r0", EngineConfig(token_budget=64), PiecewiseLinear(0.001, 0.001, 0))
    e.inject(Visit(0, 0.0, 1, 1, task=None, cls="a", engine="r0"))
    d1, _ = e.step(0.0)
    _, done = e.step(d1)
    assert len(done) == 1 and (e.in_system, e.kv_used_blocks) == (1, 1)
    e.finished_now()
    assert (e.in_system, e.kv_used_blocks) == (0, 0)


def test_class_rate_counts_finishes_in_the_window():
    """Deterministic arrivals at 10/s with hops of about 0.35 s: the visits finishing in a 10 s
    window number 100 or 101, so the rate is 10 +- 0.1/s (counting visits that arrived in the
    window and finished by its end loses about 0.35 s of them: 9.7/s)."""
    net = _one_engine({"a": StepClass("a", "e", D(10), D(70))},
                      {"w": Workflow("w", Deterministic(10.0), ("a",))})
    run = simulate_network(net, 0, horizon_s=12.0, warmup_s=2.0)
    hop = (run.visits["finish_s"] - run.visits["arrival_s"]).mean()
    assert 0.2 < hop < 1.0
    rate = class_table([run]).set_index("class").loc["a", "rate_per_s"]
    assert abs(rate - 10.0) <= 0.1 + 1e-9


def test_verdict_reports_failed_tasks_apart_and_no_tasks_as_inconclusive():
    net = _one_engine({"a": StepClass("a", "e", D(10), D(3))},
                      {"w": Workflow("w", Poisson(5.0), ("a",))})
    run = simulate_network(net, 0, horizon_s=60.0)
    late = run.tasks["arrival_s"] > 30.0
    run.tasks.loc[late[late].index[::3], ["status", "finish_s"]] = ["failed", math.nan]
    v = network_verdict([run])
    assert v.state == "stable" and v.completion_ratio > 0.98
    assert any("tasks failed" in line for line in v.evidence)
    quiet = _one_engine({"a": StepClass("a", "e", D(10), D(3))},
                        {"w": Workflow("w", Poisson(1e-6), ("a",))})
    empty = simulate_network(quiet, 0, horizon_s=10.0)
    assert len(empty.tasks) == 0
    assert network_verdict([empty]).state == "inconclusive"


def test_strict_priority_never_exceeds_the_batch_cap():
    """k_max = 2 with lo prefilling part-way beside chat's decoder (chat ranks above lo) when
    hi arrives: moving lo's prefill behind hi must not admit hi into the full batch. Every
    iteration runs at most 2 requests, and every visit still finishes."""
    spec = EngineSpec("e", EngineConfig(token_budget=64, max_batch_size=2),
                      PiecewiseLinear(0.001, 0.001, 0), priority=("hi", "chat", "lo"))
    cls = {"lo": StepClass("lo", "e", D(256), D(1)), "chat": StepClass("chat", "e", D(1), D(30)),
           "hi": StepClass("hi", "e", D(64), D(1))}
    wfs = {k: Workflow(k, Explicit((t,)), (k,)) for k, t in (("lo", 0.0), ("chat", 0.0),
                                                             ("hi", 0.07))}
    run = simulate_network(Network({"e": spec}, cls, wfs), 0, horizon_s=5.0, drain=True)
    assert (run.iterations["e"]["running"] <= 2).all()
    assert (run.visits["status"] == "finished").all()
