"""Which requests an engine can ever serve, decided from the workload's lengths alone.

An engine rejects at arrival every request longer than its length limits
(``EngineConfig.length_limits``): prompt + output within ``max_model_len`` and the KV cache less
its watermark, and, for systems that do not chunk prefills, the prompt within the token budget.
A scenario none of whose requests could pass is refused when it is loaded, naming the field that
makes it so (``check_servable``); one in which only some cannot pass runs, and its summary counts
them with a warning (``unservable_requests``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from servesim.engine.config import EngineConfig

if TYPE_CHECKING:
    from servesim.workload.build import Workload
    from servesim.workload.requests import Requests

__all__ = ["check_servable", "smallest_requests", "unservable_requests"]


def smallest_requests(workload: Workload,
                      n_requests: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(prompt, prompt + output) token counts of candidate requests, one pair per class or trace
    row, among which is the smallest request of every kind the workload can draw.

    A class draws its prompt and output lengths independently, so its smallest request is its
    smallest prompt with its smallest output (the supports' minima). A trace pairs them per row;
    with ``n_requests`` and a trace longer than that, only the rows a run uses (the first ones)
    count.
    """
    trace = workload.trace
    if trace is not None:
        prompt, output = trace.rows.prompt_tokens, trace.rows.output_tokens
        if n_requests is not None and n_requests < len(prompt):
            prompt, output = prompt[:n_requests], output[:n_requests]
        return prompt, prompt + output
    prompt = np.array([c.prompt.support[0] for c in workload.classes], np.int64)
    output = np.array([c.output.support[0] for c in workload.classes], np.int64)
    return prompt, prompt + output


def check_servable(workload: Workload, engine: EngineConfig,
                   n_requests: int | None = None) -> None:
    """Refuse a workload none of whose requests ``engine`` can ever serve.

    Raises ConfigError naming the engine field that refuses even the smallest request:
    ``engine.kv.blocks`` or ``engine.max_model_len`` for prompt + output, ``engine.token_budget``
    for the prompt of a system that does not chunk prefills.
    """
    most, most_prompt = engine.length_limits
    prompt, total = smallest_requests(workload, n_requests)
    fits = total <= most
    if np.any(fits & (prompt <= most_prompt)):
        return
    if not fits.any():
        t = int(total.min())
        raise engine.total_refusal(t, f"the smallest request of {t} tokens")
    p = int(prompt[fits].min())
    what = ("the smallest prompt" if fits.all()
            else f"the smallest prompt of a request of at most {most} tokens")
    raise engine.prompt_refusal(p, what)


def unservable_requests(requests: Requests, engine: EngineConfig) -> tuple[int, list[str]]:
    """The number of generated requests ``engine`` can never serve (each is rejected when it
    arrives), and a one-line warning saying why (no warning when there are none)."""
    most, most_prompt = engine.length_limits
    prompt = np.asarray(requests.prompt_tokens, np.int64)
    total = prompt + np.asarray(requests.output_tokens, np.int64)
    too_long = total > most
    too_wide = (prompt > most_prompt) & ~too_long
    n_long, n_wide = int(too_long.sum()), int(too_wide.sum())
    if n_long + n_wide == 0:
        return 0, []
    reasons = []
    if n_long:
        reasons.append(f"{n_long} longer than {most} tokens (prompt + output; "
                       f"{_total_limit(engine)})")
    if n_wide:
        reasons.append(f"{n_wide} with a prompt above engine.token_budget = "
                       f"{engine.token_budget} ({engine.batching} does not chunk prefills)")
    share = 100.0 * (n_long + n_wide) / len(prompt)
    return n_long + n_wide, [f"{n_long + n_wide} of {len(prompt)} requests ({share:.3g}%) can "
                             "never be served and are rejected at arrival: " + "; ".join(reasons)]


def _total_limit(engine: EngineConfig) -> str:
    """The field that bounds prompt + output (max_model_len never exceeds the KV cache)."""
    if engine.max_model_len is not None:
        return f"engine.max_model_len = {engine.max_model_len}"
    kv = engine.kv
    watermark = f", less the watermark of {kv.watermark:g}" if kv.watermark_blocks else ""
    return f"engine.kv.blocks = {kv.blocks} blocks of {kv.block_tokens} tokens{watermark}"
