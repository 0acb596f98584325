"""What both ordered engines do alike with a request's rank and its predictions.

A mixin over an engine that has ``rule`` (``RankRule``), ``aging`` (the Aging ordering or None),
``boosts`` (a heap of (due time, request id, queue visit)), ``queue``
(``rank_queues.RankedQueue``), ``costs`` and ``has_bit`` (see ``_charge``), ``_pending_s`` and
``_pcheck``; requests carry ``output``, ``pred``, ``pred0``, ``arrival``, ``bit``, ``full``,
``prio``, ``boosted``, ``enq_t``, ``waited_s``, ``visit``, ``considered``, ``pcost`` and
``pserver_s``. The semantics are stated in ``ordered.py``.
"""

from __future__ import annotations

import heapq
import math
from array import array
from typing import Any

import numpy as np
import pandas as pd

from servesim.engine.rank_queues import RankedQueue, SwapQueue
from servesim.engine.rank_rule import RankRule
from servesim.policies.ordering import FCFS, Ordering, Segment
from servesim.policies.schedule import check_supported
from servesim.predictors import Predictor
from servesim.predictors import Trail as TrailPredictor

INF = math.inf


def piece_end(s: Segment, generated: int) -> float:
    """The generated count at which a request on piece ``s`` (fixed at ``generated``) next needs
    its rank re-evaluated: the end of the piece, and at least one token on."""
    return INF if s.until_age == INF else max(math.ceil(s.until_age), generated + 1)


class Columns:
    """The ordered engines' per-request record columns, grown a chunk of requests at a time
    (``extend``) and filled as requests are stored (a request that never entered the system
    keeps zeros)."""

    def __init__(self) -> None:
        self.prio, self.prio_recomputed = array("q"), array("q")
        self.expensive = bytearray()
        self.pcost, self.pserver_s = array("d"), array("d")

    def extend(self, m: int) -> None:
        """Room for ``m`` more requests."""
        for ints in (self.prio, self.prio_recomputed):
            ints.extend(array("q", bytes(8 * m)))
        self.expensive.extend(bytes(m))
        for floats in (self.pcost, self.pserver_s):
            floats.extend(array("d", bytes(8 * m)))

    def store(self, r: Any) -> None:
        i = r.id
        self.prio[i], self.prio_recomputed[i] = r.prio, r.prio_recomputed
        self.expensive[i] = r.full and r.considered
        self.pcost[i], self.pserver_s[i] = r.pcost, r.pserver_s

    def add_to(self, df: pd.DataFrame, pred0: list[float], bit: list[float]) -> None:
        """Add the columns to the request table ``df`` (its rows are the first requests held),
        with the requests' initial predictions and cheap bits."""
        k = len(df)

        def first(values, dtype) -> np.ndarray:
            if not k:
                return np.empty(0, dtype)
            if isinstance(values, list):
                return np.array(values[:k], dtype=dtype)
            code = "b" if isinstance(values, bytearray) else values.typecode
            return np.frombuffer(values, dtype=code)[:k].astype(dtype)

        df["predicted_tokens"] = first(pred0, np.float64)
        df["priority_preemptions"] = first(self.prio, np.int64)
        df["priority_recomputed_tokens"] = first(self.prio_recomputed, np.int64)
        df["cheap_bit"] = first(bit, np.float64)
        df["expensive_prediction"] = first(self.expensive, bool)
        df["prediction_cost"] = first(self.pcost, np.float64)
        df["prediction_server_s"] = first(self.pserver_s, np.float64)


class Ranked:
    """Rank keys, aging boosts and prediction charges, shared by the ordered engines."""

    def _setup_ranks(self, ordering: Ordering, predictor: Predictor | None,
                     bit_predictor: Predictor | None, max_preemptions: int | None) -> None:
        """The state every ordered engine keeps: the rank rule, the queues, the refiner, the
        prediction costs, and the pending boosts, charges and priority check."""
        check_supported(ordering, predictor, bit_predictor=bit_predictor)
        self.order = ordering
        self.rule = RankRule(ordering, max_preemptions)
        self.aging = self.rule.aging
        # Among running requests FCFS means admission order, as in the plain engine.
        self.by_admission = isinstance(ordering, FCFS)
        self.preemptive = ordering.preemptive
        # Refining is only worth its events when the rank reads the prediction.
        self.refiner = (predictor if isinstance(predictor, TrailPredictor)
                        and ordering.uses == "prediction" else None)
        self.costs = [(getattr(bit_predictor, "cost", None), "bit"),
                      (getattr(predictor, "cost", None), "full")]
        self.has_bit = bit_predictor is not None
        self.queue = RankedQueue(self._queue_key, front_victims=not ordering.preemptive)
        self.waiting = self.queue
        self.swapped = SwapQueue()
        self.boosts: list[tuple[float, int, int]] = []   # (due time, request id, queue visit)
        self._pending_s = 0.0   # server-time prediction work not yet run
        self._pcheck = False
        self._now = 0.0
        self.priority_scans = 0

    def _segment(self, r: Any, generated: int) -> Segment:
        return self.rule.segment(boosted=r.boosted, output=r.output, pred=r.pred, pred0=r.pred0,
                                 generated=generated, arrival=r.arrival, bit=r.bit,
                                 preemptions=r.prio)

    def _wait_key(self, r: Any) -> tuple:
        s = self._segment(r, r.generated)
        return s.tier, s.value, r.id

    def _queue_key(self, r: Any) -> tuple:
        """The rank key of ``r`` joining the queue; with aging, its boost time becomes an event
        (fixed while it waits: it joined at ``enq_t`` having waited ``waited_s`` before)."""
        if self.aging is not None and not r.boosted:
            r.visit += 1
            heapq.heappush(self.boosts, (r.enq_t + self.aging.wait_s - r.waited_s, r.id,
                                         r.visit))
        return self._wait_key(r)

    def _boost_due(self, t: float) -> None:
        """Move waiting requests whose boost time has come above every unboosted one."""
        while self.boosts and self.boosts[0][0] <= t:
            _, i, visit = heapq.heappop(self.boosts)
            r = self.queue.by_id.get(i)
            if r is None or r.visit != visit:
                continue   # stale: admitted or re-queued since
            self.queue.remove(r)
            r.boosted = True
            self.queue.append(r)
            self._pcheck = True

    def _charge(self, r: Any) -> None:
        """Book the predictions of ``r``, first considered now: the cheap bit if the ordering
        reads one, then the expensive prediction if ``r`` gets it. ``costs`` is
        ((bit predictor's cost, "bit"), (predictor's cost, "full")); an external cost is
        booked, a server-time one is engine time at the next executed iteration."""
        r.considered = True
        for cost, which in self.costs:
            used = self.has_bit if which == "bit" else r.full
            if cost is None or not used:
                continue
            if cost.kind == "external":
                r.pcost += cost.amount
            else:
                r.pserver_s += cost.amount
                self._pending_s += cost.amount
