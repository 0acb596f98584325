"""Predictions read from a file: ``{kind = "table", path, column = "predicted_tokens"}``.

For predictions made outside the run, such as the held-out predictions that ``servesim
predictor eval --cv K --joint FILE`` writes (one row per prompt, in the prompts file's order):
request i of a run (its index in arrival order) reads row (offset + i) mod N of the CSV, N its
number of rows, so a lengths trace written in the same order pairs each request with its own
row. In a scenario a relative ``path`` resolves against the scenario's folder.

Like the learned predictor, a draw reads neither the request's size nor the seed, and depends
on the request's index, so the engines draw these predictions for every request at once.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from servesim.core.errors import ConfigError, TraceError, file_error
from servesim.core.fields import integer
from servesim.predictors.base import Predictor

DEFAULT_COLUMN = "predicted_tokens"


class PredictionTable(Predictor):
    """y_i = row (offset + i) mod N of ``column`` in the CSV at ``path`` (tokens, > 0).

    Raises ConfigError if the file cannot be read, lacks the column (closest name suggested) or
    has no rows, and TraceError (``path:line:column``) for a cell that is not a positive number.
    """

    kind = "table"

    def __init__(self, spec, rng=None, cost=None):
        super().__init__(spec, rng, cost)
        path = spec.get("path")
        if not isinstance(path, str) or not path:
            raise ConfigError("predictor.path", path, "a CSV file path (a string)")
        column = spec.get("column", DEFAULT_COLUMN)
        if not isinstance(column, str) or not column:
            raise ConfigError("predictor.column", column, "a column name (a string)")
        self.offset = integer(spec.get("offset", 0), "predictor.offset", low=0)
        self.values = read_column(Path(path), column)

    def _draw(self, x: np.ndarray, prompt: np.ndarray | None,
              rng: np.random.Generator) -> np.ndarray:
        index = (self.offset + np.arange(x.size)) % len(self.values)
        return self.values[index].reshape(x.shape)

    def describe(self) -> dict[str, Any]:
        return dict(self.spec)


def read_column(path: Path, column: str) -> np.ndarray:
    """The positive, finite numbers of one CSV column, in row order."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise file_error(str(path), f"cannot read the predictions file: {e}") from None
    if not rows:
        raise file_error(str(path), "an empty file: expected a header and one row per request")
    header = [h.strip() for h in rows[0]]
    if column not in header:
        raise ConfigError("predictor.column", column, f"a column of {path}", choices=header)
    at = header.index(column)
    values = [_cell(path, n, at, row) for n, row in enumerate(rows[1:], start=2) if row]
    if not values:
        raise file_error(str(path), "no rows after the header: expected one per request")
    return np.asarray(values, dtype=np.float64)


def _cell(path: Path, line: int, at: int, row: list[str]) -> float:
    text = row[at].strip() if at < len(row) else ""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise TraceError(str(path), line, f"got {text!r}, expected a positive number of tokens",
                         column=at + 1)
    return value
