"""The table predictor: predictions read from a CSV, request i reading row i mod N."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from servesim.api import simulate
from servesim.core.errors import ConfigError, TraceError
from servesim.predictors import make_predictor
from servesim.scenario import load_scenario


def write_table(path: Path, values: list[float], column: str = "predicted_tokens") -> Path:
    path.write_text(f"prompt_id,{column}\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)))
    return path


def test_rows_are_read_in_order_and_cycle_from_the_offset(tmp_path):
    path = write_table(tmp_path / "p.csv", [10, 20, 30])
    predictor = make_predictor({"kind": "table", "path": str(path), "offset": 1})
    got = predictor.predict(np.ones(5), rng=np.random.default_rng(0))
    np.testing.assert_array_equal(got, [20, 30, 10, 20, 30])


def test_draws_read_neither_sizes_nor_seed(tmp_path):
    path = write_table(tmp_path / "p.csv", [5, 7])
    a = make_predictor({"kind": "table", "path": str(path)}, seed=1)
    b = make_predictor({"kind": "table", "path": str(path)}, seed=2)
    np.testing.assert_array_equal(a.predict(np.array([1.0, 900.0])),
                                  b.predict(np.array([50.0, 3.0])))


def test_a_bad_cell_names_its_line_and_column(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("prompt_id,predicted_tokens\n0,12\n1,-3\n")
    with pytest.raises(TraceError, match=r"p\.csv:3:2: got '-3', expected a positive number"):
        make_predictor({"kind": "table", "path": str(path)})


def test_a_missing_column_suggests_the_closest(tmp_path):
    path = write_table(tmp_path / "p.csv", [1, 2])
    with pytest.raises(ConfigError, match="predicted_tokens"):
        make_predictor({"kind": "table", "path": str(path), "column": "predicted_token"})


def test_an_absent_or_empty_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the predictions file"):
        make_predictor({"kind": "table", "path": str(tmp_path / "absent.csv")})
    (tmp_path / "e.csv").write_text("prompt_id,predicted_tokens\n")
    with pytest.raises(ConfigError, match="no rows after the header"):
        make_predictor({"kind": "table", "path": str(tmp_path / "e.csv")})


SCENARIO = """
[run]
seed = 0
requests = 6

[workload]
arrival = { kind = "poisson", rate_per_s = 5.0 }
prompt_tokens = { kind = "deterministic", value = 16 }
output_tokens = { kind = "deterministic", value = 8 }

[engine]
batching = "sarathi"
token_budget = 64
max_batch_size = 4
kv = { block_tokens = 16, blocks = 100 }
cost = { kind = "constant", iteration_ms = 10 }

[schedule]
order = "spjf"
predictor = { kind = "table", path = "preds.csv" }
"""


def test_a_scenario_reads_the_table_from_its_own_folder(tmp_path, monkeypatch):
    write_table(tmp_path / "preds.csv", [30, 10, 20])
    (tmp_path / "s.toml").write_text(SCENARIO)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    recs = simulate(load_scenario(tmp_path / "s.toml")).requests.sort_values("id")
    np.testing.assert_array_equal(recs["predicted_tokens"].to_numpy(), [30, 10, 20, 30, 10, 20])
