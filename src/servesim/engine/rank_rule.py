"""The rank piece of a request in an LLM engine, shared by both ordered engines.

An ordering (``servesim.policies.ordering``) gives a rank piece from size, prediction and age;
the engine adds what it alone knows: the aging boost and the stepper-level cap on priority
preemptions. It hands the ordering the initial prediction as well as the current one, since
TRAIL bounds preemption by the initial one (refinement changes the rank, never the bound).
Age is generated tokens.
"""

from __future__ import annotations

import math

from servesim.policies.ordering import Aging, Ordering, Segment

INF = math.inf


class RankRule:
    """The rank pieces of one run: ``ordering`` with the cap ``max_preemptions`` (None: the
    ordering's own; the smaller of the two when both are set)."""

    def __init__(self, ordering: Ordering, max_preemptions: int | None = None) -> None:
        self.order = ordering
        self.aging = ordering if isinstance(ordering, Aging) else None
        self.base = ordering.base if isinstance(ordering, Aging) else ordering
        caps = [m for m in (max_preemptions, getattr(self.base, "max_preemptions", None))
                if m is not None]
        self.cap = min(caps) if caps else None

    def segment(self, *, boosted: bool, output: int, pred: float, pred0: float, generated: int,
                arrival: float, bit: float, preemptions: int) -> Segment:
        """The rank piece at ``generated`` tokens; ``pred`` is the current prediction and
        ``pred0`` the initial one."""
        if boosted:
            return self.aging.boosted_segment(arrival)
        s = self.base.segment(float(output), pred, float(generated), arrival, bit=bit,
                              preemptions=preemptions, initial_pred=pred0)
        if s.preemptible and self.cap is not None and preemptions >= self.cap:
            return Segment(s.tier, s.value, s.slope, s.until_age, False)
        return s
