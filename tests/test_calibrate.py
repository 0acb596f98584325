"""``servesim calibrate``: rows from probe token times, and the fit against servesim's own
emulator recovering the emulator's cost model."""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path

import pytest

from servesim.cli.main import run_cli
from servesim.engine.cost import Affine
from servesim.real.calibrate import (
    CalibrationPlan,
    decode_rows,
    mixed_row,
    predicted_rel_errors,
    run_calibration,
)
from servesim.real.calibrate_probe import ProbeResult

EMULATED = """
[run]
seed = 0
requests = 10

[workload.arrival]
kind = "poisson"
rate_per_s = 1.0

[workload.prompt_tokens]
kind = "deterministic"
value = 64

[workload.output_tokens]
kind = "deterministic"
value = 16

[engine]
batching = "{batching}"
token_budget = 512
max_batch_size = 32

[engine.kv]
block_tokens = 16
blocks = 4096

[engine.cost]
kind = "affine"
d0_ms = 20.0
d1_ms = 0.05
decode_ms = 2.0
"""
TRUTH = Affine(0.020, 0.05e-3, 2.0e-3)

# A small design: about 40 requests, some seconds against the emulator at full speed.
PLAN = CalibrationPlan(prefill_prompts=(16, 64, 128, 256), prefill_repeats=5,
                       decode_batches=(1, 4, 8), decode_prompts=(32, 256), decode_output=24,
                       mixed_batches=(4,), mixed_prompts=(128,), mixed_repeats=3,
                       mixed_decoder_output=48, timeout_s=30.0, max_time_s=120.0)


def _probe(prompt: int, times: list[float], sent: float = 0.0) -> ProbeResult:
    return ProbeResult(prompt, len(times), sent, times, "finished", "")


def test_decode_rows_from_lockstep_tokens() -> None:
    """Two decoders in lockstep, steps of 10 ms after their first tokens: every row is B=2,
    10 ms, with the context of both (prompt + tokens held before the step)."""
    times = [0.05 + 0.01 * k for k in range(9)]
    rows = decode_rows([_probe(100, times), _probe(100, times)], "prefill")
    assert len(rows) == 4
    assert all(r.decode_tokens == 2 and r.prefill_tokens == 0 for r in rows)
    assert all(r.seconds == pytest.approx(0.01) for r in rows)
    # token m (1-based) comes from the step with 100 + m - 2 tokens cached per decoder:
    # the first rows pool the gaps to tokens 2 and 3 of both.
    assert rows[0].context_tokens == pytest.approx(2 * (100 + 0.5), abs=1)
    assert rows[-1].context_tokens > rows[0].context_tokens


def test_decode_rows_need_every_probe() -> None:
    failed = ProbeResult(32, 8, 0.0, [0.1], "failed", "stream closed")
    assert decode_rows([_probe(32, [0.1, 0.2, 0.3, 0.4, 0.5]), failed], "prefill") == []


def test_mixed_row_is_the_step_ending_at_the_first_token() -> None:
    decoder = [0.0 + 0.01 * k for k in range(10)] + [0.125 + 0.01 * k for k in range(5)]
    probe = _probe(128, [0.125], sent=0.095)
    row = mixed_row([_probe(32, decoder)], probe, "prefill")
    assert row is not None and row.prefill_tokens == 128 and row.decode_tokens == 1
    assert row.seconds == pytest.approx(0.035)


def test_plan_is_bounded_and_cut() -> None:
    plan = CalibrationPlan.default(max_prompt_tokens=200, max_batch=6)
    assert max(plan.prefill_prompts) == 200 and max(plan.decode_batches) == 6
    assert max(plan.mixed_prompts) + max(plan.mixed_batches) <= 200
    assert plan.requests < 200


def test_unreachable_endpoint_is_one_line(tmp_path, capsys) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = run_cli(["calibrate", "--endpoint", f"http://127.0.0.1:{port}", "--out",
                    str(tmp_path / "cal"), "--quiet", "--timeout-s", "5"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--endpoint" in err, err


@pytest.mark.slow
@pytest.mark.parametrize(("batching", "first_token"), [("vllm_v1", "prefill"),
                                                        ("sarathi", "decode")])
def test_fit_recovers_the_emulator_cost(tmp_path: Path, batching: str, first_token: str) -> None:
    """The emulator runs the affine TRUTH; the fit predicts its iteration times within 20%
    over the probed range (a few % on an idle machine: the emulator's timing jitter on a
    shared one is the error)."""
    emulator = pytest.importorskip("servesim.real.emulator")
    from servesim.scenario import load_scenario

    path = tmp_path / "emulated.toml"
    path.write_text(EMULATED.format(batching=batching), encoding="utf-8")
    scenario = load_scenario(path)
    with emulator.run_emulator_in_thread(scenario, time_scale=1.0) as url:
        heard: list[tuple[str, float, float]] = []
        result = run_calibration(url, tmp_path / "cal",
                                 dataclasses.replace(PLAN, first_token=first_token),
                                 progress=lambda *event: heard.append(event))
    # Progress: each probe group once, counting up to a fixed total, then the fit.
    assert [done for _, done, _ in heard] == list(range(len(heard)))
    assert {total for _, _, total in heard} == {len(heard) - 1}
    assert heard[0][0].startswith("prefill") and heard[-1][0] == "fitting"
    coef = result.report["fit"]["coefficients"]
    assert coef["intercept"] == pytest.approx(0.020, rel=0.2)
    assert coef["context_tokens"] == pytest.approx(0.05e-3, rel=0.2)
    points = [(256, 0, 0), (16, 0, 0), (0, 1, 40), (0, 8, 8 * 270), (128, 4, 4 * 60)]
    errors = predicted_rel_errors(result.fitted, TRUTH, points)
    assert max(abs(e) for e in errors) < 0.2, errors
    # The written table rebuilds the same model, and the report says what was fitted.
    cost = (tmp_path / "cal" / "cost.toml").read_text()
    assert "[engine.cost]" in cost and 'kind = "fitted"' in cost
    report = json.loads((tmp_path / "cal" / "fit_report.json").read_text())
    assert set(report["by_kind"]) == {"prefill", "decode", "mixed"}
    header = (tmp_path / "cal" / "profile.csv").read_text().splitlines()[0]
    assert header == "prefill_tokens,decode_tokens,context_tokens,seconds"
