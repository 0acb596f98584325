"""Closed-loop workloads: N clients, each sending its next request when its last one finishes.

``[workload] arrival = { kind = "closed", clients = 8, think_s = 0.5 }``. Every client sends
its first request at t = 0 (all at once, as ``vllm bench serve --max-concurrency`` and most
load generators start), then, whenever its request finishes (or is rejected at arrival), waits
a think time and sends the next. ``think_s`` is a number of seconds (0 when omitted) or a
distribution of times:

- ``{ kind = "deterministic", value_s = 0.5 }``
- ``{ kind = "exponential", mean_s = 2.0 }``
- ``{ kind = "uniform", low_s = 0.5, high_s = 1.5 }``
- ``{ kind = "lognormal", mean_s = 2.0, cv = 1.5 }``

The arrival times depend on the engine, so they are simulated (``servesim.cluster.closed``),
never drawn ahead: ``ClosedArrivals`` stands in the workload's ``arrival`` slot with an
undefined rate (NaN) and refuses to ``sample``. The run length is ``run.requests`` (requests
sent in all) or ``run.horizon_s`` (requests sent before it).

Draws. Request k (the k-th sent, ids in the order of sending) takes the k-th lengths of the
workload's usual streams ("classes", "prompt_tokens/<class>", "output_tokens/<class>"; a trace's
rows in file order), and the think time that follows it is the k-th draw of the "think_s"
stream. Both are drawn in blocks, which gives the same values as one long draw.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from servesim.core.errors import ConfigError
from servesim.core.fields import check_keys, integer, number, require, seconds, table
from servesim.core.registry import lookup
from servesim.core.rng import Streams

if TYPE_CHECKING:
    from servesim.workload.build import Workload

__all__ = ["MAX_CLIENTS", "THINK_TIMES", "ClosedArrivals", "ClosedLoop", "DeterministicTime",
           "ExponentialTime", "LogNormalTime", "ThinkTime", "UniformTime", "closed_loop_of",
           "make_closed", "make_think_time"]

MAX_CLIENTS = 1 << 20
"""More clients than any engine holds requests: beyond this a closed loop is an open one."""

MAX_TIME_CV = 100.0
_BLOCK = 1024   # draws per block; the values do not depend on it


class ThinkTime(Protocol):
    """A distribution of times in seconds, >= 0, that knows its own moments."""

    @property
    def mean_s(self) -> float: ...

    @property
    def variance_s2(self) -> float: ...

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class DeterministicTime:
    """Always ``value_s`` seconds (>= 0). Raises ConfigError otherwise."""

    value_s: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "value_s", seconds(self.value_s, "deterministic.value_s",
                                                    allow_zero=True))

    @property
    def mean_s(self) -> float:
        return self.value_s

    @property
    def variance_s2(self) -> float:
        return 0.0

    def sample(self, rng: np.random.Generator | None, n: int) -> np.ndarray:
        return np.full(int(n), self.value_s)

    def describe(self) -> dict[str, Any]:
        return {"kind": "deterministic", "value_s": self.value_s}


@dataclass(frozen=True)
class ExponentialTime:
    """Exponential with mean ``mean_s`` > 0 (never clipped). Raises ConfigError otherwise."""

    mean_s: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean_s", seconds(self.mean_s, "exponential.mean_s"))

    @property
    def variance_s2(self) -> float:
        return self.mean_s**2

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.exponential(self.mean_s, size=int(n))

    def describe(self) -> dict[str, Any]:
        return {"kind": "exponential", "mean_s": self.mean_s}


@dataclass(frozen=True)
class UniformTime:
    """Uniform on [``low_s``, ``high_s``], 0 <= low_s <= high_s. Raises ConfigError otherwise."""

    low_s: float
    high_s: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "low_s", seconds(self.low_s, "uniform.low_s", allow_zero=True))
        object.__setattr__(self, "high_s", seconds(self.high_s, "uniform.high_s",
                                                   allow_zero=True))
        if self.high_s < self.low_s:
            raise ConfigError("uniform.high_s", self.high_s,
                              f"a time >= low_s ({self.low_s:g} s)")

    @property
    def mean_s(self) -> float:
        return (self.low_s + self.high_s) / 2

    @property
    def variance_s2(self) -> float:
        return (self.high_s - self.low_s) ** 2 / 12

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(self.low_s, self.high_s, size=int(n))

    def describe(self) -> dict[str, Any]:
        return {"kind": "uniform", "low_s": self.low_s, "high_s": self.high_s}


@dataclass(frozen=True)
class LogNormalTime:
    """Lognormal with mean ``mean_s`` > 0 and coefficient of variation 0 < ``cv`` <= 100:
    sigma**2 = ln(1 + cv**2), mu = ln(mean_s) - sigma**2 / 2. Raises ConfigError otherwise."""

    mean_s: float
    cv: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean_s", seconds(self.mean_s, "lognormal.mean_s"))
        object.__setattr__(self, "cv", number(self.cv, "lognormal.cv", low=0, low_open=True,
                                              high=MAX_TIME_CV))

    @property
    def variance_s2(self) -> float:
        return (self.cv * self.mean_s) ** 2

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        sigma = math.sqrt(math.log1p(self.cv**2))
        return rng.lognormal(math.log(self.mean_s) - sigma**2 / 2, sigma, size=int(n))

    def describe(self) -> dict[str, Any]:
        return {"kind": "lognormal", "mean_s": self.mean_s, "cv": self.cv}


def _renamed(cls: Callable[..., ThinkTime], field: str, **kwargs: Any) -> ThinkTime:
    """``cls(**kwargs)``, with a ConfigError's field renamed to ``field.<param>``."""
    try:
        return cls(**kwargs)
    except ConfigError as err:
        param = err.field.rsplit(".", 1)[-1]
        raise ConfigError(f"{field}.{param}", err.value, err.expected) from None


def _time_factory(cls: Callable[..., ThinkTime], keys: tuple[str, ...]
                  ) -> Callable[[Mapping[str, Any], str], ThinkTime]:
    def factory(spec: Mapping[str, Any], field: str) -> ThinkTime:
        check_keys(spec, field, ["kind", *keys])
        return _renamed(cls, field, **{key: require(spec, key, field) for key in keys})

    return factory


THINK_TIMES: dict[str, Callable[[Mapping[str, Any], str], ThinkTime]] = {
    "deterministic": _time_factory(DeterministicTime, ("value_s",)),
    "exponential": _time_factory(ExponentialTime, ("mean_s",)),
    "uniform": _time_factory(UniformTime, ("low_s", "high_s")),
    "lognormal": _time_factory(LogNormalTime, ("mean_s", "cv")),
}


def make_think_time(value: Any, field: str) -> ThinkTime:
    """A think time from a number of seconds (>= 0) or a table such as
    ``{ kind = "exponential", mean_s = 2.0 }``.

    Raises ConfigError naming the full field (``workload.arrival.think_s.mean_s``) for a bad
    number, an unknown kind (suggesting the closest), or a missing, unknown or bad key.
    """
    if isinstance(value, Mapping):
        return lookup(THINK_TIMES, require(value, "kind", field), f"{field}.kind")(value, field)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(field, value, 'a time in seconds >= 0 or a table such as '
                          '{ kind = "exponential", mean_s = 2.0 }')
    return DeterministicTime(seconds(value, field, allow_zero=True))


# -- the workload's arrival slot ------------------------------------------------------------------


@dataclass(frozen=True)
class ClosedArrivals:
    """What ``[workload] arrival = { kind = "closed", ... }`` builds: the number of clients and
    their think time. Its arrivals are simulated with the engine, so it has no rate (NaN, as an
    arrival process whose rate is undefined) and ``sample`` refuses.

    Raises ConfigError unless 1 <= ``clients`` <= ``MAX_CLIENTS``.
    """

    clients: int
    think: ThinkTime = DeterministicTime(0.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "clients", integer(self.clients, "closed.clients", low=1,
                                                    high=MAX_CLIENTS))

    @property
    def rate_per_s(self) -> float:
        return math.nan

    @property
    def scv(self) -> float:
        return math.nan

    def sample(self, rng: Any, n: int | None = None, horizon_s: float | None = None) -> Any:
        raise ConfigError("workload.arrival.kind", "closed",
                          "an open-loop arrival process here: a closed loop's arrival times "
                          "depend on the engine, so only a simulation of it produces them")

    def describe(self) -> dict[str, Any]:
        return {"kind": "closed", "clients": self.clients, "think_s": self.think.describe()}


def make_closed(spec: Mapping[str, Any], field: str) -> ClosedArrivals:
    """Build ``{ kind = "closed", clients = N, think_s = ... }`` (``think_s`` optional, 0).

    Raises ConfigError naming the full field for a missing, unknown or out-of-range key.
    """
    spec = table(spec, field)
    if "rate_per_s" in spec:
        # Said plainly, since the commands that vary an open-loop rate set this key.
        raise ConfigError(f"{field}.rate_per_s", spec["rate_per_s"],
                          "nothing here: a closed loop's arrival rate follows from its clients, "
                          "think time and engine (commands that vary the arrival rate need an "
                          "open-loop arrival process)")
    check_keys(spec, field, ["kind", "clients", "think_s"])
    clients = integer(require(spec, "clients", field), f"{field}.clients", low=1,
                      high=MAX_CLIENTS)
    think = make_think_time(spec.get("think_s", 0.0), f"{field}.think_s")
    return ClosedArrivals(clients, think)


# -- the loop a simulation runs ------------------------------------------------------------------


class _LengthDraws:
    """Class ids and lengths of request 0, 1, 2, ... in order, drawn a block at a time."""

    def __init__(self, workload: Workload, streams: Streams, field: str, value: Any) -> None:
        from servesim.workload.source import _Lengths  # the open loop's own draws

        self.trace = workload.trace
        self.lengths = None if self.trace is not None else _Lengths(workload, streams)
        self.field, self.value = field, value
        if self.trace is not None and field == "run.requests":
            self.trace._check_count(int(value), field, value)   # before the run, not during it
        self.start = 0          # id of the first request of the block held
        self.block: tuple[list[int], list[int], list[int]] = ([], [], [])

    def draw(self, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The next ``m`` requests' (class id, prompt, output), as arrays."""
        if self.lengths is not None:
            return self.lengths.draw(m)
        assert self.trace is not None
        prompt, output = self.trace.lengths_at(self.start, m, self.field, self.value)
        return np.zeros(m, np.int32), prompt, output

    def get(self, k: int) -> tuple[int, int, int]:
        """Request ``k``'s (class id, prompt, output); ``k`` only grows."""
        i = k - self.start
        if i >= len(self.block[0]):
            self.start += len(self.block[0])
            m = _BLOCK
            trace = self.trace
            if trace is not None and not trace.loop:
                # A finite trace: at most the rows left (a block past them would refuse
                # requests that are never sent).
                m = max(1, min(m, len(trace.rows) - self.start))
            class_id, prompt, output = self.draw(m)
            self.block = (class_id.tolist(), prompt.tolist(), output.tolist())
            i = k - self.start
        return self.block[0][i], self.block[1][i], self.block[2][i]


class _TimeDraws:
    """Think times 0, 1, 2, ... in order, drawn a block at a time from one stream."""

    def __init__(self, think: ThinkTime, rng: np.random.Generator) -> None:
        self.think, self.rng = think, rng
        self.buf: list[float] = []
        self.i = 0

    def next(self) -> float:
        if self.i >= len(self.buf):
            self.buf = self.think.sample(self.rng, _BLOCK).tolist()
            self.i = 0
        self.i += 1
        return self.buf[self.i - 1]


@dataclass(frozen=True, eq=False)
class ClosedLoop:
    """A scenario's closed loop: its clients, their think time and the workload whose classes
    (or trace) give the request lengths.

    Attributes:
        clients: the number of clients, each with at most one request in the system.
        think: the think-time distribution.
        workload: the workload the lengths come from.
    """

    clients: int
    think: ThinkTime
    workload: Workload

    def think_times_s(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` think times, seconds: the ones after requests 0..n-1 when ``rng`` is the
        "think_s" stream."""
        return np.asarray(self.think.sample(rng, int(n)), dtype=np.float64)

    def lengths(self, streams: Streams, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Prompt and output tokens of requests 0..n-1: the draws a simulation on ``streams``
        gives them.

        Raises ConfigError if a trace without ``loop`` has fewer than ``n`` rows.
        """
        draws = self.length_draws(streams, "run.requests", n)
        _, prompt, output = draws.draw(int(n)) if n else (None, np.empty(0, np.int64),
                                                           np.empty(0, np.int64))
        return np.asarray(prompt, np.int64), np.asarray(output, np.int64)

    @property
    def max_requests(self) -> int | None:
        """The most requests the lengths can supply: a trace without ``loop`` has its rows
        (a horizon run stops sending after the last, as an open-loop one does); else None."""
        trace = self.workload.trace
        return len(trace.rows) if trace is not None and not trace.loop else None

    def length_draws(self, streams: Streams, field: str, value: Any) -> _LengthDraws:
        """The per-request draws a simulation reads (``get(k)``); a finite trace running out
        raises ConfigError on ``field`` (the run length that asked for too many)."""
        return _LengthDraws(self.workload, streams, field, value)

    def think_draws(self, streams: Streams) -> _TimeDraws:
        """The think times a simulation reads, one ``next()`` per request sent."""
        return _TimeDraws(self.think, streams.get("think_s"))

    def describe(self) -> dict[str, Any]:
        return {"clients": self.clients, "think_s": self.think.describe()}


def closed_loop_of(scenario: Any) -> ClosedLoop | None:
    """The closed loop of ``scenario`` (a Scenario, or anything with a ``workload``), or None
    for an open-loop scenario."""
    workload = scenario.workload
    arrival = workload.arrival
    if not isinstance(arrival, ClosedArrivals):
        return None
    return ClosedLoop(arrival.clients, arrival.think, workload)
