"""Per-seed bisections of the arrival rate and a confidence interval for their mean boundary;
also the bisection loop, argument checks and rate scenarios that ``search.py`` shares.

``lambda_star_interval`` bisects each seed alone, judging one run by the trend of its number
in system (``batch_means_slope``), and gives a t-interval for the mean per-seed boundary: the
rate at which one run of the horizon starts to show growth, an upper estimate of lambda*
(``docs/stability.md``, "Empirical lambda*").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from servesim.analysis.stability import batch_means_slope, slope_ci
from servesim.analysis.study import timed_table
from servesim.core.errors import ConfigError
from servesim.core.progress import Progress, part, run_fraction
from servesim.scenario import scenario_from_dict

__all__ = ["SEED_BATCHES", "SEED_CONFIDENCE", "LambdaInterval", "lambda_star_interval"]

SEED_BATCHES = 5
"""Batches k of the per-seed trend test (``batch_means_slope``): blocks of H/10 seconds."""

SEED_CONFIDENCE = 0.99
"""One-sided level of the per-seed trend test: a false "unstable" has probability about 1%."""


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


def auto_cap(rate: float, horizon_s: float) -> int:
    """The automatic ``run.max_in_system`` at ``rate`` (req/s) over ``horizon_s``."""
    # Half of all expected arrivals in the system at once (+100 for small runs): far above the
    # number in system of any stable run, reached early by strongly overloaded ones.
    return int(math.ceil(0.5 * rate * horizon_s)) + 100


def rate_scenario(table: Mapping[str, Any], rate_field: str, rate: float, horizon_s: float,
                  max_in_system: int | str | None) -> Any:
    """The scenario of ``table`` at ``rate`` over ``horizon_s``, with the run's cap on the
    number in system set as ``max_in_system`` says ("auto", an integer, or None to keep)."""
    t, _ = timed_table(table, rate_field, rate, horizon_s)
    if max_in_system == "auto":
        t["run"]["max_in_system"] = auto_cap(rate, horizon_s)
    elif max_in_system is not None:
        t["run"]["max_in_system"] = int(max_in_system)
    return scenario_from_dict(t)


def bisect(lo: float, hi: float, iterations: int,
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


def search_args(seeds: Iterable[int], lo: float, hi: float, iterations: int) -> list[int]:
    """The seeds as a list, after checking the arguments every bisection shares."""
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("seeds", seeds, "at least one seed")
    if not 0 <= lo < hi:
        raise ConfigError("lo", (lo, hi), "0 <= lo < hi")
    if iterations < 1:
        raise ConfigError("iterations", iterations, "an integer >= 1")
    return seeds


def seed_state(table: Mapping[str, Any], rate: float, seed: int, horizon_s: float,
               rate_field: str, max_in_system: int | str | None, seed_confidence: float,
               batches: int, progress: Progress | None = None) -> str:
    """One run's verdict at ``rate``: unstable if stopped by ``run.max_in_system`` or if its
    number in system N(t) grows over [H/2, H] at one-sided level ``seed_confidence``
    (``batch_means_slope``); else stable. ``progress`` gets the run's fraction done, as one
    unit."""
    from servesim.api import simulate

    scenario = rate_scenario(table, rate_field, rate, horizon_s, max_in_system)
    if progress is not None:
        progress("", 0, 1)
    res = simulate(scenario, seed=int(seed), progress=run_fraction(progress, ""))
    if progress is not None:
        progress("", 1, 1)
    if res.summary.get("stop_reason") == "max_in_system":
        return "unstable"
    trend = batch_means_slope(res.iterations, horizon_s, "in_system", batches)
    return "unstable" if trend.growing(seed_confidence) else "stable"


def lambda_star_interval(table: Mapping[str, Any], *, seeds: Sequence[int] | Iterable[int],
                         horizon_s: float, lo: float, hi: float, iterations: int = 6,
                         rate_field: str = "workload.arrival.rate_per_s",
                         confidence: float = 0.95, max_in_system: int | str | None = "auto",
                         seed_confidence: float = SEED_CONFIDENCE,
                         batches: int = SEED_BATCHES,
                         progress: Progress | None = None) -> LambdaInterval:
    """A confidence interval for the mean per-seed stability boundary: bisect each seed
    separately, then a t-interval over the per-seed boundaries, widened by half the per-seed
    resolution and clipped to [lo, hi].

    A seed's verdict at a rate uses that run alone (``seed_state``): unstable if stopped by
    ``max_in_system`` or if the lower ``seed_confidence`` bound of its N(t) slope over
    [H/2, H], from ``batches`` batch means, lies above 0; else stable. Far below lambda* a false
    "unstable" has probability about 1 - seed_confidence; just above lambda* the growth is too
    slow to show in one run, so a seed's boundary x_s lies above lambda* by the smallest excess
    rate its run can detect, which shrinks as the horizon grows (``docs/stability.md``). The
    interval therefore estimates E[x_s], the rate at which a run of ``horizon_s`` starts to show
    growth, an upper estimate of lambda*. ``progress`` counts runs, seeds x iterations in all
    ("per-seed bisection, seed 3 (3/8), step 2/6 at 12.9 req/s").

    Raises ConfigError for lo >= hi, lo < 0, iterations < 1, no seeds, a confidence or
    seed_confidence outside (0, 1) or batches < 3.
    """
    seeds = search_args(seeds, lo, hi, iterations)
    for name, value in (("confidence", confidence), ("seed_confidence", seed_confidence)):
        if not 0 < value < 1:
            raise ConfigError(name, value, "a number in (0, 1)")
    if batches < 3:
        raise ConfigError("batches", batches, "an integer >= 3")
    if not horizon_s > 0:
        raise ConfigError("horizon_s", horizon_s, "a positive number of seconds")
    per_seed = []
    total = len(seeds) * iterations
    for i, seed in enumerate(seeds):
        def stable(step: int, mid: float, i: int = i, seed: int = seed) -> bool:
            where = part(progress, i * iterations + step, 1, total,
                         f"per-seed bisection, seed {seed} ({i + 1}/{len(seeds)}), step "
                         f"{step + 1}/{iterations} at {mid:.4g} req/s")
            return seed_state(table, mid, seed, horizon_s, rate_field, max_in_system,
                              seed_confidence, batches, where) == "stable"

        a, b = bisect(lo, hi, iterations, stable)
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
