"""The reference's WAIT comparison (Ao, Luo, Simchi-Levi, Wang 2025): on a memory-limited
engine with short outputs (Llama-2-7B on an A100, roofline cost, 512 prefill and 20 decode
tokens), the empirical lambda* orders WAIT >= Sarathi-Serve >= vLLM. The reference reports the
transitions at about 23, 22 and 19 requests/s on its simulator; examples/wait_memory.toml cuts
the KV cache to 800 blocks (12,800 tokens), where the compute limit is lambda* = mu*/532 = 21.6.

Tolerances. Each system's lambda* is bracketed by 5 bisection steps on [14, 24] (width 0.3125
req/s), 4 seeds x 120 s per midpoint, each midpoint judged by the stability verdict at 99%
confidence (inconclusive counts as unstable, so ``lo`` is a conservative bound). The runs are
deterministic for fixed seeds; on seeds 0-3 and 4-7 the brackets were WAIT [20.9, 21.2] /
[21.5, 21.8], Sarathi [18.1, 18.4] / [18.4, 18.7], vLLM [17.4, 17.8] / [17.8, 18.1]. So:

- WAIT vs Sarathi is asserted strictly (WAIT's lo above Sarathi's hi): the gap, ~3 req/s, is
  ten bracket widths;
- Sarathi vs vLLM, ~0.6 req/s or two widths, is asserted on the estimates (>=), which is the
  claim and leaves room for a one-width shift of either bracket;
- WAIT is within 5% of the compute lambda* (it reached 97-100%; short horizons cannot resolve
  the last few percent).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from servesim import load_scenario, simulate

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("servesim_example_wait_memory",
                                                  EXAMPLES / "wait_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_wait_sarathi_vllm_order_of_empirical_lambda_star(example):
    frame = example.lambda_stars(seeds=range(4), horizon_s=120.0, lo=14.0, hi=24.0,
                                 iterations=5).set_index("policy")
    wait, sarathi, vllm = (frame.loc[p] for p in ("wait", "sarathi", "vllm"))
    assert frame.hi.sub(frame.lo).tolist() == pytest.approx([10 / 2**5] * 3)
    assert wait.lo > sarathi.hi
    assert sarathi.estimate >= vllm.estimate
    assert wait.lo >= 0.95 * wait.theory_lambda_star
    assert wait.theory_lambda_star == pytest.approx(21.61, abs=0.01)


def test_wait_avoids_the_preemptions_that_cost_sarathi_and_vllm():
    # The mechanism: at 20 req/s WAIT's one request per stage fits the cache; Sarathi and vLLM
    # admit while blocks are free and then preempt (recompute) to let decoders grow.
    preempted = {}
    for system in ("wait", "sarathi", "vllm"):
        overrides = [f"engine.batching={system}", "run.horizon_s=30"]
        if system != "wait":
            overrides.append("engine.wait=")
        res = simulate(load_scenario(EXAMPLES / "wait_memory.toml", overrides))
        preempted[system] = int(res.requests.preemptions.sum())
        assert res.iterations.kv_blocks_used.max() <= 800
    assert preempted["wait"] == 0
    assert preempted["sarathi"] > 0 and preempted["vllm"] > 0
