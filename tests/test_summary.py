"""summarize on a small hand-made run, every value computed by hand in the comments."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from servesim.metrics.summary import add_latency_columns, jsonable, stats, summarize
from servesim.scenario import SLOConfig

NAN = math.nan
WARMUP = 10.0
END = 100.0


def requests_frame() -> pd.DataFrame:
    # id: arrival, prompt, output, status, first token, finish; then the counters.
    rows = [
        (0, 5.0, 10, 5, "finished", 6.0, 9.0, 0, 0, 0, 0.1),     # before warm-up: ignored
        (1, 10.0, 20, 3, "finished", 11.0, 13.0, 0, 0, 0, 0.5),  # ttft 1, tpot 1, e2e 3
        (2, 20.0, 10, 1, "finished", 22.0, 22.0, 0, 0, 0, 0.0),  # ttft 2, tpot -, e2e 2
        (3, 30.0, 10, 5, "finished", 34.0, 42.0, 2, 15, 0, 3.0),  # ttft 4, tpot 2, e2e 12
        (4, 40.0, 30, 11, "finished", 48.0, 58.0, 0, 0, 1000, 1.0),  # ttft 8, tpot 1, e2e 18
        (5, 8.0, 10, 2, "finished", 12.0, 14.0, 0, 0, 0, 2.0),   # arrived in warm-up, ends after
        (6, 90.0, 10, 5, "running", 95.0, NAN, 1, 5, 0, NAN),
        (7, 95.0, 10, 5, "waiting", NAN, NAN, 0, 0, 0, NAN),
        (8, 96.0, 10, 5, "rejected", NAN, NAN, 0, 0, 0, NAN),
        (9, 120.0, 10, 5, "pending", NAN, NAN, 0, 0, 0, NAN),
    ]
    cols = ["id", "arrival_s", "prompt_tokens", "output_tokens", "status", "first_token_s",
            "finish_s", "preemptions", "recomputed_tokens", "swapped_bytes", "max_token_gap_s"]
    df = pd.DataFrame(rows, columns=cols)
    df.insert(1, "class", "default")
    df["admitted_s"] = df["first_token_s"]
    df["generated_tokens"] = np.where(df["status"] == "finished", df["output_tokens"], 0)
    return df


def iterations_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "start_s": [5.0, 10.0, 12.0, 13.0, 14.0],
        "duration_s": [1.0, 2.0, 1.0, 1.0, 4.0],
        "prefill_tokens": [10, 20, 0, 62, 0],
        "decode_tokens": [0, 0, 2, 2, 1],
        "batch_size": [1, 1, 2, 3, 1],
        "kv_blocks_used": [4, 10, 10, 20, 5],
        "waiting": [0, 0, 1, 0, 0],
        "running": [1, 1, 2, 3, 1],
        "backlog_tokens": [0, 0, 0, 0, 0],
        "demand_tokens": [10, 20, 40, 100, 1],
    })


def run_summary(slo: SLOConfig | None = None) -> dict:
    return summarize(requests_frame(), iterations_frame(), end_s=END, warmup_s=WARMUP, slo=slo,
                     token_budget=64, kv_capacity_blocks=40)


def test_latency_columns() -> None:
    raw = requests_frame()
    df = add_latency_columns(raw)
    assert "ttft_s" not in raw  # the input is not modified
    r = df.set_index("id")
    assert r.loc[1, "ttft_s"] == 1.0 and r.loc[1, "tpot_s"] == 1.0 and r.loc[1, "e2e_s"] == 3.0
    assert r.loc[1, "normalized_latency_s_per_token"] == 1.0
    assert math.isnan(r.loc[2, "tpot_s"])  # one output token
    assert r.loc[4, "normalized_latency_s_per_token"] == pytest.approx(18 / 11)
    assert r.loc[6, "ttft_s"] == 5.0 and math.isnan(r.loc[6, "e2e_s"])
    assert math.isnan(r.loc[7, "ttft_s"])


def test_counts_and_rates() -> None:
    s = run_summary()
    assert (s["arrived"], s["completed"], s["rejected"], s["in_system_at_end"]) == (9, 6, 1, 2)
    assert s["measured_requests"] == 4  # ids 1-4
    assert s["completed_in_window"] == 5  # ids 1-5 finish in [10, 100]
    assert s["duration_s"] == 90.0 and s["end_s"] == 100.0 and s["warmup_s"] == 10.0
    assert s["throughput_rps"] == pytest.approx(5 / 90)
    # prompt + output of ids 1-5: 23 + 11 + 15 + 41 + 12 = 102 tokens
    assert s["throughput_tokens_per_s"] == pytest.approx(102 / 90)
    assert (s["preemptions"], s["recomputed_tokens"], s["swapped_bytes"]) == (3, 20, 1000)


def test_percentiles_use_only_measured_requests() -> None:
    s = run_summary()
    # TTFT of ids 1-4: [1, 2, 4, 8]; linear interpolation at ranks 1.5, 2.7, 2.97.
    assert s["ttft_s"] == pytest.approx({"mean": 3.75, "p50": 3.0, "p90": 6.8, "p99": 7.88})
    # TPOT: [1, NaN, 2, 1] -> [1, 1, 2] at ranks 1, 1.8, 1.98.
    assert s["tpot_s"] == pytest.approx({"mean": 4 / 3, "p50": 1.0, "p90": 1.8, "p99": 1.98})
    # E2E: [2, 3, 12, 18].
    assert s["e2e_s"] == pytest.approx({"mean": 8.75, "p50": 7.5, "p90": 16.2, "p99": 17.82})
    # normalized: [1, 2, 2.4, 18/11]
    assert s["normalized_latency_s_per_token"]["mean"] == pytest.approx(
        (1 + 2 + 2.4 + 18 / 11) / 4)
    # max token gap: [0.5, 0, 3, 1]
    assert s["max_token_gap_s"]["mean"] == pytest.approx(1.125)
    assert s["max_token_gap_s"]["p50"] == pytest.approx(0.75)


def test_slo_goodput_and_attainment() -> None:
    s = run_summary(SLOConfig(ttft_s=3.0, tpot_s=1.5))
    # measured: id 1 ok, id 2 ok (no TPOT for one token), ids 3, 4 miss TTFT.
    assert s["slo_attainment"] == 0.5
    # finished in window and meeting both: ids 1, 2 (id 5 has TTFT 4).
    assert s["goodput_rps"] == pytest.approx(2 / 90)
    assert s["slo"] == {"ttft_s": 3.0, "tpot_s": 1.5}


def test_omitted_slos_are_ignored() -> None:
    s = run_summary(SLOConfig(e2e_s=10.0))
    # E2E: id1 3, id2 2, id3 12, id4 18 -> 2 of 4; in window id 5 (E2E 6) also meets it.
    assert s["slo_attainment"] == 0.5
    assert s["goodput_rps"] == pytest.approx(3 / 90)


@pytest.mark.parametrize("slo", [None, SLOConfig()])
def test_no_slo_gives_null(slo: SLOConfig | None) -> None:
    s = run_summary(slo)
    assert s["goodput_rps"] is None and s["slo_attainment"] is None and s["slo"] is None


def test_iteration_metrics_skip_warmup() -> None:
    s = run_summary()
    assert s["iterations"] == 4
    assert s["mean_batch_size"] == pytest.approx(1.75)
    # time-weighted: (10/40 * 2 + 10/40 * 1 + 20/40 * 1 + 5/40 * 4) / 8
    assert s["kv_utilization_mean"] == pytest.approx(0.21875)
    assert s["kv_capacity_blocks"] == 40
    # only the 2-token iteration at 12 s does less than min(64, demand 40)
    assert s["non_work_conserving_fraction"] == 0.25


def test_no_warmup_counts_everything() -> None:
    s = summarize(requests_frame(), iterations_frame(), end_s=END, slo=None, token_budget=64)
    assert s["measured_requests"] == 6 and s["completed_in_window"] == 6
    assert s["iterations"] == 5 and s["kv_utilization_mean"] is None
    assert s["duration_s"] == 100.0


def test_json_ready_without_nan() -> None:
    s = run_summary(SLOConfig(ttft_s=1.0))
    json.dumps(s, allow_nan=False)
    empty = summarize(requests_frame().iloc[:0], iterations_frame().iloc[:0], end_s=0.0,
                      slo=SLOConfig(ttft_s=1.0), token_budget=64, kv_capacity_blocks=10)
    json.dumps(empty, allow_nan=False)
    assert empty["ttft_s"] == {"mean": None, "p50": None, "p90": None, "p99": None}
    assert empty["throughput_rps"] is None and empty["slo_attainment"] is None
    assert empty["iterations"] == 0 and empty["non_work_conserving_fraction"] is None


def test_stats_and_jsonable() -> None:
    assert stats([1.0, NAN, 3.0]) == {"mean": 2.0, "p50": 2.0, "p90": 2.8, "p99": 2.98}
    assert jsonable({"a": np.float64("nan"), "b": (np.int64(2), np.bool_(True))}) == \
        {"a": None, "b": [2, True]}
