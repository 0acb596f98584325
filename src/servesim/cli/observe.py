"""``servesim observe``: drive a live OpenAI-compatible server with a scenario's workload and
write what happened in the simulator's schema; or, with ``--import-bench``, convert the detailed
results of ``vllm bench serve`` into that schema."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from servesim.cli.progress import progress_bar, quiet_option


def _server_params(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs, values read as JSON where they parse (numbers, true), else text."""
    from servesim.core.errors import ConfigError

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--server-param", pair, "KEY=VALUE, e.g. max_num_seqs=32")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _stop_flag() -> Any:
    from servesim.engine.stop import StopFlag

    ctx = click.get_current_context(silent=True)
    stop = ctx.find_root().obj if ctx is not None else None
    return stop if isinstance(stop, StopFlag) else None


def _write(summary: dict[str, Any], requests: Any, iterations: Any, out_dir: Path) -> None:
    from servesim.real.observed import write_observed

    try:
        write_observed(summary, requests, iterations, out_dir)
    except OSError as e:
        raise click.ClickException(f"cannot write outputs to {e.filename or out_dir}: "
                                   f"{e.strerror or e}") from None


def _print(summary: dict[str, Any], out_dir: Path, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary, indent=2, allow_nan=False, default=str))
        return
    from servesim.cli.run_table import print_run
    from servesim.cli.tables import console as make_console

    console = make_console()
    print_run(summary, console)
    statuses = ", ".join(f"{k} {v}" for k, v in (summary.get("statuses") or {}).items() if v)
    console.print(f"requests: {statuses or 'none'}", highlight=False, soft_wrap=True)
    console.print(f"outputs: {out_dir}/ (summary.json, requests.parquet, iterations.parquet)",
                  highlight=False, soft_wrap=True)


def _mismatch_line(summary: dict[str, Any]) -> None:
    n = summary.get("prompt_token_mismatches") or 0
    if n:
        click.echo(f"warning: {n} requests' prompts were counted differently by the server "
                   "than asked (prompt_tokens_server in requests.parquet; try --fit-prompts on)",
                   err=True)
    for status in ("failed", "timeout", "refused"):
        count = (summary.get("statuses") or {}).get(status, 0)
        if count:
            click.echo(f"warning: {count} requests {status} (their error is in requests.parquet)",
                       err=True)


def _import(bench: Path, scenario: Path | None, out_dir: Path, overrides: Sequence[str],
            as_json: bool) -> None:
    from servesim.real.bench_import import import_bench

    loaded = None
    if scenario is not None:
        from servesim.cli.file_kinds import load_cli_scenario

        loaded = load_cli_scenario(scenario, overrides)
    summary, requests, iterations = import_bench(bench, loaded)
    _write(summary, requests, iterations, out_dir)
    _print(summary, out_dir, as_json)


@click.command()
@click.argument("scenario", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--endpoint", default=None, metavar="URL",
              help="Base URL of the server, e.g. http://127.0.0.1:8000 (without /v1).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for summary.json, requests.parquet and iterations.parquet.")
@click.option("--model", default=None, help="Model name (default: the first the server lists).")
@click.option("--prompts", "prompts_file", default=None,
              type=click.Path(dir_okay=False, path_type=Path),
              help="JSONL of real prompts (text under prompt, instruction or text), used in "
                   "order; the server's count is then each request's prompt length.")
@click.option("--api", type=click.Choice(["completions", "chat"]), default="completions",
              show_default=True, help="Streamed /v1/completions or /v1/chat/completions.")
@click.option("--concurrency", type=click.IntRange(min=1), default=256, show_default=True,
              help="Most requests in flight from this client.")
@click.option("--timeout-s", type=click.FloatRange(min=0, min_open=True), default=600.0,
              show_default=True, help="Per-request limit, seconds from sending.")
@click.option("--fit-prompts", "fit", type=click.Choice(["auto", "on", "off"]), default="auto",
              show_default=True, help="Fit synthetic prompts to the server's tokenizer through "
                                      "its /tokenize endpoint (auto: when it has one).")
@click.option("--seed", type=int, default=None, help="Root seed (overrides run.seed).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a scenario field, as in 'servesim run'.")
@click.option("--server-param", "server_params", multiple=True, metavar="KEY=VALUE",
              help="Record a server setting in summary.json's server (e.g. max_num_seqs=32).")
@click.option("--no-vllm-extras", is_flag=True,
              help="Send only OpenAI's fields (no min_tokens, ignore_eos): for servers that "
                   "refuse them; output lengths are then not forced.")
@click.option("--import-bench", "bench", default=None,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Convert a 'vllm bench serve --save-result --save-detailed' JSON file "
                   "instead of observing (SCENARIO optional: its warm-up and SLO).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@quiet_option
def observe(scenario: Path | None, endpoint: str | None, out_dir: Path, model: str | None,
            prompts_file: Path | None, api: str, concurrency: int, timeout_s: float, fit: str,
            seed: int | None, overrides: Sequence[str], server_params: Sequence[str],
            no_vllm_extras: bool, bench: Path | None, as_json: bool, quiet: bool) -> None:
    """Drive a live OpenAI-compatible server at --endpoint with SCENARIO's workload (open or
    closed loop) and record every request in the simulator's schema under --out."""
    from servesim.core.errors import ConfigError

    if bench is not None:
        _import(bench, scenario, out_dir, overrides, as_json)
        return
    if scenario is None:
        raise click.UsageError("missing argument 'SCENARIO' (or give --import-bench FILE)")
    if endpoint is None:
        raise click.UsageError("missing option '--endpoint' (the server's base URL)")
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError("--endpoint", endpoint, "a URL such as http://127.0.0.1:8000")
    # An OpenAI-style base URL ending in /v1 (as `servesim serve` prints) names the same server.
    endpoint = endpoint.rstrip("/").removesuffix("/v1")
    _observe(scenario, endpoint, out_dir, overrides, seed, as_json, quiet,
             {"model": model, "api": api, "concurrency": concurrency, "timeout_s": timeout_s,
              "fit": fit, "vllm_extras": not no_vllm_extras},
             prompts_file, _server_params(server_params))


def _observe(scenario_path: Path, endpoint: str, out_dir: Path, overrides: Sequence[str],
             seed: int | None, as_json: bool, quiet: bool, options: dict[str, Any],
             prompts_file: Path | None, params: dict[str, Any]) -> None:
    from servesim.api import run_header
    from servesim.cli.file_kinds import load_cli_scenario
    from servesim.core.rng import Streams
    from servesim.real.observe import observe as run_observe
    from servesim.real.observed import summarize_observed
    from servesim.real.prompts import load_prompts

    scenario = load_cli_scenario(scenario_path, overrides)
    used_seed = scenario.run.seed if seed is None else seed
    Streams(used_seed)   # a bad seed is a config error, before anything is sent or written
    prompts = load_prompts(prompts_file) if prompts_file is not None else None
    stop = _stop_flag()
    with progress_bar("observe", quiet=quiet) as bar:
        progress = None if bar is None else \
            (lambda done, total: bar(f"{endpoint}: {done} requests ended", done, total))
        header = {**run_header(scenario, used_seed), "source": "observed", "endpoint": endpoint}
        began: list[bool] = []
        try:
            with contextlib.nullcontext() if stop is None else stop.deferred():
                # The folder says "running" only once the endpoint answered: an unreachable
                # one leaves it as it was.
                run = run_observe(scenario, endpoint, prompts=prompts, seed=used_seed,
                                  stop=stop, progress=progress,
                                  on_ready=lambda: began.append(_begin(out_dir, header)),
                                  **options)
        except Exception as e:
            if began:
                from servesim.experiments.outputs import write_summary

                write_summary({"complete": False, **header, "status": "failed",
                               "error": f"{type(e).__name__}: {e}"}, out_dir)
            raise
    summary, requests, iterations = summarize_observed(run, params)
    _write(summary, requests, iterations, out_dir)
    _mismatch_line(summary)
    if run.interrupted is not False:
        raise KeyboardInterrupt(f"interrupted; outputs in {out_dir} are marked incomplete "
                                f"(partial results kept: {len(requests)} requests)")
    _print(summary, out_dir, as_json)


def _begin(out_dir: Path, header: dict[str, Any]) -> bool:
    from servesim.real.observed import begin_output

    try:
        begin_output(out_dir, header)
    except OSError as e:
        raise click.ClickException(f"cannot write outputs to {e.filename or out_dir}: "
                                   f"{e.strerror or e}") from None
    return True


COMMANDS = [observe]
