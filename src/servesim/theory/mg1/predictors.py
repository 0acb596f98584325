"""Predictor models: the law of the prediction y given the true size x, h(y | x).

The spec dicts are the ones the simulator's predictors sample from (same keys):

- ``{kind = "oracle"}``: y = x, a point mass (no density; handled as an atom).
- ``{kind = "exponential"}``: y ~ Exp(mean x), h(y|x) = exp(-y/x)/x.
- ``{kind = "lognormal", sigma = s}``: y = x exp(s Z), multiplicative noise with median x.
- ``{kind = "uniform", alpha = a, beta = b}``: y ~ U[b x, a x], 0 <= b < a.
- ``{kind = "gaussian", mae = m}``: y = x + N(0, s^2) with s = m sqrt(pi/2), so E|y - x| = m.
  Predictions are *not* clipped at 0: a negative prediction is a valid rank (it sorts first),
  and clipping would put an atom at 0 that the density does not have.
- ``{kind = "one_bit", threshold = T, p_short_as_long = p, p_long_as_short = q}``: y in {0, 1};
  a job with x <= T is marked 1 ("long") with probability p, a job with x > T is marked 0 with
  probability q.

Each model gives a conditional quadrature ``nodes(x) -> (y, w)`` with E[phi(Y) | X = x] ~=
sum w phi(y): atoms for discrete models, Gauss-Legendre in probability space v = H(y | x) for
continuous ones (phi bounded keeps that rule accurate).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

from servesim.core.fields import check_keys, number, require, table
from servesim.core.registry import lookup

__all__ = ["BitModel", "Continuous", "Oracle", "SkipModel", "make_predictor", "threshold_bit"]

# Panel edges in probability space: graded towards both ends, where ppf(v) changes fastest.
_EDGES = np.array([0.0, 1e-5, 1e-3, 0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.98, 0.999, 1 - 1e-5, 1.0])


def composite_gl(edges: Any, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of a composite Gauss-Legendre rule on the panels ``edges``."""
    return _composite_gl(tuple(np.asarray(edges, dtype=float)), order)


@functools.cache
def _composite_gl(edges_t: tuple[float, ...], order: int) -> tuple[np.ndarray, np.ndarray]:
    edges = np.asarray(edges_t)
    t, w = np.polynomial.legendre.leggauss(order)
    lo, hi = edges[:-1, None], edges[1:, None]
    nodes = (lo + (hi - lo) * (t + 1) / 2).ravel()
    weights = ((hi - lo) * w / 2).ravel()
    return nodes, weights


@dataclass(frozen=True)
class Oracle:
    """y = x."""

    spec: Mapping[str, Any]
    continuous = False

    def nodes(self, x: Any, order: int = 6) -> tuple[np.ndarray, np.ndarray]:
        x = np.atleast_1d(np.asarray(x, dtype=float))
        return x[:, None], np.ones((x.size, 1))

    def cdf(self, y: Any, x: Any) -> np.ndarray:
        return (np.asarray(x) <= np.asarray(y)).astype(float)


@dataclass(frozen=True)
class Continuous:
    """A prediction with a density h(y | x), given by its conditional CDF and quantile."""

    spec: Mapping[str, Any]
    cdf_fn: Callable[[Any, Any], np.ndarray]
    ppf_fn: Callable[[Any, Any], np.ndarray]
    scale_kinks: tuple[float, ...] = ()
    continuous = True

    def cdf(self, y: Any, x: Any) -> np.ndarray:
        return self.cdf_fn(np.asarray(y, dtype=float), np.asarray(x, dtype=float))

    def ppf(self, v: Any, x: Any) -> np.ndarray:
        return self.ppf_fn(np.asarray(v, dtype=float), np.asarray(x, dtype=float))

    def nodes(self, x: Any, order: int = 6) -> tuple[np.ndarray, np.ndarray]:
        x = np.atleast_1d(np.asarray(x, dtype=float))
        v, w = composite_gl(_EDGES, order)
        return self.ppf(v[None, :], x[:, None]), np.broadcast_to(w, (x.size, w.size))

    def nodes_between(self, y1: np.ndarray, y2: np.ndarray, x: Any,
                      order: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """Nodes for E[phi(Y); y1 < Y < y2 | x] (x a scalar or one per y1): (len(y1), k)."""
        x = np.asarray(x, dtype=float)
        x = x[:, None] if x.ndim else x
        h1, h2 = self.cdf(y1[:, None], x), self.cdf(y2[:, None], x)
        t, w = composite_gl(np.linspace(0.0, 1.0, 4), order)
        v = h1 + (h2 - h1) * t
        w = (h2 - h1) * w
        # An empty range (h1 == h2, e.g. both 1 far in the tail) has zero weight: keep its nodes
        # finite instead of asking for the quantile 1.
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.clip(np.where(w > 0, v, 0.5), 0.0, 1.0 - 1e-16)
            y = np.where(w > 0, self.ppf(v, x), 0.0)
        return y, w


@dataclass(frozen=True)
class BitModel:
    """A one-bit prediction: y = 1 ("long") with probability ``p_long(x)``, else y = 0.

    A bit with a step at ``threshold`` (p for x <= T, 1 - q above) has its moments in closed
    form; otherwise (the bit of a noisy prediction) they are integrated.
    """

    spec: Mapping[str, Any]
    p_long: Callable[[Any], np.ndarray]
    threshold: float | None = None
    p: float = 0.0
    q: float = 0.0
    continuous = False

    def moment(self, sizes: Any, k: int, short: bool = False) -> float:
        """E[S^k; bit = 1], or E[S^k; bit = 0] if ``short``."""
        if self.threshold is not None:
            below = sizes.partial(k, self.threshold)
            above = sizes.partial(k, np.inf) - below
            long = self.p * below + (1 - self.q) * above
        else:
            long = float(sizes.expect(lambda x: x**k * self.p_long(x)))
        return float(sizes.partial(k, np.inf) - long) if short else float(long)

    def nodes(self, x: Any, order: int = 6) -> tuple[np.ndarray, np.ndarray]:
        x = np.atleast_1d(np.asarray(x, dtype=float))
        p = np.broadcast_to(np.asarray(self.p_long(x), dtype=float), x.shape)
        y = np.broadcast_to(np.array([0.0, 1.0]), (x.size, 2))
        return y, np.stack([1.0 - p, p], axis=1)


@dataclass(frozen=True)
class SkipModel:
    """SkipPredict's two-stage prediction: a bit for every job, then y only for bit-1 jobs.

    A bit-0 job gets y = -inf (it ranks ahead of every bit-1 job and ties with the other bit-0
    jobs, so those run FCFS); a bit-1 job gets y from ``inner``, independent of its bit given x.
    """

    bit: BitModel
    inner: Any
    spec: Mapping[str, Any] | None = None
    continuous = False

    def nodes(self, x: Any, order: int = 6) -> tuple[np.ndarray, np.ndarray]:
        x = np.atleast_1d(np.asarray(x, dtype=float))
        p = np.broadcast_to(np.asarray(self.bit.p_long(x), dtype=float), x.shape)[:, None]
        y, w = self.inner.nodes(x, order)
        ninf = np.full((x.size, 1), -np.inf)
        return np.concatenate([ninf, y], axis=1), np.concatenate([1.0 - p, p * w], axis=1)


def threshold_bit(predictor: Any, threshold: float) -> BitModel:
    """The bit 1{y > T} of a predictor (for the oracle, 1{x > T})."""
    spec = {"kind": "threshold_bit", "threshold": threshold,
            "of": dict(predictor.spec) if predictor is not None else {"kind": "oracle"}}
    if predictor is None or isinstance(predictor, Oracle):
        return BitModel(spec, lambda x: (np.asarray(x, dtype=float) > threshold).astype(float),
                        threshold=threshold)
    if isinstance(predictor, BitModel):
        return predictor
    return BitModel(spec, lambda x: 1.0 - predictor.cdf(threshold, x))


def one_bit_model(threshold: float, p: float = 0.0, q: float = 0.0) -> BitModel:
    """Bit 1 with probability p for x <= T and 1 - q for x > T."""
    spec = {"kind": "one_bit", "threshold": threshold, "p_short_as_long": p,
            "p_long_as_short": q}
    return BitModel(spec, lambda x: np.where(np.asarray(x, dtype=float) > threshold, 1.0 - q, p),
                    threshold=threshold, p=p, q=q)


# -- construction from a spec --------------------------------------------------------------------


def _oracle(spec: Mapping[str, Any], fld: str) -> Any:
    check_keys(spec, fld, ["kind"])
    return Oracle({"kind": "oracle"})


def _exponential(spec: Mapping[str, Any], fld: str) -> Any:
    check_keys(spec, fld, ["kind"])
    return Continuous({"kind": "exponential"},
                      lambda y, x: -np.expm1(-np.maximum(y, 0.0) / x),
                      lambda v, x: -x * np.log1p(-v))


def _lognormal(spec: Mapping[str, Any], fld: str) -> Any:
    check_keys(spec, fld, ["kind", "sigma"])
    s = number(require(spec, "sigma", fld), f"{fld}.sigma", low=0, high=20)
    if s == 0:   # no noise: the same law as the oracle, which has no density
        return Oracle({"kind": "lognormal", "sigma": 0.0})

    def cdf(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return special.ndtr(np.log(np.maximum(y, 0.0) / x) / s)

    return Continuous({"kind": "lognormal", "sigma": s}, cdf,
                      lambda v, x: x * np.exp(s * special.ndtri(v)))


def _uniform(spec: Mapping[str, Any], fld: str) -> Any:
    check_keys(spec, fld, ["kind", "alpha", "beta"])
    b = number(require(spec, "beta", fld), f"{fld}.beta", low=0)
    a = number(require(spec, "alpha", fld), f"{fld}.alpha", low=b, low_open=True)
    # alpha == beta (a point mass at beta x) has no density; the sampler refuses it too.
    # h(y|x) has corners at y = b x and y = a x, and the SPRPT window y < Y < y + x meets them
    # where y / x is b, a, b - 1 or a - 1: fixed ratios, so tables integrate over s = y / x.
    kinks = tuple(sorted({k for k in (b, a, b - 1, a - 1) if k > 0}))
    return Continuous({"kind": "uniform", "alpha": a, "beta": b},
                      lambda y, x: np.clip((y - b * x) / ((a - b) * x), 0.0, 1.0),
                      lambda v, x: x * (b + (a - b) * v), kinks)


def _gaussian(spec: Mapping[str, Any], fld: str) -> Any:
    check_keys(spec, fld, ["kind", "mae"])
    m = number(require(spec, "mae", fld), f"{fld}.mae", low=0)
    if m == 0:
        return Oracle({"kind": "gaussian", "mae": 0.0})
    s = m * math.sqrt(math.pi / 2)   # E|N(0, s^2)| = s sqrt(2/pi)
    return Continuous({"kind": "gaussian", "mae": m}, lambda y, x: special.ndtr((y - x) / s),
                      lambda v, x: x + s * special.ndtri(v))


def _one_bit(spec: Mapping[str, Any], fld: str) -> Any:
    check_keys(spec, fld, ["kind", "threshold", "p_short_as_long", "p_long_as_short"])
    t = number(require(spec, "threshold", fld), f"{fld}.threshold", low=0)
    p = number(spec.get("p_short_as_long", 0.0), f"{fld}.p_short_as_long", low=0, high=1)
    q = number(spec.get("p_long_as_short", 0.0), f"{fld}.p_long_as_short", low=0, high=1)
    return one_bit_model(t, p, q)


PREDICTOR_KINDS = {"oracle": _oracle, "exponential": _exponential, "lognormal": _lognormal,
                   "uniform": _uniform, "gaussian": _gaussian, "one_bit": _one_bit}


def make_predictor(spec: Any, fld: str = "predictor") -> Any:
    """Build a predictor model from its spec dict; None means the oracle (y = x).

    Raises ConfigError for an unknown kind (naming the closest), unknown keys or bad values.
    """
    if spec is None:
        return Oracle({"kind": "oracle"})
    if isinstance(spec, Oracle | Continuous | BitModel | SkipModel):
        return spec
    spec = table(spec, fld)
    return lookup(PREDICTOR_KINDS, require(spec, "kind", fld), f"{fld}.kind")(spec, fld)
