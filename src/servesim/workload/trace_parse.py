"""The row loop behind every trace reader: cell parsers, header checks, located errors.

A bad cell raises ``TraceError`` at ``path:line:column`` (1-based; the column is the CSV field's
position, or the character where the JSON key starts), naming the column, the cell and what was
expected. A header that fits another known format suggests it (``did you mean format =
'mooncake'?``).
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from servesim.core.errors import ConfigError, TraceError, closest
from servesim.core.fields import MAX_TIME_S
from servesim.workload.distributions import MAX_TOKENS

ZERO_TOKEN_POLICIES = ("error", "drop")
# The fixed header columns of the CSV formats, to suggest the right format for a header.
CSV_FORMATS: dict[str, tuple[str, ...]] = {
    "azure": ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
    "lengths_csv": ("num_prefill_tokens", "num_decode_tokens"),
}


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


_TOKENS_HINT = f"an integer >= 1 and <= {MAX_TOKENS} (a token count)"


def tokens(cell: Any) -> int:
    """Parse a token count in 0..MAX_TOKENS (0 raises _Zero)."""
    if isinstance(cell, str):
        cell = cell.strip()
        if not (cell.isascii() and cell.isdigit()):
            raise ValueError(_TOKENS_HINT)
        value = int(cell)
    elif isinstance(cell, int) and not isinstance(cell, bool) and cell >= 0:
        value = cell
    else:
        raise ValueError(_TOKENS_HINT)
    if value > MAX_TOKENS:  # also keeps every count far inside int64
        raise ValueError(_TOKENS_HINT)
    if value == 0:
        raise _Zero
    return value


# A time cell beyond this magnitude (in the file's unit) is no time: even milliseconds since 1970
# are below 2e12.
MAX_TIME_CELL = 1e15
_TIME_HINT = f"a finite number of magnitude at most {MAX_TIME_CELL:g} (a time)"


def seconds(cell: Any) -> float:
    """Parse a finite number of magnitude at most MAX_TIME_CELL (a time)."""
    if isinstance(cell, bool):
        raise ValueError(_TIME_HINT)
    try:
        value = float(cell.strip()) if isinstance(cell, str) else float(cell)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(_TIME_HINT) from None
    if not (math.isfinite(value) and abs(value) <= MAX_TIME_CELL):
        raise ValueError(_TIME_HINT)
    return value


def json_value(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap a cell parser for JSON, where a quoted number ("7") is a type error, not a number."""

    def parse_json(cell: Any) -> Any:
        if isinstance(cell, str):
            parse(None)  # raises the parser's own expectation
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


def timestamp_ns(cell: Any) -> int:
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


def _shown(cell: Any) -> str:
    shown = repr(cell)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def cell_error(path: Path, line: int, at: int | None, column: str, cell: Any,
               expected: str) -> TraceError:
    """The error of one bad cell: ``path:line:at: column 'X': got ..., expected ...``."""
    return TraceError(str(path), line, f"column {column!r}: got {_shown(cell)}, expected "
                                       f"{expected}", column=at)


def parse_row(path: Path, line: int, get: Callable[[str], Any],
              where: Callable[[str], int | None], columns: Columns,
              zero_tokens: str) -> dict[str, Any] | None:
    """Parse one row (``get`` reads a named column, ``where`` gives its 1-based position);
    return None if it must be dropped for a 0 token count."""
    out: dict[str, Any] = {}
    zero = False
    for name, (column, parse) in columns.items():
        try:
            cell = get(column)
        except (IndexError, KeyError):
            raise TraceError(str(path), line, f"column {column!r}: missing in this row",
                             column=where(column)) from None
        try:
            out[name] = parse(cell)
        except _Zero:
            if zero_tokens != "drop":
                expected = 'an integer >= 1 (zero_tokens = "drop" skips such rows)'
                raise cell_error(path, line, where(column), column, cell, expected) from None
            zero = True
        except ValueError as err:
            raise cell_error(path, line, where(column), column, cell, str(err)) from None
    return None if zero else out


def collect(path: Path, rows: list[dict[str, Any]], n_dropped: int, time_key: str | None,
            ticks_per_s: float) -> TraceRows:
    """Turn parsed rows into a TraceRows, sorting by time (stably) and making times relative.

    Raises TraceError if the times span more than ``MAX_TIME_S`` seconds.
    """
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
    if len(times) and times[-1] > MAX_TIME_S:
        raise TraceError(str(path), None, f"the times span {times[-1]:g} s, expected at most "
                         f"{MAX_TIME_S:g} s (beyond it float64 times lose sub-microsecond "
                         "precision)")
    return TraceRows(times, prompt, output, n_dropped)


def check_policy(zero_tokens: str, field: str) -> None:
    if zero_tokens not in ZERO_TOKEN_POLICIES:
        raise ConfigError(f"{field}.zero_tokens", zero_tokens,
                          "one of " + ", ".join(ZERO_TOKEN_POLICIES), choices=ZERO_TOKEN_POLICIES)


def open_trace(path: str | Path, field: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{field}.path", str(path), "an existing trace file")
    return p


def csv_rows(path: str | Path, columns: Columns, zero_tokens: str, field: str,
             fmt: str | None = None) -> tuple[list[dict[str, Any]], int]:
    """Parse every non-blank row of a CSV with a header; return (rows, number dropped).

    ``fmt`` names the trace format being read, so that a header fitting another one suggests it.

    Raises TraceError if the file is empty, has no row after its header, misses a column or has
    a bad cell.
    """
    check_policy(zero_tokens, field)
    p = open_trace(path, field)
    wanted = [column for column, _ in columns.values()]
    rows: list[dict[str, Any]] = []
    dropped = 0
    with p.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            found = _header(reader)
            if found is None:
                raise TraceError(str(p), None, "the file is empty; expected a header line with "
                                 "columns " + ", ".join(wanted))
            header_line, header = found
            index = header_index(p, header_line, header, wanted, fmt)
            where = {column: i + 1 for column, i in index.items()}.get
            for row in _data_rows(reader):
                get = row.__getitem__
                parsed = parse_row(p, reader.line_num, lambda c, get=get: get(index[c]), where,
                                   columns, zero_tokens)
                if parsed is None:
                    dropped += 1
                else:
                    rows.append(parsed)
        except csv.Error as err:
            raise TraceError(str(p), reader.line_num, f"bad CSV: {err}") from None
    if not rows and not dropped:
        raise TraceError(str(p), header_line, "no row after the header; expected at least one")
    return rows, dropped


def _data_rows(reader: Iterator[list[str]]) -> Iterator[list[str]]:
    """The rows that are not blank."""
    for row in reader:
        if row and (len(row) > 1 or row[0].strip()):
            yield row


def _header(reader: Any) -> tuple[int, list[str]] | None:
    """The first non-blank row, stripped, and its line; None if the file has none."""
    for row in _data_rows(reader):
        return reader.line_num, [h.strip() for h in row]
    return None


def header_index(path: Path, line: int, header: list[str], wanted: list[str],
                 fmt: str | None) -> dict[str, int]:
    """Map each wanted column to its position.

    Raises TraceError at the header line if one is missing: suggesting the format the header
    fits, else the header column closest to the missing one.
    """
    missing = [column for column in wanted if column not in header]
    if not missing:
        return {column: header.index(column) for column in wanted}
    guess = guess_format(header, fmt)
    if guess is not None:
        what = "a JSON line" if guess == "mooncake" else "the header"
        raise TraceError(str(path), line, f"got {what} {_shown(','.join(header))}, expected a "
                         f"CSV header with columns {', '.join(wanted)} (format {fmt!r}); did "
                         f"you mean format = {guess!r}?", column=1)
    column = missing[0]
    problem = f"missing column {column!r}; the header has: " + ", ".join(map(repr, header))
    near = closest(column, header)
    if near is not None:
        problem += f"; did you mean {near!r}?"
    raise TraceError(str(path), line, problem)


def guess_format(cells: Sequence[str], fmt: str | None) -> str | None:
    """The trace format a first line fits, other than ``fmt`` (None: no guess, or not a
    trace format being read)."""
    if fmt is None or not cells:
        return None
    if cells[0].lstrip().startswith("{"):
        return None if fmt == "mooncake" else "mooncake"
    for name, columns in CSV_FORMATS.items():
        if name != fmt and all(column in cells for column in columns):
            return name
    return "csv" if fmt == "mooncake" and len(cells) > 1 else None
