"""Checks of a scenario that read more than one section: run length against the arrivals, and
the workload's lengths against the engine's limits. ``scenario_from_dict`` calls them once every
section is valid on its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from servesim.core.errors import ConfigError
from servesim.core.fields import MAX_TIME_S
from servesim.engine.config import EngineConfig
from servesim.engine.servable import check_servable
from servesim.workload.arrivals import Explicit
from servesim.workload.build import Workload

if TYPE_CHECKING:
    from servesim.scenario import RunConfig

__all__ = ["check_across_sections"]


def check_across_sections(run: RunConfig, workload: Workload, engine: EngineConfig) -> None:
    """Refuse a scenario in which no request can ever be served, or nothing can be measured.

    Raises ConfigError naming the field that makes it so (see ``check_servable`` and
    ``check_arrival_span``).
    """
    check_servable(workload, engine, run.requests)
    check_arrival_span(run, workload)


def check_arrival_span(run: RunConfig, workload: Workload) -> None:
    """Refuse a warm-up that outlasts every arrival (nothing would be measured), and a
    request-count run whose arrivals would reach beyond ``MAX_TIME_S``.

    Raises ConfigError on ``run.warmup_s`` or ``run.requests``, naming the span expected.
    """
    found = _arrival_span(run, workload)
    if found is None:
        return
    span, how = found
    if run.requests is not None and span > MAX_TIME_S:
        raise ConfigError("run.requests", run.requests,
                          f"arrivals that end by {MAX_TIME_S:g} s (beyond it float64 times lose "
                          f"sub-microsecond precision); {how} (ask for fewer requests or a higher "
                          "rate)")
    if run.warmup_s > 0 and run.warmup_s >= span:
        raise ConfigError("run.warmup_s", run.warmup_s,
                          f"a warm-up shorter than {how}, so that some arrivals are measured")


def _arrival_span(run: RunConfig, workload: Workload) -> tuple[float, str] | None:
    """When the run's last arrival comes (exactly, or expected from the rate), with a phrase
    saying how it was found; None when the horizon alone bounds the arrivals."""
    n, trace = run.requests, workload.trace
    if trace is not None and trace.use_times:
        times = trace.rows.arrival_s
        assert times is not None
        if n is None:
            last = float(times[-1])
            return (None if trace.loop or last >= run.horizon_s  # type: ignore[operator]
                    else (last, f"the trace's last arrival at {last:g} s"))
        trace._check_count(n, "run.requests", n)  # at load time, not half-way into a run
        k, i = divmod(n - 1, len(times))
        last = (k * trace.period_s if k else 0.0) + float(times[i])
        return last, f"the trace's arrival span for {n} requests, {last:g} s"
    arrival = workload.arrival
    if isinstance(arrival, Explicit):
        listed = arrival.sample(None, n=n, horizon_s=run.horizon_s)  # type: ignore[arg-type]
        return (float(listed[-1]), f"the last listed arrival at {float(listed[-1]):g} s") \
            if len(listed) else None
    rate = arrival.rate_per_s
    if n is None or not rate > 0:
        return None
    span = n / rate
    return span, f"the expected arrival span of {n} requests at {rate:g}/s, {span:g} s"
