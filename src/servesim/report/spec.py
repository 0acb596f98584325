"""What a report figure shows, independent of the library that draws it.

``charts`` decides (axes, markers, notes) and builds a ``Chart``; ``static`` draws it with
matplotlib for the PNG and SVG files, ``interactive`` with plotly for the page. Both read the
same decisions, so the exports and the page never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["PALETTE", "Chart", "Panel", "Trace", "colours"]

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


def colours(labels) -> dict[str, str]:
    """One colour per label, the same in every figure."""
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(sorted(labels))}


@dataclass
class Trace:
    """One line, set of markers or stacked area.

    Attributes:
        name: legend entry (None: not in the legend).
        x, y: coordinates; y may hold category names for a categorical axis. A trace with no
            points is a legend entry only (explaining a marker style).
        colour: a CSS colour.
        mode: "lines", "markers", "lines+markers", "step" (post) or "area" (stacked).
        hollow: per point, True to draw an open marker (a truncated value).
        lo, hi: per point, the ends of an error bar (NaN: no bar).
        hover: per point, the text shown on hover in the page.
        symbol: "circle", "square", "diamond" or "vline" (a tall vertical tick).
        size: marker size, points.
        group: legend group, so one legend entry stands for the trace in every panel.
    """

    name: str | None
    x: np.ndarray
    y: np.ndarray
    colour: str
    mode: str = "lines"
    hollow: np.ndarray | None = None
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    hover: list[str] | None = None
    symbol: str = "circle"
    size: float = 7.0
    group: str | None = None


@dataclass
class Panel:
    """One set of axes.

    Attributes:
        title: shown above the axes.
        x_label, y_label: axis titles, with units.
        traces: what is drawn, in order.
        x_log, y_log: logarithmic axes.
        y_categories: category names, bottom to top, for a categorical y axis.
        y_max: the top of the y axis (None: automatic); panels sharing a scale get the same.
    """

    title: str
    x_label: str
    y_label: str
    traces: list[Trace] = field(default_factory=list)
    x_log: bool = False
    y_log: bool = False
    y_categories: list[str] | None = None
    y_max: float | None = None

    def values(self, axis: str) -> list[float]:
        """Every value drawn along ``axis`` ("x" or "y"), error-bar ends included."""
        out: list[float] = []
        for t in self.traces:
            arrays = (t.x,) if axis == "x" else (t.y, t.lo, t.hi)
            for arr in arrays:
                if arr is not None:
                    out.extend(np.asarray(arr, dtype=float).tolist())
        return out


@dataclass
class Chart:
    """One section of the report: panels, and the notes that say how to read them.

    Attributes:
        stem: file stem of the exports and the section's HTML id.
        title: section title.
        caption: what the figure shows, one or two sentences.
        panels: the axes; none when the section only explains why nothing is drawn.
        notes: sentences shown under the figure (truncated points, log axes, missing bars).
        columns: panels per row in the static export.
        panel_height_in: height of one row of panels in the static export, inches.
        height_px: height of one panel in the page, pixels (the width follows the page).
    """

    stem: str
    title: str
    caption: str
    panels: list[Panel] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    columns: int = 3
    panel_height_in: float = 3.6
    height_px: int = 400
