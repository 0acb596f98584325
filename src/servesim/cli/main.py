"""The ``servesim`` command: a thin layer that parses, loads a scenario, runs it and prints.

Exit codes: 0 success; 2 a usage or configuration error (one ``error: ...`` line on stderr, no
traceback); 130 interrupted (outputs marked incomplete).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from servesim.core.errors import ServesimError
from servesim.scenario import Scenario, load_scenario

if TYPE_CHECKING:
    from servesim.api import SimResult

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


class _Group(click.Group):
    """Turns Ctrl-C inside a command into ``_Interrupted``, so click does not print "Aborted!"."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise _Interrupted("interrupted") from None


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
def run(scenario: Path, out_dir: Path, seed: int | None, overrides: Sequence[str],
        as_json: bool) -> None:
    """Run SCENARIO (a TOML file) and write its outputs to --out."""
    loaded = load_scenario(scenario, overrides)
    result = _run(loaded, out_dir, seed)
    _report(result, out_dir, as_json)


@cli.command()
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@_set_option
@_json_option
def validate(scenario: Path, overrides: Sequence[str], as_json: bool) -> None:
    """Check SCENARIO without running it; print a one-line description."""
    loaded = load_scenario(scenario, overrides)
    if as_json:
        from servesim.api import run_header

        header = run_header(loaded, loaded.run.seed)
        click.echo(json.dumps({"ok": True, "path": str(scenario), "description": loaded.describe(),
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
def demo(out_dir: Path, seed: int | None, as_json: bool) -> None:
    """Run the packaged demo scenario (Sarathi at 75% of its capacity, Fig. 1 of the paper),
    then a small sweep of four batching systems at four loads and its HTML report."""
    scenarios = resources.files("servesim.scenarios")
    with resources.as_file(scenarios.joinpath("demo.toml")) as path:
        loaded = load_scenario(path)
    result = _run(loaded, out_dir, seed)
    _report(result, out_dir, as_json)
    report = _demo_sweep(scenarios, out_dir / "sweep")
    if not as_json:
        click.echo(f"sweep and report: {report}")


def _demo_sweep(scenarios, sweep_dir: Path) -> Path:
    """Run the packaged demo sweep serially into ``sweep_dir`` and write its report."""
    from servesim.experiments.execute import run_sweep
    from servesim.experiments.sweep import load_sweep
    from servesim.report import build_report

    with resources.as_file(scenarios) as folder:
        run_sweep(load_sweep(Path(folder) / "demo_sweep.toml"), sweep_dir, executor="serial")
    return build_report(sweep_dir)


# -- running and printing -----------------------------------------------------------------------


def _run(scenario: Scenario, out_dir: Path, seed: int | None) -> SimResult:
    from servesim.experiments.outputs import run_to_dir

    try:
        with _progress() as progress:
            return run_to_dir(scenario, out_dir, seed=seed, progress=progress)
    except KeyboardInterrupt:
        raise _Interrupted(f"interrupted; outputs in {out_dir} are marked incomplete") from None
    except OSError as e:
        where = e.filename if e.filename else out_dir
        raise _OutputError(f"cannot write outputs to {where}: {e.strerror or e}") from None


@contextmanager
def _progress() -> Iterator[Callable[[float], None] | None]:
    """A rich progress bar on stderr when it is a terminal; otherwise no callback."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeElapsedColumn

    with Progress("simulating", BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("run", total=1.0)
        yield lambda fraction: bar.update(task, completed=min(max(fraction, 0.0), 1.0))


def _report(result: SimResult, out_dir: Path, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.summary, indent=2, allow_nan=False, default=str))
        return
    console = Console()
    console.print(summary_tables(result.summary))
    console.print(f"outputs: {out_dir}/ (summary.json, requests.parquet, iterations.parquet)",
                  highlight=False, soft_wrap=True)


def _fmt(value: Any, unit: str = "", digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}{unit}"
    return f"{value}{unit}"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def summary_tables(s: dict[str, Any]) -> Table:
    """A rich table of the headline metrics of a summary dict."""
    grid = Table(title="servesim run summary", show_header=True, header_style="bold")
    grid.add_column("metric")
    for name in ("value / mean", "p50", "p90", "p99"):
        grid.add_column(name, justify="right")
    rows: list[tuple[str, str]] = [
        ("seed", _fmt(s.get("seed"))),
        ("arrived", _fmt(s.get("arrived"))),
        ("completed", _fmt(s.get("completed"))),
        ("rejected", _fmt(s.get("rejected"))),
        ("in system at end", _fmt(s.get("in_system_at_end"))),
        ("measured window", _fmt(s.get("duration_s"), " s")),
        ("throughput", _fmt(s.get("throughput_rps"), " req/s")),
        ("token throughput", _fmt(s.get("throughput_tokens_per_s"), " tok/s")),
    ]
    for label, value in rows:
        grid.add_row(label, value, "", "", "")
    for label, key in (("TTFT (s)", "ttft_s"), ("TPOT (s)", "tpot_s"), ("E2E (s)", "e2e_s")):
        st = s.get(key) or {}
        grid.add_row(label, *(_fmt(st.get(k)) for k in ("mean", "p50", "p90", "p99")))
    more = [
        ("preemptions", _fmt(s.get("preemptions"))),
        ("KV utilisation (mean)", _pct(s.get("kv_utilization_mean"))),
        ("mean batch size", _fmt(s.get("mean_batch_size"))),
        ("non-work-conserving iters", _pct(s.get("non_work_conserving_fraction"))),
        ("goodput", _fmt(s.get("goodput_rps"), " req/s")),
        ("SLO attainment", _pct(s.get("slo_attainment"))),
    ]
    for label, value in more:
        grid.add_row(label, value, "", "", "")
    return grid


# -- entry point --------------------------------------------------------------------------------


def _fail(message: str, code: int) -> int:
    click.echo("error: " + " ".join(message.split()), err=True)
    return code


def run_cli(args: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code (never raises for a user error)."""
    try:
        rv = cli.main(args=list(args) if args is not None else None, prog_name="servesim",
                      standalone_mode=False)
    except click.exceptions.UsageError as e:
        e.show()
        return EXIT_USAGE
    except click.exceptions.ClickException as e:
        return _fail(e.format_message(), EXIT_USAGE)
    except ServesimError as e:
        return _fail(str(e), EXIT_USAGE)
    except _OutputError as e:
        return _fail(str(e), EXIT_USAGE)
    except (_Interrupted, click.exceptions.Abort, KeyboardInterrupt) as e:
        return _fail(str(e) or "interrupted", EXIT_INTERRUPTED)
    return rv if isinstance(rv, int) else 0


# Each command module lists its click commands in ``COMMANDS``. Such a module imports heavy
# libraries (plotting, executors) inside its commands, so ``servesim --help`` stays fast.
_COMMAND_MODULES = ("analysis", "theory", "network", "experiments")


def _register_commands() -> None:
    import importlib

    for name in _COMMAND_MODULES:
        module = importlib.import_module(f"servesim.cli.{name}")
        for command in module.COMMANDS:
            cli.add_command(command)


_register_commands()


def main() -> None:
    """Console-script entry point: exit with ``run_cli``'s code."""
    sys.exit(run_cli())


if __name__ == "__main__":
    main()
