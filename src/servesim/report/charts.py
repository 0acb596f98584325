"""The report's figures as ``Chart`` specs: what to draw, on which axes, with which notes.

Every reading decision lives here: truncated points drawn hollow and named, log axes where
values span orders of magnitude, no interval bar with too few seeds, no KV plot for a cache
that never fills, one y scale for panels that are compared, and the lambda* tick only where
the token budget is the limit. ``static`` and ``interactive`` only draw.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from servesim.report.data import ReportData
from servesim.report.limits import TOKEN_BUDGET
from servesim.report.spec import Chart, Panel, Trace, colours
from servesim.report.stats import MIN_SEEDS_FOR_CI, axis_scale, latency_by_load

__all__ = ["CHARTS", "KV_MIN_PEAK", "LATENCY_METRICS", "cdf_scale", "x_label"]

LATENCY_METRICS = (("ttft_mean_s", "TTFT"), ("tpot_mean_s", "TPOT"), ("e2e_mean_s", "E2E latency"))
KV_MIN_PEAK = 0.01
"""Below this peak fraction of the cache in use the KV plot is omitted: the cache is
effectively unlimited and the curves are flat lines near zero."""
CDF_POINTS = 2000
"""Most points drawn per CDF: quantiles at even probabilities beyond that, for a small page."""
STATE_COLOURS = {"stable": "#2a9d8f", "unstable": "#d1495b", "inconclusive": "#9e9e9e"}
STATE_SYMBOLS = {"stable": "circle", "unstable": "square", "inconclusive": "diamond"}


def x_label(data: ReportData) -> str:
    return "load (λ / λ*)" if data.x == "load" else "arrival rate (requests/s)"


def _x_name(data: ReportData) -> str:
    return "load" if data.x == "load" else "rate"


def _where(data: ReportData) -> str:
    return "" if data.reference is None else f" at {_x_name(data)} {data.reference:.3g}"


def _span_note(what: str, values) -> str:
    x = np.asarray([v for v in values if np.isfinite(v) and v > 0], dtype=float)
    return (f"{what} on a log axis: the values span a factor of {x.max() / x.min():,.0f} "
            f"(a linear axis would flatten the smaller ones).")


def _truncation_note(data: ReportData, labels) -> str:
    by_reason: dict[str, dict[str, list[float]]] = {}
    for (label, xv), reason in sorted(data.truncated.items()):
        if reason and label in labels:
            by_reason.setdefault(reason, {}).setdefault(label, []).append(xv)
    if not by_reason:
        return ""
    parts = [reason[0].upper() + reason[1:] + ": " + "; ".join(
        f"{label} at {_x_name(data)} {', '.join(f'{v:.3g}' for v in xs)}"
        for label, xs in by_label.items()) for reason, by_label in by_reason.items()]
    return ("Hollow markers are truncated points, whose mean is a lower bound: TTFT and E2E "
            "there count every measured request, one not yet served as waiting until the run "
            "stopped; TPOT counts the finished requests only. " + ". ".join(parts) + ".")


def _seed_note(tables: list[pd.DataFrame]) -> str:
    counts = pd.concat([t["n"] for t in tables]) if tables else pd.Series(dtype=int)
    if counts.empty or counts.min() >= MIN_SEEDS_FOR_CI:
        return ("Markers: geometric mean over seeds; bars: 95% t-interval of the log values "
                "over seeds (always positive).")
    if counts.max() < MIN_SEEDS_FOR_CI:
        return (f"No confidence bars: a 95% interval needs at least {MIN_SEEDS_FOR_CI} seeds "
                f"per point, and these points have {counts.max()}. Markers: geometric mean "
                "over seeds.")
    return (f"Bars: 95% t-interval of the log values over seeds; none where a point has fewer "
            f"than {MIN_SEEDS_FOR_CI} seeds. Markers: geometric mean over seeds.")


def _latency_hover(data: ReportData, what: str, row) -> str:
    text = f"{row.label}<br>{_x_name(data)} {row.x:.3g}<br>{what}: {row.centre:.4g} s"
    if np.isfinite(row.lo):
        text += f"<br>95% CI [{row.lo:.4g}, {row.hi:.4g}] s, {row.n} seeds"
    else:
        text += f"<br>{row.n} seed(s): too few for an interval"
    return text + (f"<br>truncated: {row.reason}" if row.reason else "")


def _latency_panel(data: ReportData, metric: str, what: str, palette) -> tuple[Panel, pd.DataFrame]:
    table = latency_by_load(data.points, data.x, metric, data.truncated)
    panel = Panel(f"mean {what}", x_label(data), f"{what} (s)",
                  y_log=axis_scale(table["centre"]) == "log")
    for label, group in table.groupby("label", sort=True):
        panel.traces.append(Trace(
            label, group["x"].to_numpy(), group["centre"].to_numpy(), palette[label],
            mode="lines+markers", hollow=(group["reason"] != "").to_numpy(),
            lo=group["lo"].to_numpy(), hi=group["hi"].to_numpy(), group=label,
            hover=[_latency_hover(data, what, r) for r in group.itertuples()]))
    if (table["reason"] != "").any():
        panel.traces.append(Trace("truncated (lower bound)", np.array([]), np.array([]),
                                  "#555555", mode="markers", hollow=np.array([], bool),
                                  group="truncated"))
    return panel, table


def latency_chart(data: ReportData) -> Chart | None:
    if data.points.empty:
        return None
    palette = colours(data.points["label"].unique())
    chart = Chart("latency_vs_load", "Latency against load",
                  "Mean TTFT, TPOT and end-to-end latency against load, one line per policy.")
    tables, missing = [], []
    every = {(label, float(xv)) for label, xv in zip(data.points["label"], data.points[data.x],
                                                     strict=True)}
    for metric, what in LATENCY_METRICS:
        panel, table = _latency_panel(data, metric, what, palette)
        chart.panels.append(panel)
        tables.append(table)
        gone = sorted(every - set(zip(table["label"], table["x"], strict=True)))
        if gone:
            missing.append(f"{what} of " + "; ".join(
                f"{label} at {_x_name(data)} {', '.join(f'{v:.3g}' for v in xs)}"
                for label, xs in _by_label(gone).items()))
        if panel.y_log:
            chart.notes.append(_span_note(what, table["centre"]))
    chart.notes.insert(0, _seed_note(tables))
    note = _truncation_note(data, set(palette))
    if note:
        chart.notes.insert(1, note)
    if missing:
        chart.notes.append("Not drawn, as no request had a value there: " + "; ".join(missing)
                           + ".")
    return chart


def _by_label(keys: list[tuple[str, float]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for label, xv in keys:
        out.setdefault(label, []).append(xv)
    return out


def cdf_scale(groups: dict[str, np.ndarray]) -> str:
    """'log' when the slowest value is LOG_RATIO times the fastest label's median or more."""
    filled = [v for v in groups.values() if v.size]
    if not filled:
        return "linear"
    if any((v <= 0).any() for v in filled):
        return "linear"
    return axis_scale([*(float(np.median(v)) for v in filled), max(float(v.max()) for v in filled)])


def _cdf_points(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values = np.sort(values)
    p = np.arange(1, values.size + 1) / values.size
    if values.size > CDF_POINTS:
        keep = np.unique(np.linspace(0, values.size - 1, CDF_POINTS).round().astype(int))
        values, p = values[keep], p[keep]
    return values, p


def cdf_chart(data: ReportData) -> Chart | None:
    if data.requests.empty:
        return None
    palette = colours(data.points["label"].unique())
    cut = {label for (label, xv), reason in data.truncated.items()
           if reason and data.reference is not None and np.isclose(xv, data.reference)}
    chart = Chart("latency_cdfs", "TTFT and TPOT distributions",
                  f"Empirical CDFs of TTFT and TPOT per policy{_where(data)}, the requests of "
                  "every seed pooled.", columns=2)
    for col, what in (("ttft_s", "TTFT"), ("tpot_s", "TPOT")):
        groups = {label: g[col].dropna().to_numpy(dtype=float)
                  for label, g in data.requests.groupby("label", sort=True)}
        panel = Panel(what, f"{what} (s)", "fraction of requests",
                      x_log=cdf_scale(groups) == "log")
        for label, values in groups.items():
            if values.size:
                x, p = _cdf_points(values)
                name = f"{label} (truncated)" if label in cut else label
                panel.traces.append(Trace(name, x, p, palette[label], mode="step", group=label))
        chart.panels.append(panel)
        if panel.x_log:
            chart.notes.append(_span_note(what, np.concatenate(list(groups.values()))))
    empty = sorted(set(data.points["label"]) - set(data.requests["label"]))
    if empty:
        chart.notes.append(f"No line for {', '.join(empty)}: no request finished"
                           f"{_where(data)}.")
    if cut:
        chart.notes.append(
            f"Truncated{_where(data)}: " + "; ".join(
                f"{label} ({data.truncated[(label, data.reference)]})" for label in sorted(cut))
            + ". Their CDFs cover only the requests that finished, so they understate latency.")
    return chart


def _series_panels(data: ReportData, columns: list[tuple[str, str, str]]) -> list[Panel]:
    palette = colours(data.points["label"].unique())
    panels = []
    for col, title, unit in columns:
        panel = Panel(title, "time (s)", unit)
        for name, frame in sorted(data.series.items()):
            panel.traces.append(Trace(name, frame["t_s"].to_numpy(), frame[col].to_numpy(),
                                      palette[name], group=name))
        panels.append(panel)
    return panels


def system_chart(data: ReportData) -> Chart | None:
    if not data.series:
        return None
    return Chart("system_over_time", "Requests in the system and backlog",
                 f"Requests in the system N(t) and the token backlog W(t) over time{_where(data)}"
                 ", lowest seed.",
                 _series_panels(data, [("in_system", "requests in the system N(t)", "requests"),
                                       ("backlog_tokens", "token backlog W(t)", "tokens")]),
                 columns=2)


def kv_chart(data: ReportData) -> Chart | None:
    if not data.series:
        return None
    chart = Chart("kv_over_time", "KV cache usage",
                  f"KV blocks in use, as a fraction of the cache, over time{_where(data)}, "
                  "lowest seed.", columns=1)
    peaks = [float(f["kv_peak_fraction"].max()) for f in data.series.values() if len(f)]
    peak = max((p for p in peaks if np.isfinite(p)), default=float("nan"))
    if not np.isfinite(peak) or peak < KV_MIN_PEAK:
        shown = f"{peak:.2g}" if np.isfinite(peak) else "unknown"
        chart.notes.append(
            f"Not drawn: at most a fraction {shown} of the KV cache was ever in use"
            f"{_where(data)} (under {KV_MIN_PEAK:.0%}), so the cache is effectively unlimited "
            "in these runs and never limited them.")
        return chart
    chart.panels = _series_panels(data, [("kv_fraction", "KV cache in use",
                                          "fraction of the cache")])
    return chart


def composition_chart(data: ReportData) -> Chart | None:
    if not data.composition:
        return None
    names = sorted(data.composition)
    chart = Chart("batch_composition", "Batch composition",
                  f"Mean prefill and decode tokens per iteration over time{_where(data)}, "
                  "stacked, lowest seed; every panel on the same y scale.",
                  columns=min(2, len(names)), panel_height_in=3.0)
    top = max((float((f["prefill_tokens"] + f["decode_tokens"]).max())
               for f in data.composition.values() if len(f)), default=0.0)
    for name in names:
        frame = data.composition[name]
        panel = Panel(name, "time (s)", "tokens per iteration", y_max=top * 1.05 or None)
        for col, colour in (("prefill_tokens", "#e9c46a"), ("decode_tokens", "#264653")):
            what = col.split("_")[0]
            panel.traces.append(Trace(what, frame["t_s"].to_numpy(), frame[col].to_numpy(),
                                      colour, mode="area", group=what))
        chart.panels.append(panel)
    return chart


def _row_names(data: ReportData, labels: list[str]) -> dict[str, str]:
    """Row names of the stability map: a policy whose limit is not the token budget says so."""
    names = {}
    for lb in labels:
        limit = data.limits.get(lb)
        bound = limit is None or limit.binds == TOKEN_BUDGET
        names[lb] = lb if bound else f"{lb} ({limit.binds} binds)"
    return names


def _lambda_ticks(data: ReportData, labels: list[str],
                  names: dict[str, str]) -> tuple[Trace | None, list[str]]:
    """The lambda* tick on each row whose policy is limited by the token budget, and a note
    for the others."""
    lam = data.verdicts.groupby("label")["lambda_star"].mean()
    bound = [lb for lb in labels if data.limits.get(lb) is None
             or data.limits[lb].binds == TOKEN_BUDGET]
    other = [lb for lb in labels if lb not in bound]
    xs = np.array([1.0 if data.x == "load" else float(lam[lb]) for lb in bound])
    trace = None
    if bound:
        trace = Trace("λ* (token budget)", xs, np.array([names[lb] for lb in bound]),
                      "#000000", mode="markers",
                      symbol="vline", size=26, group="lambda",
                      hover=[f"{lb}<br>λ* = {lam[lb]:.4g} requests/s" for lb in bound])
    notes = [f"λ* is not drawn for {lb}: the {data.limits[lb].binds} binds first "
             f"({data.limits[lb].detail}), so its loads are fractions of a rate it cannot "
             "reach." for lb in other]
    return trace, notes


def stability_chart(data: ReportData) -> Chart | None:
    table = data.verdicts
    if data.points.empty:
        return None
    labels = sorted(table["label"].unique())
    chart = Chart("stability", "Stability against the theoretical λ*",
                  "The stability verdict of each policy at each load (backlog-slope CI over "
                  "seeds, completion ratio, fluid slope), beside the theoretical λ*.", columns=1,
                  panel_height_in=1.3 + 0.45 * len(labels), height_px=170 + 45 * len(labels))
    if table.empty:
        chart.notes.append("No verdicts: the backlog trend is measured on runs to a fixed "
                           "horizon (run.horizon_s), and this sweep has none.")
        return chart
    names = _row_names(data, labels)
    panel = Panel("stability verdicts", x_label(data), "",
                  y_categories=[names[lb] for lb in labels])
    for state, colour in STATE_COLOURS.items():
        rows = table[table["state"] == state]
        if len(rows):
            panel.traces.append(Trace(
                state, rows["x"].to_numpy(), np.array([names[lb] for lb in rows["label"]]),
                colour, mode="markers",
                symbol=STATE_SYMBOLS[state], size=13, group=state,
                hover=[f"{r.label}<br>{_x_name(data)} {r.x:.3g}: {r.state}<br>{r.evidence}"
                       for r in rows.itertuples()]))
    tick, notes = _lambda_ticks(data, labels, names)
    if tick is not None:
        panel.traces.append(tick)
    chart.panels.append(panel)
    chart.notes.extend(notes)
    return chart


CHARTS = (latency_chart, cdf_chart, system_chart, kv_chart, composition_chart, stability_chart)
"""Chart builders in report order; each returns a Chart, or None when the sweep has nothing
for it."""
