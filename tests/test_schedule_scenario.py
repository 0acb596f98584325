"""The [schedule] table: parsed into an ordering and a predictor, run through ``servesim run``,
and bad names reported in one line with the closest valid one."""

from __future__ import annotations

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


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(text, encoding="utf-8")
    return path


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
])
def test_parse_schedule_errors(table, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_schedule(table)
    assert "\n" not in str(info.value)


def test_schedule_scenario_runs_through_servesim_run(tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli(["run", str(write(tmp_path, BASE + TRAIL)), "--out", str(out)]) == 0
    df = pd.read_parquet(out / "requests.parquet")
    assert (df["status"] == "finished").all()
    assert {"predicted_tokens", "priority_preemptions", "priority_recomputed_tokens"} <= \
        set(df.columns)
    assert (df["priority_preemptions"] <= 2).all()


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
