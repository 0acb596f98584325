"""Arrival processes: when requests reach the engine.

Each process knows its long-run rate (``rate_per_s``) and the squared coefficient of variation of
its inter-arrival times (``scv``: 1 for Poisson, 0 for deterministic), and samples either the first
``n`` arrivals or every arrival before a horizon, in vectorised chunks.

The synthetic processes also offer ``chunks(rng, size)``: an endless iterator of sorted arrays of
arrival times, each starting at or after the end of the previous one, which a run pulls only as
its clock reaches them. The times do not depend on ``size``: numpy draws the same stream whether
in one call or many for the distributions used, and each chunk's times continue the previous
chunk's cumulative sum (seeded with its last time), so the additions are the same as in one
``cumsum``. ``sample`` is built on ``chunks``, so a chunked run and a whole one see the same
arrivals bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from servesim.core.errors import ConfigError
from servesim.core.fields import check_keys, integer, number, rate_per_s, require, seconds, table
from servesim.core.registry import lookup
from servesim.workload.closed import make_closed
from servesim.workload.distributions import construct

# Chunks are sized from the expected count, but never above this many draws at once.
_MAX_CHUNK = 2**20


@runtime_checkable
class ArrivalProcess(Protocol):
    """What every arrival process offers. A process may also offer ``chunks(rng, size)`` (see
    the module docstring); one that does not is drawn whole before a run."""

    @property
    def rate_per_s(self) -> float: ...

    @property
    def scv(self) -> float: ...

    def sample(self, rng: np.random.Generator, n: int | None = None,
               horizon_s: float | None = None) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


def check_amount(n: int | None, horizon_s: float | None) -> tuple[int | None, float | None]:
    """Validate that exactly one of ``n`` / ``horizon_s`` is given.

    Raises ConfigError on ``run.requests`` / ``run.horizon_s`` otherwise, or if ``n`` is not an
    integer >= 0 or ``horizon_s`` not a number > 0.
    """
    if (n is None) == (horizon_s is None):
        raise ConfigError("run.requests", n, "exactly one of run.requests and run.horizon_s")
    if n is not None:
        return integer(n, "run.requests", low=0), None
    return None, number(horizon_s, "run.horizon_s", low=0, low_open=True)


def cut_chunks(chunks: Iterable[np.ndarray], n: int | None,
               horizon_s: float | None) -> Iterator[np.ndarray]:
    """The chunks of sorted arrival times up to the ``n``-th arrival, or before ``horizon_s``
    (exactly one given); stops pulling as soon as the amount is reached."""
    if n is not None and n <= 0:
        return
    count = 0
    for times in chunks:
        if horizon_s is not None:
            k = int(np.searchsorted(times, horizon_s, side="left"))
            yield times[:k]
            if k < len(times):
                return
        else:
            assert n is not None
            times = times[: n - count]
            count += len(times)
            yield times
            if count >= n:
                return


def collect(chunks: Iterable[np.ndarray], n: int | None, horizon_s: float | None) -> np.ndarray:
    """Every arrival ``cut_chunks`` keeps, in one float64 array."""
    parts = list(cut_chunks(chunks, n, horizon_s))
    return np.concatenate(parts) if parts else np.empty(0)


def chunk_size(process: Any, n: int | None, horizon_s: float | None) -> int:
    """Draws per chunk for sampling a whole amount: ``n``, or the expected count before the
    horizon plus five standard deviations (one chunk almost always suffices), capped."""
    if n is not None:
        return max(min(n, _MAX_CHUNK), 1)
    assert horizon_s is not None
    expected = process.rate_per_s * horizon_s
    return int(min(expected + 5 * math.sqrt(expected * max(process.scv, 1.0)) + 16, _MAX_CHUNK))


def _continue_sum(t0: float, gaps: np.ndarray) -> np.ndarray:
    """``t0`` plus the running sum of ``gaps``, added in the order one long ``cumsum`` adds."""
    return np.cumsum(np.concatenate(([t0], gaps)))[1:]


class _Renewal:
    """Shared sampling for renewal processes: i.i.d. gaps, first arrival after one gap."""

    rate_per_s: float
    scv: float

    def _gaps(self, rng: np.random.Generator, m: int) -> np.ndarray:
        raise NotImplementedError

    def chunks(self, rng: np.random.Generator, size: int) -> Iterator[np.ndarray]:
        """Endless chunks of ``size`` sorted arrival times (the same times for any ``size``)."""
        size, t0 = max(int(size), 1), 0.0
        while True:
            times = _continue_sum(t0, self._gaps(rng, size))
            yield times
            t0 = float(times[-1])

    def sample(self, rng: np.random.Generator, n: int | None = None,
               horizon_s: float | None = None) -> np.ndarray:
        """Return the first ``n`` arrival times, or all arrivals before ``horizon_s``, sorted.

        Raises ConfigError unless exactly one of ``n`` / ``horizon_s`` is given.
        """
        n, horizon_s = check_amount(n, horizon_s)
        return collect(self.chunks(rng, chunk_size(self, n, horizon_s)), n, horizon_s)


def _rate(value: Any, name: str) -> float:
    return rate_per_s(value, name)


@dataclass(frozen=True)
class Poisson(_Renewal):
    """Poisson arrivals: exponential gaps with mean 1/rate, never clipped (scv = 1).

    Raises ConfigError unless ``rate_per_s`` > 0.
    """

    rate_per_s: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate_per_s", _rate(self.rate_per_s, "poisson.rate_per_s"))

    @property
    def scv(self) -> float:  # type: ignore[override]
        return 1.0

    def _gaps(self, rng: np.random.Generator, m: int) -> np.ndarray:
        return rng.exponential(1.0 / self.rate_per_s, size=m)

    def describe(self) -> dict[str, Any]:
        return {"kind": "poisson", "rate_per_s": self.rate_per_s}


@dataclass(frozen=True)
class Deterministic(_Renewal):
    """Evenly spaced arrivals at k / rate for k = 1, 2, ... (scv = 0).

    Raises ConfigError unless ``rate_per_s`` > 0.
    """

    rate_per_s: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate_per_s", _rate(self.rate_per_s, "deterministic.rate_per_s"))

    @property
    def scv(self) -> float:  # type: ignore[override]
        return 0.0

    def chunks(self, rng: np.random.Generator | None, size: int) -> Iterator[np.ndarray]:
        """Endless chunks of ``size`` times k / rate, k = 1, 2, ... (``rng`` unused)."""
        size, k0 = max(int(size), 1), 0
        while True:
            # k / rate, not a cumulative sum, so times do not drift by rounding.
            yield np.arange(k0 + 1, k0 + size + 1, dtype=np.float64) / self.rate_per_s
            k0 += size

    def sample(self, rng: np.random.Generator | None, n: int | None = None,
               horizon_s: float | None = None) -> np.ndarray:
        """Return k / rate for k = 1..n, or every such time below ``horizon_s`` (``rng`` unused).

        Raises ConfigError unless exactly one of ``n`` / ``horizon_s`` is given.
        """
        n, horizon_s = check_amount(n, horizon_s)
        size = n if n is not None else math.floor(horizon_s * self.rate_per_s) + 1  # type: ignore[operator]
        return collect(self.chunks(rng, min(max(size, 1), _MAX_CHUNK)), n, horizon_s)

    def describe(self) -> dict[str, Any]:
        return {"kind": "deterministic", "rate_per_s": self.rate_per_s}


@dataclass(frozen=True)
class GammaRenewal(_Renewal):
    """Renewal process with gamma gaps: mean 1/rate, coefficient of variation ``cv``.

    Shape k = 1/cv**2 and scale 1/(rate k); cv < 1 is smoother than Poisson, cv > 1 burstier.
    With cv near the cap of 10 the shape is 0.01, and a gap can underflow to 0.0 in float64
    (probability ~6e-4 per gap at cv = 10, < 1e-12 below cv = 5): simultaneous arrivals, not
    clipping.

    Raises ConfigError unless ``rate_per_s`` > 0 and 0 < ``cv`` <= 10.
    """

    rate_per_s: float
    cv: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate_per_s", _rate(self.rate_per_s, "gamma.rate_per_s"))
        object.__setattr__(self, "cv", number(self.cv, "gamma.cv", low=0, low_open=True, high=10))

    @property
    def scv(self) -> float:  # type: ignore[override]
        return self.cv**2

    def _gaps(self, rng: np.random.Generator, m: int) -> np.ndarray:
        shape = 1.0 / self.cv**2
        return rng.gamma(shape, 1.0 / (self.rate_per_s * shape), size=m)

    def describe(self) -> dict[str, Any]:
        return {"kind": "gamma", "rate_per_s": self.rate_per_s, "cv": self.cv}


@dataclass(frozen=True)
class MMPP2:
    """Two-state Markov-modulated Poisson process.

    The state alternates between "on" and "off" with exponential sojourns (means ``mean_on_s``,
    ``mean_off_s``); within a state arrivals are Poisson at that state's rate. The first state is
    drawn from the stationary law, and since sojourns are memoryless the whole path is stationary.
    ``rate_per_s`` is the stationary mean rate; ``scv`` is that of the stationary inter-arrival
    time, from the MAP formulas E[T^k] = k! phi (-D0)^-k 1.

    Raises ConfigError if a rate is negative, both rates are 0, or a mean sojourn is not > 0.
    """

    rate_on_per_s: float
    rate_off_per_s: float
    mean_on_s: float
    mean_off_s: float

    def __post_init__(self) -> None:
        for name in ("rate_on_per_s", "rate_off_per_s"):
            object.__setattr__(self, name, rate_per_s(getattr(self, name), f"mmpp2.{name}",
                                                      allow_zero=True))
        for name in ("mean_on_s", "mean_off_s"):
            object.__setattr__(self, name, seconds(getattr(self, name), f"mmpp2.{name}"))
        if self.rate_on_per_s == 0 and self.rate_off_per_s == 0:
            raise ConfigError("mmpp2.rate_on_per_s", 0.0, "a rate > 0 in at least one state")

    @property
    def p_on(self) -> float:
        """Stationary probability of the "on" state."""
        return self.mean_on_s / (self.mean_on_s + self.mean_off_s)

    @property
    def rate_per_s(self) -> float:
        return self.p_on * self.rate_on_per_s + (1 - self.p_on) * self.rate_off_per_s

    @property
    def scv(self) -> float:
        d0, d1 = self._map()
        pi = np.array([self.p_on, 1 - self.p_on])
        phi = pi @ d1 / (pi @ d1).sum()  # phase just after an arrival
        inv = np.linalg.inv(-d0)
        m1 = phi @ inv @ np.ones(2)
        m2 = 2 * phi @ inv @ inv @ np.ones(2)
        return float(m2 / m1**2 - 1)

    def _map(self) -> tuple[np.ndarray, np.ndarray]:
        """The (D0, D1) matrices of this MMPP as a Markovian arrival process."""
        a, b = 1 / self.mean_on_s, 1 / self.mean_off_s
        r = np.array([self.rate_on_per_s, self.rate_off_per_s])
        d0 = np.array([[-a, a], [b, -b]]) - np.diag(r)
        return d0, np.diag(r)

    def chunks(self, rng: np.random.Generator, size: int) -> Iterator[np.ndarray]:
        """Endless sorted chunks of about ``size`` arrivals (some may be empty), from runs of
        on/off periods; the times do not depend on ``size``.

        The first state is drawn from ``rng``; period lengths, per-period Poisson counts and the
        uniform points within periods each come from their own stream spawned from ``rng``, so
        every stream is drawn in the same order however the periods are grouped.
        """
        on = bool(rng.random() < self.p_on)
        streams = rng.spawn(3)
        per_cycle = self.rate_per_s * (self.mean_on_s + self.mean_off_s)
        cycles = int(min(1.2 * max(int(size), 1) / per_cycle + 8, _MAX_CHUNK // 2))
        t0 = 0.0
        while True:
            times, t0 = self._periods(streams, on, t0, 2 * cycles)
            yield times

    def sample(self, rng: np.random.Generator, n: int | None = None,
               horizon_s: float | None = None) -> np.ndarray:
        """Return the first ``n`` arrivals, or all before ``horizon_s``, sorted (``chunks``).

        Raises ConfigError unless exactly one of ``n`` / ``horizon_s`` is given.
        """
        n, horizon_s = check_amount(n, horizon_s)
        return collect(self.chunks(rng, chunk_size(self, n, horizon_s)), n, horizon_s)

    def _periods(self, streams: Sequence[np.random.Generator], on: bool, t0: float,
                 m: int) -> tuple[np.ndarray, float]:
        """Arrivals in ``m`` (even) alternating periods from ``t0``, first one ``on`` or off.

        A period starts exactly where the previous one ended (one running sum), so its points,
        which lie within it, never precede the previous period's: chunks sorted one at a time
        are sorted together.
        """
        first, second = (0, 1) if on else (1, 0)
        order = [first, second] * (m // 2)
        means = np.array([self.mean_on_s, self.mean_off_s])[order]
        rates = np.array([self.rate_on_per_s, self.rate_off_per_s])[order]
        durations = streams[0].exponential(1.0, size=m) * means
        edges = np.cumsum(np.concatenate(([t0], durations)))
        counts = streams[1].poisson(rates * durations)
        offsets = streams[2].random(int(counts.sum())) * np.repeat(durations, counts)
        return np.sort(np.repeat(edges[:-1], counts) + offsets), float(edges[-1])

    def describe(self) -> dict[str, Any]:
        return {"kind": "mmpp2", "rate_on_per_s": self.rate_on_per_s,
                "rate_off_per_s": self.rate_off_per_s, "mean_on_s": self.mean_on_s,
                "mean_off_s": self.mean_off_s}


@dataclass(frozen=True)
class Explicit:
    """A given list of arrival times (seconds, >= 0, non-decreasing).

    ``rate_per_s`` is (count - 1) / (last - first) and ``scv`` that of the gaps; both are nan when
    undefined (fewer than two times, or all equal).

    Raises ConfigError if the list is empty, has a negative or non-finite time, or decreases.
    """

    times_s: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "times_s", _times(self.times_s, "list.times_s"))

    @property
    def rate_per_s(self) -> float:
        span = self.times_s[-1] - self.times_s[0]
        return (len(self.times_s) - 1) / span if span > 0 else math.nan

    @property
    def scv(self) -> float:
        gaps = np.diff(self.times_s)
        if len(gaps) < 1 or gaps.mean() == 0:
            return math.nan
        return float(gaps.var() / gaps.mean() ** 2)

    def sample(self, rng: np.random.Generator, n: int | None = None,
               horizon_s: float | None = None) -> np.ndarray:
        """Return the first ``n`` times, or those below ``horizon_s`` (``rng`` unused).

        Raises ConfigError on ``run.requests`` if ``n`` exceeds the number of times, or unless
        exactly one of ``n`` / ``horizon_s`` is given.
        """
        n, horizon_s = check_amount(n, horizon_s)
        times = np.asarray(self.times_s, dtype=np.float64)
        if n is None:
            return times[times < horizon_s]
        if n > len(times):
            raise ConfigError("run.requests", n,
                              f"at most {len(times)} (the arrival list has {len(times)} times)")
        return times[:n]

    def describe(self) -> dict[str, Any]:
        return {"kind": "list", "times_s": list(self.times_s)}


def _times(values: Sequence[float], name: str) -> tuple[float, ...]:
    """Validate a non-empty, non-decreasing list of finite times >= 0."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | np.ndarray):
        raise ConfigError(name, values, "a list of times in seconds")
    if len(values) == 0:
        raise ConfigError(name, [], "a non-empty list of times in seconds")
    out = tuple(seconds(v, name, allow_zero=True) for v in values)
    gaps = np.diff(out)
    if np.any(gaps < 0):
        i = int(np.argmax(gaps < 0)) + 1
        raise ConfigError(name, out[i], f"non-decreasing times (item {i} is below item {i - 1})")
    return out


# -- factories from TOML tables ----------------------------------------------------------------


Factory = Callable[[Mapping[str, Any], str], ArrivalProcess]


def _simple(cls: Callable[..., ArrivalProcess], keys: Sequence[str]) -> Factory:
    """A factory that checks ``keys`` (all required) and builds ``cls``."""

    def factory(spec: Mapping[str, Any], field: str) -> ArrivalProcess:
        check_keys(spec, field, ["kind", *keys])
        return construct(cls, field, **{key: require(spec, key, field) for key in keys})

    return factory


ARRIVALS: dict[str, Factory] = {
    "poisson": _simple(Poisson, ["rate_per_s"]),
    "deterministic": _simple(Deterministic, ["rate_per_s"]),
    "gamma": _simple(GammaRenewal, ["rate_per_s", "cv"]),
    "mmpp2": _simple(MMPP2, ["rate_on_per_s", "rate_off_per_s", "mean_on_s", "mean_off_s"]),
    "list": _simple(Explicit, ["times_s"]),
}


def make_arrivals(spec: Mapping[str, Any], field: str,
                  kinds: Mapping[str, Factory] = ARRIVALS) -> ArrivalProcess:
    """Build an arrival process from a table like ``{ kind = "poisson", rate_per_s = 12.5 }``.

    ``kinds`` is the registry to look the kind up in: the open-loop ``ARRIVALS`` by default (a
    network's workflows), ``WORKLOAD_ARRIVALS`` for a scenario's ``[workload]``, which adds
    the closed loop.

    Raises ConfigError naming the full field (``workload.arrival.rate_per_s``) if the kind is
    unknown (suggesting the closest), a key is unknown or missing, or a value is out of range.
    """
    spec = table(spec, field)
    return lookup(kinds, require(spec, "kind", field), f"{field}.kind")(spec, field)


# A closed loop's arrivals come from the engine's completions, so only a single engine's
# workload offers it; networks keep the open-loop kinds.
WORKLOAD_ARRIVALS: dict[str, Factory] = {**ARRIVALS, "closed": make_closed}

