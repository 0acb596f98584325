"""``servesim capacity`` and ``servesim stability``: theory and run-based verdicts, printed with
the formula behind every number."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from servesim.cli.capacity_report import capacity_report, plain
from servesim.cli.file_kinds import load_cli_scenario
from servesim.cli.progress import progress_bar, quiet_option
from servesim.cli.tables import console as make_console
from servesim.cli.tables import number, quantity, table
from servesim.core.errors import ConfigError
from servesim.scenario import Scenario
from servesim.theory import Quantity, scenario_capacity

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["COMMANDS", "capacity_report"]


def _print_report(report: dict[str, Any], console: Console) -> None:
    grid = table(f"servesim capacity ({report['batching']})", ("quantity", "value", "formula"))
    for name, value in _flatten(report):
        if isinstance(value, Quantity):
            grid.add_row(name, quantity(value),
                         value.formula + ("" if value.exact else " (numeric)"))
    console.print(grid)
    region = report.get("batch_cap_region")
    if region:
        _print_region(region, console)
    for name, reason in report["skipped"].items():
        console.print(f"skipped {name}: {reason}", highlight=False)
    for note in report["notes"]:
        console.print(f"note: {note}", highlight=False)


def _print_region(region: dict[str, Any], console: Console) -> None:
    tag = "" if region["exact"] else " (numeric)"
    console.print(f"batch-size-cap region: {region['formula']}{tag}", highlight=False)
    for v in region["vertices"]:
        console.print(f"  vertex ({number(v['prefill_tokens_per_s'])}, "
                      f"{number(v['decode_tokens_per_s'])}) tokens/s via batch "
                      f"{v['batch']}", highlight=False)
    point = region.get("operating_point")
    if point is None:   # a closed loop has no arrival rate to place
        return
    where = ("inside: stable for a policy that reaches the region" if point["inside"] else
             "outside: unstable under every policy")
    console.print(f"  operating point ({number(point['prefill_tokens_per_s'])}, "
                  f"{number(point['decode_tokens_per_s'])}) tokens/s is {where}",
                  highlight=False)


def _flatten(report: dict[str, Any], prefix: str = ""):
    for key, value in report.items():
        if isinstance(value, dict) and key not in ("batch_cap_region", "skipped"):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield prefix + key, value


@click.command()
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a scenario field (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--empirical", is_flag=True,
              help="Also bisect for each policy's empirical lambda* from simulation, with a "
                   "95% CI of the mean per-seed detection boundary (an upper estimate of "
                   "lambda*; see docs/stability.md).")
@click.option("--policies", default=None,
              help="Comma-separated batching systems for --empirical (default: the scenario's).")
@click.option("--seeds", default=8, show_default=True, type=click.IntRange(min=2),
              help="Seeds per bisection step (--empirical).")
@click.option("--horizon-s", default=300.0, show_default=True, type=float,
              help="Simulated seconds per run (--empirical).")
@click.option("--iterations", default=6, show_default=True, type=click.IntRange(min=1),
              help="Bisection steps (--empirical).")
@quiet_option
def capacity(scenario: Path, overrides: Sequence[str], as_json: bool, empirical: bool,
             policies: str | None, seeds: int, horizon_s: float, iterations: int,
             quiet: bool) -> None:
    """Theoretical capacity of a scenario: mu*, lambda*, load, cycle capacities and the
    batch-size-cap region, each with the formula it came from; with --empirical, each
    policy's empirical lambda* bracket from simulation beside the theoretical one."""
    loaded = load_cli_scenario(scenario, overrides)
    report = capacity_report(loaded)
    frame = _empirical(loaded, report, policies, seeds, horizon_s, iterations, quiet) \
        if empirical else None
    if as_json:
        out = plain(report)
        if frame is not None:
            out["empirical"] = frame.drop(columns=["probes"], errors="ignore").to_dict("records")
        click.echo(json.dumps(out, indent=2, default=str))
        return
    console = make_console()
    _print_report(report, console)
    if frame is not None:
        grid = table("empirical lambda* (bisection bracket over all seeds; 95% CI of the "
                     "mean per-seed detection boundary, an upper estimate of lambda*; "
                     "requests/s)", ("policy", "lo", "hi", "95% CI", "theory", "ratio"))
        for row in frame.itertuples():
            grid.add_row(str(row.policy), number(row.lo), number(row.hi),
                         f"[{number(row.ci_lo)}, {number(row.ci_hi)}]",
                         number(row.theory_lambda_star), f"{row.ratio:.3f}")
        console.print(grid)


def _empirical(scenario: Scenario, report: dict[str, Any], policies: str | None, seeds: int,
               horizon_s: float, iterations: int, quiet: bool):
    """Bisect each policy's empirical lambda* between 0.5 and 1.5 times the theoretical one,
    with a confidence interval from per-seed bisections over the same range."""
    from servesim.analysis import policy_lambda_stars

    names = [p.strip() for p in policies.split(",")] if policies else \
        [scenario.engine.batching]
    lam = report["request_capacity"].value
    with progress_bar("λ* search", quiet=quiet) as bar:
        return policy_lambda_stars(scenario.source, names, seeds=list(range(seeds)),
                                   horizon_s=horizon_s, lo=0.5 * lam, hi=1.5 * lam,
                                   iterations=iterations, interval=True, progress=bar)


@click.command()
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--loads", default="0.8,0.9,1.1", show_default=True,
              help="Comma-separated loads, as fractions of the theoretical lambda*.")
@click.option("--seeds", default=6, show_default=True, type=click.IntRange(min=2),
              help="Seeds per load (the CI over seeds needs at least 2).")
@click.option("--horizon-s", default=120.0, show_default=True, type=float,
              help="Simulated seconds per run.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a scenario field (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@quiet_option
def stability(scenario: Path, loads: str, seeds: int, horizon_s: float,
              overrides: Sequence[str], as_json: bool, quiet: bool) -> None:
    """Run the stability tests at each load and print a verdict with its evidence."""
    from servesim.analysis import study

    loaded = load_cli_scenario(scenario, overrides)
    cap = scenario_capacity(loaded)
    try:
        fractions = [float(x) for x in loads.split(",") if x.strip()]
    except ValueError:
        raise ConfigError("--loads", loads, "comma-separated numbers such as 0.8,0.9,1.1") \
            from None
    with progress_bar("stability", quiet=quiet) as bar:
        frame = study(loaded.source, fractions, list(range(seeds)),
                      base_rate=cap.request_capacity.value, horizon_s=horizon_s,
                      mean_tokens_per_request=cap.mean_tokens.value,
                      token_capacity=cap.token_capacity.value, progress=bar)
    if as_json:
        click.echo(frame.to_json(orient="records", indent=2))
        return
    _print_stability(frame, cap.request_capacity.value)


def _print_stability(frame: Any, lambda_star: float) -> None:
    """One row per load, then each load's evidence lines (what ``--json`` has as well)."""
    grid = table(f"servesim stability (lambda* = {number(lambda_star, 'req/s')})",
                 ("load", "rate", "slope tokens/s (99% CI)", "fluid tokens/s", "completion",
                  "verdict"))
    for row in frame.itertuples():
        grid.add_row(number(row.load, "1"), number(row.arrival_rate, "req/s"),
                     f"{number(row.slope_mean)} [{number(row.slope_lo)}, "
                     f"{number(row.slope_hi)}]",
                     number(row.fluid_slope), number(row.completion_ratio, "1"), row.state)
    console = make_console()
    console.print(grid)
    for row in frame.itertuples():
        console.print(f"load {number(row.load, '1')}: {row.evidence}", highlight=False)


COMMANDS = [capacity, stability]
