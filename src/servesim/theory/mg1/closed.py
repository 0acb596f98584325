"""Closed forms for the M/G/1 with predictions: E[T(x, y)] per policy (docs/mg1.md lists them).

Notation: lambda the arrival rate, S the size, rho = lambda E[S], R = lambda E[S^2] / 2,
rho(x) = lambda E[S; S <= x] and rho_<(x) = lambda E[S; S < x] (equal without atoms),
L(y) = lambda E[S; Y < y] (the survey's rho'_y), M(y) = lambda E[S^2; Y < y] and
O(y) = lambda E[(S - (Y - y))^2; y < Y < y + S], the second moment of the work an old job with a
larger prediction still does once its predicted remaining time has fallen to y (SPRPT).
Integrals over the size use ``scipy.integrate.quad_vec``; inner integrals over age or
prediction use Gauss-Legendre rules on the pieces where the integrand is smooth.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.interpolate import CubicSpline

from servesim.theory.mg1.predictors import BitModel, Oracle

__all__ = ["Model", "PredictionTable"]

_Y_ORDER = 10      # Gauss-Legendre nodes per probability panel of a prediction
_GL = 10          # Gauss-Legendre nodes per smooth piece of an age integral
_Y_POINTS = 600   # prediction values in an interpolation table


def gl_pieces(edges: np.ndarray, fn, order: int = _GL) -> np.ndarray:
    """sum over pieces [e_j, e_{j+1}] of int fn(t) dt; ``edges`` has shape (n, m+1)."""
    t, w = np.polynomial.legendre.leggauss(order)
    lo, hi = edges[:, :-1, None], edges[:, 1:, None]
    nodes = lo + (hi - lo) * (t + 1) / 2
    return (fn(nodes) * (hi - lo) * w / 2).sum(axis=(1, 2))


class PredictionTable:
    """L(y), M(y), O(y) of one predictor (optionally restricted to bit-1 jobs of a BitModel)."""

    def __init__(self, sizes: Any, predictor: Any, lam: float, bit: BitModel | None = None):
        self.sizes, self.predictor, self.lam, self.bit = sizes, predictor, lam, bit
        if not isinstance(predictor, Oracle):
            self._build()

    def _weight(self, x: Any) -> Any:
        return 1.0 if self.bit is None else self.bit.p_long(x)

    def _build(self) -> None:
        u = 1 / (1 + np.exp(-np.linspace(-12, 12, 49)))
        xs = np.unique(self.sizes.ppf(u))
        ys = self.predictor.ppf(u[None, :], xs[:, None]).ravel()
        ys = ys[np.isfinite(ys)]
        # Interpolate in t = asinh(y / scale): log-like over decades, linear through 0, so
        # L(y) ~ y log y near 0 and negative (Gaussian) predictions are both resolved.
        self.scale = 1e-4 * float(np.median(np.abs(ys)))
        t = np.linspace(self._t(ys.min()), self._t(ys.max()), _Y_POINTS)
        grid = self.scale * np.sinh(t)
        pred = self.predictor

        def at(x: Any) -> np.ndarray:
            h = pred.cdf(grid, x)
            yy, ww = pred.nodes_between(grid, grid + x, x)
            xc = np.asarray(x)[..., None] if np.ndim(x) else x
            old = ((xc - (yy - grid[:, None])) ** 2 * ww).sum(axis=1)
            return self._weight(x) * np.concatenate([x * h, x * x * h, old])

        if pred.scale_kinks and grid[0] > 0 and self.bit is None:
            vals = self.lam * self._by_ratio(at, grid, pred.scale_kinks)
        else:
            points = [self.bit.threshold] if self.bit is not None and self.bit.threshold \
                else None
            vals = self.lam * np.asarray(self.sizes.expect(at, points=points, epsrel=1e-10))
        self.t_range = (t[0], t[-1])
        self.splines = [CubicSpline(t, v) for v in vals.reshape(3, grid.size)]

    def _by_ratio(self, at: Any, grid: np.ndarray, kinks: tuple[float, ...]) -> np.ndarray:
        """E[at(X)] for every grid y at once, over s = y / X (x = y / s, dx = y / s^2 ds), so
        corners of h(y | x) at fixed ratios become fixed break points."""
        from scipy import integrate

        pdf = self.sizes.dist.pdf if self.sizes.atom is None else None
        if pdf is None:
            return np.asarray(at(self.sizes.atom))

        def integrand(s: float) -> np.ndarray:
            x = grid / s
            jac = np.tile(pdf(x) * grid / (s * s), 3)
            return np.where(jac > 0, at(x), 0.0) * jac

        res, _ = integrate.quad_vec(integrand, 0.0, np.inf, points=list(kinks), epsrel=1e-10,
                                    epsabs=0.0, limit=4000)
        return res

    def _t(self, y: Any) -> Any:
        return np.arcsinh(np.asarray(y, dtype=float) / self.scale)

    def _oracle(self, k: int, y: np.ndarray) -> np.ndarray:
        """Exact L, M, O for y = x: O(y) = lambda y^2 P(S > y), weighted by the bit if any."""
        if k == 2:
            total = self._cum(0, np.inf)
            return self.lam * np.maximum(y, 0.0) ** 2 * (total - self._cum(0, y, strict=False))
        return self.lam * self._cum(k + 1, y)

    def _cum(self, k: int, y: Any, strict: bool = True) -> Any:
        """E[S^k w(S); S < y] with w the bit-1 probability (a step at the threshold) or 1."""
        s = self.sizes

        def g(z: Any) -> Any:
            return s.partial(k, z, strict=strict)

        if self.bit is None:
            return g(y)
        t, p, q = self.bit.threshold, self.bit.p, self.bit.q
        lo = g(np.minimum(y, t))
        return p * lo + (1 - q) * (g(y) - lo)

    def __call__(self, k: int, y: Any) -> np.ndarray:
        y = np.asarray(y, dtype=float)
        if isinstance(self.predictor, Oracle):
            return self._oracle(k, y)
        # Beyond the table's ends the functions are flat to within its 1e-5 / 1 - 1e-5 quantiles.
        return self.splines[k](np.clip(self._t(y), *self.t_range))


class Model:
    """Sizes, predictor and arrival rate, with the derived loads the closed forms share."""

    def __init__(self, sizes: Any, predictor: Any, lam: float):
        self.sizes, self.predictor, self.lam = sizes, predictor, float(lam)
        self.rho = self.lam * sizes.mean
        self.r2 = self.lam * sizes.second_moment / 2
        self._tables: dict = {}

    def rho_le(self, x: Any) -> Any:
        return self.lam * self.sizes.partial(1, x)

    def rho_lt(self, x: Any) -> Any:
        return self.lam * self.sizes.partial(1, x, strict=True)

    def table(self, bit: BitModel | None = None) -> PredictionTable:
        key = ("table", id(bit))
        if key not in self._tables:
            pred = getattr(self.predictor, "inner", self.predictor)
            self._tables[key] = (PredictionTable(self.sizes, pred, self.lam, bit), bit)
        return self._tables[key][0]

    def short_moment(self, bit: BitModel, k: int) -> float:
        """lambda E[S^k; bit = 0], computed once per bit model."""
        key = ("short", id(bit), k)
        if key not in self._tables:
            self._tables[key] = (self.lam * bit.moment(self.sizes, k, short=True), bit)
        return self._tables[key][0]

    def landmarks(self) -> list[float]:
        """Size quantiles where load functions turn: extra cuts for the age integrals, so one
        Gauss-Legendre rule never spans both the rise of rho(t) and a long flat tail."""
        u = np.array([0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999, 0.9999])
        return [float(v) for v in np.unique(self.sizes.ppf(u)) if np.isfinite(v)]

    def residence_true(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """int_lo^hi dt / (1 - rho_<(t)), split where rho(t) has kinks."""
        cuts = [*self.sizes.kinks(), *self.landmarks()]
        edges = np.stack([lo, *[np.clip(k, lo, hi) for k in cuts], hi], axis=1)
        edges = np.sort(edges, axis=1)
        return gl_pieces(edges, lambda t: 1.0 / (1.0 - self.rho_lt(t)))


# -- conditional response times E[T(x, y)], vectorised ------------------------------------------


def fcfs(m: Model, x: np.ndarray, y: np.ndarray, **_: Any) -> np.ndarray:
    return x + m.r2 / (1 - m.rho)


def sjf(m: Model, x: np.ndarray, y: np.ndarray, **_: Any) -> np.ndarray:
    return x + m.r2 / ((1 - m.rho_le(x)) * (1 - m.rho_lt(x)))


def psjf(m: Model, x: np.ndarray, y: np.ndarray, **_: Any) -> np.ndarray:
    wait = m.lam * m.sizes.partial(2, x) / 2 / ((1 - m.rho_le(x)) * (1 - m.rho_lt(x)))
    return wait + x / (1 - m.rho_lt(x))


def srpt(m: Model, x: np.ndarray, y: np.ndarray, **_: Any) -> np.ndarray:
    return limited_srpt(m, x, y, c=1.0)


def limited_srpt(m: Model, x: np.ndarray, y: np.ndarray, c: float = 1.0,
                 **_: Any) -> np.ndarray:
    """TRAIL on exact sizes: rank x - a while a <= c x, then non-preemptible (derived from SOAP,
    docs/mg1.md); c >= 1 is SRPT, c = 0 SJF.

    The bound's inclusive or exclusive end is one age, which has no mass in continuous time.
    """
    c = min(c, 1.0)
    s = m.sizes
    m2x = s.partial(2, x)
    if c < 1:
        up = x / (1 - c)
        fu = s.partial(0, up)
        old = m2x + x * x * (fu - s.partial(0, x)) + (1 - c) ** 2 * (s.second_moment
                                                                      - s.partial(2, up))
    else:
        old = m2x + x * x * (1 - s.partial(0, x))
    wait = m.lam * old / 2 / ((1 - m.rho_le(x)) * (1 - m.rho_lt(x)))
    return wait + m.residence_true((1 - c) * x, x) + (1 - c) * x


def spjf(m: Model, x: np.ndarray, y: np.ndarray, **_: Any) -> np.ndarray:
    return x + m.r2 / (1 - m.table()(0, y)) ** 2


def pspjf(m: Model, x: np.ndarray, y: np.ndarray, **_: Any) -> np.ndarray:
    t = m.table()
    load = t(0, y)
    return t(1, y) / 2 / (1 - load) ** 2 + x / (1 - load)


def _sprpt(m: Model, x: np.ndarray, y: np.ndarray, t: PredictionTable, base_load: float,
           base_m2: float) -> np.ndarray:
    load = base_load + t(0, y)
    wait = (base_m2 + t(1, y) + t(2, y)) / 2 / (1 - load) ** 2
    knee = np.clip(y, 0.0, x)      # L(y - a) is flat for a > y when predictions are >= 0
    turns = [np.clip(y - q, 0.0, knee) for q in m.landmarks()]
    edges = np.sort(np.stack([np.zeros_like(x), *turns, knee, x], axis=1), axis=1)
    res = gl_pieces(edges, lambda a: 1.0 / (1.0 - base_load - t(0, y[:, None, None] - a)))
    return wait + res


def sprpt(m: Model, x: np.ndarray, y: np.ndarray, **_: Any) -> np.ndarray:
    return _sprpt(m, x, y, m.table(), 0.0, 0.0)


def one_bit(m: Model, x: np.ndarray, y: np.ndarray, bit: BitModel, **_: Any) -> np.ndarray:
    """Non-preemptive two-class priority; y is the bit."""
    rho_s = m.short_moment(bit, 1)
    return x + np.where(y > 0.5, m.r2 / ((1 - rho_s) * (1 - m.rho)), m.r2 / (1 - rho_s))


def one_bit_preemptive(m: Model, x: np.ndarray, y: np.ndarray, bit: BitModel,
                       **_: Any) -> np.ndarray:
    """Preemptive-resume two-class priority; y is the bit."""
    rho_s = m.short_moment(bit, 1)
    r2_s = m.short_moment(bit, 2) / 2
    short = x + r2_s / (1 - rho_s)
    long = m.r2 / ((1 - rho_s) * (1 - m.rho)) + x / (1 - rho_s)
    return np.where(y > 0.5, long, short)


def skippredict(m: Model, x: np.ndarray, y: np.ndarray, bit: BitModel, cheap_cost: float = 0.0,
                expensive_cost: float = 0.0, **_: Any) -> np.ndarray:
    """y = -inf marks a bit-0 job (FCFS, ahead); others are SPRPT on y; costs added per job."""
    rho_s = m.short_moment(bit, 1)
    m2_s = m.short_moment(bit, 2)
    short = np.isneginf(y)
    t_short = x + m2_s / 2 / (1 - rho_s) + cheap_cost
    yl = np.where(short, 0.0, y)
    t_long = _sprpt(m, x, yl, m.table(bit), rho_s, m2_s) + cheap_cost + expensive_cost
    return np.where(short, t_short, t_long)


CLOSED = {"fcfs": fcfs, "sjf": sjf, "psjf": psjf, "srpt": srpt, "trail": limited_srpt,
          "spjf": spjf, "pspjf": pspjf, "sprpt": sprpt, "one_bit": one_bit,
          "one_bit_preemptive": one_bit_preemptive, "skippredict": skippredict}


def mean(m: Model, policy: str, predictor: Any, **params: Any) -> float:
    """E[T] = E over (x, y) of E[T(x, y)], y from ``predictor.nodes``."""
    fn = CLOSED[policy]
    bit = params.get("bit")
    points = [bit.threshold] if isinstance(bit, BitModel) and bit.threshold else None

    def at(x: np.ndarray) -> np.ndarray:
        y, w = predictor.nodes(x, _Y_ORDER)
        xx = np.broadcast_to(x[:, None], y.shape)
        t = np.asarray(fn(m, xx.ravel(), y.ravel(), **params), dtype=float).reshape(y.shape)
        # A zero-weight node (a bit that cannot occur) may sit where T is undefined.
        return (np.where(w > 0, t, 0.0) * w).sum(axis=1)

    return float(m.sizes.expect_vec(at, points=points))
