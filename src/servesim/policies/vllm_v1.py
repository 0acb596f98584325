"""vLLM v1 batching: the scheduler of vLLM 0.32's V1 engine (``vllm/v1/core/sched/scheduler.py``).

Settings: ``token_budget`` is vLLM's ``max_num_batched_tokens``, ``max_batch_size`` its
``max_num_seqs`` and ``chunk_tokens`` its ``long_prefill_token_threshold`` (None: no cap).
Chunked prefill is always on, and the default output convention is ``first_token =
"prefill"``: the step that completes a prompt samples the first token.

One step, as vLLM plans it:

1. Running requests, in running order (admission order; a resumed request rejoins at the end),
   while budget is left: each takes the tokens it owes (one for a decoder, the rest of its
   prompt for a prefill), capped by the threshold and by the budget left. Once the budget is
   spent, the rest of the running list waits for the next step, decoders included. The
   threshold applies only while more than one request is in the engine (running or waiting).
2. A running request whose blocks do not fit makes the engine preempt by recompute the last
   request of the running list, and retry (``_plan_with_preemption``). The policy leaves
   running requests' memory to the engine: total blocks over the free ones is exactly the
   condition under which vLLM's in-order allocation first fails. A chunk is never shrunk to
   fit memory.
3. Only if nothing was preempted this step (the engine then empties ``waiting``): waiting
   requests in FCFS order while budget is left and a seat is free, each taking what it owes
   (the prompt, or prompt + generated tokens after a preemption) capped by the threshold and
   the budget. A request is admitted only if the blocks of everything it owes are free
   (``scheduler_reserve_full_isl``, on by default), plus the watermark
   (``kv.watermark``, vLLM's ``watermark``) when anything is running; it then allocates the
   blocks of its chunk. The first request that does not fit stops admissions (head of
   line); vLLM never preempts for a waiting request.

The plan names its decoders (the decoders of the served prefix of the running list), so the
reference stepper runs this policy and ``run_engine`` picks it for the fast one.
"""

from __future__ import annotations

from typing import Any

from servesim.policies.batching import Policy, StepPlan


class VLLMv1(Policy):
    """vLLM 0.32 V1 scheduler (FCFS policy): running requests first, then waiting ones."""

    name = "vllm_v1"
    chunked = True
    # The served decoders are those ahead of the point where the budget runs out in the
    # running list, which interleaves decoders and prefills: the plan names them.
    explicit_decoders = True

    def plan(self, view: Any) -> StepPlan:
        left = view.budget
        # The threshold only keeps a long prefill from starving others: with one request in
        # the engine (counted before any preemption of this step) it does not apply.
        alone = view.n_running + view.n_waiting <= 1
        limit = view.budget if alone else view.chunk_limit
        decoders: list = []
        chunks: list = []
        blocks = 0
        B = view.block_tokens
        for r in view.running:
            if left <= 0:
                break
            if r.need == 0:
                decoders.append(r)
                left -= 1
                blocks += r.computed % B == 0
                continue
            x = min(r.need, limit, left)
            chunks.append((r, x))
            left -= x
            blocks += _grow(r.computed, x, B)
        avail = view.free_blocks - blocks
        if avail >= 0:
            self._admit(view, left, avail, limit, chunks)
        return StepPlan(0, chunks, decoders=decoders)

    @staticmethod
    def _admit(view: Any, left: int, avail: int, limit: int, chunks: list) -> None:
        """Append the waiting requests' chunks, FCFS. Each is admitted only if the blocks of
        everything it owes fit (vLLM's default ``scheduler_reserve_full_isl``), beside the
        watermark once anything runs; it then takes the blocks of its chunk only."""
        running = view.n_running
        B = view.block_tokens
        for r in view.waiting:
            if left <= 0 or running >= view.max_batch:
                return
            x = min(r.need, limit, left)
            whole = _grow(r.computed, r.need, B)
            if whole + (view.watermark_blocks if running else 0) > avail:
                return
            chunks.append((r, x))
            left -= x
            avail -= _grow(r.computed, x, B)
            running += 1


def _grow(computed: int, x: int, B: int) -> int:
    """Blocks a request holding ``computed`` tokens needs to add ``x`` more."""
    return -(-(computed + x) // B) - -(-computed // B)
