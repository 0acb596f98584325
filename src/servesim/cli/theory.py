"""``servesim theory``: M/G/1 results with predictions (closed forms and SOAP) for a scenario."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def theory(scenario: Path, as_json: bool) -> None:
    """Mean response time E[T] of each policy in the scenario's [mg1] table, with the formula it
    came from (closed form or SOAP numeric), the price of misprediction and the best 1-bit
    threshold."""
    from servesim.theory.mg1.report import mg1_report
    from servesim.theory.mg1.spec import load_mg1

    report = mg1_report(load_mg1(scenario))
    if as_json:
        click.echo(json.dumps(report, indent=2, allow_nan=False))
        return
    _print(report)


def _print(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    pred = report["predictor"] or {"kind": "oracle (exact sizes)"}
    console.print(f"M/G/1: sizes {_spec(report['sizes'])}, predictor {_spec(pred)}",
                  highlight=False, soft_wrap=True)
    for entry in report["loads"]:
        table = Table(title=f"rho = {entry['load']:.4g}, lambda = {entry['arrival_rate']:.4g}")
        for col in ("policy", "E[T]", "method", "price of misprediction", "formula"):
            table.add_column(col)
        for row in entry["policies"]:
            price = row["price_of_misprediction"]
            table.add_row(row["policy"], f"{row['mean_response_time']:.4f}", row["method"],
                          "-" if price is None else f"{price:.4f}", row["formula"])
        console.print(table)
        for kind, best in entry.get("best_one_bit_threshold", {}).items():
            console.print(f"best 1-bit threshold ({kind.replace('_', '-')}): T = "
                          f"{best['threshold']:.4g} (size quantile {best['quantile']:.3f}), "
                          f"E[T] = {best['mean_response_time']:.4f}", highlight=False)


def _spec(spec: dict) -> str:
    return "{" + ", ".join(f"{k} = {v}" for k, v in spec.items()) + "}"


COMMANDS = [theory]
