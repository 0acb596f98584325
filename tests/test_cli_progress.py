"""Progress of the long commands: a bar on stderr saying what is being done, with an ETA, only
on a terminal and never with --quiet; the library's progress callbacks with totals known up
front; a command line that imports no numpy for --help and --version; the network's
virtual-station warning printed before the runs."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import click
import pytest
from rich.console import Console

from servesim.cli import progress as cli_progress
from servesim.cli.commands import LAZY_COMMANDS, short_help
from servesim.cli.main import cli, run_cli
from servesim.cli.progress import describe_params, progress_bar, sweep_reporter

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "servesim" / "scenarios" / "demo.toml"
RYBKO = ROOT / "examples" / "network_rybko_stolyar.toml"
HEAVY = ("numpy", "pandas", "scipy", "duckdb", "matplotlib", "pyarrow")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_ETA = re.compile(r"eta +(-:--:--|\d+:\d\d:\d\d)")


def _terminal() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=True, force_interactive=True, width=200,
                   color_system=None), buf


def _text(buf: io.StringIO) -> str:
    return _ANSI.sub("", buf.getvalue())


@pytest.fixture
def terminal(monkeypatch) -> io.StringIO:
    """stderr as a terminal for the commands run in this process; returns what it shows."""
    console, buf = _terminal()
    monkeypatch.setattr(cli_progress, "stderr_console", lambda: console)
    return buf


def _recorder() -> tuple[list[tuple[str, float, float]], object]:
    calls: list[tuple[str, float, float]] = []
    return calls, lambda what, done, total: calls.append((what, done, total))


def _short(table: dict, horizon_s: float) -> dict:
    table = json.loads(json.dumps(table))
    table["run"] = {"seed": 0, "horizon_s": horizon_s, "warmup_s": 0.0}
    return table


def _demo_table() -> dict:
    import tomllib

    return tomllib.loads(DEMO.read_text())


# -- the helper ---------------------------------------------------------------------------------


def test_bar_names_what_is_done_and_shows_an_eta():
    console, buf = _terminal()
    with progress_bar("stability", console=console) as bar:
        assert bar is not None
        bar("load 0.9, seed 3/6", 2.5, 6)
    text = _text(buf)
    assert "stability: load 0.9, seed 3/6" in text
    assert "2/6" in text
    assert _ETA.search(text), text


def test_quiet_or_no_terminal_draws_nothing():
    console, buf = _terminal()
    with progress_bar("stability", quiet=True, console=console) as bar:
        assert bar is None
    plain = io.StringIO()
    with progress_bar("stability", console=Console(file=plain)) as bar:
        assert bar is None
    assert buf.getvalue() == "" and plain.getvalue() == ""


def test_sweep_points_are_described_by_their_parameters():
    point = SimpleNamespace(point_id="3f0c", params={"engine.batching": "vllm", "load": 0.8},
                            seed=1)
    calls, record = _recorder()
    report = sweep_reporter(record, SimpleNamespace(points=[point]))
    report("", 0, 1)
    report("3f0c", 1, 1)
    assert calls == [("1 points to run", 0, 1),
                     ("engine.batching=vllm load=0.8 seed=1 done", 1, 1)]
    assert describe_params({"policy": "orca"}, 2) == "policy=orca seed=2"


# -- commands -----------------------------------------------------------------------------------


def test_stability_bar_on_stderr_json_clean_on_stdout(terminal, capsys):
    code = run_cli(["stability", str(DEMO), "--loads", "0.5", "--seeds", "2", "--horizon-s",
                    "10", "--set", "run.warmup_s=0", "--json"])
    assert code == 0
    out = capsys.readouterr().out
    assert json.loads(out)[0]["load"] == 0.5
    text = _text(terminal)
    assert "stability: load 0.5 (" in text and "seed 2/2" in text
    assert _ETA.search(text)


def test_quiet_stability_draws_nothing_on_a_terminal(terminal, capsys):
    code = run_cli(["stability", str(DEMO), "--loads", "0.5", "--seeds", "2", "--horizon-s",
                    "10", "--set", "run.warmup_s=0", "--quiet"])
    assert code == 0
    assert terminal.getvalue() == ""
    assert capsys.readouterr().err == ""


def test_run_off_a_terminal_prints_nothing_on_stderr(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "servesim", "run", str(DEMO), "--out",
                           str(tmp_path / "o"), "--set", "run.requests=300", "--set",
                           "run.warmup_s=0", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    json.loads(proc.stdout)


def test_run_bar_names_the_run(terminal, tmp_path, capsys):
    assert run_cli(["run", str(DEMO), "--out", str(tmp_path / "o"), "--set",
                    "run.requests=300", "--set", "run.warmup_s=0", "--json"]) == 0
    json.loads(capsys.readouterr().out)
    assert "run: sarathi, seed 0, 300 requests" in _text(terminal)


def _sweep_file(tmp_path: Path) -> Path:
    (tmp_path / "base.toml").write_text(DEMO.read_text(), encoding="utf-8")
    path = tmp_path / "sweep.toml"
    path.write_text(textwrap.dedent("""
        [sweep]
        scenario = "base.toml"
        seeds = 1
        set = { "run.requests" = 300, "run.warmup_s" = 0.0 }
        [grid]
        "engine.batching" = ["orca"]
    """), encoding="utf-8")
    return path


def test_sweep_lines_off_a_terminal_name_the_parameters(tmp_path, capsys):
    path = _sweep_file(tmp_path)
    assert run_cli(["sweep", str(path), "--out", str(tmp_path / "a"), "--executor",
                    "serial"]) == 0
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("point ")]
    assert len(lines) == 1 and lines[0].endswith("(1/1): engine.batching=orca seed=0")
    assert run_cli(["sweep", str(path), "--out", str(tmp_path / "b"), "--executor",
                    "serial", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


# -- the library's callbacks --------------------------------------------------------------------


def _monotone_to_the_end(calls: list[tuple[str, float, float]], total: int) -> None:
    assert calls, "no progress reported"
    assert {c[2] for c in calls} == {total}
    dones = [c[1] for c in calls]
    assert dones == sorted(dones) and dones[-1] == total


def test_study_counts_loads_times_seeds():
    from servesim.analysis import study

    calls, record = _recorder()
    study(_short(_demo_table(), 5.0), [0.5, 0.7], [0, 1, 2], base_rate=13.87, progress=record)
    _monotone_to_the_end(calls, 6)
    assert calls[0][0] == "load 0.5 (6.935 req/s), seed 1/3"
    assert any(c[0].startswith("load 0.7 (") and c[0].endswith("seed 3/3") for c in calls)


def test_lambda_search_total_is_known_up_front():
    from servesim.analysis import policy_lambda_stars

    calls, record = _recorder()
    policy_lambda_stars(_short(_demo_table(), 5.0), ["sarathi", "vllm"], seeds=[0, 1],
                        horizon_s=5.0, lo=5.0, hi=20.0, iterations=2, interval=True,
                        progress=record)
    # 2 policies x 2 seeds x 2 steps, twice (pooled bisection, then per-seed bisections).
    _monotone_to_the_end(calls, 16)
    assert calls[0][0] == "sarathi, bisection 1/2 at 12.5 req/s, seed 1/2"
    assert any(c[0].startswith("vllm, per-seed bisection, seed 1 (2/2), step 2/2")
               for c in calls)


def test_network_study_counts_seeds():
    from servesim.cluster import load_network, study_network

    calls, record = _recorder()
    study_network(load_network(RYBKO), [3, 4], horizon_s=5.0, progress=record)
    _monotone_to_the_end(calls, 2)
    assert calls[0][0] == "seed 1/2 (seed 3)"


# -- the network's warning comes before the runs ------------------------------------------------


class _Stop(Exception):
    pass


@pytest.mark.parametrize("as_json", [False, True])
def test_virtual_station_warning_before_any_run(monkeypatch, capsys, as_json):
    import servesim.cluster

    seen = {}

    def no_runs(*args, **kwargs):
        got = capsys.readouterr()
        seen.update(out=got.out, err=got.err)
        raise _Stop

    monkeypatch.setattr(servesim.cluster, "study_network", no_runs)
    with pytest.raises(_Stop):
        run_cli(["network", str(RYBKO), *(["--json"] if as_json else [])])
    shown, other = (seen["err"], seen["out"]) if as_json else (seen["out"], seen["err"])
    assert shown.startswith("WARNING: virtual station A2+B2")
    assert "WARNING" not in other


# -- a light command line -----------------------------------------------------------------------


@pytest.mark.parametrize("args", [["--version"], ["--help"]])
def test_version_and_help_import_nothing_heavy(args):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "servesim", *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loaded = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}
    if args == ["--help"]:
        for name in LAZY_COMMANDS:
            assert f"  {name} " in proc.stdout


def test_import_servesim_is_light():
    code = ("import sys, servesim; print(sorted(m for m in sys.modules "
            f"if m.split('.')[0] in {HEAVY!r}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.stdout.strip() == "[]", proc.stderr


def test_help_listed_without_import_matches_the_commands():
    ctx = click.Context(cli)
    for name, module in LAZY_COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command is not None and command.callback.__module__ == f"servesim.cli.{module}"
        for limit in (45, 1000):
            assert command.get_short_help_str(limit) == short_help(name, limit)
