"""The emulator's engine: the reference stepper advanced in step with a clock.

Time mapping: ``wall = t0 + sim * time_scale``, so ``time_scale`` is wall seconds per simulated
second (2 plays the simulated engine at half speed, 0.1 ten times faster). A request's
simulated arrival is the simulated time at which it was submitted.

The loop follows the simulator's semantics (``cluster/sim.py``): an iteration starting at
simulated time ``s`` sees every request that arrived at or before ``s``; requests arriving
during an iteration join at the next boundary; an idle engine starts its next iteration at the
next arrival. The stepper applies an iteration when it plans it, so the loop plans, sleeps until
the iteration's end on the clock, then hands each request the tokens the iteration produced.
The simulated schedule never slips: when the event loop wakes late, the tokens go out late and
the delay is recorded (``lateness``), but the next iteration still starts at the simulated end
of this one, so a late wake-up is caught up, not accumulated.

A request whose client goes away is aborted, as vLLM aborts it: taken out of the engine at the
current iteration boundary (its KV blocks freed), so it no longer takes a share of the batch.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections import deque
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servesim.cluster.engine import ClusterEngine, Visit
from servesim.core.errors import ConfigError
from servesim.core.rng import Streams
from servesim.engine.config import WAIT_SYSTEMS
from servesim.engine.state import Status
from servesim.real.emulator_metrics import ITERATION_TOKEN_BUCKETS, Histogram

__all__ = ["ClockedEngine", "EmulatedRequest", "EmulatorEngine", "EngineStats", "LoopClock",
           "TokenEvent",
           "check_time_scale"]

_log = logging.getLogger("servesim.emulator")


def check_time_scale(time_scale: Any) -> float:
    """``time_scale`` as a float. Raises ConfigError unless it is a positive finite number."""
    if isinstance(time_scale, bool) or not isinstance(time_scale, int | float) or \
            not math.isfinite(time_scale) or time_scale <= 0:
        raise ConfigError("--time-scale", time_scale,
                          "a positive number (wall seconds per simulated second)")
    return float(time_scale)


class LoopClock:
    """Wall time from ``time.monotonic`` and sleeping until a wall time on the running loop."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, wall_s: float) -> None:
        delay_s = wall_s - self.now()
        if delay_s > 0:
            await asyncio.sleep(delay_s)


@dataclass(frozen=True)
class TokenEvent:
    """Tokens one iteration gave a request: how many, the iteration's simulated end, the wall
    time they were handed out, and whether the request is now finished."""

    tokens: int
    sim_s: float
    wall_s: float
    finished: bool


class EmulatedRequest:
    """One request in the emulated engine, with the queue its tokens are delivered to."""

    def __init__(self, rid: int, arrival_s: float, prompt_tokens: int,
                 output_tokens: int) -> None:
        self.id = rid
        self.arrival_s = arrival_s
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.visit = Visit(rid, arrival_s, prompt_tokens, output_tokens, task=None,
                           cls="default", engine="emulator")
        self.events: asyncio.Queue[TokenEvent] = asyncio.Queue()
        self.sent = 0            # tokens handed out so far
        self.preemptions = 0     # preemptions counted so far
        self.abandoned = False   # the client went away; the request was aborted

    @property
    def finished(self) -> bool:
        return self.sent >= self.output_tokens


@dataclass
class EngineStats:
    """Running totals for ``/metrics``."""

    iterations: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    finished: int = 0
    aborted: int = 0
    preemptions: int = 0
    late_s: float = 0.0        # lateness of the last iteration's hand-out
    late_max_s: float = 0.0
    late_sum_s: float = 0.0
    iteration_hist: Histogram = field(
        default_factory=lambda: Histogram(ITERATION_TOKEN_BUCKETS))   # tokens per iteration
    sim_s: float = 0.0         # simulated end of the last iteration
    write_late_max_s: float = 0.0   # the same, measured when a handler wrote its tokens
    write_late_sum_s: float = 0.0
    writes: int = 0


class EmulatorEngine(ClusterEngine):
    """The network node's stepper with one addition: aborting a request between iterations."""

    def abort(self, r: Visit) -> bool:
        """Take ``r`` out of the engine, freeing what it holds; False if it is not in it (it
        finished, or it never entered). Call between iterations only."""
        if r.status == Status.WAITING:
            self.queue.remove(r)
        elif r.status == Status.RUNNING:
            self.running.remove(r)
            self.free_blocks += r.blocks
        elif r.status == Status.SWAPPED:
            self.swapped.remove(r)
            self.host_free += r.blocks
        else:
            return False
        r.blocks = 0
        self._count(r, -1)
        r.status = Status.REJECTED   # terminal: no transition leads back into the engine
        return True


class ClockedEngine:
    """A ``ClusterEngine`` driven by a clock; ``run`` is the asyncio task that steps it.

    ``clock`` has ``now()`` (wall seconds) and ``async sleep_until(wall_s)`` (default: the
    event loop's, ``LoopClock``); tests pass a fake one. ``seed`` (default ``run.seed``) seeds
    the output lengths drawn for requests without ``max_tokens``.

    Raises ConfigError if ``time_scale`` is not a positive finite number, or for a WAIT
    system, whose plans need the whole workload before the run.
    """

    def __init__(self, scenario: Any, time_scale: float = 1.0, clock: Any = None,
                 seed: int | None = None) -> None:
        check_time_scale(time_scale)
        if scenario.engine.batching in WAIT_SYSTEMS:
            raise ConfigError("engine.batching", scenario.engine.batching,
                              "a batching system that plans from the requests it holds (the "
                              "WAIT systems read the whole workload before the run, which a "
                              "server does not know)")
        self.scenario = scenario
        # What the scenario asks for that the emulator leaves out, for the caller to say.
        self.notes = ["[schedule] is ignored: the emulator serves requests first come, first "
                      "served"] if scenario.schedule.ordered else []
        self.scale = float(time_scale)
        self.clock = clock if clock is not None else LoopClock()
        self.engine = EmulatorEngine("emulator", scenario.engine, scenario.cost)
        self.max_total_tokens, self.max_prompt_tokens = self.engine.limit
        self.t0 = self.clock.now()
        self.pending: deque[EmulatedRequest] = deque()   # arrived, not yet in the engine
        self.live: dict[int, EmulatedRequest] = {}        # in the engine, unfinished
        self.next_start_s = 0.0
        self._stalled = False   # the last step planned nothing although requests were in
        self.stats = EngineStats()
        self.failure: str | None = None
        self._ids = itertools.count()
        self._wake = asyncio.Event()
        streams = Streams(scenario.run.seed if seed is None else seed)
        self._class_rng = streams.get("emulator/classes")
        self._output_rng = {c.name: streams.get(f"emulator/output_tokens/{c.name}")
                            for c in scenario.workload.classes}

    # -- time ------------------------------------------------------------------------------
    def sim_now(self) -> float:
        return (self.clock.now() - self.t0) / self.scale

    def wall_of(self, sim_s: float) -> float:
        return self.t0 + sim_s * self.scale

    # -- requests --------------------------------------------------------------------------
    def draw_output_tokens(self) -> int:
        """An output length from the scenario's workload: a class by weight, then its length
        distribution (seeded streams "emulator/classes", "emulator/output_tokens/<class>")."""
        classes = self.scenario.workload.classes
        k = 0
        if len(classes) > 1:
            k = int(self._class_rng.choice(len(classes), p=self.scenario.workload.weights))
        cls = classes[k]
        return max(1, int(np.asarray(cls.output.sample(self._output_rng[cls.name], 1))[0]))

    def refusal(self, prompt_tokens: int, output_tokens: int) -> str | None:
        """Why the engine can never serve this request (None: it can)."""
        total = prompt_tokens + output_tokens
        if prompt_tokens > self.max_prompt_tokens:
            return (f"the prompt has {prompt_tokens} tokens; this engine prefills at most "
                    f"{self.max_prompt_tokens} tokens per prompt")
        if total > self.max_total_tokens:
            return (f"this model's maximum context length is {self.max_total_tokens} tokens; "
                    f"the request asks for {total} ({prompt_tokens} in the prompt, "
                    f"{output_tokens} in the completion)")
        return None

    def submit(self, prompt_tokens: int, output_tokens: int,
               arrival_s: float | None = None) -> EmulatedRequest:
        """Hand a request to the engine, arriving now (or at ``arrival_s``, simulated seconds,
        never before the last submitted arrival). Check ``refusal`` first."""
        now_s = self.sim_now() if arrival_s is None else arrival_s
        if self.pending:
            now_s = max(now_s, self.pending[-1].arrival_s)
        req = EmulatedRequest(next(self._ids), now_s, prompt_tokens, output_tokens)
        self.pending.append(req)
        self.stats.prompt_tokens += prompt_tokens
        self._wake.set()
        return req

    def abort(self, req: EmulatedRequest) -> None:
        """The client went away: take the request out of the engine (at the current iteration
        boundary: the engine task is asleep until the next one)."""
        if req.abandoned or req.finished:
            return
        req.abandoned = True
        self.stats.aborted += 1
        if req.id in self.live:
            del self.live[req.id]
            self.engine.abort(req.visit)
        else:
            with suppress(ValueError):
                self.pending.remove(req)

    def note_write(self, sim_s: float) -> None:
        """A handler wrote tokens of the iteration ending at ``sim_s``: record how late."""
        late_s = max(0.0, self.clock.now() - self.wall_of(sim_s))
        stats = self.stats
        stats.write_late_max_s = max(stats.write_late_max_s, late_s)
        stats.write_late_sum_s += late_s
        stats.writes += 1

    # -- the view /metrics reads -----------------------------------------------------------
    @property
    def n_running(self) -> int:
        return len(self.engine.running) + self.engine.finishing

    @property
    def n_waiting(self) -> int:
        return len(self.engine.queue) + len(self.engine.swapped) + len(self.pending)

    @property
    def kv_usage(self) -> float:
        blocks = self.engine.cfg.kv.blocks
        return self.engine.kv_used_blocks / blocks if blocks else 0.0

    # -- the loop --------------------------------------------------------------------------
    async def run(self) -> None:
        """Step the engine for ever (cancel the task to stop it). If the engine breaks, the
        error is logged and kept in ``failure``, and every request in it ends unfinished."""
        try:
            await self._run()
        except Exception as e:
            self.failure = f"the emulated engine failed: {type(e).__name__}: {e}"
            _log.exception("the emulated engine failed")
            self.end_all()

    def end_all(self) -> None:
        """End every request in the engine unfinished (shutdown or failure)."""
        now = self.clock.now()
        for req in [*self.pending, *self.live.values()]:
            req.events.put_nowait(TokenEvent(0, self.stats.sim_s, now, True))
        self.pending.clear()
        self.live.clear()

    async def _run(self) -> None:
        while True:
            start = self._next_start()
            if start is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._admit(start)
            dur, _done = self.engine.step(start)
            if dur is None:   # nothing can run until something arrives
                self.next_start_s = start
                self._stalled = True
                if not self.pending:
                    self._wake.clear()
                    await self._wake.wait()
                continue
            self._stalled = False
            end = start + dur
            produced = self._produced()
            self._note_iteration()
            await self.clock.sleep_until(self.wall_of(end))
            self._deliver(produced, end)
            self.engine.finished_now()
            self.next_start_s = end

    def _busy(self) -> bool:
        e = self.engine
        return bool(e.running or e.queue or e.swapped)

    def _next_start(self) -> float | None:
        """The simulated start of the next iteration (None: nothing to run). An engine that
        could plan nothing at its last start waits for the next arrival, as an idle one."""
        if self._busy() and not self._stalled:
            return self.next_start_s
        if self.pending:
            return max(self.next_start_s, self.pending[0].arrival_s)
        return None

    def _admit(self, start_s: float) -> None:
        while self.pending and self.pending[0].arrival_s <= start_s:
            req = self.pending.popleft()
            if self.engine.inject(req.visit):
                self.live[req.id] = req
            else:   # refused here only if the caller skipped ``refusal``
                req.events.put_nowait(TokenEvent(0, start_s, self.clock.now(), True))

    def _produced(self) -> list[tuple[EmulatedRequest, int]]:
        """The tokens each live request got from the iteration just applied."""
        out = []
        for req in self.live.values():
            v = req.visit
            if v.preemptions != req.preemptions:
                self.stats.preemptions += v.preemptions - req.preemptions
                req.preemptions = v.preemptions
            new = v.generated - req.sent
            if new > 0:
                out.append((req, new))
        return out

    def _note_iteration(self) -> None:
        rows = self.engine.rows
        stats = self.stats
        stats.iterations += 1
        if rows["prefill_tokens"]:
            stats.iteration_hist.observe(int(rows["prefill_tokens"][-1])
                                         + int(rows["decode_tokens"][-1]))
        for values in rows.values():   # a long-lived server keeps no iteration table
            values.clear()

    def _deliver(self, produced: list[tuple[EmulatedRequest, int]], end_s: float) -> None:
        wall_s = self.clock.now()
        late_s = max(0.0, wall_s - self.wall_of(end_s))
        stats = self.stats
        stats.late_s = late_s
        stats.late_max_s = max(stats.late_max_s, late_s)
        stats.late_sum_s += late_s
        stats.sim_s = end_s
        for req, new in produced:
            req.sent += new
            stats.generation_tokens += new
            done = req.sent >= req.output_tokens or req.visit.status == Status.FINISHED
            if req.abandoned:   # aborted while this iteration ran
                continue
            if done:
                self.live.pop(req.id, None)
                stats.finished += 1
            req.events.put_nowait(TokenEvent(new, end_s, wall_s, done))
