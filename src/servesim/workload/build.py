"""The ``[workload]`` table: validate it once, then generate ``Requests`` from named streams.

Three shapes, mutually exclusive for the lengths:

- ``prompt_tokens`` + ``output_tokens``: one class, named "default";
- ``[[workload.classes]]``: a weighted mixture, each class with its own two distributions;
- ``trace``: lengths (and, for formats with times, arrivals) from a file, used in file order.

``arrival`` is required unless a trace with times supplies them; with such a trace it overrides
the trace's times. ``arrival = { kind = "closed", clients = N, think_s = ... }`` is a closed
loop (``servesim.workload.closed``): its arrivals are simulated with the engine, and the lengths
come from the classes or trace as usual. A trace is read when the workload is built, so a bad
row is reported before a run starts, never half-way through.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from servesim.core.errors import ConfigError
from servesim.core.fields import MAX_TIME_S, check_keys, number, rate_per_s, require, table
from servesim.core.registry import lookup
from servesim.core.rng import Streams
from servesim.workload.arrivals import WORKLOAD_ARRIVALS, ArrivalProcess, Explicit, make_arrivals
from servesim.workload.distributions import Empirical, TokenDist, make_token_dist, resolve_path
from servesim.workload.requests import Requests
from servesim.workload.source import CHUNK_REQUESTS, RequestSource, workload_source
from servesim.workload.traces import TRACE_READERS, ZERO_TOKEN_POLICIES, TraceRows

WORKLOAD_KEYS = ("arrival", "prompt_tokens", "output_tokens", "classes", "trace")
TRACE_KEYS = ("format", "path", "time_scale", "rate_per_s", "columns", "loop", "zero_tokens")


@dataclass(frozen=True)
class WorkloadClass:
    """One request class: a name, a normalised weight and its two length distributions."""

    name: str
    weight: float
    prompt: TokenDist
    output: TokenDist


@dataclass(frozen=True, eq=False)
class TraceSource:
    """A trace loaded for a workload.

    Attributes:
        format: reader name (azure, mooncake, lengths_csv, csv).
        path: the resolved file path.
        rows: the rows, times already multiplied by ``time_factor``.
        time_factor: factor applied to the file's times (from time_scale or rate_per_s), 1.0 if
            neither was given.
        loop: repeat the trace when more requests are asked for than it has rows.
        use_times: whether the trace's times drive arrivals (False for lengths-only traces and
            when ``workload.arrival`` overrides them).
    """

    format: str
    path: Path
    rows: TraceRows
    time_factor: float
    loop: bool
    use_times: bool

    @property
    def period_s(self) -> float:
        """Shift between loop repetitions: the span plus one mean gap, so the rate is unchanged."""
        times = self.rows.arrival_s
        assert times is not None and len(times) >= 2
        span = float(times[-1] - times[0])
        return span + span / (len(times) - 1)

    def times(self, n: int | None, horizon_s: float | None) -> np.ndarray:
        """Arrival times for the first ``n`` requests or up to ``horizon_s``, looping if allowed.

        Raises ConfigError on ``run.requests`` if ``n`` exceeds the rows and ``loop`` is off.
        """
        base = self.rows.arrival_s
        assert base is not None
        if n is not None:
            self._check_count(n, "run.requests", n)
            reps = max(1, math.ceil(n / len(base)))
        elif self.loop:
            reps = math.floor(horizon_s / self.period_s) + 1  # type: ignore[operator]
        else:
            reps = 1
        shifts = self.period_s * np.arange(reps) if reps > 1 else np.zeros(1)
        times = (shifts[:, None] + base[None, :]).ravel()
        return times[:n] if n is not None else times[times < horizon_s]

    def time_chunks(self) -> Iterator[np.ndarray]:
        """The trace's times, then with ``loop`` each repetition shifted by ``period_s`` (the
        same floats as ``times``), one chunk per repetition."""
        base = self.rows.arrival_s
        assert base is not None
        k = 0
        while True:
            yield base if k == 0 else self.period_s * k + base
            k += 1
            if not self.loop:
                return

    def lengths(self, m: int, field: str, value: Any) -> tuple[np.ndarray, np.ndarray]:
        """Prompt and output lengths of the first ``m`` requests, in file order.

        Raises ConfigError on ``field`` if ``m`` exceeds the rows and ``loop`` is off.
        """
        return self.lengths_at(0, m, field, value)

    def lengths_at(self, start: int, m: int, field: str,
                   value: Any) -> tuple[np.ndarray, np.ndarray]:
        """Prompt and output lengths of requests ``start`` .. ``start + m - 1``, in file order
        (repeating the rows with ``loop``).

        Raises ConfigError on ``field`` if ``start + m`` exceeds the rows and ``loop`` is off.
        """
        self._check_count(start + m, field, value)
        rows = np.arange(start, start + m, dtype=np.int64) % len(self.rows)
        return self.rows.prompt_tokens[rows], self.rows.output_tokens[rows]

    def _check_count(self, m: int, field: str, value: Any) -> None:
        rows = len(self.rows)
        if m > rows and not self.loop:
            raise ConfigError(field, value, f"at most {rows} requests: the trace {self.path} has "
                                            f"{rows} rows and loop = false (set loop = true to "
                                            "repeat it)")

    def describe(self) -> dict[str, Any]:
        return {"format": self.format, "path": str(self.path), "rows": len(self.rows),
                "rows_dropped": self.rows.n_dropped, "time_factor": self.time_factor,
                "loop": self.loop, "use_times": self.use_times}


@dataclass(frozen=True, eq=False)
class Workload:
    """A validated workload: arrival process, request classes, optional trace.

    ``arrival`` and ``classes`` are the objects ``theory/`` reads; for a trace whose times drive
    arrivals, ``arrival`` is the ``Explicit`` list of those times and the single class carries
    ``Empirical`` distributions of the trace's lengths (the marginals; generation still uses the
    rows in file order).
    """

    arrival: ArrivalProcess
    classes: tuple[WorkloadClass, ...]
    trace: TraceSource | None = None

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    @property
    def weights(self) -> np.ndarray:
        """Class probabilities, summing to 1."""
        return np.array([c.weight for c in self.classes])

    def generate(self, streams: Streams, n_requests: int | None = None,
                 horizon_s: float | None = None) -> Requests:
        """Draw the requests: the first ``n_requests``, or every arrival before ``horizon_s``.

        Streams used: "arrivals", "classes", "prompt_tokens/<class>", "output_tokens/<class>".
        The same requests as ``source`` hands out chunk by chunk.

        Raises ConfigError unless exactly one of ``n_requests`` / ``horizon_s`` is given, or if a
        trace without ``loop`` has fewer rows than the requests asked for.
        """
        return self.source(streams, n_requests, horizon_s).rest()

    def source(self, streams: Streams, n_requests: int | None = None,
               horizon_s: float | None = None,
               chunk_requests: int = CHUNK_REQUESTS) -> RequestSource:
        """The requests of ``generate``, drawn ``chunk_requests`` at a time as a run reaches
        them (``servesim.workload.source``).

        Raises ConfigError as ``generate`` does, or if ``chunk_requests`` < 1.
        """
        return workload_source(self, streams, n_requests, horizon_s, chunk_requests)

    def describe(self) -> dict[str, Any]:
        """A plain dict of everything that defines this workload."""
        out: dict[str, Any] = {}
        if self.trace is not None and self.trace.use_times:
            out["arrival"] = {"kind": "trace", "rate_per_s": self.arrival.rate_per_s}
        else:
            out["arrival"] = self.arrival.describe()
        out["classes"] = [{"name": c.name, "weight": c.weight,
                           "prompt_tokens": c.prompt.describe(),
                           "output_tokens": c.output.describe()} for c in self.classes]
        if self.trace is not None:
            out["trace"] = self.trace.describe()
        return out


# -- building from the [workload] table ----------------------------------------------------------


def build_workload(spec: Mapping[str, Any], field: str = "workload",
                   base_dir: Path | None = None) -> Workload:
    """Validate a ``[workload]`` table and build the Workload it describes.

    Relative trace and empirical paths resolve against ``base_dir`` (the scenario file's folder).

    Raises ConfigError naming the full field for any unknown, missing, conflicting or out-of-range
    value; TraceError if a trace file has a malformed row.
    """
    spec = table(spec, field)
    check_keys(spec, field, WORKLOAD_KEYS)
    trace = None
    if "trace" in spec:
        _forbid(spec, field, ["prompt_tokens", "output_tokens", "classes"], "a trace gives lengths")
        trace = _trace(spec["trace"], f"{field}.trace", base_dir, overridden="arrival" in spec)
        classes = (_trace_class(trace),)
    elif "classes" in spec:
        _forbid(spec, field, ["prompt_tokens", "output_tokens"], "classes give lengths")
        classes = _classes(spec["classes"], f"{field}.classes", base_dir)
    else:
        classes = (WorkloadClass(
            "default", 1.0,
            make_token_dist(require(spec, "prompt_tokens", field), f"{field}.prompt_tokens",
                            base_dir),
            make_token_dist(require(spec, "output_tokens", field), f"{field}.output_tokens",
                            base_dir)),)
    return Workload(_arrival(spec, field, trace), classes, trace)


def _forbid(spec: Mapping[str, Any], field: str, keys: Sequence[str], because: str) -> None:
    for key in keys:
        if key in spec:
            raise ConfigError(f"{field}.{key}", spec[key], f"nothing here: {because}")


def _arrival(spec: Mapping[str, Any], field: str, trace: TraceSource | None) -> ArrivalProcess:
    if "arrival" in spec:
        return make_arrivals(spec["arrival"], f"{field}.arrival", WORKLOAD_ARRIVALS)
    if trace is not None and trace.use_times:
        assert trace.rows.arrival_s is not None
        return Explicit(tuple(trace.rows.arrival_s.tolist()))
    reason = "" if trace is None else f"; trace format {trace.format!r} has no arrival times"
    raise ConfigError(f"{field}.arrival", None, "an arrival process such as "
                      f'{{ kind = "poisson", rate_per_s = 10 }}{reason}')


def _classes(value: Any, field: str, base_dir: Path | None) -> tuple[WorkloadClass, ...]:
    """Build the mixture; weights are normalised to sum to 1."""
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(field, value, "a non-empty array of tables [[workload.classes]]")
    built, names = [], set()
    for i, item in enumerate(value):
        f = f"{field}[{i}]"
        item = table(item, f)
        check_keys(item, f, ["name", "weight", "prompt_tokens", "output_tokens"])
        name = require(item, "name", f)
        if not isinstance(name, str) or not name or name in names:
            raise ConfigError(f"{f}.name", name, "a non-empty name not used by another class")
        names.add(name)
        weight = number(require(item, "weight", f), f"{f}.weight", low=0, low_open=True)
        prompt = make_token_dist(require(item, "prompt_tokens", f), f"{f}.prompt_tokens", base_dir)
        output = make_token_dist(require(item, "output_tokens", f), f"{f}.output_tokens", base_dir)
        built.append(WorkloadClass(name, weight, prompt, output))
    total = math.fsum(c.weight for c in built)
    return tuple(WorkloadClass(c.name, c.weight / total, c.prompt, c.output) for c in built)


def _trace(value: Any, field: str, base_dir: Path | None, *, overridden: bool) -> TraceSource:
    """Read and validate ``workload.trace``."""
    spec = table(value, field)
    check_keys(spec, field, TRACE_KEYS)
    fmt = require(spec, "format", field)
    reader = lookup(TRACE_READERS, fmt, f"{field}.format")
    path_value = require(spec, "path", field)
    if not isinstance(path_value, str):
        raise ConfigError(f"{field}.path", path_value, "a file path (string)")
    path = resolve_path(path_value, base_dir, f"{field}.path")
    zero = spec.get("zero_tokens", "error")
    lookup(dict.fromkeys(ZERO_TOKEN_POLICIES), zero, f"{field}.zero_tokens")
    loop = spec.get("loop", False)
    if not isinstance(loop, bool):
        raise ConfigError(f"{field}.loop", loop, "true or false")
    if fmt == "csv":
        rows = reader(path, require(spec, "columns", field), zero_tokens=zero, field=field)
    else:
        _forbid(spec, field, ["columns"], f"format {fmt!r} has fixed columns (only csv maps them)")
        rows = reader(path, zero_tokens=zero, field=field)
    if len(rows) == 0:
        raise ConfigError(f"{field}.path", path_value, "a trace with at least one row")
    use_times = rows.arrival_s is not None and not overridden
    factor = _time_factor(spec, field, rows, use_times, overridden)
    if use_times and factor != 1.0:
        rows = TraceRows(rows.arrival_s * factor, rows.prompt_tokens, rows.output_tokens,
                         rows.n_dropped)
    source = TraceSource(fmt, path, rows, factor, loop, use_times)
    if loop and use_times and not _has_span(rows):
        raise ConfigError(f"{field}.loop", True, "false: looping needs two distinct times")
    return source


def _has_span(rows: TraceRows) -> bool:
    times = rows.arrival_s
    return times is not None and len(times) >= 2 and float(times[-1] - times[0]) > 0


def _time_factor(spec: Mapping[str, Any], field: str, rows: TraceRows, use_times: bool,
                 overridden: bool) -> float:
    """The factor applied to trace times: from ``time_scale``, from ``rate_per_s``, or 1."""
    given = [key for key in ("time_scale", "rate_per_s") if key in spec]
    if not given:
        return 1.0
    key = given[0]
    if len(given) == 2:
        raise ConfigError(f"{field}.rate_per_s", spec["rate_per_s"],
                          "nothing here: give time_scale or rate_per_s, not both")
    if not use_times:
        why = "workload.arrival overrides the trace's times" if overridden else \
            "this trace has no arrival times"
        raise ConfigError(f"{field}.{key}", spec[key], f"nothing here: {why}")
    times = rows.arrival_s
    assert times is not None
    if key == "time_scale":
        factor = number(spec[key], f"{field}.{key}", low=0, low_open=True)
    else:
        value = rate_per_s(spec[key], f"{field}.{key}")
        if not _has_span(rows):
            raise ConfigError(f"{field}.rate_per_s", value,
                              "nothing here: the trace's times span 0 s")
        factor = (len(times) - 1) / float(times[-1] - times[0]) / value
    span_s = float(times[-1] - times[0]) * factor
    if span_s > MAX_TIME_S or (span_s == 0 and _has_span(rows)):
        raise ConfigError(f"{field}.{key}", spec[key], f"a factor that keeps the trace's span "
                          f"({float(times[-1] - times[0]):g} s) positive and within "
                          f"{MAX_TIME_S:g} s once rescaled, where float64 times keep their "
                          "meaning")
    return factor


def _trace_class(trace: TraceSource) -> WorkloadClass:
    """The single class of a trace: Empirical marginals of its lengths, for theory."""
    def dist(values: np.ndarray, role: str) -> Empirical:
        return Empirical(tuple(values.tolist()), source={"trace": str(trace.path), "role": role})

    return WorkloadClass("default", 1.0, dist(trace.rows.prompt_tokens, "prompt_tokens"),
                         dist(trace.rows.output_tokens, "output_tokens"))
