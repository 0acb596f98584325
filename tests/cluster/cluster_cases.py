"""Small builders for network tests (a uniquely named module, not ``conftest``: several test
folders have one)."""

from __future__ import annotations

from pathlib import Path

from servesim.cluster import EngineSpec, Network, StepClass, Workflow
from servesim.engine.config import EngineConfig
from servesim.engine.cost import PiecewiseLinear
from servesim.workload.arrivals import Explicit, Poisson
from servesim.workload.distributions import Deterministic

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
COST = PiecewiseLinear(0.001, 0.001, 0)   # t = 1 ms + 1 ms per token


def D(n: int) -> Deterministic:
    return Deterministic(n)


def engine(name: str, budget: int = 64, priority: tuple[str, ...] = (), batching="sarathi",
           **kw) -> EngineSpec:
    return EngineSpec(name, EngineConfig(batching=batching, token_budget=budget), COST,
                      priority=priority, **kw)


def one_step(arrivals, prompt=10, output=3, budget=64, priority=(), classes=("a",)):
    """One engine, one single-step workflow per class, arrivals given per class."""
    engines = {"e": engine("e", budget, priority)}
    cls = {k: StepClass(k, "e", D(prompt), D(output)) for k in classes}
    wfs = {k: Workflow(k, Explicit(tuple(arrivals[k])) if k in arrivals else Poisson(1.0), (k,))
           for k in classes}
    return Network(engines, cls, wfs)
