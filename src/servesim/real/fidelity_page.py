"""The fidelity outputs: ``fidelity.json``, the simulated ``requests.parquet`` and a
self-contained HTML page (observed and simulated CDFs of TTFT, ITL and E2E overlaid, the error
table, and the requests in system over time for both), drawn with the sweep report's helpers
(``report/spec.py`` charts, plotly on the page, matplotlib PNG and SVG exports in
``figures/``).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from servesim.report.spec import Chart, Panel, Trace

__all__ = ["fidelity_charts", "fidelity_html", "write_fidelity"]

_OBSERVED, _SIMULATED = "#1f77b4", "#d62728"
_CDF_POINTS = 1500   # an ECDF drawn through at most this many quantiles
_SERIES_POINTS = 3000
_LABELS = {"ttft_s": "TTFT", "itl_s": "inter-token latency", "tpot_s": "TPOT", "e2e_s": "E2E"}


def _ecdf(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.sort(values[np.isfinite(values)])
    if x.size > _CDF_POINTS:
        q = np.linspace(0, 1, _CDF_POINTS)
        return np.quantile(x, q), q
    return x, np.arange(1, x.size + 1) / max(x.size, 1)


def _thin(t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if t.size <= _SERIES_POINTS:
        return t, v
    keep = np.unique(np.linspace(0, t.size - 1, _SERIES_POINTS).astype(np.int64))
    return t[keep], v[keep]


def _samples(result: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per metric, the (observed, simulated) values over the requests finished in both."""
    from servesim.metrics.summary import add_latency_columns

    sim = result.replay
    rows = sim.records["observed_row"].to_numpy()
    obs = add_latency_columns(result.observed.records.iloc[rows].reset_index(drop=True))
    both = (obs["status"].astype(str).to_numpy() == "finished") & \
        (sim.records["status"].astype(str).to_numpy() == "finished")
    idx = np.flatnonzero(both)
    out = {name: (obs[name].to_numpy(np.float64)[both],
                  sim.records[name].to_numpy(np.float64)[both]) for name in ("ttft_s", "e2e_s")}
    obs_times = [result.observed.token_times[rows[i]] for i in idx]
    out["itl_s"] = (np.concatenate([np.empty(0), *(np.diff(t) for t in obs_times)]),
                    np.concatenate([np.empty(0), *(np.diff(sim.token_times[i]) for i in idx)]))
    return {name: out[name] for name in ("ttft_s", "itl_s", "e2e_s")}


def fidelity_charts(result: Any) -> list[Chart]:
    """The CDF chart (three panels) and the requests-in-system chart."""
    from servesim.real.fidelity import records_series, replay_prompt_tokens

    panels = []
    for name, (obs, sim) in _samples(result).items():
        traces = []
        for label, values, colour in (("observed", obs, _OBSERVED),
                                      ("simulated", sim, _SIMULATED)):
            x, y = _ecdf(values)
            traces.append(Trace(label, x, y, colour, mode="step", group=label))
        panels.append(Panel(f"{_LABELS[name]} CDF", f"{_LABELS[name]} (s)", "fraction",
                            traces, y_max=1.0))
    cdf = Chart("fidelity-cdf", "Latency distributions, observed and simulated",
                "Empirical CDFs over the requests that finished in both runs; inter-token "
                "latency pools every gap between consecutive tokens.", panels)
    sim = result.replay
    rows = sim.records["observed_row"].to_numpy()
    obs = result.observed.records.iloc[rows].reset_index(drop=True)
    obs["prompt_tokens"] = replay_prompt_tokens(result.observed.records)[rows]
    traces = []
    for label, records, times, colour in (
            ("observed", obs, [result.observed.token_times[i] for i in rows], _OBSERVED),
            ("simulated", sim.records, sim.token_times, _SIMULATED)):
        series = records_series(records, times)
        t, n = _thin(series["start_s"].to_numpy(),
                     (series["waiting"] + series["running"]).to_numpy())
        traces.append(Trace(label, t, n, colour, mode="step", group=label))
    in_system = Chart("fidelity-in-system", "Requests in system over time",
                      "Requests arrived and not yet finished (waiting for a first token or "
                      "streaming), rebuilt from each run's records alike.",
                      [Panel("requests in system", "time since the run start (s)", "requests",
                             traces)], columns=1)
    return [cdf, in_system]


def _cell(x: Any, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x * 100:+.2f}%" if pct else f"{x:.4g}"


def error_table(report: dict[str, Any]) -> str:
    """The error table as HTML."""
    rows = []
    for name, label in _LABELS.items():
        for stat, cell in report["metrics"][name].items():
            rows.append((f"{label} {stat} (s)", cell))
    rows.append(("throughput (req/s)", report["throughput_rps"]))
    body = "".join(
        f"<tr><td>{html.escape(label)}</td><td class=\"num\">{_cell(c['observed'])}</td>"
        f"<td class=\"num\">{_cell(c['simulated'])}</td>"
        f"<td class=\"num\">{_cell(c['rel_error'], pct=True)}</td></tr>" for label, c in rows)
    return ("<section id=\"errors\"><h2>Error per metric</h2><p class=\"caption\">rel. error "
            "= (simulated - observed) / observed.</p><div class=\"table-wrap\"><table><thead>"
            "<tr><th>metric</th><th>observed</th><th>simulated</th><th>rel. error</th></tr>"
            f"</thead><tbody>{body}</tbody></table></div></section>")


def _summary(report: dict[str, Any]) -> str:
    req, run, verdict = report["requests"], report["run"], report["verdict"]
    median = report["e2e_median_request_rel_error"]
    lines = [
        f"Observed run <code>{html.escape(str(run['observed_dir']))}</code> replayed through "
        f"<code>{html.escape(str(run['scenario']))}</code> ({html.escape(run['batching'])} "
        f"batching, token budget {run['token_budget']}, batch cap {run['max_batch_size']}, "
        f"{run['kv_blocks']} KV blocks of {run['kv_block_tokens']} tokens).",
        f"{req['replayed']} of {req['observed_rows']} requests replayed; {req['compared']} "
        "finished in both and are compared.",
        f"Per-request E2E: median |rel. error| {_cell(median, pct=True).lstrip('+')}.",
        f"Stability verdict: observed <b>{html.escape(str(verdict['observed']))}</b>, "
        f"simulated <b>{html.escape(str(verdict['simulated']))}</b>.",
    ]
    out = "".join(f"<p>{line}</p>" for line in lines)
    if report.get("warnings"):
        out += '<ul class="notes">' + "".join(f"<li>{html.escape(w)}</li>"
                                              for w in report["warnings"]) + "</ul>"
    return out


def _exports(charts: list[Chart], fig_dir: Path | None) -> list[tuple[bytes | None, bytes | None]]:
    """Each chart's static PNG and SVG (matplotlib, as the sweep report's exports), also
    written to ``fig_dir`` when given; (None, None) without a folder to keep them in."""
    if fig_dir is None:
        return [(None, None)] * len(charts)
    from servesim.experiments.outputs import atomic_write
    from servesim.report import _matplotlib_config
    from servesim.report.static import render, static_figure

    out = []
    fig_dir.mkdir(parents=True, exist_ok=True)
    with _matplotlib_config(fig_dir):
        for chart in charts:
            fig = static_figure(chart)
            if fig is None:
                out.append((None, None))
                continue
            png, svg = render(fig, "png"), render(fig, "svg")
            for ext, payload in (("png", png), ("svg", svg)):
                atomic_write(fig_dir / f"{chart.stem}.{ext}",
                             lambda tmp, data=payload: tmp.write_bytes(data))
            out.append((png, svg))
    return out


def fidelity_html(result: Any, fig_dir: Path | None = None) -> str:
    """The whole page, plotly.js inlined; with ``fig_dir``, the static figures are written
    there and inlined as downloads."""
    from servesim.report.interactive import panel_divs, plotly_js
    from servesim.report.page import _SCRIPT, _STYLE, section

    report = result.report
    built = fidelity_charts(result)
    charts = [section(c, panel_divs(c), png, svg)
              for c, (png, svg) in zip(built, _exports(built, fig_dir), strict=True)]
    body = "\n".join(["<h1>servesim fidelity</h1>", _summary(report), error_table(report),
                      *charts])
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<title>servesim fidelity</title>"
            f"<style>{_STYLE}</style><script>{_SCRIPT}</script>"
            f"<script>{plotly_js()}</script></head>"
            f"<body><main>\n{body}\n</main></body></html>\n")


def write_fidelity(result: Any, out_dir: str | Path) -> Path:
    """Write ``fidelity.json``, ``requests.parquet`` (simulated, in the observed schema's
    columns), ``fidelity.html`` and ``figures/fidelity-*.png|svg`` into ``out_dir`` (created
    if needed); return it."""
    from servesim.experiments.outputs import atomic_write

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result.report, indent=2, allow_nan=False) + "\n"
    atomic_write(out / "fidelity.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    records = result.replay.records.copy()
    records["token_times_s"] = [t.tolist() for t in result.replay.token_times]
    records["error"] = ""
    records["prompt_tokens_server"] = -1
    atomic_write(out / "requests.parquet", lambda tmp: records.to_parquet(tmp, index=False))
    page = fidelity_html(result, out / "figures")
    atomic_write(out / "fidelity.html", lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return out
