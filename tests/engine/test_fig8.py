"""Paper Fig. 8: the exact batches of the four named systems, on both steppers.

A, B and C are already decoding with 2, 4 and 3 decode tokens left; D and E each have one prefill
and one decode token and arrive during batch 1. b_max = 4, except Orca, which needs 5 (the figure
is schematic about the budget).
"""

import pytest
from engine_cases import make_config

from servesim.engine.cost import Staircase
from servesim.engine.replica import run_engine
from servesim.workload.requests import Requests

FIG8 = {
    "vllm": (4, "[Ad Bd Cd] [Dp Ep] [Ad Bd Cd Dd] [Bd Cd Ed] [Bd]"),
    "orca": (5, "[Ad Bd Cd] [Ad Bd Cd Dp Ep] [Bd Cd Dd Ed] [Bd]"),
    "fastertransformer": (4, "[Ad Bd Cd] [Ad Bd Cd] [Bd Cd] [Bd] [Dp Ep] [Dd Ed]"),
    "sarathi": (4, "[Ad Bd Cd] [Ad Bd Cd Dp] [Bd Cd Dd Ep] [Bd Ed]"),
}


def batches(system: str, stepper: str) -> str:
    budget, _ = FIG8[system]
    requests = Requests.from_lists([0, 0, 0, 0.001, 0.002], [1] * 5, [2, 4, 3, 1, 1])
    run = run_engine(requests, make_config(system, token_budget=budget), Staircase(),
                     stepper=stepper, start_decoding=[0, 1, 2], record_batches=True)
    return " ".join("[" + " ".join(f"{'ABCDE'[i]}{phase}" for i, phase, _ in batch) + "]"
                    for batch in run.batches)


@pytest.mark.parametrize("stepper", ["fast", "reference"])
@pytest.mark.parametrize("system", sorted(FIG8))
def test_fig8_batches(system, stepper):
    assert batches(system, stepper) == FIG8[system][1]
