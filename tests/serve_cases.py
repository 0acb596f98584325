"""What the emulator's tests share: a small scenario with a constant iteration time, a fake
clock, and requests to drive the clocked engine with."""

from __future__ import annotations

import asyncio

from servesim.real.emulator_engine import ClockedEngine
from servesim.scenario import scenario_from_dict

ITERATION_MS = 20.0
TIMEOUT_S = 20.0


def small_scenario(blocks: int = 256, cost: dict | None = None, batch: int = 16):
    return scenario_from_dict({
        "run": {"seed": 0, "requests": 10},
        "workload": {"arrival": {"kind": "poisson", "rate_per_s": 1.0},
                     "prompt_tokens": {"kind": "deterministic", "value": 8},
                     "output_tokens": {"kind": "deterministic", "value": 5}},
        "engine": {"batching": "sarathi", "token_budget": 64, "max_batch_size": batch,
                   "chunk_tokens": 32, "kv": {"block_tokens": 4, "blocks": blocks},
                   "cost": cost or {"kind": "constant", "iteration_ms": ITERATION_MS}},
    })


class FakeClock:
    """Wall time that jumps to each sleep's target (plus ``late_s``, a late wake-up)."""

    def __init__(self, late_s: float = 0.0) -> None:
        self.t = 1000.0
        self.late_s = late_s

    def now(self) -> float:
        return self.t

    async def sleep_until(self, wall_s: float) -> None:
        self.t = max(self.t, wall_s) + self.late_s
        await asyncio.sleep(0)


SPECS = [(0.0, 8, 5), (0.005, 30, 12), (0.005, 3, 1), (0.061, 50, 20), (0.2, 12, 9),
         (0.21, 40, 30), (0.22, 7, 4), (1.5, 9, 6), (1.5, 60, 3), (1.52, 5, 25)]
"""(arrival_s, prompt_tokens, output_tokens) of ten requests, some at equal times."""


async def drive(engine: ClockedEngine, specs: list[tuple[float, int, int]]) -> list[list]:
    """Submit ``specs`` at their arrivals, run the engine until all finish: their events."""
    reqs = [engine.submit(p, d, arrival_s=a) for a, p, d in specs]
    task = asyncio.create_task(engine.run())
    out = []
    for req in reqs:
        events = []
        while not events or not events[-1].finished:
            events.append(await asyncio.wait_for(req.events.get(), TIMEOUT_S))
        out.append(events)
    task.cancel()
    return out
