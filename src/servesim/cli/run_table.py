"""The table ``servesim run`` prints: headline metrics, why the run stopped and whether it looks
stable (the summary's ``verdict``), then the summary's warnings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from servesim.cli.tables import number, table

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

__all__ = ["print_run", "stop_phrase", "summary_tables", "verdict_line"]


def print_run(summary: dict[str, Any], console: Console) -> None:
    """The table, then one ``warning: ...`` line per entry of ``summary["warnings"]``."""
    console.print(summary_tables(summary))
    for warning in summary.get("warnings") or ():
        console.print(f"warning: {warning}", highlight=False, soft_wrap=True)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def summary_tables(s: dict[str, Any]) -> Table:
    """A rich table of the headline metrics of a summary dict; its caption says why the run
    stopped and what its verdict is."""
    grid = table("servesim run summary", ("metric", "value / mean", "p50", "p90", "p99"),
                 right=("value / mean", "p50", "p90", "p99"), header_style="bold",
                 caption=verdict_line(s), caption_justify="left")
    verdict = s.get("verdict") or {}
    rows: list[tuple[str, str]] = [
        ("seed", number(s.get("seed"))),
        ("stop reason", str(s.get("stop_reason") or "-")),
        ("verdict", str(verdict.get("state") or "-")),
        ("arrived", number(s.get("arrived"))),
        ("completed", number(s.get("completed"))),
        ("rejected", number(s.get("rejected"))),
        ("in system at end", number(s.get("in_system_at_end"))),
        ("measured window", number(s.get("duration_s"), "s")),
        ("throughput", number(s.get("throughput_rps"), "req/s")),
        ("token throughput", number(s.get("throughput_tokens_per_s"), "tok/s")),
    ]
    for label, value in rows:
        grid.add_row(label, value, "", "", "")
    for label, key in (("TTFT (s)", "ttft_s"), ("TPOT (s)", "tpot_s"), ("E2E (s)", "e2e_s")):
        st = s.get(key) or {}
        grid.add_row(label, *(number(st.get(k)) for k in ("mean", "p50", "p90", "p99")))
    more = [
        ("preemptions", number(s.get("preemptions"))),
        ("KV utilisation (mean)", _pct(s.get("kv_utilization_mean"))),
        ("mean batch size", number(s.get("mean_batch_size"))),
        ("non-work-conserving iters", _pct(s.get("non_work_conserving_fraction"))),
        ("goodput", number(s.get("goodput_rps"), "req/s")),
        ("SLO attainment", _pct(s.get("slo_attainment"))),
    ]
    for label, value in more:
        grid.add_row(label, value, "", "", "")
    return grid


def verdict_line(s: dict[str, Any]) -> str:
    """Why the run stopped, then its verdict: "stopped early: more than 5000 requests in the
    system (max_in_system); looks unstable: backlog grows ..."."""
    verdict = s.get("verdict") or {}
    headline = verdict.get("headline") or "no verdict"
    return f"{stop_phrase(s)}; {headline}"


def stop_phrase(s: dict[str, Any]) -> str:
    """What ``stop_reason`` (and ``status``) mean for this run, in words."""
    reason = s.get("stop_reason")
    run = (s.get("scenario") or {}).get("run") or {}
    left = s.get("in_system_at_end")
    if s.get("status") == "interrupted" or reason == "interrupted":
        return "stopped early: interrupted before the end (interrupted)"
    if reason == "max_in_system":
        return (f"stopped early: more than {run.get('max_in_system', '?')} requests in the "
                "system (max_in_system)")
    if reason == "drained":
        return "ran to the end: every request finished or was rejected (drained)"
    if reason == "time":
        if "horizon_s" in run:
            return f"stopped at the horizon {number(run['horizon_s'], 's')}, {left} requests " \
                   "still in the system (time)"
        return (f"stopped early: max_time_s = {number(run.get('max_time_s'), 's')} reached with "
                f"{left} requests unfinished (time)")
    return f"stopped: {reason}"
