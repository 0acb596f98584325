"""Latency lower bounds for truncated points.

At a point whose run stopped with most requests unserved, the mean over the finished requests
describes the few that got through. Counting every measured request instead, one still waiting
for its first token (or to finish) as waiting until the run stopped, gives a mean that can only
be below the true one: a lower bound, which the report draws with a hollow marker.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

__all__ = ["CENSORED", "censored_means"]

CENSORED = {"ttft_mean_s": "ttft_censored_mean_s", "e2e_mean_s": "e2e_censored_mean_s"}
"""Metric column of ``points`` -> the column of its censored lower bound."""


def censored_means(con, points: pd.DataFrame, warmup_s: Mapping[str, float]) -> pd.DataFrame:
    """Per point of ``points``: mean TTFT and E2E (s) over the requests that arrived in
    [warmup_s, end_s] and were not rejected, unfinished times censored at the run's end.

    Returns a frame with point_id and the CENSORED columns (one row per point that has such
    requests).
    """
    columns = ["point_id", *CENSORED.values()]
    if points.empty:
        return pd.DataFrame(columns=columns)
    window = pd.DataFrame({"point_id": points["point_id"].astype(str),
                           "end_s": points["end_s"].astype(float),
                           "warmup_s": [float(warmup_s.get(str(p), 0.0))
                                        for p in points["point_id"]]})
    con.register("censor_window", window)
    try:
        return con.execute(
            "SELECT r.point_id, "
            "avg(coalesce(r.first_token_s, w.end_s) - r.arrival_s) AS ttft_censored_mean_s, "
            "avg(coalesce(r.finish_s, w.end_s) - r.arrival_s) AS e2e_censored_mean_s "
            "FROM requests r JOIN censor_window w ON r.point_id = w.point_id "
            "WHERE r.arrival_s >= w.warmup_s AND r.arrival_s <= w.end_s "
            "AND r.status <> 'rejected' GROUP BY r.point_id").df()[columns]
    finally:
        con.unregister("censor_window")
