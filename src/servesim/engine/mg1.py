"""The M/G/1 mode: one server, one job at a time, service = size, any ordering.

Event-driven. The events are arrivals, completions, the end of a rank piece of the job in service
(``Segment.until_age``), the age at which its rising rank crosses the best waiting rank, the time a
waiting job's starvation boost comes due (``Aging``), the end of server-time prediction work and
the refinement of a prediction (below). Waiting jobs' ranks are frozen (their age does not
move), so they sit in a heap; only the job in service is re-ranked, and only at those events.
Each job costs O(its events * log n).

Prediction costs: an ``external`` cost is booked per prediction in ``prediction_cost`` and delays
nothing. A ``server_time`` cost is work for the server: on arrival a job first needs its
predictions computed (the cheap bit, then, if the ordering asks for it, the full prediction), each
a task served FCFS above every job; a non-preemptive ordering lets the job in service finish
first. The job joins the queue once its predictions are done.

Refinement (TRAIL's predictor, ``servesim.predictors.Trail``). When a preemptive ordering reads
predictions, a job's predicted remaining is re-estimated every K units of attained service (K =
``refine_every``, the analogue of K generated tokens: sizes are in the predictor's bin units),
as an event of the job in service, never per unit of service. The rank then reads attained +
predicted remaining as the predicted size, as the LLM engine does; TRAIL's preemption limit stays
on the initial prediction. Refinements draw from the predictor's own stream, after the initial
classification. A non-preemptive ordering never re-ranks a started job, so it is not refined.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from servesim.core.errors import ConfigError, SimulationError
from servesim.core.fields import integer, number
from servesim.core.rng import Streams
from servesim.policies.ordering import PREDICTION_TIER, Aging, Ordering, Segment
from servesim.predictors import Trail as TrailPredictor
from servesim.predictors import TrailState

INF = math.inf
_WAITING, _RUNNING, _DONE, _PENDING = 0, 1, 2, 3


@dataclass(frozen=True)
class MG1Result:
    """Per-job outcome of one M/G/1 run (arrays in job order, i.e. arrival order).

    Attributes:
        arrival_s, size_s, finish_s: as named; response_s = finish_s - arrival_s.
        served_s: service the job received (equals size_s: the work is conserved).
        preemptions: times each job was preempted.
        completions: times each job completed (1 each).
        prediction_cost: external prediction cost booked per job.
        prediction_work_s: total server time spent on predictions.
        busy_periods_s: (m, 2) array of [start, end) busy periods.
        events: events processed.
        refinements: times each job's prediction was refined during service.
    """

    arrival_s: np.ndarray
    size_s: np.ndarray
    finish_s: np.ndarray
    served_s: np.ndarray
    preemptions: np.ndarray
    completions: np.ndarray
    prediction_cost: np.ndarray
    prediction_work_s: float
    busy_periods_s: np.ndarray
    events: int
    refinements: np.ndarray

    @property
    def response_s(self) -> np.ndarray:
        return self.finish_s - self.arrival_s

    @property
    def total_preemptions(self) -> int:
        return int(self.preemptions.sum())


@dataclass
class Refinement:
    """What refining one run's predictions needs: the TRAIL predictor, the state its ``start``
    returned for these jobs (``prediction`` must be that state's initial predictions) and the
    generator refinements draw from."""

    predictor: TrailPredictor
    state: TrailState
    rng: np.random.Generator


def run_mg1(ordering: Ordering, arrival_s: Any, size_s: Any, prediction: Any = None,
            bit: Any = None, first_s: Any = None, prediction_cost: Any = None,
            bit_cost: Any = None, refinement: Refinement | None = None) -> MG1Result:
    """Serve the given jobs on one server in the order ``ordering`` defines.

    ``prediction`` (full predictions) is required when the ordering reads predictions, ``bit``
    (cheap bits, 1 = long) when it needs one. Costs are ``PredictionCost`` objects or None.
    ``refinement`` refines predictions during service (see the module docstring).

    Raises ConfigError if an input the ordering needs is missing or shapes disagree.
    """
    sim = _MG1(ordering, arrival_s, size_s, prediction, bit, first_s, prediction_cost, bit_cost,
               refinement)
    sim.run()
    return sim.result()


class _MG1:
    """The state of one run; ``run`` is the event loop."""

    def __init__(self, ordering, arrival_s, size_s, prediction, bit, first_s, pcost, bcost,
                 refinement=None):
        self.o = ordering
        arr = np.asarray(arrival_s, dtype=np.float64)
        n = arr.size
        if n and np.any(np.diff(arr) < 0):
            raise ConfigError("mg1.arrival_s", "unsorted", "non-decreasing arrival times")
        self.n = n
        self.arr = arr.tolist()
        self.size = _column(size_s, n, "mg1.size_s", required=True).tolist()
        if min(self.size, default=1.0) < 0:
            raise ConfigError("mg1.size_s", min(self.size), "sizes >= 0")
        self.pred = _column(prediction, n, "mg1.prediction",
                            required=ordering.uses == "prediction").tolist()
        self.bit = _column(bit, n, "mg1.bit", required=ordering.needs_bit).tolist()
        self.first = _column(first_s, n, "mg1.first_s", required=False).tolist()
        self.pred0 = list(self.pred)
        self._init_refinement(refinement)
        self.pcost, self.bcost = pcost, bcost
        self.margin = ordering.crossing_margin
        self.aging = ordering if isinstance(ordering, Aging) else None
        self.age = [0.0] * n
        self.state = [_PENDING] * n
        self.ver = [0] * n
        self.npre = [0] * n
        self.boosted = [False] * n
        self.finish = [math.nan] * n
        self.done_count = [0] * n
        self.ext_cost = [0.0] * n
        self.wseg: list[Segment | None] = [None] * n
        self.has_costs = pcost is not None or bcost is not None
        self.todo: dict[int, list[float]] = {}
        # Tasks are jobs 0..n-1 and, appended after them, server-time prediction tasks.
        self.task_job: list[int] = []
        self.task_created: list[float] = []  # a task's rank value is its creation time
        self.task_left: list[float] = []
        self.pred_work = 0.0
        self.heap: list[tuple[int, float, int, int]] = []
        self.boosts: list[tuple[float, int, int]] = []
        self.busy: list[list[float]] = []
        self.events = 0
        self.t = 0.0
        self.run_id = -1  # job index, or n + task index for a prediction task
        self.seg: Segment | None = None
        self.run_t = 0.0  # when the current piece started
        self.run_age = 0.0  # the running job's age then
        self.next_t = INF  # the running job's next event time
        self.next_kind = 0  # 0 completion, 1 end of piece, 2 crossing, 3 refinement
        self._seg_age = 0.0  # the running job's age when ``seg`` was computed

    def _init_refinement(self, refinement: Refinement | None) -> None:
        o, n = self.o, self.n
        self.ref = refinement if o.uses == "prediction" and o.preemptive else None
        self.refinements = [0] * n
        if self.ref is None:
            self.refine_at = [INF] * n
            return
        if self.ref.state.sizes.size != n:
            raise ConfigError("mg1.refinement", f"a state of {self.ref.state.sizes.size} jobs",
                              f"the state of these {n} jobs")
        k = self.ref.predictor.refine_every
        # Only jobs whose rank reads the full prediction (SkipPredict: bit-1 jobs) are refined.
        self.refine_at = [k if o.needs_prediction(b) else INF for b in self.bit]

    # -- waiting queue -----------------------------------------------------------------------

    def push(self, j: int) -> None:
        """Queue job j (or task j >= n) at its frozen rank; preempt the running one if it must."""
        if j >= self.n:
            key = (PREDICTION_TIER, self.task_created[j - self.n], j, 0)
        else:
            self.state[j] = _WAITING
            self.ver[j] += 1
            if self.boosted[j]:
                s = self.aging.boosted_segment(self.arr[j])
            else:
                s = self._segment(j, self.age[j])
                if self.aging is not None:
                    due = self.arr[j] + self.age[j] + self.aging.wait_s
                    heapq.heappush(self.boosts, (due, j, self.ver[j]))
            self.wseg[j] = s
            key = (s.tier, s.value, j, self.ver[j])
        heapq.heappush(self.heap, key)
        if self.run_id >= 0:
            self._check_preempt(key)

    def best(self) -> tuple[int, float, int, int] | None:
        """The lowest-ranked valid heap entry (stale entries of re-ranked jobs are dropped)."""
        h = self.heap
        while h:
            tier, value, j, v = h[0]
            if j >= self.n or (self.state[j] == _WAITING and self.ver[j] == v):
                return h[0]
            heapq.heappop(h)
        return None

    # -- the job in service ------------------------------------------------------------------

    def _segment(self, j: int, age: float) -> Segment:
        return self.o.segment(self.size[j], self.pred[j], age, self.arr[j], bit=self.bit[j],
                              first=self.first[j], preemptions=self.npre[j],
                              initial_pred=self.pred0[j])

    def start(self) -> None:
        """Start the best waiting task if the server is idle (the server is work-conserving)."""
        if self.run_id >= 0:
            return
        top = self.best()
        if top is None:
            return
        heapq.heappop(self.heap)
        j = top[2]
        if self.busy and self.busy[-1][1] >= self.t:
            self.busy[-1][1] = INF  # idle for no time: the busy period goes on
        else:
            self.busy.append([self.t, INF])
        self.run_id = j
        if j < self.n:
            self.state[j] = _RUNNING
            self.seg = self.wseg[j]  # computed when it was queued, at this same age
            self._seg_age = self.age[j]
        else:
            self.seg = Segment(PREDICTION_TIER, top[1], 0.0, INF, self.o.preemptive)
        self._plan(self.age[j] if j < self.n else 0.0)

    def _current_age(self) -> float:
        return self.run_age + (self.t - self.run_t)

    def _plan(self, age: float) -> None:
        """Compute the running task's next event from its age now."""
        j, s = self.run_id, self.seg
        self.run_t, self.run_age = self.t, age
        if j >= self.n:
            self.next_t, self.next_kind = self.t + self.task_left[j - self.n], 0
            return
        best_t, kind = self.t + (self.size[j] - age), 0
        if self.o.preemptive and s.until_age < INF and self.t + (s.until_age - age) < best_t:
            best_t, kind = self.t + (s.until_age - age), 1
        refine_t = self.t + max(self.refine_at[j] - age, 0.0)
        if refine_t < best_t:
            best_t, kind = refine_t, 3
        if self.o.preemptive and s.preemptible and s.slope > 0:
            top = self.best()
            if top is not None and top[0] == s.tier:
                gap = top[1] + self.margin - s.rank_after(age - self._seg_age)[1]
                cross_t = self.t + max(gap, 0.0) / s.slope
                if cross_t < best_t:
                    best_t, kind = cross_t, 2
        self.next_t, self.next_kind = best_t, kind

    def _running_key(self) -> tuple[int, float]:
        if self.run_id >= self.n:
            return self.seg.rank_after(0.0)   # a prediction task's rank does not move
        return self.seg.rank_after(self._current_age() - self._seg_age)

    def _check_preempt(self, key) -> None:
        if not (self.o.preemptive and self.seg.preemptible):
            return
        if (key[0], key[1]) < self._running_key():
            self.preempt()
            self.start()
        elif self.seg.slope > 0:
            self._plan(self._current_age())

    def preempt(self) -> None:
        j = self.run_id
        self._advance_running()
        self.run_id = -1
        if j >= self.n:
            heapq.heappush(self.heap, (PREDICTION_TIER, self.task_created[j - self.n], j, 0))
            return
        self.npre[j] += 1
        self.push(j)

    def _advance_running(self) -> None:
        """Book the service since the piece started."""
        j = self.run_id
        done = self.t - self.run_t
        if j >= self.n:
            self.task_left[j - self.n] -= done
            self.pred_work += done
        else:
            self.age[j] = self.run_age + done

    # -- events ------------------------------------------------------------------------------

    def arrive(self, j: int) -> None:
        if not self.has_costs:
            self.push(j)
            return
        costs = []
        for cost, used in ((self.bcost, self.o.needs_bit),
                           (self.pcost, self.o.needs_prediction(self.bit[j]))):
            if cost is None or not used:
                continue
            if cost.kind == "external":
                self.ext_cost[j] += cost.amount
            elif cost.amount > 0:
                costs.append(cost.amount)
        if costs:
            self.todo[j] = costs
            self._new_task(j)
        else:
            self.push(j)

    def _new_task(self, j: int) -> None:
        amount = self.todo[j].pop(0)
        self.task_job.append(j)
        self.task_created.append(self.t)
        self.task_left.append(amount)
        self.push(self.n + len(self.task_job) - 1)

    def running_event(self) -> None:
        j = self.run_id
        self._advance_running()
        if self.next_kind == 0:
            self.run_id = -1
            if j >= self.n:
                owner = self.task_job[j - self.n]
                self.pred_work += self.task_left[j - self.n]
                self.task_left[j - self.n] = 0.0
                if self.todo.get(owner):
                    self._new_task(owner)
                else:
                    self.todo.pop(owner, None)
                    self.push(owner)
            else:
                self.complete(j)
            return
        if self.next_kind == 1:
            # Snap to the piece's end: a rounded age just short of it would re-enter the piece.
            self._new_piece(j, self.seg.until_age)
            return
        if self.next_kind == 3:
            self.refine(j)
            return
        self.preempt()

    def _new_piece(self, j: int, at_age: float) -> None:
        """Re-rank the running job j at age ``at_age``; preempt it if a waiting one now ranks
        lower and it is preemptible."""
        self.age[j] = max(self.age[j], at_age)
        self.run_t, self.run_age = self.t, self.age[j]
        self.seg = self._segment(j, self.age[j])
        self._seg_age = self.age[j]
        top = self.best()
        if (self.o.preemptive and self.seg.preemptible and top is not None
                and (top[0], top[1]) < self.seg.rank_after(0.0)):
            self.preempt()
            return
        self._plan(self.age[j])

    def refine(self, j: int) -> None:
        """Re-estimate job j's remaining size at attained service ``refine_at[j]`` (a multiple
        of K); its predicted size becomes attained + predicted remaining."""
        at = self.refine_at[j]
        r = self.ref
        left = r.predictor.refine(r.state, at, rows=j, rng=r.rng)
        self.pred[j] = at + float(left[0])
        self.refine_at[j] = at + r.predictor.refine_every
        self.refinements[j] += 1
        self._new_piece(j, at)

    def complete(self, j: int) -> None:
        if self.state[j] == _DONE:
            raise SimulationError(f"job {j} completed twice")
        self.age[j] = self.size[j]
        self.state[j] = _DONE
        self.finish[j] = self.t
        self.done_count[j] += 1

    def boost(self, j: int, version: int) -> None:
        if self.state[j] != _WAITING or self.ver[j] != version or self.boosted[j]:
            return
        self.boosted[j] = True
        self.push(j)

    def run(self) -> None:
        i, n = 0, self.n
        while True:
            ta = self.arr[i] if i < n else INF
            tr = self.next_t if self.run_id >= 0 else INF
            tb = self.boosts[0][0] if self.boosts else INF
            if tr <= ta and tr <= tb:
                if tr == INF:
                    break
                self.t = tr
                self.running_event()
            elif tb <= ta:
                self.t = tb
                _, j, version = heapq.heappop(self.boosts)
                self.boost(j, version)
            else:
                self.t = ta
                self.arrive(i)
                i += 1
            self.events += 1
            if self.run_id < 0:
                self.start()
                if self.run_id < 0 and self.busy and self.busy[-1][1] == INF:
                    self.busy[-1][1] = self.t
        if any(s != _DONE for s in self.state):
            raise SimulationError("the event loop ended with unfinished jobs")

    def result(self) -> MG1Result:
        return MG1Result(
            arrival_s=np.asarray(self.arr), size_s=np.asarray(self.size),
            finish_s=np.asarray(self.finish), served_s=np.asarray(self.age),
            preemptions=np.asarray(self.npre, dtype=np.int64),
            completions=np.asarray(self.done_count, dtype=np.int64),
            prediction_cost=np.asarray(self.ext_cost), prediction_work_s=self.pred_work,
            busy_periods_s=np.asarray(self.busy, dtype=np.float64).reshape(-1, 2),
            events=self.events,
            refinements=np.asarray(self.refinements, dtype=np.int64),
        )


def _column(values: Any, n: int, field: str, *, required: bool) -> np.ndarray:
    if values is None:
        if required:
            raise ConfigError(field, None, f"{n} values (the ordering reads them)")
        return np.zeros(n)
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size != n:
        raise ConfigError(field, f"{arr.size} values", f"{n} values, one per job")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(field, "a non-finite value", "finite numbers")
    return arr


def simulate_mg1(ordering: Ordering, rate_per_s: float, n_jobs: int,
                 sizes: Callable[[np.random.Generator, int], np.ndarray], *,
                 predictor: Any = None, bit_predictor: Any = None, seed: int = 0,
                 refine: bool = True) -> MG1Result:
    """Poisson(rate) arrivals of ``n_jobs`` jobs with sizes from ``sizes(rng, n)``, predictions
    from ``predictor`` and cheap bits from ``bit_predictor`` (servesim.predictors objects).

    Every random input has its own named stream of ``seed`` (arrivals, sizes, predictor, bit), so
    runs are deterministic and policies compared on one seed see the same jobs. A TRAIL predictor
    is refined during service (``refine=False``: initial predictions only, the same ones); its
    refinements continue the predictor stream, so they shift no other input.
    """
    rate = number(rate_per_s, "mg1.rate_per_s", low=0, low_open=True)
    n = integer(n_jobs, "mg1.n_jobs", low=1)
    streams = Streams(seed)
    gaps = streams.get("arrivals").standard_exponential(n) / rate
    arrival = np.cumsum(gaps)
    size = np.asarray(sizes(streams.get("sizes"), n), dtype=np.float64)
    pred = bit = refinement = None
    pcost = bcost = None
    if isinstance(predictor, TrailPredictor) and refine:
        rng = streams.get("predictor")
        state = predictor.start(size, rng=rng)
        pred = predictor.prediction(state)
        refinement = Refinement(predictor, state, rng)
        pcost = predictor.cost
    elif predictor is not None:
        pred = predictor.predict(size, rng=streams.get("predictor"))
        pcost = predictor.cost
    if bit_predictor is not None:
        bit = bit_predictor.predict(size, rng=streams.get("bit"))
        bcost = bit_predictor.cost
    return run_mg1(ordering, arrival, size, pred, bit, None, pcost, bcost, refinement)
