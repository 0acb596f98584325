"""A numeric SOAP evaluator: mean response time of any rank policy in the M/G/1 with predictions.

SOAP (Scully, Harchol-Balter, Scheller-Wolf 2018) covers every policy that serves the job of
lowest rank, where the rank r(x, y, a) depends on the job's descriptor (size x, prediction y) and
its age a; ties go to the earlier arrival (FCFS). For a tagged job of descriptor (x, y):

    r_worst(a) = sup_{a <= b < x} r(x, y, b)       worst future rank, r = r_worst(0)
    new jobs (arriving after the tagged one) run ahead of it while their rank is < r:
        X_new[r] = service until the rank first reaches >= r (or completion)
    old jobs (present on arrival) run ahead while their rank is <= r, in intervals:
        X_0[r] = service until the rank first exceeds r (0 if it starts above r),
        X_i[r], i >= 1 = later stretches of age with rank <= r
    rho_new[r] = lambda E[X_new[r]],  rho_0[r] = lambda E[X_0[r]]

    E[T(x, y)] = lambda sum_i E[X_i[r]^2] / (2 (1 - rho_0[r]) (1 - rho_new[r]))     waiting
               + int_0^x da / (1 - rho_new[r_worst(a)])                             residence

Numerics. The rank of each descriptor is sampled at ages 0 and x plus its declared ``breaks``
(each bracketed within 1e-9 x), and on a uniform age grid as well unless the rank says it is
``piecewise_linear``; between samples it is interpolated linearly, so the intervals are exact for
piecewise-linear ranks with their kinks and jumps declared (every built-in policy), and resolved
to the grid spacing otherwise. rho_new, rho_0 and sum_i E[X_i^2] are tabulated on a grid of rank
values (quantiles of the ranks jobs actually take, atoms and +-inf kept exactly) by summing over a
lattice of descriptors: sizes at Gauss-Legendre nodes of probability cells (the top cells graded
towards 1 so the tail of E[S^2] is kept, a one-bit threshold made a cell edge), predictions
likewise per size. A rank that jumps in x or y makes the lattice error first order in the cell
width, which is why the table is not integrated adaptively per rank value: that is far slower for
the same answer. Tables are interpolated monotonically (PCHIP) in r; the tagged job is then
integrated with the composite Gauss-Legendre rule of ``SizeDist.expect_vec``. Measured accuracy is
about 1e-3 relative or better; the closed forms in ``closed.py`` are checked against it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.interpolate import PchipInterpolator

from servesim.theory.mg1.predictors import composite_gl

__all__ = ["Rank", "SoapModel"]

_AGE_STEPS = 8        # uniform age segments per job, before the declared breaks
_GL_AGE = 10          # Gauss-Legendre nodes per age segment in the residence integral
_R_POINTS = 120       # finite rank values in the table
_X_CELLS = 120        # probability cells of the size in the table (tail cells graded)
_Y_CELLS = 12         # probability cells of a continuous prediction given the size
_CHUNK = 4_000_000    # descriptors x ranks per vectorised block (bounds memory)
_BREAK_EPS = 1e-9     # half-width of the bracket around a declared break, relative to x


@dataclass(frozen=True)
class Rank:
    """A SOAP rank r(x, y, a) (lower is served first), vectorised by broadcasting.

    ``breaks(x, y)`` returns ages (shape (n, k)) where the rank may jump or kink; omit it for a
    rank that is smooth in age (it is then resolved on the age grid only). Set
    ``piecewise_linear`` when the rank is linear in age between its breaks: then no grid is
    needed and the intervals are exact. ``size_jumps`` are sizes where E[T(x, y)] jumps because
    a job reaches a higher rank only if it is larger (MLFQ's cumulative quanta); they become
    panel edges of the integral over sizes, which a jump would otherwise spoil to first order.
    """

    fn: Callable[[Any, Any, Any], Any]
    breaks: Callable[[Any, Any], Any] | None = None
    name: str = "custom"
    piecewise_linear: bool = False
    size_jumps: tuple[float, ...] = ()

    def __call__(self, x: Any, y: Any, a: Any) -> np.ndarray:
        return np.asarray(self.fn(x, y, a), dtype=float)


def as_rank(rank: Any) -> Rank:
    return rank if isinstance(rank, Rank) else Rank(rank)


def _prediction_cells(predictor: Any, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prediction lattice given each size: atoms as they are, densities by Gauss-Legendre cells
    (a rank may jump in y, which a cell rule handles better than one high-order rule)."""
    inner = getattr(predictor, "inner", None)
    if inner is not None and getattr(inner, "continuous", False):
        y, w = _prediction_cells(inner, xs)
        p = np.asarray(predictor.bit.p_long(xs), dtype=float)[:, None] * np.ones((1, 1))
        ninf = np.full((xs.size, 1), -np.inf)
        return np.concatenate([ninf, y], axis=1), np.concatenate([1 - p, p * w], axis=1)
    if not getattr(predictor, "continuous", False):
        return predictor.nodes(xs)
    v, w = composite_gl(np.linspace(0.0, 1.0, _Y_CELLS + 1), 3)
    return predictor.ppf(v[None, :], xs[:, None]), np.broadcast_to(w, (xs.size, w.size))


def _ages(rank: Rank, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sorted age samples on [0, x] for each descriptor: shape (n, s)."""
    steps = 1 if rank.piecewise_linear else _AGE_STEPS
    base = np.linspace(0.0, 1.0, steps + 1)[None, :] * x[:, None]
    if rank.breaks is None:
        return base
    b = np.atleast_2d(np.asarray(rank.breaks(x[:, None], y[:, None]), dtype=float))
    b = np.broadcast_to(b, (x.size, b.shape[-1]))
    eps = _BREAK_EPS * x[:, None]
    extra = np.concatenate([b - eps, b, b + eps], axis=1)
    ages = np.concatenate([base, np.clip(extra, 0.0, x[:, None])], axis=1)
    return np.sort(ages, axis=1)


def _sample(rank: Rank, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ages = _ages(rank, x, y)
    v = np.broadcast_to(rank(x[:, None], y[:, None], ages), ages.shape)
    return ages, v


def _theta(v0: np.ndarray, v1: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Fraction of a segment where the linear interpolant crosses r (0.5 across a jump)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (r - v0) / (v1 - v0)
    finite = np.isfinite(v0) & np.isfinite(v1)
    return np.clip(np.where(finite & np.isfinite(t), t, 0.5), 0.0, 1.0)


def _runs(ages: np.ndarray, v: np.ndarray, r: np.ndarray, strict: bool):
    """First run length and sum of squared run lengths of {a: rank(a) <= r} (or < r).

    ``ages``, ``v``: (n, s); ``r``: (R,). Returns two (R, n) arrays.
    """
    rr = r[:, None, None]
    inside = v[None] < rr if strict else v[None] <= rr
    h = np.diff(ages, axis=1)[None]
    th = _theta(v[None, :, :-1], v[None, :, 1:], rr)
    i0, i1 = inside[..., :-1], inside[..., 1:]
    length = np.where(i0 & i1, h, np.where(i0, th * h, np.where(i1, (1 - th) * h, 0.0)))
    starts = ~i0
    starts[..., 0] = True
    c = np.cumsum(length, axis=-1)
    base = np.maximum.accumulate(np.where(starts, c - length, 0.0), axis=-1)
    run = c - base
    ends = np.ones_like(starts)
    ends[..., :-1] = starts[..., 1:]
    sumsq = np.where(ends, run * run, 0.0).sum(axis=-1)
    first_end = np.argmax(ends, axis=-1)[..., None]
    first = np.where(inside[..., 0], np.take_along_axis(run, first_end, axis=-1)[..., 0], 0.0)
    return first, sumsq


class SoapModel:
    """SOAP response times of one rank for a size law, a predictor model and an arrival rate."""

    def __init__(self, rank: Any, sizes: Any, predictor: Any, arrival_rate: float,
                 y_order: int = 4) -> None:
        self.rank = as_rank(rank)
        self.sizes = sizes
        self.predictor = predictor
        self.lam = float(arrival_rate)
        self.y_order = y_order
        self.grid = self._rank_grid()
        self.table = self._tabulate()

    # -- the table of rho_new, rho_0 and sum E[X_i^2] over rank values --------------------------

    def _rank_grid(self) -> np.ndarray:
        u = 1 / (1 + np.exp(-np.linspace(-8, 8, 65)))
        values = []
        pilot = Rank(self.rank.fn, self.rank.breaks)   # on the age grid too, for spread
        for x in np.unique(self.sizes.ppf(u)):
            y = self.predictor.nodes(float(x), 3)[0][0]
            _, v = _sample(pilot, np.full(y.size, float(x)), y)
            values.append(v.ravel())
        vals = np.concatenate(values)
        finite = vals[np.isfinite(vals)]
        uniq, counts = np.unique(finite, return_counts=True)
        atoms = uniq[counts > 0.01 * max(vals.size, 1)]
        spread = np.quantile(finite, np.linspace(0, 1, _R_POINTS)) if finite.size else []
        inf = [s for s in (-np.inf, np.inf) if np.any(vals == s)]
        return np.unique(np.concatenate([spread, atoms, inf]))

    def _tabulate(self) -> np.ndarray:
        r = self.grid
        xs, wx = self.sizes.lattice(_X_CELLS, self._jumps())
        ys, wy = _prediction_cells(self.predictor, xs)
        total = np.zeros((3, r.size))
        step = max(1, _CHUNK // (ys.shape[1] * r.size))
        for i in range(0, xs.size, step):
            x = np.broadcast_to(xs[i:i + step, None], ys[i:i + step].shape).ravel()
            y = ys[i:i + step].ravel()
            w = (wx[i:i + step, None] * wy[i:i + step]).ravel()
            keep = w > 0
            ages, v = _sample(self.rank, x[keep], y[keep])
            new, _ = _runs(ages, v, r, strict=True)
            old0, sumsq = _runs(ages, v, r, strict=False)
            total += np.stack([new @ w[keep], old0 @ w[keep], sumsq @ w[keep]])
        table = self.lam * total
        self._interp = [self._pchip(row) for row in table]
        return table

    def _pchip(self, row: np.ndarray) -> Any:
        fin = np.isfinite(self.grid)
        if fin.sum() < 2:
            return None
        return PchipInterpolator(self.grid[fin], row[fin], extrapolate=False)

    def _lookup(self, row: int, r: np.ndarray) -> np.ndarray:
        """Interpolate table row ``row`` at ranks ``r`` (exact at grid points, incl. +-inf)."""
        grid, vals = self.grid, self.table[row]
        fin = np.isfinite(grid)
        if self._interp[row] is None:
            out = np.full(np.shape(r), vals[fin][0] if fin.any() else 0.0)
        else:
            lo, hi = grid[fin][0], grid[fin][-1]
            out = self._interp[row](np.clip(np.nan_to_num(r, posinf=hi, neginf=lo), lo, hi))
        for s in (-np.inf, np.inf):
            hit = grid == s
            if hit.any():
                out = np.where(r == s, vals[hit][0], out)
        # Below every rank a job can take, no job is ahead of the tagged one.
        return np.where(r == -np.inf, np.where(grid == -np.inf, vals, 0.0).max(), out)

    # -- the tagged job ------------------------------------------------------------------------

    def response(self, x: Any, y: Any) -> np.ndarray:
        """E[T(x, y)] for arrays of descriptors."""
        x, y = np.broadcast_arrays(np.atleast_1d(np.asarray(x, dtype=float)),
                                   np.atleast_1d(np.asarray(y, dtype=float)))
        ages, v = _sample(self.rank, x.ravel(), y.ravel())
        worst = np.maximum.accumulate(v[:, ::-1], axis=1)[:, ::-1]
        r0 = worst[:, 0]
        rho_new, rho_old, sumsq = (self._lookup(k, r0) for k in range(3))
        wait = sumsq / (2 * (1 - rho_old) * (1 - rho_new))
        return (wait + self._residence(ages, v, worst)).reshape(x.shape)

    def _residence(self, ages: np.ndarray, v: np.ndarray, worst: np.ndarray) -> np.ndarray:
        t, w = composite_gl((0.0, 1.0), _GL_AGE)
        h = np.diff(ages, axis=1)[..., None]
        v0, v1 = v[:, :-1, None], v[:, 1:, None]
        with np.errstate(invalid="ignore"):
            lin = v0 + t * (v1 - v0)
        jump = ~(np.isfinite(v0) & np.isfinite(v1))
        lin = np.where(jump, np.where(t < 0.5, v0, v1), lin)
        lin = np.where(v0 == v1, v0, lin)
        r = np.maximum(lin, worst[:, 1:, None])
        dens = 1.0 / (1.0 - self._lookup(0, r))
        return (h * w * dens).sum(axis=(1, 2))

    def mean_response_time(self) -> float:
        """E[T] = E over (x, y) of E[T(x, y)]."""

        def at(x: np.ndarray) -> np.ndarray:
            y, w = self.predictor.nodes(x, self.y_order)
            xx = np.broadcast_to(x[:, None], y.shape)
            t = self.response(xx.ravel(), y.ravel()).reshape(y.shape)
            return (np.where(w > 0, t, 0.0) * w).sum(axis=1)

        return float(self.sizes.expect_vec(at, points=self._jumps()))

    def _jumps(self) -> list[float] | None:
        """Sizes where the descriptor law (a one-bit threshold) or the rank jumps."""
        bit = getattr(self.predictor, "bit", self.predictor)
        jump = getattr(bit, "threshold", None)
        points = sorted({*self.rank.size_jumps, *([jump] if jump is not None else [])})
        return points or None
