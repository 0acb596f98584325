"""The command line, run as a subprocess, and the output directory it writes (only in tmp_path)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from servesim.cli.main import run_cli
from servesim.scenario import load_scenario

SMALL = """
[run]
seed = 3
requests = 300
warmup_s = 1.0

[workload]
arrival = { kind = "poisson", rate_per_s = 8.0 }
prompt_tokens = { kind = "deterministic", value = 129 }
output_tokens = { kind = "deterministic", value = 20 }

[engine]
batching = "sarathi"
token_budget = 512
kv = { block_tokens = 16, blocks = 2048 }
cost = { kind = "staircase", c_ms = 11.28, a_ms = 35.47, b0 = 128 }

[slo]
ttft_s = 2.0
tpot_s = 0.2
"""


def servesim(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "servesim.cli.main", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def scenario_file(tmp_path: Path, text: str = SMALL) -> Path:
    path = tmp_path / "small.toml"
    path.write_text(text, encoding="utf-8")
    return path


def assert_one_error_line(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr + proc.stdout
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


# -- errors ---------------------------------------------------------------------------------------


def test_bad_field_one_line_exit_2(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, SMALL.replace('batching = "sarathi"', 'batching = "sarathy"'))
    proc = servesim("validate", path, cwd=tmp_path)
    assert_one_error_line(proc, "engine.batching", "did you mean 'sarathi'?")


def test_unknown_section_one_line(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, SMALL.replace("[engine]", "[engin]"))
    proc = servesim("run", path, "--out", tmp_path / "out", cwd=tmp_path)
    assert_one_error_line(proc, "did you mean 'engine'?")
    assert not (tmp_path / "out").exists()


def test_bad_override_one_line(tmp_path: Path) -> None:
    proc = servesim("validate", scenario_file(tmp_path), "--set", "engine.token_budgt=5",
                    cwd=tmp_path)
    assert_one_error_line(proc, "engine.token_budgt", "token_budget")


def test_toml_syntax_error_one_line(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "[run]\nrequests = = 3\n")
    proc = servesim("validate", path, cwd=tmp_path)
    assert_one_error_line(proc, "small.toml", "line 2")


def test_missing_file_one_line(tmp_path: Path) -> None:
    proc = servesim("validate", tmp_path / "nope.toml", cwd=tmp_path)
    assert_one_error_line(proc, "nope.toml")


def test_usage_error_exits_2(tmp_path: Path) -> None:
    proc = servesim("run", scenario_file(tmp_path), cwd=tmp_path)  # --out missing
    assert proc.returncode == 2
    assert "--out" in proc.stderr and "Traceback" not in proc.stderr
    assert servesim("frobnicate", cwd=tmp_path).returncode == 2


# -- validate -------------------------------------------------------------------------------------


def test_validate_ok(tmp_path: Path) -> None:
    path = scenario_file(tmp_path)
    proc = servesim("validate", path, "--set", "engine.token_budget=256", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok: ")
    assert len(proc.stdout.splitlines()) == 1
    assert "300 requests" in proc.stdout and "token_budget 256" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.toml"]


def test_validate_json(tmp_path: Path) -> None:
    proc = servesim("validate", scenario_file(tmp_path), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] is True and out["scenario"]["run"]["requests"] == 300
    assert out["resolved"]["kv_blocks"] == 2048


# -- run and demo ---------------------------------------------------------------------------------


def test_run_writes_three_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = servesim("run", scenario_file(tmp_path), "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == \
        ["iterations.parquet", "requests.parquet", "summary.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "small.toml"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True and summary["status"] == "complete"
    assert summary["seed"] == 3 and summary["arrived"] == 300 and summary["completed"] == 300
    assert summary["scenario"]["engine"]["batching"] == "sarathi"
    assert set(summary["versions"]) == {"servesim", "python", "numpy"}
    requests = pd.read_parquet(out / "requests.parquet")
    assert len(requests) == 300 and {"ttft_s", "tpot_s", "e2e_s"} <= set(requests.columns)
    iterations = pd.read_parquet(out / "iterations.parquet")
    assert len(iterations) > 0 and "demand_tokens" in iterations.columns
    assert "TTFT" in proc.stdout and "throughput" in proc.stdout and str(out) in proc.stdout


def test_run_json_and_seed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = servesim("run", scenario_file(tmp_path), "--out", out, "--seed", "11", "--json",
                    "--set", "run.requests=50", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["seed"] == 11 and summary["arrived"] == 50
    assert summary == json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_demo(tmp_path: Path) -> None:
    proc = servesim("demo", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "servesim-demo"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["servesim-demo"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True and summary["completed"] == 20000
    # 75% of capacity: stable, so TTFT stays well inside its 2 s objective on average.
    assert summary["ttft_s"]["mean"] < 2.0
    assert "servesim-demo" in proc.stdout
    # ... then a 48-point sweep of four systems at four loads, and its self-contained report
    report = out / "sweep" / "report.html"
    assert report.is_file() and "servesim-demo/sweep/report.html" in proc.stdout
    assert len(list((out / "sweep" / "points").iterdir())) == 48


# -- status of interrupted and failed runs --------------------------------------------------------


def test_failed_run_marks_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import servesim.experiments.outputs as outputs

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("engine exploded")

    monkeypatch.setattr(outputs, "simulate", boom)
    out = tmp_path / "out"
    out.mkdir()
    (out / "requests.parquet").write_text("stale")
    with pytest.raises(RuntimeError):
        outputs.run_to_dir(load_scenario(scenario_file(tmp_path)), out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["status"] == "failed"
    assert summary["error"] == "RuntimeError: engine exploded"
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]


def test_interrupt_exits_130_and_marks_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import servesim.experiments.outputs as outputs

    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs, "simulate", interrupt)
    out = tmp_path / "out"
    code = run_cli(["run", str(scenario_file(tmp_path)), "--out", str(out)])
    assert code == 130
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: interrupted")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["status"] == "interrupted"
    assert "KeyboardInterrupt" in summary["error"]
