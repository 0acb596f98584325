"""Requests drawn a chunk at a time, so that a run holds what has arrived, not its whole horizon.

A ``RequestSource`` hands out consecutive ``Requests`` chunks (ids continue from one chunk to the
next, arrival times never go back). The engines pull the next chunk only when their arrival loop
has reached the end of what they hold, so in horizon mode a run stopped by ``run.max_in_system``
draws a few thousand requests, not rate x horizon of them.

Chunking never changes what is drawn. Every stream (arrivals, classes, each class's prompt and
output lengths) is created once per source and drawn in request order, and numpy's generators
give the same values whether drawn in one call or in chunks for every distribution the
workloads use (exponential, gamma, uniform, integers, geometric, Poisson, lognormal, choice with
weights); arrival times continue the previous chunk's running sum (``arrivals.chunks``).
``Workload.generate`` is the source drained into one ``Requests``.

Drawn whole, because they are bounded by a file or a list: explicit arrival lists and
non-looping traces (a lengths-only trace that would run out of rows fails before the run, as it
always did). A looping trace is chunked one repetition at a time.

Sizes. A run keeps one record per arrived request, so ``check_run_size`` refuses, before
anything runs, a request count or an expected arrival count (rate x horizon, when no
``run.max_in_system`` bounds the run) beyond ``max_requests()``: the records this machine's
memory can hold at ``RECORD_BYTES`` each, and never more than ``MAX_REQUESTS``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from servesim.core.errors import ConfigError
from servesim.core.rng import Streams
from servesim.workload.arrivals import Explicit, check_amount, cut_chunks
from servesim.workload.requests import Requests

if TYPE_CHECKING:
    from servesim.workload.build import Workload

__all__ = ["CHUNK_REQUESTS", "MAX_REQUESTS", "RECORD_BYTES", "RequestSource", "as_source",
           "check_arrival_count", "check_run_size", "max_requests", "workload_source"]

CHUNK_REQUESTS = 2**14
"""Requests per chunk a run pulls: large enough that a chunk costs nothing per request, small
enough that the requests drawn ahead of the clock are a few hundred kilobytes."""

RECORD_BYTES = 1024
"""Memory one request costs a run, bytes, with a margin: its engine state while in the system,
its row in the request table (18 columns) and the copies made when the table is summarised and
written (``servesim run`` peaks about 450 bytes higher per request, measured from 0.2 to 2
million requests)."""

MAX_REQUESTS = 2**31
"""Requests a run may draw on any machine (a request id is an int64, but the tables beyond this
are not a simulation anyone can read)."""

_FALLBACK_MEMORY_BYTES = 16 * 2**30


def _memory_bytes() -> int:
    """Physical memory of this machine, bytes (16 GiB where the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return _FALLBACK_MEMORY_BYTES


def max_requests() -> int:
    """The most requests a run on this machine can keep records for."""
    return min(MAX_REQUESTS, _memory_bytes() // RECORD_BYTES)


def _limit_text(limit: int) -> str:
    memory = _memory_bytes()
    size = f"{memory / 2**30:.0f} GiB" if memory >= 2**30 else f"{memory / 2**20:.0f} MiB"
    return (f"{limit:,} requests, the records this machine's {size} of memory hold at about "
            f"{RECORD_BYTES} bytes each")


def check_arrival_count(rate_per_s: float, horizon_s: float, max_in_system: int | None,
                        field: str = "run.horizon_s") -> None:
    """Raise ConfigError on ``field`` if about ``rate_per_s * horizon_s`` arrivals exceed
    ``max_requests()`` and no ``max_in_system`` bounds the run (NaN rates are not checked)."""
    if max_in_system is not None or not math.isfinite(rate_per_s):
        return
    limit = max_requests()
    expected = rate_per_s * horizon_s
    if expected > limit:
        raise ConfigError(field, horizon_s,
                          f"a horizon of at most {limit / rate_per_s:.4g} s: at {rate_per_s:g} "
                          f"arrivals per second it would draw about {expected:.3g}, beyond "
                          f"{_limit_text(limit)} (shorten it, or set run.max_in_system so the "
                          "run is bounded by what is in the system)")


def check_run_size(run: Any, workload: Workload) -> None:
    """Refuse a run whose records cannot fit in memory: ``run.requests`` above
    ``max_requests()``, or, in horizon mode without ``run.max_in_system``, an expected
    arrival count (rate x horizon) above it. Explicit lists and non-looping traces are bounded
    by their rows and are not checked in horizon mode.

    Raises ConfigError on ``run.requests`` or ``run.horizon_s``.
    """
    limit = max_requests()
    if run.requests is not None:
        if run.requests > limit:
            raise ConfigError("run.requests", run.requests, f"at most {_limit_text(limit)} "
                              "(for longer runs use run.horizon_s with run.max_in_system)")
        return
    trace = workload.trace
    bounded = isinstance(workload.arrival, Explicit) and (trace is None or not trace.loop)
    if not bounded:
        check_arrival_count(float(workload.arrival.rate_per_s), run.horizon_s,
                            run.max_in_system)


# -- the source ----------------------------------------------------------------------------------


def _concat(parts: list[Requests], class_names: tuple[str, ...]) -> Requests:
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return Requests.from_lists([], [], [], class_names=class_names)
    return Requests(arrival_s=np.concatenate([p.arrival_s for p in parts]),
                    prompt_tokens=np.concatenate([p.prompt_tokens for p in parts]),
                    output_tokens=np.concatenate([p.output_tokens for p in parts]),
                    class_id=np.concatenate([p.class_id for p in parts]),
                    class_names=class_names)


class RequestSource:
    """Consecutive chunks of a run's requests, drawn when asked for.

    Attributes:
        class_names: the names of the request classes, as in every chunk.
        total: the number of requests when known before drawing (request-count mode), else None.
        drawn: requests handed out so far.
    """

    def __init__(self, chunks: Iterable[Requests], class_names: tuple[str, ...],
                 total: int | None = None) -> None:
        self._chunks: Iterator[Requests] = iter(chunks)
        self.class_names = class_names
        self.total = total
        self.drawn = 0
        self._done = False

    @classmethod
    def whole(cls, requests: Requests) -> RequestSource:
        """A source of one chunk: requests already drawn."""
        return cls([requests], requests.class_names, len(requests))

    def next(self) -> Requests | None:
        """The next non-empty chunk, or None once every request has been drawn."""
        if self._done:
            return None
        for chunk in self._chunks:
            if len(chunk):
                self.drawn += len(chunk)
                return chunk
        self._done = True
        return None

    def rest(self) -> Requests:
        """Every request not yet handed out, drawn now, in one ``Requests``."""
        parts = []
        while (chunk := self.next()) is not None:
            parts.append(chunk)
        return _concat(parts, self.class_names)


def as_source(requests: Requests | RequestSource) -> RequestSource:
    """``requests`` itself if it is a source, else a source of that one chunk."""
    return requests if isinstance(requests, RequestSource) else RequestSource.whole(requests)


# -- drawing a workload's requests ----------------------------------------------------------------


class _Lengths:
    """Class ids and lengths of consecutive requests, each stream created once and drawn in
    request order (a class's lengths from its own streams, vectorised per chunk)."""

    def __init__(self, workload: Workload, streams: Streams) -> None:
        self.classes = workload.classes
        self.weights = workload.weights
        self.class_rng = streams.get("classes") if len(self.classes) > 1 else None
        self.rngs = [(streams.get(f"prompt_tokens/{c.name}"),
                      streams.get(f"output_tokens/{c.name}")) for c in self.classes]

    def draw(self, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.class_rng is None:
            class_id = np.zeros(m, np.int32)
        else:
            class_id = self.class_rng.choice(len(self.classes), size=m,
                                             p=self.weights).astype(np.int32)
        prompt = np.empty(m, np.int64)
        output = np.empty(m, np.int64)
        for c, (cls, (p_rng, o_rng)) in enumerate(zip(self.classes, self.rngs, strict=True)):
            idx = np.flatnonzero(class_id == c)
            prompt[idx] = cls.prompt.sample(p_rng, len(idx))
            output[idx] = cls.output.sample(o_rng, len(idx))
        return class_id, prompt, output


def _arrival_chunks(workload: Workload, streams: Streams, n: int | None,
                    horizon_s: float | None, size: int) -> Iterator[np.ndarray]:
    """Sorted arrays of arrival times, cut at the ``n``-th arrival or at ``horizon_s``."""
    trace = workload.trace
    if trace is not None and trace.use_times:
        if not trace.loop:
            yield trace.times(n, horizon_s)   # bounded by the file; checks the row count
            return
        chunks: Iterable[np.ndarray] = trace.time_chunks()
    else:
        process = workload.arrival
        chunker = getattr(process, "chunks", None)
        rng = streams.get("arrivals")
        if chunker is None or isinstance(process, Explicit):
            # Bounded by the list (or a process that cannot chunk): drawn whole.
            yield process.sample(rng, n=n, horizon_s=horizon_s)
            return
        chunks = chunker(rng, size if n is None else min(size, max(n, 1)))
    yield from cut_chunks(chunks, n, horizon_s)


def _chunks(workload: Workload, streams: Streams, n: int | None, horizon_s: float | None,
            size: int) -> Iterator[Requests]:
    trace = workload.trace
    lengths = None if trace is not None else _Lengths(workload, streams)
    field, value = ("run.requests", n) if n is not None else ("run.horizon_s", horizon_s)
    start = 0
    for times in _arrival_chunks(workload, streams, n, horizon_s, size):
        for lo in range(0, len(times), size):
            part = np.asarray(times[lo:lo + size], np.float64)
            m = len(part)
            if lengths is None:
                assert trace is not None
                prompt, output = trace.lengths_at(start, m, field, value)
                class_id = np.zeros(m, np.int32)
            else:
                class_id, prompt, output = lengths.draw(m)
            start += m
            yield Requests(arrival_s=part, prompt_tokens=np.asarray(prompt, np.int64),
                           output_tokens=np.asarray(output, np.int64), class_id=class_id,
                           class_names=workload.class_names)


def workload_source(workload: Workload, streams: Streams, n_requests: int | None = None,
                    horizon_s: float | None = None,
                    chunk_requests: int = CHUNK_REQUESTS) -> RequestSource:
    """The requests of ``workload``: the first ``n_requests`` or every arrival before
    ``horizon_s``, in chunks of at most ``chunk_requests`` drawn on demand (see the module
    docstring for what is drawn whole).

    Raises ConfigError unless exactly one amount is given or if ``chunk_requests`` < 1; a
    non-looping trace with fewer rows than the requests asked for raises here, before any run.
    """
    n, horizon = check_amount(n_requests, horizon_s)
    if isinstance(chunk_requests, bool) or not isinstance(chunk_requests, int) \
            or chunk_requests < 1:
        raise ConfigError("chunk_requests", chunk_requests, "an integer >= 1")
    source = RequestSource(_chunks(workload, streams, n, horizon, chunk_requests),
                           workload.class_names, n)
    trace = workload.trace
    if trace is not None and not trace.loop:
        # Bounded by the file's rows: drawn now, so running out of rows fails before the run.
        return RequestSource.whole(source.rest())
    return source
