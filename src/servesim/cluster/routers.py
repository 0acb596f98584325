"""Routers: which replica of a pool an arriving visit joins."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from servesim.cluster.engine import ClusterEngine
from servesim.core.registry import lookup

__all__ = ["ROUTER_FACTORIES", "Router", "make_router"]


class Router:
    """Picks a replica. Ties are broken by a rotating start index: always taking the lowest
    index would send a lightly loaded pool's work mostly to its first replica."""

    def __init__(self, replicas: Sequence[ClusterEngine]) -> None:
        self.replicas = list(replicas)
        self.start = 0

    def _rotated(self) -> list[ClusterEngine]:
        n = len(self.replicas)
        order = [self.replicas[(self.start + i) % n] for i in range(n)]
        self.start = (self.start + 1) % n
        return order

    def pick(self) -> ClusterEngine:  # pragma: no cover - interface
        raise NotImplementedError


class RoundRobin(Router):
    """Replicas in turn, whatever their state."""

    def pick(self) -> ClusterEngine:
        return self._rotated()[0]


class JoinShortestQueue(Router):
    """The replica with the fewest requests in system (waiting, running or swapped)."""

    def pick(self) -> ClusterEngine:
        return min(self._rotated(), key=lambda e: e.in_system)


class LeastKV(Router):
    """The replica using the fewest KV blocks; ties by fewest in system."""

    def pick(self) -> ClusterEngine:
        return min(self._rotated(), key=lambda e: (e.kv_used_blocks, e.in_system))


class PowerOfD(Router):
    """d replicas drawn without replacement from the router's own stream; the one with the
    fewest in system among them."""

    def __init__(self, replicas: Sequence[ClusterEngine], d: int,
                 rng: np.random.Generator) -> None:
        super().__init__(replicas)
        self.d = min(d, len(self.replicas))
        self.rng = rng

    def pick(self) -> ClusterEngine:
        idx = self.rng.choice(len(self.replicas), size=self.d, replace=False)
        return min((self.replicas[i] for i in idx), key=lambda e: e.in_system)


ROUTER_FACTORIES: dict[str, Callable[..., Router]] = {
    "round_robin": lambda reps, d, rng: RoundRobin(reps),
    "jsq": lambda reps, d, rng: JoinShortestQueue(reps),
    "least_kv": lambda reps, d, rng: LeastKV(reps),
    "power_of_d": lambda reps, d, rng: PowerOfD(reps, d, rng),
}


def make_router(kind: str, replicas: Sequence[ClusterEngine], d: int,
                rng: np.random.Generator, field: str = "router") -> Router:
    """Build a router by name; raises ConfigError with the closest name if unknown."""
    return lookup(ROUTER_FACTORIES, kind, field)(replicas, d, rng)
