"""``servesim network``: simulate a network of engines and print per-engine loads beside the
traffic equations, the virtual-station check, per-class and per-workflow metrics and a
stability verdict."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from servesim.cli.progress import progress_bar, quiet_option


def study_dict(study: Any) -> dict[str, Any]:
    """Everything the command prints, as plain data."""
    th = study.theory
    virtual = None
    if th.virtual is not None:
        virtual = [{"classes": list(v.classes), "engines": list(v.engines),
                    "load": v.load.value, "formula": v.load.formula, "flagged": not v.stable}
                   for v in th.virtual.stations]
    from servesim.metrics.summary import jsonable

    return jsonable({
        "theory": {
            "rates_per_s": {k: q.value for k, q in th.rates.items()},
            "tokens": {k: {"prompt": p, "output": d} for k, (p, d) in th.tokens.items()},
            "capacity_tokens_per_s": {e: q.value for e, q in th.capacity.items()},
            "rho": {e: q.value for e, q in th.loads.loads.items()},
            "max_rho": th.loads.max_load.value, "bottleneck": th.loads.bottleneck,
            "load_verdict": th.loads.verdict,
            "virtual_stations": virtual, "virtual_station_verdict": th.virtual_note,
        },
        "engines": study.engines.to_dict("records"),
        "classes": study.classes.to_dict("records"),
        "workflows": study.workflows.to_dict("records"),
        "runs": [{"seed": r.seed, "stop_reason": r.stop_reason, "end_s": r.end_s}
                 for r in study.runs],
        "verdict": {"state": study.verdict.state, "evidence": study.verdict.evidence},
    })


def _f(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def _print(study: Any) -> None:
    from rich.table import Table

    from servesim.cli.tables import console as make_console

    console = make_console()
    th = study.theory
    runs = ", ".join(f"seed {r.seed}: {r.stop_reason} at {r.end_s:.4g} s" for r in study.runs)
    console.print(f"runs: {runs}", highlight=False)
    table = Table(title="engines: measured vs traffic equations "
                        "(rho_j = sum_k lambda_k (m_p^k + m_d^k) / mu*_j)")
    for col in ("engine", "rho_j", "measured load", "theory tok/s", "measured tok/s (99% CI)",
                "busy"):
        table.add_column(col, overflow="fold")
    for r in study.engines.itertuples():
        table.add_row(r.engine, _f(r.theory_rho), _f(r.measured_load),
                      _f(r.theory_tokens_per_s),
                      f"{_f(r.measured_tokens_per_s)} [{_f(r.lo)}, {_f(r.hi)}]",
                      _f(r.busy_fraction, 3))
    console.print(table)
    if th.virtual is None or not th.virtual.flagged:
        console.print(f"virtual stations: {th.virtual_note}", highlight=False)
    table = Table(title="classes (hops)")
    for col in ("class", "lambda theory/s", "measured/s", "hop mean s", "p50", "p90", "p99",
                "TTFT mean s"):
        table.add_column(col, overflow="fold")
    for r in study.classes.itertuples():
        table.add_row(r[1], _f(r.theory_rate_per_s), _f(r.rate_per_s), _f(r.hop_mean_s),
                      _f(r.hop_p50_s), _f(r.hop_p90_s), _f(r.hop_p99_s), _f(r.ttft_mean_s))
    console.print(table)
    table = Table(title="workflows (task arrival to last step's finish)")
    for col in ("workflow", "tasks", "finished", "failed", "E2E mean s", "p50", "p90", "p99"):
        table.add_column(col, overflow="fold")
    for r in study.workflows.itertuples():
        table.add_row(r.workflow, str(r.tasks), str(r.finished), str(r.failed), _f(r.e2e_mean_s),
                      _f(r.e2e_p50_s), _f(r.e2e_p90_s), _f(r.e2e_p99_s))
    console.print(table)
    console.print(f"stability verdict: {study.verdict.state}", highlight=False)
    for line in study.verdict.evidence:
        console.print(f"  - {line}", highlight=False)


def _warn(theory: Any, to_stderr: bool) -> None:
    """One line per flagged virtual station: at the top of the tables, or on stderr when
    stdout carries JSON."""
    if theory.virtual is None:
        return
    for v in theory.virtual.flagged:
        click.echo(f"WARNING: virtual station {v.classes[0]}+{v.classes[1]} at engines "
                   f"{v.engines[0]}, {v.engines[1]}: load {v.load.value:.4g} >= 1 "
                   f"[{v.load.formula}]: strict priorities can make this network unstable "
                   "although every rho_j < 1", err=to_stderr)


@click.command()
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seed", type=int, default=None, help="First seed (default: run.seed).")
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(min=1),
              help="Runs with seeds seed, seed+1, ... (the CIs over seeds need at least 2).")
@click.option("--horizon-s", type=float, default=None,
              help="Simulated seconds (overrides run.horizon_s).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@quiet_option
def network(scenario: Path, seed: int | None, seeds: int, horizon_s: float | None,
            as_json: bool, quiet: bool) -> None:
    """Simulate the network in SCENARIO (a TOML file with [run] and [network])."""
    from servesim.cluster import load_network, study_network
    from servesim.cluster.theory import network_theory
    from servesim.core.fields import integer

    loaded = load_network(scenario)
    first = loaded.run.seed if seed is None else integer(seed, "--seed", low=0)
    # The theory needs no run: its warnings come first, not after minutes of simulation.
    _warn(network_theory(loaded.network), to_stderr=as_json)
    with progress_bar("network", quiet=quiet) as bar:
        study = study_network(loaded, list(range(first, first + seeds)), horizon_s, bar)
    if as_json:
        click.echo(json.dumps(study_dict(study), indent=2, allow_nan=False))
        return
    _print(study)


COMMANDS = [network]
