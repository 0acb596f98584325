"""Job-size laws for the M/G/1 toolkit: a continuous density or a single point mass.

Every law gives its CDF, quantiles, partial moments E[S^k; S <= x] (k = 0, 1, 2, with the strict
version E[S^k; S < x] that differs only at an atom) and an ``expect`` that integrates a
vector-valued function of the size with ``scipy.integrate.quad_vec``. Sizes are in the units the
caller chooses (seconds of service); the load is rho = lambda E[S].
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import integrate, special, stats

from servesim.core.errors import ConfigError
from servesim.core.fields import check_keys, number, require, table
from servesim.core.registry import lookup

__all__ = ["SizeDist", "make_sizes"]

# Relative tolerance of every size integral; the closed forms reach ~1e-8 with it.
_EPSREL = 1e-9
# Quantiles at which quad_vec starts its subdivision, so a narrow or far-off mass is not missed.
# Panels of the vectorised size rule (between logistic-spaced quantiles) and nodes per panel.
_PANELS = 48
_PANEL_ORDER = 12
_SPLIT_U = (1e-6, 1e-3, 0.05, 0.25, 0.5, 0.75, 0.95, 0.999, 1 - 1e-6)


@dataclass(frozen=True)
class SizeDist:
    """A size law: a frozen scipy continuous distribution, or a point mass at ``atom``.

    ``kind`` selects closed-form partial moments where known (exponential, lognormal, uniform,
    deterministic); other laws use numeric integration.
    """

    kind: str
    spec: Mapping[str, Any]
    dist: Any = None
    atom: float | None = None
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def mean(self) -> float:
        return self.partial(1, math.inf)

    @property
    def second_moment(self) -> float:
        return self.partial(2, math.inf)

    def cdf(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if self.atom is not None:
            return (x >= self.atom).astype(float)
        return self.dist.cdf(x)

    def ppf(self, u: Any) -> np.ndarray:
        u = np.asarray(u, dtype=float)
        if self.atom is not None:
            return np.full_like(u, self.atom)
        return self.dist.ppf(u)

    def partial(self, k: int, x: Any, strict: bool = False) -> Any:
        """E[S^k; S <= x] (or S < x if ``strict``), vectorised over ``x``."""
        xa = np.asarray(x, dtype=float)
        if self.atom is not None:
            hit = xa > self.atom if strict else xa >= self.atom
            out = np.where(hit, self.atom**k, 0.0)
        else:
            out = _PARTIAL.get(self.kind, _numeric_partial)(self, k, xa)
        return float(out) if np.ndim(out) == 0 else out

    def expect(self, fn: Callable[[float], Any], epsrel: float = _EPSREL,
               points: list[float] | None = None) -> Any:
        """E[fn(S)] for a function of one size returning a float or an array.

        ``points`` are sizes where ``fn`` jumps (e.g. a one-bit threshold).
        """
        if self.atom is not None:
            return np.asarray(fn(self.atom), dtype=float)
        pts = sorted(set(self._split_points()) | set(points or []))
        lo, hi = self.dist.support()
        res, _ = integrate.quad_vec(lambda x: self.dist.pdf(x) * np.asarray(fn(x), dtype=float),
                                    lo, hi, epsrel=epsrel, epsabs=0.0, points=pts, limit=4000)
        return res

    def expect_vec(self, fn: Callable[[np.ndarray], Any],
                   points: list[float] | None = None) -> Any:
        """E[fn(S)] for ``fn`` vectorised over sizes (returns shape (n,) or (n, k)).

        The body, up to the 1 - 1e-10 quantile, uses a composite Gauss-Legendre rule on panels
        between size quantiles (and ``points``, where ``fn`` may jump); the tail beyond uses
        ``quad_vec``, so a heavy tail's share of E[S^2] is not lost.
        """
        if self.atom is not None:
            return np.asarray(fn(np.array([self.atom])), dtype=float)[0]
        edges = self._panel_edges(points)
        t, w = _gl(_PANEL_ORDER)
        lo, hi = edges[:-1, None], edges[1:, None]
        xs = (lo + (hi - lo) * t).ravel()
        ws = ((hi - lo) * w).ravel() * self.dist.pdf(xs)
        vals = np.asarray(fn(xs), dtype=float)
        body = np.tensordot(ws, vals, axes=(0, 0))
        top, end = edges[-1], self.dist.support()[1]
        if top >= end:
            return body
        scale = max(float(np.max(np.abs(body))), 1e-300)
        tail, _ = integrate.quad_vec(
            lambda x: self.dist.pdf(x) * np.asarray(fn(np.array([x])), dtype=float)[0],
            top, end, epsabs=1e-13 * scale, epsrel=1e-8, limit=200)
        return body + tail

    def lattice(self, n: int, points: list[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Sizes at 3-point Gauss-Legendre nodes (in probability) of n equal cells, the top cells
        graded down to width ~1e-11 so the tail's share of E[S^2] is kept; (sizes, weights)."""
        if self.atom is not None:
            return np.array([self.atom]), np.array([1.0])
        cuts = tuple(float(c) for c in self.cdf(points)) if points else ()
        u, w = graded_cells(n, cuts)
        return self.dist.ppf(u), w

    def _panel_edges(self, points: list[float] | None) -> np.ndarray:
        if "edges" not in self._cache:
            u = 1 / (1 + np.exp(-np.linspace(-23, 23, _PANELS + 1)))
            lo, _ = self.dist.support()
            e = np.concatenate([[lo], self.dist.ppf(u)])
            self._cache["edges"] = np.unique(e[np.isfinite(e)])
        edges = self._cache["edges"]
        if points:
            inside = [p for p in points if edges[0] < p < edges[-1]]
            edges = np.unique(np.concatenate([edges, inside]))
        return edges

    def _split_points(self) -> list[float]:
        if "split" not in self._cache:
            pts = np.unique(self.dist.ppf(_SPLIT_U))
            self._cache["split"] = [float(p) for p in pts if np.isfinite(p)]
        return self._cache["split"]

    def kinks(self) -> list[float]:
        """Points where the CDF is not smooth (support ends, the atom)."""
        if self.atom is not None:
            return [self.atom]
        return [float(v) for v in self.dist.support() if np.isfinite(v) and v > 0]

    def describe(self) -> dict[str, Any]:
        return dict(self.spec)


@functools.cache
def _gl(order: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [0, 1]."""
    t, w = np.polynomial.legendre.leggauss(order)
    return (t + 1) / 2, w / 2


def graded_cells(n: int, cuts: tuple[float, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre (3-point) nodes and weights of n cells on (0, 1), the last ones graded;
    ``cuts`` are extra cell edges (probabilities where the integrand jumps)."""
    return _graded(n, cuts)


@functools.cache
def _graded(n: int, cuts: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    top = 1 - 4 / n
    tail = 1 - (1 - top) * 0.5 ** np.arange(0, 30)
    edges = np.concatenate([np.linspace(0, top, n - 3)[:-1], tail, [1.0]])
    edges = np.unique(np.concatenate([edges, [c for c in cuts if 0 < c < 1]]))
    t, w = _gl(3)
    lo, h = edges[:-1, None], np.diff(edges)[:, None]
    return (lo + h * t).ravel(), (h * w).ravel()


def _exp_partial(d: SizeDist, k: int, x: np.ndarray) -> np.ndarray:
    # E[S^k; S <= x] = m^k k! P(k + 1, x / m) for an exponential of mean m.
    m = d.dist.mean()
    return m**k * math.factorial(k) * special.gammainc(k + 1, np.maximum(x, 0.0) / m)


def _lognormal_partial(d: SizeDist, k: int, x: np.ndarray) -> np.ndarray:
    # E[S^k; S <= x] = exp(k mu + k^2 s^2 / 2) Phi((ln x - mu - k s^2) / s).
    s, mu = d._cache["sigma"], d._cache["mu"]
    with np.errstate(divide="ignore"):
        z = (np.log(np.maximum(x, 0.0)) - mu - k * s * s) / s
    return math.exp(k * mu + k * k * s * s / 2) * special.ndtr(z)


def _uniform_partial(d: SizeDist, k: int, x: np.ndarray) -> np.ndarray:
    lo, hi = d.dist.support()
    top = np.clip(x, lo, hi)
    return (top ** (k + 1) - lo ** (k + 1)) / ((k + 1) * (hi - lo))


def _numeric_partial(d: SizeDist, k: int, x: np.ndarray) -> np.ndarray:
    lo, _ = d.dist.support()

    def one(v: float) -> float:
        if v <= lo:
            return 0.0
        return integrate.quad(lambda t: t**k * d.dist.pdf(t), lo, v, limit=200,
                              epsrel=_EPSREL)[0]

    return np.vectorize(one, otypes=[float])(x)


_PARTIAL = {"exponential": _exp_partial, "lognormal": _lognormal_partial,
            "uniform": _uniform_partial}


# -- construction from a spec --------------------------------------------------------------------


def _exponential(spec: Mapping[str, Any], fld: str) -> SizeDist:
    check_keys(spec, fld, ["kind", "mean"])
    mean = number(spec.get("mean", 1.0), f"{fld}.mean", low=0, low_open=True)
    return SizeDist("exponential", {"kind": "exponential", "mean": mean},
                    stats.expon(scale=mean))


def _lognormal(spec: Mapping[str, Any], fld: str) -> SizeDist:
    check_keys(spec, fld, ["kind", "mean", "cv"])
    mean = number(require(spec, "mean", fld), f"{fld}.mean", low=0, low_open=True)
    cv = number(require(spec, "cv", fld), f"{fld}.cv", low=0, low_open=True, high=100)
    sigma = math.sqrt(math.log1p(cv * cv))
    mu = math.log(mean) - sigma * sigma / 2
    d = SizeDist("lognormal", {"kind": "lognormal", "mean": mean, "cv": cv},
                 stats.lognorm(s=sigma, scale=math.exp(mu)))
    d._cache.update(sigma=sigma, mu=mu)
    return d


def _deterministic(spec: Mapping[str, Any], fld: str) -> SizeDist:
    check_keys(spec, fld, ["kind", "value"])
    value = number(require(spec, "value", fld), f"{fld}.value", low=0, low_open=True)
    return SizeDist("deterministic", {"kind": "deterministic", "value": value}, atom=value)


def _uniform(spec: Mapping[str, Any], fld: str) -> SizeDist:
    check_keys(spec, fld, ["kind", "low", "high"])
    low = number(require(spec, "low", fld), f"{fld}.low", low=0)
    high = number(require(spec, "high", fld), f"{fld}.high", low=low, low_open=True)
    return SizeDist("uniform", {"kind": "uniform", "low": low, "high": high},
                    stats.uniform(loc=low, scale=high - low))


SIZE_KINDS = {"exponential": _exponential, "lognormal": _lognormal,
              "deterministic": _deterministic, "uniform": _uniform}


def make_sizes(sizes: Any, fld: str = "sizes") -> SizeDist:
    """Build a size law from a spec table, a SizeDist, or a frozen scipy continuous distribution.

    Specs: ``{kind = "exponential", mean = 1}``, ``{kind = "lognormal", mean, cv}``,
    ``{kind = "deterministic", value}``, ``{kind = "uniform", low, high}``.

    Raises ConfigError for an unknown kind (naming the closest), a bad field, or a scipy law that
    is not continuous, can be negative, or has no finite second moment.
    """
    if isinstance(sizes, SizeDist):
        return sizes
    if hasattr(sizes, "dist") and hasattr(sizes, "pdf") and hasattr(sizes, "ppf"):
        return _from_scipy(sizes, fld)
    spec = table(sizes, fld)
    return lookup(SIZE_KINDS, require(spec, "kind", fld), f"{fld}.kind")(spec, fld)


def _from_scipy(frozen: Any, fld: str) -> SizeDist:
    if not isinstance(frozen.dist, stats.rv_continuous):
        raise ConfigError(fld, frozen.dist.name, "a frozen scipy.stats continuous distribution")
    lo, _ = frozen.support()
    if lo < 0:
        raise ConfigError(fld, frozen.dist.name, "a law on [0, inf) (sizes cannot be negative)")
    m2 = float(frozen.moment(2))
    if not np.isfinite(m2):
        raise ConfigError(fld, frozen.dist.name, "a law with a finite second moment")
    return SizeDist("scipy", {"kind": "scipy", "name": frozen.dist.name}, frozen)
