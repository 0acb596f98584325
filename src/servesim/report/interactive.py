"""Interactive figures: a ``Chart``'s panels drawn with plotly, one div per panel.

Panels are separate plotly figures so that the page can wrap them on a narrow screen. The page
embeds plotly.js once, inline (``plotly_js``), so the report works offline.
"""

from __future__ import annotations

import numpy as np

from servesim.report.spec import Chart, Panel, Trace
from servesim.report.stats import log_ticks

__all__ = ["panel_divs", "plotly_js"]

_CONFIG = {"displaylogo": False, "responsive": True,
           "modeBarButtonsToRemove": ["select2d", "lasso2d"]}
_SYMBOLS = {"circle": "circle", "square": "square", "diamond": "diamond", "vline": "line-ns"}


def plotly_js() -> str:
    """The plotly.js bundle that the installed plotly ships, to inline in the page."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _error_y(trace: Trace, y: np.ndarray) -> dict | None:
    if trace.lo is None or trace.hi is None or not np.isfinite(trace.lo).any():
        return None
    # A NaN end draws no bar at that point (too few seeds).
    return {"type": "data", "symmetric": False, "array": trace.hi - y,
            "arrayminus": y - trace.lo, "color": trace.colour, "thickness": 1.2, "width": 4}


def _common(trace: Trace) -> dict:
    kwargs: dict = {"name": trace.name, "showlegend": trace.name is not None,
                    "legendgroup": trace.group}
    if trace.hover is not None:
        kwargs.update(hovertext=trace.hover, hoverinfo="text")
    return kwargs


def _marker(trace: Trace, open_: bool, size) -> dict:
    symbol = _SYMBOLS[trace.symbol] + ("-open" if open_ or trace.symbol == "vline" else "")
    outline = "#333333" if trace.mode == "markers" and trace.symbol != "vline" else trace.colour
    return {"color": trace.colour, "size": size, "symbol": symbol,
            "line": {"width": 2 if open_ or trace.symbol == "vline" else 1,
                     "color": trace.colour if open_ else outline}}


def _points(trace: Trace) -> list:
    """Lines and markers; truncated points as a second, open-marker trace in the same legend
    group, so the legend shows the policy's filled marker."""
    import plotly.graph_objects as go

    x, y = np.asarray(trace.x), np.asarray(trace.y)
    if x.size == 0:  # a legend entry explaining a marker style
        return [go.Scatter(x=[None], y=[None], mode="markers", **_common(trace),
                           marker=_marker(trace, trace.hollow is not None, trace.size))]
    hollow = trace.hollow if trace.hollow is not None else np.zeros(x.size, bool)
    sizes = np.where(hollow, 0, trace.size) if hollow.any() else trace.size
    numeric = trace.lo is not None
    main = go.Scatter(x=x, y=y, mode=trace.mode, marker=_marker(trace, False, sizes),
                      error_y=_error_y(trace, y.astype(float)) if numeric else None,
                      line={"color": trace.colour, "width": 2}, **_common(trace))
    if not hollow.any():
        return [main]
    extra = go.Scatter(x=x[hollow], y=y[hollow], mode="markers", showlegend=False,
                       legendgroup=trace.group, hoverinfo="skip",
                       marker=_marker(trace, True, trace.size))
    return [main, extra]


def _traces(trace: Trace) -> list:
    import plotly.graph_objects as go

    if trace.mode == "area":
        return [go.Scatter(x=trace.x, y=trace.y, mode="lines", stackgroup="stack",
                           line={"width": 0}, fillcolor=trace.colour, **_common(trace))]
    if trace.mode == "step":
        return [go.Scatter(x=trace.x, y=trace.y, mode="lines",
                           line={"color": trace.colour, "width": 2, "shape": "hv"},
                           **_common(trace))]
    return _points(trace)


def _axis(title: str, log: bool, values: list[float]) -> dict:
    axis = {"title": {"text": title}, "automargin": True, "showline": True,
            "linecolor": "#888", "gridcolor": "#e5e5e5", "zeroline": False}
    if log:
        ticks = log_ticks(values)
        axis.update(type="log", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])
    return axis


def _layout(panel: Panel, height: int) -> dict:
    yaxis = _axis(panel.y_label, panel.y_log,
                  panel.values("y") if panel.y_log else [])
    if panel.y_categories is not None:
        yaxis.update(type="category", categoryorder="array",
                     categoryarray=list(panel.y_categories),
                     range=[-0.6, len(panel.y_categories) - 0.4])
    elif panel.y_max is not None:
        yaxis["range"] = [0, panel.y_max]
    return {"title": {"text": panel.title, "x": 0.02, "font": {"size": 15}},
            "xaxis": _axis(panel.x_label, panel.x_log,
                           panel.values("x") if panel.x_log else []), "yaxis": yaxis,
            "template": "plotly_white", "height": height, "autosize": True,
            "margin": {"l": 10, "r": 10, "t": 40, "b": 10}, "hovermode": "closest",
            "font": {"size": 13},
            # Below the x-axis title, about 60 px under the plot area whatever its height.
            "legend": {"orientation": "h", "x": 0, "xanchor": "left",
                       "y": -60 / max(height - 100, 150),
                       "yanchor": "top", "font": {"size": 12}}}


def panel_divs(chart: Chart) -> list[str]:
    """One HTML div (with the script that draws it) per panel; plotly.js must be loaded."""
    import plotly.graph_objects as go
    import plotly.io as pio

    divs = []
    for i, panel in enumerate(chart.panels):
        traces = [s for t in panel.traces for s in _traces(t)]
        fig = go.Figure(traces, _layout(panel, chart.height_px))
        config = {**_CONFIG, "toImageButtonOptions": {"filename": f"{chart.stem}-{i + 1}"}}
        divs.append(pio.to_html(fig, full_html=False, include_plotlyjs=False,
                                div_id=f"{chart.stem}-plot-{i + 1}", config=config))
    return divs
