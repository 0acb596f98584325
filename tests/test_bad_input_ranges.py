"""Numbers where floats stop meaning anything, warm-ups that leave nothing to measure, and empty
scenario files: each refused with one line naming the field."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest

from servesim.cli.main import run_cli
from servesim.core.errors import ConfigError
from servesim.metrics.summary import summarize
from servesim.scenario import apply_overrides, load_scenario, scenario_from_dict

BASE = {
    "run": {"requests": 200},
    "workload": {"arrival": {"kind": "poisson", "rate_per_s": 10.0},
                 "prompt_tokens": {"kind": "deterministic", "value": 100},
                 "output_tokens": {"kind": "deterministic", "value": 10}},
    "engine": {"batching": "vllm", "token_budget": 512},
}


def requests_frame() -> pd.DataFrame:
    """Two finished requests arriving at 1 s and 2 s, each done 1 s later."""
    return pd.DataFrame({"id": [0, 1], "class": "default", "arrival_s": [1.0, 2.0],
                         "prompt_tokens": [4, 4], "output_tokens": [2, 2],
                         "status": ["finished", "finished"], "admitted_s": [1.0, 2.0],
                         "first_token_s": [1.5, 2.5], "finish_s": [2.0, 3.0],
                         "generated_tokens": [2, 2], "preemptions": [0, 0],
                         "recomputed_tokens": [0, 0], "swapped_bytes": [0, 0],
                         "max_token_gap_s": [0.5, 0.5]})


def iterations_frame() -> pd.DataFrame:
    return pd.DataFrame({"start_s": [1.0, 2.0], "duration_s": [0.5, 0.5],
                         "prefill_tokens": [4, 4], "decode_tokens": [0, 0], "batch_size": [1, 1],
                         "kv_blocks_used": [1, 1], "waiting": [0, 0], "running": [1, 1],
                         "backlog_tokens": [0, 0], "demand_tokens": [4, 4]})


def refused(*overrides: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        scenario_from_dict(apply_overrides(copy.deepcopy(BASE), overrides))
    return info.value


def test_a_warm_up_beyond_every_arrival_is_refused() -> None:
    err = refused("run.warmup_s=1e9")
    assert err.field == "run.warmup_s"
    assert "expected arrival span of 200 requests at 10/s, 20 s" in str(err)
    # Just inside the expected span is allowed; the summary reports what happened.
    scenario_from_dict(apply_overrides(BASE, ["run.warmup_s=19"]))


def test_a_warm_up_beyond_listed_or_traced_arrivals_is_refused(tmp_path: Path) -> None:
    err = refused('workload.arrival={kind="list", times_s=[0, 1, 2]}', "run.requests=3",
                  "run.warmup_s=2.5")
    assert err.field == "run.warmup_s" and "the last listed arrival at 2 s" in str(err)
    trace = tmp_path / "t.csv"
    trace.write_text("t,p,o\n0,1,1\n4,1,1\n", encoding="utf-8")
    spec = (f'workload={{trace={{format="csv", path="{trace}", columns={{arrival_s="t", '
            'prompt_tokens="p", output_tokens="o"}}}')
    err = refused(spec, "run.requests=2", "run.warmup_s=5")
    assert err.field == "run.warmup_s" and "the trace's arrival span for 2 requests, 4 s" in \
        str(err)
    err = refused(spec, "run.requests=3", "run.warmup_s=1")
    assert err.field == "run.requests" and "loop = false" in str(err)


def test_arrivals_beyond_the_float_range_are_refused() -> None:
    err = refused("workload.arrival.rate_per_s=1e-8")
    assert err.field == "run.requests" and "2e+10 s" in str(err)


@pytest.mark.parametrize("override,field", [
    ("workload.arrival.rate_per_s=1e-300", "workload.arrival.rate_per_s"),
    ("workload.arrival.rate_per_s=1e300", "workload.arrival.rate_per_s"),
    ('workload.arrival={kind="deterministic", rate_per_s=1e-10}', "workload.arrival.rate_per_s"),
    ('workload.arrival={kind="gamma", rate_per_s=1e10, cv=1}', "workload.arrival.rate_per_s"),
    ('workload.arrival={kind="mmpp2", rate_on_per_s=1e-300, rate_off_per_s=1, mean_on_s=1, '
     'mean_off_s=1}', "workload.arrival.rate_on_per_s"),
    ('workload.arrival={kind="mmpp2", rate_on_per_s=1, rate_off_per_s=1, mean_on_s=1e10, '
     'mean_off_s=1}', "workload.arrival.mean_on_s"),
    ('workload.arrival={kind="list", times_s=[0, 1e300]}', "workload.arrival.times_s"),
    ("run.warmup_s=1e300", "run.warmup_s"),
    ("run.max_time_s=1e12", "run.max_time_s"),
    ("slo.ttft_s=1e300", "slo.ttft_s"),
    ("slo.tpot_s=-1", "slo.tpot_s"),
    ("engine.kv.swap_bytes_per_s=1e-300", "engine.kv.swap_bytes_per_s"),
    ('engine.cost={kind="staircase", c_ms=1e300}', "engine.cost.c_ms"),
    ('engine.cost={kind="affine", d0_ms=0, d1_ms=1e-300}', "engine.cost"),
    ('engine.cost={kind="constant", iteration_ms=1e-300}', "engine.cost"),
    ('engine.cost={kind="constant", iteration_ms=1e8}', "engine.cost.iteration_ms"),
    ("engine.token_budget=99999999999999999999", "engine.token_budget"),
    ("engine.kv.block_tokens=99999999999999999999", "engine.kv.block_tokens"),
    ("engine.max_batch_size=99999999999999999999", "engine.max_batch_size"),
    ('workload.prompt_tokens={kind="empirical", values=[5, 99999999999999999999]}',
     "workload.prompt_tokens.values"),
    ('workload.output_tokens={kind="uniform", low=1, high=99999999999999999999}',
     "workload.output_tokens.high"),
])
def test_numbers_outside_their_meaningful_range_name_the_field(override, field) -> None:
    assert refused(override).field == field


def test_horizon_mode_times_are_bounded() -> None:
    assert refused("run.requests=", "run.horizon_s=1e300").field == "run.horizon_s"


def test_an_empty_window_is_never_negative_and_warns() -> None:
    s = summarize(requests_frame(), iterations_frame(), end_s=3.0, warmup_s=10.0, slo=None,
                  token_budget=64)
    assert s["duration_s"] == 0.0 and s["throughput_rps"] is None
    assert s["warnings"] == ["the run ended at 3 s, within run.warmup_s = 10 s: the measured "
                             "window is empty and no rate or latency was measured"]


def test_a_warm_up_after_every_arrival_warns() -> None:
    requests = requests_frame()
    last = float(requests["arrival_s"].max())
    s = summarize(requests, iterations_frame(), end_s=1e6, warmup_s=last + 1, slo=None,
                  token_budget=64)
    assert s["measured_requests"] == 0
    assert s["warnings"] == [f"no request arrived at or after run.warmup_s = {last + 1:g} s: no "
                             "latency was measured"]


@pytest.mark.parametrize("text", ["", "# nothing here yet\n\n"])
def test_an_empty_scenario_file_says_so(tmp_path: Path, text: str, capsys) -> None:
    path = tmp_path / "empty.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError):
        load_scenario(path)
    assert run_cli(["validate", str(path)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {path}: the scenario file is empty; expected [run], [workload] and [engine] "
        "tables"]
    with pytest.raises(ConfigError, match=r"^scenario: got \{\}, expected \[run\]"):
        scenario_from_dict({})
