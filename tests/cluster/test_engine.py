"""The network's engines: one engine fed by the heap is the reference stepper; class priority
orders the batch; tasks follow forks, joins and carried outputs exactly."""

from __future__ import annotations

import numpy as np
import pytest
from cluster_cases import COST, D, engine, one_step
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from servesim.cluster import Network, StepClass, Workflow, simulate_network
from servesim.engine.config import EngineConfig
from servesim.engine.reference import ReferenceStepper
from servesim.workload.arrivals import Poisson
from servesim.workload.distributions import UniformInt
from servesim.workload.requests import Requests


def test_single_engine_matches_the_reference_stepper():
    """A one-engine network is the reference stepper: same admission, first-token and finish
    times for the same requests (arrivals injected through the heap before each plan)."""
    engines = {"e": engine("e", budget=48)}
    classes = {"a": StepClass("a", "e", UniformInt(1, 90), UniformInt(1, 12))}
    net = Network(engines, classes, {"w": Workflow("w", Poisson(20.0), ("a",))})
    run = simulate_network(net, 3, horizon_s=30.0, drain=True)
    v = run.visits
    assert run.stop_reason == "drained" and len(v) > 300
    reqs = Requests.from_lists(v["arrival_s"], v["prompt_tokens"], v["output_tokens"])
    ref = ReferenceStepper(reqs, EngineConfig(token_budget=48), COST).run().requests
    for col in ("admitted_s", "first_token_s", "finish_s"):
        np.testing.assert_array_equal(v[col].to_numpy(), ref[col].to_numpy())


def test_strict_priority_fills_the_budget_with_the_high_class_first():
    """Budget 64, two 100-token prompts arriving at 0, 'lo' first in the queue, 'hi' ranked
    first: hi's prefill takes all of iteration 1 and 36 tokens of iteration 2 (lo gets the 28
    left); in iteration 3 hi decodes its one token beside 63 of lo's. Every iteration holds 64
    tokens, t = 1 + 64 ms, so hi finishes at 3 * 65 ms. Without priority FCFS serves lo
    first."""
    arrivals = {"lo": [0.0], "hi": [0.0]}
    with_p = simulate_network(one_step(arrivals, prompt=100, output=1, priority=("hi", "lo"),
                                       classes=("lo", "hi")), horizon_s=10.0, drain=True).visits
    fcfs = simulate_network(one_step(arrivals, prompt=100, output=1, classes=("lo", "hi")),
                            horizon_s=10.0, drain=True).visits
    fin = dict(zip(with_p["class"], with_p["finish_s"], strict=True))
    assert fin["hi"] < fin["lo"]
    assert fin["hi"] == pytest.approx(3 * 0.065, abs=1e-12)
    fin = dict(zip(fcfs["class"], fcfs["finish_s"], strict=True))
    assert fin["lo"] < fin["hi"]


def test_priority_orders_decoders_when_the_budget_is_short():
    """Budget 2, three decoders: the two of the high class take the tokens each iteration."""
    arrivals = {"lo": [0.0], "hi": [0.0, 0.0]}
    run = simulate_network(one_step(arrivals, prompt=1, output=4, budget=2,
                                     priority=("hi", "lo"), classes=("lo", "hi")),
                           horizon_s=10.0, drain=True)
    v = run.visits
    assert v[v["class"] == "hi"]["finish_s"].max() < v[v["class"] == "lo"]["finish_s"].min()


def _fork_join(budget: int, rate: float, prompt: int, out_a: int, out_b: int) -> Network:
    engines = {"e": engine("e", budget), "f": engine("f", budget, replicas=2, router="jsq")}
    classes = {
        "split": StepClass("split", "e", D(prompt), D(2), next=("a", "b")),
        "a": StepClass("a", "f", D(prompt), D(out_a), next=("join",), carry_output=True),
        "b": StepClass("b", "f", D(prompt), D(out_b), next=("join",), carry_output=True),
        "join": StepClass("join", "e", D(5), D(1), join=True),
    }
    return Network(engines, classes, {"w": Workflow("w", Poisson(rate), ("split",))})


@settings(max_examples=15, deadline=None)
@given(budget=st.integers(16, 128), rate=st.floats(0.5, 5.0), prompt=st.integers(1, 60),
       out_a=st.integers(1, 9), out_b=st.integers(1, 9), seed=st.integers(0, 1000))
def test_fork_join_invariants(budget, rate, prompt, out_a, out_b, seed):
    """In a drained run every task finishes with 4 visits; a forked step arrives when split
    finishes, the join when the later of its parents finishes, with a prompt of 5 plus both
    parents' outputs; the task ends at the join's finish; each visit's tokens are served."""
    run = simulate_network(_fork_join(budget, rate, prompt, out_a, out_b), seed, horizon_s=5.0,
                           drain=True)
    assert run.stop_reason == "drained"
    t, v = run.tasks, run.visits
    assume(len(t) > 0)    # at 0.5 tasks/s, 5 s hold no arrival with probability e^-2.5
    assert (t["status"] == "finished").all() and (t["visits"] == 4).all()
    assert (v["status"] == "finished").all()
    by = v.pivot(index="task", columns="class", values="finish_s")
    arr = v.pivot(index="task", columns="class", values="arrival_s")
    assert (arr["a"] == by["split"]).all() and (arr["b"] == by["split"]).all()
    assert (arr["join"] == np.maximum(by["a"], by["b"])).all()
    assert (v[v["class"] == "join"]["prompt_tokens"] == 5 + out_a + out_b).all()
    assert np.array_equal(t.set_index("task")["finish_s"].to_numpy(), by["join"].to_numpy())
    assert (v["generated_tokens"] == v["output_tokens"]).all()
    assert (v["first_token_s"] <= v["finish_s"]).all()
    assert (v["arrival_s"] <= v["admitted_s"]).all()
