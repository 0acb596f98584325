"""Networks of engines (agents): traffic equations, engine loads and virtual stations.

A class k is an (engine, step) pair with its own prefill and decode tokens (m_p^k, m_d^k).
External arrivals alpha_k and Markov routing P[l, k] give the traffic equations
lambda = alpha + P^T lambda (Dai et al. 2025). Engine j's load is
rho_j = sum_{k at j} lambda_k*(m_p^k + m_d^k)/mu*_j. Re-entrant networks with strict priorities
can add virtual-station conditions (Rybko & Stolyar 1992; Dai). See docs/theory_fluid.md.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from servesim.core.errors import ConfigError
from servesim.core.fields import number
from servesim.theory.capacity import Quantity

VIRTUAL_STATION_SOURCE = ("Rybko & Stolyar 1992, 'Ergodicity of stochastic processes describing "
                          "the operation of open queueing networks'; Dai's virtual stations")

__all__ = [
    "VIRTUAL_STATION_SOURCE",
    "NetworkLoad",
    "VirtualStation",
    "VirtualStationReport",
    "engine_loads",
    "traffic_equations",
    "virtual_station_check",
]

_TOL = 1e-12


@dataclass(frozen=True, slots=True)
class NetworkLoad:
    """Per-engine loads, the largest one and the DAG/fork-join verdict (stable iff max < 1)."""

    loads: Mapping[Hashable, Quantity]
    max_load: Quantity
    bottleneck: Hashable
    stable: bool

    @property
    def verdict(self) -> str:
        return ("stable under work-conserving policies (DAG/fork-join)" if self.stable
                else "unstable: an engine has load >= 1")


@dataclass(frozen=True, slots=True)
class VirtualStation:
    """Two high-priority classes at different engines that are never served at the same time."""

    classes: tuple[Hashable, Hashable]
    engines: tuple[Hashable, Hashable]
    load: Quantity

    @property
    def stable(self) -> bool:
        return self.load.value < 1.0


@dataclass(frozen=True, slots=True)
class VirtualStationReport:
    """Every virtual station found, with the verdict: unstable if any has load >= 1."""

    stations: tuple[VirtualStation, ...]

    @property
    def flagged(self) -> tuple[VirtualStation, ...]:
        return tuple(v for v in self.stations if not v.stable)

    @property
    def stable(self) -> bool:
        return not self.flagged

    @property
    def verdict(self) -> str:
        if self.stable:
            return "no virtual station overloaded"
        names = ", ".join(f"{a}+{b} (load {v.load.value:.3g})" for v in self.flagged
                          for a, b in [v.classes])
        return f"unstable: virtual station overloaded: {names}"


def _value(x: float | Quantity, field: str) -> float:
    return number(x.value if isinstance(x, Quantity) else x, field, low=0.0)


def _routing_matrix(classes: Sequence[Hashable],
                    routing: Mapping[tuple[Hashable, Hashable], float],
                    forks: bool = False) -> np.ndarray:
    index = {k: i for i, k in enumerate(classes)}
    p = np.zeros((len(classes), len(classes)))
    for key, prob in routing.items():
        if not (isinstance(key, tuple) and len(key) == 2):
            raise ConfigError("routing", key, "a (from_class, to_class) pair")
        for end in key:
            if end not in index:
                raise ConfigError(f"routing[{key!r}]", end, "a class listed in external_rates")
        p[index[key[0]], index[key[1]]] = number(prob, f"routing[{key!r}]", low=0.0,
                                                 high=None if forks else 1.0)
    if forks:
        # A fork spawns several requests per completion, so a row is an expected count, not a
        # probability; the network still empties iff every spawn chain dies out.
        if p.size and max(abs(np.linalg.eigvals(p))) >= 1.0 - _TOL:
            raise ConfigError("routing", dict(routing),
                              "spawn counts whose matrix has spectral radius < 1 "
                              "(every task leaves)")
        return p
    for k, row in zip(classes, p, strict=True):
        if row.sum() > 1.0 + _TOL:
            raise ConfigError(f"routing[({k!r}, *)]", float(row.sum()),
                              "outgoing probabilities summing to <= 1")
    return p


def traffic_equations(external_rates: Mapping[Hashable, float],
                      routing: Mapping[tuple[Hashable, Hashable], float],
                      forks: bool = False) -> dict[Hashable, Quantity]:
    """Return the total rate lambda_k of every class, solving lambda = alpha + P^T lambda.

    With ``forks``, P[k, l] is the expected number of class-l requests a class-k completion
    spawns (fork-join: rows may exceed 1), and P must have spectral radius below 1.

    Raises ConfigError if a rate is negative, a routing key names an unknown class, a probability
    is outside [0, 1] (without ``forks``), a row of P sums to more than 1 (without ``forks``), or
    I - P^T is singular (a closed loop that no request leaves).
    """
    classes = list(external_rates)
    if not classes:
        raise ConfigError("external_rates", external_rates, "at least one class")
    alpha = np.array([_value(external_rates[k], f"external_rates[{k!r}]") for k in classes])
    p = _routing_matrix(classes, routing, forks)
    a = np.eye(len(classes)) - p.T
    if np.linalg.matrix_rank(a) < len(classes) or np.linalg.cond(a) > 1e12:
        raise ConfigError("routing", dict(routing),
                          "a routing matrix with I - P^T invertible (every class can leave)")
    lam = np.linalg.solve(a, alpha)
    return {k: Quantity(float(v), "1/s",
                        "lambda = alpha + P^T lambda  =>  lambda = (I - P^T)^-1 alpha")
            for k, v in zip(classes, lam, strict=True)}


def _class_loads(class_rates: Mapping[Hashable, float | Quantity],
                 class_engine: Mapping[Hashable, Hashable],
                 class_tokens: Mapping[Hashable, tuple[float, float]],
                 engine_capacity_tokens_per_s: Mapping[Hashable, float]) -> dict[Hashable, float]:
    loads = {}
    for k, rate in class_rates.items():
        if k not in class_engine:
            raise ConfigError(f"class_engine[{k!r}]", None, "the engine serving this class")
        if k not in class_tokens:
            raise ConfigError(f"class_tokens[{k!r}]", None, "a (m_p, m_d) token pair")
        engine = class_engine[k]
        if engine not in engine_capacity_tokens_per_s:
            raise ConfigError(f"engine_capacity_tokens_per_s[{engine!r}]", None,
                              "a capacity in tokens/s")
        mu = number(engine_capacity_tokens_per_s[engine],
                    f"engine_capacity_tokens_per_s[{engine!r}]", low=0.0, low_open=True)
        m_p, m_d = class_tokens[k]
        tokens = (number(m_p, f"class_tokens[{k!r}].m_p", low=0.0)
                  + number(m_d, f"class_tokens[{k!r}].m_d", low=0.0))
        loads[k] = _value(rate, f"class_rates[{k!r}]") * tokens / mu
    return loads


def engine_loads(class_rates: Mapping[Hashable, float | Quantity],
                 class_engine: Mapping[Hashable, Hashable],
                 class_tokens: Mapping[Hashable, tuple[float, float]],
                 engine_capacity_tokens_per_s: Mapping[Hashable, float]) -> NetworkLoad:
    """Return rho_j = sum_{k at j} lambda_k*(m_p^k + m_d^k)/mu*_j and max_j rho_j.

    The verdict (stable iff max_j rho_j < 1 under work-conserving policies) holds for DAG and
    fork-join topologies only; re-entrant networks also need :func:`virtual_station_check`.
    Raises ConfigError if a class has no engine or tokens, an engine has no positive capacity,
    or a rate or token count is negative.
    """
    per_class = _class_loads(class_rates, class_engine, class_tokens,
                             engine_capacity_tokens_per_s)
    totals: dict[Hashable, float] = {e: 0.0 for e in engine_capacity_tokens_per_s}
    for k, rho in per_class.items():
        totals[class_engine[k]] += rho
    if not totals:
        raise ConfigError("engine_capacity_tokens_per_s", {}, "at least one engine")
    loads = {e: Quantity(v, "", "rho_j = sum_{k at j} lambda_k*(m_p^k + m_d^k)/mu*_j")
             for e, v in totals.items()}
    bottleneck = max(totals, key=lambda e: totals[e])
    top = totals[bottleneck]
    return NetworkLoad(loads=loads, max_load=Quantity(top, "", "max_j rho_j"),
                       bottleneck=bottleneck, stable=top < 1.0)


def _sole_feeder(h: Hashable, external_rates: Mapping[Hashable, float],
                 routing: Mapping[tuple[Hashable, Hashable], float]) -> Hashable | None:
    """Return the one class that feeds h, or None if h has external arrivals or several feeders."""
    if _value(external_rates[h], f"external_rates[{h!r}]") > 0:
        return None
    feeders = {src for (src, dst), p in routing.items() if dst == h and p > 0 and src != h}
    return next(iter(feeders)) if len(feeders) == 1 else None


def virtual_station_check(external_rates: Mapping[Hashable, float],
                          routing: Mapping[tuple[Hashable, Hashable], float],
                          class_engine: Mapping[Hashable, Hashable],
                          class_tokens: Mapping[Hashable, tuple[float, float]],
                          engine_capacity_tokens_per_s: Mapping[Hashable, float],
                          priorities: Mapping[Hashable, Sequence[Hashable]],
                          forks: bool = False) -> VirtualStationReport:
    """Return the two-class virtual stations of a network with strict priorities per engine.

    Rule: classes h1 at engine s and h2 at engine t != s form a virtual station when h1's only
    feeder u1 sits at t below h2 in t's priority order, h2's only feeder u2 sits at s below h1,
    and neither h1 nor h2 has external arrivals. Then while h1 has work, s starves u2, so h2 gets
    no input, and vice versa: once drained, h1 and h2 are never busy together, so
    rho_h1 + rho_h2 < 1 is needed for stability. ``priorities[e]`` lists e's classes, highest
    first; an engine without an entry has no strict priorities and forms no virtual station.

    ``forks`` is passed to :func:`traffic_equations`. Raises ConfigError as it and
    :func:`engine_loads` do, or if a priority list does not hold exactly the classes at its engine.
    """
    rates = traffic_equations(external_rates, routing, forks)
    rho = _class_loads(rates, class_engine, class_tokens, engine_capacity_tokens_per_s)
    rank: dict[Hashable, int] = {}
    for e, order in priorities.items():
        at_e = {k for k, eng in class_engine.items() if eng == e and k in rates}
        if set(order) != at_e or len(order) != len(at_e):
            raise ConfigError(f"priorities[{e!r}]", list(order),
                              f"each class at engine {e!r} exactly once: {sorted(map(str, at_e))}")
        rank.update({k: i for i, k in enumerate(order)})

    def outranks(high: Hashable, low: Hashable) -> bool:
        return (high in rank and low in rank and class_engine[high] == class_engine[low]
                and rank[high] < rank[low])

    stations = []
    classes = list(rates)
    for i, h1 in enumerate(classes):
        for h2 in classes[i + 1:]:
            if class_engine[h1] == class_engine[h2]:
                continue
            u1 = _sole_feeder(h1, external_rates, routing)
            u2 = _sole_feeder(h2, external_rates, routing)
            if u1 is None or u2 is None or not (outranks(h2, u1) and outranks(h1, u2)):
                continue
            load = Quantity(rho[h1] + rho[h2], "",
                            f"rho_vs = rho[{h1}] + rho[{h2}]  (stable needs < 1)",
                            source=VIRTUAL_STATION_SOURCE)
            stations.append(VirtualStation((h1, h2), (class_engine[h1], class_engine[h2]), load))
    return VirtualStationReport(tuple(stations))
