"""Plain-text tables of results, for scripts and examples."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd


def format_table(table: pd.DataFrame, columns: Mapping[str, tuple[str, str]]) -> str:
    """Render ``table`` as text: ``columns`` maps a column to (header, format string), in order.

    Missing values (None or NaN) print as "-".
    """
    shown = pd.DataFrame({
        header: ["-" if x is None or x != x else fmt.format(x) for x in table[key]]
        for key, (header, fmt) in columns.items()})
    return shown.to_string(index=False)
