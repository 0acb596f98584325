"""The ``servesim`` command: a thin layer that parses, loads a scenario, runs it and prints.

Exit codes: 0 success; 2 a usage or configuration error (one ``error: ...`` line on stderr, no
traceback); 130 interrupted by Ctrl-C (SIGINT), 143 by SIGTERM: either way a run keeps what it
simulated, in outputs marked incomplete (``cli/signals.py``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from servesim.cli.commands import LazyGroup
from servesim.cli.progress import (
    fraction_of,
    progress_bar,
    quiet_option,
    sweep_reporter,
)
from servesim.core.errors import ServesimError

if TYPE_CHECKING:
    from servesim.api import SimResult
    from servesim.scenario import Scenario

DEMO_OUT = "servesim-demo"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Interrupted(Exception):
    """Ctrl-C inside a command, carried past click (which would turn it into a bare Abort)."""


class _OutputError(Exception):
    """The output directory could not be written."""


_set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a scenario field, e.g. --set engine.token_budget=256 (repeatable; values are "
         "TOML, bare words are strings).")
_json_option = click.option("--json", "as_json", is_flag=True,
                            help="Print machine-readable JSON instead of tables.")
_seed_option = click.option("--seed", type=int, default=None,
                            help="Root seed (overrides run.seed).")


class _Group(LazyGroup):
    """Resolves the commands of other modules on demand (``LazyGroup``), and turns Ctrl-C
    inside a command into ``_Interrupted``, so click does not print "Aborted!"."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as e:
            raise _Interrupted(str(e) or "interrupted") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="servesim", prog_name="servesim")
def cli() -> None:
    """servesim: an iteration-level simulator of LLM inference engines."""


@cli.command()
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for summary.json, requests.parquet and iterations.parquet.")
@_seed_option
@_set_option
@_json_option
@quiet_option
def run(scenario: Path, out_dir: Path, seed: int | None, overrides: Sequence[str],
        as_json: bool, quiet: bool) -> None:
    """Run SCENARIO (a TOML file) and write its outputs to --out."""
    from servesim.cli.file_kinds import load_cli_scenario

    loaded = load_cli_scenario(scenario, overrides)
    result = _run(loaded, out_dir, seed, quiet)
    _report(result, out_dir, as_json)


@cli.command()
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@_set_option
@_json_option
def validate(scenario: Path, overrides: Sequence[str], as_json: bool) -> None:
    """Check SCENARIO (or a network, sweep or [mg1] file) without running it; print a one-line
    description."""
    from servesim.cli.file_kinds import load_cli_scenario, validate_other

    other = validate_other(scenario, overrides)
    if other is not None:
        kind, description, raw = other
        click.echo(json.dumps({"ok": True, "path": str(scenario), "kind": kind,
                               "description": description, "scenario": raw}, indent=2,
                              default=str) if as_json else f"ok: {scenario}: {description}")
        return
    loaded = load_cli_scenario(scenario, overrides)
    if as_json:
        from servesim.api import run_header

        header = run_header(loaded, loaded.run.seed)
        click.echo(json.dumps({"ok": True, "path": str(scenario), "kind": "scenario",
                               "description": loaded.describe(),
                               "scenario": header["scenario"], "resolved": header["resolved"]},
                              indent=2))
    else:
        click.echo(f"ok: {scenario}: {loaded.describe()}")


@cli.command()
@click.option("--out", "out_dir", default=DEMO_OUT, show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the demo's outputs.")
@_seed_option
@_json_option
@quiet_option
def demo(out_dir: Path, seed: int | None, as_json: bool, quiet: bool) -> None:
    """Run the packaged demo scenario (Sarathi at 75% of its capacity, Fig. 1 of the paper),
    then a small sweep of four batching systems at four loads and its HTML report."""
    from servesim.scenario import load_scenario

    scenarios = resources.files("servesim.scenarios")
    with resources.as_file(scenarios.joinpath("demo.toml")) as path:
        loaded = load_scenario(path)
    result = _run(loaded, out_dir, seed, quiet)
    _report(result, out_dir, as_json)
    report = _demo_sweep(scenarios, out_dir / "sweep", quiet)
    if not as_json:
        click.echo(f"sweep and report: {report}")


def _demo_sweep(scenarios, sweep_dir: Path, quiet: bool) -> Path:
    """Run the packaged demo sweep serially into ``sweep_dir`` and write its report."""
    from servesim.experiments.execute import run_sweep
    from servesim.experiments.sweep import load_sweep

    with resources.as_file(scenarios) as folder:
        sweep = load_sweep(Path(folder) / "demo_sweep.toml")
        with progress_bar("demo sweep", quiet=quiet) as bar:
            run_sweep(sweep, sweep_dir, executor="serial",
                      progress=None if bar is None else sweep_reporter(bar, sweep))
    with progress_bar("demo report", quiet=quiet) as bar:
        if bar is not None:
            bar(f"reading {sweep_dir}", 0, None)
        from servesim.report import build_report  # matplotlib: part of the wait

        return build_report(sweep_dir, progress=bar)


# -- running and printing -----------------------------------------------------------------------


def _run(scenario: Scenario, out_dir: Path, seed: int | None, quiet: bool = False) -> SimResult:
    from servesim.engine.stop import Interrupted, StopFlag
    from servesim.experiments.outputs import run_to_dir

    ctx = click.get_current_context(silent=True)
    stop = ctx.find_root().obj if ctx is not None else None
    stop = stop if isinstance(stop, StopFlag) else None   # run_cli's flag, if any
    try:
        with progress_bar("run", quiet=quiet, count=False) as bar:
            progress = fraction_of(bar, _run_label(scenario, seed))
            if progress is not None:
                progress(0.0)   # say what runs before the engine's first report
            return run_to_dir(scenario, out_dir, seed=seed, progress=progress, stop=stop)
    except Interrupted as e:
        kept = "nothing was simulated yet" if e.result is None else \
            f"partial results kept: {len(e.result.requests)} requests, " \
            f"{len(e.result.iterations)} iterations"
        raise _Interrupted(f"interrupted; outputs in {out_dir} are marked incomplete ({kept})") \
            from None
    except KeyboardInterrupt:
        raise _Interrupted(f"interrupted; outputs in {out_dir} are marked incomplete") from None
    except OSError as e:
        where = e.filename if e.filename else out_dir
        raise _OutputError(f"cannot write outputs to {where}: {e.strerror or e}") from None


def _run_label(scenario: Scenario, seed: int | None) -> str:
    """What a run's bar says: "sarathi, seed 0, 1000 s simulated"."""
    run = scenario.run
    length = f"{run.horizon_s:g} s simulated" if run.horizon_s is not None \
        else f"{run.requests} requests"
    return f"{scenario.engine.batching}, seed {run.seed if seed is None else seed}, {length}"


def _report(result: SimResult, out_dir: Path, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.summary, indent=2, allow_nan=False, default=str))
        return
    from servesim.cli.run_table import print_run
    from servesim.cli.tables import console as make_console

    console = make_console()
    print_run(result.summary, console)
    console.print(f"outputs: {out_dir}/ (summary.json, requests.parquet, iterations.parquet)",
                  highlight=False, soft_wrap=True)


# -- entry point --------------------------------------------------------------------------------


def _fail(message: str, code: int) -> int:
    click.echo("error: " + " ".join(message.split()), err=True)
    return code


def run_cli(args: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code (never raises for a user error).

    SIGINT and SIGTERM stop the command alike while it runs (``cli/signals.py``).
    """
    from servesim.cli.signals import exit_code, stop_on_signals

    with stop_on_signals() as stop:
        code = _run_cli(args, stop)
    return exit_code(stop) if code == EXIT_INTERRUPTED else code


def _run_cli(args: Sequence[str] | None, stop: Any) -> int:
    try:
        rv = cli.main(args=list(args) if args is not None else None, prog_name="servesim",
                      standalone_mode=False, obj=stop)
    except click.exceptions.UsageError as e:
        from servesim.cli.usage import usage_line

        return _fail(usage_line(e), EXIT_USAGE)
    except click.exceptions.ClickException as e:
        return _fail(e.format_message(), EXIT_USAGE)
    except ServesimError as e:
        return _fail(str(e), EXIT_USAGE)
    except _OutputError as e:
        return _fail(str(e), EXIT_USAGE)
    except (_Interrupted, click.exceptions.Abort, KeyboardInterrupt) as e:
        return _fail(str(e) or "interrupted", EXIT_INTERRUPTED)
    return rv if isinstance(rv, int) else 0


def main() -> None:
    """Console-script entry point: exit with ``run_cli``'s code."""
    sys.exit(run_cli())


if __name__ == "__main__":
    main()
