"""A network of engines as frozen, validated objects, and what theory says about it.

Engines (each possibly a pool of identical replicas behind a router) serve step classes; a
workflow's tasks arrive by an arrival process and start at its entry classes. When a visit of
class k finishes, the task spawns every class in ``k.next`` (several: a fork; a class listed
in the ``next`` of several classes is a join and starts once all of them have finished for the
task) and at most one class drawn from ``k.routing`` (Markov routing; the remaining
probability leaves). ``next`` edges must form a DAG; cycles go through ``routing``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from servesim.core.errors import ConfigError
from servesim.engine.config import EngineConfig
from servesim.theory.capacity import Quantity, token_capacity
from servesim.theory.network import (
    NetworkLoad,
    VirtualStationReport,
    engine_loads,
    traffic_equations,
    virtual_station_check,
)

__all__ = ["ROUTERS", "EngineSpec", "Network", "NetworkTheory", "StepClass", "Workflow",
           "network_theory"]

ROUTERS = ("round_robin", "jsq", "least_kv", "power_of_d")


@dataclass(frozen=True, eq=False)
class EngineSpec:
    """One engine, or a pool of ``replicas`` identical ones behind ``router``.

    Attributes:
        name: the engine (pool) name classes refer to.
        config: batching, budget, batch cap and KV cache of each replica.
        cost: the iteration cost model of each replica.
        priority: strict class priority, highest first (empty: none); unlisted classes at
            this engine rank below every listed one.
        replicas: identical replicas in the pool.
        router: how an arriving visit picks its replica, one of ``ROUTERS``.
        power_d: replicas sampled by the power-of-d router.
    """

    name: str
    config: EngineConfig
    cost: Any
    priority: tuple[str, ...] = ()
    replicas: int = 1
    router: str = "round_robin"
    power_d: int = 2

    @property
    def replica_names(self) -> tuple[str, ...]:
        if self.replicas == 1:
            return (self.name,)
        return tuple(f"{self.name}/{i}" for i in range(self.replicas))


@dataclass(frozen=True, eq=False)
class StepClass:
    """A step: the engine that serves it, its token draws, and where a task goes after it.

    Attributes:
        carry_output: add this step's output tokens to the prompt of every step it spawns.
    """

    name: str
    engine: str
    prompt: Any
    output: Any
    next: tuple[str, ...] = ()
    routing: tuple[tuple[str, float], ...] = ()
    carry_output: bool = False


@dataclass(frozen=True, eq=False)
class Workflow:
    """Tasks arriving by ``arrival``; each starts by spawning every class in ``entry``."""

    name: str
    arrival: Any
    entry: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Network:
    """Engines, classes and workflows, with every cross-reference checked.

    Raises ConfigError naming the field if a class names an unknown engine or class, a
    priority list names a class served elsewhere, routing probabilities sum above 1, or the
    ``next`` edges contain a cycle.
    """

    engines: Mapping[str, EngineSpec]
    classes: Mapping[str, StepClass]
    workflows: Mapping[str, Workflow]
    parents: Mapping[str, int] = field(init=False)

    def __post_init__(self) -> None:
        from servesim.core.registry import lookup

        names = dict.fromkeys(self.classes)
        for c in self.classes.values():
            lookup(self.engines, c.engine, f"network.classes.{c.name}.engine")
            for n in c.next:
                lookup(names, n, f"network.classes.{c.name}.next")
            for n, _ in c.routing:
                lookup(names, n, f"network.classes.{c.name}.routing")
            total = sum(p for _, p in c.routing)
            if total > 1 + 1e-12:
                raise ConfigError(f"network.classes.{c.name}.routing", dict(c.routing),
                                  "probabilities summing to <= 1 (the rest leaves)")
        for w in self.workflows.values():
            for n in w.entry:
                lookup(names, n, f"network.workflows.{w.name}.entry")
        for e in self.engines.values():
            here = [k for k, c in self.classes.items() if c.engine == e.name]
            for k in e.priority:
                if k not in here:
                    raise ConfigError(f"network.engines.{e.name}.priority", k,
                                      f"a class served by engine {e.name}: " + ", ".join(here),
                                      choices=here)
        parents = {k: 0 for k in self.classes}
        for c in self.classes.values():
            for n in set(c.next):
                parents[n] += 1
        object.__setattr__(self, "parents", parents)
        self._check_dag()

    def _check_dag(self) -> None:
        state: dict[str, int] = {}

        def visit(k: str, path: tuple[str, ...]) -> None:
            if state.get(k) == 1:
                return
            if state.get(k) == 0:
                raise ConfigError(f"network.classes.{k}.next", " -> ".join((*path, k)),
                                  "next edges without a cycle (use routing for loops)")
            state[k] = 0
            for n in self.classes[k].next:
                visit(n, (*path, k))
            state[k] = 1

        for k in self.classes:
            visit(k, ())

    def is_join(self, k: str) -> bool:
        return self.parents[k] > 1


@dataclass(frozen=True)
class NetworkTheory:
    """Traffic rates, mean tokens per class, capacities and loads of a network.

    Attributes:
        rates: lambda_k per class (1/s).
        tokens: (m_p^k, m_d^k) per class, m_p including carried output.
        capacity: mu* per engine pool (tokens/s): replicas * b_max / t(b_max).
        loads: rho_j per engine pool (NetworkLoad).
        virtual: the virtual-station report, or None with ``virtual_note`` saying why not.
    """

    rates: dict[str, Quantity]
    tokens: dict[str, tuple[float, float]]
    capacity: dict[str, Quantity]
    loads: NetworkLoad
    virtual: VirtualStationReport | None
    virtual_note: str


def _alpha(net: Network) -> dict[str, float]:
    alpha = {k: 0.0 for k in net.classes}
    for w in net.workflows.values():
        for k in w.entry:
            alpha[k] += float(w.arrival.rate_per_s)
    return alpha


def _edges(net: Network, join_share: bool) -> dict[tuple[str, str], float]:
    """Expected spawns of l per finished k. With ``join_share`` a join edge counts 1/parents
    (the traffic equations); without it, 1 (each parent's output reaches the join)."""
    out: dict[tuple[str, str], float] = {}
    for k, c in net.classes.items():
        for n in set(c.next):
            w = 1.0 / net.parents[n] if join_share and net.is_join(n) else 1.0
            out[(k, n)] = out.get((k, n), 0.0) + w
        for n, p in c.routing:
            out[(k, n)] = out.get((k, n), 0.0) + p
    return out


def _rates(net: Network) -> dict[str, Quantity]:
    return traffic_equations(_alpha(net), _edges(net, join_share=True), forks=True)


def _tokens(net: Network, rates: Mapping[str, Quantity]) -> dict[str, tuple[float, float]]:
    """m_p^l = E[prompt_l] + sum_k carry_k * lambda_k * e(k, l) * m_d^k / lambda_l."""
    carried = {k: 0.0 for k in net.classes}
    for (k, n), w in _edges(net, join_share=False).items():
        if net.classes[k].carry_output and rates[n].value > 0:
            carried[n] += rates[k].value * w * net.classes[k].output.mean / rates[n].value
    return {k: (c.prompt.mean + carried[k], c.output.mean) for k, c in net.classes.items()}


def _capacity(net: Network, rates: Mapping[str, Quantity],
              tokens: Mapping[str, tuple[float, float]]) -> dict[str, Quantity]:
    out = {}
    for e in net.engines.values():
        here = [k for k, c in net.classes.items() if c.engine == e.name]
        work = sum(rates[k].value * sum(tokens[k]) for k in here)
        decode = sum(rates[k].value * tokens[k][1] for k in here)
        share = decode / work if work > 0 else 0.0
        ctx_num = sum(rates[k].value * tokens[k][1] * (tokens[k][0] + tokens[k][1] / 2)
                      for k in here)
        ctx = ctx_num / decode if decode > 0 else 0.0
        one = token_capacity(e.cost, e.config.token_budget, decode_share=share,
                             context_per_decode=ctx)
        out[e.name] = Quantity(e.replicas * one.value, "tokens/s",
                               f"{e.replicas} x ({one.formula})", exact=one.exact)
    return out


def network_theory(net: Network) -> NetworkTheory:
    """Traffic equations, per-engine loads and the virtual-station check of ``net``."""
    rates = _rates(net)
    tokens = _tokens(net, rates)
    capacity = _capacity(net, rates, tokens)
    class_engine = {k: c.engine for k, c in net.classes.items()}
    mu = {e: q.value for e, q in capacity.items()}
    loads = engine_loads(rates, class_engine, tokens, mu)
    priorities = {}
    for e in net.engines.values():
        if e.priority:
            here = [k for k, c in net.classes.items() if c.engine == e.name]
            priorities[e.name] = [*e.priority, *[k for k in here if k not in e.priority]]
    virtual, note = None, "no engine has a strict class priority"
    if priorities:
        try:
            virtual = virtual_station_check(_alpha(net), _edges(net, join_share=True),
                                            class_engine, tokens, mu, priorities, forks=True)
            note = virtual.verdict
        except ConfigError as e:
            note = f"not checked: {e}"
    return NetworkTheory(rates, tokens, capacity, loads, virtual, note)
