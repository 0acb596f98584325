"""``servesim fidelity``: replay an observed run through the simulator and print the error per
metric; ``servesim calibrate``: fit the cost model to probes of a live server."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from servesim.cli.progress import progress_bar, quiet_option

_LABELS = {"ttft_s": "TTFT", "itl_s": "ITL", "tpot_s": "TPOT", "e2e_s": "E2E"}


def _num(x: Any, unit: str = "s") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if unit == "s" and abs(x) < 1:
        return f"{x * 1000:.4g} ms"
    return f"{x:.4g} {unit}".rstrip()


def _pct(x: Any) -> str:
    return "-" if x is None else f"{x * 100:+.2f}%"


def _print_report(report: dict[str, Any]) -> None:
    from rich.table import Table

    from servesim.cli.tables import console as make_console

    console = make_console()
    req = report["requests"]
    run = report["run"]
    console.print(f"replayed {req['replayed']} of {req['observed_rows']} observed requests "
                  f"({req['not_replayed_refused']} refused, not replayed) on {run['batching']} "
                  f"batching; compared {req['compared']} finished in both "
                  f"({req['finished_observed']} observed, {req['finished_simulated']} "
                  "simulated)", highlight=False)
    table = Table(title="fidelity: simulated vs observed (rel. error = (sim - obs) / obs)")
    for col in ("metric", "stat", "observed", "simulated", "rel. error"):
        table.add_column(col, overflow="fold", justify="left" if col in ("metric", "stat")
                         else "right")
    for name, label in _LABELS.items():
        for stat, cell in report["metrics"][name].items():
            table.add_row(label, stat, _num(cell["observed"]), _num(cell["simulated"]),
                          _pct(cell["rel_error"]))
    tp = report["throughput_rps"]
    table.add_row("throughput", "", _num(tp["observed"], "req/s"),
                  _num(tp["simulated"], "req/s"), _pct(tp["rel_error"]))
    console.print(table)
    median = report["e2e_median_request_rel_error"]
    console.print("per-request E2E: median |rel. error| "
                  f"{'-' if median is None else f'{median * 100:.2f}%'}", highlight=False)
    verdict = report["verdict"]
    same = "same" if verdict["observed"] == verdict["simulated"] else "DIFFERENT"
    console.print(f"stability verdict: observed {verdict['observed']}, simulated "
                  f"{verdict['simulated']} ({same})", highlight=False)


@click.command()
@click.argument("observed_dir", type=click.Path(path_type=Path))
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for fidelity.json, the simulated requests.parquet and fidelity.html.")
@click.option("--request-overhead-ms", type=float, default=0.0, show_default=True,
              help="Delay each replayed request's entry into the engine by the server's "
              "per-request overhead (calibrate's fit report estimates it); latencies still "
              "count from the observed arrival.")
def fidelity(observed_dir: Path, scenario: Path, as_json: bool, out_dir: Path | None,
             request_overhead_ms: float) -> None:
    """Replay an observed run through SCENARIO and report the error per metric."""
    from servesim.real.fidelity import run_fidelity

    result = run_fidelity(observed_dir, scenario, request_overhead_s=request_overhead_ms / 1e3)
    for line in result.warnings:
        click.echo(f"WARNING: {line}", err=as_json)
    if out_dir is not None:
        from servesim.core.errors import ConfigError
        from servesim.real.fidelity_page import write_fidelity

        try:
            write_fidelity(result, out_dir)
        except OSError as e:
            raise ConfigError("--out", str(out_dir), "a folder that can be written "
                              f"({e.strerror or e})") from None
    if as_json:
        click.echo(json.dumps(result.report, indent=2, allow_nan=False))
        return
    _print_report(result.report)
    if out_dir is not None:
        click.echo(f"wrote {out_dir}/fidelity.json, requests.parquet and fidelity.html")


@click.command()
@click.option("--endpoint", required=True, help="Base URL of the server, e.g. "
              "http://127.0.0.1:8000 (its /v1/completions is probed).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for profile.csv, cost.toml, fit_report.json and fit_report.txt.")
@click.option("--model", default=None, help="Model name to request (default: the first "
              "/v1/models lists).")
@click.option("--first-token", type=click.Choice(["prefill", "decode"]), default="prefill",
              show_default=True, help="Which iteration emits the first token: the one that "
              "finishes the prompt (vLLM v1) or the next one.")
@click.option("--max-prompt-tokens", type=click.IntRange(min=8), default=512, show_default=True,
              help="Longest probe prompt; keep it within the server's token budget.")
@click.option("--max-batch", type=click.IntRange(min=1), default=16, show_default=True,
              help="Largest decode batch probed.")
@click.option("--timeout-s", type=click.FloatRange(min=1.0), default=120.0, show_default=True,
              help="Per-request timeout, seconds.")
@click.option("--time-scale", type=float, default=1.0, show_default=True,
              help="Wall seconds per engine second (an emulator started with --time-scale): "
              "measured times are divided by it.")
@quiet_option
def calibrate(endpoint: str, out_dir: Path, model: str | None, first_token: str,
              max_prompt_tokens: int, max_batch: int, timeout_s: float, time_scale: float,
              quiet: bool) -> None:
    """Probe a live server and fit the cost model: profile CSV, [engine.cost] and report."""
    from servesim.real.calibrate import CalibrationPlan, run_calibration

    plan = CalibrationPlan.default(max_prompt_tokens=max_prompt_tokens, max_batch=max_batch,
                                   first_token=first_token, timeout_s=timeout_s,
                                   time_scale=time_scale)
    with progress_bar("calibrate", quiet=quiet) as bar:
        result = run_calibration(endpoint, out_dir, plan, model=model, progress=bar)
    click.echo(result.text)


COMMANDS = [fidelity, calibrate]
