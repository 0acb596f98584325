"""``servesim theory``: M/G/1 results with predictions (closed forms and SOAP) for a scenario."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import click

from servesim.cli import progress as cli_progress
from servesim.core.progress import Progress

# Off a terminal (a pipe, a file) rich would assume 80 columns; formulas read better wider.
_FILE_WIDTH = 120
_PROGRESS_AFTER_S = 1.0   # a progress bar only for evaluations that last longer than this


@click.command()
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@cli_progress.quiet_option
def theory(scenario: Path, as_json: bool, quiet: bool) -> None:
    """Mean response time E[T] of each policy in the scenario's [mg1] table, with the formula it
    came from (closed form or SOAP numeric), the price of misprediction and the best 1-bit
    threshold. A progress bar on stderr names the policy being evaluated (on a terminal, once
    the evaluation has lasted a second, and not with --quiet)."""
    from servesim.theory.mg1.report import mg1_report
    from servesim.theory.mg1.spec import load_mg1

    spec = load_mg1(scenario)
    with delayed_progress(quiet) as progress:
        report = mg1_report(spec, progress=progress)
    if as_json:
        click.echo(json.dumps(report, indent=2, allow_nan=False))
        return
    print_report(report, _console())


@contextmanager
def delayed_progress(quiet: bool) -> Iterator[Progress | None]:
    """The commands' progress bar (``servesim.cli.progress``), titled "theory", drawn only once
    the evaluation has lasted ``_PROGRESS_AFTER_S``, so quick files print no flicker; None when
    ``quiet`` or stderr is not a terminal."""
    console = None if quiet else cli_progress.stderr_console()
    if console is None or not console.is_interactive:
        yield None
        return
    start = time.monotonic()
    with ExitStack() as stack:
        bar: list[Any] = []

        def report(what: str, done: float, total: float) -> None:
            if not bar and time.monotonic() - start >= _PROGRESS_AFTER_S:
                bar.append(stack.enter_context(
                    cli_progress.progress_bar("theory", console=console)))
            if bar and bar[0] is not None:
                bar[0](what, done, total)

        yield report


def _console() -> Any:
    from rich.console import Console

    if sys.stdout.isatty() or "COLUMNS" in os.environ:
        return Console()
    return Console(width=_FILE_WIDTH)


def print_report(report: dict, console: Any) -> None:
    """The report as text: one table per load, then each row's formula (the same at every
    load) as wrapped text; cells fold and lines wrap, nothing is cut."""
    from rich.table import Table
    from rich.text import Text

    pred = report["predictor"] or {"kind": "oracle (exact sizes)"}
    console.print(f"M/G/1: sizes {_spec(report['sizes'])}, predictor {_spec(pred)} "
                  "(unless a row names its own)", highlight=False)
    for entry in report["loads"]:
        table = Table(title=f"rho = {entry['load']:.4g}, lambda = {entry['arrival_rate']:.4g}")
        for col in ("#", "policy", "reads", "E[T]", "method", "price of misprediction"):
            table.add_column(col, overflow="fold", no_wrap=False)
        for i, row in enumerate(entry["policies"], start=1):
            price = row["price_of_misprediction"]
            table.add_row(str(i), row["label"], _reads(row),
                          f"{row['mean_response_time']:.4f}", row["method"],
                          "-" if price is None else f"{price:.4f}")
        console.print(table)
        for kind, best in entry.get("best_one_bit_threshold", {}).items():
            console.print(f"best 1-bit threshold ({kind.replace('_', '-')}): T = "
                          f"{best['threshold']:.4g} (size quantile {best['quantile']:.3f}), "
                          f"E[T] = {best['mean_response_time']:.4f}", highlight=False)
    if report["loads"]:
        console.print("formulas (E[T(x, y)], or the SOAP rank; docs/mg1.md):", highlight=False)
        grid = Table.grid(padding=(0, 1))   # a hanging indent under each row's number
        grid.add_column(justify="right", no_wrap=True)
        grid.add_column(overflow="fold")
        for i, row in enumerate(report["loads"][0]["policies"], start=1):
            grid.add_row(f"{i}.", Text(f"{row['label']} ({row['method']}): {row['formula']}"))
        console.print(grid)


def _reads(row: dict) -> str:
    """What the row's rank reads: nothing but age, true sizes, or its predictor."""
    if row["reads"] == "none":
        return "-"
    if row["reads"] == "size":
        return "true sizes"
    spec = row["predictor"]
    if spec is None or spec.get("kind") == "oracle":
        return "exact sizes"
    rest = ", ".join(f"{k} = {v}" for k, v in spec.items() if k != "kind")
    return spec["kind"] + (f" ({rest})" if rest else "")


def _spec(spec: dict) -> str:
    return "{" + ", ".join(f"{k} = {v}" for k, v in spec.items()) + "}"


COMMANDS = [theory]
