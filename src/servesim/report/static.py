"""Static exports: a ``Chart`` drawn with matplotlib's object API on the Agg canvas.

Figures are ``matplotlib.figure.Figure`` objects (never pyplot), so no global backend or state
is touched. One figure per chart, its panels in a grid, one legend below them for all panels.
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

from servesim.report.spec import Chart, Panel, Trace
from servesim.report.stats import log_ticks

__all__ = ["render", "static_figure"]

_MARKERS = {"circle": "o", "square": "s", "diamond": "D", "vline": "|"}
_FONTS = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
          "xtick.labelsize": 10, "ytick.labelsize": 10}
PANEL_WIDTH_IN = 5.0


def _handle(trace: Trace) -> Line2D:
    marker = _MARKERS[trace.symbol] if "markers" in trace.mode else None
    empty = trace.x.size == 0 and trace.hollow is not None
    line = "-" if trace.mode in ("lines", "lines+markers", "step") else ""
    if trace.mode == "area":
        return Line2D([], [], color=trace.colour, lw=8, alpha=0.85, label=trace.name)
    return Line2D([], [], color=trace.colour, ls="" if empty else line, marker=marker,
                  mfc="white" if empty else trace.colour, mec=trace.colour,
                  ms=trace.size if trace.symbol == "vline" else 6,
                  mew=2 if trace.symbol == "vline" else 1, label=trace.name)


def _y(panel: Panel, trace: Trace) -> np.ndarray:
    if panel.y_categories is None:
        return np.asarray(trace.y, dtype=float)
    return np.array([panel.y_categories.index(v) for v in trace.y], dtype=float)


def _markers(ax, trace: Trace, x: np.ndarray, y: np.ndarray) -> None:
    marker = _MARKERS[trace.symbol]
    hollow = trace.hollow if trace.hollow is not None else np.zeros(x.size, bool)
    size = trace.size if trace.symbol == "vline" else trace.size * 0.85
    for mask, face in ((~hollow, trace.colour), (hollow, "white")):
        if mask.any():
            ax.plot(x[mask], y[mask], ls="", marker=marker, ms=size, mfc=face,
                    mec="black" if trace.symbol != "vline" and trace.mode == "markers"
                    else trace.colour, mew=2 if trace.symbol == "vline" else 1.2, zorder=3)


def _errorbars(ax, trace: Trace, x: np.ndarray, y: np.ndarray) -> None:
    if trace.lo is None or trace.hi is None:
        return
    ok = np.isfinite(trace.lo) & np.isfinite(trace.hi)
    if ok.any():
        err = np.vstack([y[ok] - trace.lo[ok], trace.hi[ok] - y[ok]])
        ax.errorbar(x[ok], y[ok], yerr=err, fmt="none", ecolor=trace.colour, capsize=3,
                    lw=1, zorder=2)


def _draw(ax, panel: Panel, trace: Trace, base: dict[int, np.ndarray]) -> None:
    x, y = np.asarray(trace.x, dtype=float), _y(panel, trace)
    if x.size == 0:
        return
    if trace.mode == "area":
        below = base.get(id(panel), np.zeros_like(y))
        ax.fill_between(x, below, below + y, color=trace.colour, alpha=0.85, lw=0)
        base[id(panel)] = below + y
    elif trace.mode == "step":
        ax.step(x, y, where="post", color=trace.colour, lw=1.4)
    else:
        if "lines" in trace.mode:
            ax.plot(x, y, color=trace.colour, lw=1.4, zorder=2)
        if "markers" in trace.mode:
            _markers(ax, trace, x, y)
        _errorbars(ax, trace, x, y)


def _axes(ax, panel: Panel) -> None:
    ax.set_title(panel.title)
    ax.set_xlabel(panel.x_label)
    ax.set_ylabel(panel.y_label)
    for log, axis, name in ((panel.x_log, ax.xaxis, "x"), (panel.y_log, ax.yaxis, "y")):
        if log:
            # Plain 1-2-5 labels (0.2, 1, 5, 20 s) read better than powers of ten.
            getattr(ax, f"set_{name}scale")("log")
            limits = axis.get_view_interval()
            ticks = log_ticks(panel.values(name))
            axis.set_ticks(ticks, [f"{t:g}" for t in ticks])
            axis.set_view_interval(*limits, ignore=True)
            axis.set_minor_formatter(NullFormatter())
    if panel.y_categories is not None:
        ax.set_yticks(range(len(panel.y_categories)), panel.y_categories)
        ax.set_ylim(-0.6, len(panel.y_categories) - 0.4)
    if panel.y_max is not None:
        ax.set_ylim(0, panel.y_max)
    ax.grid(alpha=0.3)


def static_figure(chart: Chart) -> Figure | None:
    """The chart as one matplotlib figure, or None if it has no panels."""
    if not chart.panels:
        return None
    with rc_context(_FONTS):
        cols = max(1, min(chart.columns, len(chart.panels)))
        rows = math.ceil(len(chart.panels) / cols)
        width = PANEL_WIDTH_IN * cols + (3.0 if cols == 1 else 0.0)
        fig = Figure(figsize=(width, chart.panel_height_in * rows + 0.9), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        handles: dict[str, Line2D] = {}
        base: dict[int, np.ndarray] = {}
        for ax, panel in zip(axes, chart.panels, strict=False):
            for trace in panel.traces:
                _draw(ax, panel, trace, base)
                if trace.name and trace.name not in handles:
                    handles[trace.name] = _handle(trace)
            _axes(ax, panel)
        for ax in axes[len(chart.panels):]:
            ax.set_visible(False)
        if handles:
            fig.legend(handles=list(handles.values()), loc="outside lower center",
                       ncols=min(len(handles), 5), frameon=False)
        fig.suptitle(chart.title, fontsize=13)
    return fig


def render(fig: Figure, fmt: str) -> bytes:
    """The figure as PNG or SVG bytes. SVG text stays text, so it is small and searchable."""
    buf = io.BytesIO()
    options = {"dpi": 110} if fmt == "png" else {"metadata": {"Date": None}}
    with rc_context(_FONTS):
        fig.savefig(buf, format=fmt, **options)
    return buf.getvalue()
