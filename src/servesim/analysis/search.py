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

``lambda_star_interval`` bisects each seed alone, judging one run by the trend of its number
in system (``batch_means_slope``), and gives a t-interval for the mean per-seed boundary: the
rate at which one run of the horizon starts to show growth, an upper estimate of lambda*.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from servesim.analysis.stability import (
    COMPLETION_EPS,
    batch_means_slope,
    fluid_slope,
    slope_ci,
    verdict,
)
from servesim.analysis.study import measure, timed_table
from servesim.core.errors import ConfigError
from servesim.scenario import scenario_from_dict, set_field

__all__ = [
    "LambdaInterval",
    "LambdaSearch",
    "Probe",
    "empirical_lambda_star",
    "lambda_star_interval",
    "policy_lambda_stars",
    "probe_rate",
]

_STATES = ("stable", "unstable")

SEED_BATCHES = 5
"""Batches k of the per-seed trend test (``batch_means_slope``): blocks of H/10 seconds."""

SEED_CONFIDENCE = 0.99
"""One-sided level of the per-seed trend test: a false "unstable" has probability about 1%."""


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


@dataclass(frozen=True)
class LambdaInterval:
    """A confidence interval for the mean per-seed boundary, from per-seed bisections.

    Each seed is bisected with its own single-run trend test (``lambda_star_interval``); the
    interval covers E[x_s], the rate at which one run of the horizon starts to show growth,
    which lies above lambda* by the smallest growth such a run detects.

    Attributes:
        per_seed: each seed's boundary x_s, the midpoint of its final bracket, req/s.
        mean: their mean, req/s.
        lo, hi: mean -/+ t_(n-1, (1+confidence)/2) * sd/sqrt(n) -/+ resolution/2, req/s,
            clipped to the searched range; with one seed (or no spread) only the resolution is
            left.
        confidence: the level of the t-interval.
        resolution: the per-seed bracket width, (hi0 - lo0) / 2**iterations, req/s.
        seed_confidence: the one-sided level of the per-seed trend test.
        batches: the batch means of that test.
    """

    per_seed: list[float]
    mean: float
    lo: float
    hi: float
    confidence: float
    resolution: float
    seed_confidence: float = SEED_CONFIDENCE
    batches: int = SEED_BATCHES

    def contains(self, rate: float) -> bool:
        """True iff lo <= rate <= hi."""
        return self.lo <= rate <= self.hi


def _auto_cap(rate: float, horizon_s: float) -> int:
    # Half of all expected arrivals in the system at once (+100 for small runs): far above the
    # number in system of any stable run, reached early by strongly overloaded ones.
    return int(math.ceil(0.5 * rate * horizon_s)) + 100


def _rate_scenario(table: Mapping[str, Any], rate_field: str, rate: float, horizon_s: float,
                   max_in_system: int | str | None) -> Any:
    """The scenario of ``table`` at ``rate`` over ``horizon_s``, with the run's cap on the
    number in system set as ``max_in_system`` says ("auto", an integer, or None to keep)."""
    t, _ = timed_table(table, rate_field, rate, horizon_s)
    if max_in_system == "auto":
        t["run"]["max_in_system"] = _auto_cap(rate, horizon_s)
    elif max_in_system is not None:
        t["run"]["max_in_system"] = int(max_in_system)
    return scenario_from_dict(t)


def _bisect(lo: float, hi: float, iterations: int,
            is_stable: Callable[[int, float], bool]) -> tuple[float, float]:
    """The final bracket after ``iterations`` halvings of [lo, hi]: a stable midpoint (by
    ``is_stable(step, mid)``) raises the lower end, any other lowers the upper end."""
    a, b = float(lo), float(hi)
    for step in range(iterations):
        mid = (a + b) / 2
        if is_stable(step, mid):
            a = mid
        else:
            b = mid
    return a, b


def probe_rate(table: Mapping[str, Any], rate: float, *, seeds: Sequence[int],
               horizon_s: float, rate_field: str = "workload.arrival.rate_per_s",
               max_in_system: int | str | None = "auto", confidence: float = 0.99,
               eps: float = COMPLETION_EPS, use_fluid: bool = True) -> Probe:
    """Verdict of the scenario ``table`` at arrival rate ``rate`` (``step`` = 0 in the result).

    A deep copy of the table gets ``rate_field`` = rate, ``run.horizon_s`` = horizon_s (removing
    ``run.requests``) and ``run.max_in_system``: ``"auto"`` = ceil(0.5 * rate * horizon_s) + 100,
    an integer, or None to keep the table's own setting. Each seed runs once (``simulate``). If
    any seed stops with ``stop_reason == "max_in_system"`` the state is "unstable". Otherwise the
    verdict combines the W(t) slopes, the pooled completion ratio over [H/2, H] and, with
    ``use_fluid``, the fluid slope max(0, rate (m_p + m_d) - mu*) (valid for every policy: no
    policy sustains more than lambda*), as in ``study``.
    """
    from servesim.theory import scenario_capacity

    if not horizon_s > 0:
        raise ConfigError("horizon_s", horizon_s, "a positive number of seconds")
    scenario = _rate_scenario(table, rate_field, rate, horizon_s, max_in_system)
    got = measure(scenario, seeds, horizon_s)
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
                          interval_confidence: float = 0.95) -> LambdaSearch:
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
    of runs.

    Raises ConfigError for lo >= hi, lo < 0, iterations < 1, no seeds or an unknown
    ``inconclusive``.
    """
    from servesim.theory import scenario_capacity

    seeds = _search_args(seeds, lo, hi, iterations)
    if inconclusive not in _STATES:
        raise ConfigError("inconclusive", inconclusive, "'stable' or 'unstable'")
    kw = dict(seeds=seeds, horizon_s=horizon_s, rate_field=rate_field,
              max_in_system=max_in_system, confidence=confidence, eps=eps, use_fluid=use_fluid)

    def counted(p: Probe) -> str:
        return p.state if p.state in _STATES else inconclusive

    probes: list[Probe] = []
    ends_ok = None
    if check_ends:
        p_lo = probe_rate(table, lo, **kw)
        p_hi = probe_rate(table, hi, **kw)
        probes += [_with_step(p_lo, -2, counted(p_lo)), _with_step(p_hi, -1, counted(p_hi))]
        ends_ok = p_lo.state == "stable" and p_hi.state == "unstable"

    def probe(step: int, mid: float) -> bool:
        p = probe_rate(table, mid, **kw)
        probes.append(_with_step(p, step, counted(p)))
        return counted(p) == "stable"

    a, b = _bisect(lo, hi, iterations, probe)
    t = copy.deepcopy(dict(table))
    set_field(t, rate_field, (lo + hi) / 2)
    theory = float(scenario_capacity(scenario_from_dict(t)).request_capacity.value)
    cap = max_in_system if isinstance(max_in_system, int) else None
    ci = lambda_star_interval(table, seeds=seeds, horizon_s=horizon_s, lo=lo, hi=hi,
                              iterations=iterations, rate_field=rate_field,
                              confidence=interval_confidence,
                              max_in_system=max_in_system) if interval else None
    return LambdaSearch(lo=a, hi=b, lo0=float(lo), hi0=float(hi), theory_lambda_star=theory,
                        probes=probes, seeds=len(seeds), horizon_s=float(horizon_s),
                        max_in_system=cap, confidence=confidence, inconclusive=inconclusive,
                        ends_ok=ends_ok, interval=ci)


def _seed_state(table: Mapping[str, Any], rate: float, seed: int, horizon_s: float,
                rate_field: str, max_in_system: int | str | None, seed_confidence: float,
                batches: int) -> str:
    """One run's verdict at ``rate``: unstable if stopped by ``run.max_in_system`` or if its
    number in system N(t) grows over [H/2, H] at one-sided level ``seed_confidence``
    (``batch_means_slope``); else stable."""
    from servesim.api import simulate

    scenario = _rate_scenario(table, rate_field, rate, horizon_s, max_in_system)
    res = simulate(scenario, seed=int(seed))
    if res.summary.get("stop_reason") == "max_in_system":
        return "unstable"
    trend = batch_means_slope(res.iterations, horizon_s, "in_system", batches)
    return "unstable" if trend.growing(seed_confidence) else "stable"


def lambda_star_interval(table: Mapping[str, Any], *, seeds: Sequence[int] | Iterable[int],
                         horizon_s: float, lo: float, hi: float, iterations: int = 6,
                         rate_field: str = "workload.arrival.rate_per_s",
                         confidence: float = 0.95, max_in_system: int | str | None = "auto",
                         seed_confidence: float = SEED_CONFIDENCE,
                         batches: int = SEED_BATCHES) -> LambdaInterval:
    """A confidence interval for the mean per-seed stability boundary: bisect each seed
    separately, then a t-interval over the per-seed boundaries, widened by half the per-seed
    resolution and clipped to [lo, hi].

    A seed's verdict at a rate uses that run alone (``_seed_state``): unstable if stopped by
    ``max_in_system`` or if the lower ``seed_confidence`` bound of its N(t) slope over
    [H/2, H], from ``batches`` batch means, lies above 0; else stable. Far below lambda* a false
    "unstable" has probability about 1 - seed_confidence; just above lambda* the growth is too
    slow to show in one run, so a seed's boundary x_s lies above lambda* by the smallest excess
    rate its run can detect, which shrinks as the horizon grows (``docs/stability.md``). The
    interval therefore estimates E[x_s], the rate at which a run of ``horizon_s`` starts to show
    growth, an upper estimate of lambda*.

    Raises ConfigError for lo >= hi, lo < 0, iterations < 1, no seeds, a confidence or
    seed_confidence outside (0, 1) or batches < 3.
    """
    seeds = _search_args(seeds, lo, hi, iterations)
    for name, value in (("confidence", confidence), ("seed_confidence", seed_confidence)):
        if not 0 < value < 1:
            raise ConfigError(name, value, "a number in (0, 1)")
    if batches < 3:
        raise ConfigError("batches", batches, "an integer >= 3")
    if not horizon_s > 0:
        raise ConfigError("horizon_s", horizon_s, "a positive number of seconds")
    per_seed = []
    for seed in seeds:
        a, b = _bisect(lo, hi, iterations, lambda _, mid, seed=seed: _seed_state(
            table, mid, seed, horizon_s, rate_field, max_in_system, seed_confidence,
            batches) == "stable")
        per_seed.append((a + b) / 2)
    resolution = (hi - lo) / 2 ** iterations
    # The t-interval of a mean over seeds is slope_ci's; one seed gives it no spread to use.
    ci = slope_ci(per_seed, confidence)
    mean = ci.mean
    half = resolution / 2 + (ci.hi - ci.mean if ci.n > 1 else 0.0)
    # The search cannot speak outside [lo, hi]: few seeds give a t-interval wider than that.
    return LambdaInterval(per_seed, mean, max(float(lo), mean - half),
                          min(float(hi), mean + half), confidence, resolution,
                          seed_confidence, batches)


def policy_lambda_stars(table: Mapping[str, Any], policies: Sequence[str], *,
                        seeds: Sequence[int], horizon_s: float, lo: float, hi: float,
                        iterations: int = 6, **kwargs: Any) -> pd.DataFrame:
    """``empirical_lambda_star`` once per ``engine.batching`` value in ``policies``.

    Returns a DataFrame, one row per policy: policy, lo, hi (the empirical bracket, req/s),
    estimate ((lo + hi)/2), theory_lambda_star (work-conserving lambda* = mu*/(m_p + m_d)),
    ratio (estimate / theory_lambda_star), probes (rates evaluated), inconclusive (how many were
    inconclusive), stopped (how many were stopped by ``run.max_in_system``); with
    ``interval=True`` also ci_lo, ci_mean, ci_hi (``lambda_star_interval``). Extra keyword
    arguments go to ``empirical_lambda_star``. The table's ``[engine.wait]`` parameters are
    dropped for the systems that do not take them (segments for all but Nested WAIT).
    """
    rows = []
    for policy in policies:
        t = _for_policy(table, str(policy))
        s = empirical_lambda_star(t, seeds=seeds, horizon_s=horizon_s, lo=lo, hi=hi,
                                  iterations=iterations, **kwargs)
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


def _search_args(seeds: Iterable[int], lo: float, hi: float, iterations: int) -> list[int]:
    """The seeds as a list, after checking the arguments every bisection shares."""
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("seeds", seeds, "at least one seed")
    if not 0 <= lo < hi:
        raise ConfigError("lo", (lo, hi), "0 <= lo < hi")
    if iterations < 1:
        raise ConfigError("iterations", iterations, "an integer >= 1")
    return seeds
