"""Stopping a run at an iteration boundary when the process is asked to stop, keeping what it
simulated.

A command-line entry point installs ``StopFlag.handler`` for SIGINT and SIGTERM (the library
never installs a handler). While an engine loop runs, the handler only records the signal; the
loop stops at its next iteration boundary, builds its records so far and raises ``Interrupted``
carrying them. Outside an engine loop the handler raises KeyboardInterrupt at once, as Python's
default SIGINT handler does, so a stop request is never lost.

Without a flag (Ctrl-C in a notebook), the KeyboardInterrupt raised inside the loop is caught
too and becomes ``Interrupted``, with the records built as far as they can be: the iteration in
flight may be half applied. ``Interrupted`` is a KeyboardInterrupt, so every caller that does not
look for the partial records (a sweep's point in flight, a study) stops exactly as before.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Interrupted", "StopFlag", "signal_name"]


def signal_name(signum: int | None) -> str:
    """``SIGTERM`` for 15, ``SIGINT`` for 2; ``KeyboardInterrupt`` when no signal is known."""
    if signum is None:
        return "KeyboardInterrupt"
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Interrupted(KeyboardInterrupt):
    """A run stopped by an interruption, with what it had simulated.

    Attributes:
        run: the engine's ``EngineRun`` over the iterations so far (``stop_reason``
            "interrupted"), or None if the interruption came before the engine started.
        signum: the signal that asked for the stop (None: a KeyboardInterrupt raised directly).
        result: once ``servesim.simulate`` caught it, the ``SimResult`` summarising ``run``.
    """

    def __init__(self, run: Any, signum: int | None = None, result: Any = None) -> None:
        super().__init__(f"interrupted ({signal_name(signum)})")
        self.run = run
        self.signum = signum
        self.result = result


class StopFlag:
    """A stop request, set by a signal handler and read by the engines between iterations.

    Attributes:
        signum: the signal received (None: none yet).
        deferring: how many engine loops are running; while > 0 the handler only records.
    """

    __slots__ = ("deferring", "signum")

    def __init__(self) -> None:
        self.signum: int | None = None
        self.deferring = 0

    def handler(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        """A signal handler: record ``signum``; outside a deferring block, or at a second
        signal (the user insists), raise KeyboardInterrupt."""
        again = self.signum is not None
        self.signum = signum
        if not self.deferring or again:
            raise KeyboardInterrupt(f"interrupted ({signal_name(signum)})")

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Within this block (an engine loop) a signal is recorded, not raised."""
        self.deferring += 1
        try:
            yield
        finally:
            self.deferring -= 1
