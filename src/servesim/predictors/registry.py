"""``make_predictor(spec)``: the one way to build a predictor from a table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from servesim.core.errors import ConfigError
from servesim.core.fields import require, table
from servesim.core.registry import lookup
from servesim.predictors.base import Predictor, as_rng, params, parse_cost
from servesim.predictors.classes import Binned, OneBit
from servesim.predictors.learned.predictor import LearnedPredictor
from servesim.predictors.noisy import (
    ExponentialNoise,
    GaussianNoise,
    LogNormalNoise,
    Oracle,
    UniformNoise,
)
from servesim.predictors.prompt import PromptRegression
from servesim.predictors.table import PredictionTable
from servesim.predictors.trail import Trail

# kind -> (class, required keys, optional keys)
PREDICTORS: dict[str, tuple[type[Predictor], tuple[str, ...], tuple[str, ...]]] = {
    "oracle": (Oracle, (), ()),
    "lognormal": (LogNormalNoise, ("sigma",), ()),
    "exponential": (ExponentialNoise, (), ()),
    "uniform": (UniformNoise, ("alpha", "beta"), ()),
    "gaussian": (GaussianNoise, ("mae",), ()),
    "binned": (Binned, ("edges", "confusion"), ("other", "report")),
    "one_bit": (OneBit, ("threshold", "p_short_as_long", "p_long_as_short"), ()),
    "prompt": (PromptRegression, ("model",), ("intercept", "slope", "edges", "means")),
    "trail": (Trail, ("bins", "refine_every"), ("confusion",)),
    "learned": (LearnedPredictor, ("model", "prompts"), ("offset",)),
    "table": (PredictionTable, ("path",), ("column", "offset")),
}


def make_predictor(spec: Mapping[str, Any], *, rng: np.random.Generator | None = None,
                   seed: int = 0, field: str = "policy.predictor") -> Predictor:
    """Build a predictor from a table such as ``{kind = "lognormal", sigma = 0.5}``.

    Its noise comes from ``rng`` if given, else from ``Streams(seed).get("predictor")``.

    Raises ConfigError naming the full field (``policy.predictor.sigma``) if the kind is unknown
    (suggesting the closest), a key is unknown or missing, or a value is out of range.
    """
    spec = table(spec, field)
    cls, required, optional = lookup(PREDICTORS, require(spec, "kind", field), f"{field}.kind")
    params(spec, field, required, optional)
    cost = parse_cost(spec.get("cost"), f"{field}.cost")
    try:
        return cls(spec, as_rng(rng, seed), cost)
    except ConfigError as err:
        if not err.field.startswith("predictor."):
            raise
        name = f"{field}.{err.field.split('.', 1)[1]}"
        hint = None if err.suggestion is None else [err.suggestion]
        raise ConfigError(name, err.value, err.expected, choices=hint) from None
