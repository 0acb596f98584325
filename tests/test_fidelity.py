"""``servesim fidelity``: a run simulated and written in the observed schema replays with zero
error and the same verdict; a perturbed one gives the error it was perturbed by; bad input is
one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from servesim.cli.main import run_cli
from servesim.core.rng import Streams
from servesim.engine.reference import ReferenceStepper
from servesim.metrics.summary import add_latency_columns
from servesim.real.fidelity import records_series, run_fidelity
from servesim.scenario import load_scenario

SCENARIO = """
[run]
seed = 3
requests = {requests}

[workload.arrival]
kind = "poisson"
rate_per_s = {rate}

[workload.prompt_tokens]
kind = "uniform"
low = 16
high = 96

[workload.output_tokens]
kind = "uniform"
low = 4
high = 40

[engine]
batching = "{batching}"
token_budget = 256
max_batch_size = 16

[engine.kv]
block_tokens = 16
blocks = 512

[engine.cost]
kind = "affine"
d0_ms = 20.0
d1_ms = 0.01
decode_ms = 0.5
"""


def write_scenario(folder: Path, requests: int = 150, rate: float = 4.0,
                   batching: str = "sarathi") -> Path:
    path = folder / "scenario.toml"
    path.write_text(SCENARIO.format(requests=requests, rate=rate, batching=batching),
                    encoding="utf-8")
    return path


def observed_from_simulation(scenario_path: Path, out: Path) -> pd.DataFrame:
    """Simulate the scenario and write its records as an observed run would be written."""
    scenario = load_scenario(scenario_path)
    requests = scenario.workload.source(Streams(scenario.run.seed),
                                        n_requests=scenario.run.requests).rest()
    stepper = ReferenceStepper(requests, scenario.engine, scenario.cost)
    run = stepper.run()
    frame = add_latency_columns(run.requests)
    frame["status"] = frame["status"].astype(str)
    frame["error"] = ""
    frame["token_times_s"] = [list(r.token_times) for r in stepper.reqs[:len(frame)]]
    frame["prompt_tokens_server"] = -1
    out.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out / "requests.parquet", index=False)
    return frame


@pytest.fixture(scope="module", params=["sarathi", "vllm_v1"])
def run_dir(tmp_path_factory, request) -> tuple[Path, Path]:
    """An observed run simulated on each output convention ("decode" for sarathi, "prefill"
    for vllm_v1)."""
    folder = tmp_path_factory.mktemp("fidelity")
    scenario = write_scenario(folder, batching=request.param)
    observed_from_simulation(scenario, folder / "observed")
    return folder / "observed", scenario


def _json(args: list[str], capsys) -> dict:
    code = run_cli(args)
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def _cells(report: dict):
    for metric in ("ttft_s", "itl_s", "tpot_s", "e2e_s"):
        for stat in ("mean", "p50", "p90", "p99"):
            yield f"{metric}.{stat}", report["metrics"][metric][stat]
    yield "throughput_rps", report["throughput_rps"]


def test_exact_replay_has_zero_error(run_dir, capsys) -> None:
    observed, scenario = run_dir
    report = _json(["fidelity", str(observed), str(scenario), "--json"], capsys)
    for name, cell in _cells(report):
        assert cell["observed"] is not None, name
        assert cell["rel_error"] == pytest.approx(0.0, abs=1e-9), name
    assert report["e2e_median_request_rel_error"] == pytest.approx(0.0, abs=1e-9)
    assert report["verdict"]["observed"] == report["verdict"]["simulated"]
    assert report["requests"]["compared"] == report["requests"]["observed_rows"] == 150


def test_perturbed_run_gives_its_error(run_dir, tmp_path, capsys) -> None:
    """Every observed time after arrival stretched by 10%: E2E, TTFT, ITL, TPOT observed are
    1.1x the simulated ones, so rel_error = 1/1.1 - 1."""
    observed, scenario = run_dir
    frame = pd.read_parquet(observed / "requests.parquet")
    a = frame["arrival_s"]
    for col in ("first_token_s", "finish_s", "admitted_s"):
        frame[col] = a + 1.1 * (frame[col] - a)
    frame["token_times_s"] = [list(ai + 1.1 * (np.asarray(t) - ai))
                              for ai, t in zip(a, frame["token_times_s"], strict=True)]
    (tmp_path / "obs").mkdir()
    frame.to_parquet(tmp_path / "obs" / "requests.parquet", index=False)
    report = _json(["fidelity", str(tmp_path / "obs"), str(scenario), "--json"], capsys)
    expected = 1 / 1.1 - 1
    for metric in ("ttft_s", "tpot_s", "e2e_s"):
        assert report["metrics"][metric]["mean"]["rel_error"] == pytest.approx(expected)
    assert report["metrics"]["itl_s"]["mean"]["rel_error"] == pytest.approx(expected)
    assert report["e2e_median_request_rel_error"] == pytest.approx(abs(expected))
    assert report["e2e_median_request_signed_rel_error"] == pytest.approx(expected)


def test_overload_gives_the_same_verdict(tmp_path, capsys) -> None:
    scenario = write_scenario(tmp_path, requests=300, rate=40.0, batching="vllm_v1")
    observed_from_simulation(scenario, tmp_path / "obs")
    report = _json(["fidelity", str(tmp_path / "obs"), str(scenario), "--json"], capsys)
    assert report["verdict"] == {"observed": "unstable", "simulated": "unstable"}
    assert report["metrics"]["e2e_s"]["p99"]["rel_error"] == pytest.approx(0.0, abs=1e-9)


def test_failed_and_refused_rows(run_dir, tmp_path, capsys) -> None:
    """Refused rows are not replayed; failed rows are replayed but not compared."""
    observed, scenario = run_dir
    frame = pd.read_parquet(observed / "requests.parquet")
    frame.loc[[3, 7], "status"] = "failed"
    frame.loc[[3, 7], ["finish_s"]] = np.nan
    frame.loc[[3, 7], "error"] = "stream closed"
    frame.loc[[10], "status"] = "refused"
    (tmp_path / "obs").mkdir()
    frame.to_parquet(tmp_path / "obs" / "requests.parquet", index=False)
    report = _json(["fidelity", str(tmp_path / "obs"), str(scenario), "--json"], capsys)
    req = report["requests"]
    assert req["replayed"] == 149 and req["not_replayed_refused"] == 1
    assert req["compared"] == 147


def test_without_token_times(run_dir, tmp_path, capsys) -> None:
    """A run without token_times_s (e.g. a benchmark that kept only TTFT and E2E) compares
    everything but ITL, and says so on stderr."""
    observed, scenario = run_dir
    frame = pd.read_parquet(observed / "requests.parquet").drop(columns=["token_times_s"])
    (tmp_path / "obs").mkdir()
    frame.to_parquet(tmp_path / "obs" / "requests.parquet", index=False)
    assert run_cli(["fidelity", str(tmp_path / "obs"), str(scenario), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert "no token_times_s column" in captured.err
    assert report["metrics"]["itl_s"]["mean"]["observed"] is None
    assert report["metrics"]["e2e_s"]["mean"]["rel_error"] == pytest.approx(0.0, abs=1e-9)


def test_out_writes_files(run_dir, tmp_path, capsys) -> None:
    observed, scenario = run_dir
    out = tmp_path / "fid"
    report = _json(["fidelity", str(observed), str(scenario), "--json", "--out", str(out)],
                   capsys)
    assert json.loads((out / "fidelity.json").read_text()) == report
    sim = pd.read_parquet(out / "requests.parquet")
    assert len(sim) == 150 and "token_times_s" in sim.columns
    page = (out / "fidelity.html").read_text()
    assert page.count("plotly-graph-div") >= 4 and "fidelity" in page


def test_table_output(run_dir, capsys) -> None:
    observed, scenario = run_dir
    assert run_cli(["fidelity", str(observed), str(scenario)]) == 0
    out = capsys.readouterr().out
    assert "TTFT" in out and "verdict" in out and "+0.00%" in out


def test_server_settings_warn(run_dir, tmp_path) -> None:
    observed, scenario = run_dir
    (tmp_path / "obs").mkdir()
    (tmp_path / "obs" / "requests.parquet").write_bytes((observed / "requests.parquet")
                                                        .read_bytes())
    (tmp_path / "obs" / "summary.json").write_text(json.dumps(
        {"source": "observed", "server": {"max_num_seqs": 32, "max_num_batched_tokens": 256}}))
    result = run_fidelity(tmp_path / "obs", scenario)
    assert result.warnings == ["the server reported max_num_seqs = 32 but the scenario has "
                               "engine.max_batch_size = 16"]


def test_series_counts_requests() -> None:
    records = pd.DataFrame({"arrival_s": [0.0, 1.0], "prompt_tokens": [10, 20],
                            "output_tokens": [2, 1], "finish_s": [3.0, 2.0]})
    series = records_series(records, [np.array([2.0, 3.0]), np.array([2.0])])
    last = series.iloc[-1]
    assert last["waiting"] == 0 and last["running"] == 0 and last["backlog_tokens"] == 0
    at = series.set_index("start_s").groupby(level=0).last()
    assert at.loc[1.0, "waiting"] == 2 and at.loc[1.0, "backlog_tokens"] == 33
    assert at.loc[2.0, "running"] == 1 and at.loc[2.0, "backlog_tokens"] == 1


def _fails(args: list[str], capsys, *needles: str) -> None:
    assert run_cli(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_bad_input(run_dir, tmp_path, capsys) -> None:
    observed, scenario = run_dir
    _fails(["fidelity", str(tmp_path / "nope"), str(scenario), "--json"], capsys, "OBSERVED_DIR")
    (tmp_path / "empty").mkdir()
    _fails(["fidelity", str(tmp_path / "empty"), str(scenario)], capsys, "requests.parquet")
    (tmp_path / "cols").mkdir()
    pd.DataFrame({"arrival_s": [0.0], "prompt_tokens": [3]}).to_parquet(
        tmp_path / "cols" / "requests.parquet")
    _fails(["fidelity", str(tmp_path / "cols"), str(scenario)], capsys, "missing",
           "output_tokens")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "requests.parquet").write_text("not parquet")
    _fails(["fidelity", str(tmp_path / "junk"), str(scenario)], capsys, "Parquet")
    _fails(["fidelity", str(observed), str(tmp_path / "missing.toml")], capsys, "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text(SCENARIO.format(requests=10, rate=1.0, batching="sarathy"))
    _fails(["fidelity", str(observed), str(bad)], capsys, "engine.batching", "sarathi")
    net = tmp_path / "net.toml"
    net.write_text("[network]\n")
    _fails(["fidelity", str(observed), str(net)], capsys, "network")


@pytest.mark.slow
def test_observed_emulator_replays_within_jitter(tmp_path, capsys) -> None:
    """observe against servesim's own emulator, then fidelity with the same scenario: the
    errors are the emulator's timing jitter and the per-request overhead of HTTP only. At
    light load a TTFT is about one 25 ms iteration, so the overhead is compared in absolute
    terms, and ``--request-overhead-ms`` takes it out."""
    emulator = pytest.importorskip("servesim.real.emulator")
    scenario = write_scenario(tmp_path, requests=40, rate=3.0, batching="vllm_v1")
    with emulator.run_emulator_in_thread(load_scenario(scenario)) as url:
        assert run_cli(["observe", str(scenario), "--endpoint", url, "--out",
                        str(tmp_path / "obs"), "--quiet"]) == 0
    capsys.readouterr()
    report = _json(["fidelity", str(tmp_path / "obs"), str(scenario), "--json"], capsys)
    assert report["requests"]["compared"] == 40
    assert report["warnings"] == []
    # Bounds loose enough for a loaded machine; unloaded, the errors are below 1%.
    for metric in ("itl_s", "e2e_s"):
        cell = report["metrics"][metric]["mean"]
        assert abs(cell["rel_error"]) < 0.10, (metric, cell)
    ttft = report["metrics"]["ttft_s"]["mean"]
    overhead_s = ttft["observed"] - ttft["simulated"]
    assert -0.002 <= overhead_s < 0.05, ttft
    shifted = _json(["fidelity", str(tmp_path / "obs"), str(scenario), "--json",
                     "--request-overhead-ms", str(max(overhead_s, 0.0) * 1e3)], capsys)
    assert abs(shifted["metrics"]["ttft_s"]["mean"]["rel_error"]) <= \
        abs(ttft["rel_error"]) + 1e-9


def test_a_scaled_emulator_run_is_named(run_dir, tmp_path) -> None:
    """An observed run of the emulator at another time scale has wall times that are scale x
    the simulated ones: the replay says so rather than reporting a plain error."""
    observed, scenario = run_dir
    (tmp_path / "obs").mkdir()
    (tmp_path / "obs" / "requests.parquet").write_bytes((observed / "requests.parquet")
                                                        .read_bytes())
    (tmp_path / "obs" / "summary.json").write_text(json.dumps(
        {"source": "observed", "server": {"config": {"time_scale": "0.5"}}}))
    result = run_fidelity(tmp_path / "obs", scenario)
    assert any("time_scale = 0.5" in w for w in result.warnings)
