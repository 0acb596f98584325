"""The ordered stepper: the plain step loop with a scheduling order and priority preemption.

Any batching system runs unchanged: it reads ``waiting``, ``prefilling`` and ``decoders`` in
order, so an ordering is the order in which they are presented. Lower ranks come first
(``servesim.policies.ordering``); ties go to arrival order in the queue and to admission order
among running requests. The FCFS ordering therefore reproduces the plain engine exactly.

Semantics on top of the plain engine (``reference.py``):

- **Predictions.** Drawn once per request, as the engine takes its chunk of requests from the
  source (``prediction_draws.py``; for the binned and TRAIL predictors, for every request at
  the start of the run), from the predictor's own stream (``Streams(seed).get("predictor")``),
  in request (arrival) order; the values do not depend on the chunks. A refining predictor
  (TRAIL's) re-estimates a running request's remaining length every K generated tokens; the
  rank then reads ``generated + predicted remaining`` as the predicted length.
- **Age** is generated tokens, **size** is output tokens. A waiting request's age is frozen, so
  its rank is computed once when it joins the queue.
- **Memory preemption** stays the engine's (blocks run out; nothing else is admitted in that
  iteration). With a non-preemptive ordering the victim follows ``engine.kv.victim`` and rejoins
  at the head of the queue, as vLLM. With a preemptive ordering the victim is the worst-ranked
  running request (the best-ranked one is spared unless alone, so the head always progresses)
  and it rejoins at its rank: rejoining at the head would let it displace better-ranked requests
  only to be preempted again.
- **Priority preemption** (preemptive orderings only). Before planning, if the best waiting
  request ranks strictly ahead of some preemptible running request and it is blocked on a
  resource a running request holds (a batch slot, or KV blocks for its whole prefill beside the
  decoders' next blocks and the watermark), the stepper preempts victims, worst rank first,
  until it is no longer blocked. If even all eligible victims would not unblock it, nobody is
  preempted. The cost is the engine's own (recompute or swap, through ``_preempt``). A priority
  victim that is swapped out does not block admissions (a memory-swapped one does, as vLLM); it
  swaps back in once it ranks ahead of every waiting request and fits. The batching policy
  still decides when the head is admitted.
- **Aging** (a starvation guard around any ordering). A request that has spent ``wait_s`` in
  the waiting queue in total is boosted above every unboosted request; boosted requests run in
  arrival order and are not preempted for priority. Its boost time is fixed while it waits, so it
  is an event (a heap keyed by time, checked at each iteration start). Time swapped out does not
  count as waiting.
- **SkipPredict.** A cheap predictor (``one_bit``) gives every request a bit from its own stream
  (``Streams(seed).get("bit")``); only requests whose bit says long (1) receive the expensive
  prediction, which is drawn for every request from the predictor stream (so runs stay paired
  with the other orderings) but read and paid for only for those. Predicted-short requests rank
  (0, arrival), predicted-long ones (1, prediction - generated): FCFS ahead of SPRPT. A refining
  predictor refines predicted-long requests only.
- **Prediction costs** follow each predictor's ``cost``. A request pays when the engine first
  considers it (it arrives and is not rejected): the cheap bit if the ordering reads one, then the
  expensive prediction if the ordering reads it for this request (``needs_prediction(bit)``). An
  ``external`` cost is only booked (``prediction_cost``). A ``server_time`` cost is engine time:
  the predictions of the requests that arrived since the last iteration run at the start of the
  next executed iteration, whose duration grows by their seconds (as a swap transfer's does), and
  those requests are ranked by them in that same iteration. TRAIL's refinements are not charged.
- **TRAIL's limited preemption.** The ordering decides it (``Trail.segment``, given the
  request's initial prediction as ``initial_pred``): a running request is preemptible only
  while c > 0 and generated <= c * its *initial* prediction, whatever refinement says later,
  and while its priority preemptions are below the cap (the ordering's ``max_preemptions`` or
  the stepper's ``max_preemptions``, the smaller; ``rank_rule.py``). So c = 0 never preempts,
  and with exact predictions c = 1 is unlimited SPRPT. The M/G/1 mode applies the same bound
  to attained service.

Cost. ``run_ordered`` runs the fast ordered replica (``ordered_replica.py``, identical records)
wherever it applies; this stepper is the definition and the fallback. It inherits the plain
loop's O(batch) work per iteration (it adds each decoder's
token one by one). The ordering adds, per request, O(log n) comparisons per scheduling event
(the queue is a sorted list) and no work
per token beyond one integer comparison against the next generated-token count at which its rank
changes (a refinement, the end of a rank piece such as the iteration TRAIL makes it
non-preemptible, or the iteration a rising rank crosses the best waiting rank). Ranks are
evaluated only at those events. The running requests are re-sorted (O(batch log batch)) only when
their set or relative order changes: admissions, completions, preemptions, swaps, rank events and
partial decodes (ranks that fall together keep their order); an ordering whose ranks can rise
(SPRPT with bounce) re-sorts them every iteration. A priority-preemption scan of the
running set (O(batch)) happens only after an event that can create a victim (a new best waiting
request, a rank that rises) and while the head is blocked; a scan that finds none clears the flag.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from servesim.core.errors import ConfigError
from servesim.core.registry import lookup
from servesim.engine.config import EngineConfig
from servesim.engine.ordered_replica import OrderedReplica, fast_supported
from servesim.engine.prediction_draws import Draws, chunkable, quantize
from servesim.engine.priority import PriorityPreemption
from servesim.engine.ranked import Columns, Ranked, piece_end
from servesim.engine.reference import ReferenceStepper, _Req, reference_only
from servesim.engine.state import EngineRun, Status
from servesim.engine.stop import StopFlag
from servesim.policies.ordering import (
    Ordering,
    SPRPTBounce,
    make_ordering,
)
from servesim.policies.schedule import SkipPredictors
from servesim.predictors import Predictor, make_predictor
from servesim.workload.requests import Requests
from servesim.workload.source import RequestSource

INF = math.inf
EXTRA_COLUMNS = ("predicted_tokens", "priority_preemptions", "priority_recomputed_tokens",
                 "cheap_bit", "expensive_prediction", "prediction_cost", "prediction_server_s")


class _Running(list):
    """The running list (admission order); any change marks the stepper's rank order stale,
    wherever in the plain loop it happens."""

    def __init__(self, owner: OrderedStepper) -> None:
        super().__init__()
        self.owner = owner

    def append(self, r: _Req) -> None:
        super().append(r)
        self.owner._dirty = True

    def remove(self, r: _Req) -> None:
        super().remove(r)
        self.owner._dirty = True


class OrderedStepper(Ranked, PriorityPreemption, ReferenceStepper):
    """The plain step loop with a waiting queue in rank order, running requests presented in
    rank order, and priority preemption at admission points (see the module docstring)."""

    def __init__(self, requests: Requests | RequestSource, config: EngineConfig, cost,
                 ordering: Ordering, predictor: Predictor | None = None, seed: int = 0,
                 record_batches: bool = False, max_preemptions: int | None = None,
                 bit_predictor: Predictor | None = None) -> None:
        super().__init__(requests, config, cost, record_batches)
        self._setup_ranks(ordering, predictor, bit_predictor, max_preemptions)
        self.rising = isinstance(self.rule.base, SPRPTBounce)
        self.running = _Running(self)
        self.draws = Draws(ordering, predictor, bit_predictor, seed)
        if not chunkable(predictor, bit_predictor):
            self._draw_whole()   # these predictions are drawn for every request at once
        self._dirty = True
        self._dec: list[_Req] = []
        self._pre: list[_Req] = []
        self._due: list[_Req] = []

    def _extend(self, chunk: Requests) -> None:
        """Hold the next chunk of requests, with their draws (``prediction_draws``)."""
        base = len(self.reqs)
        super()._extend(chunk)
        d = self.draws
        d.extend(chunk)
        for r, y, b, f in zip(self.reqs[base:], d.pred0[base:], d.bit[base:], d.full[base:],
                              strict=True):
            r.bit, r.full, r.pred0, r.pred = b, f, y, y
            r.considered, r.pcost, r.pserver_s = False, 0.0, 0.0
            r.prio = r.prio_recomputed = 0
            r.rkey = None
            r.seg, r.seg_age = None, 0
            r.refine_at = r.seg_end_at = r.cross_at = r.evt_at = INF
            r.boosted, r.waited_s, r.enq_t, r.visit = False, 0.0, r.arrival, 0

    # -- ranks --------------------------------------------------------------------------------
    @staticmethod
    def _rank(r: _Req) -> tuple[int, float]:
        return r.seg.rank_after(r.generated - r.seg_age)

    def _refresh(self, r: _Req) -> None:
        """Re-evaluate a running request's rank piece and its next event."""
        s = r.seg = self._segment(r, r.generated)
        r.seg_age = r.generated
        r.seg_end_at = piece_end(s, r.generated)
        r.evt_at = min(r.refine_at, r.seg_end_at, r.cross_at)

    def _enter(self, r: _Req) -> None:
        """``r`` starts running (admitted or swapped back in)."""
        r.refine_at = (INF if self.refiner is None or not r.full
                       else int(self.refiner.next_refine(r.generated)))
        r.cross_at = INF
        self._refresh(r)
        self._dirty = True
        self._pcheck = True   # a new head of the queue

    # -- the view: running requests in rank order ----------------------------------------------
    def _sync(self) -> None:
        if not self._dirty:
            return
        run = self.running
        if not self.by_admission:
            run = sorted(run, key=self._rank)
        self._dec = [r for r in run if r.need == 0]
        self._pre = [r for r in run if r.need > 0]
        self._dirty = False

    @property
    def decoders(self) -> list[_Req]:
        self._sync()
        return self._dec

    @property
    def prefilling(self) -> list[_Req]:
        self._sync()
        return self._pre

    # -- hooks into the plain loop ------------------------------------------------------------
    def start_decoding(self, i: int) -> None:
        super().start_decoding(i)
        self._enter(self.reqs[i])

    def _iterate(self, t: float) -> float | None:
        self._now = t
        if self.boosts:
            self._boost_due(t)
        return super()._iterate(t)

    def _arrive(self, r: _Req) -> None:
        r.enq_t = r.arrival
        super()._arrive(r)
        if r.status == Status.WAITING:
            self._charge(r)
        if r.status == Status.WAITING and self.queue.head() is r:
            self._pcheck = True

    def _prefill(self, r: _Req, x: int, t: float) -> None:
        admitted = r.status == Status.WAITING
        if admitted:
            r.waited_s += t - r.enq_t
        super()._prefill(r, x, t)
        self._dirty = True
        if admitted:
            self._enter(r)

    def _emit(self, r: _Req, end: float) -> None:
        # Every emitted token passes here (decode steps, and prefill completions under
        # first_token = "prefill"), so rank events count generated tokens either way.
        super()._emit(r, end)
        if r.status == Status.FINISHED:
            self._dirty = True
        elif r.generated >= r.evt_at:
            self._due.append(r)

    def _victim(self) -> _Req:
        if not self.order.preemptive:
            return super()._victim()
        order = sorted(self.running, key=self._rank)
        if len(order) > 1:
            order.pop(0)
        return order[-1]

    def _preempt(self, r: _Req) -> None:
        r.enq_t = self._now
        super()._preempt(r)
        self._dirty = True
        if r.status == Status.WAITING and self.queue.head() is r:
            self._pcheck = True

    def _swap_in(self) -> None:
        # Called once per iteration, after the plain loop zeroes ``swap_s``: the pending
        # prediction work lengthens this iteration and is cleared once it is recorded.
        self.swap_s += self._pending_s
        before = len(self.running)
        super()._swap_in()
        if not self.swapped.fifo:
            self._swap_in_parked()
        for r in self.running[before:]:
            self._enter(r)
        if not self.swapped.fifo:
            self._priority_preempt()

    def _record(self, t, dur, prefill, decode, chunks, demand) -> None:
        if not self._dirty and (decode < len(self._dec) or self.rising):
            self._dirty = True   # a partial decode (or rising ranks) can reorder decoders
        if self._due:
            self._run_events()
        self._pending_s = 0.0
        super()._record(t, dur, prefill, decode, chunks, demand)

    # -- priority preemption ----------------------------------------------------------------
    def _unblocking_victims(self, head: _Req, rank: tuple) -> list[_Req] | None:
        """The fewest eligible victims, worst rank first, whose preemption unblocks ``head``."""
        eligible = [r for r in self.running if r.seg.preemptible and self._rank(r) > rank]
        if not eligible:
            return None
        eligible.sort(key=self._rank, reverse=True)
        B = self.block_tokens
        freed_blocks = freed_need = 0
        for k, v in enumerate(eligible, 1):
            freed_blocks += v.blocks
            freed_need += v.need == 0 and v.computed % B == 0
            if not self._blocked(head, freed_blocks, freed_need, k):
                return eligible[:k]
        return None

    def _plan_crossings(self, rank: tuple) -> None:
        """For rising ranks, the generated count at which each crosses the head's rank plus the
        ordering's margin becomes an event."""
        if not self.rising:
            return
        tier, value = rank
        margin = self.order.crossing_margin
        for r in self.running:
            s = r.seg
            if s.slope > 0 and s.preemptible and s.tier == tier:
                gap = value + margin - self._rank(r)[1]
                r.cross_at = r.generated + max(1, math.floor(gap / s.slope) + 1)
                r.evt_at = min(r.evt_at, r.cross_at)

    # -- primitives of priority preemption (``priority.py``) ----------------------------------
    def _plain_preempt(self, r: _Req) -> None:
        ReferenceStepper._preempt(self, r)

    def _plain_swap_in(self) -> None:
        ReferenceStepper._swap_in(self)

    def _decode_blocks_now(self) -> int:
        return self.decode_need

    # -- rank events ------------------------------------------------------------------------
    def _run_events(self) -> None:
        refine = []
        for r in self._due:
            if r.status != Status.RUNNING:
                continue
            g = r.generated
            if g >= r.refine_at:
                refine.append(r)
            if g >= r.cross_at:
                r.cross_at = INF
                self._pcheck = True
            if g >= r.seg_end_at:
                self._pcheck = True
            self._refresh(r)
        self._due.clear()
        self._dirty = True
        if refine:
            self._refine(refine)

    def _refine(self, rows: list[_Req]) -> None:
        ids = np.array([r.id for r in rows], dtype=np.int64)
        gen = np.array([r.generated for r in rows], dtype=np.int64)
        remaining = self.refiner.refine(self.draws.trail_state, gen, rows=ids,
                                        rng=self.draws.stream)
        nxt = self.refiner.next_refine(gen)
        for r, left, at in zip(rows, quantize(remaining).tolist(), nxt.tolist(), strict=True):
            r.pred = r.generated + left
            r.refine_at = int(at)
            self._refresh(r)
        self._pcheck = True

    # -- output -------------------------------------------------------------------------------
    def _result(self, t: float, reason: str) -> EngineRun:
        run = super()._result(t, reason)
        reqs = self.reqs[:len(run.requests)]
        cols = Columns()
        cols.extend(len(reqs))
        for r in reqs:
            cols.store(r)
        cols.add_to(run.requests, [r.pred0 for r in reqs], [r.bit for r in reqs])
        return run

def run_ordered(requests: Requests, config: EngineConfig, cost, ordering: Ordering | str |
                Mapping[str, Any], predictor: Predictor | Mapping[str, Any] | None = None,
                seed: int = 0, *, until_s: float | None = None,
                max_in_system: int | None = None, record_batches: bool = False,
                max_preemptions: int | None = None,
                bit_predictor: Predictor | Mapping[str, Any] | None = None,
                stepper: str = "auto", check_invariants: bool = False,
                progress: Callable[[float], None] | None = None,
                stop: StopFlag | None = None) -> EngineRun:
    """Simulate one replica serving ``requests`` in the order ``ordering`` defines.

    ``ordering`` is an Ordering or its spec (``"sprpt"``, ``{kind = "trail", c = 0.8}``);
    ``predictor`` a Predictor, its spec (``{kind = "lognormal", sigma = 0.5}``) or None (orderings
    that do not read predictions). Predictions come from ``Streams(seed).get("predictor")``.
    ``max_preemptions`` caps priority preemptions per request for every preemptive ordering.
    ``bit_predictor`` (a ``one_bit`` predictor or its spec) gives SkipPredict its cheap bit, from
    ``Streams(seed).get("bit")``; ``predictor`` may also be a SkipPredictors pair.

    The records carry the engine's columns plus ``predicted_tokens`` (the initial prediction),
    ``priority_preemptions`` and ``priority_recomputed_tokens`` (the part of
    ``preemptions`` / ``recomputed_tokens`` due to priority rather than memory), ``cheap_bit``
    (NaN without a bit predictor), ``expensive_prediction`` (whether the request got and paid for
    the predictor's prediction), ``prediction_cost`` (external) and ``prediction_server_s``.

    ``stepper``: "fast" runs the fast ordered replica (``ordered_replica.py``; the orderings
    ``fast_supported`` accepts, on a batching system that plans a decode count rather than
    naming decoders, with first_token = "decode"), "reference" this module's stepper, and
    "auto" the fast one where it applies. Both give identical records. ``check_invariants``
    checks the fast replica's aggregates every iteration (slow; for tests). ``progress`` gets
    the fraction done now and then; ``stop`` is a flag a signal handler sets (``stop.py``).
    ``requests`` may be a ``RequestSource``, pulled a chunk at a time (predictions drawn whole
    pull it all first).

    Raises ConfigError for an unknown or unsupported ordering or predictor, a missing predictor,
    an unknown ``stepper``, or "fast" where it does not apply; Interrupted (a KeyboardInterrupt)
    carrying the records so far if the run is interrupted.
    """
    if not isinstance(ordering, Ordering):
        ordering = make_ordering(ordering, "schedule.order")
    if isinstance(predictor, SkipPredictors):
        predictor, bit_predictor = predictor
    if predictor is not None and not isinstance(predictor, Predictor):
        predictor = make_predictor(predictor, seed=seed, field="schedule.predictor")
    if bit_predictor is not None and not isinstance(bit_predictor, Predictor):
        bit_predictor = make_predictor(bit_predictor, seed=seed, field="schedule.bit_predictor")
    args = (requests, config, cost, ordering, predictor, seed, record_batches, max_preemptions,
            bit_predictor)
    if _use_fast(stepper, config, ordering, predictor, bit_predictor):
        engine = OrderedReplica(*args)
        engine.check = check_invariants
        return engine.run(until_s, progress, max_in_system, stop)
    return OrderedStepper(*args).run(until_s, progress, max_in_system, stop)


def _use_fast(stepper: str, config: EngineConfig, ordering: Ordering,
              predictor: Predictor | None, bit_predictor: Predictor | None) -> bool:
    choice = lookup({"auto": None, "fast": True, "reference": False}, stepper, "stepper")
    why = None
    if not fast_supported(ordering, predictor, bit_predictor):
        why = f"order {ordering.name!r} has ranks that rise with age"
    else:
        why = reference_only(config)
    if choice is True and why is not None:
        raise ConfigError("stepper", stepper, "\"reference\" or \"auto\" for this schedule: "
                          f"the fast ordered replica cannot run it ({why})")
    return why is None if choice is None else choice


def preemption_totals(run: EngineRun) -> dict[str, int]:
    """Preemptions and recomputed tokens over the run, in total and those due to priority."""
    df = run.requests
    out = {"preemptions": int(df["preemptions"].sum()),
           "recomputed_tokens": int(df["recomputed_tokens"].sum())}
    for col in ("priority_preemptions", "priority_recomputed_tokens"):
        if col in df:
            out[col] = int(df[col].sum())
    return out


def prediction_totals(run: EngineRun) -> dict[str, float]:
    """Expensive predictions made, external prediction cost and server-time prediction work."""
    df = run.requests
    if "expensive_prediction" not in df:
        return {}
    return {"expensive_predictions": int(df["expensive_prediction"].sum()),
            "prediction_cost": float(df["prediction_cost"].sum()),
            "prediction_server_s": float(df["prediction_server_s"].sum())}
