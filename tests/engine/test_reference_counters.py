"""The reference stepper's running totals equal the sums they replace.

The stepper keeps, over the requests in the system (waiting, running, swapped),
need_tokens = sum(need), need_free = #{need == 0} and left_tokens = sum(output - generated),
so that an iteration records demand_tokens = need_tokens + need_free and
backlog_tokens = need_tokens + left_tokens in O(1). With ``check`` on, every iteration recomputes
the three sums from the containers and raises on a mismatch; these tests run random cases (KV
pressure, recompute and swap, every victim rule, partial runs) with the check on.
"""

import dataclasses

import numpy as np
import pytest
from engine_cases import SYSTEMS, make_config, random_case
from hypothesis import example, given, settings
from hypothesis import strategies as st

from servesim.core.errors import SimulationError
from servesim.engine.config import WaitConfig
from servesim.engine.ordered import OrderedStepper
from servesim.engine.reference import ReferenceStepper
from servesim.policies.ordering import make_ordering
from servesim.predictors import make_predictor
from servesim.workload.requests import Requests


class _Recounting(ReferenceStepper):
    """Records, next to each iteration, demand and backlog summed over the system as before."""

    def _iterate(self, t):
        inside = list(self._in_system())
        self.old_demand = sum(r.need if r.need > 0 else 1 for r in inside)
        return super()._iterate(t)

    def _record(self, t, dur, prefill, decode, chunks, demand):
        inside = list(self._in_system())
        self.expected.append((self.old_demand,
                              sum(r.need + r.output - r.generated for r in inside)))
        super()._record(t, dur, prefill, decode, chunks, demand)


def _with_preemption(config, preemption):
    return dataclasses.replace(config, kv=dataclasses.replace(config.kv, preemption=preemption))


def _assert_drained_totals(stepper, run):
    stepper.check_totals()
    if not run.stopped_early:
        assert (stepper.need_tokens, stepper.need_free, stepper.left_tokens) == (0, 0, 0)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), system=st.sampled_from(SYSTEMS),
       preemption=st.sampled_from(["recompute", "swap"]), decoding=st.integers(0, 3))
# Requests started early need not be a prefix: here request 1 does not fit but 0 and 2 do.
@example(seed=11163, system="static", preemption="recompute", decoding=3)
def test_totals_match_the_sums(seed, system, preemption, decoding):
    requests, config, cost, until = random_case(np.random.default_rng(seed), system)
    config = _with_preemption(config, preemption)
    stepper = _Recounting(requests, config, cost)
    stepper.expected = []
    fits = [i for i in range(min(decoding, len(requests)))
            if -(-int(requests.prompt_tokens[i]) // config.kv.block_tokens) * (i + 1)
            < config.kv.blocks // 2]
    for i in fits:
        stepper.start_decoding(i)
    stepper.check = True
    run = stepper.run(until)
    it = run.iterations
    assert list(zip(it["demand_tokens"], it["backlog_tokens"], strict=True)) == stepper.expected
    _assert_drained_totals(stepper, run)


ORDERS = ["sprpt", "pspjf", "srpt", {"kind": "trail", "c": 0.5, "max_preemptions": 2},
          {"kind": "aging", "base": "sprpt", "wait_s": 0.3}, "fcfs"]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), system=st.sampled_from(SYSTEMS),
       order=st.sampled_from(ORDERS), preemption=st.sampled_from(["recompute", "swap"]))
def test_totals_hold_under_rank_orderings(seed, system, order, preemption):
    """Priority preemption, parked swap victims and queue re-ranking keep the totals."""
    requests, config, cost, until = random_case(np.random.default_rng(seed), system)
    stepper = OrderedStepper(requests, _with_preemption(config, preemption), cost,
                             make_ordering(order), None if order == "fcfs" else _oracle(seed))
    stepper.check = True
    run = stepper.run(until)
    _assert_drained_totals(stepper, run)


def _oracle(seed):
    return make_predictor({"kind": "oracle"}, seed=seed)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), batching=st.sampled_from(["wait", "nested_wait"]))
def test_totals_hold_under_wait(seed, batching):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    requests = Requests.from_lists(np.cumsum(rng.exponential(0.05, n)),
                                   rng.integers(1, 60, n), rng.integers(1, 30, n))
    wait = WaitConfig(thresholds=[2]) if batching == "wait" else \
        WaitConfig(segments=(4,), thresholds=(1, 2))
    config = make_config(batching, token_budget=int(rng.integers(60, 200)), wait=wait,
                         kv=dict(block_tokens=4, blocks=int(rng.integers(40, 200)),
                                 preemption=str(rng.choice(["recompute", "swap"])),
                                 host_blocks=20))
    stepper = ReferenceStepper(requests, config, random_case(rng)[2])
    stepper.check = True
    run = stepper.run()
    _assert_drained_totals(stepper, run)


def test_check_catches_a_stale_total():
    requests, config, cost, _ = random_case(np.random.default_rng(0), "vllm")
    stepper = ReferenceStepper(requests, config, cost)
    stepper.left_tokens += 1
    stepper.check = True
    with pytest.raises(SimulationError, match="running totals"):
        stepper.run()
