"""First-token times and largest inter-token gaps, computed offline from token segments.

The fast replica never touches a decoding request per token; instead it records, per request,
segments of consecutive decode ticks in which it emitted tokens, the end time of every tick, and
the tokens emitted outside the ticks (prefill completions under first_token = "prefill").
Everything per token is derived here, vectorised, once the run is over.
"""

from __future__ import annotations

import numpy as np


def token_times(tick_end: np.ndarray, seg: np.ndarray, n: int,
                points: list[tuple[int, float]] = ()) -> tuple[np.ndarray, np.ndarray]:
    """First-token time and largest inter-token gap of every request, from token segments.

    A segment (request, s, k) says the request emitted tokens at the ends of ticks s+1..s+k.
    A point (request, time) is one token emitted at ``time`` outside the ticks (a prefill that
    completes under first_token = "prefill"). Within-segment gaps are a range maximum over
    per-tick gaps (sparse table); gaps between a request's consecutive segments and points, in
    time order, are differences of their end points.
    """
    first = np.full(n, np.nan)
    gaps = np.full(n, np.nan)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if not len(seg) and not len(pts):
        return first, gaps
    start, k = seg[:, 1], seg[:, 2]
    req = np.concatenate([seg[:, 0], pts[:, 0].astype(np.int64)])
    lo = np.concatenate([tick_end[start + 1], pts[:, 1]])       # each item's first token
    hi = np.concatenate([tick_end[start + k], pts[:, 1]])       # and its last
    tick_gap = np.diff(tick_end, prepend=tick_end[0])          # gap before tick j's token
    inner = np.concatenate([_range_max(tick_gap, start + 2, start + k),   # ticks s+2..s+k
                            np.full(len(pts), np.nan)])
    order = np.lexsort((lo, req))
    req, lo, hi, inner = req[order], lo[order], hi[order], inner[order]
    head = np.ones(len(req), bool)
    head[1:] = req[1:] != req[:-1]
    first[req[head]] = lo[head]
    np.fmax.at(gaps, req, inner)
    cross = lo[1:] - hi[:-1]
    same = ~head[1:]
    np.fmax.at(gaps, req[1:][same], cross[same])
    return first, gaps


def _range_max(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """max(values[lo..hi]) for each pair (inclusive); NaN where the range is empty."""
    out = np.full(len(lo), np.nan)
    ok = hi >= lo
    if not ok.any():
        return out
    lo, hi = lo[ok], hi[ok]
    level = np.floor(np.log2(hi - lo + 1)).astype(np.int64)
    res = np.empty(len(lo))
    # Build the sparse table one level at a time and answer that level's queries, so memory
    # stays O(len(values)) rather than O(len(values) log len(values)).
    table, width = values, 1
    for j in range(int(level.max()) + 1):
        if j:
            table = np.maximum(table[:-width], table[width:])
            width *= 2
        sel = level == j
        if sel.any():
            res[sel] = np.maximum(table[lo[sel]], table[hi[sel] - width + 1])
    out[ok] = res
    return out
