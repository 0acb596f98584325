"""The emulator's clocked engine on a fake clock: the simulator's own schedule exactly, late
wake-ups that never shift it, aborts that free the engine, and what it refuses."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from serve_cases import SPECS, TIMEOUT_S, FakeClock, drive, small_scenario
from servesim.core.errors import ConfigError
from servesim.engine.reference import ReferenceStepper
from servesim.real.emulator_engine import ClockedEngine
from servesim.scenario import scenario_from_dict
from servesim.workload.requests import Requests


@pytest.mark.parametrize("late_s", [0.0, 0.003])
def test_clocked_engine_follows_the_simulators_schedule(late_s):
    # A staircase cost and a small KV cache (preemptions), at half speed; a late clock shifts
    # hand-out times but never the simulated schedule.
    scenario = small_scenario(blocks=24, cost={"kind": "staircase", "c_ms": 5, "a_ms": 7, "b0": 16})
    clock = FakeClock(late_s)
    engine = ClockedEngine(scenario, time_scale=2.0, clock=clock)
    got = asyncio.run(asyncio.wait_for(drive(engine, SPECS), TIMEOUT_S))
    ref = ReferenceStepper(Requests.from_lists(*zip(*SPECS, strict=True)), scenario.engine,
                           scenario.cost)
    frame = ref.run().requests
    assert frame["preemptions"].sum() > 0
    assert engine.stats.preemptions == frame["preemptions"].sum()
    for events, r in zip(got, ref.reqs, strict=True):
        times = [e.sim_s for e in events for _ in range(e.tokens)]
        assert times == r.token_times
        for e in events:
            assert e.wall_s == pytest.approx(engine.wall_of(e.sim_s) + late_s, abs=1e-9)
    assert engine.stats.late_max_s == pytest.approx(late_s, abs=1e-9)


def test_draws_output_lengths_from_the_workload():
    engine = ClockedEngine(small_scenario(), clock=FakeClock())
    assert [engine.draw_output_tokens() for _ in range(3)] == [5, 5, 5]
    assert engine.refusal(8, 5) is None
    assert "maximum context length" in engine.refusal(1000, 1000)

async def _drive_aborting(engine: ClockedEngine, specs, abort: set[int]) -> list[int]:
    reqs = [engine.submit(p, d, arrival_s=a) for a, p, d in specs]
    task = asyncio.create_task(engine.run())
    for i in sorted(abort):   # each after its first tokens (or before it entered)
        if i % 2:
            await asyncio.wait_for(reqs[i].events.get(), TIMEOUT_S)
        engine.abort(reqs[i])
    for i, req in enumerate(reqs):
        while i not in abort and not req.finished:
            await asyncio.wait_for(req.events.get(), TIMEOUT_S)
    task.cancel()
    return [req.sent for req in reqs]


def test_aborts_free_the_engine():
    scenario = small_scenario(blocks=24)
    engine = ClockedEngine(scenario, clock=FakeClock())
    abort = {1, 3, 4, 5, 9}
    sent = asyncio.run(asyncio.wait_for(_drive_aborting(engine, SPECS, abort), TIMEOUT_S))
    assert [n for i, n in enumerate(sent) if i not in abort] == \
        [d for i, (_, _, d) in enumerate(SPECS) if i not in abort]
    e = engine.engine
    e.check_totals()
    assert not (e.running or e.queue or e.swapped or engine.live or engine.pending)
    assert e.free_blocks == scenario.engine.kv.blocks
    assert engine.stats.aborted == len(abort)

def test_wait_systems_are_refused():
    scenario = scenario_from_dict({
        "run": {"requests": 1},
        "workload": {"arrival": {"kind": "poisson", "rate_per_s": 1.0},
                     "prompt_tokens": {"kind": "deterministic", "value": 8},
                     "output_tokens": {"kind": "deterministic", "value": 5}},
        "engine": {"batching": "wait", "kv": {"blocks": 64}}})
    with pytest.raises(ConfigError, match="engine.batching"):
        ClockedEngine(scenario)


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_random_aborts_keep_the_engine_consistent(preemption):
    # Many requests on a small cache, a third aborted at random boundaries; the engine checks
    # its running totals at every iteration (``check``), and ends empty with every block free.
    rng = np.random.default_rng(5)
    n = 60
    specs = sorted(zip(np.round(rng.uniform(0, 2, n), 3).tolist(),
                       rng.integers(1, 40, n).tolist(), rng.integers(1, 30, n).tolist(),
                       strict=True))
    scenario = small_scenario(blocks=24)
    kv = {"block_tokens": 4, "blocks": 24, "preemption": preemption, "host_blocks": 30}
    scenario = scenario_from_dict({**scenario.source,
                                   "engine": {**scenario.source["engine"], "kv": kv}})
    engine = ClockedEngine(scenario, clock=FakeClock())
    engine.engine.check = True
    abort = set(rng.choice(n, n // 3, replace=False).tolist())

    async def main():
        reqs = [engine.submit(p, d, arrival_s=a) for a, p, d in specs]
        task = asyncio.create_task(engine.run())
        for i, req in enumerate(reqs):
            while not req.finished:
                event = await asyncio.wait_for(req.events.get(), TIMEOUT_S)
                if i in abort and (event.finished is False or rng.random() < 0.5):
                    engine.abort(req)
                    break
        task.cancel()
        return reqs

    reqs = asyncio.run(asyncio.wait_for(main(), TIMEOUT_S))
    e = engine.engine
    assert not (e.running or e.queue or e.swapped or engine.live or engine.pending)
    assert e.free_blocks == kv["blocks"] and e.host_free == kv["host_blocks"]
    assert all(r.sent == r.output_tokens for i, r in enumerate(reqs) if i not in abort)
    assert engine.stats.preemptions > 0
    assert engine.stats.aborted > n // 6


def test_an_engine_that_plans_nothing_waits_for_the_next_arrival():
    # As the simulator's loop: when no plan is possible, the next iteration starts at the next
    # arrival (the first step below is made to plan nothing).
    engine = ClockedEngine(small_scenario(), clock=FakeClock())
    real_step = engine.engine.step
    calls = []

    def step(t):
        calls.append(t)
        return (None, []) if len(calls) == 1 else real_step(t)

    engine.engine.step = step

    async def main():
        first = engine.submit(8, 3, arrival_s=0.0)
        task = asyncio.create_task(engine.run())
        for _ in range(5):
            await asyncio.sleep(0)
        assert calls == [0.0] and first.sent == 0
        second = engine.submit(8, 3, arrival_s=0.5)
        for req in (first, second):
            while not req.finished:
                await asyncio.wait_for(req.events.get(), TIMEOUT_S)
        task.cancel()

    asyncio.run(asyncio.wait_for(main(), TIMEOUT_S))
    assert calls[1] == 0.5
