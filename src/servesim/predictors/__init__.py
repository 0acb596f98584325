"""Output-length predictors: oracle, noisy, binned, one bit, prompt-based and TRAIL's refined one.

Every predictor is built by ``make_predictor(spec)`` from a table whose keys the theory side
shares, draws from its own seeded stream, and offers ``predict(true_sizes, prompt_sizes, rng)``.
"""

from servesim.predictors.base import PredictionCost, Predictor
from servesim.predictors.classes import Binned, OneBit
from servesim.predictors.noisy import (
    ExponentialNoise,
    GaussianNoise,
    LogNormalNoise,
    Oracle,
    UniformNoise,
)
from servesim.predictors.prompt import PromptRegression, fit_prompt_spec, load_alpacaeval
from servesim.predictors.registry import PREDICTORS, make_predictor
from servesim.predictors.trail import Trail, TrailState

__all__ = [
    "PREDICTORS",
    "Binned",
    "ExponentialNoise",
    "GaussianNoise",
    "LogNormalNoise",
    "OneBit",
    "Oracle",
    "PredictionCost",
    "Predictor",
    "PromptRegression",
    "Trail",
    "TrailState",
    "UniformNoise",
    "fit_prompt_spec",
    "load_alpacaeval",
    "make_predictor",
]
