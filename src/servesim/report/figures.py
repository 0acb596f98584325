"""The report's figures, drawn with matplotlib's object API on the Agg canvas.

Figures are built as ``matplotlib.figure.Figure`` objects (never through pyplot), so no global
backend or state is touched. Each function returns a figure, or None when the sweep has nothing
to show for it.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from servesim.report.data import LATENCY_METRICS, ReportData, latency_by_load

__all__ = ["FIGURES", "render"]

STATE_COLOURS = {"stable": "#2a9d8f", "unstable": "#d1495b", "inconclusive": "#9e9e9e"}


def _new(width: float, height: float, ncols: int = 1, nrows: int = 1):
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes.ravel()


def _x_label(data: ReportData) -> str:
    return "load (lambda / lambda*)" if data.x == "load" else "arrival rate (requests/s)"


def _where(data: ReportData) -> str:
    if data.reference is None:
        return ""
    return f" at {data.x} {data.reference:g}"


def latency_vs_load(data: ReportData) -> Figure | None:
    """Mean TTFT, TPOT and E2E against load, one line per policy, 95% CI over seeds; runs
    stopped by run.max_in_system are left out."""
    if data.points.empty:
        return None
    fig, axes = _new(12, 3.8, ncols=len(LATENCY_METRICS))
    for ax, (metric, title) in zip(axes, LATENCY_METRICS, strict=True):
        table = latency_by_load(data.points, data.x, metric)
        for label, group in table.groupby("label", sort=True):
            err = np.vstack([group["mean"] - group["lo"], group["hi"] - group["mean"]])
            ax.errorbar(group["x"], group["mean"], yerr=err, marker="o", ms=4, capsize=3,
                        label=label)
        ax.set_title(title)
        ax.set_xlabel(_x_label(data))
        ax.grid(alpha=0.3)
    # A metric may have no values at all (every request inside the warm-up, say).
    labelled = [ax for ax in axes if ax.get_legend_handles_labels()[0]]
    if labelled:
        labelled[0].legend(fontsize="small")
    fig.suptitle("Latency against load (mean over seeds, 95% CI)")
    return fig


def latency_cdfs(data: ReportData) -> Figure | None:
    """Empirical CDFs of TTFT and TPOT per policy, requests of every seed pooled."""
    if data.requests.empty:
        return None
    fig, axes = _new(10, 3.8, ncols=2)
    for ax, (col, title) in zip(axes, (("ttft_s", "TTFT (s)"), ("tpot_s", "TPOT (s)")),
                                strict=True):
        for label, group in data.requests.groupby("label", sort=True):
            values = np.sort(group[col].dropna().to_numpy(dtype=float))
            if values.size:
                ax.step(values, np.arange(1, values.size + 1) / values.size, where="post",
                        label=label)
        ax.set_xlabel(title)
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(f"TTFT and TPOT distributions{_where(data)}")
    return fig


def _series_figure(data: ReportData, columns: list[tuple[str, str]], title: str) -> Figure | None:
    if not data.series:
        return None
    fig, axes = _new(6 * len(columns), 3.6, ncols=len(columns))
    for ax, (col, label) in zip(axes, columns, strict=True):
        for name, frame in sorted(data.series.items()):
            ax.plot(frame["t_s"], frame[col], lw=1.2, label=name)
        ax.set_xlabel("time (s)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(f"{title}{_where(data)} (lowest seed)")
    return fig


def system_over_time(data: ReportData) -> Figure | None:
    """Requests in the system N(t) and the token backlog W(t) over time, per policy."""
    return _series_figure(data, [("in_system", "requests in system"),
                                 ("backlog_tokens", "backlog (tokens)")],
                          "Requests in the system and backlog over time")


def kv_over_time(data: ReportData) -> Figure | None:
    """KV blocks in use, as a fraction of the cache, over time, per policy."""
    return _series_figure(data, [("kv_fraction", "KV cache in use (fraction)")],
                          "KV usage over time")


def batch_composition(data: ReportData) -> Figure | None:
    """Mean prefill and decode tokens per iteration over time, stacked, one panel per policy."""
    if not data.composition:
        return None
    names = sorted(data.composition)
    fig, axes = _new(min(4.5 * len(names), 18), 3.4, ncols=len(names))
    for ax, name in zip(axes, names, strict=True):
        frame = data.composition[name]
        ax.stackplot(frame["t_s"], frame["prefill_tokens"], frame["decode_tokens"],
                     labels=("prefill", "decode"), colors=("#e9c46a", "#264653"), alpha=0.85)
        ax.set_title(name, fontsize="medium")
        ax.set_xlabel("time (s)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("tokens per iteration")
    axes[0].legend(fontsize="small", loc="upper left")
    fig.suptitle(f"Batch composition over time{_where(data)} (lowest seed)")
    return fig


def stability_map(data: ReportData) -> Figure | None:
    """The stability verdict of each policy at each load, beside the theoretical lambda*."""
    table = data.verdicts
    if table.empty:
        return None
    labels = sorted(table["label"].unique())
    fig, axes = _new(8, 1.2 + 0.5 * len(labels))
    ax = axes[0]
    for state, colour in STATE_COLOURS.items():
        rows = table[table["state"] == state]
        ax.scatter(rows["x"], [labels.index(p) for p in rows["label"]], s=90, c=colour,
                   label=state, edgecolors="black", linewidths=0.5)
    if data.x == "load":
        ax.axvline(1.0, color="black", ls="--", lw=1, label="theoretical lambda*")
    else:
        for lam in pd.unique(table["lambda_star"].dropna()):
            ax.axvline(float(lam), color="black", ls="--", lw=1)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(-0.6, len(labels) - 0.4)
    ax.set_xlabel(_x_label(data))
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("Stability verdicts (backlog slope CI over seeds) against lambda*")
    return fig


FIGURES = (
    ("latency_vs_load", "Latency against load", latency_vs_load),
    ("latency_cdfs", "TTFT and TPOT distributions", latency_cdfs),
    ("system_over_time", "Requests in the system and backlog", system_over_time),
    ("kv_over_time", "KV cache usage", kv_over_time),
    ("batch_composition", "Batch composition", batch_composition),
    ("stability", "Stability against the theoretical lambda*", stability_map),
)
"""(file stem, section title, figure function), in report order."""


def render(fig: Figure, fmt: str) -> bytes:
    """The figure as PNG or SVG bytes. SVG text stays text, so it is small and searchable."""
    buf = io.BytesIO()
    options = {"dpi": 110} if fmt == "png" else {"metadata": {"Date": None}}
    fig.savefig(buf, format=fmt, **options)
    return buf.getvalue()
