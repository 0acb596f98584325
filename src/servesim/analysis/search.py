"""Empirical lambda*: bisection on the arrival rate for the largest rate a policy sustains.

``empirical_lambda_star`` brackets the stability boundary of one scenario between a rate
judged stable and one judged unstable, using the verdict of ``servesim.analysis.stability``
at each midpoint; ``policy_lambda_stars`` does it for several ``engine.batching`` values and
compares each with the theoretical lambda* of ``servesim.theory.scenario_capacity``.

Rules (also in ``docs/stability.md``, "Empirical lambda*"):

- at each midpoint every seed runs for ``horizon_s`` with ``run.max_in_system`` set; if any
  seed is stopped by it (``stop_reason == "max_in_system"``) the midpoint is **unstable**
  without further tests: a stable system essentially never holds that many requests;
- otherwise the midpoint gets ``verdict`` from the per-seed W(t) slopes, the pooled
  second-half completion ratio and the fluid slope (exactly as ``study`` does);
- stable -> lo = mid; unstable -> hi = mid; **inconclusive -> hi = mid** by default
  (``inconclusive="unstable"``), so ``lo`` is always a rate with positive evidence of
  stability (or the starting ``lo``): a conservative lower bound on lambda*.

``lambda_star_interval`` (in ``interval.py``, re-exported here) bisects each seed alone and
gives a t-interval for the mean per-seed boundary, an upper estimate of lambda*.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from servesim.analysis.interval import (
    SEED_BATCHES,
    SEED_CONFIDENCE,
    LambdaInterval,
    bisect,
    lambda_star_interval,
    rate_scenario,
    search_args,
)
from servesim.analysis.interval import seed_state as _seed_state  # noqa: F401 (its old home)
from servesim.analysis.stability import COMPLETION_EPS, fluid_slope, verdict
from servesim.analysis.study import measure
from servesim.core.errors import ConfigError
from servesim.core.progress import Progress, part
from servesim.scenario import scenario_from_dict, set_field

__all__ = [
    "SEED_BATCHES",
    "SEED_CONFIDENCE",
    "LambdaInterval",
    "LambdaSearch",
    "Probe",
    "empirical_lambda_star",
    "lambda_star_interval",
    "policy_lambda_stars",
    "probe_rate",
]

_STATES = ("stable", "unstable")


@dataclass(frozen=True)
class Probe:
    """The evidence at one arrival rate.

    Attributes:
        step: 0-based bisection step (-1 / -2 for the optional checks of the starting lo / hi).
        rate: arrival rate, requests/s.
        state: the verdict, "stable", "unstable" or "inconclusive".
        counted_as: how the bisection used it ("stable" or "unstable").
        stopped: seeds stopped early by ``run.max_in_system``.
        slope_lo, slope_hi: CI of the W(t) slope, tokens/s (NaN when a seed was stopped).
        completion_ratio: pooled second-half completion ratio (NaN when a seed was stopped).
        evidence: the verdict's evidence lines joined by "; ".
    """

    step: int
    rate: float
    state: str
    counted_as: str
    stopped: int
    slope_lo: float
    slope_hi: float
    completion_ratio: float
    evidence: str


@dataclass(frozen=True)
class LambdaSearch:
    """Result of ``empirical_lambda_star``.

    The estimate of the empirical lambda* is the bracket [lo, hi]: ``lo`` is the largest rate
    judged stable (or the starting lo), ``hi`` the smallest judged unstable or inconclusive
    (or the starting hi). Its width, (hi0 - lo0) / 2**iterations, is the resolution of the
    search; it is not a statistical CI: each verdict is itself a test at ``confidence``
    (a false "unstable" at a stable rate has probability about (1 - confidence)/2), and a wrong
    verdict moves the whole bracket. ``probes`` keeps the per-midpoint evidence.
    """

    lo: float
    hi: float
    lo0: float
    hi0: float
    theory_lambda_star: float
    probes: list[Probe]
    seeds: int
    horizon_s: float
    max_in_system: int | None
    confidence: float
    inconclusive: str
    ends_ok: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    interval: LambdaInterval | None = None

    @property
    def estimate(self) -> float:
        """Midpoint of the bracket, requests/s."""
        return (self.lo + self.hi) / 2

    @property
    def width(self) -> float:
        """hi - lo, the resolution reached."""
        return self.hi - self.lo

    def contains(self, rate: float, margin: float = 0.0) -> bool:
        """True iff lo - margin <= rate <= hi + margin."""
        return self.lo - margin <= rate <= self.hi + margin

    def to_frame(self) -> pd.DataFrame:
        """The probes as a DataFrame, one row per evaluated rate."""
        return pd.DataFrame([vars(p) for p in self.probes])


def probe_rate(table: Mapping[str, Any], rate: float, *, seeds: Sequence[int],
               horizon_s: float, rate_field: str = "workload.arrival.rate_per_s",
               max_in_system: int | str | None = "auto", confidence: float = 0.99,
               eps: float = COMPLETION_EPS, use_fluid: bool = True,
               progress: Progress | None = None) -> Probe:
    """Verdict of the scenario ``table`` at arrival rate ``rate`` (``step`` = 0 in the result).

    A deep copy of the table gets ``rate_field`` = rate, ``run.horizon_s`` = horizon_s (removing
    ``run.requests``) and ``run.max_in_system``: ``"auto"`` = ceil(0.5 * rate * horizon_s) + 100,
    an integer, or None to keep the table's own setting. Each seed runs once (``simulate``). If
    any seed stops with ``stop_reason == "max_in_system"`` the state is "unstable". Otherwise the
    verdict combines the W(t) slopes, the pooled completion ratio over [H/2, H] and, with
    ``use_fluid``, the fluid slope max(0, rate (m_p + m_d) - mu*) (valid for every policy: no
    policy sustains more than lambda*), as in ``study``. ``progress`` counts runs, one per seed.
    """
    from servesim.theory import scenario_capacity

    if not horizon_s > 0:
        raise ConfigError("horizon_s", horizon_s, "a positive number of seconds")
    scenario = rate_scenario(table, rate_field, rate, horizon_s, max_in_system)
    got = measure(scenario, seeds, horizon_s, progress)
    if got.stopped:
        cap = scenario.run.max_in_system
        return Probe(0, float(rate), "unstable", "unstable", got.stopped, math.nan, math.nan,
                     math.nan, f"a seed stopped with more than {cap} requests in system "
                               "(run.max_in_system)")
    completion = got.completion
    fluid = None
    if use_fluid:
        cap = scenario_capacity(scenario)
        fluid = fluid_slope(rate, cap.mean_tokens.value, cap.token_capacity.value)
    v = verdict(got.w_slopes, completion, fluid=fluid, eps=eps, confidence=confidence,
                n_slopes=got.n_slopes)
    return Probe(0, float(rate), v.state, v.state, 0, v.slope.lo, v.slope.hi,
                 math.nan if completion is None else float(completion), "; ".join(v.evidence))


def _with_step(p: Probe, step: int, counted_as: str) -> Probe:
    return Probe(step, p.rate, p.state, counted_as, p.stopped, p.slope_lo, p.slope_hi,
                 p.completion_ratio, p.evidence)


def empirical_lambda_star(table: Mapping[str, Any], *, seeds: Sequence[int] | Iterable[int],
                          horizon_s: float, lo: float, hi: float, iterations: int = 6,
                          rate_field: str = "workload.arrival.rate_per_s",
                          confidence: float = 0.99, eps: float = COMPLETION_EPS,
                          max_in_system: int | str | None = "auto",
                          inconclusive: str = "unstable", check_ends: bool = False,
                          use_fluid: bool = True, interval: bool = False,
                          interval_confidence: float = 0.95,
                          progress: Progress | None = None) -> LambdaSearch:
    """Bisect the arrival rate for the empirical lambda* of the scenario ``table``.

    Start from [lo, hi] (lo expected stable, hi unstable). For ``iterations`` steps, probe
    mid = (lo + hi)/2 with ``probe_rate`` (all ``seeds``, ``horizon_s``, ``max_in_system``):
    stable -> lo = mid, unstable -> hi = mid, inconclusive -> as ``inconclusive`` says
    ("unstable", the default, keeps lo a rate with evidence of stability, i.e. a conservative
    lower bound; "stable" gives the optimistic reading). With ``check_ends`` the starting lo
    and hi are probed first and ``ends_ok`` says whether they were stable / unstable (the
    bisection runs regardless). The theoretical lambda* (``scenario_capacity`` of the table at
    its first midpoint) is returned for comparison. With ``interval`` the result also carries
    ``lambda_star_interval`` over the same seeds, range and iterations (at
    ``interval_confidence``; its per-seed test does not read ``eps``), which doubles the number
    of runs. ``progress`` counts runs, known up front: seeds x (iterations, twice with
    ``interval``, plus 2 with ``check_ends``), e.g. "bisection 3/6 at 13.2 req/s, seed 2/8".

    Raises ConfigError for lo >= hi, lo < 0, iterations < 1, no seeds or an unknown
    ``inconclusive``.
    """
    from servesim.theory import scenario_capacity

    seeds = search_args(seeds, lo, hi, iterations)
    if inconclusive not in _STATES:
        raise ConfigError("inconclusive", inconclusive, "'stable' or 'unstable'")
    kw = dict(seeds=seeds, horizon_s=horizon_s, rate_field=rate_field,
              max_in_system=max_in_system, confidence=confidence, eps=eps, use_fluid=use_fluid)

    def counted(p: Probe) -> str:
        return p.state if p.state in _STATES else inconclusive

    n, ends = len(seeds), 2 if check_ends else 0
    total = _runs(n, iterations, interval, check_ends)

    def at(unit: int, rate: float, label: str) -> Probe:
        where = part(progress, unit * n, n, total, f"{label} at {rate:.4g} req/s, ")
        return probe_rate(table, rate, progress=where, **kw)

    probes: list[Probe] = []
    ends_ok = None
    if check_ends:
        p_lo, p_hi = at(0, lo, "starting lo"), at(1, hi, "starting hi")
        probes += [_with_step(p_lo, -2, counted(p_lo)), _with_step(p_hi, -1, counted(p_hi))]
        ends_ok = p_lo.state == "stable" and p_hi.state == "unstable"

    def probe(step: int, mid: float) -> bool:
        p = at(ends + step, mid, f"bisection {step + 1}/{iterations}")
        probes.append(_with_step(p, step, counted(p)))
        return counted(p) == "stable"

    a, b = bisect(lo, hi, iterations, probe)
    t = copy.deepcopy(dict(table))
    set_field(t, rate_field, (lo + hi) / 2)
    theory = float(scenario_capacity(scenario_from_dict(t)).request_capacity.value)
    cap = max_in_system if isinstance(max_in_system, int) else None
    ci = lambda_star_interval(table, seeds=seeds, horizon_s=horizon_s, lo=lo, hi=hi,
                              iterations=iterations, rate_field=rate_field,
                              confidence=interval_confidence, max_in_system=max_in_system,
                              progress=part(progress, n * (ends + iterations), n * iterations,
                                            total)) if interval else None
    return LambdaSearch(lo=a, hi=b, lo0=float(lo), hi0=float(hi), theory_lambda_star=theory,
                        probes=probes, seeds=len(seeds), horizon_s=float(horizon_s),
                        max_in_system=cap, confidence=confidence, inconclusive=inconclusive,
                        ends_ok=ends_ok, interval=ci)


def policy_lambda_stars(table: Mapping[str, Any], policies: Sequence[str], *,
                        seeds: Sequence[int], horizon_s: float, lo: float, hi: float,
                        iterations: int = 6, progress: Progress | None = None,
                        **kwargs: Any) -> pd.DataFrame:
    """``empirical_lambda_star`` once per ``engine.batching`` value in ``policies``.

    Returns a DataFrame, one row per policy: policy, lo, hi (the empirical bracket, req/s),
    estimate ((lo + hi)/2), theory_lambda_star (work-conserving lambda* = mu*/(m_p + m_d)),
    ratio (estimate / theory_lambda_star), probes (rates evaluated), inconclusive (how many were
    inconclusive), stopped (how many were stopped by ``run.max_in_system``); with
    ``interval=True`` also ci_lo, ci_mean, ci_hi (``lambda_star_interval``). Extra keyword
    arguments go to ``empirical_lambda_star``. The table's ``[engine.wait]`` parameters are
    dropped for the systems that do not take them (segments for all but Nested WAIT).
    ``progress`` counts runs over every policy ("sarathi, bisection 3/6 at 13.2 req/s, ...").
    """
    rows = []
    seeds = list(seeds)
    runs = _runs(len(seeds), iterations, kwargs.get("interval", False),
                 kwargs.get("check_ends", False))
    for index, policy in enumerate(policies):
        t = _for_policy(table, str(policy))
        s = empirical_lambda_star(t, seeds=seeds, horizon_s=horizon_s, lo=lo, hi=hi,
                                  iterations=iterations, **kwargs,
                                  progress=part(progress, index * runs, runs,
                                                len(policies) * runs, f"{policy}, "))
        rows.append({
            "policy": str(policy), "lo": s.lo, "hi": s.hi, "estimate": s.estimate,
            "theory_lambda_star": s.theory_lambda_star,
            "ratio": s.estimate / s.theory_lambda_star,
            "probes": len(s.probes),
            "inconclusive": sum(p.state == "inconclusive" for p in s.probes),
            "stopped": sum(p.stopped > 0 for p in s.probes),
        })
        if s.interval is not None:
            rows[-1].update(ci_lo=s.interval.lo, ci_mean=s.interval.mean, ci_hi=s.interval.hi)
    return pd.DataFrame(rows)


def _runs(seeds: int, iterations: int, interval: bool, check_ends: bool) -> int:
    """Simulations of one ``empirical_lambda_star`` call (fewer if a probe stops early)."""
    return seeds * ((2 if check_ends else 0) + iterations * (2 if interval else 1))


def _for_policy(table: Mapping[str, Any], policy: str) -> dict[str, Any]:
    """A copy of ``table`` with ``engine.batching`` = policy and the WAIT parameters it
    cannot take removed."""
    from servesim.engine.config import WAIT_SYSTEMS

    t = copy.deepcopy(dict(table))
    set_field(t, "engine.batching", policy)
    wait = t["engine"].get("wait")
    if isinstance(wait, dict):
        if policy not in WAIT_SYSTEMS:
            del t["engine"]["wait"]
        elif policy != "nested_wait":
            wait.pop("segments", None)
    return t
