"""``servesim sweep``, ``servesim query`` and ``servesim report``: sweeps, the results store and
HTML reports.

DuckDB, matplotlib and Ray are imported inside the commands, so ``servesim --help`` stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from servesim.cli.progress import (
    describe_params,
    progress_bar,
    quiet_option,
    sweep_reporter,
)

if TYPE_CHECKING:
    from servesim.experiments.sweep import Sweep

# The names of experiments.execute.EXECUTORS, spelled out so that --help imports no pandas.
_EXECUTORS = ("local", "serial", "ray")


@contextmanager
def _sweep_progress(sweep: Sweep, as_json: bool,
                    quiet: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """The bar on a terminal; otherwise, unless ``quiet``, one line per finished point on
    stderr, for logs (``point ID done (3/48): engine.batching=vllm load=0.7 seed=1``)."""
    with progress_bar("sweep", quiet=quiet) as bar:
        if bar is not None:
            yield sweep_reporter(bar, sweep)
            return
    if quiet:
        yield None
        return
    names = {p.point_id: describe_params(p.params, p.seed) for p in sweep.points}

    def line(point_id: str, done: int, todo: int) -> None:
        if done == 0:
            if not as_json:
                click.echo(f"{todo} points to run", err=True)
        else:
            click.echo(f"point {point_id} done ({done}/{todo}): {names.get(point_id, '')}",
                       err=True)

    yield line


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
@click.option("--quiet", "-q", is_flag=True,
              help="No progress on stderr: neither the bar nor the per-point lines.")
def sweep(sweep_file: Path, out_dir: Path, executor: str, workers: int | None,
          address: str | None, as_json: bool, quiet: bool) -> None:
    """Run every point of SWEEP (a grid over scenario fields, times seeds) into --out.

    Points already finished in --out are skipped, so running the same sweep again resumes it.
    """
    from servesim.experiments.execute import run_sweep
    from servesim.experiments.sweep import load_sweep

    loaded = load_sweep(sweep_file)
    # SIGTERM ends a sweep like Ctrl-C (``cli/signals.py``): workers are stopped, finished
    # points stay recorded, and the points in flight run again when the sweep is resumed.
    try:
        with _sweep_progress(loaded, as_json, quiet) as progress:
            run = run_sweep(loaded, out_dir, executor=executor, workers=workers,
                            address=address, progress=progress,
                            notice=lambda text: click.echo(text, err=True))
    except KeyboardInterrupt as e:
        why = str(e) or "interrupted"
        raise KeyboardInterrupt(f"{why}; finished points are kept in {out_dir}, the others run "
                                "when the sweep is started again") from None
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
    """Run read-only SQL against a sweep folder: views points, requests and iterations.

    The views cover the points of the sweep last run into DIR (see --all-points). Statements
    that could change something (DROP, COPY ... TO, ATTACH, SET, ...) are refused."""
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
@quiet_option
def report(sweep_dir: Path, out_file: Path | None, quiet: bool) -> None:
    """Write a self-contained HTML report of a sweep, plus each figure as PNG and SVG in
    DIR/figures/."""
    with progress_bar("report", quiet=quiet) as bar:
        if bar is not None:
            bar(f"reading {sweep_dir}", 0, None)
        from servesim.report import build_report  # matplotlib: part of the wait

        path = build_report(sweep_dir, out_file, bar)
    click.echo(f"report: {path}")


COMMANDS = [sweep, query, report]
