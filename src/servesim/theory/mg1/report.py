"""Everything ``servesim theory`` prints for an ``[mg1]`` spec, as plain data."""

from __future__ import annotations

from typing import Any

from servesim.core.errors import ConfigError
from servesim.theory.mg1.api import (
    POLICIES,
    best_one_bit_threshold,
    evaluate,
    price_of_misprediction,
)
from servesim.theory.mg1.sizes import make_sizes
from servesim.theory.mg1.spec import Mg1Spec

__all__ = ["mg1_report"]


def mg1_report(spec: Mg1Spec) -> dict[str, Any]:
    """Per load: E[T] of each policy with its formula and price of misprediction, and the best
    1-bit thresholds (non-preemptive and preemptive)."""
    mean_size = make_sizes(spec.sizes).mean
    loads = []
    for lam in spec.rates:
        rows = [_policy_row(spec, name, lam) for name in spec.policies]
        entry: dict[str, Any] = {"load": lam * mean_size, "arrival_rate": lam, "policies": rows}
        if spec.best_one_bit_threshold:
            entry["best_one_bit_threshold"] = {
                kind: vars(best_one_bit_threshold(spec.sizes, spec.predictor, lam,
                                                  preemptive=kind == "preemptive"))
                for kind in ("non_preemptive", "preemptive")}
        loads.append(entry)
    return {"source": spec.source, "sizes": dict(spec.sizes), "predictor": spec.predictor,
            "loads": loads}


def _policy_row(spec: Mg1Spec, name: str, lam: float) -> dict[str, Any]:
    params = dict(spec.params.get(name, {}))
    try:
        ev = evaluate(name, spec.sizes, spec.predictor, lam, **params)
        price = None
        if POLICIES[name][0] != "size" and spec.predictor is not None \
                and spec.predictor.get("kind") != "oracle":
            price = price_of_misprediction(name, spec.sizes, spec.predictor, lam, **params)
    except ConfigError as err:
        if err.field.startswith("params."):
            raise ConfigError(f"mg1.params.{name}.{err.field[7:]}", err.value,
                              err.expected) from None
        raise
    return {"policy": name, "mean_response_time": ev.mean_response_time, "method": ev.method,
            "formula": ev.formula, "price_of_misprediction": price, "params": params}
