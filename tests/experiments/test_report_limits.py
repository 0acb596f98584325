"""The report on a sweep whose KV cache, not the token budget, binds first: no lambda* tick for
it, and the page says why."""

from __future__ import annotations

from pathlib import Path

from servesim.experiments.execute import run_sweep
from servesim.experiments.sweep import load_sweep
from servesim.report.charts import stability_chart
from servesim.report.data import load_report_data
from servesim.report.limits import KV_CACHE
from servesim.report.page import verdict_table


def test_kv_bound_policy_gets_no_lambda_star(tmp_path: Path, base_scenario_text: str) -> None:
    # 1500 blocks: the ~2,870 the decoders would hold at lambda* do not fit.
    (tmp_path / "base.toml").write_text(base_scenario_text, encoding="utf-8")
    (tmp_path / "sweep.toml").write_text(
        '[sweep]\nscenario = "base.toml"\nseeds = 1\n'
        'set = { "engine.kv.blocks" = 1500, "run.horizon_s" = 10.0 }\n[grid]\n'
        '"engine.batching" = ["orca"]\nload = [0.6]\n', encoding="utf-8")
    out = tmp_path / "out"
    run_sweep(load_sweep(tmp_path / "sweep.toml"), out, executor="serial")
    data = load_report_data(out)
    limit = data.limits["orca"]
    assert limit.binds == KV_CACHE and limit.kv_blocks_needed > limit.kv_blocks == 1500
    chart = stability_chart(data)
    assert chart.panels[0].y_categories == ["orca (KV cache binds)"]
    assert not any(t.symbol == "vline" for t in chart.panels[0].traces)
    assert any(n.startswith("λ* is not drawn for orca: the KV cache binds first")
               for n in chart.notes)
    table = verdict_table(data.verdicts, "load (λ / λ*)", {"orca": limit.binds})
    assert "<td>KV cache</td>" in table
