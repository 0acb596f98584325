"""Public entry points: E[T] and E[T(x, y)] by policy name, price of misprediction, 1-bit threshold.

Each policy has a SOAP rank (``policies.py``); most also have a closed form (``closed.py``),
which is what ``mean_response_time`` uses when it exists. ``evaluate`` also says which formula
gave the number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize

from servesim.core.errors import ConfigError
from servesim.core.fields import number
from servesim.core.registry import lookup
from servesim.theory.mg1 import closed
from servesim.theory.mg1.policies import (
    POLICIES,
    check_name,
    closed_form,
    policy_rank,
    rank_for,
    rank_text,
    resolve_params,
)
from servesim.theory.mg1.predictors import (
    BitModel,
    Continuous,
    Oracle,
    SkipModel,
    make_predictor,
    one_bit_model,
    threshold_bit,
)
from servesim.theory.mg1.sizes import make_sizes
from servesim.theory.mg1.soap import SoapModel

__all__ = [
    "POLICIES",
    "Evaluation",
    "ThresholdChoice",
    "best_one_bit_threshold",
    "check_evaluation",
    "conditional_response_time",
    "evaluate",
    "exact_params",
    "mean_response_time",
    "policy_rank",
    "price_of_misprediction",
    "soap_mean_response_time",
]


@dataclass(frozen=True)
class Evaluation:
    """E[T] of one policy, with the formula it came from ("closed form" or "SOAP numeric")."""

    policy: str
    mean_response_time: float
    method: str
    formula: str


@dataclass(frozen=True)
class ThresholdChoice:
    """The 1-bit threshold T (a size) minimising E[T], its size quantile and that E[T]."""

    threshold: float
    quantile: float
    mean_response_time: float


@dataclass
class _Setup:
    policy: str
    sizes: Any
    nodes: Any          # the predictor model whose y the rank and the closed form read
    lam: float
    params: dict[str, Any]
    closed: str | None = None   # the closed form that evaluates it (closed.CLOSED), if any


def _setup(policy: str, sizes: Any, predictor: Any, arrival_rate: float,
           params: Mapping[str, Any]) -> _Setup:
    reads = POLICIES[check_name(policy)][0]
    p = resolve_params(policy, params)
    size_law = make_sizes(sizes)
    lam = _check_rate(arrival_rate, size_law)
    pred = make_predictor(predictor)
    if reads in ("none", "size"):
        # These ranks read no prediction, by definition: a predictor changes nothing.
        return _made(policy, size_law, Oracle({"kind": "oracle"}), lam, p)
    if reads == "prediction":
        if isinstance(pred, BitModel | SkipModel):
            raise ConfigError("predictor.kind", pred.spec.get("kind") if pred.spec else None,
                              f"a size predictor for {policy}; use policy one_bit or "
                              "one_bit_preemptive with a one-bit predictor")
        return _made(policy, size_law, pred, lam, p)
    if reads == "bit":
        bit = _bit(pred, p.pop("threshold", None))
        return _made(policy, size_law, bit, lam, {"bit": bit})
    return _skip_setup(policy, size_law, pred, lam, p)


def _made(policy: str, sizes: Any, nodes: Any, lam: float, p: dict[str, Any]) -> _Setup:
    return _Setup(policy, sizes, nodes, lam, p, closed_form(policy, p, isinstance(nodes, Oracle)))


def check_evaluation(policy: str, sizes: Any, predictor: Mapping[str, Any] | None,
                     arrival_rate: float, **params: Any) -> None:
    """Validate what ``evaluate`` would be asked, without computing anything.

    Raises ConfigError as ``evaluate`` does (fields ``policy``, ``params.*``, ``predictor*``).
    """
    _setup(policy, sizes, predictor, arrival_rate, params)


def _check_rate(arrival_rate: float, sizes: Any) -> float:
    lam = number(arrival_rate, "arrival_rate", low=0, low_open=True)
    rho = lam * sizes.mean
    if rho >= 1:
        raise ConfigError("arrival_rate", arrival_rate,
                          f"a rate below 1/E[S] = {1 / sizes.mean:.6g} (load rho = "
                          f"lambda E[S] = {rho:.4g} >= 1 is impossible to sustain)")
    return lam


def _bit(pred: Any, threshold: Any) -> BitModel:
    if isinstance(pred, BitModel):
        if threshold is None:
            return pred
        t = number(threshold, "params.threshold", low=0)
        return one_bit_model(t, pred.p, pred.q)
    if threshold is None:
        raise ConfigError("params.threshold", None,
                          "a size threshold T (bit = 1{y > T}), or a one_bit predictor")
    return threshold_bit(pred, number(threshold, "params.threshold", low=0))


def _skip_setup(policy: str, sizes: Any, pred: Any, lam: float, p: dict[str, Any]) -> _Setup:
    if not isinstance(pred, Oracle | Continuous):
        raise ConfigError("predictor.kind", pred.spec.get("kind"),
                          "a size predictor (the expensive prediction) for skippredict")
    if "threshold" not in p:
        raise ConfigError("params.threshold", None, "the cheap bit's size threshold T")
    t = number(p["threshold"], "params.threshold", low=0)
    bit = one_bit_model(t, number(p.get("p_short_as_long", 0.0), "params.p_short_as_long",
                                  low=0, high=1),
                        number(p.get("p_long_as_short", 0.0), "params.p_long_as_short",
                               low=0, high=1))
    costs = {k: number(p.get(k, 0.0), f"params.{k}", low=0)
             for k in ("cheap_cost", "expensive_cost")}
    return _made(policy, sizes, SkipModel(bit, pred), lam, {"bit": bit, **costs})


def _soap(s: _Setup) -> SoapModel:
    return SoapModel(rank_for(s.policy, s.params), s.sizes, s.nodes, s.lam)


def _costs(s: _Setup) -> float:
    if s.policy != "skippredict":
        return 0.0
    return s.params["cheap_cost"] + s.params["expensive_cost"] * s.params["bit"].moment(
        s.sizes, 0)


def evaluate(policy: str, sizes: Any, predictor: Mapping[str, Any] | None, arrival_rate: float,
             method: str = "auto", **params: Any) -> Evaluation:
    """E[T] with its provenance; ``method`` is "auto" (closed form if any), "closed" or "soap".

    The formula of a SOAP evaluation is the rank it served by. TRAIL has a closed form on exact
    sizes (no predictor, or the oracle) and is evaluated by SOAP on predictions.

    Raises ConfigError for an unknown policy or parameter, a bad spec, rho >= 1, or
    method="closed" for a policy (and predictor) without one.
    """
    s = _setup(policy, sizes, predictor, arrival_rate, params)
    lookup({"auto": 0, "closed": 0, "soap": 0}, method, "method")
    if method == "closed" and s.closed is None:
        why = ("trail has a closed form on exact sizes only" if policy == "trail"
               else f"{policy} has no closed form here")
        raise ConfigError("method", method, f"soap or auto ({why})")
    if method == "soap" or s.closed is None:
        value = _soap(s).mean_response_time() + _costs(s)
        return Evaluation(policy, value, "SOAP numeric", "rank " + rank_text(policy, s.params))
    m = closed.Model(s.sizes, s.nodes, s.lam)
    value = closed.mean(m, s.closed, s.nodes, **s.params)
    return Evaluation(policy, value, "closed form", POLICIES[s.closed][2])


def mean_response_time(policy: str, sizes: Any, predictor: Mapping[str, Any] | None,
                       arrival_rate: float, **params: Any) -> float:
    """E[T] of ``policy`` in the M/G/1 with Poisson(``arrival_rate``) arrivals.

    ``sizes`` is a size spec (or SizeDist, or frozen scipy law); ``predictor`` a predictor spec,
    None for exact sizes. Policy names and params are the simulator's orderings' (docs/mg1.md):
    ``c`` (trail, default 0.8); ``preemptive`` (ltr, default false); ``quanta`` (mlfq);
    ``threshold`` (one_bit policies with a non-bit predictor, skippredict); ``p_short_as_long``,
    ``p_long_as_short``, ``cheap_cost``, ``expensive_cost`` (skippredict).

    Raises ConfigError for an unknown policy (naming the closest), a bad spec or parameter, or a
    load rho = lambda E[S] >= 1.
    """
    return evaluate(policy, sizes, predictor, arrival_rate, **params).mean_response_time


def conditional_response_time(policy: str, sizes: Any, predictor: Mapping[str, Any] | None,
                              arrival_rate: float, x: Any, y: Any, **params: Any) -> Any:
    """E[T(x, y)]: mean response time of a job of size x and prediction y (arrays broadcast).

    y is ignored by size-based policies; for one_bit policies y is the bit if the predictor is
    one_bit, else the prediction compared with ``threshold``; for skippredict y is the expensive
    prediction and the cheap bit is averaged over given x.
    """
    s = _setup(policy, sizes, predictor, arrival_rate, params)
    xa, ya = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    shape, xa, ya = xa.shape, xa.ravel(), ya.ravel()
    if s.policy in ("one_bit", "one_bit_preemptive") and not isinstance(
            make_predictor(predictor), BitModel):
        ya = (ya > params["threshold"]).astype(float)
    if s.closed is None:
        out = _soap(s).response(xa, ya)
    elif s.policy == "skippredict":
        out = _skip_conditional(s, xa, ya)
    else:
        m = closed.Model(s.sizes, s.nodes, s.lam)
        out = closed.CLOSED[s.closed](m, xa, ya, **s.params)
    out = np.asarray(out, dtype=float).reshape(shape)
    return float(out) if out.ndim == 0 else out


def _skip_conditional(s: _Setup, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    m = closed.Model(s.sizes, s.nodes, s.lam)
    p_long = s.params["bit"].p_long(x)
    short = closed.skippredict(m, x, np.full_like(x, -np.inf), **s.params)
    long = closed.skippredict(m, x, y, **s.params)
    return (1 - p_long) * short + p_long * long


def soap_mean_response_time(rank: Any, sizes: Any, predictor: Mapping[str, Any] | None,
                            arrival_rate: float, **params: Any) -> float:
    """E[T] by the numeric SOAP evaluator.

    ``rank`` is a policy name (with its ``params``, prediction costs included for skippredict)
    or a Rank / callable r(x, y, a) over descriptors (size, prediction from ``predictor``).
    """
    if isinstance(rank, str):
        return evaluate(rank, sizes, predictor, arrival_rate, method="soap",
                        **params).mean_response_time
    size_law = make_sizes(sizes)
    lam = _check_rate(arrival_rate, size_law)
    return SoapModel(rank, size_law, make_predictor(predictor), lam).mean_response_time()


def exact_params(policy: str, predictor: Mapping[str, Any] | None,
                 params: Mapping[str, Any]) -> dict[str, Any]:
    """The params of ``policy`` on true sizes (predictor None), for the price of misprediction:
    a one_bit predictor's threshold becomes the size threshold, SkipPredict's bit exact."""
    exact = dict(params)
    if isinstance(predictor, Mapping) and predictor.get("kind") == "one_bit":
        exact.setdefault("threshold", predictor.get("threshold"))
    if policy == "skippredict":
        exact.update(p_short_as_long=0.0, p_long_as_short=0.0)
    return exact


def price_of_misprediction(policy: str, sizes: Any, predictor: Mapping[str, Any] | None,
                           arrival_rate: float, **params: Any) -> float:
    """E[T] of ``policy`` on the predictions / E[T] of the same policy on true sizes.

    For one-bit policies the true-size version marks x > T exactly; for skippredict both the bit
    and the expensive prediction become exact; TRAIL on true sizes is its closed form.
    """
    on_predictions = mean_response_time(policy, sizes, predictor, arrival_rate, **params)
    on_sizes = mean_response_time(policy, sizes, None, arrival_rate,
                                  **exact_params(policy, predictor, params))
    return on_predictions / on_sizes


def best_one_bit_threshold(sizes: Any, predictor: Mapping[str, Any] | None, arrival_rate: float,
                           preemptive: bool = False) -> ThresholdChoice:
    """The threshold T minimising E[T] of the 1-bit policy, searched over size quantiles.

    With a one_bit predictor its error rates are kept and its threshold is replaced; with another
    predictor the bit is 1{y > T}; with None it is 1{x > T}. Uses ``minimize_scalar`` (bounded)
    on the quantile u in [1e-4, 1 - 1e-4], T = F^{-1}(u).
    """
    policy = "one_bit_preemptive" if preemptive else "one_bit"
    size_law = make_sizes(sizes)
    _check_rate(arrival_rate, size_law)

    def cost(u: float) -> float:
        t = float(size_law.ppf(u))
        return mean_response_time(policy, size_law, predictor, arrival_rate, threshold=t)

    res = optimize.minimize_scalar(cost, bounds=(1e-4, 1 - 1e-4), method="bounded",
                                   options={"xatol": 1e-4})
    u = float(res.x)
    return ThresholdChoice(float(size_law.ppf(u)), u, float(res.fun))

