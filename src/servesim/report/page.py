"""The report page: one self-contained HTML file, plotly.js and every export inlined."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import pandas as pd

from servesim.report.spec import Chart

__all__ = ["page", "section", "verdict_table"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 0; color: #222; line-height: 1.4; }
main { max-width: 92rem; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem; }
.panels { display: grid; gap: 0.8rem 1.2rem; grid-template-columns: 1fr; }
.panels.cols-2 { grid-template-columns: repeat(2, minmax(0, 1fr)); }
.panels.cols-3 { grid-template-columns: repeat(3, minmax(0, 1fr)); }
@media (max-width: 62rem) { .panels.cols-2, .panels.cols-3 { grid-template-columns: 1fr; } }
.caption { color: #444; margin: 0.3rem 0 0.6rem; }
ul.notes { font-size: 0.92rem; color: #333; background: #f6f6f3; border-left: 3px solid #c9b458;
  margin: 0.6rem 0; padding: 0.5rem 0.8rem 0.5rem 1.6rem; }
.exports a { margin-right: 0.9rem; font-size: 0.9rem; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; margin-top: 0.5rem; }
td, th { border: 1px solid #ccc; padding: 0.25rem 0.55rem; font-size: 0.88rem;
  text-align: left; vertical-align: top; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.stable { color: #1d6f65; font-weight: 600; } td.unstable { color: #b02c3f; font-weight: 600; }
"""

# Records how many plots plotly drew (a trace layer inside an SVG of non-zero width), how many
# plots stand side by side in the first row of panels, and any script error, so a headless
# browser's DOM dump shows whether and how the page rendered.
_SCRIPT = """
window.servesimErrors = [];
window.addEventListener("error", function (e) { window.servesimErrors.push(String(e.message)); });
window.addEventListener("load", function () {
  setTimeout(function () {
    var divs = Array.prototype.slice.call(document.querySelectorAll(".plotly-graph-div"));
    var ok = divs.filter(function (d) {
      var svg = d.querySelector("svg.main-svg");
      return svg && svg.getBoundingClientRect().width > 0 && d.querySelector(".trace");
    }).length;
    var first = document.querySelector(".panels");
    var plots = first ? Array.prototype.slice.call(first.querySelectorAll(".plot")) : [];
    var top = plots.length ? plots[0].getBoundingClientRect().top : 0;
    var row = plots.filter(function (p) {
      return Math.abs(p.getBoundingClientRect().top - top) < 2;
    }).length;
    document.body.setAttribute("data-plots-rendered", ok + "/" + divs.length);
    document.body.setAttribute("data-first-row", String(row));
    document.body.setAttribute("data-errors", String(window.servesimErrors.length));
  }, 0);
});
"""

_STATE_CLASS = {"stable", "unstable"}
_SETTINGS = {"x", "lambda_star", "limit", "seeds"}
"""Verdict-table columns that describe the setting rather than the result: dropped when the
same in every row, and said once above the table."""


def _data_uri(kind: str, payload: bytes) -> str:
    return f"data:{kind};base64,{base64.b64encode(payload).decode('ascii')}"


def section(chart: Chart, divs: list[str], png: bytes | None, svg: bytes | None) -> str:
    """A chart's section: title, caption, its plots, its notes and the static exports."""
    parts = [f'<section id="{chart.stem}"><h2>{html.escape(chart.title)}</h2>',
             f'<p class="caption">{html.escape(chart.caption)}</p>']
    if divs:
        cols = max(1, min(chart.columns, len(divs)))
        parts.append(f'<div class="panels cols-{cols}">' + "".join(
            f'<div class="plot">{d}</div>' for d in divs) + "</div>")
    if chart.notes:
        parts.append('<ul class="notes">' + "".join(
            f"<li>{html.escape(n)}</li>" for n in chart.notes) + "</ul>")
    if png is not None and svg is not None:
        parts.append(
            '<p class="exports">Static figure: '
            f'<a class="export" download="{chart.stem}.png" '
            f'href="{_data_uri("image/png", png)}">PNG</a>'
            f'<a class="export" download="{chart.stem}.svg" '
            f'href="{_data_uri("image/svg+xml", svg)}">SVG</a></p>')
    parts.append("</section>")
    return "".join(parts)


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _slope(lo: float, hi: float) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "n/a"
    return f"[{_number(lo)}, {_number(hi)}]"


def _level(verdicts: pd.DataFrame) -> str:
    levels = verdicts["slope_confidence"].dropna().unique()
    return f"{levels[0]:.0%} CI" if len(levels) == 1 else "CI"


def _columns(x_title: str, level: str) -> list[tuple[str, str, bool]]:
    """(frame column, heading with units, numeric) of the verdict table, in order."""
    return [("label", "policy", False), ("x", x_title, True),
            ("lambda_star", "λ* (requests/s)", True), ("limit", "limit that binds first", False),
            ("seeds", "seeds", True), ("state", "verdict", False),
            ("slope", f"mean backlog slope of W(t), {level} over seeds (tokens/s)", True),
            ("evidence", "evidence", False)]


def _cell(column: str, value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def verdict_table(verdicts: pd.DataFrame, x_title: str, limits: dict[str, str]) -> str:
    """The verdicts as a table with named, unit-bearing headings; a column whose value is the
    same in every row is dropped and stated once above the table."""
    if verdicts.empty:
        return ""
    frame = verdicts.assign(
        slope=[_slope(r.slope_lo, r.slope_hi) for r in verdicts.itertuples()],
        limit=[limits.get(label, "") for label in verdicts["label"]])
    shown, constant = [], []
    for col, title, numeric in _columns(x_title, _level(verdicts)):
        if col in _SETTINGS and len(frame) > 1 \
                and frame[col].nunique(dropna=False) == 1:
            constant.append(f"{title}: {_cell(col, frame[col].iloc[0])}")
        else:
            shown.append((col, title, numeric))
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t, _ in shown)
    rows = []
    for row in frame.itertuples():
        cells = []
        for col, _, numeric in shown:
            value = getattr(row, col)
            css = ["num"] if numeric else []
            if col == "state" and value in _STATE_CLASS:
                css.append(str(value))
            attr = f' class="{" ".join(css)}"' if css else ""
            cells.append(f"<td{attr}>{html.escape(_cell(col, value))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    same = (f"<p>The same in every row: {html.escape('; '.join(constant))}.</p>"
            if constant else "")
    return (f'<section id="verdicts"><h2>Stability verdicts</h2>{same}'
            f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div></section>')


def _summary(out: Path, points: pd.DataFrame, reference: str) -> str:
    policies = ", ".join(sorted(points["policy"].unique())) if len(points) else "none"
    per = points.groupby(["label", *[c for c in ("load", "rate_per_s") if c in points]],
                         dropna=False)["seed"].nunique() if len(points) else pd.Series([0])
    seeds = (f"{per.min()} seed{'s' if per.max() != 1 else ''}" if per.min() == per.max()
             else f"{per.min()} to {per.max()} seeds")
    shown = f" Distributions and time series are shown {html.escape(reference)}." \
        if reference else ""
    return (f"<p>{len(points)} finished points; policies: {html.escape(policies)}; {seeds} "
            f"per point.{shown} Sweep folder: <code>{html.escape(str(out))}</code>.</p>")


def page(out: Path, points: pd.DataFrame, reference: str, sections: list[str], table: str,
         plotly_js: str) -> str:
    """The whole HTML document; ``reference`` says where distributions are shown."""
    body = "\n".join([f"<h1>servesim sweep report</h1>{_summary(out, points, reference)}",
                      *sections, table])
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<title>servesim sweep report</title>"
            f"<style>{_STYLE}</style><script>{_SCRIPT}</script>"
            f"<script>{plotly_js}</script></head>"
            f"<body><main>\n{body}\n</main></body></html>\n")
