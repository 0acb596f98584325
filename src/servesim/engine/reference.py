"""The reference stepper: a plain loop that touches every request at every iteration.

It is slow on purpose (O(batch) per iteration) and written to be obviously right; the fast
replica in ``replica.py`` must produce identical request records. Tests hold the two together.

The output convention (``EngineConfig.first_token``) is defined here, once: a token is emitted
by ``_emit``, which a decode step calls and, under "prefill", so does the completion of a
(re-)prefill (``_prefill_done``). The ordered stepper and the network engine inherit both. The
fast replica mirrors the rule (tests hold it to this loop); the fast ordered replica does not
implement "prefill", and ``reference_only`` says when only these loops apply.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from servesim.core.errors import SimulationError
from servesim.engine.config import EngineConfig
from servesim.engine.intake import Intake
from servesim.engine.state import (
    ITERATION_COLUMNS,
    STATUS_NAMES,
    EngineRun,
    Status,
    check_transition,
    iteration_frame,
)
from servesim.engine.stop import StopFlag
from servesim.policies.batching import make_policy, policy_class
from servesim.workload.requests import Requests
from servesim.workload.source import RequestSource

_PROGRESS_EVERY = 1024   # iterations between progress calls; each is slower than the fast one's


def reference_only(config: EngineConfig, fast_prefill: bool = False) -> str | None:
    """Why only the reference steppers can run ``config``, or None if the fast ones can too.
    ``fast_prefill``: the fast stepper asked about supports first_token = "prefill" (the plain
    fast replica does, the fast ordered replica does not)."""
    if config.first_token == "prefill" and not fast_prefill:
        return "first_token = \"prefill\""
    if policy_class(config.batching).explicit_decoders:
        return f"batching {config.batching!r} names its decoders"
    return None


class _Req:
    """Mutable state of one request (the spec lives in ``Requests``)."""

    def __init__(self, i: int, arrival: float, prompt: int, output: int) -> None:
        self.id = i
        self.arrival = arrival
        self.prompt = prompt
        self.output = output
        self.status = Status.PENDING
        self.computed = 0
        self.generated = 0
        self.blocks = 0
        self.need = prompt
        self.admitted_s = float("nan")
        self.finish_s = float("nan")
        self.preemptions = 0
        self.recomputed = 0
        self.swapped_bytes = 0
        self.token_times: list[float] = []

    def move(self, new: Status) -> None:
        check_transition(self.status, new)
        self.status = new


class ReferenceStepper(Intake):
    """The plain step loop; also the view its policy reads."""

    def __init__(self, requests: Requests | RequestSource, config: EngineConfig, cost,
                 record_batches: bool = False) -> None:
        self.cfg = config
        self.cost = cost
        self.policy = make_policy(config.batching)
        self._setup_intake(requests)
        prepare = getattr(self.policy, "prepare", None)
        if prepare is not None:
            # The policy reads the whole workload before its first plan (WAIT's thresholds).
            prepare(config, self._draw_whole())
        kv = config.kv
        self.budget = config.token_budget
        self.max_batch = config.max_batch_size
        self.chunk_limit = config.chunk_limit
        self.block_tokens = kv.block_tokens
        self.watermark_blocks = kv.watermark_blocks
        self.free_blocks = kv.blocks
        self.host_free = kv.host_blocks
        self.reqs: list[_Req] = []     # the requests pulled so far, by id
        self.queue: deque[_Req] = deque()
        self.swapped: deque[_Req] = deque()
        self.running: list[_Req] = []
        self.waiting: deque[_Req] | tuple = self.queue
        self.batches: list | None = [] if record_batches else None
        self.rows: dict[str, list] = {c: [] for c in ITERATION_COLUMNS}
        self.limit = config.length_limits
        self.prefill_emits = config.first_token == "prefill"
        # KV capacity is checked at every token regardless; ``check`` also recomputes the
        # running totals below at every iteration (slow; for tests).
        self.check = False
        # Running totals over the requests in the system (queue, running, swapped), kept at
        # every change so an iteration's record costs O(1), not a pass over a long queue.
        self.need_tokens = 0      # sum of need: prefill tokens still owed
        self.need_free = 0        # requests with need == 0 (decoders, running or swapped)
        self.left_tokens = 0      # sum of output - generated

    # -- the view -----------------------------------------------------------------------
    @property
    def prefilling(self) -> list[_Req]:
        return [r for r in self.running if r.need > 0]

    @property
    def decoders(self) -> list[_Req]:
        return [r for r in self.running if r.need == 0]

    @property
    def n_decoders(self) -> int:
        return len(self.decoders)

    @property
    def n_running(self) -> int:
        return len(self.running)

    @property
    def n_waiting(self) -> int:
        """Requests waiting for admission (queued or swapped out), even in a step whose plan
        may not admit them."""
        return len(self.queue) + len(self.swapped)

    @property
    def decode_need(self) -> int:
        return self._need(self.decoders)

    def _need(self, decoders: Sequence[_Req]) -> int:
        return sum(1 for r in decoders if r.computed % self.block_tokens == 0)

    # -- running totals -----------------------------------------------------------------
    def _count(self, r: _Req, sign: int) -> None:
        """Add (+1) or remove (-1) ``r``'s share of the totals as it enters or leaves."""
        self.need_tokens += sign * r.need
        self.need_free += sign * (r.need == 0)
        self.left_tokens += sign * (r.output - r.generated)

    def _set_need(self, r: _Req, need: int) -> None:
        """Change ``r.need`` (``r`` in the system) and keep the totals in step."""
        self.need_tokens += need - r.need
        self.need_free += (need == 0) - (r.need == 0)
        r.need = need

    def check_totals(self) -> None:
        """Recompute the running totals from the containers; raise if they disagree."""
        inside = list(self._in_system())
        found = (sum(r.need for r in inside), sum(r.need == 0 for r in inside),
                 sum(r.output - r.generated for r in inside))
        kept = (self.need_tokens, self.need_free, self.left_tokens)
        if found != kept:
            raise SimulationError(f"running totals {kept} != recomputed {found}")

    # -- setup --------------------------------------------------------------------------
    def _extend(self, chunk: Requests) -> None:
        """Hold the next chunk of requests (none arrived yet)."""
        base = len(self.reqs)
        self.reqs.extend(_Req(base + j, a, p, d) for j, (a, p, d) in enumerate(
            zip(chunk.arrival_s.tolist(), chunk.prompt_tokens.tolist(),
                chunk.output_tokens.tolist(), strict=True)))

    def start_decoding(self, i: int) -> None:
        """Put request ``i`` in the engine at its arrival, prefill already done (for tests; it
        then takes a decode step per output token under either ``first_token``)."""
        self._pull_through(i)
        r = self.reqs[i]
        r.move(Status.WAITING)
        r.move(Status.RUNNING)
        r.computed, r.need, r.admitted_s = r.prompt, 0, r.arrival
        r.blocks = -(-r.prompt // self.block_tokens)
        self.free_blocks -= r.blocks
        self.running.append(r)
        self._count(r, 1)

    # -- the loop -------------------------------------------------------------------------
    def _loop(self, until_s: float | None, progress: Callable[[float], None] | None,
              max_in_system: int | None, flag: StopFlag) -> tuple[float, str]:
        """The run (``Intake.run`` guards it): returns the end time and the stop reason."""
        t = 0.0
        more = self._pull() if self.n == 0 else True
        n = len(self.reqs)
        nxt = self._next_pending(0)
        reason = "drained"
        iters = 0
        while True:
            self.now = t
            if flag.signum is not None:
                reason = "interrupted"
                break
            while True:
                while nxt < n and self.reqs[nxt].arrival <= t:
                    self._arrive(self.reqs[nxt])
                    nxt = self._next_pending(nxt + 1)
                if nxt < n or not more:
                    break
                more = self._pull()   # every request held has arrived: take the next chunk
                n = len(self.reqs)
            in_system = len(self.running) + len(self.queue) + len(self.swapped)
            if max_in_system is not None and in_system > max_in_system:
                reason = "max_in_system"
                break
            if not in_system:
                if nxt >= n:
                    break
                t = max(t, self.reqs[nxt].arrival)
                if until_s is not None and t >= until_s:
                    reason = "time"
                    break
                continue
            if until_s is not None and t >= until_s:
                reason = "time"
                break
            dur = self._iterate(t)
            if dur is None:
                if nxt >= n:
                    raise SimulationError("engine stalled with requests it can never serve")
                t = self.reqs[nxt].arrival
                continue
            t = t + dur
            iters += 1
            if progress is not None and iters % _PROGRESS_EVERY == 0:
                progress(max(self._fraction(nxt),
                             0.0 if until_s is None else min(t / until_s, 1.0)))
        self.unarrived = nxt < n or more
        return t, reason

    def _next_pending(self, i: int) -> int:
        """The first request from ``i`` on that has not entered (tests start some early)."""
        while i < len(self.reqs) and self.reqs[i].status != Status.PENDING:
            i += 1
        return i

    def _arrive(self, r: _Req) -> None:
        if r.prompt + r.output > self.limit[0] or r.prompt > self.limit[1]:
            r.move(Status.REJECTED)
            return
        r.move(Status.WAITING)
        self.queue.append(r)
        self._count(r, 1)

    def _iterate(self, t: float) -> float | None:
        if self.check:
            self.check_totals()
        demand = self.need_tokens + self.need_free
        self.swap_s = 0.0
        self.waiting = self.queue
        self._swap_in()
        if self.swapped:
            self.waiting = ()   # no admissions while a request is swapped out (as vLLM)
        plan = self._plan_with_preemption()
        if plan is None:
            return None
        decoders = self._plan_decoders(plan)
        ctx = sum(r.computed for r in decoders)
        prefill = sum(x for _, x in plan.chunks)
        dur = self.cost.iteration_s(prefill, len(decoders) + plan.padding, ctx) + self.swap_s
        end = t + dur
        if self.batches is not None:
            self.batches.append([(r.id, "d", 1) for r in decoders] +
                                [(r.id, "p", x) for r, x in plan.chunks])
        for r, x in plan.chunks:
            self._prefill(r, x, t)
        for r in decoders:
            self._decode(r, end)
        if self.prefill_emits:
            for r, _ in plan.chunks:
                if r.need == 0:
                    self._prefill_done(r, end)
        self._record(t, dur, prefill, len(decoders), len(plan.chunks), demand)
        return dur

    def _in_system(self):
        yield from self.running
        yield from self.queue
        yield from self.swapped

    def _plan_with_preemption(self):
        while True:
            plan = self.policy.plan(self)
            empty = plan.decode == 0 and not plan.chunks
            if empty and not self.running:
                return None
            fits = self._need(self._plan_decoders(plan)) + self._chunk_blocks(plan) \
                <= self.free_blocks
            if fits and not empty:
                return plan
            self._preempt(self._victim())

    def _plan_decoders(self, plan) -> list[_Req]:
        """The decoders that take a token: the plan's explicit list, else the oldest ``decode``."""
        named = getattr(plan, "decoders", None)
        if named is None:
            return self.decoders[: plan.decode]
        chosen = list(named)
        if len({id(r) for r in chosen}) != len(chosen) or \
                any(r.status != Status.RUNNING or r.need > 0 for r in chosen):
            raise SimulationError("plan names a decoder that is not a distinct running decoder")
        return chosen

    def _chunk_blocks(self, plan) -> int:
        B = self.block_tokens
        return sum(-(-(r.computed + x) // B) - -(-r.computed // B) for r, x in plan.chunks)

    def _victim(self) -> _Req:
        rule = self.cfg.kv.victim
        if rule == "newest":
            return self.running[-1]
        # Ties go to the newest. The oldest running request is spared unless alone, so the
        # head of the line always progresses: picking "the one furthest along" can otherwise
        # livelock, re-preempting a request just before it would finish.
        order = list(reversed(self.running))
        if len(order) > 1:
            order.pop()
        if rule == "most_blocks":
            return max(order, key=lambda r: r.blocks)
        return min(order, key=lambda r: r.blocks)

    def _preempt(self, r: _Req) -> None:
        kv = self.cfg.kv
        self.running.remove(r)
        r.preemptions += 1
        self.waiting = ()
        if kv.preemption == "swap" and r.blocks <= self.host_free:
            moved = r.blocks * kv.block_bytes
            self.swap_s += moved / kv.swap_bytes_per_s
            r.swapped_bytes += moved
            self.host_free -= r.blocks
            self.free_blocks += r.blocks
            r.move(Status.SWAPPED)
            self.swapped.append(r)
            return
        self.free_blocks += r.blocks
        r.recomputed += r.computed
        r.computed, r.blocks = 0, 0
        self._set_need(r, r.prompt + r.generated)
        r.move(Status.WAITING)
        self.queue.appendleft(r)

    def _swap_in(self) -> None:
        kv = self.cfg.kv
        while self.swapped and len(self.running) < self.max_batch:
            r = self.swapped[0]
            grow = 1 if r.need == 0 and r.computed % self.block_tokens == 0 else 0
            if r.blocks + grow > self.free_blocks - self.decode_need - self.watermark_blocks:
                return
            self.swapped.popleft()
            moved = r.blocks * kv.block_bytes
            self.swap_s += moved / kv.swap_bytes_per_s
            r.swapped_bytes += moved
            self.host_free += r.blocks
            self.free_blocks -= r.blocks
            r.move(Status.RUNNING)
            self.running.append(r)

    def _prefill(self, r: _Req, x: int, t: float) -> None:
        if r.status == Status.WAITING:
            self.queue.remove(r)
            r.move(Status.RUNNING)
            self.running.append(r)
            if r.admitted_s != r.admitted_s:
                r.admitted_s = t
        B = self.block_tokens
        new_blocks = -(-(r.computed + x) // B)
        self.free_blocks -= new_blocks - r.blocks
        r.blocks = new_blocks
        r.computed += x
        self._set_need(r, r.need - x)

    def _decode(self, r: _Req, end: float) -> None:
        """A decode step: the last token enters the KV cache and the next one is emitted."""
        B = self.block_tokens
        r.computed += 1
        new_blocks = -(-r.computed // B)
        self.free_blocks -= new_blocks - r.blocks
        r.blocks = new_blocks
        self._emit(r, end)
        if self.free_blocks < 0:
            raise SimulationError("KV cache over capacity")

    def _prefill_done(self, r: _Req, end: float) -> None:
        """Under first_token = "prefill": the iteration that completed ``r``'s prompt (or the
        re-prefill of prompt + generated tokens after a recompute) samples its next token, as
        vLLM does. That token is not in the KV cache yet (the next decode step puts it there),
        so a decoder holds prompt + generated - 1 tokens and D output tokens take D - 1 decode
        steps; a request with D = 1 finishes here."""
        self._emit(r, end)

    def _emit(self, r: _Req, end: float) -> None:
        """``r`` emits one output token at ``end``; its last one finishes it."""
        r.generated += 1
        self.left_tokens -= 1
        r.token_times.append(end)
        if r.generated == r.output:
            r.move(Status.FINISHED)
            r.finish_s = end
            self.running.remove(r)
            self._count(r, -1)
            self.free_blocks += r.blocks
            r.blocks = 0

    def _record(self, t, dur, prefill, decode, chunks, demand) -> None:
        rows = self.rows
        used = self.cfg.kv.blocks - self.free_blocks
        if self.check:
            self.check_totals()
        backlog = self.need_tokens + self.left_tokens
        for key, val in (("start_s", t), ("duration_s", dur), ("prefill_tokens", prefill),
                         ("decode_tokens", decode), ("batch_size", decode + chunks),
                         ("kv_blocks_used", used),
                         ("waiting", len(self.queue) + len(self.swapped)),
                         ("running", len(self.running)), ("backlog_tokens", backlog),
                         ("demand_tokens", demand)):
            rows[key].append(val)

    def _result(self, t: float, reason: str) -> EngineRun:
        # The records end at the last request that entered; later ones had not arrived.
        k = len(self.reqs)
        while k and self.reqs[k - 1].status == Status.PENDING:
            k -= 1
        reqs = self.reqs[:k]
        names = np.asarray(self.class_names, dtype=object)
        first = [r.token_times[0] if r.token_times else np.nan for r in reqs]
        gaps = [float(np.max(np.diff(r.token_times))) if len(r.token_times) > 1 else np.nan
                for r in reqs]
        frame = pd.DataFrame({
            "id": np.arange(len(reqs), dtype=np.int64),
            "class": names[np.frombuffer(self.class_ids, dtype=np.int32)[:k]] if k
            else np.array([], dtype=object),
            "arrival_s": [r.arrival for r in reqs],
            "prompt_tokens": np.array([r.prompt for r in reqs], dtype=np.int64),
            "output_tokens": np.array([r.output for r in reqs], dtype=np.int64),
            "status": np.array([STATUS_NAMES[r.status] for r in reqs], dtype=object),
            "admitted_s": [r.admitted_s for r in reqs],
            "first_token_s": first,
            "finish_s": [r.finish_s for r in reqs],
            "generated_tokens": np.array([r.generated for r in reqs], dtype=np.int64),
            "preemptions": np.array([r.preemptions for r in reqs], dtype=np.int64),
            "recomputed_tokens": np.array([r.recomputed for r in reqs], dtype=np.int64),
            "swapped_bytes": np.array([r.swapped_bytes for r in reqs], dtype=np.int64),
            "max_token_gap_s": gaps,
        })
        done = sum(r.status in (Status.FINISHED, Status.REJECTED) for r in reqs)
        early = done < k or k < len(self.reqs) or self.unarrived
        return EngineRun(frame, iteration_frame(self.rows), t, early, self.batches, reason)
