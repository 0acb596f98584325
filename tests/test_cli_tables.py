"""What the CLI prints: capacity for every batching system, tables that never cut their content,
numbers with units, one-line usage errors and ``validate`` on every kind of file."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from servesim.cli.analysis import _flatten, _print_report, _print_stability
from servesim.cli.capacity_report import capacity_report, plain
from servesim.cli.main import run_cli
from servesim.cli.tables import number
from servesim.engine.config import BATCHING
from servesim.scenario import scenario_from_dict
from servesim.theory import Quantity

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# The case that used to end in a traceback: a Sarathi engine whose budget is shorter than
# every prompt (Sarathi chunks them, so the scenario is valid).
SARATHI_290 = """
[run]
requests = 100

[workload]
arrival = { kind = "poisson", rate_per_s = 2.0 }
prompt_tokens = { kind = "deterministic", value = 290 }
output_tokens = { kind = "deterministic", value = 50 }

[engine]
batching = "sarathi"
token_budget = 128
max_batch_size = 100
kv = { block_tokens = 16, blocks = 100000 }
"""

COSTS = {
    "staircase": {"kind": "staircase"},
    "piecewise": {"kind": "piecewise", "c_ms": 10.0, "a_ms": 0.1, "b0": 64},
    "affine": {"kind": "affine", "d0_ms": 10.0, "d1_ms": 0.001},
    "affine_decode": {"kind": "affine", "d0_ms": 10.0, "d1_ms": 0.0, "decode_ms": 0.1},
    "roofline": {"kind": "roofline", "model": "llama-2-7b", "gpu": "a100-80gb"},
    "constant": {"kind": "constant", "iteration_ms": 20.0},
}


@pytest.fixture(autouse=True)
def _no_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)


def make(batching: str = "sarathi", *, cost: dict | None = None, cap: int | None = 8,
         deterministic: bool = True):
    engine = {"batching": batching, "token_budget": 256,
              "kv": {"block_tokens": 16, "blocks": 4000}, "cost": cost or COSTS["staircase"]}
    if cap is not None:
        engine["max_batch_size"] = cap
    if batching == "nested_wait":
        engine["wait"] = {"segments": [10]}
    lengths = ({"prompt_tokens": {"kind": "deterministic", "value": 100},
                "output_tokens": {"kind": "deterministic", "value": 20}} if deterministic else
               {"prompt_tokens": {"kind": "uniform", "low": 10, "high": 200},
                "output_tokens": {"kind": "geometric", "mean": 30}})
    return scenario_from_dict({"run": {"requests": 10},
                               "workload": {"arrival": {"kind": "poisson", "rate_per_s": 5.0},
                                            **lengths},
                               "engine": engine})


def printed(report: dict) -> str:
    buf = io.StringIO()
    _print_report(report, Console(file=buf, width=160))
    return buf.getvalue()


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = run_cli([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


# -- capacity: what applies to the scenario's batching system -------------------------------------


def test_sarathi_with_prompts_longer_than_the_budget(tmp_path: Path, capsys) -> None:
    path = tmp_path / "sarathi.toml"
    path.write_text(SARATHI_290)
    code, out, err = cli(capsys, "capacity", path)
    assert code == 0, err
    assert "Traceback" not in out + err and err == ""
    assert "skipped fastertransformer: applies to batching = 'fastertransformer' only" in out
    assert "fastertransformer.batch_requests" not in out
    # k_max = 100 < b_max = 128: the cap binds, so its region is shown.
    assert "batch-size-cap region" in out
    code, out, _ = cli(capsys, "capacity", path, "--json")
    report = json.loads(out)
    assert report["skipped"]["fastertransformer"] == \
        "applies to batching = 'fastertransformer' only"
    assert "batch_cap_region" in report and "fastertransformer" not in report


@pytest.mark.parametrize("batching", BATCHING)
def test_each_system_gets_only_its_own_quantities(batching: str) -> None:
    report = capacity_report(make(batching))
    for key in ("token_capacity", "mean_tokens_per_request", "request_capacity", "load"):
        assert isinstance(report[key], Quantity)
    assert "batch_cap_region" in report       # k_max = 8 < b_max = 256 for every system
    for own in ("fastertransformer", "static"):
        if batching == own:
            assert own in report and own not in report["skipped"]
        else:
            assert own not in report
            assert report["skipped"][own] == f"applies to batching = {own!r} only"
    # The WAIT fluid model needs an affine cost: skipped for the staircase, with the reason.
    assert "wait_fluid" in report["skipped"]
    assert ("affine" in report["skipped"]["wait_fluid"]) == (batching == "wait")
    assert report["notes"] and batching in report["notes"][0]
    json.dumps(plain(report), allow_nan=False)


def test_static_without_a_cap_has_its_cycle() -> None:
    report = capacity_report(make("static", cap=None))
    # k = floor(256 / 100) = 2 requests per cycle; no cap, so no region.
    assert report["static"]["batch_requests"].value == 2
    assert "min(k_max" not in report["static"]["batch_requests"].formula
    assert "not set" in report["skipped"]["batch_cap_region"]


def test_a_cap_that_never_binds_is_skipped_with_the_reason() -> None:
    report = capacity_report(make("orca", cap=1000))
    assert "k_max = 1000 >= b_max = 256" in report["skipped"]["batch_cap_region"]


def test_random_lengths_skip_the_cycle_with_the_reason() -> None:
    report = capacity_report(make("fastertransformer", deterministic=False))
    assert "deterministic" in report["skipped"]["fastertransformer"]


def test_a_prompt_longer_than_the_budget_is_not_applicable() -> None:
    # Loading rejects this for fastertransformer; a Scenario built by other means must still
    # get a reason, not a traceback.
    sc = make("fastertransformer")
    sc = dataclasses.replace(sc, engine=dataclasses.replace(sc.engine, token_budget=64))
    reason = capacity_report(sc)["skipped"]["fastertransformer"]
    assert reason.startswith("not applicable: a whole prompt of 100 tokens does not fit the "
                             "token budget 64")


def test_wait_with_an_affine_cost_has_its_fluid_equilibrium() -> None:
    report = capacity_report(make("wait", cost=COSTS["affine"]))
    fluid = report["wait_fluid"]
    # S = lambda (l'+1)(l + l'/2) = 5 * 21 * 110; load = d1 S with d1 = 1e-6 s/token.
    assert fluid["work"].value == pytest.approx(5 * 21 * 110)
    assert fluid["load"].value == pytest.approx(1e-6 * 5 * 21 * 110)
    assert fluid["kv_capacity"].value == 4000 * 16


@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("batching", ["fastertransformer", "sarathi", "wait"])
def test_every_cost_kind_prints_without_error(cost: str, batching: str) -> None:
    for cap in (8, None):
        report = capacity_report(make(batching, cost=COSTS[cost], cap=cap))
        text = printed(report)
        assert "token_capacity" in text
        json.dumps(plain(report), allow_nan=False)


def test_json_has_everything_the_table_shows() -> None:
    report = capacity_report(make("fastertransformer"))
    text = printed(report)
    data = plain(report)
    for name, value in _flatten(report):
        if isinstance(value, Quantity):
            node = data
            for part in name.split("."):
                node = node[part]
            assert node["formula"] == value.formula and name in text
            assert value.formula in " ".join(text.split())
    for name, reason in report["skipped"].items():
        assert data["skipped"][name] == reason and f"skipped {name}: {reason}" in text
    for note in data["notes"]:
        assert note in " ".join(text.split())
    assert data["batch_cap_region"]["formula"] in " ".join(text.split())


# -- numbers and widths ---------------------------------------------------------------------------


def test_numbers_carry_units_and_sensible_digits() -> None:
    assert number(0.749982, "1") == "0.750"
    assert number(0.749982, "") == "0.750"
    assert number(3342.907, "tokens/s") == "3343 tokens/s"
    assert number(3.0, "requests") == "3 requests"
    assert number(0.5566731, "requests/s") == "0.5567 requests/s"
    assert number(123456.7, "tokens/s") == "123457 tokens/s"
    assert number(None) == "-" and number(float("nan"), "s") == "-"
    assert number(620.3208) == "620.3"


def test_capacity_piped_keeps_names_and_formulas_whole(capsys) -> None:
    code, out, err = cli(capsys, "capacity", EXAMPLES / "fig1_contrast.toml",
                         "--set", "engine.batching=fastertransformer")
    assert code == 0, err
    assert "…" not in out
    assert "| 0.750 " in out.replace("│", "|") and "0.749982" not in out
    for whole in ("fastertransformer.batch_requests", "fastertransformer.request_capacity",
                  "fastertransformer.token_capacity",
                  "rho = sum_k lambda_k (m_p^k + m_d^k) / mu* = (10.403*241) / 3342.91",
                  "cycle = t(k v_p) + v_d * t(k) = 0.15316 s + 112 * 0.04675 s"):
        assert whole in out


def test_capacity_in_a_narrow_terminal_folds_instead_of_cutting(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    code, out, err = cli(capsys, "capacity", EXAMPLES / "fig1_contrast.toml",
                         "--set", "engine.batching=fastertransformer")
    assert code == 0, err
    assert "…" not in out
    assert max(len(line) for line in out.splitlines()) <= 60
    # The first column, read down: a folded name continues on the next line.
    names = "".join(line.split("│")[1].strip() for line in out.splitlines()
                    if line.startswith("│"))
    assert "fastertransformer.batch_requests" in names
    assert "fastertransformer.request_capacity" in names


def test_stability_table_shows_whole_rows_and_the_evidence(capsys) -> None:
    frame = pd.DataFrame([{"load": 0.8, "arrival_rate": 11.0968, "slope_mean": -1.5,
                           "slope_lo": -20.25, "slope_hi": 17.125, "fluid_slope": 0.0,
                           "completion_ratio": 0.99871, "state": "stable",
                           "evidence": "backlog slope -1.5 (sd 3, n=3); 99% CI [-20.25, 17.13] "
                                       "contains 0; completion ratio 0.9987 >= 1 - eps = 0.98"}])
    _print_stability(frame, 13.871)
    out = capsys.readouterr().out
    assert "…" not in out
    assert "lambda* = 13.87 req/s" in out and "0.999" in out and "11.1 req/s" in out
    assert "load 0.800: backlog slope -1.5 (sd 3, n=3); 99% CI [-20.25, 17.13] contains 0" in out


def test_network_piped_keeps_tables_whole(capsys) -> None:
    code, out, err = cli(capsys, "network", EXAMPLES / "network_rybko_stolyar.toml",
                         "--seeds", "1", "--horizon-s", "20", "--quiet")
    assert code == 0, err
    assert "…" not in out
    # A title wider than its table wraps onto a second line, whole.
    assert "engines: measured vs traffic equations (rho_j = sum_k lambda_k (m_p^k + m_d^k) / " \
           "mu*_j)" in " ".join(out.split())


# -- usage errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "fragments"), [
    (["run", "x.toml"], ["servesim run: missing option '--out'", "'servesim run --help'"]),
    (["capacity"], ["servesim capacity: missing argument 'SCENARIO'"]),
    (["run", "x.toml", "--out", "o", "--seeed", "3"],
     ["no such option '--seeed'", "did you mean '--seed' or '--set'?"]),
    (["capacit", "x.toml"], ["no such command 'capacit'; did you mean 'capacity'?"]),
    (["valdate", "x.toml"], ["no such command 'valdate'; did you mean 'validate'"]),
    (["stability", "x.toml", "--seeds", "x"], ["invalid value for '--seeds': 'x'"]),
    (["run", "x.toml", "extra", "--out", "o"], ["unexpected extra argument (extra)"]),
])
def test_usage_errors_are_one_line_exit_2(capsys, args: list[str], fragments: list[str]) -> None:
    code, out, err = cli(capsys, *args)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Usage:" not in err and "Traceback" not in err and out == ""
    for fragment in fragments:
        assert fragment in lines[0]


# -- validate recognises every kind of file -------------------------------------------------------


def test_validate_a_network_file(capsys) -> None:
    path = EXAMPLES / "network_agent_dag.toml"
    code, out, err = cli(capsys, "validate", path)
    assert code == 0, err
    assert out.startswith(f"ok: {path}: network of 2 engines: planner (sarathi), tools "
                          "(sarathi x2)") and len(out.splitlines()) == 1
    assert f"'servesim network {path}'" in out
    code, out, _ = cli(capsys, "validate", path, "--json")
    data = json.loads(out)
    assert data["ok"] is True and data["kind"] == "network" and "network" in data["scenario"]


def test_validate_a_bad_network_names_the_network_field(tmp_path: Path, capsys) -> None:
    text = (EXAMPLES / "network_agent_dag.toml").read_text()
    path = tmp_path / "net.toml"
    path.write_text(text.replace('batching = "sarathi"', 'batching = "sarath"', 1))
    code, _, err = cli(capsys, "validate", path)
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: network.engines.") and "did you mean 'sarathi'?" in err
    assert "'workload'" not in err


def test_validate_a_sweep_file(capsys) -> None:
    code, out, err = cli(capsys, "validate", EXAMPLES / "sweep_policies.toml")
    assert code == 0, err
    assert "sweep 'sweep_policies': 48 points over engine.batching, load" in out


def test_validate_an_mg1_file(capsys) -> None:
    code, out, err = cli(capsys, "validate", EXAMPLES / "mg1_table.toml")
    assert code == 0, err
    assert "M/G/1 table: 9 policies" in out and "servesim theory" in out


def test_scenario_commands_name_the_command_for_another_kind(tmp_path: Path, capsys) -> None:
    path = EXAMPLES / "network_agent_dag.toml"
    for args in (["run", path, "--out", tmp_path / "out"], ["capacity", path]):
        code, _, err = cli(capsys, *args)
        assert code == 2 and len(err.splitlines()) == 1
        assert f"this is a network file: run it with 'servesim network {path}'" in err
    assert not (tmp_path / "out").exists()
    code, _, err = cli(capsys, "validate", path, "--set", "run.seed=1")
    assert code == 2 and err.startswith("error: --set:")
