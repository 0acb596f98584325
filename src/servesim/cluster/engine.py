"""One engine of a network: the reference stepper, fed by injection and stepped one iteration
at a time, with an optional strict class priority over its batching policy."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
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
    class rank (stable, so admission and queue order hold within a class).

    Strict at chunk granularity: a running prefill ranked below the best waiting request is
    moved from ``prefilling`` into the waiting list, just after the waiting requests that
    outrank it (and before those of its own rank), so the budget goes to the higher class
    first and only what is left continues the lower prefill. A policy sizes a chunk from the
    request's ``need`` and ``computed`` whichever list it is in, and the engine applies a
    chunk of a running request as a continuation. ``n_running`` leaves the moved prefills
    out, since the policy counts them again as it takes them from the waiting list; so that
    this never admits more than ``max_batch`` allows, the waiting list offers at most as many
    new requests as there are free slots.
    """

    def __init__(self, view: Any, order: ClassPriority) -> None:
        self._view = view
        self._order = order
        waiting = view.waiting
        self._waiting = (waiting if isinstance(waiting, Sequence | LevelQueue)
                         else list(waiting))
        running = order.ordered(view.prefilling)
        top = order.best(self._waiting) if running else None
        self._ahead = [r for r in running if top is None or order.level(r) <= top]
        self._behind = running[len(self._ahead):]
        self._room = view.max_batch - view.n_running

    def __getattr__(self, name: str) -> Any:
        return getattr(self._view, name)

    @property
    def prefilling(self) -> list:
        return self._ahead

    @property
    def n_running(self) -> int:
        return self._view.n_running - len(self._behind)

    @property
    def decoders(self) -> list:
        return self._order.ordered(self._view.decoders)

    @property
    def waiting(self) -> Iterable:
        # Lazy, so a policy that stops at the budget does not sort a long queue.
        if not self._behind:
            return self._order.lazy(self._waiting)
        return self._order.lazy(self._waiting, self._behind, self._room)


class LevelQueue:
    """The waiting queue of an engine with class priority: one FIFO per priority level, read
    best level first, so finding the best waiting class and walking the queue in rank order
    cost O(levels + requests read), not a scan of the whole queue per level."""

    def __init__(self, level: Callable[[Any], int], n_levels: int) -> None:
        self.level = level
        self.levels: list[deque] = [deque() for _ in range(n_levels)]
        self.n = 0

    def append(self, r: Any) -> None:
        self.levels[self.level(r)].append(r)
        self.n += 1

    def appendleft(self, r: Any) -> None:
        self.levels[self.level(r)].appendleft(r)
        self.n += 1

    def remove(self, r: Any) -> None:
        self.levels[self.level(r)].remove(r)
        self.n -= 1

    def best(self) -> int | None:
        """The best level with a waiting request; None if the queue is empty."""
        for i, q in enumerate(self.levels):
            if q:
                return i
        return None

    def __iter__(self) -> Iterator[Any]:
        for q in self.levels:
            yield from q

    def __len__(self) -> int:
        return self.n

    def __bool__(self) -> bool:
        return self.n > 0


class ClassPriority(Policy):
    """Strict priority by class over any batching policy.

    The wrapped policy plans on a view whose waiting queue, running prefills and decoders are
    ordered by class rank, highest first, so higher-priority tokens fill the budget first, and
    a lower-class prefill part-way through yields its chunks to a higher class that arrives
    (see ``_RankedView``). A plan names its decoders by count, so the engine must take decoders
    in the same order: a ``ClusterEngine`` does (its ``decoders`` come from ``ordered``).

    Raises ConfigError if a class is listed twice.
    """

    def __init__(self, inner: Policy, classes: Sequence[str], field: str = "priority") -> None:
        if len(set(classes)) != len(classes):
            raise ConfigError(field, list(classes), "each class at most once")
        self.inner = inner
        self.name = f"priority({inner.name})"
        self.chunked = inner.chunked
        self.rank = {c: i for i, c in enumerate(classes)}
        self.n_levels = len(classes) + 1   # unlisted classes share the lowest level

    def level(self, r: Any) -> int:
        return self.rank.get(r.cls, self.n_levels - 1)

    def best(self, reqs: Iterable[Any]) -> int | None:
        """The highest rank (lowest level) among ``reqs``; None if there are none."""
        if isinstance(reqs, LevelQueue):
            return reqs.best()
        top = None
        for r in reqs:
            level = self.level(r)
            if top is None or level < top:
                top = level
                if level == 0:
                    break
        return top

    def ordered(self, reqs: Iterable[Any]) -> list:
        return sorted(reqs, key=self.level)

    def lazy(self, reqs: Sequence[Any], first: Sequence[Any] = (),
             most: int | None = None) -> Iterator[Any]:
        """``reqs`` by level, at most ``most`` of them; at each level, those of ``first``
        (already ordered, never capped) go first."""
        i, left = 0, most
        by_level = reqs.levels if isinstance(reqs, LevelQueue) else None
        for level in range(self.n_levels):
            while i < len(first) and self.level(first[i]) == level:
                yield first[i]
                i += 1
            for r in (reqs if by_level is None else by_level[level]):
                if by_level is None and self.level(r) != level:
                    continue
                if left is not None:
                    if left <= 0:
                        break
                    left -= 1
                yield r

    def plan(self, view: Any) -> StepPlan:
        return self.inner.plan(_RankedView(view, self))


class ClusterEngine(ReferenceStepper):
    """The reference stepper as a network node.

    Requests are injected at any time (``inject``); ``step(t)`` runs one iteration starting at
    ``t`` and returns its duration (None if there is nothing to do) with the visits that finished
    at its end. The batching, KV and preemption logic is the reference stepper's, unchanged.
    """

    def __init__(self, name: str, config: EngineConfig, cost: Any,
                 priority: Sequence[str] | None = None, field: str | None = None) -> None:
        super().__init__(_NO_REQUESTS, config, cost)
        self.name = name
        self.priority = ClassPriority(self.policy, priority, field or f"{name}.priority") \
            if priority else None
        if self.priority is not None:
            self.policy = self.priority
            self.queue = self.waiting = LevelQueue(self.priority.level, self.priority.n_levels)
        self.done: list[Visit] = []
        self.scheduled = False   # a plan event for this engine is in the network's heap
        self.index = -1
        # The stepper applies an iteration when it plans it; these are the visits (and the KV
        # blocks they hold) that finish at the end of the iteration under way, still in the
        # engine as the outside world sees it until the network clears them at that end.
        self.finishing = 0
        self.finishing_blocks = 0

    @property
    def decoders(self) -> list:
        found = super().decoders
        return self.priority.ordered(found) if self.priority is not None else found

    @property
    def in_system(self) -> int:
        """Requests at the engine as a router sees it now (finishing ones included until the
        iteration that finishes them ends)."""
        return len(self.running) + len(self.queue) + len(self.swapped) + self.finishing

    @property
    def kv_used_blocks(self) -> int:
        """KV blocks in use as a router sees it now (finishing visits' blocks included)."""
        return self.cfg.kv.blocks - self.free_blocks + self.finishing_blocks

    def finished_now(self) -> None:
        """The iteration under way has ended: its finished visits leave the engine."""
        self.finishing = self.finishing_blocks = 0

    def inject(self, visit: Visit) -> bool:
        """Hand ``visit`` to the engine at its arrival time; False if it can never be served."""
        self._arrive(visit)
        return visit.status != Status.REJECTED

    def step(self, t: float) -> tuple[float | None, list[Visit]]:
        """Run one iteration starting at ``t``: (duration or None, visits finished at its end)."""
        self.done = []
        self.finishing = self.finishing_blocks = 0
        dur = self._iterate(t)
        self.finishing = len(self.done)
        return dur, self.done

    def _emit(self, r: _Req, end: float) -> None:
        super()._emit(r, end)
        if r.status == Status.FINISHED:
            self.done.append(r)
            self.finishing_blocks += -(-r.computed // self.block_tokens)

