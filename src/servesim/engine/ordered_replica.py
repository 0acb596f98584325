"""The fast ordered replica: orderings on the fast replica, O(log n) per scheduling event.

The ordered stepper (``ordered.py``) defines the semantics: predictions, rank pieces, priority
preemption, TRAIL's limit, refinement, aging, SkipPredict and prediction costs. This replica
gives identical records (the tests require it) at the fast replica's cost: no request is touched
per token, only at its scheduling events, which here include the rank events (a refinement,
the end of a rank piece such as TRAIL's preemptible prefix or an MLFQ quantum, an aging boost).
It runs every ordering except those whose ranks rise continuously with age (SPRPT with bounce);
``fast_supported`` says which.

Why ranks cost O(log n): a rank is a linear piece of age, ``value + slope * (generated - g0)``
from the event that fixed ``value`` at ``g0`` generated tokens, and the slope is a function of
the tier (0, or -1 for predicted or true remaining). A decoder with base ``b`` has generated
``tick - b`` tokens, so its rank is ``value - slope * (b + g0)`` plus a term common to every
decoder of its tier that takes the tick's token. The decoders that take tokens (the head) are a
sorted list under that static key; those that sit out a partial decode (the tail, parked as in
the fast replica) a sorted list under the same key less the tail's shared shift. The head always
ranks ahead of the tail: a new decoder is parked only if it ranks behind the whole head, the
head's ranks only fall while the tail sits out, and a rank event that breaks the order swaps
the two ends until it holds. A partial decode of ``m`` tokens moves the frontier by popping the
worst of the head or the best of the tail. Prefilling requests, the queue and the swapped
priority victims are sorted lists too; preemptible running requests are mirrored in three more
lists keyed worst-first with ties to the earliest admitted, which is the ordered stepper's
victim order, so priority preemption merges their ends, O(log n) per victim.

Rank events are a heap keyed by the tick at which a decoder reaches the generated count of its
next event, re-pushed when it is unparked; decode-only stretches stop at the next one, and,
with a priority check pending, before the first iteration whose start finds the waiting head
blocked by the decoders' growth (the ordered stepper checks at every iteration start).

Floats. Predictions are on a grid of 2**-16 token (``prediction_draws.quantize``), so ranks,
static keys and their differences are exact, and a tie is a tie in both engines. Where ranks
from different lists meet (the waiting head against the victims, the two ends of the frontier,
memory victims) the current rank is computed with the ordered stepper's own expression,
``value + slope * (generated - g0)``.
"""

from __future__ import annotations

import heapq
import itertools
import math

import numpy as np
from sortedcontainers import SortedList

from servesim.core.errors import ConfigError
from servesim.engine.config import EngineConfig
from servesim.engine.prediction_draws import Draws, chunkable, quantize
from servesim.engine.priority import PriorityPreemption
from servesim.engine.rank_queues import RankedPrefills
from servesim.engine.ranked import Columns, Ranked, piece_end
from servesim.engine.replica import _R, Replica
from servesim.engine.state import EngineRun, Status
from servesim.policies.ordering import Aging, Ordering, Segment, SPRPTBounce
from servesim.predictors import Predictor
from servesim.workload.requests import Requests
from servesim.workload.source import RequestSource

INF = math.inf


def fast_supported(ordering: Ordering, predictor: Predictor | None = None,
                   bit_predictor: Predictor | None = None) -> bool:
    """Whether the fast ordered replica runs ``ordering`` (every ordering whose ranks do not
    rise continuously with age, with any predictors)."""
    base = ordering.base if isinstance(ordering, Aging) else ordering
    return not isinstance(base, SPRPTBounce)


class _OR(_R):
    """A request with its rank piece (``tier``, ``value`` at ``g0`` generated tokens, ``slope``,
    ``pre``: preemptible), ``adm`` numbering its latest entry into the running set, ``where``
    it runs ("pf", "head", "tail" or None) and ``rkey`` its key in the container holding it."""

    __slots__ = ("tier", "value", "slope", "g0", "pre", "adm", "where", "rkey", "pred", "pred0",
                 "arrival", "bit", "full", "prio", "prio_recomputed", "refine_at", "seg_end_at",
                 "evt_at", "estamp", "boosted", "waited_s", "enq_t", "visit", "considered",
                 "pcost", "pserver_s")

    def __init__(self, i: int, prompt: int, output: int) -> None:
        super().__init__(i, prompt, output)
        self.tier, self.value, self.slope, self.g0, self.pre = 0, 0.0, 0.0, 0, False
        self.adm, self.where, self.rkey = 0, None, None
        self.pred = self.pred0 = self.arrival = self.bit = math.nan
        self.full, self.prio, self.prio_recomputed = False, 0, 0
        self.refine_at = self.seg_end_at = self.evt_at = INF
        self.estamp, self.boosted, self.waited_s, self.enq_t = 0, False, 0.0, 0.0
        self.visit, self.considered, self.pcost, self.pserver_s = 0, False, 0.0, 0.0


_ADMISSION_ORDER = Segment(0, 0.0, 0.0, INF, False)


def _worst_first(key: tuple) -> tuple:
    """A running key re-ordered for the victim lists: ties in rank go to the earliest admitted."""
    return key[0], key[1], -key[2], key[3]


class OrderedReplica(Ranked, PriorityPreemption, Replica):
    """The fast replica with an ordering (see the module docstring)."""

    def __init__(self, requests: Requests | RequestSource, config: EngineConfig, cost,
                 ordering: Ordering, predictor: Predictor | None = None, seed: int = 0,
                 record_batches: bool = False, max_preemptions: int | None = None,
                 bit_predictor: Predictor | None = None) -> None:
        if config.first_token == "prefill":
            raise ConfigError("engine.first_token", config.first_token, "\"decode\" on the "
                              "fast ordered replica (run_ordered runs the ordered stepper)")
        super().__init__(requests, config, cost, record_batches)
        if not fast_supported(ordering, predictor, bit_predictor):
            raise ConfigError("schedule.order", ordering.name, "an ordering whose ranks do not "
                              "rise with age (run it on the ordered stepper)")
        self._setup_ranks(ordering, predictor, bit_predictor, max_preemptions)
        self.draws = Draws(ordering, predictor, bit_predictor, seed)
        if not chunkable(predictor, bit_predictor):
            self._draw_whole()   # these predictions are drawn for every request at once
        self.columns = Columns()
        self.lists = {w: SortedList() for w in ("pf", "head", "tail")}
        self.victims = {w: SortedList() for w in ("pf", "head", "tail")}
        self.head, self.tail = self.lists["head"], self.lists["tail"]
        self._prefilling = RankedPrefills(self.lists["pf"], lambda r: self._put(r, "pf"),
                                          self._take)
        self.prefilling = self._prefilling.values()
        self.admissions = itertools.count()
        self.events: list[tuple[int, int, int, _OR]] = []   # (tick, seq, stamp, request)
        self._starting = False

    def _extend(self, chunk: Requests) -> None:
        super()._extend(chunk)
        self.draws.extend(chunk)
        self.columns.extend(len(chunk))

    def request_type(self, i: int, prompt: int, output: int) -> _OR:
        r = _OR(i, prompt, output)
        d = self.draws
        r.pred = r.pred0 = d.pred0[i]
        r.bit, r.full = d.bit[i], d.full[i]
        r.arrival = r.enq_t = self.arrivals[i]
        return r

    # -- ranks ------------------------------------------------------------------------------
    def _fix(self, r: _OR, g: int) -> None:
        """Fix the rank piece of running ``r`` at ``g`` generated tokens, and its next event."""
        # FCFS means admission order among running requests.
        s = _ADMISSION_ORDER if self.by_admission else self._segment(r, g)
        r.tier, r.value, r.slope, r.pre = s.tier, s.value, s.slope, s.preemptible
        r.g0 = g
        r.seg_end_at = piece_end(s, g)
        r.evt_at = min(r.refine_at, r.seg_end_at)

    def _key(self, r: _OR, where: str) -> tuple:
        if where == "pf":
            v = r.value
        elif where == "head":
            v = r.value - r.slope * (r.base + r.g0)
        else:
            v = r.value - r.slope * (r.base - r.park + r.g0)
        return r.tier, v, r.adm, r.id

    def _rank_now(self, key: tuple, where: str) -> float:
        """The current rank value of the request with ``key`` in list ``where``, computed as
        the ordered stepper computes it, so that equal ranks compare equal."""
        r = self.running[key[-1]]
        if where == "pf":
            return r.value   # no token since its piece was fixed
        return r.value + r.slope * (self.tick - self._base(r) - r.g0)

    def _put(self, r: _OR, where: str) -> None:
        r.where = where
        r.rkey = self._key(r, where)
        self.lists[where].add(r.rkey)
        if r.pre and self.preemptive:
            self.victims[where].add(_worst_first(r.rkey))

    def _take(self, r: _OR) -> None:
        self.lists[r.where].remove(r.rkey)
        if r.pre and self.preemptive:
            self.victims[r.where].remove(_worst_first(r.rkey))
        r.where = None

    def _move(self, r: _OR, new: Status) -> None:
        super()._move(r, new)
        if new == Status.RUNNING:   # admitted or swapped in
            r.refine_at = (INF if self.refiner is None or not self.draws.full[r.id]
                           else int(self.refiner.next_refine(r.generated)))
            self._fix(r, r.generated)
            r.adm = next(self.admissions)
            self._pcheck = True   # a new head of the queue

    # -- the frontier in rank order -----------------------------------------------------------
    def _attach(self, r: _OR) -> None:
        key = self._key(r, "head")
        if self.tail and (not self.head or key > self.head[-1]):
            self._park(r)
            self._put(r, "tail")
        else:
            self._put(r, "head")
            self._push_event(r)

    def _detach(self, r: _OR) -> None:
        self._take(r)
        if r.park >= 0:
            self._unpark(r)

    def _park_worst(self) -> None:
        r = self.running[self.head[-1][-1]]
        self._take(r)
        self._park(r)
        self._put(r, "tail")

    def _unpark_best(self) -> None:
        r = self.running[self.tail[0][-1]]
        self._take(r)
        self._unpark(r)
        self._put(r, "head")
        self._push_event(r)

    def _frontier(self, k: int) -> None:
        """Park exactly the ``k`` worst-ranked decoders: O(log n) per decoder that crosses."""
        while len(self.tail) < k:
            self._park_worst()
        while len(self.tail) > k:
            self._unpark_best()

    def _restore_order(self) -> None:
        """After rank events: swap the worst of the head and the best of the tail while the
        tail ranks ahead."""
        head, tail = self.head, self.tail
        while head and tail:
            h, t = head[-1], tail[0]
            if (h[0], self._rank_now(h, "head"), h[2]) < (t[0], self._rank_now(t, "tail"), t[2]):
                return
            self._park_worst()
            self._unpark_best()

    def _dissolve(self) -> None:
        self._frontier(0)

    # -- rank events ----------------------------------------------------------------------------
    def _push_event(self, r: _OR) -> None:
        r.estamp += 1
        if r.evt_at != INF:
            heapq.heappush(self.events, (r.base + r.evt_at, next(self.seq), r.estamp, r))

    @staticmethod
    def _live(entry: tuple) -> bool:
        _, _, stamp, r = entry
        return r.estamp == stamp and r.where == "head"

    def _stretch_ticks(self) -> int:
        ticks = super()._stretch_ticks()
        events = self.events
        while events and not self._live(events[0]):
            heapq.heappop(events)
        return min(ticks, events[0][0] - self.tick) if events else ticks

    def _run_events(self) -> None:
        """Refresh the decoders whose next event came at this tick (the ordered stepper's
        ``_run_events``, in the order they decoded)."""
        events, tick = self.events, self.tick
        due = []
        while events and events[0][0] <= tick:
            entry = heapq.heappop(events)
            if self._live(entry):
                due.append(entry[3])
        if not due:
            return
        due.sort(key=lambda r: r.rkey)
        refine = []
        for r in due:
            g = tick - r.base
            if g >= r.refine_at:
                refine.append(r)
            if g >= r.seg_end_at:
                self._pcheck = True
            self._refresh(r, g)
        if refine:
            self._refine(refine)
        self._restore_order()

    def _refresh(self, r: _OR, g: int) -> None:
        where = r.where
        self._take(r)
        self._fix(r, g)
        self._put(r, where)
        self._push_event(r)

    def _refine(self, rows: list[_OR]) -> None:
        ids = np.array([r.id for r in rows], dtype=np.int64)
        gen = np.array([self.tick - r.base for r in rows], dtype=np.int64)
        remaining = self.refiner.refine(self.draws.trail_state, gen, rows=ids,
                                        rng=self.draws.stream)
        nxt = self.refiner.next_refine(gen)
        for r, g, left, at in zip(rows, gen.tolist(), quantize(remaining).tolist(),
                                  nxt.tolist(), strict=True):
            r.pred = g + left
            r.refine_at = int(at)
            self._refresh(r, g)
        self._pcheck = True

    # -- the loop's hooks -----------------------------------------------------------------------
    def _iterate(self, t: float, next_event: float) -> float | None:
        self._now = t
        if self.boosts:
            self._boost_due(t)
            boosts, waiting = self.boosts, self.queue.by_id
            while boosts and getattr(waiting.get(boosts[0][1]), "visit", None) != boosts[0][2]:
                heapq.heappop(boosts)   # stale: admitted or re-queued since
            if boosts:   # a stretch must not run past a boost
                next_event = min(next_event, boosts[0][0])
        return super()._iterate(t, next_event)

    def _before_plan(self) -> None:
        self.swap_s += self._pending_s
        if self.swapped:
            self._swap_in()
        if not self.swapped:
            self._swap_in_parked()
            self._priority_preempt()

    def _step(self, t: float, plan, need: int, demand: int) -> float:
        end = super()._step(t, plan, need, demand)
        self._pending_s = 0.0
        if plan.decode:
            self._run_events()
        return end

    def _stretch_cap(self, needs: np.ndarray, used: np.ndarray) -> int:
        """With a priority check pending, end the stretch before the first iteration at whose
        start the decoders' growth leaves the waiting head blocked: the ordered stepper checks
        at every iteration start. Only memory can block it there, since the running set does
        not change inside a stretch (and it was not blocked at this one's start)."""
        head = self.queue.head() if self.preemptive and self._pcheck else None
        if head is None:
            return len(needs)
        want = -(-(head.need + head.computed) // self.block_tokens) - head.blocks
        before = np.concatenate(([0], used[:-1]))
        blocked = np.flatnonzero(self.free_blocks - before - needs - self.watermark_blocks < want)
        return int(blocked[0]) if blocked.size else len(needs)

    def _stretch(self, t: float, next_event: float, demand: int, padding: int) -> float | None:
        end = super()._stretch(t, next_event, demand, padding)
        if end is not None:
            self._run_events()
        return end

    def _arrive(self, i: int) -> _OR:
        r = super()._arrive(i)
        if r is not None and not self._starting:
            self._charge(r)
            if self.queue.head() is r:
                self._pcheck = True
        return r

    def start_decoding(self, i: int) -> None:
        self._starting = True
        super().start_decoding(i)
        self._starting = False

    def _admit(self, r: _OR, t: float) -> None:
        r.waited_s += t - r.enq_t
        super()._admit(r, t)

    def _preempt(self, r: _OR) -> None:
        r.enq_t = self._now
        super()._preempt(r)
        if r.status == Status.WAITING and self.queue.head() is r:
            self._pcheck = True

    def _victim(self) -> _OR:
        if not self.preemptive:
            return super()._victim()
        # The worst rank, ties to the latest admitted; the best is spared unless alone, which
        # the maximum never is when two or more run.
        best = None
        for where, keys in self.lists.items():
            if keys:
                k = keys[-1]
                cand = (k[0], self._rank_now(k, where), k[2], k[3])
                if best is None or cand > best:
                    best = cand
        return self.running[best[-1]]

    # -- priority preemption (``priority.py``) -------------------------------------------------
    def _plain_preempt(self, r: _OR) -> None:
        Replica._preempt(self, r)

    def _plain_swap_in(self) -> None:
        Replica._swap_in(self)

    def _decode_blocks_now(self) -> int:
        return self._need_all()

    def _victims_worst_first(self):
        """Preemptible running requests, worst rank first, ties to the earliest admitted."""
        def stream(where):
            for k in reversed(self.victims[where]):
                yield (k[0], self._rank_now((k[0], k[1], -k[2], k[3]), where), k[2]), k[3]
        return heapq.merge(*(stream(w) for w in self.victims), reverse=True)

    def _unblocking_victims(self, head: _OR, rank: tuple) -> list[_OR] | None:
        """The fewest eligible victims, worst rank first, whose preemption unblocks ``head``."""
        B = self.block_tokens
        chosen: list[_OR] = []
        freed_blocks = freed_need = 0
        for (tier, value, _), i in self._victims_worst_first():
            if (tier, value) <= rank:
                return None   # only requests ranked strictly behind the head are eligible
            v = self.running[i]
            chosen.append(v)
            freed_blocks += self._blocks_now(v)
            freed_need += v.need == 0 and self._context(v) % B == 0
            if not self._blocked(head, freed_blocks, freed_need, len(chosen)):
                return chosen
        return None

    # -- records --------------------------------------------------------------------------------
    def _store(self, r: _OR) -> None:
        super()._store(r)
        self.columns.store(r)

    def _record_batch(self, plan) -> None:
        decoders = [self.running[k[-1]] for k in self.head][: plan.decode]
        self.batches.append([(r.id, "d", 1) for r in decoders] +
                            [(r.id, "p", x) for r, x in plan.chunks])

    def _order_problems(self, decoders: list[_OR], tail: list[_OR]) -> list[str]:
        problems = []
        for where, members in (("head", [r for r in decoders if r.park < 0]), ("tail", tail)):
            if sorted(self._key(r, where) for r in members) != list(self.lists[where]):
                problems.append(f"{where} keys are stale")
        if self.head and self.tail:
            h, t = self.head[-1], self.tail[0]
            if (h[0], self._rank_now(h, "head"), h[2]) > (t[0], self._rank_now(t, "tail"), t[2]):
                problems.append("a parked decoder ranks ahead of a decoding one")
        if self.preemptive:
            for where, keys in self.lists.items():
                pre = sorted(_worst_first(k) for k in keys if self.running[k[-1]].pre)
                if pre != list(self.victims[where]):
                    problems.append(f"victim list {where} is stale")
        return problems

    def _result(self, t: float, reason: str) -> EngineRun:
        run = super()._result(t, reason)
        self.columns.add_to(run.requests, self.draws.pred0, self.draws.bit)
        return run
