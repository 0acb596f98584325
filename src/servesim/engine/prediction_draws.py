"""The predictions an ordered run reads, drawn once at its start; both ordered engines use them.

Streams: the cheap bit from ``Streams(seed).get("bit")``, the predictor's output (or TRAIL's
initial classification) from ``Streams(seed).get("predictor")``, which a refining predictor
keeps drawing from during the run. Draws are made for every request in arrival order, so runs
with different orderings over the same requests and seed stay paired.

Draws are made a chunk of requests at a time, as the engine pulls them from its request source,
for the predictors whose draws do not depend on how the requests are grouped (``chunkable``:
one independent draw per request, as numpy gives the same stream in one call or many). The
others need every request before the run: the binned predictor (it draws the confusion of its
wrong reports after the reports of all requests) and TRAIL's (its posterior is one table, and
its refinements share the predictor's stream with the initial draws).

Predictions are rounded to a grid of 2**-16 token (``quantize``). Ranks then add and subtract
whole token counts without rounding error (values stay far below 2**36 tokens), so a tie in
exact arithmetic is a tie in floats in every engine and under every way of writing the rank:
the fast ordered replica keeps static keys where the ordered stepper adds ages, and both must
break the same ties the same way.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from servesim.core.errors import SimulationError
from servesim.core.rng import Streams
from servesim.policies.ordering import Ordering
from servesim.predictors import (
    ExponentialNoise,
    GaussianNoise,
    LogNormalNoise,
    OneBit,
    Oracle,
    Predictor,
    PromptRegression,
    UniformNoise,
)
from servesim.predictors import Trail as TrailPredictor
from servesim.workload.requests import Requests

GRID = 2.0 ** -16   # tokens


def quantize(tokens):
    """Round predicted lengths (float or array, tokens) to the grid; NaN stays NaN."""
    return np.round(np.asarray(tokens, dtype=np.float64) / GRID) * GRID


# Predictors that draw one value per request, independently, in request order.
_PER_REQUEST = (Oracle, LogNormalNoise, ExponentialNoise, UniformNoise, GaussianNoise,
                PromptRegression)


def chunkable(predictor: Predictor | None, bit_predictor: Predictor | None) -> bool:
    """Whether the draws may be made a chunk of requests at a time with the same values."""
    return (predictor is None or type(predictor) in _PER_REQUEST) and \
        (bit_predictor is None or type(bit_predictor) is OneBit)


class Draws:
    """Per-request draws, as lists of Python floats and bools indexed by request id, grown by
    ``extend`` in request order.

    Attributes:
        pred0: the initial prediction, tokens (NaN: none read).
        bit: the cheap bit (NaN without a bit predictor).
        full: whether the request gets (and pays for) the expensive prediction.
        stream: the predictor's stream, for refinements.
        trail_state: a refining predictor's per-request posterior (drawn once, for every request).
    """

    def __init__(self, ordering: Ordering, predictor: Predictor | None,
                 bit_predictor: Predictor | None, seed: int) -> None:
        self.ordering, self.predictor, self.bit_predictor = ordering, predictor, bit_predictor
        self.pred0: list[float] = []
        self.bit: list[float] = []
        self.full: list[bool] = []
        self.stream: np.random.Generator = Streams(seed).get("predictor")
        self.bit_stream = None if bit_predictor is None else Streams(seed).get("bit")
        self.trail_state: Any = None

    def extend(self, requests: Requests) -> None:
        """Draw the bit and prediction of the next ``requests`` (see the module docstring).

        Raises SimulationError if a predictor that needs every request is extended twice.
        """
        n = len(requests)
        if self.pred0 and not chunkable(self.predictor, self.bit_predictor):
            raise SimulationError("these predictions are drawn for every request at once")
        if self.bit_predictor is None:
            bits = [math.nan] * n
        else:
            bits = self.bit_predictor.predict(requests.output_tokens, requests.prompt_tokens,
                                              rng=self.bit_stream).tolist()
        predictor = self.predictor
        if predictor is None:
            pred = np.full(n, np.nan)
        elif isinstance(predictor, TrailPredictor):
            self.trail_state = predictor.start(requests.output_tokens, rng=self.stream)
            pred = predictor.prediction(self.trail_state)
        else:
            pred = predictor.predict(requests.output_tokens, requests.prompt_tokens,
                                     rng=self.stream)
        pred = quantize(pred)
        bits = [float(b) for b in bits]
        ordering = self.ordering
        full = [ordering.needs_prediction(b) for b in bits]
        # A request that never gets the expensive prediction has none on record.
        self.pred0.extend(float(y) if f or not ordering.needs_bit else math.nan
                          for y, f in zip(pred.tolist(), full, strict=True))
        self.bit.extend(bits)
        self.full.extend(full)
