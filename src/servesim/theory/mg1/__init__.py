"""The exact M/G/1 toolkit with predictions: closed forms, a numeric SOAP evaluator, predictor
models as conditional densities h(y | x), the price of misprediction and the best 1-bit threshold.

See docs/mg1.md for every formula and its source.
"""

from servesim.theory.mg1.api import (
    POLICIES,
    Evaluation,
    ThresholdChoice,
    best_one_bit_threshold,
    conditional_response_time,
    evaluate,
    mean_response_time,
    policy_rank,
    price_of_misprediction,
    soap_mean_response_time,
)
from servesim.theory.mg1.predictors import make_predictor
from servesim.theory.mg1.sizes import SizeDist, make_sizes
from servesim.theory.mg1.soap import Rank, SoapModel

__all__ = [
    "POLICIES",
    "Evaluation",
    "Rank",
    "SizeDist",
    "SoapModel",
    "ThresholdChoice",
    "best_one_bit_threshold",
    "conditional_response_time",
    "evaluate",
    "make_predictor",
    "make_sizes",
    "mean_response_time",
    "policy_rank",
    "price_of_misprediction",
    "soap_mean_response_time",
]
