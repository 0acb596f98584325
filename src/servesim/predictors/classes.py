"""Predictors that report a class rather than a number: length bins and a single bit."""

from __future__ import annotations

import numpy as np

from servesim.core.errors import ConfigError
from servesim.core.fields import number
from servesim.predictors.base import Predictor, bin_of, edges_array

CONFUSION_MODES = ("neighbour", "uniform")
REPORTS = ("midpoint", "index")


def confuse(true_bin: np.ndarray, k: int, p: float, mode: str,
            rng: np.random.Generator) -> np.ndarray:
    """Report the true bin with probability 1 - p, otherwise another bin.

    ``neighbour``: one of the adjacent bins, each with equal probability (an end bin has one
    neighbour). ``uniform``: any of the k - 1 other bins. Either way the report is wrong with
    probability exactly p (when k >= 2).
    """
    wrong = rng.random(true_bin.shape) < p
    out = true_bin.copy()
    if k < 2 or not wrong.any():
        return out
    j = true_bin[wrong]
    u = rng.random(j.shape)
    if mode == "uniform":
        other = np.floor(u * (k - 1)).astype(np.int64)
        out[wrong] = other + (other >= j)
    else:
        down = np.where(j == 0, False, np.where(j == k - 1, True, u < 0.5))
        out[wrong] = np.where(down, j - 1, j + 1)
    return out


class Binned(Predictor):
    """k length bins with the given edges; the true bin is reported with probability 1 - confusion.

    Bin j holds edges[j] <= x < edges[j+1]; sizes below the first edge count in bin 0 and sizes at
    or above the last edge in bin k - 1. Optional keys: ``other`` (``"neighbour"``, the default,
    or ``"uniform"``: where a wrong report lands) and ``report`` (``"midpoint"``, the default, or
    ``"index"``: what ``predict`` returns).
    """

    kind = "binned"

    def __init__(self, spec, rng=None, cost=None):
        super().__init__(spec, rng, cost)
        self.edges = edges_array(spec["edges"], "predictor.edges")
        self.confusion = number(spec["confusion"], "predictor.confusion", low=0, high=1)
        self.other = _choice(spec.get("other", "neighbour"), "predictor.other", CONFUSION_MODES)
        self.report = _choice(spec.get("report", "midpoint"), "predictor.report", REPORTS)

    @property
    def midpoints(self) -> np.ndarray:
        return (self.edges[:-1] + self.edges[1:]) / 2

    def predict_bin(self, true_sizes, rng=None) -> np.ndarray:
        """Return the reported bin index of each job."""
        x = np.asarray(true_sizes, dtype=np.float64)
        k = len(self.edges) - 1
        return confuse(bin_of(x, self.edges), k, self.confusion, self.other,
                       self.rng if rng is None else rng)

    def _draw(self, x, prompt, rng):
        b = self.predict_bin(x, rng)
        return b.astype(np.float64) if self.report == "index" else self.midpoints[b]


class OneBit(Predictor):
    """One bit b = 1{x > threshold} ("long"), flipped with the given error probabilities.

    A short job (x <= threshold) reads long with probability ``p_short_as_long``; a long job reads
    short with probability ``p_long_as_short``. ``predict`` returns the bit as 0.0 / 1.0.
    """

    kind = "one_bit"

    def __init__(self, spec, rng=None, cost=None):
        super().__init__(spec, rng, cost)
        self.threshold = number(spec["threshold"], "predictor.threshold")
        self.p = number(spec["p_short_as_long"], "predictor.p_short_as_long", low=0, high=1)
        self.q = number(spec["p_long_as_short"], "predictor.p_long_as_short", low=0, high=1)

    def _draw(self, x, prompt, rng):
        long = x > self.threshold
        flip = rng.random(x.shape) < np.where(long, self.q, self.p)
        return (long ^ flip).astype(np.float64)


def _choice(value, field: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(field, value, "one of " + ", ".join(choices), choices=choices)
    return value
