"""One engine of a network: the reference stepper, fed by injection and stepped one iteration
at a time, with an optional strict class priority over its batching policy."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from servesim.core.errors import ConfigError
from servesim.engine.config import EngineConfig
from servesim.engine.reference import ReferenceStepper, _Req
from servesim.engine.state import Status
from servesim.policies.batching import Policy, StepPlan
from servesim.workload.requests import Requests

__all__ = ["ClassPriority", "ClusterEngine", "Visit"]

_NO_REQUESTS = Requests.from_lists([], [], [])


class Visit(_Req):
    """One hop of a task: a request at one engine, tagged with its task and class."""

    def __init__(self, visit_id: int, arrival: float, prompt: int, output: int, *,
                 task: Any, cls: str, engine: str) -> None:
        super().__init__(visit_id, arrival, prompt, output)
        self.task = task
        self.cls = cls
        self.engine = engine


class _RankedView:
    """The engine as a policy sees it, with waiting, prefilling and decoding requests listed by
    class rank (stable, so admission and queue order hold within a class)."""

    def __init__(self, view: Any, order: ClassPriority) -> None:
        self._view = view
        self._order = order

    def __getattr__(self, name: str) -> Any:
        return getattr(self._view, name)

    @property
    def prefilling(self) -> list:
        return self._order.ordered(self._view.prefilling)

    @property
    def decoders(self) -> list:
        return self._order.ordered(self._view.decoders)

    @property
    def waiting(self) -> Iterable:
        # Lazy, so a policy that stops at the budget does not sort a long queue.
        return self._order.lazy(self._view.waiting)


class ClassPriority(Policy):
    """Strict priority by class over any batching policy.

    The wrapped policy plans on a view whose waiting queue, running prefills and decoders are
    ordered by class rank, highest first, so higher-priority tokens fill the budget first. A plan
    names its decoders by count, so the engine must take decoders in the same order: a
    ``ClusterEngine`` does (its ``decoders`` come from ``ordered``).

    Raises ConfigError if a class is listed twice.
    """

    def __init__(self, inner: Policy, classes: Sequence[str], field: str = "priority") -> None:
        if len(set(classes)) != len(classes):
            raise ConfigError(field, list(classes), "each class at most once")
        self.inner = inner
        self.name = f"priority({inner.name})"
        self.chunked = inner.chunked
        self.rank = {c: i for i, c in enumerate(classes)}
        self._levels = len(classes) + 1   # unlisted classes share the lowest level

    def _level(self, r: Any) -> int:
        return self.rank.get(r.cls, self._levels - 1)

    def ordered(self, reqs: Iterable[Any]) -> list:
        return sorted(reqs, key=self._level)

    def lazy(self, reqs: Iterable[Any]) -> Iterator[Any]:
        reqs = list(reqs) if not isinstance(reqs, Sequence) else reqs
        for level in range(self._levels):
            yield from (r for r in reqs if self._level(r) == level)

    def plan(self, view: Any) -> StepPlan:
        return self.inner.plan(_RankedView(view, self))


class ClusterEngine(ReferenceStepper):
    """The reference stepper as a network node.

    Requests are injected at any time (``inject``); ``step(t)`` runs one iteration starting at
    ``t`` and returns its duration (None if there is nothing to do) with the visits that finished
    at its end. The batching, KV and preemption logic is the reference stepper's, unchanged.
    """

    def __init__(self, name: str, config: EngineConfig, cost: Any,
                 priority: Sequence[str] | None = None) -> None:
        super().__init__(_NO_REQUESTS, config, cost)
        self.name = name
        self.priority = ClassPriority(self.policy, priority, f"{name}.priority") \
            if priority else None
        if self.priority is not None:
            self.policy = self.priority
        self.done: list[Visit] = []
        self.scheduled = False   # a plan event for this engine is in the network's heap
        self.index = -1

    @property
    def decoders(self) -> list:
        found = [r for r in self.running if r.need == 0]
        return self.priority.ordered(found) if self.priority is not None else found

    @property
    def in_system(self) -> int:
        return len(self.running) + len(self.queue) + len(self.swapped)

    @property
    def kv_used_blocks(self) -> int:
        return self.cfg.kv.blocks - self.free_blocks

    def inject(self, visit: Visit) -> bool:
        """Hand ``visit`` to the engine at its arrival time; False if it can never be served."""
        self._arrive(visit)
        return visit.status != Status.REJECTED

    def step(self, t: float) -> tuple[float | None, list[Visit]]:
        """Run one iteration starting at ``t``: (duration or None, visits finished at its end)."""
        self.done = []
        return self._iterate(t), self.done

    def _decode(self, r: _Req, end: float) -> None:
        super()._decode(r, end)
        if r.status == Status.FINISHED:
            self.done.append(r)

