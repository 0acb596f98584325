"""Memory-constrained fluid model of one engine (Ao, Luo, Simchi-Levi, Wang 2025, WAIT).

Prompt type j arrives at rate lambda_j, has l_j prefill tokens and l'_j output tokens. A request
of type j stays for l'_j + 1 iterations (one prefill, l'_j decodes) and holds on average
l_j + l'_j/2 KV tokens while it does. An iteration with K tokens of context takes
tau = d0 + d1*K seconds. Every function returns frozen dataclasses of ``Quantity`` (from
``servesim.theory.capacity``), each carrying its value, unit, formula and source. See
docs/theory_fluid.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from servesim.core.errors import ConfigError
from servesim.core.fields import number
from servesim.theory.capacity import Quantity

SOURCE = ("Ao, Luo, Simchi-Levi, Wang 2025, 'Optimizing LLM Inference: Fluid-Guided Online "
          "Scheduling with Memory Constraints'")

__all__ = [
    "MemoryTimeBound",
    "PromptType",
    "SOURCE",
    "WaitFluid",
    "memory_time_bound",
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
