"""Trace readers: Azure LLM 2023, Mooncake, lengths-only CSV and a generic CSV.

Every reader returns a ``TraceRows`` and is strict: a malformed row raises ``TraceError`` whose
one-line message carries the path, the 1-based file line and column (``path:line:column``), the
column's name, the bad cell and what was expected (``servesim.workload.trace_parse``). Token
counts above ``MAX_TOKENS``, negative, non-integer, NaN or infinite cells, and times beyond
``MAX_TIME_S`` are refused there, never later under an internal field name. An empty file, and a
file in another known format (a Mooncake JSONL read as Azure, say), get a one-line message that
names the format it looks like. Blank lines are skipped.

Zero-token rows: the Requests struct needs every length >= 1, and none of the public traces in
``shared/data`` has a 0. A 0 therefore raises by default, with a message that names the option
``zero_tokens = "drop"``, which skips such rows (a request that produced nothing, such as a
failed or cancelled call, costs the engine nothing) and counts them in ``TraceRows.n_dropped``.
Negative or non-integer counts always raise.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from servesim.core.errors import ConfigError, TraceError
from servesim.core.registry import lookup
from servesim.workload.trace_parse import (
    ZERO_TOKEN_POLICIES,
    Columns,
    TraceRows,
    check_policy,
    collect,
    csv_rows,
    guess_format,
    json_value,
    open_trace,
    parse_row,
    seconds,
    timestamp_ns,
    tokens,
)

__all__ = ["CSV_ROLES", "TRACE_READERS", "ZERO_TOKEN_POLICIES", "TraceRows", "read_azure",
           "read_column", "read_csv", "read_lengths_csv", "read_mooncake"]


def _read_csv(path: str | Path, columns: Columns, *, time_key: str | None,
              ticks_per_s: float, zero_tokens: str, field: str, fmt: str) -> TraceRows:
    """Read a CSV with a header line, keeping ``columns``; see the module docstring."""
    rows, dropped = csv_rows(path, columns, zero_tokens, field, fmt)
    return collect(Path(path), rows, dropped, time_key, ticks_per_s)


# -- public readers ------------------------------------------------------------------------------


def read_azure(path: str | Path, *, zero_tokens: str = "error",
               field: str = "workload.trace") -> TraceRows:
    """Read an Azure LLM inference trace (``TIMESTAMP,ContextTokens,GeneratedTokens``).

    Timestamps look like ``2023-11-16 18:15:46.6805900`` (up to 9 fractional digits are read);
    rows out of time order are sorted stably by time.

    Raises ConfigError (``<field>.path``) if the file is missing, TraceError on a malformed row.
    """
    columns = {"arrival_ns": ("TIMESTAMP", timestamp_ns),
               "prompt_tokens": ("ContextTokens", tokens),
               "output_tokens": ("GeneratedTokens", tokens)}
    return _read_csv(path, columns, time_key="arrival_ns", ticks_per_s=1e9,
                     zero_tokens=zero_tokens, field=field, fmt="azure")


def read_lengths_csv(path: str | Path, *, zero_tokens: str = "error",
                     field: str = "workload.trace") -> TraceRows:
    """Read a lengths-only CSV (``num_prefill_tokens,num_decode_tokens``, other columns ignored).

    ``arrival_s`` is None: pair it with an arrival process.

    Raises ConfigError (``<field>.path``) if the file is missing, TraceError on a malformed row.
    """
    columns = {"prompt_tokens": ("num_prefill_tokens", tokens),
               "output_tokens": ("num_decode_tokens", tokens)}
    return _read_csv(path, columns, time_key=None, ticks_per_s=1.0, zero_tokens=zero_tokens,
                     field=field, fmt="lengths_csv")


CSV_ROLES = ("arrival_s", "arrival_ms", "prompt_tokens", "output_tokens")


def read_csv(path: str | Path, columns: Mapping[str, str], *, zero_tokens: str = "error",
             field: str = "workload.trace") -> TraceRows:
    """Read a CSV whose header names are mapped to roles by ``columns``.

    ``columns`` maps ``prompt_tokens`` and ``output_tokens`` (required) and at most one of
    ``arrival_s`` / ``arrival_ms`` to header names, e.g.
    ``{"prompt_tokens": "in", "output_tokens": "out", "arrival_s": "t"}``. Rows out of time order
    are sorted stably by time.

    Raises ConfigError (``<field>.columns...``) if the mapping is invalid or the file is missing,
    TraceError on a malformed row or a missing header column.
    """
    cols_field = f"{field}.columns"
    if not isinstance(columns, Mapping):
        raise ConfigError(cols_field, columns, "a table such as { prompt_tokens = \"in\", ... }")
    for role, column in columns.items():
        lookup(dict.fromkeys(CSV_ROLES), role, f"{cols_field}.{role}")
        if not isinstance(column, str):
            raise ConfigError(f"{cols_field}.{role}", column, "a column name (string)")
    for role in ("prompt_tokens", "output_tokens"):
        if role not in columns:
            raise ConfigError(f"{cols_field}.{role}", None, "a column name (the role is required)")
    if "arrival_s" in columns and "arrival_ms" in columns:
        raise ConfigError(f"{cols_field}.arrival_ms", columns["arrival_ms"],
                          "at most one of arrival_s and arrival_ms")
    spec: dict[str, tuple[str, Callable[[Any], Any]]] = {
        "prompt_tokens": (columns["prompt_tokens"], tokens),
        "output_tokens": (columns["output_tokens"], tokens)}
    time_key, unit = None, 1.0  # unit: time ticks per second
    for role, role_unit in (("arrival_s", 1.0), ("arrival_ms", 1e3)):
        if role in columns:
            spec["time"], time_key, unit = (columns[role], seconds), "time", role_unit
    return _read_csv(path, spec, time_key=time_key, ticks_per_s=unit, zero_tokens=zero_tokens,
                     field=field, fmt="csv")


def read_mooncake(path: str | Path, *, zero_tokens: str = "error",
                  field: str = "workload.trace") -> TraceRows:
    """Read a Mooncake JSONL trace: ``timestamp`` (ms), ``input_length``, ``output_length``.

    ``hash_ids`` (shared-prefix block ids) is ignored for now. Rows out of time order are sorted
    stably by time.

    Raises ConfigError (``<field>.path``) if the file is missing, TraceError on bad JSON or a
    malformed row.
    """
    check_policy(zero_tokens, field)
    p = open_trace(path, field)
    columns = {"time": ("timestamp", json_value(seconds)),
               "prompt_tokens": ("input_length", json_value(tokens)),
               "output_tokens": ("output_length", json_value(tokens))}
    rows: list[dict[str, Any]] = []
    dropped, first = 0, True
    with p.open(encoding="utf-8-sig") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            obj = _json_object(p, line, text, first)
            first = False
            where = _key_column(text)
            parsed = parse_row(p, line, obj.__getitem__, where, columns, zero_tokens)
            if parsed is None:
                dropped += 1
            else:
                rows.append(parsed)
    if first:
        raise TraceError(str(p), None, "the file is empty; expected one JSON object per line "
                         "with keys timestamp, input_length, output_length")
    return collect(p, rows, dropped, "time", 1e3)


def _key_column(text: str) -> Callable[[str], int | None]:
    """The 1-based character column where a JSON key starts in ``text`` (None if absent)."""
    def where(key: str) -> int | None:
        at = text.find(json.dumps(key))
        return at + 1 if at >= 0 else None

    return where


def _json_object(path: Path, line: int, text: str, first: bool) -> dict[str, Any]:
    """Parse one JSONL line; a first line that is a CSV header suggests the right format."""
    try:
        obj = json.loads(text.rstrip("\r\n"))  # so a line's end is on its line, not the next
    except json.JSONDecodeError as err:
        guess = guess_format([c.strip() for c in text.split(",")], "mooncake") if first \
            else None
        if guess is not None:
            raise TraceError(str(path), line, f"got {text.strip()[:60]!r}, expected a JSON "
                             f"object per line (format 'mooncake'); did you mean format = "
                             f"{guess!r}?", column=1) from None
        raise TraceError(str(path), line, f"bad JSON: {err.msg}", column=err.colno) from None
    if not isinstance(obj, dict):
        raise TraceError(str(path), line, f"expected a JSON object, got {type(obj).__name__}",
                         column=1)
    return obj


def read_column(path: str | Path, column: str, *, field: str = "empirical") -> np.ndarray:
    """Read one integer column (token counts >= 1) of a CSV file as int64.

    Raises ConfigError (``<field>.path``) if the file is missing, TraceError if the column is not
    in the header or a cell is not an integer >= 1.
    """
    rows, _ = csv_rows(path, {"value": (column, tokens)}, "error", field)
    return np.fromiter((r["value"] for r in rows), np.int64, len(rows))


TRACE_READERS: dict[str, Callable[..., TraceRows]] = {
    "azure": read_azure,
    "mooncake": read_mooncake,
    "lengths_csv": read_lengths_csv,
    "csv": read_csv,
}
