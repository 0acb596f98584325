"""The theory's policy names, their SOAP ranks, parameters and formulas.

One name means one policy here and in the simulator's orderings
(``servesim.policies.ordering.ORDERINGS``, the ``[schedule] order`` and the M/G/1 mode): the
same rank, on the same inputs, with the same parameter names. The simulator's ``aging`` has no
SOAP analysis (its boost reads the time a job has waited, not its age), and two simulator
parameters have no counterpart in the theory; both are refused with the reason, never ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from servesim.core.errors import ConfigError
from servesim.core.fields import check_keys, number
from servesim.core.registry import lookup
from servesim.theory.mg1.soap import Rank

__all__ = ["NOT_ANALYSED", "POLICIES", "RENAMED", "check_name", "closed_form", "policy_rank",
           "rank_for", "rank_text", "resolve_params"]

DEFAULT_C = 0.8   # TRAIL's best preemption limit, the simulator's default too
DEFAULT_QUANTA = (1.0, 2.0, 4.0, 8.0)   # the simulator's skip-join MLFQ default

_SRPT_FORMULA = ("lambda[E[S^2;S<x] + x^2 P(S>x)]/(2(1-rho(x))^2) + int_0^x dt/(1-rho(t))")
_SPJF_FORMULA = "x + R/(1-rho'_y)^2"
_PSPJF_FORMULA = "lambda E[S^2;Y<y]/(2(1-rho'_y)^2) + x/(1-rho'_y)"

# policy -> (what its rank reads, allowed params, closed form, or "" if SOAP alone evaluates it)
POLICIES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "fcfs": ("none", (), "x + R/(1-rho), R = lambda E[S^2]/2 (Pollaczek-Khinchine)"),
    "sjf": ("size", (), "x + R/(1-rho(x))^2"),
    "psjf": ("size", (), "lambda E[S^2;S<x]/(2(1-rho(x))^2) + x/(1-rho(x))"),
    "srpt": ("size", (), _SRPT_FORMULA),
    "spjf": ("prediction", (), _SPJF_FORMULA),
    "pspjf": ("prediction", (), _PSPJF_FORMULA),
    "sprpt": ("prediction", (), "lambda[E[S^2;Y<y] + E[(S-(Y-y))^2; y<Y<y+S]]/(2(1-rho'_y)^2) "
              "+ int_0^x da/(1-rho'_{y-a})"),
    "sprpt_bounce": ("prediction", ("margin",), ""),
    "trail": ("prediction", ("c", "max_preemptions"),
              "exact sizes (c' = min(c, 1)): lambda[E[S^2;S<x] + x^2 P(x<S<x/(1-c')) "
              "+ (1-c')^2 E[S^2;S>x/(1-c')]]/(2(1-rho(x))^2) "
              "+ int_{(1-c')x}^x dt/(1-rho(t)) + (1-c')x"),
    "ltr": ("prediction", ("preemptive",), ""),
    "one_bit": ("bit", ("threshold",), "two-class non-preemptive priority: x + R/(1-rho_0) "
                "(bit 0), x + R/((1-rho_0)(1-rho)) (bit 1)"),
    "one_bit_preemptive": ("bit", ("threshold",), "two-class preemptive priority: "
                           "x + R_0/(1-rho_0) (bit 0), R/((1-rho_0)(1-rho)) + x/(1-rho_0) "
                           "(bit 1)"),
    "skippredict": ("skip", ("threshold", "p_short_as_long", "p_long_as_short", "cheap_cost",
                             "expensive_cost"),
                    "bit 0: x + R_0/(1-rho_0); bit 1: SPRPT behind the bit-0 load rho_0; "
                    "+ cheap cost per job + expensive cost per bit-1 job"),
    "mlfq": ("none", ("quanta",), ""),
}

# The rank each policy serves by (lower first, ties FCFS): the formula of a SOAP evaluation.
RANK_TEXT = {
    "fcfs": "constant", "sjf": "x on arrival, then -inf", "psjf": "x", "srpt": "x - a",
    "spjf": "y on arrival, then -inf", "pspjf": "y", "sprpt": "y - a",
    "sprpt_bounce": "|y - a|", "trail": "y - a while c > 0 and a <= c y, then -inf",
    "ltr": "y (score), non-preemptive: on arrival, then -inf",
    "one_bit": "bit on arrival, then -inf", "one_bit_preemptive": "bit",
    "skippredict": "-inf for bit-0 jobs (FCFS), y - a for bit-1 jobs",
    "mlfq": "queue level: i while a in [q_1 + ... + q_i, q_1 + ... + q_{i+1})",
}

# Simulator orderings the theory cannot evaluate, and why (refused by name, with the reason).
NOT_ANALYSED = {
    "aging": "a policy whose rank is a function of size, prediction and age (aging boosts a "
             "job by the time it has waited, which no SOAP rank can read)",
}
# Former theory names: each maps to its new name; none is kept as an alias (see docs/mg1.md).
RENAMED = {
    "limited_srpt": "trail",
}
# Simulator parameters with no counterpart in the theory, and why.
_SIM_ONLY = {
    ("sprpt_bounce", "margin"): "no margin: the theory is the margin -> 0 limit of the "
                                "simulator's crossing margin",
    ("trail", "max_preemptions"): "no preemption cap: a rank that reads a job's count of "
                                  "preemptions is not a SOAP rank",
}


def check_name(policy: Any, field: str = "policy") -> str:
    """Return ``policy`` if the theory evaluates it.

    Raises ConfigError naming the new name of a former one, the reason a simulator ordering has
    no analysis, or the closest name of an unknown one.
    """
    if isinstance(policy, str) and policy in RENAMED:
        new = RENAMED[policy]
        err = ConfigError(field, policy, f"a policy name ({policy} is now {new}, the name the "
                          "simulator's orderings use)")
        err.suggestion = new   # too far from the old name for difflib, so named here
        err.args = (f"{err}; did you mean {new!r}?",)
        raise err
    if isinstance(policy, str) and policy in NOT_ANALYSED:
        raise ConfigError(field, policy, NOT_ANALYSED[policy])
    lookup(POLICIES, policy, field)
    return policy


def resolve_params(policy: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``params`` of ``policy`` and fill the defaults of its rank's own parameters.

    Raises ConfigError for an unknown parameter, a value out of range, or a simulator-only
    parameter (with the reason the theory has none).
    """
    check_keys(params, "params", POLICIES[policy][1])
    p = dict(params)
    for key in p:
        if (policy, key) in _SIM_ONLY:
            raise ConfigError(f"params.{key}", p[key], _SIM_ONLY[policy, key])
    if policy == "trail":
        p["c"] = number(p.get("c", DEFAULT_C), "params.c", low=0)
    elif policy == "ltr":
        p["preemptive"] = p.get("preemptive", False)
        if not isinstance(p["preemptive"], bool):
            raise ConfigError("params.preemptive", p["preemptive"], "true or false")
    elif policy == "mlfq":
        p["quanta"] = _quanta(p.get("quanta", DEFAULT_QUANTA))
    return p


def _quanta(raw: Any) -> tuple[float, ...]:
    if not isinstance(raw, list | tuple) or not raw:
        raise ConfigError("params.quanta", raw, "a non-empty list of quanta (sizes > 0)")
    return tuple(number(q, "params.quanta", low=0, low_open=True) for q in raw)


def closed_form(policy: str, params: Mapping[str, Any], exact: bool) -> str | None:
    """The key of the closed form (``closed.CLOSED``) that evaluates ``policy``, or None.

    ``exact``: the predictor is the oracle, so y = x. TRAIL has a closed form on exact sizes
    only; learning to rank on scores y is SPJF (non-preemptive) or PSPJF.
    """
    if policy == "trail":
        return "trail" if exact else None
    if policy == "ltr":
        return "pspjf" if params.get("preemptive") else "spjf"
    return policy if POLICIES[policy][2] else None


def rank_text(policy: str, params: Mapping[str, Any]) -> str:
    """The rank a SOAP evaluation of ``policy`` used, for reports."""
    if policy == "ltr" and params.get("preemptive"):
        return "y (score), preemptive"
    return RANK_TEXT[policy]


# -- SOAP ranks ----------------------------------------------------------------------------------


def _np(key: Any, a: Any) -> Any:
    """Non-preemptive: rank ``key`` on arrival, then -inf (nothing can preempt a started job)."""
    return np.where(np.asarray(a) <= 0, key, -np.inf)


def _at_zero(x: Any, y: Any) -> Any:
    return np.zeros_like(np.asarray(x, dtype=float))


def _at_prediction(x: Any, y: Any) -> Any:
    return np.clip(y, 0.0, x)


def _pl(fn: Any, breaks: Any, name: str) -> Rank:
    """A rank linear in age between its declared breaks (evaluated exactly by SOAP)."""
    return Rank(fn, breaks, name, piecewise_linear=True)


def _constant(v: Any, a: Any) -> Any:
    return np.broadcast_to(v, np.broadcast(v, a).shape)


def _trail(c: float) -> Rank:
    """TRAIL as the simulator runs it: rank y - a, preemptible while c > 0 and a <= c y (the
    inclusive bound), then -inf; c = 0 is SPJF. On exact sizes (y = x) this is the
    limited-preemption SRPT of ``closed.limited_srpt``."""

    def fn(x: Any, y: Any, a: Any) -> Any:
        a = np.asarray(a)
        open_ = (a <= c * y) if c > 0 else np.zeros(np.broadcast(y, a).shape, dtype=bool)
        return np.where(open_ | (a <= 0), y - a, -np.inf)

    return _pl(fn, lambda x, y: c * np.asarray(y, dtype=float), f"trail(c={c:g})")


def _mlfq(quanta: tuple[float, ...]) -> Rank:
    """Skip-join MLFQ with every job entering the top queue (the M/G/1 mode's first = 0): the
    rank is the queue level, which rises by one at each cumulative quantum; FCFS within it."""
    bounds = np.cumsum(quanta)

    def fn(x: Any, y: Any, a: Any) -> Any:
        a = np.broadcast_to(np.asarray(a, dtype=float), np.broadcast(x, a).shape)
        return np.searchsorted(bounds, a, side="right").astype(float)

    def breaks(x: Any, y: Any) -> Any:
        return np.broadcast_to(bounds, (*np.shape(x)[:-1], bounds.size))

    # A job larger than a bound waits behind everyone below the next level: E[T(x)] jumps there.
    return Rank(fn, breaks, f"mlfq(quanta={list(quanta)})", piecewise_linear=True,
                size_jumps=tuple(float(b) for b in bounds))


_RANKS = {
    "fcfs": lambda p: _pl(lambda x, y, a: np.zeros(np.broadcast(x, a).shape), None, "fcfs"),
    "sjf": lambda p: _pl(lambda x, y, a: _np(x, a), _at_zero, "sjf"),
    "psjf": lambda p: _pl(lambda x, y, a: _constant(x, a), None, "psjf"),
    "srpt": lambda p: _pl(lambda x, y, a: x - a, None, "srpt"),
    "spjf": lambda p: _pl(lambda x, y, a: _np(y, a), _at_zero, "spjf"),
    "pspjf": lambda p: _pl(lambda x, y, a: _constant(y, a), None, "pspjf"),
    # The break at a = y is a kink of rho_new(y - a) in the residence integral, not of the rank.
    "sprpt": lambda p: _pl(lambda x, y, a: y - a, _at_prediction, "sprpt"),
    "sprpt_bounce": lambda p: _pl(lambda x, y, a: np.abs(y - a), _at_prediction,
                                  "sprpt_bounce"),
    "trail": lambda p: _trail(p["c"]),
    "ltr": lambda p: (_RANKS["pspjf"] if p["preemptive"] else _RANKS["spjf"])(p),
    "one_bit": lambda p: _pl(lambda x, y, a: _np(y, a), _at_zero, "one_bit"),
    "one_bit_preemptive": lambda p: _pl(lambda x, y, a: _constant(y, a), None,
                                        "one_bit_preemptive"),
    "skippredict": lambda p: _pl(lambda x, y, a: y - a, _at_prediction, "skippredict"),
    "mlfq": lambda p: _mlfq(p["quanta"]),
}


def rank_for(policy: str, params: Mapping[str, Any]) -> Rank:
    """The rank of a checked policy with params already resolved (``resolve_params``)."""
    return _RANKS[policy](params)


def policy_rank(policy: str, **params: Any) -> Rank:
    """The SOAP rank of a named policy (``c`` for trail, ``quanta`` for mlfq, ...).

    Raises ConfigError for an unknown policy or parameter.
    """
    check_name(policy)
    return _RANKS[policy](resolve_params(policy, params))
