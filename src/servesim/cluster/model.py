"""A network of engines as frozen, validated objects, and what theory says about it.

Engines (each possibly a pool of identical replicas behind a router) serve step classes; a
workflow's tasks arrive by an arrival process and start at its entry classes. When a visit of
class k finishes, the task spawns every class in ``k.next`` (several: a fork) and at most one
class drawn from ``k.routing`` (Markov routing; the remaining probability leaves). A class
marked ``join`` starts once every class naming it in ``next`` has finished for the task; any
other class reached by several edges is a merge and starts once per arrival. ``next`` edges
must form a DAG; cycles go through ``routing``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servesim.core.errors import ConfigError
from servesim.core.rng import Streams
from servesim.engine.config import WAIT_SYSTEMS, EngineConfig
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
        join: start once per task, when every class naming this one in ``next`` has finished
            (otherwise every arrival starts a visit: a merge).
    """

    name: str
    engine: str
    prompt: Any
    output: Any
    next: tuple[str, ...] = ()
    routing: tuple[tuple[str, float], ...] = ()
    carry_output: bool = False
    join: bool = False


@dataclass(frozen=True, eq=False)
class Workflow:
    """Tasks arriving by ``arrival``; each starts by spawning every class in ``entry``."""

    name: str
    arrival: Any
    entry: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Network:
    """Engines, classes and workflows, with every cross-reference checked.

    Raises ConfigError naming the field if a class names an unknown engine or class, a name is
    listed twice in one ``next``, ``entry`` or ``priority``, a priority list names a class
    served elsewhere, routing probabilities sum above 1, the ``next`` edges contain a cycle, a
    class can never leave the network, an engine runs WAIT or Nested WAIT, or a join is
    malformed (fewer than two ``next`` parents, a ``routing`` edge into it, or a parent its
    workflow does not always reach).
    """

    engines: Mapping[str, EngineSpec]
    classes: Mapping[str, StepClass]
    workflows: Mapping[str, Workflow]
    parents: Mapping[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self._check_names()
        self._check_engines()
        parents = {k: 0 for k in self.classes}
        for c in self.classes.values():
            for n in c.next:
                parents[n] += 1
        object.__setattr__(self, "parents", parents)
        self._check_dag()
        self._check_joins()
        self._check_exits()
        self._check_lengths()

    def _check_names(self) -> None:
        from servesim.core.registry import lookup

        names = dict.fromkeys(self.classes)
        for c in self.classes.values():
            lookup(self.engines, c.engine, f"network.classes.{c.name}.engine")
            _distinct(c.next, f"network.classes.{c.name}.next")
            for n in c.next:
                lookup(names, n, f"network.classes.{c.name}.next")
            for n, _ in c.routing:
                lookup(names, n, f"network.classes.{c.name}.routing")
            total = sum(p for _, p in c.routing)
            if total > 1 + 1e-12:
                raise ConfigError(f"network.classes.{c.name}.routing", dict(c.routing),
                                  "probabilities summing to <= 1 (the rest leaves)")
        for w in self.workflows.values():
            _distinct(w.entry, f"network.workflows.{w.name}.entry")
            for n in w.entry:
                lookup(names, n, f"network.workflows.{w.name}.entry")

    def _check_engines(self) -> None:
        for e in self.engines.values():
            f = f"network.engines.{e.name}"
            if e.config.batching in WAIT_SYSTEMS:
                # WAIT reads the run's request specs before the first plan; a network creates
                # its requests as tasks move, so there is nothing to read.
                raise ConfigError(f"{f}.batching", e.config.batching,
                                  "a system other than wait / nested_wait (those run on "
                                  "single engines only: servesim run)")
            _distinct(e.priority, f"{f}.priority")
            here = [k for k, c in self.classes.items() if c.engine == e.name]
            for k in e.priority:
                if k not in here:
                    raise ConfigError(f"{f}.priority", k,
                                      f"a class served by engine {e.name}: " + ", ".join(here),
                                      choices=here)

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

    def _reach(self, start: tuple[str, ...], routed: bool) -> set[str]:
        """Classes reachable from ``start`` by ``next`` edges (and ``routing`` edges too)."""
        seen, todo = set(start), list(start)
        while todo:
            c = self.classes[todo.pop()]
            for n in (*c.next, *(n for n, _ in c.routing)) if routed else c.next:
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
        return seen

    def _check_joins(self) -> None:
        for k, c in self.classes.items():
            if not c.join:
                continue
            f = f"network.classes.{k}.join"
            mine = [p for p, pc in self.classes.items() if k in pc.next]
            if len(mine) < 2:
                raise ConfigError(f, True, "join = true on a class named in the next of at "
                                           f"least two classes (found {len(mine)})")
            routed = [p for p, pc in self.classes.items() if any(n == k for n, _ in pc.routing)]
            if routed:
                raise ConfigError(f, True, f"no routing edge into a join (from {routed[0]}): "
                                           "a join waits for next parents only")
            for w in self.workflows.values():
                if k not in self._reach(w.entry, routed=True):
                    continue
                sure = self._reach(w.entry, routed=False)
                missing = [p for p in mine if p not in sure]
                if missing:
                    raise ConfigError(
                        f, True, f"parents that workflow {w.name} always reaches by next "
                                 f"edges ({missing[0]} is not): otherwise the join never fires")

    def _check_exits(self) -> None:
        """Every class must be able to end its branch: a routing cycle that is left with
        probability 0 keeps a task in the network forever."""
        ends: set[str] = set()
        grew = True
        while grew:
            grew = False
            for k, c in self.classes.items():
                if k in ends or not all(n in ends for n in c.next):
                    continue
                total = sum(p for _, p in c.routing)
                if total < 1 - 1e-12 or any(n in ends for n, p in c.routing if p > 0):
                    ends.add(k)
                    grew = True
        for k, c in self.classes.items():
            if k not in ends:
                where = "routing" if c.routing else "next"
                raise ConfigError(f"network.classes.{k}.{where}",
                                  dict(c.routing) if c.routing else list(c.next),
                                  "routes that leave the network with positive probability "
                                  "(from here a task never finishes)")

    def _check_lengths(self) -> None:
        """Refuse a class whose largest prompt (with carried output) or request cannot fit its
        engine: every such visit would be rejected, and theory would price work never done."""
        feeders: dict[str, list[str]] = {k: [] for k in self.classes}
        for k, c in self.classes.items():
            if c.carry_output:
                for n in (*c.next, *(n for n, p in c.routing if p > 0)):
                    feeders[n].append(k)
        for k, c in self.classes.items():
            carried = [largest_tokens(self.classes[p].output) for p in feeders[k]]
            extra = sum(carried) if c.join else max(carried, default=0)
            prompt = largest_tokens(c.prompt) + extra
            total = prompt + largest_tokens(c.output)
            e = self.engines[c.engine]
            most, most_prompt = e.config.length_limits
            if prompt > most_prompt:
                raise ConfigError(f"network.classes.{k}.prompt_tokens", prompt,
                                  f"prompts engine {e.name} can serve: at most {most_prompt} "
                                  f"tokens (here {extra} of them carried; the limit is the "
                                  "KV cache or the budget of a system that does not chunk)")
            if total > most:
                raise ConfigError(f"network.classes.{k}.prompt_tokens", prompt,
                                  f"requests engine {e.name} can serve: prompt + output "
                                  f"({total} tokens here, {extra} carried) at most {most} "
                                  "(KV cache or max_model_len)")

    def is_join(self, k: str) -> bool:
        return self.classes[k].join


# Unbounded length distributions are checked at this quantile: a class whose 1-in-1000 draw
# cannot be served loses tasks at a rate no experiment should ignore.
LENGTH_QUANTILE = 0.999


def largest_tokens(dist: Any) -> int:
    """The largest length ``dist`` draws: its maximum when it has one (deterministic, uniform,
    empirical), else its ``LENGTH_QUANTILE`` quantile from 20000 draws of a fixed stream."""
    for attr in ("value", "high"):
        if isinstance(getattr(dist, attr, None), int):
            return int(getattr(dist, attr))
    values = getattr(dist, "values", None)
    if isinstance(values, tuple) and values:
        return int(max(values))
    sample = dist.sample(Streams(0).get("length_check"), 20000)
    return int(np.quantile(sample, LENGTH_QUANTILE, method="higher"))


def _distinct(names: tuple[str, ...], field_name: str) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ConfigError(field_name, list(names), f"each class at most once ({n!r} twice)")
        seen.add(n)


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
        rate = float(w.arrival.rate_per_s)
        if not math.isfinite(rate):
            raise ConfigError(f"network.workflows.{w.name}.arrival", w.arrival.describe(),
                              "an arrival process with a rate (a list needs two distinct "
                              "times) for the traffic equations")
        for k in w.entry:
            alpha[k] += rate
    return alpha


def _edges(net: Network, join_share: bool) -> dict[tuple[str, str], float]:
    """Expected spawns of l per finished k. With ``join_share`` an edge into a join counts
    1/parents (the traffic equations); without it, 1 (each parent's output reaches the join).
    An edge into a merge (several parents, no ``join``) counts 1: each arrival is a visit."""
    out: dict[tuple[str, str], float] = {}
    for k, c in net.classes.items():
        for n in c.next:
            w = 1.0 / net.parents[n] if join_share and net.is_join(n) else 1.0
            out[(k, n)] = out.get((k, n), 0.0) + w
        for n, p in c.routing:
            out[(k, n)] = out.get((k, n), 0.0) + p
    return out


def _rates(net: Network) -> dict[str, Quantity]:
    edges = _edges(net, join_share=True)
    try:
        return traffic_equations(_alpha(net), edges, forks=True)
    except ConfigError as e:
        if not e.field.startswith("routing"):
            raise
        # Exits are checked when the network is built; what is left is a fork feeding a loop
        # so that each visit spawns more than one visit on average.
        raise ConfigError("network.classes", {f"{a} -> {b}": w for (a, b), w in edges.items()},
                          "next/routing edges spawning fewer than one visit per visit in the "
                          "long run (spectral radius < 1)") from None


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
