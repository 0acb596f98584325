"""Import the per-request results of ``vllm bench serve --save-result --save-detailed`` into the
observed-run schema (``servesim.real.observed``).

The detailed JSON holds one entry per request in parallel lists: ``input_lens``, ``output_lens``,
``ttfts`` (seconds), ``itls`` (a list of gaps per request, seconds), ``errors`` ("" on success),
``generated_texts``, and in recent vLLM versions ``start_times`` (``time.perf_counter()`` when
the request was sent), ``latencies`` and ``queue_times`` (the client-side wait before sending,
under ``--max-concurrency``); scalars such as ``date``, ``duration``, ``request_rate``,
``max_concurrency``, ``model_id``, ``completed`` and ``failed`` sit beside them.

Reconstruction:

- ``arrival_s``: each ``start_times`` entry minus the earliest, so a request arrives when it
  was sent (as vLLM measures its latencies from there; ``queue_times`` is kept as
  ``client_queue_s``). Without ``start_times`` the arrival times are not in the file: with an
  infinite ``request_rate`` every request is taken to arrive at 0 (what that benchmark does),
  with a finite one evenly at i / request_rate, and the summary's ``arrival_times`` says so.
  Latencies per request (TTFT, gaps, E2E) are the file's either way; only the timeline is then
  approximate. Rows are ordered by arrival; ``id`` is the entry's index in the file.
- Token times: the first at arrival + TTFT, then one per ``itls`` gap; when ``output_lens``
  counts more tokens than the chunks the gaps describe, ``spread_tokens`` shares them out.
- ``status``: "finished" when the entry's error is empty, else "timeout" or "refused" when the
  error says so, "failed" otherwise. ``prompt_tokens`` is ``input_lens`` (the benchmark's own
  count; ``prompt_tokens_server`` is -1, unknown); ``output_tokens`` is ``output_lens``, at
  least 1 (a failed entry reports 0, and a replay needs one token).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from servesim.core.errors import file_error
from servesim.real.client import spread_tokens
from servesim.real.observed import derived_iterations, observed_summary, request_frame

__all__ = ["REQUIRED_KEYS", "import_bench", "load_bench"]

REQUIRED_KEYS = ("input_lens", "output_lens", "ttfts", "itls")
OPTIONAL_LISTS = ("errors", "start_times", "latencies", "queue_times", "generated_texts")


def load_bench(path: str | Path) -> dict[str, Any]:
    """Read and check a detailed ``vllm bench serve`` result file.

    Raises ConfigError with a one-line ``<path>: ...`` message naming the key and position for
    an unreadable file, a missing key, lists of different lengths or a bad entry.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise file_error(str(path), f"cannot read the benchmark file: {e}") from None
    except json.JSONDecodeError as e:
        raise file_error(str(path), f"not JSON: {e.msg} at line {e.lineno} column {e.colno}") \
            from None
    if not isinstance(data, dict):
        raise file_error(str(path), "expected a JSON object (a vllm bench serve result)")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise file_error(str(path), f"no key {missing[0]!r}: expected the per-request lists of "
                         "'vllm bench serve --save-result --save-detailed'")
    n = None
    for key in (*REQUIRED_KEYS, *OPTIONAL_LISTS):
        if key not in data or data[key] is None:
            continue
        if not isinstance(data[key], list):
            raise file_error(str(path), f"key {key!r}: expected a list, got "
                             f"{type(data[key]).__name__}")
        if n is None:
            n = len(data[key])
        elif len(data[key]) != n:
            raise file_error(str(path), f"key {key!r}: {len(data[key])} entries, but "
                             f"{REQUIRED_KEYS[0]!r} has {n}")
    _check_entries(path, data)
    return data


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_entries(path: Path, data: dict[str, Any]) -> None:
    def bad(key: str, i: int, expected: str, value: Any) -> Exception:
        return file_error(str(path), f"key {key!r}[{i}]: expected {expected}, got "
                          f"{json.dumps(value)[:60]}")

    for key in ("input_lens", "output_lens"):
        for i, v in enumerate(data[key]):
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
                raise bad(key, i, "a token count >= 0", v)
    for key in ("ttfts", "start_times", "latencies", "queue_times"):
        for i, v in enumerate(data.get(key) or ()):
            if v is not None and not (_number(v) and (key == "start_times" or v >= 0)):
                raise bad(key, i, "a number of seconds" + ("" if key == "start_times"
                                                          else " >= 0"), v)
    for i, gaps in enumerate(data["itls"]):
        if not isinstance(gaps, list) or not all(_number(g) and g >= 0 for g in gaps):
            raise bad("itls", i, "a list of gaps in seconds >= 0", gaps)
    for i, v in enumerate(data.get("errors") or ()):
        if v is not None and not isinstance(v, str):
            raise bad("errors", i, "an error message (string) or null", v)


def _status(error: str) -> str:
    if not error:
        return "finished"
    low = error.lower()
    if "timeout" in low or "timed out" in low:
        return "timeout"
    if "connect" in low or "refused" in low:
        return "refused"
    return "failed"


def _arrivals(data: dict[str, Any], n: int) -> tuple[np.ndarray, str]:
    starts = data.get("start_times")
    if starts and all(s is not None for s in starts):
        t = np.asarray(starts, np.float64)
        return t - t.min(), "from start_times (when each request was sent)"
    rate = data.get("request_rate")
    rate = float(rate) if _number(rate) or rate == "inf" else math.inf
    if math.isfinite(rate) and rate > 0:
        return np.arange(n) / rate, (f"not in the file (no start_times): reconstructed evenly at "
                                     f"i / request_rate = i / {rate:g} s")
    return np.zeros(n), ("not in the file (no start_times): all at 0, as a benchmark at an "
                         "infinite request rate sends them")


def bench_columns(data: dict[str, Any]) -> tuple[dict[str, list[Any]], str]:
    """Per-request columns of a checked result file (see the module docstring) and how the
    arrival times were found."""
    n = len(data["input_lens"])
    arrival, how = _arrivals(data, n)
    errors = data.get("errors") or [""] * n
    queue = data.get("queue_times") or [math.nan] * n
    cols: dict[str, list[Any]] = {k: [] for k in (
        "id", "arrival_s", "prompt_tokens", "output_tokens", "status", "first_token_s",
        "finish_s", "token_times_s", "error", "sent_s", "client_queue_s")}
    for i in np.argsort(arrival, kind="stable"):
        error = " ".join(str(errors[i] or "").split())[:300]
        status = _status(error)
        ttft, gaps, n_out = data["ttfts"][i], data["itls"][i], data["output_lens"][i]
        chunks: list[float] = []
        if ttft is not None and (status == "finished" or ttft > 0):
            chunks = list(arrival[i] + ttft + np.concatenate([[0.0], np.cumsum(gaps)]))
        times = spread_tokens(chunks, [1] * len(chunks), n_out if n_out > 0 else len(chunks))
        row = {"id": int(i), "arrival_s": float(arrival[i]),
               "prompt_tokens": max(int(data["input_lens"][i]), 1),
               "output_tokens": max(int(n_out), 1), "status": status,
               "first_token_s": times[0] if times else math.nan,
               "finish_s": times[-1] if status == "finished" and times else math.nan,
               "token_times_s": times, "error": error, "sent_s": float(arrival[i]),
               "client_queue_s": float(queue[i]) if queue[i] is not None else math.nan}
        for key, value in row.items():
            cols[key].append(value)
    return cols, how


def import_bench(path: str | Path, scenario: Any = None
                 ) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """The summary, requests table and derived iterations of a detailed result file.

    ``scenario`` (optional) gives the warm-up, SLO and token budget the summary uses, and its
    echo. Raises ConfigError as ``load_bench`` does.
    """
    data = load_bench(path)
    cols, how = bench_columns(data)
    queue = cols.pop("client_queue_s")
    requests = request_frame(cols)
    requests["client_queue_s"] = np.asarray(queue, np.float64)
    times = [t[-1] for t in cols["token_times_s"] if len(t)]
    end_s = float(data["duration"]) if _number(data.get("duration")) else max([0.0, *times])
    end_s = max(end_s, *times) if times else end_s
    iterations = derived_iterations(requests, end_s)
    header: dict[str, Any] = {}
    run: Any = None
    if scenario is not None:
        from servesim.api import run_header

        header, run = run_header(scenario, scenario.run.seed), scenario.run
    scalars = {k: v for k, v in data.items() if not isinstance(v, list | dict)}
    extras = {"endpoint": None, "model": data.get("model_id"), "loop": None,
              "imported_from": str(path), "bench": scalars, "arrival_times": how,
              "load_average": None, "server": {}, "prompt_token_mismatches": 0,
              "prompt_token_check": "none: the file holds the benchmark's own counts"}
    summary = observed_summary(requests, iterations, end_s=end_s, header=header, extras=extras,
                               warmup_s=run.warmup_s if run else 0.0,
                               slo=scenario.slo if scenario is not None else None,
                               token_budget=scenario.engine.token_budget if scenario else 0)
    summary["source"] = "vllm bench serve"
    return summary, requests, iterations
