"""A cost model that interrupts a run part-way, shared by the interruption tests."""

from __future__ import annotations

import signal

from servesim.engine.stop import StopFlag


class StopAfter:
    """A cost model that asks for a stop (or raises KeyboardInterrupt) at its ``k``-th call,
    the way a signal handler would in the middle of a run."""

    def __init__(self, inner, k: int, flag: StopFlag | None = None) -> None:
        self.inner, self.k, self.flag, self.calls = inner, k, flag, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def iteration_s(self, *args):
        self.calls += 1
        if self.calls == self.k:
            if self.flag is None:
                raise KeyboardInterrupt
            self.flag.signum = signal.SIGTERM
        return self.inner.iteration_s(*args)
