"""Profile rows from probe token times: the iterations a client can see.

A row is one iteration's (prefill tokens, decode tokens, context tokens, seconds), as the
profile fit (``engine/cost_fit.py``) takes it; ``kind`` says which probe gave it. Times are
divided by ``scale`` (wall seconds per engine second). See ``calibrate.py`` for the design.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from servesim.real.calibrate_probe import ProbeResult

__all__ = ["Row", "decode_rows", "mixed_row", "prefill_rows"]

_SEGMENTS = 4   # rows per decode probe: its gaps pooled by median over this many time spans


@dataclass
class Row:
    kind: str
    prefill_tokens: int
    decode_tokens: int
    context_tokens: int
    seconds: float
    note: str = ""


# -- rows from probes -------------------------------------------------------------------------


def _context(prompt: int, token: int, first_token: str) -> int:
    """KV tokens a decoder holds before the step that emits its ``token``-th token (1-based):
    under "prefill" token 1 came from the prefill and is not yet in the cache."""
    return prompt + token - (2 if first_token == "prefill" else 1)


def decode_rows(probes: list[ProbeResult], first_token: str, scale: float = 1.0) -> list[Row]:
    """Rows of B decoders from B concurrent probes: their gaps while all B decode."""
    done = [p for p in probes if p.ok and len(p.token_times_s) >= 2]
    if len(done) != len(probes):
        return []
    lo = max(p.token_times_s[0] for p in done)
    hi = min(p.token_times_s[-1] for p in done)
    b = len(done)
    samples = []   # (end time, gap, context of all B)
    for p in done:
        t = np.asarray(p.token_times_s)
        for j in range(len(t) - 1):
            if t[j] >= lo and t[j + 1] <= hi and t[j + 1] > t[j]:
                samples.append((t[j + 1], t[j + 1] - t[j],
                                b * _context(p.prompt_tokens, j + 2, first_token)))
    if len(samples) < _SEGMENTS:
        return []
    samples.sort()
    rows = []
    for part in np.array_split(np.asarray(samples), _SEGMENTS):
        if len(part):
            rows.append(Row("decode", 0, b, int(round(part[:, 2].mean())),
                            float(np.median(part[:, 1])) / scale,
                            f"B={b} prompt={done[0].prompt_tokens}"))
    return rows


def mixed_row(decoders: list[ProbeResult], probe: ProbeResult, first_token: str,
              scale: float = 1.0) -> Row | None:
    """The iteration that prefilled ``probe`` beside the decoders, from their token gaps."""
    if not probe.ok or not decoders or not all(d.ok for d in decoders):
        return None
    f = probe.token_times_s[0]
    gaps, contexts = [], []
    for d in decoders:
        t = np.asarray(d.token_times_s)
        typical = float(np.median(np.diff(t)))
        j = int(np.argmin(np.abs(t - f)))   # the decoder's token emitted with the probe's
        if abs(t[j] - f) > 0.5 * typical:
            return None
        if first_token == "decode":
            j -= 1   # the prefill ended one step before the probe's first token
        if j < 1 or j >= len(t) - 1:
            return None   # the decoder was not streaming on both sides of that step
        gaps.append(t[j] - t[j - 1])
        contexts.append(_context(d.prompt_tokens, j + 1, first_token))
    return Row("mixed", probe.prompt_tokens, len(decoders), int(sum(contexts)),
               float(np.median(gaps)) / scale, f"B={len(decoders)} prompt={probe.prompt_tokens}")


def prefill_rows(probes: list[ProbeResult], scale: float = 1.0) -> list[Row]:
    """One row per prompt length: the median TTFT of its one-token probes."""
    by_len: dict[int, list[float]] = {}
    for p in probes:
        if p.ok:
            by_len.setdefault(p.prompt_tokens, []).append(p.ttft_s / scale)
    return [Row("prefill", n, 0, 0, float(np.median(v)), f"{len(v)} probes")
            for n, v in sorted(by_len.items())]
