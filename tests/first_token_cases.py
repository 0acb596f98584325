"""Random small scenarios, hand-trace helpers and a per-request token check shared by the
vllm_v1 and first_token tests."""

from __future__ import annotations

import string
from collections import defaultdict

import numpy as np

from servesim.engine.config import EngineConfig, KVConfig
from servesim.engine.cost import Affine, Constant, Staircase
from servesim.engine.replica import run_engine
from servesim.workload.requests import Requests

T = 0.1
"""Seconds per iteration of the hand traces (a constant cost), so times read as step counts."""


def run_trace(requests: Requests, stepper: str = "fast", **engine):
    """One hand trace: ``engine`` fields (``kv`` as a dict) on the constant cost ``T``, with
    the batches recorded and the invariants checked every iteration."""
    kv = KVConfig(**engine.pop("kv", {}))
    config = EngineConfig(kv=kv, **engine)
    return run_engine(requests, config, Constant(T), stepper=stepper, record_batches=True,
                      check_invariants=True)


def phases(result) -> list[str]:
    """Each iteration's batch as "A p x" words: request letter, phase, tokens."""
    return [" ".join(f"{string.ascii_uppercase[i]}{p}{x}" for i, p, x in b)
            for b in result.batches]


def in_steps(result, column: str) -> list[float]:
    """A time column of the records in iterations of ``T``."""
    return [round(v / T, 9) for v in result.requests[column]]


def random_case(rng: np.random.Generator, batching: str, first_token: str | None = None,
                swap: bool = True):
    """Requests, config, cost and a stop time, often memory-bound (as the engine tests')."""
    n = int(rng.integers(1, 40))
    arrivals = np.cumsum(rng.exponential(1 / rng.uniform(2, 40), n))
    requests = Requests.from_lists(arrivals, rng.integers(1, 80, n), rng.integers(1, 60, n))
    block = int(rng.choice([1, 4, 16]))
    blocks = int(rng.integers(1, 60)) if rng.random() < 0.7 else 10**6
    kv = KVConfig(block_tokens=block, blocks=max(blocks, -(-140 // block) + 3),
                  watermark=float(rng.choice([0.0, 0.05])),
                  preemption=str(rng.choice(["recompute", "swap"])) if swap else "recompute",
                  victim=str(rng.choice(["newest", "most_blocks"])) if swap else "newest",
                  host_blocks=int(rng.integers(0, 40)), swap_bytes_per_s=1e9,
                  block_bytes=1 << 20)
    config = EngineConfig(
        batching=batching, token_budget=int(rng.integers(80, 300)),
        max_batch_size=int(rng.integers(1, 40)),
        chunk_tokens=int(rng.integers(1, 100)) if rng.random() < 0.5 else None, kv=kv,
        first_token=first_token)
    cost = Staircase() if rng.random() < 0.5 else Affine(d0_s=0.005, d1_s=1e-5, decode_s=1e-4)
    until = float(arrivals[-1]) * rng.uniform(0.3, 2) if rng.random() < 0.3 else None
    return requests, config, cost, until


def check_tokens(run, first_token: str) -> None:
    """Every emitted token is a decode token or, under "prefill", a completed (re-)prefill.

    Exact for a request never preempted (its prefill completed iff its chunks sum to its
    prompt); bounded by one emission per prefill episode for a preempted one.
    """
    decoded: dict[int, int] = defaultdict(int)
    prefilled: dict[int, int] = defaultdict(int)
    for batch in run.batches:
        for i, phase, x in batch:
            if phase == "d":
                decoded[i] += x
            else:
                prefilled[i] += x
    req = run.requests
    for i, g, p, k in zip(req.id, req.generated_tokens, req.prompt_tokens, req.preemptions,
                          strict=True):
        if first_token == "decode":
            assert g == decoded[i]
        elif k == 0:
            assert g == decoded[i] + (prefilled[i] == p)
        else:
            assert decoded[i] <= g <= decoded[i] + 1 + k
