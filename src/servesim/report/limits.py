"""Which limit binds first for each policy: the token budget (lambda*), the KV cache or the
batch-size cap.

lambda* = mu* / (m_p + m_d) assumes every iteration is full with b_max tokens. At that rate
each decoder takes at most one token per iteration, so at least
N = b_max * E[d] / E[p + d] requests decode at once (p, d: prompt and output tokens), and
they hold, by Little's law over their decode time,
K = b_max * E[d (p + d/2)] / E[p + d] tokens of KV cache, about N/2 more blocks for rounding.
If K does not fit the cache (less the admission watermark), or N exceeds the batch-size cap,
lambda* cannot be reached and the load axis is not measured against the real limit. A run
that preempted below lambda* shows the cache running out there as well.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from servesim.engine.config import EngineConfig, KVConfig

__all__ = ["TOKEN_BUDGET", "Limit", "binding_limit", "engine_limits"]

TOKEN_BUDGET = "token budget"
KV_CACHE = "KV cache"
BATCH_CAP = "batch-size cap"


@dataclass(frozen=True)
class Limit:
    """What bounds one policy's throughput first, with the numbers behind it.

    Attributes:
        label: the policy label.
        binds: TOKEN_BUDGET, "KV cache" or "batch-size cap".
        kv_blocks_needed: blocks the decoders hold at lambda* (NaN if unknown).
        kv_blocks: the cache's blocks less the watermark (NaN if unknown).
        detail: one sentence for the page ('' when the token budget binds).
    """

    label: str
    binds: str
    kv_blocks_needed: float
    kv_blocks: float
    detail: str = ""


def binding_limit(label: str, token_budget: int, max_batch_size: int, block_tokens: int,
                  kv_blocks: float, watermark: float, prompt: pd.Series, output: pd.Series,
                  preempted_below: float | None = None) -> Limit:
    """The limit that binds first for one engine and workload sample (see the module doc).

    ``prompt`` and ``output`` are the token counts of the requests of one run;
    ``preempted_below`` is the lowest load below 1 at which a run preempted, if any.
    """
    total = float((prompt + output).mean()) if len(prompt) else math.nan
    decoders = token_budget * float(output.mean()) / total if total > 0 else math.nan
    held = token_budget * float((output * (prompt + output / 2)).mean()) / total \
        if total > 0 else math.nan
    needed = held / block_tokens + decoders / 2
    usable = kv_blocks * (1 - watermark)
    if math.isfinite(needed) and needed > usable:
        return Limit(label, KV_CACHE, needed, usable,
                     f"at λ* the decoders would hold about {needed:,.0f} KV blocks, more "
                     f"than the {usable:,.0f} the cache admits")
    if math.isfinite(decoders) and decoders > max_batch_size:
        return Limit(label, BATCH_CAP, needed, usable,
                     f"at λ* about {decoders:,.0f} requests decode at once, more than "
                     f"max_batch_size = {max_batch_size}")
    if preempted_below is not None:
        return Limit(label, KV_CACHE, needed, usable,
                     f"runs preempted at load {preempted_below:.3g}, below λ*: the cache "
                     "ran out first")
    return Limit(label, TOKEN_BUDGET, needed, usable)


def _engine_table(summary: dict) -> dict:
    """The engine table of a point's scenario as run ({} if the summary lacks it)."""
    scenario = summary.get("scenario") or {}
    engine = scenario.get("engine") if isinstance(scenario, dict) else None
    return engine if isinstance(engine, dict) else {}


def _preempted_below(group: pd.DataFrame) -> float | None:
    below = group[(group["load"] < 1) & (group["preemptions"].fillna(0) > 0)]
    return float(below["load"].min()) if len(below) else None


def engine_limits(con, points: pd.DataFrame,
                  summary: Callable[[str], dict]) -> dict[str, Limit]:
    """Per label, the limit that binds first, from its first point's engine (in the point's
    ``summary(point_id)``) and requests."""
    limits: dict[str, Limit] = {}
    for label, group in points.groupby("label", sort=True):
        first = group.sort_values(["seed", "point_id"]).iloc[0]
        engine = _engine_table(summary(str(first.point_id)))
        kv = engine.get("kv") if isinstance(engine.get("kv"), dict) else {}
        sizes = con.execute("SELECT prompt_tokens, output_tokens FROM requests "
                            "WHERE point_id = ?", [str(first.point_id)]).df()
        blocks = first.kv_capacity_blocks
        limits[label] = binding_limit(
            label, int(engine.get("token_budget", EngineConfig.token_budget)),
            int(engine.get("max_batch_size", EngineConfig.max_batch_size)),
            int(kv.get("block_tokens", KVConfig.block_tokens)),
            float(blocks) if pd.notna(blocks) else math.inf,
            float(kv.get("watermark", KVConfig.watermark)),
            sizes["prompt_tokens"].astype(float), sizes["output_tokens"].astype(float),
            _preempted_below(group) if group["load"].notna().all() else None)
    return limits
