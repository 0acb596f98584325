"""``servesim capacity`` and ``servesim stability``: theory and run-based verdicts, printed with
the formula behind every number."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from servesim.core.errors import ConfigError
from servesim.scenario import Scenario, load_scenario
from servesim.theory import (
    Quantity,
    cap_region,
    fastertransformer_cycle_capacity,
    scenario_capacity,
    static_batching_capacity,
)
from servesim.workload.distributions import Deterministic

_UNCAPPED = 1 << 20   # a max_batch_size at least this large is treated as no cap


def capacity_report(scenario: Scenario) -> dict[str, Any]:
    """Every capacity number the scenario admits, each as a Quantity (or a nested dict)."""
    cap = scenario_capacity(scenario)
    report: dict[str, Any] = {
        "token_capacity": cap.token_capacity,
        "mean_tokens_per_request": cap.mean_tokens,
        "request_capacity": cap.request_capacity,
    }
    if cap.load is not None:
        report["load"] = cap.load
    sizes = _deterministic_sizes(scenario)
    engine = scenario.engine
    if sizes is not None:
        prompt, output = sizes
        ft = fastertransformer_cycle_capacity(scenario.cost, engine.token_budget, prompt, output,
                                              _cap(engine.max_batch_size))
        report["fastertransformer"] = vars(ft)
        if _cap(engine.max_batch_size) is not None:
            static = static_batching_capacity(scenario.cost, engine.token_budget,
                                              engine.max_batch_size, prompt, output)
            report["static"] = vars(static)
    if _cap(engine.max_batch_size) is not None:
        report["batch_cap_region"] = _region(scenario, cap)
    return report


def _cap(k_max: int) -> int | None:
    return None if k_max >= _UNCAPPED else k_max


def _deterministic_sizes(scenario: Scenario) -> tuple[int, int] | None:
    classes = scenario.workload.classes
    if len(classes) != 1:
        return None
    only = classes[0]
    if isinstance(only.prompt, Deterministic) and isinstance(only.output, Deterministic):
        return int(only.prompt.value), int(only.output.value)
    return None


def _region(scenario: Scenario, cap) -> dict[str, Any]:
    region = cap_region(scenario.cost, scenario.engine.token_budget,
                        scenario.engine.max_batch_size)
    out: dict[str, Any] = {
        "formula": region.formula,
        "vertices": [{"prefill_tokens_per_s": float(x), "decode_tokens_per_s": float(y),
                      "batch": list(b) if b is not None else None}
                     for (x, y), b in zip(region.vertices, region.batches, strict=True)],
    }
    rate = scenario.workload.arrival.rate_per_s if scenario.workload.arrival else None
    if rate:
        x = rate * sum(c.weight * c.prompt.mean for c in scenario.workload.classes)
        y = rate * sum(c.weight * c.output.mean for c in scenario.workload.classes)
        out["operating_point"] = {"prefill_tokens_per_s": x, "decode_tokens_per_s": y,
                                  "inside": bool(region.contains(x, y))}
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Quantity):
        return {"value": value.value, "unit": value.unit, "formula": value.formula,
                "exact": value.exact}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _print_report(report: dict[str, Any], console: Console) -> None:
    table = Table(title="servesim capacity")
    for col in ("quantity", "value", "formula"):
        table.add_column(col)
    for name, value in _flatten(report):
        if isinstance(value, Quantity):
            table.add_row(name, f"{value.value:.6g} {value.unit}",
                          value.formula + ("" if value.exact else " (numeric)"))
    console.print(table)
    region = report.get("batch_cap_region")
    if region:
        console.print(f"batch-size-cap region: {region['formula']}")
        for v in region["vertices"]:
            console.print(f"  vertex ({v['prefill_tokens_per_s']:.6g}, "
                          f"{v['decode_tokens_per_s']:.6g}) tokens/s via batch {v['batch']}")
        point = region.get("operating_point")
        if point:
            where = "inside (stable)" if point["inside"] else "outside (unstable)"
            console.print(f"  operating point ({point['prefill_tokens_per_s']:.6g}, "
                          f"{point['decode_tokens_per_s']:.6g}) tokens/s is {where}")


def _flatten(report: dict[str, Any], prefix: str = ""):
    for key, value in report.items():
        if isinstance(value, dict) and key != "batch_cap_region":
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
def capacity(scenario: Path, overrides: Sequence[str], as_json: bool, empirical: bool,
             policies: str | None, seeds: int, horizon_s: float, iterations: int) -> None:
    """Theoretical capacity of a scenario: mu*, lambda*, load, cycle capacities and the
    batch-size-cap region, each with the formula it came from; with --empirical, each
    policy's empirical lambda* bracket from simulation beside the theoretical one."""
    loaded = load_scenario(scenario, overrides)
    report = capacity_report(loaded)
    frame = _empirical(loaded, report, policies, seeds, horizon_s, iterations) \
        if empirical else None
    if as_json:
        out = _plain(report)
        if frame is not None:
            out["empirical"] = frame.drop(columns=["probes"], errors="ignore").to_dict("records")
        click.echo(json.dumps(out, indent=2, default=str))
        return
    console = Console()
    _print_report(report, console)
    if frame is not None:
        table = Table(title="empirical lambda* (bisection bracket over all seeds; 95% CI of the "
                            "mean per-seed detection boundary, an upper estimate of lambda*; "
                            "requests/s)")
        for col in ("policy", "lo", "hi", "95% CI", "theory", "ratio"):
            table.add_column(col)
        for row in frame.itertuples():
            table.add_row(str(row.policy), f"{row.lo:.4g}", f"{row.hi:.4g}",
                          f"[{row.ci_lo:.4g}, {row.ci_hi:.4g}]",
                          f"{row.theory_lambda_star:.4g}", f"{row.ratio:.3f}")
        console.print(table)


def _empirical(scenario: Scenario, report: dict[str, Any], policies: str | None, seeds: int,
               horizon_s: float, iterations: int):
    """Bisect each policy's empirical lambda* between 0.5 and 1.5 times the theoretical one,
    with a confidence interval from per-seed bisections over the same range."""
    from servesim.analysis import policy_lambda_stars

    names = [p.strip() for p in policies.split(",")] if policies else \
        [scenario.engine.batching]
    lam = report["request_capacity"].value
    return policy_lambda_stars(scenario.source, names, seeds=list(range(seeds)),
                               horizon_s=horizon_s, lo=0.5 * lam, hi=1.5 * lam,
                               iterations=iterations, interval=True)


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
def stability(scenario: Path, loads: str, seeds: int, horizon_s: float,
              overrides: Sequence[str], as_json: bool) -> None:
    """Run the stability tests at each load and print a verdict with its evidence."""
    from servesim.analysis import study

    loaded = load_scenario(scenario, overrides)
    cap = scenario_capacity(loaded)
    try:
        fractions = [float(x) for x in loads.split(",") if x.strip()]
    except ValueError:
        raise ConfigError("--loads", loads, "comma-separated numbers such as 0.8,0.9,1.1") \
            from None
    frame = study(loaded.source, fractions, list(range(seeds)),
                  base_rate=cap.request_capacity.value, horizon_s=horizon_s,
                  mean_tokens_per_request=cap.mean_tokens.value,
                  token_capacity=cap.token_capacity.value)
    if as_json:
        click.echo(frame.to_json(orient="records", indent=2))
        return
    table = Table(title=f"servesim stability (lambda* = {cap.request_capacity.value:.4g} req/s)")
    for col in ("load", "rate/s", "slope tokens/s (99% CI)", "fluid", "completion", "verdict"):
        table.add_column(col)
    for row in frame.itertuples():
        table.add_row(f"{row.load:g}", f"{row.arrival_rate:.4g}",
                      f"{row.slope_mean:.4g} [{row.slope_lo:.4g}, {row.slope_hi:.4g}]",
                      f"{row.fluid_slope:.4g}", f"{row.completion_ratio:.3f}", row.state)
    Console().print(table)


COMMANDS = [capacity, stability]
