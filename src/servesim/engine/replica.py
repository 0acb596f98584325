"""The fast replica: cost per request is O(its scheduling events), not O(its tokens).

How (see docs/architecture.md):

- A global decode tick counts iterations in which decoders take a token. A decoding request
  stores ``base`` so that its generated tokens are ``tick - base``; it is not touched while it
  decodes. Completions sit in a heap keyed by finishing tick.
- A partial decode lets the youngest decoders sit out. They are parked behind a frontier, in
  admission order, and share one lazy shift of their bases, so a tick in which the parked
  suffix sits out costs O(1); only decoders that cross the frontier are touched.
- Aggregates are updated incrementally: decoders, their summed context, and decoders per
  residue of context modulo the block size, which gives the blocks the next decode tick needs in
  O(1).
- A decode-only stretch with no arrival, completion, memory or stop event inside advances in one
  vectorised step.
- Inter-token gaps come from the per-tick end times, offline, with a sparse table.

``reference.py`` is the plain loop; tests require identical request records from both.
"""

from __future__ import annotations

import heapq
import itertools
import math
from array import array
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from servesim.core.errors import ConfigError, SimulationError
from servesim.engine.config import EngineConfig
from servesim.engine.intake import Intake
from servesim.engine.reference import ReferenceStepper, reference_only
from servesim.engine.state import (
    ITERATION_COLUMNS,
    STATUS_NAMES,
    EngineRun,
    Status,
    check_transition,
    iteration_frame,
)
from servesim.engine.stop import StopFlag
from servesim.engine.token_times import token_times
from servesim.policies.batching import make_policy
from servesim.workload.requests import Requests
from servesim.workload.source import RequestSource

_PROGRESS_EVERY = 4096


class _R:
    """Mutable state of a request in the system. While decoding, ``computed``, ``generated``
    and ``blocks`` are stale: the truth is derived from the tick and ``base``. While parked
    (``park >= 0``), ``base`` and ``key`` are stale too, by the ticks the tail sat out."""

    __slots__ = ("id", "prompt", "output", "status", "computed", "generated", "blocks", "need",
                 "base", "key", "park", "seg_start", "admitted_s", "preemptions", "recomputed",
                 "swapped_bytes")

    def __init__(self, i: int, prompt: int, output: int) -> None:
        self.id = i
        self.prompt = prompt
        self.output = output
        self.status = Status.WAITING
        self.computed = 0
        self.generated = 0
        self.blocks = 0
        self.need = prompt
        self.base = 0
        self.key = 0
        self.park = -1          # the parked shift when parked (see Replica.tail), else -1
        self.seg_start = 0
        self.admitted_s = float("nan")
        self.preemptions = 0
        self.recomputed = 0
        self.swapped_bytes = 0


class Replica(Intake):
    """One engine replica; it is also the read-only view its policy plans from."""

    request_type = _R

    def __init__(self, requests: Requests | RequestSource, config: EngineConfig, cost,
                 record_batches: bool = False) -> None:
        kv = config.kv
        why = reference_only(config, fast_prefill=True)
        if why is not None:
            raise ConfigError("engine.batching", config.batching, "a configuration the fast "
                              f"replica runs (not with {why}; use run_engine, which runs it "
                              "on the reference stepper)")
        self.cfg, self.cost, self.policy = config, cost, make_policy(config.batching)
        self._setup_intake(requests)
        self.budget = config.token_budget
        self.max_batch = config.max_batch_size
        self.chunk_limit = config.chunk_limit
        self.block_tokens = kv.block_tokens
        self.watermark_blocks = kv.watermark_blocks
        self.free_blocks = kv.blocks
        self.host_free = kv.host_blocks
        self.limit = config.length_limits
        self.capacity = kv.blocks
        # Per-request state of the requests pulled so far, grown a chunk at a time (``_extend``).
        # Plain lists and arrays: indexing them is several times cheaper than numpy scalar access.
        self.arrivals: list[float] = []
        self.prompts: list[int] = []
        self.outputs: list[int] = []
        self.status = bytearray()                  # Status per request; 0 is PENDING
        self.out = {k: array("d") for k in ("admitted_s", "finish_s")}
        self.counts = {k: array("q") for k in
                       ("generated", "preemptions", "recomputed", "swapped_bytes")}
        self.queue: deque[_R] = deque()
        self.waiting: deque[_R] | tuple = self.queue
        self.swapped: deque[_R] = deque()
        self.running: dict[int, _R] = {}
        self._prefilling: dict[int, _R] = {}
        self.prefilling = self._prefilling.values()   # live view, in admission order
        self.n_decoders = 0
        self.n_running = 0
        self.decode_need = 0
        self.cnt = [0] * kv.block_tokens          # decoders per context residue class
        self.ctx = 0                               # summed context of decoders, tokens
        # The frontier. The youngest decoders, those sitting out partial decodes, are parked in
        # ``tail`` (admission order); ``head`` holds the others in admission order, and exists
        # only while the tail is not empty. ``cnt`` and ``ctx`` cover the head. A parked
        # decoder's true base is ``base + sigma - park``: ``sigma`` counts the ticks the tail
        # sat out. ``tcnt`` counts parked decoders by ``(key + park) % block_tokens`` and
        # ``tctx`` sums ``prompt - base + park``; both are invariant while the tail sits out.
        self.head: dict[int, _R] | None = None
        self.tail: deque[_R] = deque()
        self.sigma = 0
        self.tcnt = [0] * kv.block_tokens
        self.tctx = 0
        self.tick = 0
        self.tick_end = array("d", [0.0])          # end time of each decode tick, seconds
        self.heap: list[tuple[int, int, _R]] = []   # (finishing tick, sequence, request)
        self.seq = itertools.count()
        self.segs = array("q")                     # flat (request, start tick, tokens) triples
        self.pf_need = 0                           # prefill tokens owed by requests in system
        self.n_ready = 0                           # requests in system with no prefill owed
        self.dec_left = 0                          # output tokens owed by requests in system
        self.in_system = 0
        self.swap_s = 0.0
        self.rows: list[tuple] = []
        self.row_blocks: list[np.ndarray] = []
        self.batches: list | None = [] if record_batches else None
        self.stretch = not record_batches
        self.check = False
        self.started: set[int] = set()              # requests put in by start_decoding
        # Under first_token = "prefill" a decoder's last token is not in its KV yet: its context
        # is prompt - lag + generated. Such a token is emitted when a prefill completes, at an
        # iteration end that need not be a decode tick: ``points`` holds (request, time).
        self.lag = int(config.first_token == "prefill")
        self.points: list[tuple[int, float]] = []
        self.preempted = False                     # a preemption happened this iteration

    # -- setup ---------------------------------------------------------------------------
    def _extend(self, chunk: Requests) -> None:
        """Grow the per-request state by the next chunk of requests (none arrived yet)."""
        m = len(chunk)
        self.arrivals.extend(chunk.arrival_s.tolist())
        self.prompts.extend(chunk.prompt_tokens.tolist())
        self.outputs.extend(chunk.output_tokens.tolist())
        self.status.extend(bytes(m))
        for values in self.out.values():
            values.extend(array("d", [math.nan]) * m)
        for values in self.counts.values():
            values.extend(array("q", bytes(8 * m)))

    def start_decoding(self, i: int) -> None:
        """Put request ``i`` in the engine at its arrival, prefill already done (for tests)."""
        if self.lag:
            raise ConfigError("start_decoding", i, "first_token = \"decode\" on the fast "
                              "replica (run_engine runs the reference stepper)")
        self._pull_through(i)
        self.started.add(i)
        r = self._arrive(i)
        if r is None:
            raise ConfigError("start_decoding", i, "a request the engine admits (this one is "
                              "longer than the engine's length limits)")
        self.queue.remove(r)
        self._admit(r, self.arrivals[i])
        self._advance_prefill(r, r.need)

    def _next_pending(self, i: int) -> int:
        """The first request from ``i`` on that has not entered (tests start some early)."""
        while i in self.started:
            i += 1
        return i

    # -- the loop --------------------------------------------------------------------------
    def _loop(self, until_s: float | None, progress: Callable[[float], None] | None,
              max_in_system: int | None, flag: StopFlag) -> tuple[float, str]:
        """The run (``Intake.run`` guards it): returns the end time and the stop reason."""
        arrivals = self.arrivals
        more = self._pull() if self.n == 0 else True
        n, t, iters = self.n, 0.0, 0
        nxt = self._next_pending(0)
        stop = float("inf") if until_s is None else until_s
        cap = float("inf") if max_in_system is None else max_in_system
        reason = "drained"
        while True:
            self.now = t
            if flag.signum is not None:
                reason = "interrupted"
                break
            while True:
                while nxt < n and arrivals[nxt] <= t:
                    self._arrive(nxt)
                    nxt = self._next_pending(nxt + 1)
                if nxt < n or not more:
                    break
                more = self._pull()   # every request held has arrived: draw the next chunk
                n = self.n
            if self.in_system > cap:
                reason = "max_in_system"
                break
            if not self.in_system:
                if nxt >= n:
                    break
                t = max(t, arrivals[nxt])
                if t >= stop:
                    reason = "time"
                    break
                continue
            if t >= stop:
                reason = "time"
                break
            next_event = min(arrivals[nxt] if nxt < n else float("inf"), stop)
            t_new = self._iterate(t, next_event)
            if t_new is None:
                if nxt >= n:
                    raise SimulationError("engine stalled with requests it can never serve")
                t = arrivals[nxt]
                continue
            t = t_new
            iters += 1
            if self.check:
                self.check_invariants()
            if iters % _PROGRESS_EVERY == 0:
                self._flush_rows()   # numpy rows take a tenth of the memory of tuples
                if progress is not None:
                    progress(max(self._fraction(nxt),
                                 0.0 if until_s is None else min(t / until_s, 1.0)))
        self.unarrived = nxt < n or more
        return t, reason

    def _arrive(self, i: int) -> _R:
        p, d = self.prompts[i], self.outputs[i]
        if p + d > self.limit[0] or p > self.limit[1]:
            self.status[i] = Status.REJECTED
            return None
        r = self.request_type(i, p, d)
        self.status[i] = Status.WAITING
        self.queue.append(r)
        self.pf_need += p
        self.dec_left += d
        self.in_system += 1
        return r

    def _iterate(self, t: float, next_event: float) -> float | None:
        """Run one iteration (or a decode-only stretch) from time ``t``; return the new time,
        or None if there is nothing to do until the next arrival."""
        demand = self.pf_need + self.n_ready
        self.swap_s = 0.0
        self.preempted = False
        self.waiting = self.queue
        self._before_plan()
        if self.swapped:
            # As vLLM's default scheduler: nothing new is admitted while a request is swapped
            # out, or fresh prompts would take every freed block and starve it.
            self.waiting = ()
        plan, need = self._plan_with_preemption()
        if plan is None:
            return None
        m = plan.decode
        if (self.stretch and m and m == self.n_decoders and not plan.chunks
                and not self.swap_s and not self.preempted):
            t_new = self._stretch(t, next_event, demand, plan.padding)
            if t_new is not None:
                return t_new
        return self._step(t, plan, need, demand)

    def _before_plan(self) -> None:
        """Work at the start of an iteration, before the policy plans: swap-ins."""
        if self.swapped:
            self._swap_in()

    def _step(self, t: float, plan, need: int, demand: int) -> float:
        m = plan.decode
        # With m > 0 the frontier stands at m: the head is exactly the decoders taking a token.
        ctx = self.ctx if m else 0
        chunks = plan.chunks
        prefill = 0
        for _, x in chunks:
            prefill += x
        dur = self.cost.iteration_s(prefill, m + plan.padding, ctx) + self.swap_s
        end = t + dur
        if self.batches is not None:
            self._record_batch(plan)
        if m:
            self.sigma += 1    # the parked tail, if any, sits out this tick
            self.free_blocks -= need
            self.ctx += m
            self.dec_left -= m
            self.tick += 1
            self.tick_end.append(end)
        for r, x in chunks:
            if r.status == Status.WAITING:
                self.queue.popleft()
                self._admit(r, t)
            self._advance_prefill(r, x, end)
        heap = self.heap
        if m and heap and heap[0][0] <= self.tick:
            self._complete()
        self.rows.append((t, dur, prefill, m, m + len(chunks), self.capacity - self.free_blocks,
                          len(self.queue) + len(self.swapped), len(self.running),
                          self.pf_need + self.dec_left, demand))
        return end

    # -- planning ----------------------------------------------------------------------------
    def _plan_with_preemption(self):
        """Ask the policy for a plan; preempt victims until it fits. Returns (plan, blocks the
        decoders need) or (None, 0) when idle."""
        B = self.block_tokens
        while True:
            self.n_running = len(self.running)
            key = -self.tick % B
            self.decode_need = self._need_all()
            plan = self.policy.plan(self)
            m = plan.decode
            if m == 0 and not plan.chunks:
                if not self.running:
                    return None, 0
                self._preempt(self._victim())
                continue
            # Decoders sit out only a tick that happens; with m == 0 there is no tick at all,
            # and the frontier stays where it is.
            if m:
                if m < self.n_decoders or self.tail:
                    self._frontier(self.n_decoders - m)
                need = self.cnt[key]
            else:
                need = 0
            total = need + self._chunk_blocks(plan) if plan.chunks else need
            if total <= self.free_blocks:
                return plan, need
            self._preempt(self._victim())

    def _need_all(self) -> int:
        """Blocks every decoder needs for its next token: those whose context fills its blocks."""
        key = -self.tick % self.block_tokens
        if not self.tail:
            return self.cnt[key]
        return self.cnt[key] + self.tcnt[(key + self.sigma) % self.block_tokens]

    def _chunk_blocks(self, plan) -> int:
        B = self.block_tokens
        total = 0
        for r, x in plan.chunks:
            c = r.computed
            total += -(-(c + x) // B) - -(-c // B)
        return total

    def _victim(self) -> _R:
        rule = self.cfg.kv.victim
        if rule == "newest":
            return next(reversed(self.running.values()))
        # Ties go to the newest. The oldest running request is spared unless alone, so the
        # head of the line always progresses: picking "the one furthest along" can otherwise
        # livelock, re-preempting a request just before it would finish.
        order = list(reversed(self.running.values()))
        if len(order) > 1:
            order.pop()
        if rule == "most_blocks":
            return max(order, key=self._blocks_now)
        return min(order, key=self._blocks_now)

    # -- decode bookkeeping -------------------------------------------------------------
    def _base(self, r: _R) -> int:
        return r.base if r.park < 0 else r.base + self.sigma - r.park

    def _context(self, r: _R) -> int:
        return r.prompt - self.lag + self.tick - self._base(r)

    def _blocks_now(self, r: _R) -> int:
        if r.need == 0:
            return -(-self._context(r) // self.block_tokens)
        return r.blocks

    def _enter_decode(self, r: _R) -> None:
        B = self.block_tokens
        r.base = self.tick - r.generated
        r.key = (r.prompt - self.lag - r.base) % B
        r.seg_start = self.tick
        self.cnt[r.key] += 1
        self.n_decoders += 1
        self.ctx += r.computed
        heapq.heappush(self.heap, (r.base + r.output, next(self.seq), r))
        self._attach(r)

    def _attach(self, r: _R) -> None:
        """Give a new decoder its place in the frontier (counted in the head's aggregates)."""
        if self.tail:
            self._place(r)

    def _detach(self, r: _R) -> None:
        """Take a decoder out of the frontier, unparked (a parked one only by preemption)."""
        if r.park >= 0:
            self.tail.remove(r)   # a preemption, already O(running) for the victim rule
            self._unpark(r)
            if not self.tail:
                self.head = None
        elif self.head is not None:
            del self.head[r.id]

    def _leave_decode(self, r: _R) -> None:
        """Make the stale fields true again and close the token segment."""
        self._detach(r)
        g = self.tick - r.base
        r.generated = g
        r.computed = r.prompt - self.lag + g
        r.blocks = -(-r.computed // self.block_tokens)
        self.cnt[r.key] -= 1
        self.n_decoders -= 1
        self.ctx -= r.computed
        self._close_segment(r)

    def _close_segment(self, r: _R) -> None:
        tokens = self.tick - r.seg_start
        if tokens > 0:
            self.segs.extend((r.id, r.seg_start, tokens))

    # -- the frontier of partial decodes ----------------------------------------------------
    def _frontier(self, k: int) -> None:
        """Move the frontier so that exactly the ``k`` youngest decoders are parked. Costs
        O(1 + decoders that cross it), however many stay parked."""
        tail = self.tail
        if len(tail) == k:
            return
        if self.head is None:
            self.head = {r.id: r for r in self.running.values() if r.need == 0}
        head = self.head
        park, unpark = self._park, self._unpark
        for _ in range(k - len(tail)):
            r = head.popitem()[1]     # the youngest decoder of the head
            park(r)
            tail.appendleft(r)
        for _ in range(len(tail) - k):
            r = tail.popleft()        # the oldest parked decoder, younger than the whole head
            unpark(r)
            head[r.id] = r
        if not tail:
            self.head = None

    def _park(self, r: _R) -> None:
        """Move ``r`` from the head's aggregates to the tail's; close its token segment."""
        tick, sigma, key, rel = self.tick, self.sigma, r.key, r.prompt - self.lag - r.base
        if tick > r.seg_start:
            self.segs.extend((r.id, r.seg_start, tick - r.seg_start))
        self.cnt[key] -= 1
        self.ctx -= rel + tick
        r.park = sigma
        self.tcnt[(key + sigma) % self.block_tokens] += 1
        self.tctx += rel + sigma

    def _unpark(self, r: _R) -> None:
        """Apply the ticks ``r`` sat out to its base and key; back to the head's aggregates."""
        B, tick, park = self.block_tokens, self.tick, r.park
        d = self.sigma - park
        rel = r.prompt - self.lag - r.base
        self.tcnt[(r.key + park) % B] -= 1
        self.tctx -= rel + park
        r.park = -1
        r.seg_start = tick
        if d:
            r.base += d
            rel -= d
            r.key = (r.key - d) % B
            heapq.heappush(self.heap, (r.base + r.output, next(self.seq), r))
        # else: no tick since it was parked, so its entry is due later and still in the heap.
        self.cnt[r.key] += 1
        self.ctx += rel + tick

    def _place(self, r: _R) -> None:
        """A new decoder while a tail is parked: the youngest joins the tail's end."""
        for q in reversed(self.running.values()):
            if q is r:
                self._park(r)
                self.tail.append(r)
                return
            if q.need == 0:
                break
        # An older request finished its prefill after younger ones: the admission order of
        # head + tail no longer holds. Unpark everyone; the next partial decode rebuilds it.
        self._dissolve()

    def _dissolve(self) -> None:
        """Unpark every decoder: O(parked), for rare events and the end of the run."""
        tail = self.tail
        while tail:
            self._unpark(tail.popleft())
        self.head = None

    def _tail_context(self) -> int:
        return self.tctx + len(self.tail) * (self.tick - self.sigma)

    def _complete(self) -> None:
        heap, tick = self.heap, self.tick
        while heap and heap[0][0] <= tick:
            entry = heapq.heappop(heap)
            if not _stale(entry):
                self._finish(entry[2])

    def _finish(self, r: _R) -> None:
        self._leave_decode(r)
        self.free_blocks += r.blocks
        del self.running[r.id]
        self.n_ready -= 1
        self.in_system -= 1
        r.status = Status.FINISHED
        self.status[r.id] = Status.FINISHED
        self.out["finish_s"][r.id] = self.tick_end[self.tick]
        self._store(r)

    # -- admission, prefill, preemption, swap -------------------------------------------
    def _admit(self, r: _R, t: float) -> None:
        self._move(r, Status.RUNNING)
        self.running[r.id] = r
        self._prefilling[r.id] = r
        if r.admitted_s != r.admitted_s:
            r.admitted_s = t

    def _advance_prefill(self, r: _R, x: int, end: float = math.nan) -> None:
        c = r.computed + x
        blocks = -(-c // self.block_tokens)
        self.free_blocks -= blocks - r.blocks
        r.blocks, r.computed = blocks, c
        r.need -= x
        self.pf_need -= x
        if r.need == 0:
            del self._prefilling[r.id]
            if self.lag:
                # The reference's _prefill_done: this iteration samples the next token.
                r.generated += 1
                self.dec_left -= 1
                self.points.append((r.id, end))
                if r.generated == r.output:
                    self._finish_at_prefill(r, end)
                    return
            self.n_ready += 1
            self._enter_decode(r)

    def _finish_at_prefill(self, r: _R, end: float) -> None:
        self.free_blocks += r.blocks
        del self.running[r.id]
        self.in_system -= 1
        r.status = Status.FINISHED
        self.status[r.id] = Status.FINISHED
        self.out["finish_s"][r.id] = end
        self._store(r)

    def _preempt(self, r: _R) -> None:
        kv = self.cfg.kv
        if r.need == 0:
            self._leave_decode(r)
            self.n_ready -= 1
        else:
            del self._prefilling[r.id]
        del self.running[r.id]
        r.preemptions += 1
        self.preempted = True
        self.waiting = ()
        self.free_blocks += r.blocks
        if kv.preemption == "swap" and r.blocks <= self.host_free:
            moved = r.blocks * kv.block_bytes
            self.swap_s += moved / kv.swap_bytes_per_s
            r.swapped_bytes += moved
            self.host_free -= r.blocks
            if r.need == 0:
                self.n_ready += 1
            self._move(r, Status.SWAPPED)
            self.swapped.append(r)
            return
        r.recomputed += r.computed
        self.pf_need += r.prompt + r.generated - r.need
        r.computed, r.blocks = 0, 0
        r.need = r.prompt + r.generated
        self._move(r, Status.WAITING)
        self.queue.appendleft(r)

    def _swap_in(self) -> None:
        kv = self.cfg.kv
        B = self.block_tokens
        while self.swapped and len(self.running) < self.max_batch:
            r = self.swapped[0]
            grow = 1 if r.need == 0 and r.computed % B == 0 else 0
            if r.blocks + grow > self.free_blocks - self._need_all() - self.watermark_blocks:
                return
            self.swapped.popleft()
            moved = r.blocks * kv.block_bytes
            self.swap_s += moved / kv.swap_bytes_per_s
            r.swapped_bytes += moved
            self.host_free += r.blocks
            self.free_blocks -= r.blocks
            self._move(r, Status.RUNNING)
            self.running[r.id] = r
            if r.need == 0:
                self._enter_decode(r)
            else:
                self._prefilling[r.id] = r

    def _move(self, r: _R, new: Status) -> None:
        check_transition(r.status, new)
        r.status = new
        self.status[r.id] = new

    def check_invariants(self) -> None:
        """Raises SimulationError if the aggregates disagree with the requests they summarise.

        O(requests in system): for tests, not for production runs.
        """
        running = list(self.running.values())
        decoders = [r for r in running if r.need == 0]
        held = sum(self._blocks_now(r) for r in running)
        problems = []
        if held + self.free_blocks != self.cfg.kv.blocks:
            problems.append(f"blocks held {held} + free {self.free_blocks} != capacity")
        if self.free_blocks < 0:
            problems.append(f"free blocks {self.free_blocks} < 0")
        if len(decoders) != self.n_decoders:
            problems.append(f"n_decoders {self.n_decoders} != {len(decoders)}")
        problems += self._frontier_problems(decoders)
        queued = {r.id for r in self.queue} | {r.id for r in self.swapped}
        if queued & set(self.running):
            problems.append("a request is both running and waiting")
        if {r.id for r in running if r.need} != set(self._prefilling):
            problems.append("prefilling set is stale")
        if problems:
            raise SimulationError("; ".join(problems))

    def _frontier_problems(self, decoders: list[_R]) -> list[str]:
        B = self.block_tokens
        head = [r for r in decoders if r.park < 0]
        tail = [r for r in decoders if r.park >= 0]
        problems = []
        if sum(self._context(r) for r in head) != self.ctx or \
                sum(self._context(r) for r in tail) != self._tail_context():
            problems.append("decoder context sum is stale")
        counts, tcounts = [0] * B, [0] * B
        for r in decoders:
            key = (r.prompt - self.lag - self._base(r)) % B
            if r.park < 0:
                counts[key] += 1
            else:
                tcounts[(key + self.sigma) % B] += 1
        if counts != self.cnt or tcounts != self.tcnt:
            problems.append("residue counts are stale")
        return problems + self._order_problems(decoders, tail)

    def _order_problems(self, decoders: list[_R], tail: list[_R]) -> list[str]:
        problems = []
        if tail:
            order = list(self.head.values()) + list(self.tail) if self.head is not None else []
            if [r.id for r in order] != [r.id for r in decoders]:
                problems.append("head + tail is not the decoders in admission order")
        elif self.tail or self.head is not None:
            problems.append("a frontier is kept with nothing parked")
        return problems

    # -- decode-only stretches --------------------------------------------------------
    def _stretch(self, t: float, next_event: float, demand: int, padding: int) -> float | None:
        """Advance k > 1 identical decode-only iterations at once, or return None if the next
        event is at most one iteration away. Exact: times accumulate in the same order as the
        step loop, so every float matches bit for bit."""
        k_max = self._stretch_ticks()
        if k_max <= 1:
            return None
        n = self.n_decoders
        d0 = self.cost.iteration_s(0, n + padding, self.ctx)
        if next_event != float("inf"):
            k_max = min(k_max, int((next_event - t) / d0) + 2)
        if k_max <= 1:
            return None
        ks = np.arange(k_max, dtype=np.int64)
        if self.cost.uses_context:
            durs = np.asarray(self.cost.iteration_s(0, n + padding, self.ctx + n * ks),
                              dtype=np.float64)
        else:
            durs = np.full(k_max, d0)
        ends = np.cumsum(np.concatenate(([t], durs)))[1:]
        k = min(k_max, 1 + int(np.searchsorted(ends, next_event, side="left")))
        B = self.block_tokens
        needs = np.take(np.asarray(self.cnt), (-(self.tick + ks)) % B)
        used = np.cumsum(needs)
        k = min(k, int(np.searchsorted(used, self.free_blocks, side="right")),
                self._stretch_cap(needs, used))
        if k <= 1:
            return None
        self._flush_rows()
        starts = np.concatenate(([t], ends[: k - 2]))
        kv_used = self.capacity - self.free_blocks + used[: k - 1]
        backlog = self.pf_need + self.dec_left - n * np.arange(1, k, dtype=np.int64)
        waiting, running = len(self.queue) + len(self.swapped), len(self.running)
        self.row_blocks.append(np.column_stack([
            starts, durs[: k - 1], np.zeros(k - 1), np.full(k - 1, n), np.full(k - 1, n),
            kv_used, np.full(k - 1, waiting), np.full(k - 1, running), backlog,
            np.full(k - 1, demand)]))
        self.free_blocks -= int(used[k - 1])
        self.ctx += n * k
        self.dec_left -= n * k
        self.tick += k
        self.tick_end.extend(ends[:k].tolist())
        self._complete()
        self.rows.append((float(ends[k - 2]), float(durs[k - 1]),
                          0, n, n, self.capacity - self.free_blocks,
                          len(self.queue) + len(self.swapped), len(self.running),
                          self.pf_need + self.dec_left, demand))
        return float(ends[k - 1])

    def _stretch_cap(self, needs: np.ndarray, used: np.ndarray) -> int:
        """Iterations a stretch may take given the blocks its ticks need (``needs[j]`` for the
        j-th, ``used`` their running sum); the plain replica has no further bound."""
        return len(needs)

    def _stretch_ticks(self) -> int:
        """Ticks to the next decode event, the next completion (a stretch may end on it)."""
        heap = self.heap
        while heap and _stale(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] - self.tick

    def _flush_rows(self) -> None:
        if self.rows:
            self.row_blocks.append(np.asarray(self.rows, dtype=np.float64))
            self.rows = []

    def _record_batch(self, plan) -> None:
        decoders = [r for r in self.running.values() if r.need == 0][: plan.decode]
        self.batches.append([(r.id, "d", 1) for r in decoders] +
                            [(r.id, "p", x) for r, x in plan.chunks])

    # -- results ----------------------------------------------------------------------------
    def _store(self, r: _R) -> None:
        c = self.counts
        c["generated"][r.id] = r.generated
        c["preemptions"][r.id] = r.preemptions
        c["recomputed"][r.id] = r.recomputed
        c["swapped_bytes"][r.id] = r.swapped_bytes
        self.out["admitted_s"][r.id] = r.admitted_s

    def _result(self, t: float, reason: str) -> EngineRun:
        self._dissolve()
        for r in list(self.running.values()):
            if r.need == 0:
                self._leave_decode(r)
            self._store(r)
        for r in (*self.queue, *self.swapped):
            self._store(r)
        # The records end at the last request that entered; later ones had not arrived.
        k = len(self.status.rstrip(b"\0"))
        first, gaps = token_times(np.frombuffer(self.tick_end, dtype=np.float64),
                                  np.frombuffer(self.segs, dtype=np.int64).reshape(-1, 3), k,
                                  self.points)
        status = np.frombuffer(bytes(self.status[:k]), dtype=np.int8)
        names = np.asarray(self.class_names, dtype=object)

        def column(values, dtype) -> np.ndarray:
            if isinstance(values, array):
                held = np.frombuffer(values, dtype=values.typecode) if k else np.empty(0)
                return held[:k].astype(dtype)
            return np.array(values[:k] if k < len(values) else values, dtype=dtype)

        frame = pd.DataFrame({
            "id": np.arange(k, dtype=np.int64),
            "class": names[column(self.class_ids, np.int64)] if k
            else np.array([], dtype=object),
            "arrival_s": column(self.arrivals, np.float64),
            "prompt_tokens": column(self.prompts, np.int64),
            "output_tokens": column(self.outputs, np.int64),
            "status": np.array([STATUS_NAMES[s] for s in Status], dtype=object)[status],
            "admitted_s": column(self.out["admitted_s"], np.float64),
            "first_token_s": first,
            "finish_s": column(self.out["finish_s"], np.float64),
            "generated_tokens": column(self.counts["generated"], np.int64),
            "preemptions": column(self.counts["preemptions"], np.int64),
            "recomputed_tokens": column(self.counts["recomputed"], np.int64),
            "swapped_bytes": column(self.counts["swapped_bytes"], np.int64),
            "max_token_gap_s": gaps,
        })
        self._flush_rows()
        blocks = self.row_blocks or [np.zeros((0, len(ITERATION_COLUMNS)))]
        rows = np.concatenate(blocks)
        iters = iteration_frame({c: rows[:, j] for j, c in enumerate(ITERATION_COLUMNS)})
        done = int(np.isin(status, (Status.FINISHED, Status.REJECTED)).sum())
        early = done < k or k < self.n or self.unarrived
        return EngineRun(frame, iters, t, early, self.batches, reason)


def _stale(entry: tuple[int, int, _R]) -> bool:
    due, _, r = entry
    # A parked decoder's stored base lags its true one; its entry is re-pushed when unparked.
    return r.status != Status.RUNNING or r.need != 0 or r.park >= 0 or r.base + r.output != due


STEPPERS = {"fast": Replica, "reference": ReferenceStepper}


def run_engine(requests: Requests, config: EngineConfig, cost, *, until_s: float | None = None,
               progress: Callable[[float], None] | None = None, stepper: str = "fast",
               start_decoding: Sequence[int] = (), record_batches: bool = False,
               check_invariants: bool = False, max_in_system: int | None = None,
               stop: StopFlag | None = None) -> EngineRun:
    """Simulate one replica serving ``requests`` (a ``Requests`` or a ``RequestSource`` whose
    chunks are drawn as the clock reaches them).

    Args:
        until_s: no iteration starts at or after this time, seconds (None: until all finish).
        stepper: "fast" (the replica) or "reference" (the plain step loop). Policies that name
            explicit decoder subsets (``explicit_decoders``: WAIT, Nested WAIT, vLLM v1), and
            ``start_decoding`` under ``first_token = "prefill"``, always run on the
            reference loop.
        start_decoding: requests that enter at their arrival with the prefill already done.
        record_batches: keep each iteration's (request, phase, tokens) list (slow; for tests).
        check_invariants: verify the fast replica's aggregates after every iteration (slow).
        max_in_system: stop as soon as more requests than this are in the system (waiting,
            running or swapped), so an overloaded run ends bounded in time and memory.
        stop: a flag a signal handler sets; the run then stops at the next iteration boundary.

    Raises:
        ConfigError if ``stepper`` is unknown; Interrupted (a KeyboardInterrupt) carrying the
        records so far if the run is interrupted (``stop.py``).
    """
    from servesim.core.registry import lookup

    cls = lookup(STEPPERS, stepper, "stepper")
    fast_prefill = not start_decoding   # tests' early decoders follow "decode" only
    if cls is Replica and reference_only(config, fast_prefill) is not None:
        # The fast replica skips through repeated "oldest k decoders" plans; a policy that
        # names its decoders runs on the reference loop, which honours any subset.
        cls = ReferenceStepper
    engine = cls(requests, config, cost, record_batches)
    for i in start_decoding:
        engine.start_decoding(i)
    engine.check = check_invariants
    return engine.run(until_s, progress, max_in_system, stop)
