"""Trace readers: Azure LLM 2023, Mooncake, lengths-only CSV and a generic CSV.

Every reader returns a ``TraceRows`` and is strict: a malformed row raises ``TraceError`` whose
one-line message carries the path, the 1-based file line (the header is line 1), the column, the
bad cell and what was expected. Blank lines are skipped.

Zero-token rows: the Requests struct needs every length >= 1, and none of the public traces in
``shared/data`` has a 0. A 0 therefore raises by default, with a message that names the option
``zero_tokens = "drop"``, which skips such rows (a request that produced nothing, such as a
failed or cancelled call, costs the engine nothing) and counts them in ``TraceRows.n_dropped``.
Negative or non-integer counts always raise.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from servesim.core.errors import ConfigError, TraceError
from servesim.core.registry import lookup

ZERO_TOKEN_POLICIES = ("error", "drop")


@dataclass(frozen=True, eq=False)
class TraceRows:
    """The rows of a trace, in time order.

    Attributes:
        arrival_s: seconds since the first row (first = 0.0), non-decreasing, float64; None for
            a lengths-only trace.
        prompt_tokens: prompt lengths, int64, each >= 1.
        output_tokens: output lengths, int64, each >= 1.
        n_dropped: rows skipped because a token count was 0 (only with ``zero_tokens="drop"``).
    """

    arrival_s: np.ndarray | None
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    n_dropped: int = 0

    def __len__(self) -> int:
        return len(self.prompt_tokens)


class _Zero(Exception):
    """A token cell held 0; the row reader decides whether to drop the row or raise."""


# -- cell parsers: each returns a value or raises ValueError with the expectation ----------------


def _tokens(cell: Any) -> int:
    """Parse a token count >= 0 (0 raises _Zero)."""
    if isinstance(cell, str):
        cell = cell.strip()
        if not (cell.isascii() and cell.isdigit()):
            raise ValueError("an integer >= 1")
        value = int(cell)
    elif isinstance(cell, int) and not isinstance(cell, bool) and cell >= 0:
        value = cell
    else:
        raise ValueError("an integer >= 1")
    if value == 0:
        raise _Zero
    return value


def _seconds(cell: Any) -> float:
    """Parse a finite number (a time)."""
    if isinstance(cell, bool):
        raise ValueError("a finite number")
    try:
        value = float(cell.strip()) if isinstance(cell, str) else float(cell)
    except (TypeError, ValueError):
        raise ValueError("a finite number") from None
    if not math.isfinite(value):
        raise ValueError("a finite number")
    return value


def _json_value(parse: Callable[[Any], Any], expected: str) -> Callable[[Any], Any]:
    """Wrap a cell parser for JSON, where a quoted number ("7") is a type error, not a number."""

    def parse_json(cell: Any) -> Any:
        if isinstance(cell, str):
            raise ValueError(expected)
        return parse(cell)

    return parse_json


_TIMESTAMP = re.compile(r"\s*(\d{4}-\d{2}-\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?\s*",
                        re.ASCII)
_TIMESTAMP_HINT = "a timestamp like '2023-11-16 18:15:46.6805900'"


@functools.lru_cache(maxsize=64)
def _day_ordinal(day: str) -> int:
    """Days since 0001-01-01 of 'YYYY-MM-DD'; cached, since a trace spans only a few days."""
    try:
        return dt.date.fromisoformat(day).toordinal()
    except ValueError:
        raise ValueError(_TIMESTAMP_HINT) from None


def _timestamp_ns(cell: Any) -> int:
    """Parse 'YYYY-MM-DD HH:MM:SS[.fffffffff]' into integer nanoseconds.

    Python's datetime stops at 6 fractional digits and Azure writes 7, so the fraction is read by
    hand; integer nanoseconds keep full precision until the times are made relative.
    """
    m = _TIMESTAMP.fullmatch(cell) if isinstance(cell, str) else None
    if m is None:
        raise ValueError(_TIMESTAMP_HINT)
    day, hh, mm, ss, frac = m.groups()
    h, mi, s = int(hh), int(mm), int(ss)
    if h > 23 or mi > 59 or s > 60:  # 60 allows a leap second
        raise ValueError(_TIMESTAMP_HINT)
    seconds = _day_ordinal(day) * 86400 + h * 3600 + mi * 60 + s
    return seconds * 10**9 + (int(frac.ljust(9, "0")) if frac else 0)


# -- the row loop shared by every format ---------------------------------------------------------


# A column spec: output name -> (name in the file, parser).
Columns = Mapping[str, tuple[str, Callable[[Any], Any]]]


def _cell_error(path: Path, line: int, column: str, cell: Any, expected: str) -> TraceError:
    shown = repr(cell)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return TraceError(str(path), line, f"column {column!r}: got {shown}, expected {expected}")


def _parse_row(path: Path, line: int, get: Callable[[str], Any], columns: Columns,
               zero_tokens: str) -> dict[str, Any] | None:
    """Parse one row; return None if it must be dropped for a 0 token count."""
    out: dict[str, Any] = {}
    zero = False
    for name, (column, parse) in columns.items():
        try:
            cell = get(column)
        except (IndexError, KeyError):
            raise TraceError(str(path), line, f"column {column!r}: missing in this row") from None
        try:
            out[name] = parse(cell)
        except _Zero:
            if zero_tokens != "drop":
                expected = 'an integer >= 1 (zero_tokens = "drop" skips such rows)'
                raise _cell_error(path, line, column, cell, expected) from None
            zero = True
        except ValueError as err:
            raise _cell_error(path, line, column, cell, str(err)) from None
    return None if zero else out


def _collect(rows: list[dict[str, Any]], n_dropped: int, time_key: str | None,
             ticks_per_s: float) -> TraceRows:
    """Turn parsed rows into a TraceRows, sorting by time (stably) and making times relative."""
    prompt = np.fromiter((r["prompt_tokens"] for r in rows), np.int64, len(rows))
    output = np.fromiter((r["output_tokens"] for r in rows), np.int64, len(rows))
    if time_key is None:
        return TraceRows(None, prompt, output, n_dropped)
    raw = [r[time_key] for r in rows]
    start = min(raw) if raw else 0
    # Subtract in the raw unit (exact for integer nanoseconds) before converting to seconds.
    times = np.fromiter(((t - start) for t in raw), np.float64, len(raw)) / ticks_per_s
    if np.any(np.diff(times) < 0):
        order = np.argsort(times, kind="stable")
        times, prompt, output = times[order], prompt[order], output[order]
    return TraceRows(times, prompt, output, n_dropped)


def _check_policy(zero_tokens: str, field: str) -> None:
    if zero_tokens not in ZERO_TOKEN_POLICIES:
        raise ConfigError(f"{field}.zero_tokens", zero_tokens,
                          "one of " + ", ".join(ZERO_TOKEN_POLICIES), choices=ZERO_TOKEN_POLICIES)


def _open(path: str | Path, field: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{field}.path", str(path), "an existing trace file")
    return p


def _read_csv(path: str | Path, columns: Columns, *, time_key: str | None,
              ticks_per_s: float, zero_tokens: str, field: str) -> TraceRows:
    """Read a CSV with a header line, keeping ``columns``; see the module docstring."""
    rows, dropped = _csv_rows(path, columns, zero_tokens, field)
    return _collect(rows, dropped, time_key, ticks_per_s)


def _csv_rows(path: str | Path, columns: Columns, zero_tokens: str,
              field: str) -> tuple[list[dict[str, Any]], int]:
    """Parse every non-blank row of a CSV with a header; return (rows, number dropped)."""
    _check_policy(zero_tokens, field)
    p = _open(path, field)
    rows: list[dict[str, Any]] = []
    dropped = 0
    with p.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader, [])]
            index = _header_index(p, header, [column for column, _ in columns.values()])
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                get = row.__getitem__
                parsed = _parse_row(p, reader.line_num, lambda c, get=get: get(index[c]),
                                    columns, zero_tokens)
                if parsed is None:
                    dropped += 1
                else:
                    rows.append(parsed)
        except csv.Error as err:
            raise TraceError(str(p), reader.line_num, f"bad CSV: {err}") from None
    return rows, dropped


def _header_index(path: Path, header: list[str], wanted: list[str]) -> dict[str, int]:
    """Map each wanted column to its position; raise TraceError at line 1 if one is missing."""
    for column in wanted:
        if column not in header:
            raise TraceError(str(path), 1, f"missing column {column!r}; the header has: "
                                           + ", ".join(repr(h) for h in header))
    return {column: header.index(column) for column in wanted}


# -- public readers ------------------------------------------------------------------------------


def read_azure(path: str | Path, *, zero_tokens: str = "error",
               field: str = "workload.trace") -> TraceRows:
    """Read an Azure LLM inference trace (``TIMESTAMP,ContextTokens,GeneratedTokens``).

    Timestamps look like ``2023-11-16 18:15:46.6805900`` (up to 9 fractional digits are read);
    rows out of time order are sorted stably by time.

    Raises ConfigError (``<field>.path``) if the file is missing, TraceError on a malformed row.
    """
    columns = {"arrival_ns": ("TIMESTAMP", _timestamp_ns),
               "prompt_tokens": ("ContextTokens", _tokens),
               "output_tokens": ("GeneratedTokens", _tokens)}
    return _read_csv(path, columns, time_key="arrival_ns", ticks_per_s=1e9,
                     zero_tokens=zero_tokens, field=field)


def read_lengths_csv(path: str | Path, *, zero_tokens: str = "error",
                     field: str = "workload.trace") -> TraceRows:
    """Read a lengths-only CSV (``num_prefill_tokens,num_decode_tokens``, other columns ignored).

    ``arrival_s`` is None: pair it with an arrival process.

    Raises ConfigError (``<field>.path``) if the file is missing, TraceError on a malformed row.
    """
    columns = {"prompt_tokens": ("num_prefill_tokens", _tokens),
               "output_tokens": ("num_decode_tokens", _tokens)}
    return _read_csv(path, columns, time_key=None, ticks_per_s=1.0, zero_tokens=zero_tokens,
                     field=field)


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
        "prompt_tokens": (columns["prompt_tokens"], _tokens),
        "output_tokens": (columns["output_tokens"], _tokens)}
    time_key, unit = None, 1.0  # unit: time ticks per second
    for role, role_unit in (("arrival_s", 1.0), ("arrival_ms", 1e3)):
        if role in columns:
            spec["time"], time_key, unit = (columns[role], _seconds), "time", role_unit
    return _read_csv(path, spec, time_key=time_key, ticks_per_s=unit, zero_tokens=zero_tokens,
                     field=field)


def read_mooncake(path: str | Path, *, zero_tokens: str = "error",
                  field: str = "workload.trace") -> TraceRows:
    """Read a Mooncake JSONL trace: ``timestamp`` (ms), ``input_length``, ``output_length``.

    ``hash_ids`` (shared-prefix block ids) is ignored for now. Rows out of time order are sorted
    stably by time.

    Raises ConfigError (``<field>.path``) if the file is missing, TraceError on bad JSON or a
    malformed row.
    """
    _check_policy(zero_tokens, field)
    p = _open(path, field)
    columns = {"time": ("timestamp", _json_value(_seconds, "a finite number")),
               "prompt_tokens": ("input_length", _json_value(_tokens, "an integer >= 1")),
               "output_tokens": ("output_length", _json_value(_tokens, "an integer >= 1"))}
    rows: list[dict[str, Any]] = []
    dropped = 0
    with p.open(encoding="utf-8-sig") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            obj = _json_object(p, line, text)
            parsed = _parse_row(p, line, obj.__getitem__, columns, zero_tokens)
            if parsed is None:
                dropped += 1
            else:
                rows.append(parsed)
    return _collect(rows, dropped, "time", 1e3)


def _json_object(path: Path, line: int, text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise TraceError(str(path), line, f"bad JSON: {err.msg} at column {err.colno}") from None
    if not isinstance(obj, dict):
        raise TraceError(str(path), line, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def read_column(path: str | Path, column: str, *, field: str = "empirical") -> np.ndarray:
    """Read one integer column (token counts >= 1) of a CSV file as int64.

    Raises ConfigError (``<field>.path``) if the file is missing, TraceError if the column is not
    in the header or a cell is not an integer >= 1.
    """
    rows, _ = _csv_rows(path, {"value": (column, _tokens)}, "error", field)
    return np.fromiter((r["value"] for r in rows), np.int64, len(rows))


TRACE_READERS: dict[str, Callable[..., TraceRows]] = {
    "azure": read_azure,
    "mooncake": read_mooncake,
    "lengths_csv": read_lengths_csv,
    "csv": read_csv,
}
