"""TRAIL's length predictor: a bin classifier whose estimate is refined during decode.

Each refinement reads a noisy classification of the *remaining* length and applies the Bayesian
update posterior_t ∝ (posterior_{t-1} T^d) ⊙ L[report], where d is the number of tokens since the
last refinement, T moves mass from bin j to bin j - 1 with probability 1 / w_j per token (w_j the
bin width; the lowest bin absorbs) and L[report, j] = P(report | true bin j) is the classifier's
confusion model (the binned predictor's: right with probability 1 - confusion, else a neighbour).
The prediction is sum_j posterior_j * midpoint_j, a predicted remaining length.

Refinements happen every ``refine_every`` generated tokens, so an engine schedules them as events
(``next_refine``) and never touches a request per token.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from servesim.core.fields import integer, number
from servesim.predictors.base import Predictor, bin_of, edges_array
from servesim.predictors.classes import confuse

# A likelihood floor keeps the posterior defined even when the report contradicts it entirely.
_FLOOR = 1e-12


@dataclass
class TrailState:
    """Per-job refinement state: posterior over remaining-length bins and the last refine point."""

    sizes: np.ndarray  # true output lengths, tokens
    posterior: np.ndarray  # shape (n, k), rows sum to 1
    refined_at_tokens: np.ndarray  # generated tokens at the last refinement


class Trail(Predictor):
    """Refined bin predictor; see the module docstring. Keys: ``bins`` (edges), ``refine_every``
    (K tokens) and optional ``confusion`` (default 0: the classifier reads the true bin)."""

    kind = "trail"

    def __init__(self, spec, rng=None, cost=None):
        super().__init__(spec, rng, cost)
        self.edges = edges_array(spec["bins"], "predictor.bins")
        self.refine_every = integer(spec["refine_every"], "predictor.refine_every", low=1)
        self.confusion = number(spec.get("confusion", 0.0), "predictor.confusion", low=0, high=1)
        k = len(self.edges) - 1
        self.midpoints = (self.edges[:-1] + self.edges[1:]) / 2
        self.transition = _transition(tuple(np.diff(self.edges).tolist()))
        self.likelihood = _likelihood(k, self.confusion)

    def start(self, true_sizes, rng=None) -> TrailState:
        """Classify each job once at generated = 0; the posterior is the normalised likelihood."""
        x = np.asarray(true_sizes, dtype=np.float64)
        post = self._observe(np.ones((x.size, len(self.midpoints))), x,
                             self.rng if rng is None else rng)
        return TrailState(x, post, np.zeros(x.size, dtype=np.int64))

    def prediction(self, state: TrailState, rows=None) -> np.ndarray:
        """Predicted remaining length, sum_j posterior_j * midpoint_j."""
        post = state.posterior if rows is None else state.posterior[rows]
        return post @ self.midpoints

    def next_refine(self, generated_tokens):
        """The generated-token count of the next refinement after ``generated_tokens``."""
        g = np.asarray(generated_tokens)
        return (g // self.refine_every + 1) * self.refine_every

    def refine(self, state: TrailState, generated_tokens, rows=None, rng=None) -> np.ndarray:
        """Advance rows ``rows`` (default all) to ``generated_tokens`` and re-classify them.

        Returns their new predicted remaining lengths. Rows whose count did not move are returned
        unchanged (no new observation).
        """
        rows = np.arange(state.sizes.size) if rows is None else np.atleast_1d(rows)
        g = np.broadcast_to(np.asarray(generated_tokens, dtype=np.int64), rows.shape)
        d = g - state.refined_at_tokens[rows]
        moved = d > 0
        post = state.posterior[rows]
        for delta in np.unique(d[moved]):
            sel = d == delta
            post[sel] = post[sel] @ _power(self.transition, int(delta))
        if moved.any():
            remaining = state.sizes[rows[moved]] - g[moved]
            post[moved] = self._observe(post[moved], remaining, self.rng if rng is None else rng)
        state.posterior[rows] = post
        state.refined_at_tokens[rows] = np.maximum(state.refined_at_tokens[rows], g)
        return post @ self.midpoints

    def _observe(self, prior: np.ndarray, remaining: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
        k = len(self.midpoints)
        report = confuse(bin_of(remaining, self.edges), k, self.confusion, "neighbour", rng)
        post = prior * self.likelihood[report]
        return post / post.sum(axis=1, keepdims=True)

    def _draw(self, x, prompt, rng):
        return self.prediction(self.start(x, rng))


@lru_cache(maxsize=64)
def _transition(widths: tuple[float, ...]) -> np.ndarray:
    k = len(widths)
    t = np.eye(k)
    for j in range(1, k):
        move = min(1.0, 1.0 / widths[j])
        t[j, j], t[j, j - 1] = 1.0 - move, move
    t.flags.writeable = False
    return t


def _power(t: np.ndarray, d: int) -> np.ndarray:
    return _power_cached(t.tobytes(), t.shape[0], d)


@lru_cache(maxsize=256)
def _power_cached(raw: bytes, k: int, d: int) -> np.ndarray:
    return np.linalg.matrix_power(np.frombuffer(raw).reshape(k, k), d)


def _likelihood(k: int, p: float) -> np.ndarray:
    """L[report, j] = P(report | true bin j) under the neighbour-confusion model."""
    lik = np.full((k, k), _FLOOR)
    for j in range(k):
        nbrs = [b for b in (j - 1, j + 1) if 0 <= b < k]
        lik[j, j] = 1.0 - p if nbrs else 1.0
        for b in nbrs:
            lik[b, j] = p / len(nbrs)
    return np.maximum(lik, _FLOOR)
