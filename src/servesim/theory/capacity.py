"""Capacity theory of one engine: the largest sustainable token and request rates.

Every function returns a ``Quantity`` (or a small dataclass of them) that carries its value, unit,
the formula it came from, the source of that formula and whether it is exact for the given cost
model, so a CLI can print each number next to its derivation. See docs/theory.md, "Capacity".
The two-dimensional region under a batch-size cap is in ``servesim.theory.cap_region``.

Notation: b_max is the token budget, k_max the batch-size cap, t(b) the time of a batch of b
tokens, m_p / m_d the mean prefill / decode tokens per request and lambda the arrival rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from servesim.engine.cost import Constant, CostModel, PiecewiseLinear, Staircase
from servesim.workload.build import Workload

__all__ = [
    "SOURCE",
    "CycleCapacity",
    "Quantity",
    "RequestCapacity",
    "fastertransformer_cycle_capacity",
    "load",
    "mean_context_per_decode",
    "request_capacity",
    "scenario_capacity",
    "static_batching_capacity",
    "token_capacity",
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
        unit = "" if self.unit in ("", "1") else f" {self.unit}"   # "1": dimensionless
        return f"{self.value:.6g}{unit}{tag}  [{self.formula}]"


def _token_only(cost: CostModel) -> bool:
    """True iff t depends on the batch's token count b = prefill + decode only."""
    return isinstance(cost, Staircase | PiecewiseLinear | Constant)


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
    PiecewiseLinear, Constant). For other models (Affine, Roofline, Fitted) the time of a full
    batch depends on its prefill/decode split and on the decoders' context, so the full batch is
    priced under a stated assumption and the result has ``exact=False``: a decode share s of the
    b_max tokens and a mean context c per decode token. Defaults come from ``workload``:
    s = m_d/(m_p+m_d) and c = ``mean_context_per_decode(workload)`` (m_p + m_d/2 for one class).

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


def static_batching_capacity(cost: CostModel, token_budget: int, max_batch_size: int | None,
                             prompt_tokens: int, output_tokens: int) -> CycleCapacity:
    """Capacity of request-level (static) batching with deterministic sizes (v_p, v_d).

    A batch of k = min(k_max, floor(b_max / v_p)) requests is prefilled together and decoded to
    completion before anything joins: cycle = t(k v_p) + v_d t(k), capacity k / cycle requests/s.
    ``max_batch_size`` None means no cap: k = floor(b_max / v_p). With deterministic sizes this
    equals the stylised FasterTransformer cycle with the same k.
    """
    _check_sizes(prompt_tokens, output_tokens, token_budget)
    if max_batch_size is None:
        k = token_budget // prompt_tokens
        k_formula = f"k = floor(b_max / v_p) = floor({token_budget} / {prompt_tokens}) = {k}"
    else:
        _check_cap(max_batch_size)
        k = min(max_batch_size, token_budget // prompt_tokens)
        k_formula = (f"k = min(k_max, floor(b_max / v_p)) = min({max_batch_size}, "
                     f"floor({token_budget} / {prompt_tokens})) = {k}")
    return _cycle(cost, k, k_formula, prompt_tokens, output_tokens,
                  SOURCE + ", request-level (static) batching as in the FasterTransformer library")
