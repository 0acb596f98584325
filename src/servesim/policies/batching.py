"""Batching systems as policies: each reads a view of the replica and returns a StepPlan.

vLLM v1's scheduler (``vllm_v1``) lives in ``vllm_v1.py`` and WAIT in ``wait.py``; both join
the registry here.

A policy never touches blocks or clocks. It reads these attributes of the view (the replica
itself, read-only by contract):

- ``budget`` (b_max, tokens), ``max_batch`` (k_max, requests), ``chunk_limit`` (tokens one
  request may prefill per iteration), ``block_tokens``, ``free_blocks``, ``watermark_blocks``;
- ``n_decoders`` (running requests ready to decode), ``decode_need`` (blocks the decoders need if
  all take a token now), ``n_running``; the reference steppers also give ``running`` (the
  running list, admission order) and ``n_waiting`` (requests queued or swapped out, even when
  ``waiting`` is empty because the step may not admit);
- ``prefilling`` (running requests with prefill left, admission order, or rank order under an
  ordering) and ``waiting`` (queue order); each request exposes ``need`` (prefill tokens left)
  and ``computed`` (tokens in KV).

A plan names only what changes: how many decoders take a token (the first ``decode`` of them:
the oldest in admission order, or the best-ranked under an ordering) and the prefill chunks,
where a chunk of a waiting request admits it. So a decode-only stretch is one plan that repeats,
which is what lets the engine skip through it.

A policy that decodes an arbitrary subset (WAIT) names its decoders explicitly in the plan and
declares ``explicit_decoders = True``; only the reference stepper runs it (``run_engine`` picks
it). Such a policy may also need the run's request specs before the first plan: ``prepare`` is
called once with the config and the ``Requests``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from servesim.core.registry import lookup


class StepPlan:
    """One iteration: ``decode`` decoders take a token; ``chunks`` are (request, tokens) pairs;
    ``padding`` decode slots are computed for nothing (static batching) and only cost time.

    ``decoders`` (default None: the oldest ``decode`` decoders in admission order) names the
    decoding requests that take a token explicitly; then ``decode`` is its length.
    """

    __slots__ = ("decode", "chunks", "padding", "decoders")

    def __init__(self, decode: int, chunks: list[tuple[Any, int]], padding: int = 0,
                 decoders: list[Any] | None = None) -> None:
        self.decode = decode if decoders is None else len(decoders)
        self.chunks = chunks
        self.padding = padding
        self.decoders = decoders

    def __repr__(self) -> str:
        return f"StepPlan(decode={self.decode}, chunks={[(r.id, x) for r, x in self.chunks]})"


def _fill(view: Any, left: int, avail: int, chunked: bool, chunks: list,
          limit: int | None = None) -> int:
    """Append FCFS prefill chunks (running prefills first, then admissions) within the budget
    ``left`` and ``avail`` free blocks; return the budget left.

    A request that cannot proceed blocks those behind it (head-of-line, as vLLM): skipping it
    would reorder the queue, which is a policy of its own. ``limit`` overrides the per-request
    chunk limit.
    """
    B = view.block_tokens
    if limit is None:
        limit = view.chunk_limit if chunked else 1 << 62
    # A lone whole re-prefill longer than the budget (after a recompute) may run by itself,
    # or a system that cannot chunk would never serve it again.
    oversize = not chunked and left == view.budget
    for req in view.prefilling:
        if left <= 0:
            return left
        x, avail = _chunk(req, left, avail, chunked, limit, B)
        if x <= 0:
            return left
        chunks.append((req, x))
        left -= x
    avail -= view.watermark_blocks
    room = view.max_batch - view.n_running
    for req in view.waiting:
        if left <= 0 or room <= 0:
            return left
        x, avail = _chunk(req, 1 << 62 if oversize and not chunks else left, avail,
                          chunked, limit, B)
        if x <= 0:
            return left
        chunks.append((req, x))
        left -= x
        room -= 1
        if left < 0:
            return 0
    return left


def _chunk(req: Any, left: int, avail: int, chunked: bool, limit: int, B: int) -> tuple[int, int]:
    """Tokens ``req`` prefills now (0 if none) and the blocks still free after it."""
    c = req.computed
    held = -(-c // B)
    fit = (held + avail) * B - c
    if chunked:
        x = min(req.need, left, limit, fit)
    else:
        x = req.need
        if x > left or x > fit:
            return 0, avail
    if x <= 0:
        return 0, avail
    return x, avail - (-(-(c + x) // B) - held)


class Policy:
    """Base of the batching systems.

    Attributes:
        chunked: whether prefills may be split across iterations.
    """

    name = "policy"
    chunked = False
    # True for a policy whose plans name an explicit subset of decoders: the fast replica
    # cannot skip through such plans, so run_engine runs it on the reference stepper.
    explicit_decoders = False

    def prepare(self, config: Any, requests: Any) -> None:
        """Read what the policy needs from the run before the first plan (default: nothing)."""

    def plan(self, view: Any) -> StepPlan:  # pragma: no cover - interface
        raise NotImplementedError


class Sarathi(Policy):
    """Sarathi-Serve: every decoder takes its token first, then FCFS prefill chunks fill the rest
    of the budget, so decodes never stall behind a prefill."""

    name = "sarathi"
    chunked = True

    def plan(self, view: Any) -> StepPlan:
        decode = min(view.n_decoders, view.budget)
        chunks: list = []
        _fill(view, view.budget - decode, view.free_blocks - view.decode_need, True, chunks)
        return StepPlan(decode, chunks)


class Orca(Policy):
    """Orca: FCFS prefill chunks take the budget first; decode tokens, oldest first, fill the
    rest. Decoders' next blocks are reserved before prefill chunks are sized."""

    name = "orca"
    chunked = True

    def plan(self, view: Any) -> StepPlan:
        chunks: list = []
        left = _fill(view, view.budget, view.free_blocks - view.decode_need, True, chunks)
        return StepPlan(min(view.n_decoders, left), chunks)


class VLLM(Policy):
    """Vanilla vLLM: if a whole prefill can be admitted, a prefill-only batch of whole prefills
    (FCFS, while they fit); otherwise a decode-only batch. Never mixes the two."""

    name = "vllm"

    def plan(self, view: Any) -> StepPlan:
        chunks: list = []
        _fill(view, view.budget, view.free_blocks, False, chunks)
        if chunks:
            return StepPlan(0, chunks)
        return StepPlan(min(view.n_decoders, view.budget), chunks)


class FasterTransformer(Policy):
    """Stylised FasterTransformer: while anyone decodes, a decode-only batch; otherwise whole
    prefills, FCFS, while they fit. Arrivals cannot interrupt a decode stretch."""

    name = "fastertransformer"

    def plan(self, view: Any) -> StepPlan:
        if view.n_decoders:
            return StepPlan(min(view.n_decoders, view.budget), [])
        chunks: list = []
        _fill(view, view.budget, view.free_blocks, False, chunks)
        return StepPlan(0, chunks)


class Static(FasterTransformer):
    """Request-level (static) batching: a batch is formed only when the engine is empty, from
    whole prefills that fit one iteration, and decodes until its last request finishes;
    nothing joins a running batch. Finished requests keep their slot as padding until the
    batch ends: each padded slot is charged as one decode token per iteration (their KV
    context is not charged, so this is exact for token-only cost models).

    The policy keeps one piece of state, the size of the batch it formed; it pays nothing per
    request per iteration.
    """

    name = "static"

    def __init__(self) -> None:
        self.formed = 0

    def plan(self, view: Any) -> StepPlan:
        plan = super().plan(view)
        if plan.chunks:
            self.formed = len(plan.chunks)
        elif plan.decode:
            plan.padding = max(0, self.formed - view.n_decoders)
        return plan


class Greedy(Policy):
    """The generic work-conserving rule: decoders first, then FCFS prefill chunks that fill
    the rest of the budget. It ignores ``chunk_limit``, so every batch carries
    min(b_max, demand) tokens whenever memory allows. It coincides with Sarathi-Serve when the
    chunk limit is the whole budget; with a smaller limit Sarathi may leave budget unused."""

    name = "greedy"
    chunked = True

    def plan(self, view: Any) -> StepPlan:
        decode = min(view.n_decoders, view.budget)
        chunks: list = []
        _fill(view, view.budget - decode, view.free_blocks - view.decode_need, True, chunks,
              limit=1 << 62)
        return StepPlan(decode, chunks)


POLICIES: dict[str, Callable[[], Policy]] = {
    "static": Static,
    "fastertransformer": FasterTransformer,
    "vllm": VLLM,
    "orca": Orca,
    "sarathi": Sarathi,
    "greedy": Greedy,
}


def _wait_policies() -> None:
    # wait.py and vllm_v1.py build on this module, so their policies join the registry after
    # both load.
    from servesim.policies.vllm_v1 import VLLMv1
    from servesim.policies.wait import NestedWait, Wait

    POLICIES.setdefault("wait", Wait)
    POLICIES.setdefault("nested_wait", NestedWait)
    POLICIES.setdefault("vllm_v1", VLLMv1)


def make_policy(name: str, field: str = "engine.batching") -> Policy:
    """Return a fresh policy by name; raises ConfigError with the closest name if unknown."""
    return policy_class(name, field)()


def policy_class(name: str, field: str = "engine.batching") -> Callable[[], Policy]:
    """The policy class registered under ``name``; raises ConfigError if unknown."""
    _wait_policies()
    return lookup(POLICIES, name, field)
