"""The fitted cost model: least squares on a measured profile of iteration times.

A profile CSV has one row per measured iteration (prefill tokens, decode tokens, context tokens,
seconds); the fit is t = b0 + b1*prefill + b2*decode + b3*context, with a report of its error.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from servesim.core.errors import ConfigError, TraceError, closest

if TYPE_CHECKING:
    from servesim.engine.cost import Count, Seconds


PROFILE_COLUMNS = ("prefill_tokens", "decode_tokens", "context_tokens", "seconds")
_FEATURES = ("intercept", "prefill_tokens", "decode_tokens", "context_tokens")


@dataclass(frozen=True, slots=True)
class Fitted:
    """t = intercept + prefill_s * prefill + decode_s * decode + context_s * context.

    Built by ``fit_profile`` from measured iterations. Coefficients may be negative (the fit
    report warns); the fit guarantees positive times on the profiled points only.

    Attributes:
        intercept_s: seconds per iteration.
        prefill_s: seconds per prefill token.
        decode_s: seconds per decoding request.
        context_s: seconds per context token attended by a decoder.
        source: the profile the model was fitted to, if any.
        fit_report: n_rows, coefficients, rmse_s, r2, max_rel_error, mean_rel_error, rank,
            warnings.
    """

    intercept_s: float
    prefill_s: float
    decode_s: float
    context_s: float
    source: str | None = None
    fit_report: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    uses_context: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        for name in ("intercept_s", "prefill_s", "decode_s", "context_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value):
                raise ConfigError(f"Fitted.{name}", value, "a finite number of seconds")
        object.__setattr__(self, "uses_context", self.context_s != 0)

    def iteration_s(self, prefill_tokens: Count, decode_tokens: Count,
                    context_tokens: Count) -> Seconds:
        """Return the fitted linear prediction in seconds."""
        return (self.intercept_s + self.prefill_s * prefill_tokens
                + self.decode_s * decode_tokens + self.context_s * context_tokens)

    def describe(self) -> dict[str, Any]:
        """Return the kind, the profile path, the coefficients and the fit report."""
        return {"kind": "fitted", "path": self.source,
                "coefficients_s": dict(zip(_FEATURES, self._coefficients(), strict=True)),
                "fit_report": dict(self.fit_report)}

    def _coefficients(self) -> tuple[float, float, float, float]:
        return (self.intercept_s, self.prefill_s, self.decode_s, self.context_s)


def fit_profile(path: str | Path, *, field: str = "engine.cost.path") -> Fitted:
    """Fit a ``Fitted`` model by least squares to a profile CSV.

    The CSV has the header ``prefill_tokens,decode_tokens,context_tokens,seconds`` (any column
    order) and one measured iteration per row; blank lines are skipped.

    Raises ConfigError naming ``field`` if the file cannot be read, has fewer rows than
    coefficients, or the fit predicts a non-positive time on a profiled row; TraceError with the
    1-based line number (the header is line 1) on a malformed row.
    """
    columns, lines = _read_profile(Path(path), field)
    return fit_rows(*columns, lines=lines, source=str(path), field=field)


def _read_profile(path: Path, field: str) -> tuple[list[np.ndarray], list[int]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise TraceError(str(path), 1, "empty file; expected the header "
                                 + ",".join(PROFILE_COLUMNS))
            index = _header_index(header, str(path))
            rows: list[tuple[int, int, int, float]] = []
            lines: list[int] = []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                lines.append(reader.line_num)
                rows.append(_parse_row(row, index, str(path), reader.line_num))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(field, str(path), f"a readable profile CSV ({e})") from e
    data = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return [data[:, 0], data[:, 1], data[:, 2], data[:, 3]], lines


def _header_index(header: list[str], path: str) -> list[int]:
    names = [cell.strip() for cell in header]
    for name in names:
        if name not in PROFILE_COLUMNS:
            hint = closest(name, PROFILE_COLUMNS)
            raise TraceError(path, 1, f"unknown column {name!r}; expected "
                             + ",".join(PROFILE_COLUMNS)
                             + (f"; did you mean {hint!r}?" if hint else ""))
    for name in PROFILE_COLUMNS:
        if names.count(name) != 1:
            problem = "missing" if name not in names else "repeated"
            raise TraceError(path, 1, f"column {name!r} is {problem}; expected "
                             + ",".join(PROFILE_COLUMNS))
    return [names.index(name) for name in PROFILE_COLUMNS]


def _parse_row(row: list[str], index: list[int], path: str,
               line: int) -> tuple[int, int, int, float]:
    if len(row) != len(index):
        raise TraceError(path, line, f"expected {len(index)} fields, got {len(row)}")
    counts = []
    for name, i in zip(PROFILE_COLUMNS[:3], index[:3], strict=True):
        text = row[i].strip()
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (value >= 0 and value.is_integer()):
            raise TraceError(path, line, f"{name}: got {text!r}, expected an integer >= 0")
        counts.append(int(value))
    text = row[index[3]].strip()
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise TraceError(path, line, f"seconds: got {text!r}, expected a finite number > 0")
    return counts[0], counts[1], counts[2], seconds


def fit_rows(prefill_tokens: Any, decode_tokens: Any, context_tokens: Any, seconds: Any, *,
             lines: list[int] | None = None, source: str | None = None,
             field: str = "engine.cost.path") -> Fitted:
    """Fit a ``Fitted`` model by least squares to measured iterations given as sequences.

    ``lines`` labels the rows in errors (default: 1-based row numbers).

    Raises ConfigError naming ``field`` if there are fewer rows than coefficients, or the fit
    predicts a non-positive time on one of the rows.
    """
    y = np.asarray(seconds, dtype=np.float64)
    x = np.column_stack([np.ones_like(y)] + [np.asarray(c, dtype=np.float64) for c in
                                             (prefill_tokens, decode_tokens, context_tokens)])
    n = len(y)
    if n < len(_FEATURES):
        raise ConfigError(field, source, f"a profile with at least {len(_FEATURES)} rows, one "
                          f"per coefficient ({', '.join(_FEATURES)}); it has {n}")
    coef, _, rank, _ = np.linalg.lstsq(x, y, rcond=None)
    predicted = x @ coef
    worst = int(np.argmin(predicted))
    if predicted[worst] <= 0:
        label = lines[worst] if lines is not None else worst + 1
        raise ConfigError(field, source, "a profile whose linear fit predicts a positive time on "
                          f"every row; line {label} gets {predicted[worst]:.3g} s "
                          f"(measured {y[worst]:.3g} s)")
    report = _fit_report(x, y, coef, predicted, int(rank))
    return Fitted(*(float(c) for c in coef), source=source, fit_report=report)


def _fit_report(x: np.ndarray, y: np.ndarray, coef: np.ndarray, predicted: np.ndarray,
                rank: int) -> dict[str, Any]:
    residual = predicted - y
    ss_res = float(residual @ residual)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
    rel = np.abs(residual) / y
    warnings = []
    if rank < len(_FEATURES):
        unused = [name for name, column in zip(_FEATURES[1:], x.T[1:], strict=True)
                  if not column.any()]
        warnings.append(
            f"features are collinear (rank {rank} of {len(_FEATURES)}), so the coefficients are "
            "not all identifiable and the minimum-norm solution is used"
            + (f"; no row has {', '.join(unused)} > 0" if unused else ""))
    for name, value in zip(_FEATURES, coef, strict=True):
        if value < 0:
            warnings.append(f"coefficient {name} is negative ({value:.3g} s); predictions "
                            "outside the profiled range may be too small or non-positive")
    return {
        "n_rows": len(y),
        "coefficients": dict(zip(_FEATURES, (float(c) for c in coef), strict=True)),
        "rmse_s": math.sqrt(ss_res / len(y)),
        "r2": r2,
        "max_rel_error": float(rel.max()),
        "mean_rel_error": float(rel.mean()),
        "rank": rank,
        "warnings": warnings,
    }


# -- factory ------------------------------------------------------------------------------------
