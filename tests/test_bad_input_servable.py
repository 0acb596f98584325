"""Scenarios whose requests the engine can never serve: refused at load when none can be, counted
with a warning when only some cannot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from servesim.api import simulate
from servesim.cli.main import run_cli
from servesim.core.errors import ConfigError
from servesim.engine.config import EngineConfig, KVConfig
from servesim.engine.servable import unservable_requests
from servesim.scenario import scenario_from_dict
from servesim.workload.requests import Requests


def scenario(prompt: dict, output: dict, engine: dict, requests: int = 20) -> dict:
    return {"run": {"requests": requests},
            "workload": {"arrival": {"kind": "poisson", "rate_per_s": 5.0},
                         "prompt_tokens": prompt, "output_tokens": output},
            "engine": engine}


def fixed(tokens: int) -> dict:
    return {"kind": "deterministic", "value": tokens}


def refused(table: dict) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        scenario_from_dict(table)
    return info.value


KV_TOO_SMALL = scenario(fixed(240), fixed(1), {"batching": "vllm", "token_budget": 512,
                                               "kv": {"block_tokens": 16, "blocks": 2}})


def test_kv_cache_smaller_than_one_request_is_refused_naming_blocks() -> None:
    err = refused(KV_TOO_SMALL)
    assert err.field == "engine.kv.blocks"
    assert str(err) == ("engine.kv.blocks: got 2 (32 tokens), expected enough for one request "
                        "(at least 16 blocks for the smallest request of 241 tokens)")


@pytest.mark.parametrize("batching", ["fastertransformer", "vllm", "static"])
def test_budget_below_every_prompt_is_refused_for_systems_that_do_not_chunk(batching) -> None:
    err = refused(scenario(fixed(290), fixed(10), {"batching": batching, "token_budget": 128}))
    assert err.field == "engine.token_budget" and err.value == 128
    assert "at least 290 tokens" in str(err) and f"{batching} does not chunk" in str(err)


def test_a_chunking_system_serves_prompts_longer_than_its_budget() -> None:
    scenario_from_dict(scenario(fixed(290), fixed(10), {"batching": "sarathi",
                                                        "token_budget": 128}))


def test_max_model_len_below_every_request_is_named() -> None:
    err = refused(scenario(fixed(240), fixed(1), {"batching": "sarathi", "max_model_len": 100}))
    assert err.field == "engine.max_model_len" and "at least 241 tokens" in str(err)


def test_smallest_request_uses_the_support_of_each_distribution() -> None:
    # uniform 300..400 prompts: even the smallest exceeds 256 tokens of cache.
    kv = {"batching": "sarathi", "kv": {"block_tokens": 16, "blocks": 16}}
    err = refused(scenario({"kind": "uniform", "low": 300, "high": 400}, fixed(1), kv))
    assert "smallest request of 301 tokens" in str(err)
    # An unbounded law can draw short requests, so it is not refused.
    scenario_from_dict(scenario({"kind": "lognormal", "mean": 300, "cv": 1.0}, fixed(1), kv))


def test_the_suggested_block_count_is_enough_beside_the_watermark() -> None:
    engine = {"batching": "sarathi", "kv": {"block_tokens": 16, "blocks": 10, "watermark": 0.3}}
    err = refused(scenario(fixed(240), fixed(1), engine))
    assert "watermark of 0.3" in str(err)
    blocks = int(re.search(r"at least (\d+) blocks", str(err)).group(1))
    engine["kv"]["blocks"] = blocks
    scenario_from_dict(scenario(fixed(240), fixed(1), engine))
    engine["kv"]["blocks"] = blocks - 1
    refused(scenario(fixed(240), fixed(1), engine))


def test_a_trace_whose_rows_are_all_too_long_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("num_prefill_tokens,num_decode_tokens\n300,5\n500,5\n", encoding="utf-8")
    table = {"run": {"requests": 2},
             "workload": {"arrival": {"kind": "poisson", "rate_per_s": 1.0},
                          "trace": {"format": "lengths_csv", "path": str(path)}},
             "engine": {"batching": "vllm", "token_budget": 256}}
    assert refused(table).field == "engine.token_budget"
    path.write_text("num_prefill_tokens,num_decode_tokens\n300,5\n200,5\n", encoding="utf-8")
    result = simulate(scenario_from_dict(table))
    assert result.summary["unservable"] == 1 and result.summary["rejected"] == 1


def test_a_mixture_with_some_unservable_requests_runs_and_warns() -> None:
    table = scenario(fixed(1), fixed(1), {"batching": "vllm", "token_budget": 256}, requests=40)
    del table["workload"]["prompt_tokens"], table["workload"]["output_tokens"]
    table["workload"]["classes"] = [
        {"name": "short", "weight": 3, "prompt_tokens": fixed(100), "output_tokens": fixed(5)},
        {"name": "long", "weight": 1, "prompt_tokens": fixed(290), "output_tokens": fixed(5)}]
    result = simulate(scenario_from_dict(table))
    long = int((result.requests["class"] == "long").sum())
    assert 0 < long < 40
    summary = result.summary
    assert summary["unservable"] == long == summary["rejected"]
    [warning] = summary["warnings"]
    assert warning.startswith(f"{long} of 40 requests")
    assert f"{long} with a prompt above engine.token_budget = 256" in warning


def test_a_servable_run_has_no_warning() -> None:
    result = simulate(scenario_from_dict(scenario(fixed(10), fixed(2), {"batching": "sarathi"})))
    assert result.summary["unservable"] == 0 and result.summary["warnings"] == []


def test_unservable_requests_counts_each_limit() -> None:
    engine = EngineConfig(batching="vllm", token_budget=64, kv=KVConfig(block_tokens=16, blocks=8))
    requests = Requests.from_lists([0, 1, 2, 3], [10, 100, 60, 10], [5, 5, 100, 1])
    count, [warning] = unservable_requests(requests, engine)
    # 60 + 100 > 128 tokens of cache; a 100-token prompt exceeds the 64-token budget.
    assert count == 2
    assert "1 longer than 128 tokens" in warning and "engine.kv.blocks = 8 blocks" in warning
    assert "1 with a prompt above engine.token_budget = 64" in warning


@pytest.mark.parametrize("command", ["validate", "run"])
def test_cli_says_one_line_and_exits_2(tmp_path: Path, command: str, capsys) -> None:
    path = tmp_path / "kv.toml"
    path.write_text("""
[run]
requests = 50
[workload]
arrival = { kind = "poisson", rate_per_s = 5 }
prompt_tokens = { kind = "deterministic", value = 240 }
output_tokens = { kind = "deterministic", value = 1 }
[engine]
batching = "vllm"
kv = { block_tokens = 16, blocks = 2 }
""", encoding="utf-8")
    args = [command, str(path)] + (["--out", str(tmp_path / "out")] if command == "run" else [])
    assert run_cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: engine.kv.blocks: got 2 (32 tokens), expected enough for one request "
                   "(at least 16 blocks for the smallest request of 241 tokens)"]
