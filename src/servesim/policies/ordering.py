"""Orderings: who runs next, as a rank function of a job's size, prediction, age and arrival.

Lower ranks run first. A rank is a pair (tier, value) compared lexicographically; the engine
breaks exact ties by arrival order. ``segment`` describes the rank as a function of the job's age
(attained service) on a piece where it is linear:

    Segment(tier, value, slope, until_age, preemptible)

means that for ages in [age, until_age) the rank is (tier, value + slope * (age' - age)) and that
a running job may (or may not) be preempted. So a rank change is an event the engine can compute
in advance (the end of a piece, or the age at which a rising rank crosses a waiting job's rank),
never work done per token or per time step. While a job waits its age, and so its rank, is frozen.

The same objects serve the M/G/1 simulator (``servesim.engine.mg1``) and, later, the LLM engine:
``victim`` chooses whom to preempt among several running jobs.

Inputs per job: ``size`` (true), ``pred`` (the predictor's current output: a refining predictor
updates it during service, and the rank reads it), ``age``, ``arrival``, and keywords ``bit``
(SkipPredict's cheap bit), ``first`` (service of the first iteration, for skip-join MLFQ),
``preemptions`` (times already preempted, for TRAIL's cap) and ``initial_pred`` (the prediction
the job arrived with, for TRAIL's preemption limit; None means ``pred``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from servesim.core.errors import ConfigError
from servesim.core.fields import check_keys, integer, number, require
from servesim.core.registry import lookup

INF = math.inf
# Tiers above every base ordering's tiers: server-time prediction work, then starving jobs.
PREDICTION_TIER = -2
BOOSTED_TIER = -1


class Segment(NamedTuple):
    """The rank on one linear piece of the age axis (see the module docstring)."""

    tier: int
    value: float
    slope: float = 0.0
    until_age: float = INF
    preemptible: bool = True

    def rank_after(self, served: float) -> tuple[int, float]:
        """The (tier, value) rank once the job has ``served`` more service on this piece."""
        return self.tier, self.value + self.slope * served


class Ordering:
    """Base class. Subclasses set ``name``, ``preemptive``, ``uses`` and implement ``segment``.

    ``uses`` is ``"none"``, ``"size"`` or ``"prediction"``: what the rank reads besides arrival.
    ``crossing_margin``: a running job whose rank rises is preempted only once it exceeds the best
    waiting rank by this much, which bounds the switching between jobs whose ranks rise together.
    """

    name = "base"
    preemptive = False
    uses = "none"
    needs_bit = False
    crossing_margin = 0.0

    def segment(self, size: float, pred: float, age: float, arrival: float, *, bit: float = 0.0,
                first: float = 0.0, preemptions: int = 0,
                initial_pred: float | None = None) -> Segment:
        raise NotImplementedError

    def rank(self, size: float, pred: float, age: float, arrival: float,
             **extra: Any) -> tuple[int, float]:
        """The (tier, value) rank at ``age``."""
        return self.segment(size, pred, age, arrival, **extra).rank_after(0.0)

    def needs_prediction(self, bit: float = 0.0) -> bool:
        """Whether a job with cheap bit ``bit`` gets (and pays for) a full prediction."""
        return self.uses == "prediction"

    def victim(self, sizes: Sequence[float], preds: Sequence[float], ages: Sequence[float],
               arrivals: Sequence[float], preemptions: Sequence[int] | None = None,
               bits: Sequence[float] | None = None,
               initial_preds: Sequence[float] | None = None) -> int:
        """Among running jobs, the preemptible one with the largest rank, or -1 if none is.

        Used by engines that run several jobs at once; the caller preempts it only if a waiting
        job ranks strictly lower. ``bits`` are the cheap bits of orderings that read one;
        ``initial_preds`` the predictions the jobs arrived with (default: ``preds``).
        """
        if not self.preemptive:
            return -1
        best, best_key = -1, None
        for i in range(len(sizes)):
            s = self.segment(sizes[i], preds[i], ages[i], arrivals[i],
                             bit=0.0 if bits is None else bits[i],
                             preemptions=0 if preemptions is None else preemptions[i],
                             initial_pred=None if initial_preds is None else initial_preds[i])
            key = (s.tier, s.value, arrivals[i])
            if s.preemptible and (best_key is None or key > best_key):
                best, best_key = i, key
        return best

    def describe(self) -> dict[str, Any]:
        return {"kind": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()!r})"


class FCFS(Ordering):
    """First come, first served: rank = arrival time."""

    name = "fcfs"

    def segment(self, size, pred, age, arrival, **_):
        return Segment(0, arrival)


class _Static(Ordering):
    """Rank = size or prediction, fixed for life; preempt-resume if ``preemptive``."""

    def segment(self, size, pred, age, arrival, **_):
        return Segment(0, size if self.uses == "size" else pred)


class SJF(_Static):
    name, uses = "sjf", "size"


class PSJF(_Static):
    name, uses, preemptive = "psjf", "size", True


class SPJF(_Static):
    name, uses = "spjf", "prediction"


class PSPJF(_Static):
    name, uses, preemptive = "pspjf", "prediction", True


class SRPT(Ordering):
    """Shortest remaining processing time: rank = size - age."""

    name, uses, preemptive = "srpt", "size", True

    def segment(self, size, pred, age, arrival, **_):
        return Segment(0, size - age, -1.0)


class SPRPT(Ordering):
    """Shortest predicted remaining processing time: rank = pred - age, which may go negative."""

    name, uses, preemptive = "sprpt", "prediction", True

    def segment(self, size, pred, age, arrival, **_):
        return Segment(0, pred - age, -1.0)


class SPRPTBounce(Ordering):
    """SPRPT with bounce: rank = pred - age until it reaches 0, then age - pred (= |pred - age|).

    An underestimated job stops looking ever more urgent once it outlives its prediction, which
    bounds the damage of estimates in [beta x, alpha x]. Two overdue jobs would otherwise swap at
    every instant; ``margin`` (in size units) is the crossing margin that spaces those swaps.
    """

    name, uses, preemptive = "sprpt_bounce", "prediction", True

    def __init__(self, margin: float = 0.01) -> None:
        self.crossing_margin = number(margin, "ordering.margin", low=0, low_open=True)

    def segment(self, size, pred, age, arrival, **_):
        if age < pred:
            return Segment(0, pred - age, -1.0, pred)
        return Segment(0, age - pred, 1.0)

    def describe(self):
        return {"kind": self.name, "margin": self.crossing_margin}


class OneBit(Ordering):
    """Two classes by one bit b = 1{pred > threshold}; short (b = 0) first, FCFS within a class.

    With the one_bit predictor, whose output is the bit itself, the default threshold 0.5 reads
    it; with a full prediction, ``threshold`` makes the bit.
    """

    name, uses = "one_bit", "prediction"

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = number(threshold, "ordering.threshold")

    def segment(self, size, pred, age, arrival, **_):
        return Segment(int(pred > self.threshold), arrival)

    def describe(self):
        return {"kind": self.name, "threshold": self.threshold}


class OneBitPreemptive(OneBit):
    """1-bit with preempt-resume: a short arrival preempts a long job in service."""

    name, preemptive = "one_bit_preemptive", True


class SkipPredict(Ordering):
    """SkipPredict: a cheap bit for everyone; predicted-short jobs (bit 0) run FCFS ahead of
    predicted-long ones, which alone get the expensive prediction and run by SPRPT. Preemptive.

    The cheap bit arrives as the ``bit`` keyword (1.0 = long); ``pred`` is the expensive
    prediction, read only for long jobs.
    """

    name, uses, preemptive, needs_bit = "skippredict", "prediction", True, True

    def needs_prediction(self, bit=0.0):
        return bit > 0.5

    def segment(self, size, pred, age, arrival, *, bit=0.0, **_):
        if bit > 0.5:
            return Segment(1, pred - age, -1.0)
        return Segment(0, arrival)


class LearningToRank(Ordering):
    """Learning to rank: order by a score that need only rank jobs well, not size them.

    Non-preemptive unless ``preemptive``; ``kendall_tau`` reports how well scores order sizes.
    """

    name, uses = "ltr", "prediction"

    def __init__(self, preemptive: bool = False) -> None:
        if not isinstance(preemptive, bool):
            raise ConfigError("ordering.preemptive", preemptive, "true or false")
        self.preemptive = preemptive

    def segment(self, size, pred, age, arrival, **_):
        return Segment(0, pred)

    def describe(self):
        return {"kind": self.name, "preemptive": self.preemptive}


class SkipJoinMLFQ(Ordering):
    """FastServe's skip-join multi-level feedback queue.

    Queue i grants a quantum ``quanta[i]`` of service (the last queue is unbounded). A job enters
    the highest queue whose quantum covers its first iteration (``first``), is demoted one queue
    each time it uses up its quantum, and queues are served in order, preemptively. Within a queue
    jobs run in arrival order (FastServe re-queues at the tail; arrival order keeps the rank a
    function of age alone, so SOAP analysis applies).
    """

    name, preemptive = "mlfq", True

    def __init__(self, quanta: Sequence[float] = (1.0, 2.0, 4.0, 8.0)) -> None:
        if not isinstance(quanta, list | tuple) or not quanta:
            raise ConfigError("ordering.quanta", quanta, "a non-empty list of quanta")
        self.quanta = tuple(number(q, "ordering.quanta", low=0, low_open=True) for q in quanta)
        self.bounds = np.cumsum(self.quanta)

    def entry(self, first: float) -> int:
        """The highest queue whose quantum covers ``first`` (the last queue if none does)."""
        for i, q in enumerate(self.quanta):
            if q >= first:
                return i
        return len(self.quanta)

    def segment(self, size, pred, age, arrival, *, first=0.0, **_):
        level = self.entry(first)
        done = 0.0
        while level < len(self.quanta):
            done += self.quanta[level]
            if age < done:
                return Segment(level, arrival, 0.0, done)
            level += 1
        return Segment(level, arrival)

    def describe(self):
        return {"kind": self.name, "quanta": list(self.quanta)}


class Trail(Ordering):
    """TRAIL: SPRPT with limited preemption.

    Rank = pred - age, where ``pred`` is the current (possibly refined) prediction. The limit is
    on the *initial* prediction y0 (``initial_pred``, default ``pred``), whatever refinement says
    later: a job is preemptible iff c > 0 and age <= c * y0, and it has been preempted fewer than
    ``max_preemptions`` times; after that it runs to completion. The bound is inclusive, as
    TRAIL's "generated tokens <= c x initial prediction", and c = 0 never preempts (SJF on
    predictions). In continuous time (M/G/1, the closed form's a < c x) one age has no mass,
    so the three agree. c = 1 with exact predictions is SRPT. ``victim`` picks, among
    preemptible running jobs, the one with the largest predicted remaining.
    """

    name, uses, preemptive = "trail", "prediction", True

    def __init__(self, c: float = 0.8, max_preemptions: int | None = None) -> None:
        self.c = number(c, "ordering.c", low=0)
        self.max_preemptions = (None if max_preemptions is None
                                else integer(max_preemptions, "ordering.max_preemptions", low=0))

    def segment(self, size, pred, age, arrival, *, preemptions=0, initial_pred=None, **_):
        limit = self.c * (pred if initial_pred is None else initial_pred)
        capped = self.max_preemptions is not None and preemptions >= self.max_preemptions
        if self.c > 0 and age <= limit and not capped:
            # Pieces are half-open, [age, until_age): ending one float past the limit keeps an
            # age exactly at it preemptible, in the token engine's integer ages too.
            return Segment(0, pred - age, -1.0, math.nextafter(limit, INF))
        return Segment(0, pred - age, -1.0, INF, False)

    def describe(self):
        return {"kind": self.name, "c": self.c, "max_preemptions": self.max_preemptions}


class Aging(Ordering):
    """Starvation guard around any ordering: a job that has waited ``wait_s`` in total (time in
    system minus attained service) is boosted above every unboosted job, boosted jobs run in
    arrival order, and a boosted job in service is not preempted.

    The boost time of a waiting job, arrival + attained + wait_s, is fixed while it waits, so the
    engine schedules it as an event.
    """

    name = "aging"

    def __init__(self, base: Ordering, wait_s: float) -> None:
        if isinstance(base, Aging):
            raise ConfigError("ordering.base", base.name, "an ordering other than aging")
        self.base = base
        self.wait_s = number(wait_s, "ordering.wait_s", low=0)
        self.preemptive, self.uses, self.needs_bit = base.preemptive, base.uses, base.needs_bit
        self.crossing_margin = base.crossing_margin

    def segment(self, size, pred, age, arrival, **extra):
        return self.base.segment(size, pred, age, arrival, **extra)

    def needs_prediction(self, bit=0.0):
        return self.base.needs_prediction(bit)

    def boosted_segment(self, arrival: float) -> Segment:
        return Segment(BOOSTED_TIER, arrival, 0.0, INF, False)

    def describe(self):
        return {"kind": self.name, "base": self.base.describe(), "wait_s": self.wait_s}


ORDERINGS: dict[str, tuple[type[Ordering], tuple[str, ...]]] = {
    "fcfs": (FCFS, ()),
    "sjf": (SJF, ()),
    "psjf": (PSJF, ()),
    "srpt": (SRPT, ()),
    "spjf": (SPJF, ()),
    "pspjf": (PSPJF, ()),
    "sprpt": (SPRPT, ()),
    "sprpt_bounce": (SPRPTBounce, ("margin",)),
    "one_bit": (OneBit, ("threshold",)),
    "one_bit_preemptive": (OneBitPreemptive, ("threshold",)),
    "skippredict": (SkipPredict, ()),
    "ltr": (LearningToRank, ("preemptive",)),
    "mlfq": (SkipJoinMLFQ, ("quanta",)),
    "trail": (Trail, ("c", "max_preemptions")),
    "aging": (Aging, ("base", "wait_s")),
}


def make_ordering(spec: str | Mapping[str, Any], field: str = "policy.order") -> Ordering:
    """Build an ordering from a name (``"srpt"``) or a table (``{kind = "trail", c = 0.5}``);
    ``{kind = "aging", base = ..., wait_s = W}`` wraps any other.

    Raises ConfigError naming the field if the kind is unknown (suggesting the closest), a key is
    unknown, or a parameter is out of range.
    """
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError(field, spec, "an ordering name or a table such as { kind = ... }")
    cls, keys = lookup(ORDERINGS, require(spec, "kind", field), f"{field}.kind")
    check_keys(spec, field, ["kind", *keys])
    kwargs = {k: spec[k] for k in keys if k in spec}
    if cls is Aging:
        kwargs["base"] = make_ordering(require(spec, "base", field), f"{field}.base")
        kwargs["wait_s"] = require(spec, "wait_s", field)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if not err.field.startswith("ordering."):
            raise
        hint = None if err.suggestion is None else [err.suggestion]
        raise ConfigError(f"{field}.{err.field.split('.', 1)[1]}", err.value, err.expected,
                          choices=hint) from None


def kendall_tau(true_sizes: Any, scores: Any) -> float:
    """Kendall's tau-b between true sizes and scores (1 = the scores order jobs perfectly)."""
    from scipy.stats import kendalltau

    return float(kendalltau(np.asarray(true_sizes), np.asarray(scores)).statistic)
