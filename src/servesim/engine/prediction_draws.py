"""The predictions an ordered run reads, drawn once at its start; both ordered engines use them.

Streams: the cheap bit from ``Streams(seed).get("bit")``, the predictor's output (or TRAIL's
initial classification) from ``Streams(seed).get("predictor")``, which a refining predictor
keeps drawing from during the run. Draws are made for every request in arrival order, so runs
with different orderings over the same requests and seed stay paired.

Predictions are rounded to a grid of 2**-16 token (``quantize``). Ranks then add and subtract
whole token counts without rounding error (values stay far below 2**36 tokens), so a tie in
exact arithmetic is a tie in floats in every engine and under every way of writing the rank:
the fast ordered replica keeps static keys where the ordered stepper adds ages, and both must
break the same ties the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from servesim.core.rng import Streams
from servesim.policies.ordering import Ordering
from servesim.predictors import Predictor
from servesim.predictors import Trail as TrailPredictor
from servesim.workload.requests import Requests

GRID = 2.0 ** -16   # tokens


def quantize(tokens):
    """Round predicted lengths (float or array, tokens) to the grid; NaN stays NaN."""
    return np.round(np.asarray(tokens, dtype=np.float64) / GRID) * GRID


@dataclass
class Draws:
    """Per-request draws, as lists of Python floats and bools (indexed by request id)."""

    pred0: list[float]    # the initial prediction, tokens (NaN: none read)
    bit: list[float]      # the cheap bit (NaN without a bit predictor)
    full: list[bool]      # whether the request gets (and pays for) the expensive prediction
    stream: np.random.Generator   # the predictor's stream, for refinements
    trail_state: Any = None       # a refining predictor's per-request posterior


def draw(requests: Requests, ordering: Ordering, predictor: Predictor | None,
         bit_predictor: Predictor | None, seed: int) -> Draws:
    """Draw every request's bit and prediction (see the module docstring)."""
    n = len(requests)
    if bit_predictor is None:
        bits = [math.nan] * n
    else:
        bits = bit_predictor.predict(requests.output_tokens, requests.prompt_tokens,
                                     rng=Streams(seed).get("bit")).tolist()
    stream = Streams(seed).get("predictor")
    state = None
    if predictor is None:
        pred = np.full(n, np.nan)
    elif isinstance(predictor, TrailPredictor):
        state = predictor.start(requests.output_tokens, rng=stream)
        pred = predictor.prediction(state)
    else:
        pred = predictor.predict(requests.output_tokens, requests.prompt_tokens, rng=stream)
    pred = quantize(pred)
    bits = [float(b) for b in bits]
    full = [ordering.needs_prediction(b) for b in bits]
    # A request that never gets the expensive prediction has none on record.
    pred0 = [float(y) if f or not ordering.needs_bit else math.nan
             for y, f in zip(pred.tolist(), full, strict=True)]
    return Draws(pred0, bits, full, stream, state)
