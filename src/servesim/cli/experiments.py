"""``servesim sweep``, ``servesim query`` and ``servesim report``: sweeps, the results store and
HTML reports.

DuckDB, matplotlib and Ray are imported inside the commands, so ``servesim --help`` stays fast.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click

# The names of experiments.execute.EXECUTORS, spelled out so that --help imports no pandas.
_EXECUTORS = ("local", "serial", "ray")


@contextmanager
def _sweep_progress(as_json: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A rich bar with ETA on a terminal; otherwise one line per finished point on stderr."""
    if not sys.stderr.isatty():
        def line(point_id: str, done: int, todo: int) -> None:
            if done == 0:
                if not as_json:
                    click.echo(f"{todo} points to run", err=True)
            else:
                click.echo(f"point {point_id} done ({done}/{todo})", err=True)

        yield line
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress("sweep", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), "eta",
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("points", total=None)
        yield lambda point_id, done, todo: bar.update(task, completed=done, total=todo)


@contextmanager
def _term_as_interrupt() -> Iterator[None]:
    """SIGTERM ends a sweep like Ctrl-C: workers are stopped, finished points stay recorded."""
    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.command()
@click.argument("sweep_file", metavar="SWEEP", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Sweep folder: catalog.duckdb and one folder of Parquet files per point.")
@click.option("--executor", type=click.Choice(_EXECUTORS), default="local", show_default=True,
              help="Where points run: a local process pool, this process, or Ray.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes of the local pool (default: the CPU count).")
@click.option("--address", default=None,
              help="Ray cluster to join: auto, HOST:PORT or ray://HOST:PORT (default: start a "
                   "local instance).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary of the run.")
def sweep(sweep_file: Path, out_dir: Path, executor: str, workers: int | None,
          address: str | None, as_json: bool) -> None:
    """Run every point of SWEEP (a grid over scenario fields, times seeds) into --out.

    Points already finished in --out are skipped, so running the same sweep again resumes it.
    """
    from servesim.experiments.execute import run_sweep
    from servesim.experiments.sweep import load_sweep

    loaded = load_sweep(sweep_file)
    with _term_as_interrupt(), _sweep_progress(as_json) as progress:
        run = run_sweep(loaded, out_dir, executor=executor, workers=workers, address=address,
                        progress=progress, notice=lambda text: click.echo(text, err=True))
    stats = {"sweep": loaded.name, "out": str(run.out_dir), "points": run.total,
             "skipped": run.skipped, "ran": run.ran, "wall_s": round(run.wall_s, 3),
             "sim_wall_s": round(run.sim_wall_s, 3)}
    if as_json:
        click.echo(json.dumps(stats, indent=2))
    else:
        click.echo(f"sweep {loaded.name}: ran {run.ran} of {run.total} points ({run.skipped} "
                   f"already finished) in {run.wall_s:.1f} s; catalogue: "
                   f"{out_dir / 'catalog.duckdb'}")


@click.command()
@click.argument("sweep_dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.argument("sql")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON records.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the rows as CSV.")
@click.option("--all-points", "every_point", is_flag=True,
              help="Include points of earlier versions of the sweep run into DIR.")
def query(sweep_dir: Path, sql: str, as_json: bool, as_csv: bool, every_point: bool) -> None:
    """Run SQL against a sweep folder: views points, requests and iterations.

    The views cover the points of the sweep last run into DIR (see --all-points)."""
    from servesim.experiments.store import query as run_query

    frame = run_query(sweep_dir, sql, every_point=every_point)
    if as_json:
        click.echo(frame.to_json(orient="records", indent=2))
    elif as_csv:
        click.echo(frame.to_csv(index=False), nl=False)
    else:
        import pandas as pd

        with pd.option_context("display.max_rows", 200, "display.max_columns", 50,
                               "display.width", 200):
            click.echo(frame.to_string(index=False))


@click.command()
@click.argument("sweep_dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out_file", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="HTML file to write (default: DIR/report.html).")
def report(sweep_dir: Path, out_file: Path | None) -> None:
    """Write a self-contained HTML report of a sweep, plus each figure as PNG and SVG in
    DIR/figures/."""
    from servesim.report import build_report

    path = build_report(sweep_dir, out_file)
    click.echo(f"report: {path}")


COMMANDS = [sweep, query, report]
