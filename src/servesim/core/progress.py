"""Progress reports from long computations: the library calls back, the caller draws.

A long computation (a study over loads and seeds, a bisection, a network study) takes an
optional ``progress`` callback of type ``Progress`` and calls it as work gets done; it never
prints. Totals are known up front (loads x seeds, bisection steps x seeds), so a caller can
show an ETA. ``part`` maps the progress of a piece of the work into its parent's, and
``run_fraction`` turns a single simulation's fraction-done callback into a ``Progress`` call.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Fraction", "Progress", "part", "run_fraction"]

Progress = Callable[[str, float, float], None]
"""``progress(what, done, total)``: ``what`` says what is being done now (a load and seed, a
bisection step and its rate), and ``done`` of ``total`` units of work (runs, points) are
finished; ``done`` is fractional while a unit runs and never decreases."""

Fraction = Callable[[float], None]
"""``progress(fraction)`` of one simulation (``servesim.simulate``), in [0, 1]."""


def part(progress: Progress | None, start: float, span: float, total: float,
         prefix: str = "") -> Progress | None:
    """A callback for one piece of a computation of ``total`` units: the piece's own
    ``(what, done, of)`` lands in [start, start + span] of the total, ``what`` after ``prefix``.

    Returns None when ``progress`` is None, so pieces cost nothing when nobody listens.
    """
    if progress is None:
        return None

    def report(what: str, done: float, of: float) -> None:
        share = min(max(done / of, 0.0), 1.0) if of > 0 else 1.0
        progress(prefix + what, start + span * share, total)

    return report


def run_fraction(progress: Progress | None, what: str) -> Fraction | None:
    """A fraction-done callback for one simulation, reported as ``progress(what, f, 1)``
    (wrap ``progress`` with ``part`` to place that unit in a larger computation)."""
    if progress is None:
        return None
    return lambda fraction: progress(what, fraction, 1.0)
