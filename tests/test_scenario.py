"""Scenario loading: a good file, every section's bad-input family, and --set overrides."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from servesim.core.errors import ConfigError
from servesim.engine.cost import Roofline, Staircase
from servesim.engine.hardware import MODEL_PRESETS, kv_capacity_blocks
from servesim.scenario import (
    RunConfig,
    SLOConfig,
    apply_overrides,
    load_scenario,
    scenario_from_dict,
)

GOOD = """
[run]
seed = 7
requests = 1000
warmup_s = 5

[workload]
arrival = { kind = "poisson", rate_per_s = 12.5 }
prompt_tokens = { kind = "deterministic", value = 129 }
output_tokens = { kind = "lognormal", mean = 112, cv = 1.0 }

[engine]
batching = "sarathi"
token_budget = 512
max_batch_size = 256
chunk_tokens = 256
kv = { block_tokens = 16, blocks = 8192, watermark = 0.01, preemption = "recompute" }
cost = { kind = "staircase", c_ms = 11.28, a_ms = 35.47, b0 = 128 }

[slo]
ttft_s = 2.0
tpot_s = 0.2
"""


def base() -> dict:
    """A minimal valid scenario table."""
    return {
        "run": {"requests": 10},
        "workload": {"arrival": {"kind": "poisson", "rate_per_s": 1.0},
                     "prompt_tokens": {"kind": "deterministic", "value": 10},
                     "output_tokens": {"kind": "deterministic", "value": 5}},
        "engine": {"batching": "sarathi", "token_budget": 64},
    }


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(text, encoding="utf-8")
    return path


def raises(table: dict, field: str, *fragments: str) -> ConfigError:
    """Assert that building ``table`` raises ConfigError on ``field`` mentioning ``fragments``."""
    with pytest.raises(ConfigError) as info:
        scenario_from_dict(table)
    err = info.value
    assert err.field == field, str(err)
    for fragment in fragments:
        assert fragment in str(err), str(err)
    assert "\n" not in str(err)
    return err


# -- a good file --------------------------------------------------------------------------------


def test_good_file_loads(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, GOOD))
    assert s.run == RunConfig(seed=7, requests=1000, warmup_s=5.0)
    assert s.run.until_s is None
    e = s.engine
    assert (e.batching, e.token_budget, e.max_batch_size, e.chunk_tokens) == \
        ("sarathi", 512, 256, 256)
    assert (e.kv.block_tokens, e.kv.blocks, e.kv.watermark) == (16, 8192, 0.01)
    assert isinstance(s.cost, Staircase)
    assert s.cost.b0 == 128 and math.isclose(s.cost.a_s, 0.03547)
    assert s.slo == SLOConfig(ttft_s=2.0, tpot_s=0.2)
    assert s.workload.describe()["arrival"] == {"kind": "poisson", "rate_per_s": 12.5}
    assert s.source["engine"]["token_budget"] == 512
    assert s.base_dir == tmp_path.resolve()
    assert "1000 requests" in s.describe() and "sarathi" in s.describe()


def test_defaults() -> None:
    s = scenario_from_dict({"run": {"horizon_s": 100},
                            "workload": base()["workload"]})
    assert s.run == RunConfig(seed=0, horizon_s=100.0)
    assert s.run.until_s == 100.0
    assert s.engine.batching == "sarathi" and s.engine.token_budget == 512
    assert isinstance(s.cost, Staircase)
    assert s.slo.empty


def test_source_is_a_copy() -> None:
    table = base()
    s = scenario_from_dict(table)
    table["engine"]["token_budget"] = 1
    assert s.source["engine"]["token_budget"] == 64


def test_packaged_demo_loads() -> None:
    from importlib import resources

    ref = resources.files("servesim.scenarios").joinpath("demo.toml")
    with resources.as_file(ref) as path:
        s = load_scenario(path)
    assert s.run.requests == 20000 and s.run.warmup_s == 60
    assert s.workload.describe()["arrival"]["rate_per_s"] == pytest.approx(
        0.75 * 512 / (0.01128 + 0.03547 * 4) / 241, rel=1e-3)
    assert s.slo == SLOConfig(ttft_s=2.0, tpot_s=0.2)


# -- KV blocks from GPU memory -------------------------------------------------------------------


def test_kv_blocks_derived_from_roofline_cost() -> None:
    t = base()
    t["engine"]["cost"] = {"kind": "roofline", "model": "llama-2-7b", "gpu": "a100-80gb"}
    t["engine"]["kv"] = {"block_tokens": 16, "gpu_memory_utilization": 0.9}
    s = scenario_from_dict(t)
    assert isinstance(s.cost, Roofline)
    model = MODEL_PRESETS["llama-2-7b"]
    # (80e9 * 0.9 - 13.48e9) / (16 * 524288) = 6976.6 blocks
    assert s.engine.kv.blocks == kv_capacity_blocks(model, s.cost.gpu, 16, 0.9) == 6976
    assert s.engine.kv.block_bytes == 16 * 524288


def test_kv_blocks_derived_with_explicit_model_and_gpu() -> None:
    t = base()
    t["engine"]["kv"] = {"model": "codellama-34b", "gpu": "a100-80gb"}  # utilisation 0.9
    s = scenario_from_dict(t)
    # codellama-34b: 196,608 KV bytes per token, 67.4e9 weight bytes.
    assert s.engine.kv.blocks == int((72e9 - 67.4e9) // (16 * 196608))
    assert s.engine.kv.block_bytes == 16 * 196608


def test_block_bytes_from_roofline_model_with_explicit_blocks() -> None:
    t = base()
    t["engine"]["cost"] = {"kind": "roofline", "model": "llama-3-8b", "gpu": "h100-80gb"}
    t["engine"]["kv"] = {"blocks": 100, "block_tokens": 32}
    s = scenario_from_dict(t)
    assert s.engine.kv.blocks == 100
    assert s.engine.kv.block_bytes == 32 * 131072


def test_kv_derivation_errors() -> None:
    t = base()
    t["engine"]["kv"] = {"gpu_memory_utilization": 0.9}
    raises(t, "engine.kv.model", "roofline")
    t["engine"]["kv"] = {"model": "llama-2-7b"}
    raises(t, "engine.kv.gpu")
    t["engine"]["kv"] = {"model": "llama-2-7b", "gpu": "a100-80gb", "blocks": 10}
    raises(t, "engine.kv.blocks", "not both")
    t["engine"]["kv"] = {"model": "llama-2-7", "gpu": "a100-80gb"}
    raises(t, "engine.kv.model", "llama-2-7b")
    t["engine"]["kv"] = {"model": "llama-2-70b", "gpu": "a100-80gb"}
    raises(t, "engine.kv.gpu_memory_utilization", "weights")


# -- bad input, section by section ---------------------------------------------------------------


def test_unknown_section_suggests() -> None:
    t = base()
    t["engin"] = t.pop("engine")
    err = raises(t, "engin", "did you mean 'engine'?")
    assert err.suggestion == "engine"


def test_missing_workload() -> None:
    t = base()
    del t["workload"]
    raises(t, "workload", "required")


@pytest.mark.parametrize(("section", "key", "suggestion"), [
    ("run", "warmup", "warmup_s"),
    ("engine", "token_budgets", "token_budget"),
    ("slo", "ttft", "ttft_s"),
])
def test_unknown_key_suggests(section: str, key: str, suggestion: str) -> None:
    t = base()
    t.setdefault(section, {})[key] = 1
    err = raises(t, f"{section}.{key}", f"did you mean {suggestion!r}?")
    assert err.suggestion == suggestion


def test_unknown_kv_key_suggests() -> None:
    t = base()
    t["engine"]["kv"] = {"block_token": 16}
    raises(t, "engine.kv.block_token", "did you mean 'block_tokens'?")


def test_unknown_workload_and_cost_keys() -> None:
    t = base()
    t["workload"]["arivals"] = 1
    with pytest.raises(ConfigError) as info:
        scenario_from_dict(t)
    assert info.value.field == "workload.arivals"
    t = base()
    t["engine"]["cost"] = {"kind": "staircase", "a_s": 1}
    raises(t, "engine.cost.a_s", "a_ms")


@pytest.mark.parametrize(("section", "key", "value", "expected"), [
    ("run", "seed", "seven", "integer"),
    ("run", "requests", 1.5, "integer"),
    ("run", "warmup_s", "60", "number"),
    ("run", "seed", -1, ">= 0"),
    ("engine", "token_budget", "512", "integer"),
    ("engine", "token_budget", 0, ">= 1"),
    ("engine", "max_batch_size", True, "integer"),
    ("engine", "batching", 3, "string"),
    ("slo", "ttft_s", "2s", "number"),
    ("slo", "tpot_s", 0, "> 0"),
])
def test_wrong_type_or_range(section: str, key: str, value: object, expected: str) -> None:
    t = base()
    t.setdefault(section, {})[key] = value
    err = raises(t, f"{section}.{key}", expected)
    assert err.value == value


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("blocks", "many", "integer"),
    ("watermark", 1.5, "[0, 1)"),
    ("preemption", "swapp", "did you mean 'swap'?"),
    ("victim", "newst", "did you mean 'newest'?"),
    ("block_tokens", 0, ">= 1"),
])
def test_kv_wrong_values(key: str, value: object, expected: str) -> None:
    t = base()
    t["engine"]["kv"] = {key: value}
    raises(t, f"engine.kv.{key}", expected)


def test_section_not_a_table() -> None:
    t = base()
    t["engine"] = 5
    raises(t, "engine", "table")
    t = base()
    t["engine"]["kv"] = 5
    raises(t, "engine.kv", "table")


def test_bad_batching_name_suggests() -> None:
    t = base()
    t["engine"]["batching"] = "sarathy"
    err = raises(t, "engine.batching", "did you mean 'sarathi'?")
    assert err.suggestion == "sarathi"


def test_engine_config_errors_pass_through() -> None:
    t = base()
    t["engine"] = {"batching": "vllm", "token_budget": 64, "max_model_len": 1}
    raises(t, "engine.max_model_len", ">= 2")
    t["engine"] = {"batching": "vllm", "max_model_len": 128, "kv": {"blocks": 2}}
    raises(t, "engine.kv.blocks", "at least 8 blocks")


def test_cost_errors_name_the_field() -> None:
    t = base()
    t["engine"]["cost"] = {"kind": "stair"}
    raises(t, "engine.cost.kind", "did you mean 'staircase'?")
    t["engine"]["cost"] = {"kind": "staircase", "c_ms": -1}
    raises(t, "engine.cost.c_ms")


@pytest.mark.parametrize("run", [
    {"requests": 10, "horizon_s": 10.0},
    {"seed": 1},
    {},
])
def test_requests_xor_horizon(run: dict) -> None:
    t = base()
    t["run"] = run
    raises(t, "run.requests", "exactly one of run.requests and run.horizon_s")


def test_run_limits() -> None:
    t = base()
    t["run"] = {"horizon_s": 10, "max_time_s": 20}
    raises(t, "run.max_time_s", "horizon_s")
    t["run"] = {"horizon_s": 10, "warmup_s": 10}
    raises(t, "run.warmup_s", "shorter")
    t["run"] = {"requests": 0}
    raises(t, "run.requests", ">= 1")
    t["run"] = {"requests": 5, "max_time_s": 30}
    assert scenario_from_dict(t).run.until_s == 30.0


def test_toml_syntax_error_names_file_and_position(tmp_path: Path) -> None:
    path = write(tmp_path, "[run]\nrequests = 10\nseed = = 3\n")
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid TOML: ")
    assert "line 3" in message and "column" in message
    assert "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_scenario(tmp_path / "nope.toml")
    assert "nope.toml" in str(info.value) and info.value.field == "scenario"


def test_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    (tmp_path / "lengths.csv").write_text("n\n3\n4\n", encoding="utf-8")
    text = GOOD.replace('output_tokens = { kind = "lognormal", mean = 112, cv = 1.0 }',
                        'output_tokens = { kind = "empirical", path = "lengths.csv", '
                        'column = "n" }')
    s = load_scenario(write(tmp_path, text))
    assert s.workload.classes[0].output.mean == 3.5


# -- overrides ----------------------------------------------------------------------------------


def test_overrides_parse_toml_values() -> None:
    t = apply_overrides(base(), [
        "engine.token_budget=256",
        "workload.arrival.rate_per_s=10",
        'engine.batching="vllm"',
        "engine.kv.preemption=swap",
        "slo.ttft_s=1.5",
        "engine.cost={ kind = 'affine', d0_ms = 5, d1_ms = 0.01 }",
    ])
    assert t["engine"]["token_budget"] == 256
    assert t["workload"]["arrival"]["rate_per_s"] == 10
    assert t["engine"]["batching"] == "vllm"
    assert t["engine"]["kv"] == {"preemption": "swap"}
    assert t["slo"] == {"ttft_s": 1.5}
    assert t["engine"]["cost"] == {"kind": "affine", "d0_ms": 5, "d1_ms": 0.01}
    s = scenario_from_dict(t)
    assert s.engine.token_budget == 256 and s.engine.batching == "vllm"


def test_overrides_do_not_touch_the_input() -> None:
    t = base()
    apply_overrides(t, ["engine.token_budget=1"])
    assert t["engine"]["token_budget"] == 64


def test_override_empty_value_removes_the_key() -> None:
    t = apply_overrides(base(), ["run.requests=", "run.horizon_s=60"])
    assert t["run"] == {"horizon_s": 60}
    assert scenario_from_dict(t).run.horizon_s == 60.0


def test_override_unknown_section_suggests() -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(base(), ["engin.token_budget=256"])
    assert info.value.field == "engin" and info.value.suggestion == "engine"


def test_override_unknown_key_caught_on_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_scenario(write(tmp_path, GOOD), ["engine.token_budgt=256"])
    assert info.value.field == "engine.token_budgt"
    assert info.value.suggestion == "token_budget"


@pytest.mark.parametrize("item", ["engine.token_budget", "=3", "engine..kv=3"])
def test_override_malformed(item: str) -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(base(), [item])
    assert info.value.field == "--set"


def test_override_through_a_scalar() -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(base(), ["engine.token_budget.x=1"])
    assert info.value.field == "engine.token_budget"


def test_load_with_overrides(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, GOOD), ["engine.batching=vllm", "run.seed=3"])
    assert s.engine.batching == "vllm" and s.run.seed == 3
    assert s.source["engine"]["batching"] == "vllm"


def test_set_field_creates_replaces_and_removes() -> None:
    from servesim.scenario import set_field

    table: dict = {"engine": {"kv": {"blocks": 10}}}
    set_field(table, "engine.kv.blocks", 20)
    set_field(table, "workload.arrival.rate_per_s", 3.0)
    assert table == {"engine": {"kv": {"blocks": 20}},
                     "workload": {"arrival": {"rate_per_s": 3.0}}}
    set_field(table, "engine.kv.blocks", None)
    assert table["engine"]["kv"] == {}
    with pytest.raises(ConfigError, match="workload.arrival.rate_per_s: got 3.0, expected a table"):
        set_field(table, "workload.arrival.rate_per_s.x", 1)
