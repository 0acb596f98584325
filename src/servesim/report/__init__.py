"""The HTML report of a sweep: the only package that imports a plotting library.

``build_report(DIR)`` reads the sweep folder's catalogue and Parquet files and writes one
self-contained HTML file: interactive plotly figures (plotly.js inlined, so it works offline)
with each figure's static PNG and SVG inlined as downloads, plus every static figure as
``DIR/figures/<name>.png`` and ``.svg`` (matplotlib).

Modules: ``data`` reads the sweep, ``stats`` (intervals, axis scales, truncated points,
verdicts) and ``limits`` (which limit binds first) compute, ``charts`` decides what each
figure shows as a ``spec.Chart``, ``static`` and ``interactive`` draw it, ``page`` writes HTML.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from servesim.core.progress import Progress
from servesim.experiments.outputs import atomic_write

__all__ = ["build_report"]

REPORT = "report.html"
FIGURE_DIR = "figures"


def build_report(out_dir: str | Path, out_file: str | Path | None = None,
                 progress: Progress | None = None) -> Path:
    """Write the report of the sweep in ``out_dir``; return the HTML file's path.

    The report covers the points of the sweep last run into ``out_dir`` (``sweep.json``).
    ``progress`` counts figures drawn ("figure 2/6: ..."), once the data is read.
    Raises ConfigError if ``out_dir`` holds no readable sweep catalogue.
    """
    from servesim.report.data import load_report_data

    out = Path(out_dir)
    data = load_report_data(out)
    with _matplotlib_config(out):
        return _build(out, data, out_file, progress)


@contextlib.contextmanager
def _matplotlib_config(out: Path) -> Iterator[None]:
    """Point matplotlib's config and font cache at a temporary folder inside the sweep folder,
    removed afterwards, unless MPLCONFIGDIR is set: by default matplotlib writes them under the
    home folder. Takes effect only if matplotlib is not imported yet."""
    if os.environ.get("MPLCONFIGDIR"):
        yield
        return
    with tempfile.TemporaryDirectory(prefix=".mplconfig-", dir=out) as tmp:
        os.environ["MPLCONFIGDIR"] = tmp
        try:
            yield
        finally:
            os.environ.pop("MPLCONFIGDIR", None)


def _reference(data) -> str:
    """Where the distributions and time series are shown, for the page's first paragraph."""
    if data.reference is None:
        return ""
    if data.x == "load" and data.reference < 1:
        return f"at load {data.reference:.3g}, the busiest load below λ*"
    return f"at {'load' if data.x == 'load' else 'rate'} {data.reference:.3g}, the lowest"


def _build(out: Path, data, out_file: str | Path | None, progress: Progress | None) -> Path:
    from servesim.report.charts import CHARTS
    from servesim.report.interactive import panel_divs, plotly_js
    from servesim.report.page import page, section, verdict_table
    from servesim.report.static import render, static_figure

    fig_dir = out / FIGURE_DIR
    fig_dir.mkdir(parents=True, exist_ok=True)
    sections = []
    for i, build in enumerate(CHARTS):
        chart = build(data)
        if progress is not None:
            title = chart.title if chart is not None else build.__name__
            progress(f"figure {i + 1}/{len(CHARTS)}: {title}", i, len(CHARTS))
        if chart is None:
            continue
        fig = static_figure(chart)
        png = svg = None
        if fig is not None:
            png, svg = render(fig, "png"), render(fig, "svg")
            _write(fig_dir / f"{chart.stem}.png", png)
            _write(fig_dir / f"{chart.stem}.svg", svg)
        else:
            # An earlier report's export of a figure this sweep no longer draws would mislead.
            for ext in ("png", "svg"):
                (fig_dir / f"{chart.stem}.{ext}").unlink(missing_ok=True)
        sections.append(section(chart, panel_divs(chart), png, svg))
    limits = {label: limit.binds for label, limit in data.limits.items()}
    x_title = "load (λ / λ*)" if data.x == "load" else "arrival rate (requests/s)"
    html = page(out, data.points, _reference(data), sections,
                verdict_table(data.verdicts, x_title, limits), plotly_js())
    path = Path(out_file) if out_file is not None else out / REPORT
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, html.encode("utf-8"))
    return path


def _write(path: Path, payload: bytes) -> None:
    """Atomically, with the mode the user's umask gives new files (``atomic_write``)."""
    atomic_write(path, lambda tmp: tmp.write_bytes(payload))
