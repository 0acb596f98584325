"""Hand-computed step traces: block allocation, chunked prefill, recompute and swap.

The staircase cost gives 46.75 ms for any batch of at most 128 tokens (11.28 + 35.47 ms).
"""

import pytest
from engine_cases import make_config

from servesim.engine.cost import Staircase
from servesim.engine.replica import run_engine
from servesim.workload.requests import Requests

T = 0.04675  # seconds per iteration of <= 128 tokens


def run(requests, config, stepper="fast"):
    return run_engine(requests, config, Staircase(), stepper=stepper, record_batches=True)


def phases(result):
    return [" ".join(f"{'AB'[i]}{p}{x}" for i, p, x in b) for b in result.batches]


@pytest.mark.parametrize("stepper", ["fast", "reference"])
def test_blocks_allocated_on_demand(stepper):
    # 4-token blocks; prompt 6 -> 2 blocks; decodes reach 7, 8 (still 2 blocks), 9 (3 blocks).
    one = Requests.from_lists([0], [6], [3])
    res = run(one, make_config("sarathi", kv=dict(block_tokens=4, blocks=3)), stepper)
    assert list(res.iterations.kv_blocks_used) == [2, 2, 2, 0]   # freed when it finishes
    assert list(res.iterations.prefill_tokens) == [6, 0, 0, 0]
    assert res.requests.finish_s[0] == pytest.approx(4 * T)


@pytest.mark.parametrize("stepper", ["fast", "reference"])
def test_chunked_prefill(stepper):
    one = Requests.from_lists([0], [10], [2])
    sarathi = run(one, make_config("sarathi", token_budget=4), stepper).iterations
    assert list(sarathi.prefill_tokens) == [4, 4, 2, 0, 0]
    assert list(sarathi.decode_tokens) == [0, 0, 0, 1, 1]
    capped = run(one, make_config("sarathi", token_budget=4, chunk_tokens=3), stepper)
    assert list(capped.iterations.prefill_tokens) == [3, 3, 3, 1, 0, 0]
    # The greedy rule ignores the chunk cap, so it stays work-conserving.
    greedy = run(one, make_config("greedy", token_budget=4, chunk_tokens=3), stepper)
    assert list(greedy.iterations.prefill_tokens) == [4, 4, 2, 0, 0]


@pytest.mark.parametrize("stepper", ["fast", "reference"])
def test_recompute_preemption(stepper):
    # One-token blocks, 5 blocks. A and B (prompt 2, output 3) prefill together (4 blocks).
    # Both need a block to decode, one is free: B (newest) is preempted, loses 2 tokens.
    # B re-prefills, is preempted again at the next decode, and runs after A finishes.
    two = Requests.from_lists([0, 0], [2, 2], [3, 3])
    res = run(two, make_config("vllm", token_budget=16, kv=dict(block_tokens=1, blocks=5)),
              stepper)
    assert phases(res) == ["Ap2 Bp2", "Ad1", "Bp2", "Ad1", "Ad1", "Bp2", "Bd1", "Bd1", "Bd1"]
    assert list(res.iterations.kv_blocks_used) == [4, 3, 5, 4, 0, 2, 3, 4, 0]
    assert list(res.requests.preemptions) == [0, 2]
    assert list(res.requests.recomputed_tokens) == [0, 4]
    assert list(res.requests.finish_s) == pytest.approx([5 * T, 9 * T])
    # Conservation: prefill tokens processed = prompts + recomputed tokens.
    assert res.iterations.prefill_tokens.sum() == 4 + 4


@pytest.mark.parametrize("stepper", ["fast", "reference"])
def test_swap_preemption(stepper):
    # As above, but B's 2 blocks go to host memory at 1 ms per block each way (1000 bytes at
    # 1e6 bytes/s). B swaps back in once A has finished, with no recompute.
    two = Requests.from_lists([0, 0], [2, 2], [3, 3])
    kv = dict(block_tokens=1, blocks=5, preemption="swap", host_blocks=10, block_bytes=1000,
              swap_bytes_per_s=1e6)
    res = run(two, make_config("vllm", token_budget=16, kv=kv), stepper)
    assert phases(res) == ["Ap2 Bp2", "Ad1", "Ad1", "Ad1", "Bd1", "Bd1", "Bd1"]
    assert list(res.iterations.duration_s) == pytest.approx(
        [T, T + 0.002, T, T, T + 0.002, T, T])
    assert list(res.requests.swapped_bytes) == [0, 4000]
    assert list(res.requests.recomputed_tokens) == [0, 0]
    assert list(res.requests.preemptions) == [0, 1]


def test_swap_falls_back_to_recompute_when_host_is_full():
    two = Requests.from_lists([0, 0], [2, 2], [3, 3])
    kv = dict(block_tokens=1, blocks=5, preemption="swap", host_blocks=1)
    res = run(two, make_config("vllm", token_budget=16, kv=kv))
    assert res.requests.swapped_bytes[1] == 0
    assert res.requests.recomputed_tokens[1] > 0


def test_prompt_longer_than_budget_is_rejected_by_non_chunking_systems():
    reqs = Requests.from_lists([0, 0], [600, 100], [5, 5])
    res = run(reqs, make_config("vllm", token_budget=512))
    assert list(res.requests.status) == ["rejected", "finished"]
    chunked = run(reqs, make_config("sarathi", token_budget=512))
    assert list(chunked.requests.status) == ["finished", "finished"]


def test_request_longer_than_max_model_len_is_rejected():
    reqs = Requests.from_lists([0, 0], [100, 100], [50, 5])
    res = run(reqs, make_config("sarathi", max_model_len=120))
    assert list(res.requests.status) == ["rejected", "finished"]


def test_until_stops_the_clock():
    reqs = Requests.from_lists([0, 0, 10.0], [5, 5, 5], [1000, 3, 3])
    res = run_engine(reqs, make_config("sarathi"), Staircase(), until_s=1.0)
    assert res.stopped_early
    assert res.iterations.start_s.max() < 1.0
    # The request due at 10 s had not arrived when the run stopped: it is not in the records,
    # and the run still counts as stopped early.
    assert list(res.requests.status) == ["running", "finished"]


@pytest.mark.parametrize("stepper", ["fast", "reference"])
def test_overloaded_run_stops_at_the_in_system_cap(stepper):
    # FasterTransformer at twice its cycle capacity: the queue grows without bound, so the
    # cap ends the run early and says why.
    import numpy as np
    n = 5000
    reqs = Requests.from_lists(np.arange(n) * 0.1, [129] * n, [112] * n)
    res = run_engine(reqs, make_config("fastertransformer"), Staircase(), stepper=stepper,
                     max_in_system=200)
    assert res.stop_reason == "max_in_system"
    assert res.stopped_early
    in_system = res.requests.status.isin(["waiting", "running", "swapped"]).sum()
    assert in_system == 201
    assert res.end_s < 500 * 0.1


def test_stop_reasons():
    reqs = Requests.from_lists([0, 0], [5, 5], [3, 3])
    assert run_engine(reqs, make_config("sarathi"), Staircase()).stop_reason == "drained"
    timed = run_engine(reqs, make_config("sarathi"), Staircase(), until_s=0.05)
    assert timed.stop_reason == "time"


@pytest.mark.parametrize("stepper", ["fast", "reference"])
def test_static_batching_charges_padding(stepper):
    # Cost c + a*b with c = 1 ms, a = 10 ms/token. A (1 prompt, 1 output) and B (1, 3) form one
    # batch. After A finishes, static batching still computes A's slot: 2 tokens per
    # iteration (21 ms); FasterTransformer charges only B's token (11 ms).
    from servesim.engine.cost import PiecewiseLinear
    reqs = Requests.from_lists([0, 0], [1, 1], [1, 3])
    cost = PiecewiseLinear(c_s=0.001, a_s=0.01, b0=0)
    static = run_engine(reqs, make_config("static"), cost, stepper=stepper)
    ft = run_engine(reqs, make_config("fastertransformer"), cost, stepper=stepper)
    assert list(static.iterations.duration_s) == pytest.approx([0.021] * 4)
    assert list(ft.iterations.duration_s) == pytest.approx([0.021, 0.021, 0.011, 0.011])
    assert list(static.iterations.decode_tokens) == [0, 2, 1, 1]   # real tokens only
