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

from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from servesim.core.fields import integer, number
from servesim.predictors.base import Predictor, bin_of, edges_array
from servesim.predictors.classes import confuse

# A likelihood floor keeps the posterior defined even when the report contradicts it entirely.
_FLOOR = 1e-12
# Engines refine a handful of rows per call; up to this many, ``refine`` takes a scalar path that
# skips the grouping machinery (the numerical steps are the same array operations either way).
_FEW_ROWS = 16
# Transition powers kept per predictor; engines use one or two distinct d.
_POWERS_KEPT = 256
_INT64 = np.dtype(np.int64)


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
        self._edges = self.edges.tolist()
        self._powers: dict[int, np.ndarray] = {}

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
        rng = self.rng if rng is None else rng
        if rows is not None:
            idx = rows if type(rows) is np.ndarray and rows.ndim == 1 else np.atleast_1d(rows)
            if idx.size <= _FEW_ROWS:
                out = self._refine_few(state, generated_tokens, idx, rng)
                if out is not None:
                    return out
        return self._refine_many(state, generated_tokens, rows, rng)

    def _refine_many(self, state: TrailState, generated_tokens, rows, rng) -> np.ndarray:
        """The vectorised update: rows grouped by d, one T^d product per group."""
        rows = np.arange(state.sizes.size) if rows is None else np.atleast_1d(rows)
        g = np.broadcast_to(np.asarray(generated_tokens, dtype=np.int64), rows.shape)
        d = g - state.refined_at_tokens[rows]
        moved = d > 0
        post = state.posterior[rows]
        for delta in np.unique(d[moved]):
            sel = d == delta
            post[sel] = post[sel] @ self._power(int(delta))
        if moved.any():
            remaining = state.sizes[rows[moved]] - g[moved]
            post[moved] = self._observe(post[moved], remaining, rng)
        state.posterior[rows] = post
        state.refined_at_tokens[rows] = np.maximum(state.refined_at_tokens[rows], g)
        return post @ self.midpoints

    def _refine_few(self, state: TrailState, generated_tokens, rows: np.ndarray,
                    rng: np.random.Generator) -> np.ndarray | None:
        """``_refine_many`` for a few rows that all moved by the same d (or none moved).

        Bit-identical to it: the same array operations on arrays of the same shape and layout, and
        the same generator calls; only the bookkeeping is done on Python scalars. Returns None,
        before touching ``state`` or ``rng``, when the rows need the grouped update.
        """
        if rows.dtype.kind not in "iu" or rows.size == 0:
            return None
        g = generated_tokens
        if type(g) is not np.ndarray or g.dtype is not _INT64:
            g = np.asarray(g, dtype=np.int64)
        if g.shape == rows.shape:
            gen = g.tolist()
        elif g.ndim == 0:
            gen = [int(g)] * rows.size
        else:
            return None
        ids = rows.tolist()
        at = state.refined_at_tokens
        delta = gen[0] - at.item(ids[0])
        for i, gi in zip(ids, gen, strict=True):
            if gi - at.item(i) != delta:
                return None
        if delta <= 0:
            return state.posterior[rows] @ self.midpoints
        prior = state.posterior[rows] @ self._power(delta)
        sizes = state.sizes
        remaining = [float(sizes.item(i)) - gi for i, gi in zip(ids, gen, strict=True)]
        # In place, but the same element-wise products, row sums and quotients as _observe.
        post = np.multiply(prior, self.likelihood.take(self._confused_bins(remaining, rng), axis=0),
                           out=prior)
        post /= np.add.reduce(post, 1, keepdims=True)
        state.posterior[rows] = post
        for i, gi in zip(ids, gen, strict=True):
            at[i] = gi
        return post @ self.midpoints

    def _confused_bins(self, remaining: list[float], rng: np.random.Generator) -> list[int]:
        """``confuse(bin_of(remaining, edges), k, confusion, "neighbour", rng)`` on a list.

        Draws exactly what ``confuse`` draws: one uniform per row, then one per wrong row.
        """
        edges = self._edges
        k = len(edges) - 1
        # Searching edges[1:k] only is bin_of's clip to 0 .. k - 1.
        report = [bisect_right(edges, x, 1, k) - 1 for x in remaining]
        p = self.confusion
        wrong = [i for i, u in enumerate(rng.random((len(report),)).tolist()) if u < p]
        if k < 2 or not wrong:
            return report
        for i, u in zip(wrong, rng.random((len(wrong),)).tolist(), strict=True):
            j = report[i]
            down = False if j == 0 else (True if j == k - 1 else u < 0.5)
            report[i] = j - 1 if down else j + 1
        return report

    def _power(self, d: int) -> np.ndarray:
        """T^d, kept per predictor so a call does not re-hash the transition matrix."""
        power = self._powers.get(d)
        if power is None:
            if len(self._powers) >= _POWERS_KEPT:
                self._powers.clear()
            power = self._powers[d] = _power(self.transition, d)
        return power

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
