"""Builders shared by the engine tests (a uniquely named module: several test folders have a
``conftest.py``, and ``from conftest import`` can resolve to another folder's)."""

from __future__ import annotations

import numpy as np

from servesim.engine.config import EngineConfig, KVConfig
from servesim.engine.cost import Affine, Staircase
from servesim.workload.requests import Requests

SYSTEMS = ("static", "fastertransformer", "vllm", "orca", "sarathi", "greedy")


def make_config(batching: str = "sarathi", **overrides) -> EngineConfig:
    """An EngineConfig with KV overrides given as ``kv=dict(...)``."""
    kv = KVConfig(**overrides.pop("kv", {}))
    return EngineConfig(batching=batching, kv=kv, **overrides)


def random_case(rng: np.random.Generator, batching: str | None = None):
    """A small random scenario: requests, config, cost and stop time, often memory-bound."""
    n = int(rng.integers(1, 50))
    arrivals = np.cumsum(rng.exponential(1 / rng.uniform(2, 40), n))
    requests = Requests.from_lists(arrivals, rng.integers(1, 80, n), rng.integers(1, 60, n))
    block = int(rng.choice([1, 4, 16]))
    blocks = int(rng.integers(1, 60)) if rng.random() < 0.7 else 10**6
    kv = dict(block_tokens=block, blocks=max(blocks, -(-140 // block) + 1),
              watermark=float(rng.choice([0.0, 0.05])),
              preemption=str(rng.choice(["recompute", "swap"])),
              victim=str(rng.choice(["newest", "most_blocks", "fewest_blocks"])),
              host_blocks=int(rng.integers(0, 40)), swap_bytes_per_s=1e9, block_bytes=1 << 20)
    config = make_config(
        batching or str(rng.choice(SYSTEMS)), token_budget=int(rng.integers(80, 300)),
        max_batch_size=int(rng.integers(1, 40)),
        chunk_tokens=int(rng.integers(1, 100)) if rng.random() < 0.5 else None, kv=kv)
    cost = Staircase() if rng.random() < 0.5 else Affine(d0_s=0.005, d1_s=1e-5, decode_s=1e-4)
    until = float(arrivals[-1]) * rng.uniform(0.3, 2) if rng.random() < 0.3 else None
    return requests, config, cost, until


def overload_case(rng: np.random.Generator, batching: str = "orca",
                  n: tuple[int, int] = (30, 100), budget: tuple[int, int] = (15, 60)):
    """A burst of short requests (between ``n`` bounds) against a small token budget: Orca's
    prefill chunks take the budget first, so most of its iterations decode partially; Sarathi's
    do once swapped-in decoders outnumber the budget."""
    count = int(rng.integers(*n))
    arrivals = np.cumsum(rng.exponential(rng.uniform(0.0005, 0.006), count))
    requests = Requests.from_lists(arrivals, rng.integers(1, 30, count),
                                   rng.integers(1, 70, count))
    block = int(rng.choice([1, 4, 16]))
    tight = rng.random() < 0.5
    kv = dict(block_tokens=block,
              blocks=int(rng.integers(-(-100 // block) + 1, 120)) if tight else 10**6,
              watermark=float(rng.choice([0.0, 0.05])),
              preemption=str(rng.choice(["recompute", "swap"])),
              victim=str(rng.choice(["newest", "most_blocks", "fewest_blocks"])),
              host_blocks=int(rng.integers(0, 60)), swap_bytes_per_s=1e9, block_bytes=1 << 20)
    config = make_config(batching, token_budget=int(rng.integers(*budget)),
                         chunk_tokens=int(rng.integers(1, 30)) if rng.random() < 0.3 else None,
                         kv=kv)
    cost = Staircase() if rng.random() < 0.5 else Affine(d0_s=0.005, d1_s=1e-5, decode_s=1e-4)
    until = float(arrivals[-1]) * rng.uniform(0.5, 3) if rng.random() < 0.3 else None
    return requests, config, cost, until
