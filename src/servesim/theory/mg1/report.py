"""Everything ``servesim theory`` prints for an ``[mg1]`` spec, as plain data."""

from __future__ import annotations

from typing import Any

from servesim.core.progress import Progress
from servesim.theory.mg1.api import best_one_bit_threshold, evaluate, exact_params
from servesim.theory.mg1.policies import POLICIES
from servesim.theory.mg1.sizes import make_sizes
from servesim.theory.mg1.spec import Mg1Spec, PolicyRow

__all__ = ["mg1_report"]

_THRESHOLDS = ("non_preemptive", "preemptive")


def mg1_report(spec: Mg1Spec, progress: Progress | None = None) -> dict[str, Any]:
    """Per load: E[T] of each policy row with its formula and price of misprediction, and the
    best 1-bit thresholds (non-preemptive and preemptive, on the file's predictor).

    ``progress(what, done, total)`` (``servesim.core.progress``) is called before each step (a
    policy row at one load, or a best 1-bit threshold) with the steps done so far, then once
    with ``done == total`` and ``what == "done"``; the library never prints.
    """
    mean_size = make_sizes(spec.sizes).mean
    per_load = len(spec.rows) + (len(_THRESHOLDS) if spec.best_one_bit_threshold else 0)
    total, done = per_load * len(spec.rates), 0

    def step(what: str) -> None:
        nonlocal done
        if progress is not None:
            progress(what, done, total)
        done += 1

    loads = []
    for lam in spec.rates:
        rho = f"rho = {lam * mean_size:.4g}"
        rows = []
        for row in spec.rows:
            step(f"{rho}: {row.label}")
            rows.append(_policy_row(spec, row, lam))
        entry: dict[str, Any] = {"load": lam * mean_size, "arrival_rate": lam, "policies": rows}
        if spec.best_one_bit_threshold:
            best = {}
            for kind in _THRESHOLDS:
                step(f"{rho}: best 1-bit threshold ({kind.replace('_', '-')})")
                best[kind] = vars(best_one_bit_threshold(spec.sizes, spec.predictor, lam,
                                                         preemptive=kind == "preemptive"))
            entry["best_one_bit_threshold"] = best
        loads.append(entry)
    if progress is not None:
        progress("done", total, total)
    return {"source": spec.source, "sizes": dict(spec.sizes), "predictor": spec.predictor,
            "loads": loads}


def _policy_row(spec: Mg1Spec, row: PolicyRow, lam: float) -> dict[str, Any]:
    params = dict(row.params)
    ev = evaluate(row.policy, spec.sizes, row.predictor, lam, **params)
    price = None
    if _reads_prediction(row):
        exact = evaluate(row.policy, spec.sizes, None, lam,
                         **exact_params(row.policy, row.predictor, params))
        price = ev.mean_response_time / exact.mean_response_time
    return {"policy": row.policy, "label": row.label, "reads": POLICIES[row.policy][0],
            "predictor": row.predictor,
            "mean_response_time": ev.mean_response_time, "method": ev.method,
            "formula": ev.formula, "price_of_misprediction": price, "params": params}


def _reads_prediction(row: PolicyRow) -> bool:
    """Whether the row's rank reads a prediction that is not the true size."""
    if POLICIES[row.policy][0] in ("none", "size") or row.predictor is None:
        return False
    return row.predictor.get("kind") != "oracle"
