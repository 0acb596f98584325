"""What theory says about a network: traffic rates per class, mean tokens per class (with
carried output), capacity and load per engine pool, and the virtual-station check."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from servesim.cluster.model import Network
from servesim.core.errors import ConfigError
from servesim.theory.capacity import Quantity, token_capacity
from servesim.theory.network import (
    NetworkLoad,
    VirtualStationReport,
    engine_loads,
    traffic_equations,
    virtual_station_check,
)

__all__ = ["NetworkTheory", "network_theory"]


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
