"""What every servesim table shares: a console that never cuts content off a terminal, columns
that fold instead of truncating, and numbers printed with their unit and sensible digits.

rich sizes a console that is not a terminal to 80 columns and, by default, ends a cell that
does not fit with "…". A user who pipes ``servesim capacity`` into a file came for the names
and formulas, so off a terminal (and with no ``COLUMNS`` set) the console is ``PIPE_WIDTH``
wide, and every column folds what still does not fit onto more lines.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

__all__ = ["PIPE_WIDTH", "console", "number", "quantity", "table"]

PIPE_WIDTH = 160
"""Columns of the console when stdout is not a terminal and ``COLUMNS`` is not set."""

_DIMENSIONLESS = ("", "1")


def console(stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr): the terminal's width on a terminal, ``COLUMNS``
    if set, else ``PIPE_WIDTH``."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and not os.environ.get("COLUMNS", "").isdigit()
    return Console(stderr=stderr, width=PIPE_WIDTH if wide else None)


def table(title: str | None, columns: Sequence[str], *, right: Sequence[str] = (),
          **options: Any) -> Table:
    """A table whose columns fold long content onto more lines rather than cutting it;
    ``right`` names the columns to right-justify."""
    from rich.table import Table

    out = Table(title=title, **options)
    for name in columns:
        out.add_column(name, overflow="fold", justify="right" if name in right else "left")
    return out


def number(value: Any, unit: str | None = None, digits: int = 4) -> str:
    """``value`` with ``digits`` significant digits and its unit: whole numbers as integers,
    dimensionless ones (unit "" or "1") with three decimals and no unit, no exponent between
    1e-3 and 10**digits; "-" for None or NaN. ``unit`` None prints a bare number."""
    if value is None or isinstance(value, bool):
        return "-" if value is None else str(value)
    suffix = "" if unit is None or unit in _DIMENSIONLESS else f" {unit}"
    if isinstance(value, int):
        return f"{value}{suffix}"
    v = float(value)
    if math.isnan(v):
        return "-"
    if math.isinf(v):
        return f"{'-' if v < 0 else ''}inf{suffix}"
    if v.is_integer() and abs(v) < 1e15:
        return f"{int(v)}{suffix}"
    if unit in _DIMENSIONLESS and 1e-3 <= abs(v) < 1000:
        return f"{v:.3f}"
    if abs(v) >= 10 ** digits:
        return f"{v:.0f}{suffix}"
    if abs(v) >= 1e-3:
        return f"{v:.{digits}g}{suffix}"
    return f"{v:.3g}{suffix}"


def quantity(q: Any) -> str:
    """A ``Quantity`` as its value and unit (``number``)."""
    return number(q.value, q.unit)
