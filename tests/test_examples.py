"""The runnable examples in examples/: their scenarios validate, their scripts run, and scaled-down
runs show the qualitative facts the examples are about (Fig. 1 of arXiv 2504.07347 and the
reference's "Stability contrast"), with wide margins.

Margins were chosen from seeds 0-5 of the same scaled-down runs; each assertion holds with at
least a factor ~1.3 to spare on all of them.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from servesim import load_scenario

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
AZURE_DATA = REPO.parent / "shared" / "data" / "azure_llm_2023_conv.csv"
needs_azure = pytest.mark.skipif(not AZURE_DATA.is_file(),
                                 reason=f"Azure trace not found at {AZURE_DATA}")


def load_example(name: str) -> ModuleType:
    """Import examples/<name>.py as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"servesim_example_{name}",
                                                  EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fig1() -> ModuleType:
    return load_example("fig1_contrast")


@pytest.fixture(scope="module")
def azure() -> ModuleType:
    return load_example("azure_replay")


@pytest.fixture(scope="module")
def kv() -> ModuleType:
    return load_example("kv_pressure")


# -- the scenario files --------------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "fig1_contrast", "kv_pressure", "wait_memory", "batch_cap_region",
    pytest.param("azure_replay", marks=needs_azure)])
def test_example_scenario_loads_and_validates(name: str) -> None:
    scenario = load_scenario(EXAMPLES / f"{name}.toml")
    assert scenario.describe()


def test_fig1_scenario_matches_the_reference(fig1: ModuleType) -> None:
    scenario = load_scenario(fig1.SCENARIO)
    assert fig1.lambda_star(scenario) == pytest.approx(512 / 0.15316 / 241, rel=1e-9)
    assert scenario.engine.token_budget == 512
    assert scenario.engine.max_batch_size >= 1 << 30          # no k_max in the model
    # the cache holds every request of the longest run (< 15,000 arrivals) ten times over
    assert scenario.engine.kv.blocks * scenario.engine.kv.block_tokens > 10 * 15_000 * 241
    assert scenario.workload.arrival.rate_per_s == pytest.approx(
        0.75 * fig1.lambda_star(scenario), rel=1e-3)


@needs_azure
def test_azure_scenario_sizes_kv_from_gpu_memory() -> None:
    scenario = load_scenario(EXAMPLES / "azure_replay.toml")
    # floor((80e9 * 0.9 - 2 * 6.74e9) / (2 * 32 * 4096 * 2 * 16)), as the TOML comment says
    assert scenario.engine.kv.blocks == 6976


def test_kv_pressure_scenario_block_bytes_come_from_the_model() -> None:
    scenario = load_scenario(EXAMPLES / "kv_pressure.toml")
    assert scenario.engine.kv.block_bytes == 16 * 2 * 32 * 32 * 128 * 2


# -- Fig. 1, scaled down to 200 s at 0.75 lambda* -------------------------------------------------


@pytest.fixture(scope="module")
def at_075(fig1: ModuleType) -> dict:
    """Each system at 0.75 lambda* for 200 s: (result, N on a 1-s grid)."""
    grid = np.arange(0.0, 201.0, 1.0)
    out = {}
    for system in fig1.SYSTEMS:
        result = fig1.run_one(system, 0.75, ["run.horizon_s=200"])
        out[system] = (result, fig1.in_system_at(result, grid))
    return out


def test_fastertransformer_diverges_far_above_orca_and_sarathi(at_075: dict) -> None:
    ft, n_ft = at_075["fastertransformer"]
    assert n_ft[200] > 1.6 * n_ft[100]                  # still growing (about 2x)
    assert ft.summary["completed"] < 0.1 * ft.summary["arrived"]
    for other in ("orca", "sarathi"):
        assert ft.summary["in_system_at_end"] > 8 * at_075[other][0].summary["in_system_at_end"]


def test_vllm_holds_several_times_more_than_orca_and_sarathi(fig1: ModuleType,
                                                             at_075: dict) -> None:
    vllm = fig1.time_average_in_system(at_075["vllm"][0])
    for other in ("orca", "sarathi"):
        assert vllm > 3 * fig1.time_average_in_system(at_075[other][0])


def test_fig1_memory_never_binds(at_075: dict) -> None:
    for result, _ in at_075.values():
        assert result.summary["preemptions"] == 0
        assert result.summary["rejected"] == 0


def test_orca_and_sarathi_stay_flat_and_low(at_075: dict) -> None:
    for system in ("orca", "sarathi"):
        result, n = at_075[system]
        assert n.max() < 250
        assert result.summary["completed"] > 0.9 * result.summary["arrived"]


def test_vllm_bounded_at_075_but_growing_at_085(fig1: ModuleType) -> None:
    probes = np.array([200.0, 400.0, 600.0])
    low = fig1.in_system_at(fig1.run_one("vllm", 0.75, ["run.horizon_s=600"]), probes)
    high = fig1.in_system_at(fig1.run_one("vllm", 0.85, ["run.horizon_s=600"]), probes)
    assert low.max() < 1000                              # hovers around 500-700
    assert high[2] > 1500 and high[2] - high[0] > 700    # about 2400, +1300 in 400 s


def test_fig1_main_writes_only_under_the_cwd_by_default(fig1: ModuleType, tmp_path: Path,
                                                         monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert fig1.main(["--systems", "orca", "--loads", "0.5", "--set", "run.horizon_s=30"]) == 0
    assert os.listdir(tmp_path) == ["servesim-examples"]
    out = tmp_path / "servesim-examples" / "fig1_contrast"
    assert sorted(p.name for p in out.iterdir()) == ["in_system.csv", "orca-0.50", "table.csv"]
    assert (out / "orca-0.50" / "summary.json").is_file()
    assert "orca" in capsys.readouterr().out


def test_fig1_script_runs_from_the_repo_root(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "examples/fig1_contrast.py", "--out", str(tmp_path / "o"),
         "--systems", "sarathi", "--loads", "0.75", "--set", "run.horizon_s=20"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "sarathi" in done.stdout
    assert (tmp_path / "o" / "table.csv").is_file()


# -- Azure replay ---------------------------------------------------------------------------------


def test_azure_skips_cleanly_without_the_trace(azure: ModuleType, tmp_path: Path, monkeypatch,
                                               capsys) -> None:
    monkeypatch.setattr(azure, "DATA", tmp_path / "absent.csv")
    assert azure.main(["--out", str(tmp_path / "out")]) == 0
    assert "skipped" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


@needs_azure
def test_azure_replay_head_of_trace(azure: ModuleType, tmp_path: Path) -> None:
    head = ["run.requests=1500"]
    sarathi = azure.run_one("sarathi", 512, head)
    vllm = azure.run_one("vllm", 8192, head)
    prompts = sarathi.requests["prompt_tokens"]
    assert sarathi.summary["rejected"] == 0                     # Sarathi chunks any prompt
    assert vllm.summary["rejected"] == int((prompts > 8192).sum())
    for result in (sarathi, vllm):
        s = result.summary
        assert s["completed"] + s["rejected"] == 1500
    row = azure.measure(sarathi)
    assert row["ttft_p50_s"] <= row["ttft_p99_s"]
    azure.write_outputs(sarathi, tmp_path / "sarathi")
    assert (tmp_path / "sarathi" / "summary.json").is_file()


@needs_azure
def test_azure_main_runs_the_chosen_systems(azure: ModuleType, tmp_path: Path, capsys) -> None:
    argv = ["--out", str(tmp_path / "out"), "--systems", "sarathi:1024",
            "--set", "run.requests=300"]
    assert azure.main(argv) == 0
    assert "sarathi  1024" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sarathi-1024", "table.csv"]


# -- KV pressure ----------------------------------------------------------------------------------


def test_kv_pressure_preempts_by_recompute_or_swap(kv: ModuleType) -> None:
    short = ["run.horizon_s=200", "run.warmup_s=20"]
    block_bytes = load_scenario(kv.SCENARIO).engine.kv.block_bytes
    for system, budget in kv.SYSTEMS:
        recompute = kv.measure(kv.run_one(system, budget, "recompute", 5.0, short))
        swap = kv.measure(kv.run_one(system, budget, "swap", 5.0, short))
        assert recompute["preemptions"] > 0 and swap["preemptions"] > 0   # the cache binds
        assert recompute["recomputed_tokens"] > 0 and recompute["swapped_gb"] == 0
        assert swap["swapped_gb"] > 0
        assert round(swap["swapped_gb"] * 1e9) % block_bytes == 0        # whole blocks move


def test_learned_study_skips_cleanly_without_the_data(tmp_path, monkeypatch, capsys) -> None:
    study = load_example("learned_study")
    monkeypatch.setattr(study, "DATA", tmp_path / "absent")
    assert study.main(["--out", str(tmp_path / "out")]) == 0
    assert "skipped" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_learned_study_quick_run(tmp_path, capsys) -> None:
    """The study's quick grid runs on the shared AlpacaEval data, and learning to rank with
    the learned predictor gives SPJF's schedule, as the study checks in every run."""
    study = load_example("learned_study")
    if not (study.DATA / "alpacaeval_prompts.jsonl").exists():
        pytest.skip("AlpacaEval data not available")
    assert study.main(["--quick", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "table.csv").exists()
