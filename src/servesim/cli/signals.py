"""SIGINT and SIGTERM during a command: both stop it the same way.

``stop_on_signals`` installs ``StopFlag.handler`` (``servesim.engine.stop``) for the duration
of one command-line call, so a run stops at its next iteration boundary and keeps what it
simulated, and anything else (a sweep waiting on its workers, a report being written) gets a
KeyboardInterrupt, as Ctrl-C gives by default. The previous handlers come back afterwards. A
signal the process was started ignoring (``nohup``, a background job's SIGINT) stays ignored,
and nothing is installed off the main thread, where Python allows no handler.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from servesim.engine.stop import StopFlag

__all__ = ["EXIT_SIGNAL_BASE", "exit_code", "stop_on_signals"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_SIGNAL_BASE = 128
"""A command stopped by signal N exits with 128 + N (130 for SIGINT, 143 for SIGTERM)."""


def exit_code(flag: StopFlag) -> int:
    """The exit status of a command the flag's signal stopped (130 when it was Ctrl-C
    without a handler, a plain KeyboardInterrupt)."""
    return EXIT_SIGNAL_BASE + (flag.signum if flag.signum is not None else signal.SIGINT)


@contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """Route SIGINT and SIGTERM to a fresh ``StopFlag`` while the block runs; yield the flag."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {}
    for sig in SIGNALS:
        if signal.getsignal(sig) is signal.SIG_IGN:
            continue
        previous[sig] = signal.signal(sig, flag.handler)
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            # None: a handler not set from Python, which cannot be put back; the default is.
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
