"""Capacity theory of one engine: the largest sustainable token and request rates.

Every function returns a ``Quantity`` (or a small dataclass of them) that carries its value, unit,
the formula it came from, the source of that formula and whether it is exact for the given cost
model, so a CLI can print each number next to its derivation. See docs/theory.md, "Capacity".

Notation: b_max is the token budget, k_max the batch-size cap, t(b) the time of a batch of b
tokens, m_p / m_d the mean prefill / decode tokens per request and lambda the arrival rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial import ConvexHull

from servesim.engine.cost import CostModel, PiecewiseLinear, Staircase
from servesim.workload.build import Workload

__all__ = [
    "SOURCE",
    "CapRegion",
    "CycleCapacity",
    "Quantity",
    "RequestCapacity",
    "VertexBatch",
    "cap_region",
    "fastertransformer_cycle_capacity",
    "load",
    "mean_context_per_decode",
    "request_capacity",
    "scenario_capacity",
    "static_batching_capacity",
    "token_capacity",
    "vertex_budgets",
    "wc_reachable",
    "wc_saturated_region",
]

SOURCE = ("Dai, Deng, Li, Peng 2025, 'Throughput-Optimal Scheduling Algorithms for LLM Inference "
          "and AI Agents' (arXiv 2504.07347)")


@dataclass(frozen=True)
class Quantity:
    """A derived number with its unit, the formula it came from and that formula's source.

    ``exact`` is False when the number rests on a stated assumption (spelled out in ``formula``),
    e.g. a mean context per decoder for a context-dependent cost model.
    """

    value: float
    unit: str
    formula: str
    source: str = SOURCE
    exact: bool = True

    def __str__(self) -> str:
        tag = "" if self.exact else " (approx.)"
        return f"{self.value:.6g} {self.unit}{tag}  [{self.formula}]"


def _token_only(cost: CostModel) -> bool:
    """True iff t depends on the batch's token count b = prefill + decode only."""
    return isinstance(cost, Staircase | PiecewiseLinear)


def _check_budget(token_budget: int) -> None:
    if isinstance(token_budget, bool) or not isinstance(token_budget, int) or token_budget < 1:
        raise ValueError(f"token_budget must be an integer >= 1, got {token_budget!r}")


def _check_cap(max_batch_size: int) -> None:
    if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) \
            or max_batch_size < 1:
        raise ValueError(f"max_batch_size must be an integer >= 1, got {max_batch_size!r}")


def _means(workload: Workload) -> tuple[float, float]:
    """Mixture means (m_p, m_d) = (sum_k w_k m_p^k, sum_k w_k m_d^k)."""
    m_p = sum(c.weight * c.prompt.mean for c in workload.classes)
    m_d = sum(c.weight * c.output.mean for c in workload.classes)
    return m_p, m_d


def mean_context_per_decode(workload: Workload) -> float:
    """Mean cached context a decode token attends to, averaged over decode tokens (tokens).

    Per class a decoder attends to about m_p + m_d/2 tokens (prompt plus half its output on
    average); classes are weighted by their decode tokens: sum_k w_k m_d^k (m_p^k + m_d^k/2) /
    sum_k w_k m_d^k.
    """
    num = sum(c.weight * c.output.mean * (c.prompt.mean + c.output.mean / 2)
              for c in workload.classes)
    den = sum(c.weight * c.output.mean for c in workload.classes)
    return num / den if den > 0 else 0.0


def token_capacity(cost: CostModel, token_budget: int, workload: Workload | None = None, *,
                   decode_share: float | None = None,
                   context_per_decode: float | None = None) -> Quantity:
    """Return mu* = b_max / t(b_max) in tokens/s.

    Exact for cost models whose time depends on the token count only (Staircase,
    PiecewiseLinear). For other models (Affine, Roofline, Fitted) the time of a full batch depends
    on its prefill/decode split and on the decoders' context, so the full batch is priced under a
    stated assumption and the result has ``exact=False``: a decode share s of the b_max tokens
    and a mean context c per decode token. Defaults come from ``workload``: s = m_d/(m_p+m_d) and
    c = ``mean_context_per_decode(workload)`` (m_p + m_d/2 for one class).

    Raises ValueError if the budget is not a positive integer, or if the assumption is needed and
    neither ``workload`` nor both of ``decode_share`` / ``context_per_decode`` are given.
    """
    _check_budget(token_budget)
    b = token_budget
    if _token_only(cost):
        t = float(cost.iteration_s(b, 0, 0))
        return Quantity(b / t, "tokens/s", f"mu* = b_max / t(b_max) = {b} / {t:.6g} s")
    if decode_share is None or context_per_decode is None:
        if workload is None:
            raise ValueError(
                f"{type(cost).__name__} prices a batch by its prefill/decode split and context: "
                "pass a workload, or decode_share and context_per_decode")
        m_p, m_d = _means(workload)
        if decode_share is None:
            decode_share = m_d / (m_p + m_d)
        if context_per_decode is None:
            context_per_decode = mean_context_per_decode(workload)
    if not 0 <= decode_share <= 1:
        raise ValueError(f"decode_share must be in [0, 1], got {decode_share!r}")
    y = decode_share * b
    x = b - y
    ctx = context_per_decode * y
    t = float(cost.iteration_s(x, y, ctx))
    if not t > 0:
        raise ValueError(f"{type(cost).__name__} gives a full batch a non-positive time {t} s")
    formula = (f"mu* ~= b_max / t(x, y, C) = {b} / {t:.6g} s, assuming a full batch of "
               f"x = {x:.6g} prefill and y = s*b_max = {y:.6g} decode tokens "
               f"(s = {decode_share:.4g}) with context C = y * {context_per_decode:.6g} "
               "tokens per decoder")
    return Quantity(b / t, "tokens/s", formula, exact=False)


@dataclass(frozen=True)
class RequestCapacity:
    """Capacity of one engine for a workload.

    Attributes:
        token_capacity: mu*, tokens/s.
        mean_tokens: m = sum_k w_k (m_p^k + m_d^k), tokens per request.
        request_capacity: lambda* = mu* / m, requests/s.
        load: rho = sum_k lambda_k (m_p^k + m_d^k) / mu*, at the workload's arrival rate.
    """

    token_capacity: Quantity
    mean_tokens: Quantity
    request_capacity: Quantity
    load: Quantity


def request_capacity(cost: CostModel, token_budget: int, workload: Workload, *,
                     rate_per_s: float | None = None, **assumption: Any) -> RequestCapacity:
    """Return mu*, m, lambda* = mu*/m and the load rho at ``rate_per_s`` (default: the workload's).

    With classes k of weight w_k, lambda_k = lambda w_k, so rho = sum_k lambda_k (m_p^k + m_d^k) /
    mu* = lambda m / mu* and lambda* = mu* / m, m = sum_k w_k (m_p^k + m_d^k). ``assumption`` is
    passed to ``token_capacity`` (decode_share, context_per_decode).
    """
    mu = token_capacity(cost, token_budget, workload, **assumption)
    m_p, m_d = _means(workload)
    m = m_p + m_d
    if len(workload.classes) == 1:
        m_formula = f"m = m_p + m_d = {m_p:.6g} + {m_d:.6g}"
    else:
        m_formula = ("m = sum_k w_k (m_p^k + m_d^k) = " + " + ".join(
            f"{c.weight:.4g}*({c.prompt.mean:.6g}+{c.output.mean:.6g})"
            for c in workload.classes))
    mean_tokens = Quantity(m, "tokens/request", m_formula)
    lam_star = Quantity(mu.value / m, "requests/s",
                        f"lambda* = mu* / m = {mu.value:.6g} / {m:.6g}", exact=mu.exact)
    rho = load(cost, token_budget, workload, rate_per_s=rate_per_s, _mu=mu, **assumption)
    return RequestCapacity(mu, mean_tokens, lam_star, rho)


def scenario_capacity(scenario: Any, **assumption: Any) -> RequestCapacity:
    """``request_capacity`` for a Scenario: its cost model, engine token budget and workload."""
    return request_capacity(scenario.cost, scenario.engine.token_budget, scenario.workload,
                            **assumption)


def load(cost: CostModel, token_budget: int, workload: Workload, *,
         rate_per_s: float | None = None, _mu: Quantity | None = None,
         **assumption: Any) -> Quantity:
    """Return rho = sum_k lambda_k (m_p^k + m_d^k) / mu*, lambda_k = lambda w_k (dimensionless).

    lambda is ``rate_per_s`` or the workload's long-run arrival rate. Stable iff rho < 1 (for
    every work-conserving policy, without a batch-size cap).
    """
    mu = _mu if _mu is not None else token_capacity(cost, token_budget, workload, **assumption)
    lam = workload.arrival.rate_per_s if rate_per_s is None else rate_per_s
    terms = [(lam * c.weight, c.prompt.mean + c.output.mean) for c in workload.classes]
    work = sum(lk * mk for lk, mk in terms)
    parts = " + ".join(f"{lk:.6g}*{mk:.6g}" for lk, mk in terms)
    return Quantity(work / mu.value, "1",
                    f"rho = sum_k lambda_k (m_p^k + m_d^k) / mu* = ({parts}) / {mu.value:.6g}",
                    exact=mu.exact)


# -- request-level cycles with deterministic sizes ------------------------------------------------


@dataclass(frozen=True)
class CycleCapacity:
    """Saturated cycle of a non-mixing batching rule with deterministic sizes.

    Attributes:
        batch_requests: k, requests admitted per cycle.
        cycle_s: t(k v_p) + sum_{j<v_d} t(0, k, k (v_p + j)), seconds.
        request_capacity: k / cycle, requests/s.
        token_capacity: k (v_p + v_d) / cycle, tokens/s.
    """

    batch_requests: Quantity
    cycle_s: Quantity
    request_capacity: Quantity
    token_capacity: Quantity


def _cycle(cost: CostModel, k: int, k_formula: str, prompt_tokens: int, output_tokens: int,
           source: str) -> CycleCapacity:
    v_p, v_d = prompt_tokens, output_tokens
    t_prefill = float(cost.iteration_s(k * v_p, 0, 0))
    j = np.arange(v_d, dtype=np.int64)
    # Decoding requests carry no prefill tokens: iteration_s(0, k, context).
    decode = np.asarray(cost.iteration_s(np.zeros(v_d, np.int64), np.full(v_d, k, np.int64),
                                         k * (v_p + j)), dtype=np.float64)
    cycle = t_prefill + float(decode.sum())
    if cost.uses_context:
        decode_formula = (f"sum_(j<v_d) t(0, k, k(v_p+j)) = {float(decode.sum()):.6g} s")
    else:
        decode_formula = f"v_d * t(k) = {v_d} * {float(decode[0]) if v_d else 0:.6g} s"
    cycle_formula = (f"cycle = t(k v_p) + {decode_formula.split(' = ')[0]} = {t_prefill:.6g} s "
                     f"+ {decode_formula.split(' = ', 1)[1]} (k={k}, v_p={v_p}, v_d={v_d})")
    return CycleCapacity(
        Quantity(float(k), "requests", k_formula, source),
        Quantity(cycle, "s", cycle_formula, source),
        Quantity(k / cycle, "requests/s", f"k / cycle = {k} / {cycle:.6g} s", source),
        Quantity(k * (v_p + v_d) / cycle, "tokens/s",
                 f"k (v_p + v_d) / cycle = {k}*{v_p + v_d} / {cycle:.6g} s", source),
    )


def _check_sizes(prompt_tokens: int, output_tokens: int, token_budget: int) -> None:
    _check_budget(token_budget)
    for name, v in (("prompt_tokens", prompt_tokens), ("output_tokens", output_tokens)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if prompt_tokens > token_budget:
        raise ValueError(f"a whole prompt of {prompt_tokens} tokens does not fit the token budget "
                         f"{token_budget}: the rule never serves it")


def fastertransformer_cycle_capacity(cost: CostModel, token_budget: int, prompt_tokens: int,
                                     output_tokens: int,
                                     max_batch_size: int | None = None) -> CycleCapacity:
    """Capacity of the stylised FasterTransformer rule with deterministic sizes (v_p, v_d).

    Rule: if anyone decodes, a decode-only batch; else whole prefills, FCFS, while they fit. Under
    saturation each cycle prefills k = floor(b_max / v_p) requests (capped by k_max if given) in
    one batch, then runs v_d decode-only iterations of k tokens: cycle = t(k v_p) + v_d t(k) for
    token-only models (for context models each decode iteration j is priced with context
    k (v_p + j)). Capacity k / cycle requests/s; exact for deterministic sizes.
    """
    _check_sizes(prompt_tokens, output_tokens, token_budget)
    k = token_budget // prompt_tokens
    k_formula = f"k = floor(b_max / v_p) = floor({token_budget} / {prompt_tokens})"
    if max_batch_size is not None:
        _check_cap(max_batch_size)
        k = min(k, max_batch_size)
        k_formula = (f"k = min(k_max, floor(b_max / v_p)) = min({max_batch_size}, "
                     f"floor({token_budget} / {prompt_tokens}))")
    return _cycle(cost, k, k_formula + f" = {k}", prompt_tokens, output_tokens,
                  SOURCE + ", FasterTransformer rule")


def static_batching_capacity(cost: CostModel, token_budget: int, max_batch_size: int,
                             prompt_tokens: int, output_tokens: int) -> CycleCapacity:
    """Capacity of request-level (static) batching with deterministic sizes (v_p, v_d).

    A batch of k = min(k_max, floor(b_max / v_p)) requests is prefilled together and decoded to
    completion before anything joins: cycle = t(k v_p) + v_d t(k), capacity k / cycle requests/s.
    With deterministic sizes this equals the stylised FasterTransformer cycle with the same k.
    """
    _check_sizes(prompt_tokens, output_tokens, token_budget)
    _check_cap(max_batch_size)
    k = min(max_batch_size, token_budget // prompt_tokens)
    k_formula = (f"k = min(k_max, floor(b_max / v_p)) = min({max_batch_size}, "
                 f"floor({token_budget} / {prompt_tokens})) = {k}")
    return _cycle(cost, k, k_formula, prompt_tokens, output_tokens,
                  SOURCE + ", request-level (static) batching as in the FasterTransformer library")


# -- batch-size cap: the two-dimensional stability region ----------------------------------------


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
