"""``servesim theory`` text output: long formulas wrap and are never cut with an ellipsis, off a
terminal the table is wide enough for them, and the progress bar is quiet unless stderr is a
terminal and --quiet is not given."""

import io

from rich.console import Console

from servesim.cli import progress as cli_progress
from servesim.cli import theory as cli_theory
from servesim.cli.main import run_cli
from servesim.theory.mg1.policies import POLICIES

SPEC = """\
[mg1]
policies = ["srpt", { kind = "trail", c = 0.5 }]
sizes = { kind = "exponential", mean = 1.0 }
load = 0.5
best_one_bit_threshold = false
"""


def _report() -> dict:
    rows = [{"policy": name, "label": name, "reads": POLICIES[name][0], "predictor": None,
             "mean_response_time": 1.0, "method": "closed form", "formula": POLICIES[name][2],
             "price_of_misprediction": None, "params": {}} for name in ("trail", "sprpt")]
    return {"source": "x", "sizes": {"kind": "exponential"}, "predictor": None,
            "loads": [{"load": 0.5, "arrival_rate": 0.5, "policies": rows}]}


def test_a_narrow_console_wraps_formulas_instead_of_cutting_them():
    out = io.StringIO()
    cli_theory.print_report(_report(), Console(file=out, width=50))
    text = out.getvalue()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 50
    # Every character of the longest formula is printed (wrapped over lines, never dropped).
    flat = "".join(text.split())
    for name in ("trail", "sprpt"):
        assert "".join(POLICIES[name][2].split()) in flat


def test_off_a_terminal_the_console_is_wide(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("COLUMNS", raising=False)
    assert cli_theory._console().width == cli_theory._FILE_WIDTH
    path = tmp_path / "s.toml"
    path.write_text(SPEC, encoding="utf-8")
    assert run_cli(["theory", str(path), "--quiet"]) == 0
    out = capsys.readouterr()
    assert "…" not in out.out and "trail(c=0.5)" in out.out and "true sizes" in out.out
    assert out.err == ""


def _terminal() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=True, force_interactive=True, width=120,
                   color_system=None), buf


def test_progress_waits_a_second_then_names_the_step(monkeypatch):
    with cli_theory.delayed_progress(quiet=False) as progress:   # pytest's stderr: no terminal
        assert progress is None
    console, buf = _terminal()
    monkeypatch.setattr(cli_progress, "stderr_console", lambda: console)
    with cli_theory.delayed_progress(quiet=True) as progress:
        assert progress is None
    with cli_theory.delayed_progress(quiet=False) as progress:
        progress("rho = 0.5: fcfs", 0, 2)        # within the first second: nothing drawn
    assert buf.getvalue() == ""
    monkeypatch.setattr(cli_theory, "_PROGRESS_AFTER_S", 0.0)
    with cli_theory.delayed_progress(quiet=False) as progress:
        progress("rho = 0.5: trail(c=0.5)", 1, 2)
    assert "theory: rho = 0.5: trail(c=0.5)" in buf.getvalue()
    assert "1/2" in buf.getvalue() and "eta" in buf.getvalue()
