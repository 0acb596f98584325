"""The LLM-level predictions study (examples/llm_predictions.py), scaled down: its structure, its
fallbacks, and one robust fact: with exact predictions, SPJF's mean latency is below FCFS's at
load 0.9 (the paired difference over seeds has a 99% CI above zero)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from servesim.engine.ordered import run_ordered

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "llm_predictions.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("servesim_example_llm_predictions", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_study_structure(study, tmp_path):
    scenario = study.base_scenario(synthetic=True)
    runs = study.study(scenario, loads=[0.9], seeds=[0], n_requests=40)
    n_orders = 2 + len(study.TRAIL_C)
    assert len(runs) == 1 + n_orders * len(study.PREDICTORS)
    assert set(runs["order"]) == {"fcfs", "spjf", "sprpt",
                                  *(f"trail_c{c:g}" for c in study.TRAIL_C)}
    assert (runs["completed"] == 40).all() and not runs["stopped"].any()
    assert (runs["priority_preemptions"] <= runs["preemptions"]).all()
    # c = 0 never preempts for priority; FCFS and SPJF never do.
    quiet = runs["order"].isin(["fcfs", "spjf", "trail_c0"])
    assert (runs.loc[quiet, "priority_preemptions"] == 0).all()
    table = study.summarise(runs)
    assert len(table) == len(runs)
    best = study.best_c(table)
    assert len(best) == len(study.PREDICTORS) and best["order"].str.startswith("trail_c").all()


def test_script_writes_only_into_out_and_skips_without_the_trace(study, tmp_path, monkeypatch,
                                                                  capsys):
    out = tmp_path / "out"
    assert study.main(["--synthetic", "--requests", "30", "--seeds", "0", "--loads", "0.5",
                       "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["runs.csv", "table.csv"]
    monkeypatch.setattr(study, "DATA", tmp_path / "absent.csv")
    assert study.main(["--requests", "30"]) == 0
    assert "Azure trace not found" in capsys.readouterr().out


def test_oracle_spjf_beats_fcfs_at_high_load(study):
    """Paired over seeds (the same requests for both), d = E2E_mean(FCFS) - E2E_mean(SPJF,
    oracle) at load 0.9 x lambda*: the 99% Student-t interval of mean(d) lies above 0."""
    scenario = study.base_scenario(synthetic=True)
    diffs = []
    for seed in range(6):
        requests = study.requests_at(scenario, 0.9, seed, 400)
        fcfs, spjf = (study.measure(run_ordered(requests, scenario.engine, scenario.cost, order,
                                                predictor, seed), "", "")["e2e_mean_s"]
                      for order, predictor in (("fcfs", None), ("spjf", {"kind": "oracle"})))
        diffs.append(fcfs - spjf)
    d = np.asarray(diffs)
    half = stats.t.ppf(0.995, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    assert d.mean() - half > 0, (d.mean(), half)
