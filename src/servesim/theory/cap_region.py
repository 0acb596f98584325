"""The stability region under a batch-size cap k_max: two-dimensional, in the prefill and decode
token rates (lambda m_p, lambda m_d). It is the convex hull of the batches a budget admits, each
scaled by its time; see docs/theory.md, "Batch-size cap".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull

from servesim.engine.cost import CostModel
from servesim.theory.capacity import SOURCE, _check_budget, _check_cap, _token_only

__all__ = ["CapRegion", "VertexBatch", "cap_region", "vertex_budgets", "wc_reachable",
           "wc_saturated_region"]



@dataclass(frozen=True)
class VertexBatch:
    """A vertex of the cap region and the batch that attains it.

    Attributes:
        prefill_rate, decode_rate: the vertex, (x, y) / t(x, y), tokens/s.
        prefill_tokens, decode_tokens: the batch (x, y).
        min_budget: x + y, the smallest token budget under which the batch is allowed.
    """

    prefill_rate: float
    decode_rate: float
    prefill_tokens: int
    decode_tokens: int

    @property
    def min_budget(self) -> int:
        return self.prefill_tokens + self.decode_tokens


@dataclass(frozen=True, eq=False)
class CapRegion:
    """Stability region with a batch-size cap, in (prefill, decode) token rates (tokens/s).

    The convex hull of the origin and the points (x, y) / t(x, y) over batches with x + y <= b_max,
    y <= k_max and y <= k_max - 1 if x > 0. ``vertices`` (counter-clockwise, tokens/s) and
    ``batches`` (the (x, y) attaining each vertex; (0, 0) for the origin) are aligned.
    """

    token_budget: int
    max_batch_size: int
    vertices: np.ndarray
    batches: tuple[tuple[int, int], ...]
    equations: np.ndarray
    formula: str
    exact: bool = True
    source: str = SOURCE

    def contains(self, prefill_rate: float, decode_rate: float, *, rtol: float = 1e-9) -> bool:
        """True iff the rate point is stable: non-negative and strictly inside every facet that
        does not lie on a coordinate axis (a point on an axis with the other rate below capacity
        is stable)."""
        if prefill_rate < 0 or decode_rate < 0:
            return False
        scale = float(np.abs(self.vertices).max())
        p = np.array([prefill_rate, decode_rate])
        for *normal, offset in self.equations:
            n = np.asarray(normal)
            on_axis = abs(offset) <= rtol * scale and (
                np.allclose(n, [-1.0, 0.0], atol=1e-9) or np.allclose(n, [0.0, -1.0], atol=1e-9))
            if on_axis:
                continue
            if n @ p + offset >= -rtol * scale:
                return False
        return True

    def vertex_batches(self) -> tuple[VertexBatch, ...]:
        """The vertices other than the origin, each with the batch that attains it."""
        return tuple(VertexBatch(float(v[0]), float(v[1]), x, y)
                     for v, (x, y) in zip(self.vertices, self.batches, strict=True) if x + y > 0)


def _candidates(cost: CostModel, token_budget: int, max_batch_size: int, *,
                maximal_only: bool, context_per_decode: float | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Candidate batches (x, y) as int arrays, their times, and whether pricing is exact."""
    b_max, k_max = token_budget, max_batch_size
    if maximal_only:
        # Batches that cannot take one more token: full ones, and (0, k_max) when k_max < b_max.
        y = np.arange(0, min(k_max - 1, b_max) + 1, dtype=np.int64)
        x = b_max - y
        if k_max <= b_max:
            x, y = np.append(x, 0), np.append(y, k_max)
    elif _token_only(cost):
        # t depends on b = x + y only, so per b the points lie on a segment: keep its ends.
        b = np.arange(1, b_max + 1, dtype=np.int64)
        y_hi = np.where(b <= k_max, b, k_max - 1)
        x = np.concatenate([b, b - y_hi])
        y = np.concatenate([np.zeros_like(b), y_hi])
    else:
        xs, ys = np.meshgrid(np.arange(b_max + 1), np.arange(min(k_max, b_max) + 1),
                             indexing="ij")
        x, y = xs.ravel().astype(np.int64), ys.ravel().astype(np.int64)
        ok = (x + y >= 1) & (x + y <= b_max) & ((x == 0) | (y <= k_max - 1))
        x, y = x[ok], y[ok]
    if _token_only(cost):
        t = np.asarray(cost.iteration_s(x + y, np.zeros_like(y), np.zeros_like(y)), np.float64)
        return x, y, t, True
    if context_per_decode is None:
        raise ValueError(f"{type(cost).__name__} depends on the decoders' context: pass "
                         "context_per_decode (e.g. mean_context_per_decode(workload))")
    t = np.asarray(cost.iteration_s(x, y, context_per_decode * y), np.float64)
    return x, y, t, False


def _region(cost: CostModel, token_budget: int, max_batch_size: int, *, maximal_only: bool,
            context_per_decode: float | None, what: str) -> CapRegion:
    _check_budget(token_budget)
    _check_cap(max_batch_size)
    x, y, t, exact = _candidates(cost, token_budget, max_batch_size, maximal_only=maximal_only,
                                 context_per_decode=context_per_decode)
    points = np.column_stack([np.concatenate([[0.0], x / t]), np.concatenate([[0.0], y / t])])
    xs, ys = np.concatenate([[0], x]), np.concatenate([[0], y])
    hull = ConvexHull(points)
    idx = hull.vertices
    formula = (f"{what} = conv({{0}} U {{(x, y) / t(x+y)}}), x + y <= b_max = {token_budget}, "
               f"y <= k_max = {max_batch_size}, y <= k_max - 1 if x > 0")
    if not exact:
        formula += f"; t priced with context {context_per_decode:.6g} tokens per decoder"
    return CapRegion(token_budget, max_batch_size, points[idx],
                     tuple((int(xs[i]), int(ys[i])) for i in idx), hull.equations, formula, exact)


def cap_region(cost: CostModel, token_budget: int, max_batch_size: int, *,
               context_per_decode: float | None = None) -> CapRegion:
    """Return the stability region with a batch-size cap (tokens/s in (prefill, decode) rates).

    The convex hull of the origin and {(x, y) / t(x+y)} over integer batches with x + y <= b_max,
    y <= k_max, and y <= k_max - 1 if x > 0. For token-only cost models only the two extreme
    splits of each total b are candidates (exact). Other models enumerate every (x, y) and price
    decoders with ``context_per_decode`` tokens each (``exact=False``).
    """
    return _region(cost, token_budget, max_batch_size, maximal_only=False,
                   context_per_decode=context_per_decode, what="region")


def vertex_budgets(region: CapRegion) -> tuple[VertexBatch, ...]:
    """For each vertex (not the origin), the batch (x, y) attaining it and its least budget x+y."""
    return region.vertex_batches()


def wc_saturated_region(cost: CostModel, token_budget: int, max_batch_size: int, *,
                        context_per_decode: float | None = None) -> CapRegion:
    """The rates a work-conserving policy can sustain while backlogged (tokens/s).

    While prefill and decode work is both backlogged, a work-conserving policy only forms maximal
    batches, ones that cannot take another token: x + y = b_max (with y <= k_max - 1 if x > 0),
    or (0, k_max) when k_max < b_max. Their hull (with the origin) is this region; a load point
    outside it cannot be served by a work-conserving policy with this budget even if it lies
    inside ``cap_region`` (a fluid argument, not a theorem of the reference).
    """
    return _region(cost, token_budget, max_batch_size, maximal_only=True,
                   context_per_decode=context_per_decode, what="WC region")


def wc_reachable(vertex: VertexBatch, token_budget: int, max_batch_size: int) -> bool:
    """True iff a work-conserving policy with budget b_max forms the vertex's batch when
    backlogged, i.e. the batch is maximal: x + y = b_max, or (x, y) = (0, k_max)."""
    x, y = vertex.prefill_tokens, vertex.decode_tokens
    return x + y == token_budget or (x == 0 and y == max_batch_size <= token_budget)
