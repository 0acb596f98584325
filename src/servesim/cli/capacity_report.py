"""What ``servesim capacity`` computes for a scenario: mu*, lambda* and the load always, then the
quantities that apply to its batching system (the FasterTransformer or static-batching cycle,
the batch-size-cap region, the WAIT fluid equilibrium), and every quantity it leaves out under
``skipped`` with the reason. A quantity the scenario cannot have (a prompt longer than the
budget of a system that cannot chunk it) is skipped with the reason, never raised.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from servesim.scenario import Scenario
from servesim.theory import (
    PromptType,
    Quantity,
    RequestCapacity,
    cap_region,
    fastertransformer_cycle_capacity,
    mean_context_per_decode,
    memory_time_bound,
    scenario_capacity,
    static_batching_capacity,
    wait_fluid,
)
from servesim.workload.closed import ClosedArrivals
from servesim.workload.distributions import Deterministic

__all__ = ["MAX_REGION_BATCHES", "capacity_report", "plain"]

UNCAPPED = 1 << 20   # a max_batch_size at least this large is treated as no cap

MAX_REGION_BATCHES = 2_000_000
"""Most (x, y) batches the cap region enumerates for a context-dependent cost model."""

_CHUNKING = ("orca", "sarathi")   # work-conserving while chunk_tokens >= token_budget
_NON_MIXING = ("fastertransformer", "static", "vllm")


class _Skip(Exception):
    """A quantity that does not apply to the scenario; the message says why."""


def capacity_report(scenario: Scenario) -> dict[str, Any]:
    """mu*, m, lambda*, the load, and each quantity that applies to the scenario's batching
    system (Quantities or nested dicts of them); ``skipped`` maps every other quantity to the
    reason, ``notes`` says what lambda* means for this system."""
    cap = scenario_capacity(scenario)
    report: dict[str, Any] = {
        "batching": scenario.engine.batching,
        "token_capacity": cap.token_capacity,
        "mean_tokens_per_request": cap.mean_tokens,
        "request_capacity": cap.request_capacity,
        "load": cap.load,
    }
    skipped: dict[str, str] = {}
    if _closed(scenario):
        del report["load"]
        skipped["load"] = skipped["batch_cap_region.operating_point"] = _CLOSED
    for name, build in _SECTIONS:
        try:
            report[name] = build(scenario, cap)
        except _Skip as reason:
            skipped[name] = str(reason)
    report["skipped"] = skipped
    report["notes"] = _notes(scenario, report)
    return report


def plain(value: Any) -> Any:
    """The report as JSON-ready data: each Quantity as {value, unit, formula, exact}."""
    if isinstance(value, Quantity):
        return {"value": _finite(value.value), "unit": value.unit, "formula": value.formula,
                "exact": value.exact}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return _finite(value) if isinstance(value, float) else value


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


# -- the quantities that depend on the batching system --------------------------------------------


_CLOSED = ("a closed-loop workload has no arrival rate: its throughput follows from its "
           "clients, think time and the engine")


def _closed(scenario: Scenario) -> bool:
    return isinstance(scenario.workload.arrival, ClosedArrivals)


def _only(scenario: Scenario, *systems: str) -> None:
    if scenario.engine.batching not in systems:
        names = " or ".join(repr(s) for s in systems)
        raise _Skip(f"applies to batching = {names} only")


def _cap(scenario: Scenario) -> int | None:
    k_max = scenario.engine.max_batch_size
    return None if k_max >= UNCAPPED else k_max


def _sizes(scenario: Scenario) -> tuple[int, int]:
    classes = scenario.workload.classes
    if len(classes) != 1:
        raise _Skip(f"needs one request class with deterministic lengths; the workload has "
                    f"{len(classes)} classes")
    only = classes[0]
    if not (isinstance(only.prompt, Deterministic) and isinstance(only.output, Deterministic)):
        raise _Skip("needs deterministic prompt and output lengths (the cycle is exact only "
                    "when every request in a batch finishes together)")
    return int(only.prompt.value), int(only.output.value)


def _cycle(scenario: Scenario, build: Callable[..., Any]) -> dict[str, Any]:
    prompt, output = _sizes(scenario)
    try:
        cycle = build(prompt, output)
    except ValueError as e:   # e.g. a whole prompt longer than the budget
        raise _Skip(f"not applicable: {e}; {scenario.engine.batching} rejects such "
                    "requests") from None
    return dict(vars(cycle))


def _fastertransformer(scenario: Scenario, cap: RequestCapacity) -> dict[str, Any]:
    _only(scenario, "fastertransformer")
    e = scenario.engine
    return _cycle(scenario, lambda p, d: fastertransformer_cycle_capacity(
        scenario.cost, e.token_budget, p, d, _cap(scenario)))


def _static(scenario: Scenario, cap: RequestCapacity) -> dict[str, Any]:
    _only(scenario, "static")
    e = scenario.engine
    return _cycle(scenario, lambda p, d: static_batching_capacity(
        scenario.cost, e.token_budget, _cap(scenario), p, d))


def _region(scenario: Scenario, cap: RequestCapacity) -> dict[str, Any]:
    k_max, b_max = _cap(scenario), scenario.engine.token_budget
    if k_max is None:
        raise _Skip("applies with a batch-size cap; engine.max_batch_size is not set")
    if k_max >= b_max:
        raise _Skip(f"the cap k_max = {k_max} >= b_max = {b_max} never binds a batch, so the "
                    "load condition rho < 1 is the whole story")
    cost, context = scenario.cost, None
    if not _token_only(cost):
        batches = (b_max + 1) * (k_max + 1)
        if batches > MAX_REGION_BATCHES:
            raise _Skip(f"{type(cost).__name__} prices every (x, y) batch: {batches} batches "
                        f"exceed the {MAX_REGION_BATCHES} this command enumerates")
        context = mean_context_per_decode(scenario.workload)
    region = cap_region(cost, b_max, k_max, context_per_decode=context)
    out: dict[str, Any] = {
        "formula": region.formula,
        "exact": region.exact,
        "vertices": [{"prefill_tokens_per_s": float(x), "decode_tokens_per_s": float(y),
                      "batch": list(b)}
                     for (x, y), b in zip(region.vertices, region.batches, strict=True)],
    }
    w = scenario.workload
    rate = w.arrival.rate_per_s
    if _closed(scenario):
        return out   # no operating point: capacity_report lists it under skipped
    x = rate * sum(c.weight * c.prompt.mean for c in w.classes)
    y = rate * sum(c.weight * c.output.mean for c in w.classes)
    out["operating_point"] = {"prefill_tokens_per_s": x, "decode_tokens_per_s": y,
                              "inside": bool(region.contains(x, y))}
    return out


def _token_only(cost: Any) -> bool:
    from servesim.theory.capacity import _token_only as token_only

    return token_only(cost)


def _wait_fluid(scenario: Scenario, cap: RequestCapacity) -> dict[str, Any]:
    _only(scenario, "wait")
    if _closed(scenario):
        raise _Skip(_CLOSED)
    from servesim.engine.cost import Affine

    cost = scenario.cost
    if not isinstance(cost, Affine) or cost.decode_s != 0:
        raise _Skip("the fluid model prices an iteration as d0 + d1 * (prefill + context) "
                    "tokens: it needs engine.cost.kind = 'affine' with decode_ms = 0, not "
                    f"{cost.describe()['kind']!r}" + (" with decode_ms > 0"
                                                      if isinstance(cost, Affine) else ""))
    w = scenario.workload
    types = [PromptType(w.arrival.rate_per_s * c.weight, c.prompt.mean, c.output.mean)
             for c in w.classes]
    out: dict[str, Any] = dict(zip(("work", "load", "margin", "kv_tokens_in_use",
                                    "iteration_time", "throughput"),
                                   wait_fluid(types, cost.d0_s, cost.d1_s).quantities(),
                                   strict=True))
    kv = scenario.engine.kv
    bound = memory_time_bound(types, kv.blocks * kv.block_tokens, cost.d0_s, cost.d1_s)
    out.update(kv_capacity=bound.kv_capacity, max_rate_scale=bound.max_rate_scale,
               compute_rate_scale=bound.compute_rate_scale)
    return out


_SECTIONS: tuple[tuple[str, Callable[[Scenario, RequestCapacity], dict[str, Any]]], ...] = (
    ("fastertransformer", _fastertransformer),
    ("static", _static),
    ("batch_cap_region", _region),
    ("wait_fluid", _wait_fluid),
)


# -- what lambda* means for the system ------------------------------------------------------------


def _notes(scenario: Scenario, report: dict[str, Any]) -> list[str]:
    e = scenario.engine
    system = e.batching
    notes = []
    if system == "greedy" or (system in _CHUNKING and e.chunk_limit >= e.token_budget):
        notes.append(f"{system} is work-conserving: stable iff rho < 1 (lambda* is its capacity)"
                     + ("" if "batch_cap_region" not in report else
                        ", within the batch-size-cap region below"))
    elif system in _CHUNKING:
        notes.append(f"{system} with chunk_tokens = {e.chunk_limit} < token_budget = "
                     f"{e.token_budget} may leave budget unused: lambda* bounds its capacity "
                     "from above")
    elif system in _NON_MIXING:
        cycle = "; the cycle capacity is its exact capacity" if system in report else ""
        notes.append(f"{system} never mixes prefills and decodes, so it is not work-conserving: "
                     f"lambda* bounds its capacity from above{cycle}")
    else:
        notes.append(f"{system} holds requests at gates until its thresholds fill: lambda* is "
                     "the compute bound, and the KV cache may bind first")
    kv = _kv_note(scenario, report.get(system))
    return notes + ([kv] if kv else [])


def _kv_note(scenario: Scenario, cycle: dict[str, Any] | None) -> str | None:
    """Whether the cycle's batch fits the KV cache at full length (the cycle assumes it does)."""
    if cycle is None:
        return None
    kv = scenario.engine.kv
    k = int(cycle["batch_requests"].value)
    prompt, output = _sizes(scenario)
    per = -(-(prompt + output) // kv.block_tokens)
    have = kv.blocks - kv.watermark_blocks
    if k * per <= have:
        return None
    return (f"the cycle assumes KV memory never binds, but {k} requests of {prompt + output} "
            f"tokens need {k * per} blocks and the cache has {have}: preemptions lower the "
            "capacity below the cycle's")
