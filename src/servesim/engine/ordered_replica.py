"""The fast ordered replica: an ordering on the fast replica, O(log n) per scheduling event.

It runs the orderings whose running requests never change relative order except at scheduling
events: the non-preemptive ones (FCFS, SJF, SPJF, 1-bit, learning to rank) and TRAIL with c = 0
(SPRPT ranks, never preempted for priority), with predictors that do not refine and no
server-time prediction cost (``fast_supported``). Its records are identical to the ordered
stepper's (``ordered.py``, which defines the semantics); the tests require it.

Why it stays fast: a rank is a linear piece of age, ``value + slope * (generated - g0)`` from
the admission that fixed ``value`` at ``g0`` generated tokens, with one slope for every
request (0, or -1 for TRAIL's predicted remaining). A decoder with base ``b`` has generated
``tick - b`` tokens, so its rank is ``value - slope * (b + g0)`` plus a term common to every
decoder that takes the tick's token. Decoders that take tokens (the head) are therefore kept in
a sorted list under that static key, and decoders that sit out a partial decode (the tail,
parked as in the fast replica) under the same key with the tail's shared shift taken out. The
head always ranks ahead of the tail: a new decoder joins the tail only if it ranks behind the
whole head, and while the tail sits out the head's ranks only fall. A partial decode of ``m``
tokens moves the frontier by popping the worst of the head or the best of the tail, O(log n)
per decoder that crosses. The waiting queue and the prefilling requests are sorted lists of
rank keys as well. Keys end with (admission number, id), so ties go to admission order among
running requests and to arrival order in the queue, as in the ordered stepper.

Ranks are compared as ``value - slope * (b + g0)`` where the ordered stepper compares
``value + slope * (generated - g0)``: equal in exact arithmetic (and in floats for the integer
and half-integer predictions of oracles and bins), they can round differently only for two
predictions within an ulp of a tie.
"""

from __future__ import annotations

import itertools

import numpy as np
from sortedcontainers import SortedList

from servesim.core.errors import ConfigError
from servesim.engine.config import EngineConfig
from servesim.engine.prediction_draws import draw, external_cost
from servesim.engine.replica import _R, Replica
from servesim.engine.state import EngineRun, Status
from servesim.policies.ordering import FCFS, Aging, Ordering, Trail
from servesim.policies.schedule import check_supported
from servesim.predictors import Predictor
from servesim.predictors import Trail as TrailPredictor
from servesim.workload.requests import Requests


def fast_supported(ordering: Ordering, predictor: Predictor | None = None,
                   bit_predictor: Predictor | None = None) -> bool:
    """Whether the fast ordered replica runs ``ordering`` with these predictors (see above)."""
    if isinstance(ordering, Aging):
        return False
    if ordering.preemptive and not (isinstance(ordering, Trail) and ordering.c == 0):
        return False
    if isinstance(predictor, TrailPredictor) and ordering.uses == "prediction":
        return False
    return all(getattr(getattr(p, "cost", None), "kind", None) != "server_time"
               for p in (predictor, bit_predictor))


class _OR(_R):
    """A request with its rank piece: ``tier``, ``value`` at ``g0`` generated tokens, ``slope``;
    ``adm`` numbers its latest entry into the running set; ``rkey`` is its key in whichever
    sorted list holds it (None at the front of the queue)."""

    __slots__ = ("tier", "value", "slope", "g0", "adm", "rkey")

    def __init__(self, i: int, prompt: int, output: int) -> None:
        super().__init__(i, prompt, output)
        self.tier, self.value, self.slope, self.g0, self.adm, self.rkey = 0, 0.0, 0.0, 0, 0, None


class _RankedQueue:
    """The waiting queue: memory victims of a non-preemptive ordering first (the latest first,
    as the plain engine), then everyone else by key (tier, value, id)."""

    def __init__(self, keyfn, front_victims: bool) -> None:
        self.keyfn = keyfn
        self.front_victims = front_victims
        self.front: list[_OR] = []   # served from the end
        self.keys = SortedList()
        self.by_id: dict[int, _OR] = {}

    def append(self, r: _OR) -> None:
        r.rkey = self.keyfn(r)
        self.keys.add(r.rkey)
        self.by_id[r.id] = r

    def appendleft(self, r: _OR) -> None:
        if self.front_victims:
            r.rkey = None
            self.front.append(r)
        else:
            self.append(r)

    def popleft(self) -> _OR:
        if self.front:
            return self.front.pop()
        return self.by_id.pop(self.keys.pop(0)[-1])

    def remove(self, r: _OR) -> None:
        if r.rkey is None:
            self.front.remove(r)
            return
        self.keys.remove(r.rkey)
        del self.by_id[r.id]

    def __iter__(self):
        yield from reversed(self.front)
        by_id = self.by_id
        for key in self.keys:
            yield by_id[key[-1]]

    def __len__(self) -> int:
        return len(self.front) + len(self.keys)

    def __bool__(self) -> bool:
        return bool(self.front) or bool(self.keys)


class _RankedPrefills:
    """Running requests with prefill owed, as the replica's dict of them, kept in rank order:
    ``values()`` is a live view that iterates in that order."""

    def __init__(self, keyfn) -> None:
        self.keyfn = keyfn
        self.keys = SortedList()
        self.items: dict[int, _OR] = {}

    def __setitem__(self, i: int, r: _OR) -> None:
        r.rkey = self.keyfn(r)
        self.keys.add(r.rkey)
        self.items[i] = r

    def __delitem__(self, i: int) -> None:
        self.keys.remove(self.items.pop(i).rkey)

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def values(self) -> _InOrder:
        return _InOrder(self)


class _InOrder:
    def __init__(self, prefills: _RankedPrefills) -> None:
        self.prefills = prefills

    def __iter__(self):
        items = self.prefills.items
        for key in self.prefills.keys:
            yield items[key[-1]]


class OrderedReplica(Replica):
    """The fast replica with a rank-ordered queue, prefills and decoders (module docstring)."""

    request_type = _OR

    def __init__(self, requests: Requests, config: EngineConfig, cost, ordering: Ordering,
                 predictor: Predictor | None = None, seed: int = 0,
                 record_batches: bool = False, max_preemptions: int | None = None,
                 bit_predictor: Predictor | None = None) -> None:
        super().__init__(requests, config, cost, record_batches)
        check_supported(ordering, predictor, bit_predictor=bit_predictor)
        if not fast_supported(ordering, predictor, bit_predictor):
            raise ConfigError("schedule.order", ordering.name, "an ordering the fast ordered "
                              "replica runs (run_ordered with stepper=\"auto\" picks for you)")
        self.order = ordering
        self.by_admission = isinstance(ordering, FCFS)
        # A preemptive ordering (here TRAIL with c = 0) picks memory victims by rank.
        self.rank_victims = ordering.preemptive
        self.draws = draw(requests, ordering, predictor, bit_predictor, seed)
        self.pcost = [external_cost(predictor, bit_predictor, f) for f in self.draws.full]
        self.considered = np.zeros(self.n, dtype=bool)
        self.arrivals = requests.arrival_s.tolist()
        self.queue = _RankedQueue(self._queue_key, front_victims=not ordering.preemptive)
        self.waiting = self.queue
        self._prefilling = _RankedPrefills(self._prefill_key)
        self.prefilling = self._prefilling.values()
        self.head = SortedList()   # every unparked decoder, by static key
        self.tail = SortedList()   # parked decoders, by static key less the tail's shift
        self.admissions = itertools.count()

    # -- ranks --------------------------------------------------------------------------------
    def _segment(self, r: _OR):
        i = r.id
        return self.order.segment(float(r.output), self.draws.pred0[i], float(r.generated),
                                  self.arrivals[i], bit=self.draws.bit[i], preemptions=0)

    def _queue_key(self, r: _OR) -> tuple:
        s = self._segment(r)
        return s.tier, s.value, r.id

    @staticmethod
    def _prefill_key(r: _OR) -> tuple:
        return r.tier, r.value, r.adm, r.id

    @staticmethod
    def _head_key(r: _OR) -> tuple:
        return r.tier, r.value - r.slope * (r.base + r.g0), r.adm, r.id

    @staticmethod
    def _tail_key(r: _OR) -> tuple:
        return r.tier, r.value - r.slope * (r.base - r.park + r.g0), r.adm, r.id

    def _move(self, r: _OR, new: Status) -> None:
        super()._move(r, new)
        if new != Status.RUNNING:
            return
        if self.by_admission:   # FCFS means admission order among running requests
            r.tier, r.value, r.slope = 0, 0.0, 0.0
        else:
            s = self._segment(r)
            r.tier, r.value, r.slope = s.tier, s.value, s.slope
        r.g0 = r.generated
        r.adm = next(self.admissions)

    # -- the frontier in rank order ------------------------------------------------------------
    def _attach(self, r: _OR) -> None:
        key = self._head_key(r)
        if self.tail and (not self.head or key > self.head[-1]):
            self._park(r)
            r.rkey = self._tail_key(r)
            self.tail.add(r.rkey)
        else:
            r.rkey = key
            self.head.add(key)

    def _detach(self, r: _OR) -> None:
        if r.park >= 0:
            self.tail.remove(r.rkey)
            self._unpark(r)
        else:
            self.head.remove(r.rkey)

    def _frontier(self, k: int) -> None:
        """Park exactly the ``k`` worst-ranked decoders: O(log n) per decoder that crosses."""
        head, tail, running = self.head, self.tail, self.running
        while len(tail) < k:
            r = running[head.pop()[-1]]
            self._park(r)
            r.rkey = self._tail_key(r)
            tail.add(r.rkey)
        while len(tail) > k:
            r = running[tail.pop(0)[-1]]
            self._unpark(r)
            r.rkey = self._head_key(r)
            head.add(r.rkey)

    def _dissolve(self) -> None:
        self._frontier(0)

    def _victim(self) -> _OR:
        if not self.rank_victims:
            return super()._victim()
        # The worst rank, ties to the latest admitted; the best is spared unless alone, which
        # the maximum never is when two or more run.
        tick, sigma = self.tick, self.sigma
        best = None
        for keys, shift in ((self._prefilling.keys, None), (self.head, 0), (self.tail, sigma)):
            if not keys:
                continue
            tier, v, adm, i = keys[-1]
            if shift is not None:
                slope = self.running[i].slope
                v = v - slope * shift + slope * tick
            cand = (tier, v, adm, i)
            if best is None or cand > best:
                best = cand
        return self.running[best[-1]]

    # -- records -------------------------------------------------------------------------------
    def _arrive(self, i: int) -> _OR:
        r = super()._arrive(i)
        if r is not None:
            self.considered[i] = True
        return r

    def start_decoding(self, i: int) -> None:
        super().start_decoding(i)
        self.considered[i] = False   # never considered for admission, so never predicted

    def _record_batch(self, plan) -> None:
        decoders = [self.running[k[-1]] for k in self.head][: plan.decode]
        self.batches.append([(r.id, "d", 1) for r in decoders] +
                            [(r.id, "p", x) for r, x in plan.chunks])

    def _order_problems(self, decoders: list[_OR], tail: list[_OR]) -> list[str]:
        problems = []
        if sorted(self._head_key(r) for r in decoders if r.park < 0) != list(self.head) or \
                sorted(self._tail_key(r) for r in tail) != list(self.tail):
            problems.append("head or tail keys are stale")
        if self.head and self.tail:
            worst = self.head[-1]
            best = self.tail[0]
            slope = self.running[best[-1]].slope
            if (worst[0], worst[1], worst[2]) > (best[0], best[1] - slope * self.sigma, best[2]):
                problems.append("a parked decoder ranks ahead of a decoding one")
        return problems

    def _result(self, t: float, reason: str) -> EngineRun:
        run = super()._result(t, reason)
        d, n, seen = self.draws, self.n, self.considered
        df = run.requests
        df["predicted_tokens"] = np.array(d.pred0, dtype=np.float64)
        df["priority_preemptions"] = np.zeros(n, dtype=np.int64)
        df["priority_recomputed_tokens"] = np.zeros(n, dtype=np.int64)
        df["cheap_bit"] = np.array(d.bit, dtype=np.float64)
        df["expensive_prediction"] = np.array(d.full, dtype=bool) & seen
        df["prediction_cost"] = np.where(seen, np.array(self.pcost, dtype=np.float64), 0.0)
        df["prediction_server_s"] = np.zeros(n, dtype=np.float64)
        return run
