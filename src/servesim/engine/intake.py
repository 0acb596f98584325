"""What both steppers do alike around their loop: take requests from a source as the clock
reaches them, and stop at an iteration boundary when asked (``stop.py``).

A stepper holds the requests it has pulled so far; ``_pull`` adds the next chunk (the stepper's
``_extend`` grows its per-request state by it), and the loop pulls only once it has let in
every request it holds. So per-request state grows with what has arrived, plus at most one
chunk drawn ahead, not with the horizon. Requests never let in before the run stopped are not
in the records.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable

from servesim.core.errors import SimulationError
from servesim.engine.state import EngineRun
from servesim.engine.stop import Interrupted, StopFlag
from servesim.workload.requests import Requests
from servesim.workload.source import RequestSource, as_source


class Intake:
    """A mixin: ``source``, the pulled count ``n``, their class ids, and the guarded ``run``.

    The stepper supplies ``_extend(chunk)``, ``_loop(until_s, progress, max_in_system, flag)``
    returning ``(end time, stop reason)`` and keeping ``now`` at each iteration boundary, and
    ``_result(t, reason)``.
    """

    def _setup_intake(self, requests: Requests | RequestSource) -> None:
        self.source = as_source(requests)
        self.class_names = self.source.class_names
        self.class_ids = array("i")
        self.n = 0
        self.now = 0.0
        self._last_arrival = float("-inf")
        self.unarrived = False   # at the stop, some requests of the workload had not arrived

    def _draw_whole(self) -> Requests:
        """Draw every request now (a policy or predictor that needs them all before the run);
        returns them. Only before the first pull."""
        assert self.n == 0, "the source is drawn whole before any request is pulled"
        whole = self.source.rest()
        self.source = RequestSource.whole(whole)
        return whole

    def _extend(self, chunk: Requests) -> None:
        raise NotImplementedError

    def _pull(self) -> bool:
        """Take the next chunk from the source; False once it has none."""
        chunk = self.source.next()
        if chunk is None:
            return False
        if chunk.arrival_s[0] < self._last_arrival:
            raise SimulationError("request source went back in time between chunks")
        self._last_arrival = float(chunk.arrival_s[-1])
        self.class_ids.extend(chunk.class_id.tolist())
        self._extend(chunk)
        self.n += len(chunk)
        return True

    def _pull_through(self, i: int) -> None:
        """Pull until request ``i`` is held (tests put some in before the run)."""
        while self.n <= i and self._pull():
            pass

    def _fraction(self, nxt: int) -> float:
        """The share of a known request count let in, 0 when the count is not known."""
        total = self.source.total
        return nxt / total if total else 0.0

    def run(self, until_s: float | None = None,
            progress: Callable[[float], None] | None = None,
            max_in_system: int | None = None, stop: StopFlag | None = None) -> EngineRun:
        """Run to the stop and return the records.

        Raises Interrupted (a KeyboardInterrupt) carrying the records so far if ``stop`` is set
        by a signal during the run or a KeyboardInterrupt is raised inside it.
        """
        return guarded_run(lambda flag: self._loop(until_s, progress, max_in_system, flag),
                           self._result, lambda: self.now, stop)


def guarded_run(loop: Callable[[StopFlag], tuple[float, str]],
                result: Callable[[float, str], EngineRun], now: Callable[[], float],
                stop: StopFlag | None) -> EngineRun:
    """Run ``loop(flag)`` (returning its end time and stop reason) with signals deferred to
    the next iteration boundary, and build the records with ``result(t, reason)``.

    Raises Interrupted carrying the records so far if ``stop`` is set by a signal during the
    run, or if a KeyboardInterrupt is raised inside it (then built at ``now()``, the last
    iteration boundary, where that is possible).
    """
    flag = StopFlag() if stop is None else stop
    with flag.deferred():
        try:
            t, reason = loop(flag)
        except KeyboardInterrupt as e:
            # Raised inside an iteration, not through a flag: keep what can be built.
            try:
                run = result(now(), "interrupted")
            except Exception:
                raise e from None
            raise Interrupted(run, flag.signum) from None
        run = result(t, reason)
    if flag.signum is not None:
        raise Interrupted(run, flag.signum)
    return run
