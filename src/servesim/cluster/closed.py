"""A closed loop driving one engine: N clients, each sending its next request when its last one
finishes, after a think time (``servesim.workload.closed``).

The engine is the reference stepper fed by injection (``ClusterEngine``), stepped one iteration
at a time by a small event loop, with the same rules as the single-engine loop and the network
co-simulation: a request sent at or before the start of an iteration joins the engine before
that iteration is planned; a request finishes at the end of the iteration that emits its last
token, and its client sends the next one at that end plus its think time. A request the engine
can never serve is rejected when it arrives, and its client thinks and sends the next one.

Clients wait in a heap keyed by (send time, sequence): at t = 0 in client order, then in the
order their requests finished (within an iteration, the engine's decode order). Request ids
follow the order of sending, so the records are in arrival order as in an open-loop run, and
the engine's own record builder writes them (same columns). Memory: the records of the requests
sent, plus one heap entry per client.

Run length: ``n_requests`` requests sent in all (the run ends when they finish, or at
``until_s``), or every request sent before ``horizon_s`` (the run stops at ``until_s``, the
horizon). ``max_in_system`` and the stop flag end the run at an iteration boundary, as in
``engine/reference.py``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

from servesim.cluster.engine import ClusterEngine
from servesim.core.errors import ConfigError, SimulationError
from servesim.core.rng import Streams
from servesim.engine.config import EngineConfig
from servesim.engine.intake import guarded_run
from servesim.engine.reference import _Req
from servesim.engine.state import EngineRun
from servesim.engine.stop import StopFlag
from servesim.policies.batching import Policy, policy_class
from servesim.policies.ordering import FCFS
from servesim.workload.arrivals import check_amount
from servesim.workload.closed import ClosedLoop, closed_loop_of

__all__ = ["check_batching", "check_closed_loop", "run_closed_loop"]

_PROGRESS_EVERY = 1024   # iterations between progress calls


def check_batching(config: EngineConfig) -> None:
    """Refuse a batching system that reads every request before its first plan (WAIT's
    thresholds): a closed loop draws its requests as its clients send.

    Raises ConfigError on ``engine.batching``.
    """
    if policy_class(config.batching).prepare is not Policy.prepare:
        raise ConfigError("engine.batching", config.batching,
                          "a batching system that needs no request list ahead of the run "
                          "with a closed-loop workload (its arrivals are simulated)")


def check_closed_loop(scenario: Any) -> None:
    """Refuse what a closed-loop scenario cannot run yet: a ``[schedule]`` ordering or
    predictor, and WAIT batching (``check_batching``). Nothing for an open-loop scenario.

    Raises ConfigError on ``schedule.order``, ``schedule.predictor`` or ``engine.batching``.
    """
    if closed_loop_of(scenario) is None:
        return
    schedule = scenario.schedule
    if schedule.ordered:
        key = "order" if not isinstance(schedule.order, FCFS) else "predictor"
        raise ConfigError(f"schedule.{key}", schedule.source.get(key),
                          "nothing here: a closed-loop workload runs FCFS with no predictor "
                          "(orderings are not supported with closed loops yet)")
    check_batching(scenario.engine)


class _Sent(_Req):
    """A request of the loop: the engine's request state plus its client and the think time
    its client waits once it is done."""

    def __init__(self, i: int, arrival: float, prompt: int, output: int, client: int,
                 think_s: float) -> None:
        super().__init__(i, arrival, prompt, output)
        self.client = client
        self.think_s = think_s


class _Loop:
    """The clients' heap, the engine and the draws of one run (``run_closed_loop`` runs it)."""

    def __init__(self, loop: ClosedLoop, config: EngineConfig, cost: Any, streams: Streams,
                 n_requests: int | None, horizon_s: float | None) -> None:
        check_batching(config)
        self.engine = ClusterEngine("engine", config, cost)
        self.engine.class_names = loop.workload.class_names   # for the records' class column
        self.n, self.horizon = n_requests, horizon_s
        self.most = loop.max_requests   # a finite trace's rows (count mode checked them)
        field, value = ("run.requests", n_requests) if n_requests is not None \
            else ("run.horizon_s", horizon_s)
        self.lengths = loop.length_draws(streams, field, value)
        self.thinks = loop.think_draws(streams)
        self.heap = [(0.0, c, c) for c in range(loop.clients)]   # (send time, seq, client)
        self.seq = loop.clients
        self.sent = 0

    # -- clients ------------------------------------------------------------------------------
    def next_send(self) -> float | None:
        """When the next request will be sent; None if the loop sends no more."""
        if not self.heap or (self.n is not None and self.sent >= self.n) \
                or (self.most is not None and self.sent >= self.most):
            return None
        t = self.heap[0][0]
        if self.horizon is not None and t >= self.horizon:
            return None
        return t

    def send_through(self, t: float) -> None:
        """Send every request due at or before ``t`` into the engine."""
        while (due := self.next_send()) is not None and due <= t:
            _, _, client = heapq.heappop(self.heap)
            self._send(client, due)

    def _send(self, client: int, t: float) -> None:
        k = self.sent
        cid, prompt, output = self.lengths.get(k)
        r = _Sent(k, t, prompt, output, client, self.thinks.next())
        engine = self.engine
        engine.reqs.append(r)
        engine.class_ids.append(cid)
        self.sent += 1
        if not engine.inject(r):
            self.wake(client, t + r.think_s)   # refused at arrival: think, then send the next

    def wake(self, client: int, t: float) -> None:
        heapq.heappush(self.heap, (t, self.seq, client))
        self.seq += 1

    # -- the run ------------------------------------------------------------------------------
    def in_system(self) -> int:
        e = self.engine
        return len(e.running) + len(e.queue) + len(e.swapped)

    def fraction(self, t: float, until_s: float | None) -> float:
        done = self.sent / self.n if self.n else 0.0
        return max(done, 0.0 if until_s is None else min(t / until_s, 1.0))

    def loop(self, until_s: float | None, progress: Callable[[float], None] | None,
             max_in_system: int | None, flag: StopFlag) -> tuple[float, str]:
        t, reason, iters = 0.0, "drained", 0
        engine = self.engine
        while True:
            engine.now = t
            if flag.signum is not None:
                reason = "interrupted"
                break
            self.send_through(t)
            in_system = self.in_system()
            if max_in_system is not None and in_system > max_in_system:
                reason = "max_in_system"
                break
            due = self.next_send()
            if not in_system:
                if due is None:
                    break
                t = max(t, due)
                if until_s is not None and t >= until_s:
                    reason = "time"
                    break
                continue
            if until_s is not None and t >= until_s:
                reason = "time"
                break
            dur, done = engine.step(t)
            if dur is None:
                if due is None:
                    raise SimulationError("engine stalled with requests it can never serve")
                t = due
                continue
            t = t + dur
            for r in done:
                self.wake(r.client, t + r.think_s)
            iters += 1
            if progress is not None and iters % _PROGRESS_EVERY == 0:
                progress(self.fraction(t, until_s))
        return t, reason

    def result(self, t: float, reason: str) -> EngineRun:
        engine = self.engine
        engine.unarrived = self.next_send() is not None
        return engine._result(t, reason)


def run_closed_loop(loop: ClosedLoop, config: EngineConfig, cost: Any, seed: int, *,
                    n_requests: int | None = None, horizon_s: float | None = None,
                    until_s: float | None = None, max_in_system: int | None = None,
                    progress: Callable[[float], None] | None = None,
                    stop: StopFlag | None = None, check_invariants: bool = False) -> EngineRun:
    """Run ``loop`` on one engine; return its records (the reference stepper's columns).

    Exactly one of ``n_requests`` (requests sent in all) and ``horizon_s`` (send times before
    it) is given. ``until_s`` stops the run at an iteration boundary (no iteration starts at or
    after it); ``max_in_system`` stops it once more requests than that are in the engine.
    Streams of ``seed``: the workload's length streams and "think_s".

    Raises ConfigError for a bad amount, a batching system that needs the request list ahead
    (WAIT), or a finite trace that runs out; SimulationError if the engine breaks an
    invariant; Interrupted (a KeyboardInterrupt) with the records so far when ``stop`` is set
    by a signal or a KeyboardInterrupt is raised inside the run.
    """
    n_requests, horizon_s = check_amount(n_requests, horizon_s)
    if horizon_s is not None and until_s is None:
        until_s = horizon_s
    state = _Loop(loop, config, cost, Streams(seed), n_requests, horizon_s)
    state.engine.check = check_invariants
    return guarded_run(lambda flag: state.loop(until_s, progress, max_in_system, flag),
                       state.result, lambda: state.engine.now, stop)

