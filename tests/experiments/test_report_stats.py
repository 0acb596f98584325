"""The report's reading decisions on small hand-made tables: intervals over seeds, axis scales,
truncated points, the binding limit, omitted plots and the verdict table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from servesim.report.charts import (
    cdf_scale,
    composition_chart,
    kv_chart,
    latency_chart,
    stability_chart,
)
from servesim.report.data import ReportData
from servesim.report.limits import KV_CACHE, TOKEN_BUDGET, Limit, binding_limit
from servesim.report.page import verdict_table
from servesim.report.stats import (
    CUT_BY_HORIZON,
    GROWING,
    STOPPED_EARLY,
    axis_scale,
    latency_by_load,
    log_t_interval,
    log_ticks,
    truncation,
)


def _points(label="orca", loads=(0.5, 1.2), seeds=3, **columns) -> pd.DataFrame:
    rows = [{"label": label, "policy": label, "load": load, "seed": s,
             "point_id": f"{label}{load}{s}", "stop_reason": "time", "arrived": 100,
             "completed": 95, "end_s": 20.0,
             "ttft_mean_s": 0.2 * (1 + s / 10) * (1 + load), "tpot_mean_s": 0.05 + load / 100,
             "e2e_mean_s": 5.0 + load + s / 10, "lambda_star": 13.87}
            for load in loads for s in range(seeds)]
    frame = pd.DataFrame(rows)
    for name, value in columns.items():
        frame[name] = value
    return frame


def _verdicts(points: pd.DataFrame, states: dict[tuple[str, float], str]) -> pd.DataFrame:
    keys = sorted({(r.label, float(r.load)) for r in points.itertuples()})
    return pd.DataFrame([{"label": k[0], "x": k[1], "lambda_star": 13.87, "seeds": 3,
                          "state": states.get(k, "stable"), "slope_lo": -5.0, "slope_hi": 7.5,
                          "slope_confidence": 0.99, "evidence": "backlog slope ..."}
                         for k in keys])


def _data(points: pd.DataFrame, **fields) -> ReportData:
    verdicts = fields.pop("verdicts", _verdicts(points, {}))
    base = {"points": points, "x": "load", "reference": 0.5,
            "requests": pd.DataFrame(columns=["label", "ttft_s", "tpot_s"]), "series": {},
            "composition": {}, "verdicts": verdicts,
            "truncated": truncation(points, "load", verdicts), "limits": {}}
    return ReportData(**{**base, **fields})


# -- intervals over seeds ------------------------------------------------------------------------


def test_log_t_interval_is_positive_where_the_plain_interval_goes_below_zero() -> None:
    values = np.array([0.1, 0.1, 5.0])
    plain_half = stats.t.ppf(0.975, 2) * values.std(ddof=1) / math.sqrt(3)
    assert values.mean() - plain_half < 0  # the bar that used to cross zero
    centre, lo, hi = log_t_interval(values)
    assert 0 < lo < centre < hi
    # Symmetric on a log axis around the geometric mean.
    assert centre == pytest.approx(math.exp(np.log(values).mean()))
    assert lo * hi == pytest.approx(centre**2)


def test_log_t_interval_needs_three_seeds_and_positive_values() -> None:
    assert log_t_interval([1.0, 2.0]) is None
    assert log_t_interval([1.0, 2.0, math.nan]) is None
    with pytest.raises(ValueError, match="positive"):
        log_t_interval([1.0, 0.0, 2.0])


def test_two_seeds_draw_no_bar_and_say_so() -> None:
    points = _points(seeds=2)
    chart = latency_chart(_data(points))
    traces = [t for p in chart.panels for t in p.traces if t.lo is not None]
    assert traces and all(np.isnan(t.lo).all() and np.isnan(t.hi).all() for t in traces)
    assert any("No confidence bars" in n and "have 2" in n for n in chart.notes)


def test_three_seeds_draw_positive_bars() -> None:
    chart = latency_chart(_data(_points(seeds=3)))
    traces = [t for p in chart.panels for t in p.traces if t.lo is not None]
    assert all((t.lo > 0).all() and (t.lo <= t.y).all() and (t.y <= t.hi).all() for t in traces)
    assert not any("No confidence bars" in n for n in chart.notes)


# -- axis scales ---------------------------------------------------------------------------------


def test_axis_scale_goes_log_when_values_span_orders_of_magnitude() -> None:
    assert axis_scale([0.2, 0.3, 27.0]) == "log"
    assert axis_scale([0.2, 0.3, 0.5]) == "linear"
    assert axis_scale([0.0, 0.2, 27.0]) == "linear"  # zero has no place on a log axis
    assert axis_scale([5.0, math.nan]) == "linear"


def test_cdf_scale_compares_the_fastest_bulk_with_the_slowest_request() -> None:
    rng = np.random.default_rng(0)
    fast = rng.uniform(0.1, 0.4, 500)
    assert cdf_scale({"orca": fast, "vllm": fast * 1.2}) == "linear"
    # One policy reaches 110 s: on a linear axis the others collapse into a line at 0.
    assert cdf_scale({"orca": fast, "fastertransformer": np.append(fast, 110.0)}) == "log"


def test_log_ticks_cover_the_range_with_plain_values() -> None:
    ticks = log_ticks([0.21, 27.0])
    assert min(ticks) <= 0.21 and max(ticks) >= 27.0
    assert {0.5, 1.0, 2.0, 5.0, 10.0, 20.0} <= set(ticks)
    assert all(f"{t:e}"[0] in "125" for t in ticks)


# -- truncated points ----------------------------------------------------------------------------


def test_truncation_names_each_reason() -> None:
    points = _points(loads=(0.5, 0.9, 1.1, 1.3))
    points.loc[points["load"] == 0.9, "completed"] = 30  # 70% unfinished at the horizon
    points.loc[(points["load"] == 1.3) & (points["seed"] == 1), "stop_reason"] = "max_in_system"
    verdicts = _verdicts(points, {("orca", 1.1): "unstable", ("orca", 1.3): "unstable"})
    cut = truncation(points, "load", verdicts)
    assert cut == {("orca", 0.5): "", ("orca", 0.9): CUT_BY_HORIZON, ("orca", 1.1): GROWING,
                   ("orca", 1.3): STOPPED_EARLY}


def test_truncated_points_are_kept_hollow_with_their_censored_lower_bound() -> None:
    points = _points(loads=(0.5, 1.2), ttft_censored_mean_s=np.nan)
    high = points["load"] == 1.2
    points.loc[high, "completed"] = 10
    points.loc[high, "ttft_censored_mean_s"] = 40.0
    data = _data(points)
    table = latency_by_load(points, "load", "ttft_mean_s", data.truncated)
    row = table.set_index("x").loc[1.2]
    assert row["reason"] == CUT_BY_HORIZON and row["centre"] == pytest.approx(40.0)
    chart = latency_chart(data)
    ttft = chart.panels[0]
    line = next(t for t in ttft.traces if t.name == "orca")
    assert list(line.hollow) == [False, True]
    assert ttft.y_log  # 0.3 s against a 40 s lower bound
    assert any(t.name == "truncated (lower bound)" for t in ttft.traces)
    assert any("Hollow markers" in n and "orca at load 1.2" in n for n in chart.notes)


# -- the limit that binds first ------------------------------------------------------------------


def _limit(blocks: float, cap: int = 1 << 30, preempted: float | None = None) -> Limit:
    prompt, output = pd.Series([129.0] * 10), pd.Series([112.0] * 10)
    return binding_limit("orca", 512, cap, 16, blocks, 0.0, prompt, output, preempted)


def test_binding_limit_compares_the_kv_footprint_at_lambda_star_with_the_cache() -> None:
    # At lambda*, 512 * 112 / 241 = 238 decoders hold 129 + 56 tokens each on average.
    decoders = 512 * 112 / 241
    needed = decoders * (129 + 56) / 16 + decoders / 2
    assert _limit(10_000).binds == TOKEN_BUDGET
    small = _limit(1500)
    assert small.binds == KV_CACHE and small.kv_blocks_needed == pytest.approx(needed)
    assert _limit(10_000, cap=128).binds == "batch-size cap"
    assert _limit(10_000, preempted=0.7).binds == KV_CACHE


def test_lambda_star_is_drawn_only_where_the_token_budget_binds() -> None:
    points = pd.concat([_points("orca"), _points("vllm")])
    limits = {"orca": _limit(10_000), "vllm": Limit("vllm", KV_CACHE, 2900.0, 1500.0, "why")}
    chart = stability_chart(_data(points, limits=limits))
    tick = next(t for t in chart.panels[0].traces if t.symbol == "vline")
    assert list(tick.y) == ["orca"] and list(tick.x) == [1.0]
    assert chart.panels[0].y_categories == ["orca", "vllm (KV cache binds)"]
    assert any("not drawn for vllm" in n and "KV cache" in n for n in chart.notes)


# -- KV and composition panels -------------------------------------------------------------------


def _series(peak: float) -> pd.DataFrame:
    t = np.linspace(0, 10, 5)
    return pd.DataFrame({"t_s": t, "in_system": t, "backlog_tokens": t, "kv_blocks": t,
                         "kv_fraction": t / 10 * peak, "kv_peak_fraction": peak})


def test_kv_plot_is_omitted_with_a_note_when_the_cache_never_fills() -> None:
    points = _points()
    tiny = kv_chart(_data(points, series={"orca": _series(4e-4)}))
    assert tiny.panels == [] and "Not drawn" in tiny.notes[0] and "0.0004" in tiny.notes[0]
    used = kv_chart(_data(points, series={"orca": _series(0.3)}))
    assert len(used.panels) == 1 and used.notes == []


def test_composition_panels_share_one_y_scale() -> None:
    t = np.linspace(0, 10, 4)
    comp = {"orca": pd.DataFrame({"t_s": t, "prefill_tokens": [10, 20, 30, 40],
                                  "decode_tokens": [5, 5, 5, 5]}),
            "vllm": pd.DataFrame({"t_s": t, "prefill_tokens": [100, 300, 200, 100],
                                  "decode_tokens": [50, 50, 50, 50]})}
    points = pd.concat([_points("orca"), _points("vllm")])
    chart = composition_chart(_data(points, composition=comp))
    assert [p.y_max for p in chart.panels] == pytest.approx([350 * 1.05] * 2)
    assert chart.columns == 2


# -- the verdict table ---------------------------------------------------------------------------


def test_verdict_table_names_columns_with_units_and_states_constants_once() -> None:
    points = pd.concat([_points("orca"), _points("vllm")])
    html = verdict_table(_verdicts(points, {}), "load (λ / λ*)",
                         {"orca": TOKEN_BUDGET, "vllm": KV_CACHE})
    for raw in ("slope_lo", "slope_hi", "lambda_star", "<th>x</th>"):
        assert raw not in html
    assert "<th>load (λ / λ*)</th>" in html
    assert "99% CI over seeds (tokens/s)" in html
    assert "<th>limit that binds first</th>" in html  # differs between rows: kept
    # lambda* and the seed count are the same in every row: said once, no column.
    assert "The same in every row: λ* (requests/s): 13.87; seeds: 3." in html
    assert "<th>λ* (requests/s)</th>" not in html and "<th>seeds</th>" not in html
