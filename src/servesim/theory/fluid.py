"""Memory-constrained fluid model of one engine (Ao, Luo, Simchi-Levi, Wang 2025, WAIT).

Prompt type j arrives at rate lambda_j, has l_j prefill tokens and l'_j output tokens. A request
of type j stays for l'_j + 1 iterations (one prefill, l'_j decodes) and holds on average
l_j + l'_j/2 KV tokens while it does. An iteration with K tokens of context takes
tau = d0 + d1*K seconds. Every function returns frozen dataclasses of ``Quantity`` (from
``servesim.theory.capacity``), each carrying its value, unit, formula and source. See
docs/theory_fluid.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from servesim.core.errors import ConfigError
from servesim.core.fields import number
from servesim.theory.capacity import Quantity

SOURCE = ("Ao, Luo, Simchi-Levi, Wang 2025, 'Optimizing LLM Inference: Fluid-Guided Online "
          "Scheduling with Memory Constraints'")

__all__ = [
    "MemoryTimeBound",
    "NestedSegment",
    "NestedWaitFluid",
    "PromptType",
    "SOURCE",
    "WaitFluid",
    "memory_time_bound",
    "nested_wait_fluid",
    "wait_fluid",
    "wait_thresholds",
]


@dataclass(frozen=True, slots=True)
class PromptType:
    """One prompt type: arrival rate (1/s), prefill tokens l_j and output tokens l'_j.

    Raises ConfigError if the rate is negative or a length is negative.
    """

    rate_per_s: float
    prefill_tokens: float
    output_tokens: float

    def __post_init__(self) -> None:
        number(self.rate_per_s, "PromptType.rate_per_s", low=0.0)
        number(self.prefill_tokens, "PromptType.prefill_tokens", low=0.0)
        number(self.output_tokens, "PromptType.output_tokens", low=0.0)

    @property
    def iterations(self) -> float:
        """Iterations a request is present for: l'_j + 1."""
        return self.output_tokens + 1.0

    @property
    def mean_kv_tokens(self) -> float:
        """Average KV tokens held while present: l_j + l'_j/2."""
        return self.prefill_tokens + self.output_tokens / 2.0


@dataclass(frozen=True, slots=True)
class WaitFluid:
    """Fluid equilibrium of WAIT: work S, KV in use M*, iteration time, throughput, stability."""

    work: Quantity
    load: Quantity
    margin: Quantity
    kv_tokens_in_use: Quantity
    iteration_time: Quantity
    throughput: Quantity
    stable: bool

    @property
    def verdict(self) -> str:
        return "stable" if self.stable else "unstable"

    def quantities(self) -> tuple[Quantity, ...]:
        return (self.work, self.load, self.margin, self.kv_tokens_in_use, self.iteration_time,
                self.throughput)


@dataclass(frozen=True, slots=True)
class MemoryTimeBound:
    """The memory-time condition M* <= C and the largest stable scaling of all arrival rates."""

    kv_tokens_in_use: Quantity
    kv_capacity: Quantity
    max_rate_scale: Quantity
    compute_rate_scale: Quantity
    fits: bool

    @property
    def verdict(self) -> str:
        return "fits in KV memory" if self.fits else "exceeds KV memory"

    def quantities(self) -> tuple[Quantity, ...]:
        return (self.kv_tokens_in_use, self.kv_capacity, self.max_rate_scale,
                self.compute_rate_scale)


def _q(value: float, unit: str, formula: str) -> Quantity:
    return Quantity(value, unit, formula, source=SOURCE)


_S_FORMULA = "S = sum_j lambda_j*(l'_j+1)*(l_j + l'_j/2)"


def _check_types(types: Sequence[PromptType]) -> tuple[PromptType, ...]:
    types = tuple(types)
    if not types:
        raise ConfigError("types", types, "at least one PromptType")
    for i, t in enumerate(types):
        if not isinstance(t, PromptType):
            raise ConfigError(f"types[{i}]", t, "a PromptType")
    return types


def _work(types: Sequence[PromptType]) -> float:
    return sum(t.rate_per_s * t.iterations * t.mean_kv_tokens for t in types)


def wait_fluid(types: Sequence[PromptType], d0_s: float, d1_s: float) -> WaitFluid:
    """Return the fluid equilibrium of WAIT for iteration time tau = d0 + d1*(tokens of context).

    Raises ConfigError if ``types`` is empty or holds a non-PromptType, if d0_s <= 0 or d1_s < 0.
    """
    types = _check_types(types)
    d0 = number(d0_s, "d0_s", low=0.0, low_open=True)
    d1 = number(d1_s, "d1_s", low=0.0)
    s = _work(types)
    load = d1 * s
    stable = load < 1.0
    inf = float("inf")
    kv = d0 * s / (1.0 - load) if stable else inf
    tau = d0 / (1.0 - load) if stable else inf
    return WaitFluid(
        work=_q(s, "token*iterations/s", _S_FORMULA),
        load=_q(load, "", "load = d1*S  (stable iff < 1)"),
        margin=_q(1.0 - load, "", "margin = 1 - d1*S"),
        kv_tokens_in_use=_q(kv, "tokens", "M* = d0*S/(1 - d1*S)"),
        iteration_time=_q(tau, "s", "tau* = d0/(1 - d1*S)"),
        throughput=_q(sum(t.rate_per_s * t.iterations for t in types),
                      "tokens/s", "throughput = sum_j lambda_j*(l'_j+1)"),
        stable=stable,
    )


def memory_time_bound(types: Sequence[PromptType], kv_capacity_tokens: float, d0_s: float,
                      d1_s: float) -> MemoryTimeBound:
    """Return the memory-time condition M* = d0*S/(1 - d1*S) <= C and its largest rate scaling.

    By Little's law the KV in use is S*tau; with tau = d0/(1 - d1*S) that is M*. Scaling every
    rate by theta scales S by theta; solving d0*theta*S/(1 - d1*theta*S) = C gives
    theta_max = C/(S*(d0 + d1*C)), which is always below the compute limit 1/(d1*S).

    Raises ConfigError for invalid types, d0_s <= 0, d1_s < 0, or kv_capacity_tokens <= 0.
    """
    fluid = wait_fluid(types, d0_s, d1_s)
    c = number(kv_capacity_tokens, "kv_capacity_tokens", low=0.0, low_open=True)
    d0, d1, s = float(d0_s), float(d1_s), fluid.work.value
    inf = float("inf")
    theta = c / (s * (d0 + d1 * c)) if s > 0 else inf
    compute = 1.0 / (d1 * s) if s > 0 and d1 > 0 else inf
    return MemoryTimeBound(
        kv_tokens_in_use=fluid.kv_tokens_in_use,
        kv_capacity=_q(c, "tokens", "KV capacity"),
        max_rate_scale=_q(theta, "", "theta_max = C/(S*(d0 + d1*C))"),
        compute_rate_scale=_q(compute, "", "theta_compute = 1/(d1*S)"),
        fits=fluid.stable and fluid.kv_tokens_in_use.value <= c,
    )


def wait_thresholds(types: Sequence[PromptType], batch_tokens_B: float) -> tuple[Quantity, ...]:
    """Return WAIT's practical thresholds n_j = B*rho_j/(l'_j+1), rho_j = lambda_j/sum(lambda).

    Raises ConfigError for invalid types, a zero total rate, or batch_tokens_B <= 0.
    """
    types = _check_types(types)
    b = number(batch_tokens_B, "batch_tokens_B", low=0.0, low_open=True)
    total = sum(t.rate_per_s for t in types)
    if total <= 0:
        raise ConfigError("types[*].rate_per_s", total, "a positive total arrival rate")
    return tuple(
        _q(b * (t.rate_per_s / total) / t.iterations, "requests",
                 "n_j = B*rho_j/(l'_j+1), rho_j = lambda_j/sum(lambda)")
        for j, t in enumerate(types)
    )


# -- Nested WAIT ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NestedSegment:
    """One segment of Nested WAIT: output progress [lower, upper) tokens generated."""

    lower_tokens: int
    upper_tokens: float
    rate: Quantity
    share: Quantity
    iterations: Quantity
    work: Quantity
    threshold: Quantity | None

    def quantities(self) -> tuple[Quantity, ...]:
        extra = () if self.threshold is None else (self.threshold,)
        return (self.rate, self.share, self.iterations, self.work, *extra)


@dataclass(frozen=True, slots=True)
class NestedWaitFluid:
    """Per-segment flows of Nested WAIT and the fluid equilibrium of the whole engine."""

    segments: tuple[NestedSegment, ...]
    fluid: WaitFluid

    @property
    def stable(self) -> bool:
        return self.fluid.stable


def _pmf(values: Sequence[float], probs: Sequence[float] | None) -> tuple[list, list]:
    vals = [float(v) for v in values]
    if not vals:
        raise ConfigError("output_tokens", list(values), "at least one output length")
    for v in vals:
        if v < 1 or v != int(v):
            raise ConfigError("output_tokens", v, "whole output lengths >= 1")
    if probs is None:
        return vals, [1.0 / len(vals)] * len(vals)
    ps = [number(p, "output_probs", low=0.0) for p in probs]
    if len(ps) != len(vals) or not math.isclose(sum(ps), 1.0, rel_tol=1e-9):
        raise ConfigError("output_probs", list(probs),
                          f"{len(vals)} probabilities summing to 1, one per output length")
    return vals, ps


def _stage_kv(l_tok: float, first: float, last: float) -> float:
    # KV summed over stages k = first..last, stage k holding l + k tokens.
    n = last - first + 1
    return n * l_tok + (first + last) * n / 2 if n > 0 else 0.0


def nested_wait_fluid(rate_per_s: float, prefill_tokens: float, output_tokens: Sequence[float],
                      d0_s: float, d1_s: float, segments: Sequence[int] = (),
                      output_probs: Sequence[float] | None = None,
                      batch_tokens_B: float | None = None) -> NestedWaitFluid:
    """Fluid flows of Nested WAIT for one prompt stream with unknown output lengths D.

    ``output_tokens`` (with ``output_probs``; default equally likely, i.e. a sample) is the
    distribution of D; ``segments`` the boundaries a_1 < a_2 < ... (a_0 = 0). Stage k = 0..D
    holds l + k KV tokens (stage 0 is the prefill); segment s holds stages a_(s-1)+1..a_s, and
    segment 1 also stage 0. Per segment:

    - rate lambda_s = lambda*P(D > a_(s-1)) (requests/s entering it);
    - share rho_s = P(D > a_(s-1)) / sum_s P(D > a_(s-1));
    - iterations L_s = E[min(D, a_s) - a_(s-1) | D > a_(s-1)] (+1 in segment 1);
    - work S_s = lambda*E[sum of l + k over the request's stages in s];
    - with ``batch_tokens_B``, the threshold n_s = B*rho_s/L_s (the analogue of WAIT's).

    The segments partition each request's stages, so sum_s S_s = lambda*E[(D+1)(l + D/2)] = S,
    and the equilibrium is WAIT's with one type per output length: M* = d0*S/(1 - d1*S),
    tau* = d0/(1 - d1*S), throughput lambda*(E[D] + 1). Not covered: the requests that wait at
    segment entries for a threshold to fill (they hold KV without progressing), which a fluid
    with thresholds of order one neglects.

    Raises ConfigError for a negative rate or prefill, a bad distribution, bad segments, d0_s
    <= 0, d1_s < 0 or batch_tokens_B <= 0.
    """
    lam = number(rate_per_s, "rate_per_s", low=0.0)
    l_tok = number(prefill_tokens, "prefill_tokens", low=0.0)
    vals, ps = _pmf(output_tokens, output_probs)
    bounds = [int(a) for a in segments]
    if any(a < 1 for a in bounds) or any(b <= a for a, b in zip(bounds, bounds[1:],
                                                                 strict=False)):
        raise ConfigError("segments", list(segments), "strictly increasing integers >= 1")
    if batch_tokens_B is not None:
        number(batch_tokens_B, "batch_tokens_B", low=0.0, low_open=True)
    types = [PromptType(lam * p, l_tok, d) for d, p in zip(vals, ps, strict=True) if p > 0]
    fluid = wait_fluid(types, d0_s, d1_s)
    lows, highs = [0, *bounds], [*bounds, math.inf]
    alive = [sum(p for d, p in zip(vals, ps, strict=True) if d > a) for a in lows]
    total = sum(alive)
    out = []
    for s, (a, b) in enumerate(zip(lows, highs, strict=True)):
        first = 0 if s == 0 else a + 1
        stay = sum(p * (min(d, b) - a) for d, p in zip(vals, ps, strict=True) if d > a)
        iters = (stay / alive[s] if alive[s] else 0.0) + (1.0 if s == 0 else 0.0)
        work = lam * sum(p * _stage_kv(l_tok, first, min(d, b))
                         for d, p in zip(vals, ps, strict=True) if d >= first)
        share = alive[s] / total
        threshold = None
        if batch_tokens_B is not None and iters > 0:
            threshold = _q(batch_tokens_B * share / iters, "requests",
                           "n_s = B*rho_s/L_s")
        out.append(NestedSegment(
            lower_tokens=a, upper_tokens=b,
            rate=_q(lam * alive[s], "1/s", "lambda_s = lambda*P(D > a_(s-1))"),
            share=_q(share, "", "rho_s = P(D > a_(s-1)) / sum_s P(D > a_(s-1))"),
            iterations=_q(iters, "iterations",
                          "L_s = E[min(D, a_s) - a_(s-1) | D > a_(s-1)] (+1 in segment 1)"),
            work=_q(work, "token*iterations/s",
                    "S_s = lambda*E[sum_{k in s, k <= D} (l + k)]"),
            threshold=threshold))
    return NestedWaitFluid(tuple(out), fluid)
