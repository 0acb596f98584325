"""A network of engines as frozen, validated objects, and what theory says about it.

Engines (each possibly a pool of identical replicas behind a router) serve step classes; a
workflow's tasks arrive by an arrival process and start at its entry classes. When a visit of
class k finishes, the task spawns every class in ``k.next`` (several: a fork) and at most one
class drawn from ``k.routing`` (Markov routing; the remaining probability leaves). A class
marked ``join`` starts once every class naming it in ``next`` has finished for the task; any
other class reached by several edges is a merge and starts once per arrival. ``next`` edges
must form a DAG; cycles go through ``routing``. What theory says about a network is in
``servesim.cluster.theory``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servesim.core.errors import ConfigError
from servesim.core.rng import Streams
from servesim.engine.config import WAIT_SYSTEMS, EngineConfig

__all__ = ["ROUTERS", "EngineSpec", "Network", "StepClass", "Workflow"]

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
