"""Progress on stderr for the commands that compute for long: one rich bar saying what is
being done, with runs done of the total (or a percentage), elapsed time and an ETA.

The library reports through ``servesim.core.progress.Progress`` callbacks and never prints;
``progress_bar`` turns those calls into the bar. Nothing is drawn with ``--quiet`` or when
stderr is not a terminal, and nothing ever goes to stdout, so ``--json`` output stays clean.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console

    from servesim.core.progress import Fraction, Progress
    from servesim.experiments.sweep import Sweep

Bar = Callable[[str, float, float | None], None]
"""``bar(what, done, total)``: a ``Progress`` callback that also takes ``total=None``, for a
bar whose total is not known yet (it then shows only what runs and for how long)."""

quiet_option = click.option("--quiet", "-q", is_flag=True,
                            help="Draw no progress bar on stderr.")

ETA_WINDOW_S = 300.0
"""Seconds of progress the ETA's speed estimate averages over: a single run of a study can take
a minute, and rich's default window (30 s) would then often have no speed to estimate from."""


def stderr_console() -> Console | None:
    """The console the bar is drawn on, or None when stderr is not a terminal. Only a real
    terminal counts (not rich's FORCE_COLOR), so logs and pipes never get a bar; tests replace
    this function with one returning a console forced to be a terminal."""
    if not sys.stderr.isatty():
        return None
    from rich.console import Console

    return Console(stderr=True)


@contextmanager
def progress_bar(title: str, *, quiet: bool = False, count: bool = True,
                 console: Console | None = None) -> Iterator[Bar | None]:
    """A bar titled ``title``, as a callback ``(what, done, total)`` (``Bar``) whose
    ``what`` follows the title ("stability: load 0.9, seed 3/6"); None with ``quiet`` or when
    ``console`` (default ``stderr_console()``) is not an interactive terminal.

    ``count`` shows whole units done of the total ("3/12"), otherwise a percentage. The bar is
    erased when the block ends, so the command's own output follows on a clean screen.
    """
    if quiet:
        yield None
        return
    console = stderr_console() if console is None else console
    if console is None or not console.is_interactive:
        yield None
        return
    with _make_bar(console, count) as bar:
        task = bar.add_task(title, total=None)

        def report(what: str, done: float, total: float | None) -> None:
            bar.update(task, description=f"{title}: {what}" if what else title,
                       completed=done, total=total)

        yield report


def _make_bar(console: Console, count: bool) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.table import Column

    # The description is the one column that may be long: cut it, never wrap the bar.
    what = TextColumn("{task.description}", table_column=Column(no_wrap=True,
                                                               overflow="ellipsis"))
    return Progress(what, BarColumn(), MofNCompleteColumn() if count else TaskProgressColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    console=console, transient=True, redirect_stdout=False,
                    speed_estimate_period=ETA_WINDOW_S)


def fraction_of(report: Progress | None, what: str) -> Fraction | None:
    """A fraction-done callback for one simulation, drawn as ``what`` on the bar."""
    if report is None:
        return None
    return lambda fraction: report(what, min(max(fraction, 0.0), 1.0), 1.0)


def describe_params(params: dict[str, Any], seed: int) -> str:
    """A sweep point as its parameters, ``engine.batching=vllm load=0.8 seed=1``."""
    parts = [f"{k}={v}" if isinstance(v, str) else f"{k}={v!r}" for k, v in params.items()]
    return " ".join([*parts, f"seed={seed}"])


def sweep_reporter(report: Progress, sweep: Sweep) -> Callable[[str, int, int], None]:
    """The sweep executor's ``progress(point_id, done, todo)`` drawn on ``report`` with the
    finished point's parameters rather than its hash."""
    names = {p.point_id: describe_params(p.params, p.seed) for p in sweep.points}

    def point_done(point_id: str, done: int, todo: int) -> None:
        what = f"{names[point_id]} done" if point_id in names else f"{todo} points to run"
        report(what, done, todo)

    return point_done
