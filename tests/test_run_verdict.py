"""One run's own verdict (``summary["verdict"]``) and the ``servesim run`` table that shows it
with the stop reason and the summary's warnings."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from servesim.api import simulate
from servesim.cli.main import run_cli
from servesim.cli.run_table import print_run, stop_phrase
from servesim.scenario import scenario_from_dict

# The staircase of Fig. 1 at b_max = 512: mu* = 3342.9 tokens/s, lambda* = 13.87 requests/s.
BASE = {
    "run": {"seed": 1, "horizon_s": 120.0},
    "workload": {"arrival": {"kind": "poisson", "rate_per_s": 7.0},
                 "prompt_tokens": {"kind": "deterministic", "value": 129},
                 "output_tokens": {"kind": "deterministic", "value": 112}},
    "engine": {"batching": "sarathi", "token_budget": 512,
               "kv": {"block_tokens": 16, "blocks": 1_000_000}},
}

SMALL_TOML = """
[run]
seed = 1
horizon_s = 300.0
max_in_system = 60

[workload]
arrival = { kind = "poisson", rate_per_s = 20.0 }
prompt_tokens = { kind = "deterministic", value = 129 }
output_tokens = { kind = "deterministic", value = 112 }

[engine]
batching = "sarathi"
token_budget = 512
kv = { block_tokens = 16, blocks = 1000000 }
"""


def run(**changes):
    table = json.loads(json.dumps(BASE))
    for dotted, value in changes.items():
        node = table
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return simulate(scenario_from_dict(table))


def test_half_load_looks_stable() -> None:
    verdict = run().summary["verdict"]
    assert verdict["state"] == "stable", verdict["evidence"]
    assert verdict["headline"].startswith("looks stable: no backlog growth")
    lo, hi = verdict["window_s"]
    assert hi == pytest.approx(2 * lo) and 119 < hi <= 120
    slope = verdict["backlog_slope_tokens_per_s"]
    assert slope["lo"] <= 0 <= slope["hi"] or slope["hi"] < 0
    assert verdict["completion_ratio"] > 0.98


def test_overload_looks_unstable_with_its_growth_rate() -> None:
    # 20 requests/s against lambda* = 13.87: the fluid backlog grows 20*241 - 3342.9 = 1477
    # tokens/s; the run's own estimate must lie above 0 and say so.
    verdict = run(workload__arrival__rate_per_s=20.0).summary["verdict"]
    assert verdict["state"] == "unstable", verdict["evidence"]
    assert verdict["headline"].startswith("looks unstable: backlog grows ")
    assert verdict["backlog_slope_tokens_per_s"]["lo"] > 0
    assert verdict["in_system_slope_per_s"]["slope"] > 0
    assert verdict["completion_ratio"] < 0.98


def test_a_run_too_short_to_judge_says_so() -> None:
    verdict = run(run__horizon_s=1.0).summary["verdict"]
    assert verdict["state"] == "inconclusive"
    assert "too short to judge" in verdict["headline"]


def test_a_run_stopped_by_max_in_system_is_unstable() -> None:
    result = run(workload__arrival__rate_per_s=20.0, run__horizon_s=600.0,
                 run__max_in_system=60)
    assert result.summary["stop_reason"] == "max_in_system"
    verdict = result.summary["verdict"]
    assert verdict["state"] == "unstable"
    assert verdict["evidence"][0].startswith("stopped by run.max_in_system")


def test_run_table_shows_stop_reason_and_verdict(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    path = tmp_path / "over.toml"
    path.write_text(SMALL_TOML)
    code = run_cli(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    flat = " ".join(out.split())
    assert "stopped early: more than 60 requests in the system (max_in_system); looks " \
           "unstable" in flat
    assert "│ stop reason" in out and "max_in_system │" in out
    assert "│ verdict" in out and "unstable │" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["verdict"]["state"] == "unstable"
    assert summary["verdict"]["headline"] in flat


def test_warnings_are_printed_below_the_table() -> None:
    summary = run(run__horizon_s=20.0).summary
    summary["warnings"] = ["3 requests of 9000 tokens can never be served: engine.kv holds "
                           "8192 tokens"]
    buf = io.StringIO()
    print_run(summary, Console(file=buf, width=100))
    lines = buf.getvalue().splitlines()
    table_end = max(i for i, line in enumerate(lines) if line.startswith("└"))
    assert lines[-1] == "warning: 3 requests of 9000 tokens can never be served: engine.kv " \
                        "holds 8192 tokens"
    assert len(lines) - 1 > table_end


@pytest.mark.parametrize(("summary", "phrase"), [
    ({"stop_reason": "drained"},
     "ran to the end: every request finished or was rejected (drained)"),
    ({"stop_reason": "time", "in_system_at_end": 4, "scenario": {"run": {"horizon_s": 60.0}}},
     "stopped at the horizon 60 s, 4 requests still in the system (time)"),
    ({"stop_reason": "time", "in_system_at_end": 9,
      "scenario": {"run": {"requests": 100, "max_time_s": 30.0}}},
     "stopped early: max_time_s = 30 s reached with 9 requests unfinished (time)"),
    ({"stop_reason": "max_in_system", "scenario": {"run": {"max_in_system": 5000}}},
     "stopped early: more than 5000 requests in the system (max_in_system)"),
    ({"stop_reason": "time", "status": "interrupted"},
     "stopped early: interrupted before the end (interrupted)"),
])
def test_stop_phrases(summary: dict, phrase: str) -> None:
    assert stop_phrase(summary) == phrase
