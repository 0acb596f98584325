"""The [schedule] table: parsed into an ordering and a predictor, run through ``servesim run``,
and bad names reported in one line with the closest valid one."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from servesim.api import simulate
from servesim.cli.main import run_cli
from servesim.core.errors import ConfigError
from servesim.policies.ordering import FCFS, Trail
from servesim.policies.schedule import parse_schedule
from servesim.scenario import load_scenario

BASE = """
[run]
seed = 1
requests = 120

[workload]
arrival = { kind = "poisson", rate_per_s = 20.0 }
prompt_tokens = { kind = "uniform", low = 16, high = 200 }
output_tokens = { kind = "lognormal", mean = 60, cv = 1.0 }

[engine]
batching = "vllm"
token_budget = 2048
kv = { block_tokens = 16, blocks = 120 }
cost = { kind = "staircase", c_ms = 11.28, a_ms = 35.47, b0 = 128 }
"""

TRAIL = """
[schedule]
order = { kind = "trail", c = 0.5 }
predictor = { kind = "lognormal", sigma = 0.5 }
max_preemptions = 2
"""

SKIPPREDICT = """
[schedule]
order = { kind = "skippredict" }
predictor = { kind = "lognormal", sigma = 0.5, cost = { kind = "external", value = 2.0 } }
bit_predictor = { kind = "one_bit", threshold = 60, p_short_as_long = 0.1, p_long_as_short = 0.1 }
"""

ORACLE = {"kind": "oracle"}
BIT = {"kind": "one_bit", "threshold": 5, "p_short_as_long": 0.0, "p_long_as_short": 0.0}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(text, encoding="utf-8")
    return path


def run_scenario(tmp_path: Path, text: str) -> tuple[pd.DataFrame, Path]:
    """``servesim run`` on the scenario ``text``: its request records and output folder."""
    out = tmp_path / "out"
    assert run_cli(["run", str(write(tmp_path, text)), "--out", str(out)]) == 0
    return pd.read_parquet(out / "requests.parquet"), out


def test_parse_schedule_defaults_and_tables():
    plain = parse_schedule({})
    assert isinstance(plain.order, FCFS) and not plain.ordered
    trail = parse_schedule({"order": {"kind": "trail", "c": 0.5},
                            "predictor": {"kind": "oracle"}, "max_preemptions": 2})
    assert isinstance(trail.order, Trail) and trail.order.c == 0.5 and trail.ordered
    assert trail.max_preemptions == 2
    assert parse_schedule({"predictor": {"kind": "oracle"}}).ordered


@pytest.mark.parametrize(("table", "message"), [
    ({"order": "sprtp"}, "schedule.order.kind: got 'sprtp'.*did you mean 'sprpt'"),
    ({"ordr": "sprpt"}, "schedule.ordr.*did you mean 'order'"),
    ({"order": "spjf"}, "schedule.predictor: got None"),
    ({"order": "spjf", "predictor": {"kind": "orcale"}}, "did you mean 'oracle'"),
    ({"order": {"kind": "trail", "c": -1}, "predictor": {"kind": "oracle"}},
     "schedule.order.c: got -1"),
    ({"max_preemptions": -1}, "schedule.max_preemptions"),
    ({"order": "skippredict", "predictor": ORACLE},
     "schedule.bit_predictor: got None.*skippredict"),
    ({"order": "sprpt", "predictor": ORACLE, "bit_predictor": BIT},
     "schedule.bit_predictor: got 'one_bit'.*reads no cheap bit"),
    ({"order": "skippredict", "predictor": ORACLE, "bit_predictor": {"kind": "one_bti"}},
     "schedule.bit_predictor.kind.*did you mean 'one_bit'"),
    ({"order": "skippredict", "predictor": ORACLE, "bit_predictor": ORACLE},
     "schedule.bit_predictor.kind: got 'oracle'"),
    ({"order": "skippredict", "predictor": ORACLE,
      "bit_predictor": {**BIT, "treshold": 5}},
     "schedule.bit_predictor.treshold.*did you mean 'threshold'"),
    ({"order": "skippredict", "bit_predictor": BIT}, "schedule.predictor: got None"),
    ({"order": "skippredict", "predictor": ORACLE, "bit_predicter": BIT},
     "schedule.bit_predicter.*did you mean 'bit_predictor'"),
])
def test_parse_schedule_errors(table, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_schedule(table)
    assert "\n" not in str(info.value)


def test_schedule_scenario_runs_through_servesim_run(tmp_path, capsys):
    df, _ = run_scenario(tmp_path, BASE + TRAIL)
    assert (df["status"] == "finished").all()
    assert {"predicted_tokens", "priority_preemptions", "priority_recomputed_tokens"} <= \
        set(df.columns)
    assert (df["priority_preemptions"] <= 2).all()


def test_skippredict_scenario_runs_through_servesim_run(tmp_path: Path):
    df, out = run_scenario(tmp_path, BASE + SKIPPREDICT)
    assert (df["status"] == "finished").all()
    long = df["cheap_bit"] == 1.0
    assert 0 < long.sum() < len(df)
    assert (df["expensive_prediction"] == long).all()
    assert df["prediction_cost"].sum() == pytest.approx(2.0 * long.sum())
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["completed"] == len(df)
    assert summary["scenario"]["schedule"]["bit_predictor"]["threshold"] == 60
    assert summary["priority_preemptions"] == df["priority_preemptions"].sum()
    assert summary["expensive_predictions"] == df["expensive_prediction"].sum()
    assert summary["prediction_cost"] == pytest.approx(df["prediction_cost"].sum())


def test_fcfs_schedule_is_the_plain_engine(tmp_path):
    plain = simulate(load_scenario(write(tmp_path, BASE)))
    fcfs = simulate(load_scenario(write(tmp_path, BASE + '[schedule]\norder = "fcfs"\n')))
    pd.testing.assert_frame_equal(plain.requests, fcfs.requests)


def test_bad_order_name_errors_in_one_line_with_a_suggestion(tmp_path, capsys):
    path = write(tmp_path, BASE + '[schedule]\norder = "sprtp"\n')
    assert run_cli(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: schedule.order.kind") and "did you mean 'sprpt'" in err[0]
