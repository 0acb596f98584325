"""Co-simulation of a network of engines driven by one event heap.

Events are (time, order, seq, kind, payload). Arrivals of tasks and visits have order 0 and an
engine's "plan an iteration" event has order 1, so when an engine plans the iteration that
starts at s it has already been handed every visit arriving at or before s. An iteration's
completions are known when it is planned; the visits they spawn are pushed as arrivals at its
end, and routing to a replica happens when those arrivals are popped.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from servesim.cluster.engine import ClusterEngine, Visit
from servesim.cluster.model import Network
from servesim.cluster.routers import Router, make_router
from servesim.cluster.scenario import renamed
from servesim.core.errors import ConfigError
from servesim.core.fields import integer, number
from servesim.core.rng import Streams
from servesim.engine.state import STATUS_NAMES, Status, iteration_frame

__all__ = ["NetworkRun", "simulate_network"]

_ARRIVE, _VISIT, _DONE, _PLAN = 0, 1, 2, 3
_DRAW_BLOCK = 1024
_PROGRESS_EVERY = 4096   # events between progress calls: rare enough to cost nothing


@dataclass
class NetworkRun:
    """What a network did.

    Attributes:
        visits: one row per hop (task, workflow, class, engine replica, arrival, admission,
            first token, finish, prompt/output/generated tokens, status, preemptions).
        tasks: one row per task (workflow, arrival_s, finish_s, e2e_s, status: finished,
            failed (a visit was rejected) or unfinished, visits).
        iterations: per engine replica, its iteration table (``ITERATION_COLUMNS``): the
            series of requests in system (waiting + running) and backlog tokens.
        end_s: the clock when the run stopped.
        stop_reason: "drained" (nothing left), "time" (the horizon) or "max_in_system" (more
            requests at the engines than the cap: an overloaded run, stopped bounded).
        horizon_s, warmup_s, seed: how it was run.
        pools: replica name -> engine (pool) name.
    """

    visits: pd.DataFrame
    tasks: pd.DataFrame
    iterations: dict[str, pd.DataFrame]
    end_s: float
    stop_reason: str
    horizon_s: float
    warmup_s: float
    seed: int
    pools: dict[str, str]

    @property
    def stopped_by_cap(self) -> bool:
        return self.stop_reason == "max_in_system"


class _Draws:
    """Token lengths drawn in blocks from one stream (same values as one-at-a-time order)."""

    def __init__(self, dist: Any, rng: np.random.Generator) -> None:
        self.dist, self.rng = dist, rng
        self.buf: list[int] = []
        self.i = 0

    def next(self) -> int:
        if self.i >= len(self.buf):
            self.buf = [int(x) for x in self.dist.sample(self.rng, _DRAW_BLOCK)]
            self.i = 0
        self.i += 1
        return self.buf[self.i - 1]


class _Task:
    __slots__ = ("id", "workflow", "arrival", "finish", "outstanding", "failed", "joins",
                 "visits")

    def __init__(self, i: int, workflow: str, arrival: float) -> None:
        self.id, self.workflow, self.arrival = i, workflow, arrival
        self.finish = math.nan
        self.outstanding = 0
        self.failed = False
        self.joins: dict[str, list[int]] = {}
        self.visits = 0


class _Sim:
    def __init__(self, net: Network, seed: int, horizon_s: float,
                 max_in_system: int | None, drain: bool) -> None:
        self.net = net
        self.horizon = horizon_s
        self.until = math.inf if drain else horizon_s
        self.cap = max_in_system
        streams = Streams(seed)
        self.heap: list = []
        self.seq = 0
        self.engines: list[ClusterEngine] = []
        self.routers: dict[str, Router] = {}
        self.pools: dict[str, str] = {}
        for e in net.engines.values():
            try:
                reps = [ClusterEngine(n, e.config, e.cost, e.priority,
                                      field=f"network.engines.{e.name}.priority")
                        for n in e.replica_names]
            except ConfigError as err:
                # A policy may refuse its config only when built.
                raise renamed(err, "engine", f"network.engines.{e.name}") from None
            for r in reps:
                r.index = len(self.engines)
                self.engines.append(r)
                self.pools[r.name] = e.name
            self.routers[e.name] = make_router(e.router, reps, e.power_d,
                                               streams.get(f"router/{e.name}"))
        self.prompt = {k: _Draws(c.prompt, streams.get(f"prompt_tokens/{k}"))
                       for k, c in net.classes.items()}
        self.output = {k: _Draws(c.output, streams.get(f"output_tokens/{k}"))
                       for k, c in net.classes.items()}
        self.route_rng = {k: streams.get(f"routing/{k}") for k in net.classes}
        self.arrivals = {w: wf.arrival.sample(streams.get(f"arrivals/{w}"), horizon_s=horizon_s)
                         for w, wf in net.workflows.items()}
        self.tasks: list[_Task] = []
        self.visits: list[Visit] = []
        self.in_system = 0

    def push(self, t: float, kind: int, payload: Any) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, 1 if kind == _PLAN else 0, self.seq, kind, payload))

    def run(self, progress: Callable[[float], None] | None = None) -> tuple[float, str]:
        for w, times in self.arrivals.items():
            if len(times):
                self.push(float(times[0]), _ARRIVE, (w, 0))
        now, reason = 0.0, "drained"
        events = 0
        while self.heap:
            t = self.heap[0][0]
            events += 1
            if progress is not None and events % _PROGRESS_EVERY == 0:
                progress(min(t / self.horizon, 1.0))
            if t >= self.until:
                now, reason = self.until, "time"
                break
            _, _, _, kind, payload = heapq.heappop(self.heap)
            now = t
            if kind == _ARRIVE:
                self._task_arrives(*payload, t)
            elif kind == _VISIT:
                self._visit(*payload, t)
            elif kind == _DONE:
                index, done = payload
                self.engines[index].finished_now()
                for v in done:
                    self.in_system -= 1
                    self._finished(v, t)
            else:
                self._plan(payload, t)
            if self.cap is not None and self.in_system > self.cap:
                reason = "max_in_system"
                break
        return now, reason

    def _task_arrives(self, workflow: str, i: int, t: float) -> None:
        times = self.arrivals[workflow]
        if i + 1 < len(times):
            self.push(float(times[i + 1]), _ARRIVE, (workflow, i + 1))
        task = _Task(len(self.tasks), workflow, t)
        self.tasks.append(task)
        for k in self.net.workflows[workflow].entry:
            self._spawn(task, k, t, 0)

    def _spawn(self, task: _Task, k: str, t: float, carried: int) -> None:
        task.outstanding += 1
        self.push(t, _VISIT, (task, k, carried))

    def _visit(self, task: _Task, k: str, carried: int, t: float) -> None:
        cls = self.net.classes[k]
        engine = self.routers[cls.engine].pick()
        v = Visit(len(self.visits), t, self.prompt[k].next() + carried, self.output[k].next(),
                  task=task, cls=k, engine=engine.name)
        self.visits.append(v)
        task.visits += 1
        if not engine.inject(v):
            task.failed = True
            self._finished(v, t)
            return
        self.in_system += 1
        if not engine.scheduled:
            engine.scheduled = True
            self.push(t, _PLAN, engine.index)

    def _plan(self, index: int, t: float) -> None:
        engine = self.engines[index]
        engine.scheduled = False
        dur, done = engine.step(t)
        if dur is None:
            return
        end = t + dur
        engine.scheduled = True
        self.push(end, _PLAN, index)
        if done:
            self.push(end, _DONE, (index, done))

    def _finished(self, v: Visit, end: float) -> None:
        task = v.task
        task.outstanding -= 1
        if v.status == Status.FINISHED:
            self._successors(task, self.net.classes[v.cls], v, end)
        if task.outstanding == 0:
            task.finish = end

    def _successors(self, task: _Task, cls: Any, v: Visit, end: float) -> None:
        carry = v.output if cls.carry_output else 0
        for n in cls.next:
            if not self.net.is_join(n):
                self._spawn(task, n, end, carry)
                continue
            got = task.joins.setdefault(n, [0, 0])
            got[0] += 1
            got[1] += carry
            if got[0] == self.net.parents[n]:
                del task.joins[n]
                self._spawn(task, n, end, got[1])
        if cls.routing:
            u = self.route_rng[cls.name].random()
            for n, p in cls.routing:
                if u < p:
                    self._spawn(task, n, end, carry)
                    break
                u -= p

    # -- results ------------------------------------------------------------------------------

    def visit_frame(self) -> pd.DataFrame:
        vs = self.visits
        return pd.DataFrame({
            "visit": np.arange(len(vs), dtype=np.int64),
            "task": np.array([v.task.id for v in vs], dtype=np.int64),
            "workflow": [v.task.workflow for v in vs],
            "class": [v.cls for v in vs],
            "engine": [v.engine for v in vs],
            "arrival_s": np.array([v.arrival for v in vs], dtype=float),
            "admitted_s": np.array([v.admitted_s for v in vs], dtype=float),
            "first_token_s": np.array([v.token_times[0] if v.token_times else math.nan
                                       for v in vs], dtype=float),
            "finish_s": np.array([v.finish_s for v in vs], dtype=float),
            "prompt_tokens": np.array([v.prompt for v in vs], dtype=np.int64),
            "output_tokens": np.array([v.output for v in vs], dtype=np.int64),
            "generated_tokens": np.array([v.generated for v in vs], dtype=np.int64),
            "status": [STATUS_NAMES[v.status] for v in vs],
            "preemptions": np.array([v.preemptions for v in vs], dtype=np.int64),
        })

    def task_frame(self) -> pd.DataFrame:
        ts = self.tasks
        arrival = np.array([t.arrival for t in ts], dtype=float)
        finish = np.array([t.finish for t in ts], dtype=float)
        status = ["unfinished" if t.outstanding else "failed" if t.failed else "finished"
                  for t in ts]
        return pd.DataFrame({
            "task": np.arange(len(ts), dtype=np.int64),
            "workflow": [t.workflow for t in ts],
            "arrival_s": arrival,
            "finish_s": np.where([s == "unfinished" for s in status], math.nan, finish),
            "e2e_s": finish - arrival,
            "status": status,
            "visits": np.array([t.visits for t in ts], dtype=np.int64),
        })


def simulate_network(net: Network, seed: int = 0, *, horizon_s: float, warmup_s: float = 0.0,
                     max_in_system: int | None = None, drain: bool = False,
                     progress: Callable[[float], None] | None = None) -> NetworkRun:
    """Run ``net`` with tasks arriving before ``horizon_s``; stop at the horizon (with
    ``drain``, only once every task has finished), when the network drains, or as soon as
    more than ``max_in_system`` requests are at the engines.

    Streams: "arrivals/<workflow>", "prompt_tokens/<class>", "output_tokens/<class>",
    "routing/<class>", "router/<engine>". ``progress`` gets the simulated fraction of the
    horizon now and then. Raises ConfigError for a bad seed, horizon, warm-up or cap.
    """
    horizon_s = number(horizon_s, "run.horizon_s", low=0, low_open=True)
    warmup_s = number(warmup_s, "run.warmup_s", low=0)
    if warmup_s >= horizon_s:
        raise ConfigError("run.warmup_s", warmup_s, f"a warm-up shorter than the run "
                                                    f"({horizon_s:g} s)")
    if max_in_system is not None:
        max_in_system = integer(max_in_system, "run.max_in_system", low=1)
    sim = _Sim(net, seed, horizon_s, max_in_system, drain)
    end, reason = sim.run(progress)
    tasks = sim.task_frame()
    tasks.loc[tasks["status"] == "unfinished", "e2e_s"] = math.nan
    return NetworkRun(visits=sim.visit_frame(), tasks=tasks,
                      iterations={e.name: iteration_frame(e.rows) for e in sim.engines},
                      end_s=end, stop_reason=reason, horizon_s=horizon_s, warmup_s=warmup_s,
                      seed=seed, pools=dict(sim.pools))
