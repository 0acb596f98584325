"""Which SQL a query of a sweep folder may run: statements that only read.

The query connection attaches the catalogue read-only and sets its views up in memory, but
DuckDB would still run a statement that drops or replaces a view (``DROP VIEW points``
answered with an empty frame), writes files (``COPY ... TO``, ``EXPORT DATABASE``), opens
other databases for writing (``ATTACH``), changes settings (``SET``, ``PRAGMA``) or installs
extensions (``INSTALL``). So every statement of the text is parsed first, and only these run:

- ``SELECT`` in DuckDB's sense, which includes ``WITH``, ``FROM ...``, ``VALUES``,
  ``DESCRIBE``, ``SHOW``, ``SUMMARIZE``, ``UNPIVOT`` and ``PIVOT ... IN (...)``;
- ``PIVOT`` without an ``IN`` list, which DuckDB runs as several statements (it first
  creates a temporary enum type in memory);
- ``EXPLAIN`` and ``EXPLAIN ANALYZE`` of one of those (``EXPLAIN ANALYZE`` runs its
  statement, so ``EXPLAIN ANALYZE COPY ...`` would write).

A ``SELECT`` can still delete rows through a data-modifying ``WITH`` clause; the query
connection holds no table it could reach (the catalogue rows are a registered Arrow table,
everything else views). Nor does a query write outside the system's temporary folder: the
connection spills there instead of into ``.tmp`` in the working folder, and never installs an
extension (into the home folder) on its own (``reader_config``).
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["ALLOWED", "reader_config", "refused_statement"]

ALLOWED = ("a read-only statement (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE, "
           "PIVOT or EXPLAIN of one); a sweep folder is read-only to queries")
"""What a refused statement is told was expected."""

_LEADING = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
# EXPLAIN, optionally ANALYZE and/or a parenthesised option list, then the explained statement.
_EXPLAIN = re.compile(r"EXPLAIN\s+(?:ANALY[SZ]E\s+)?(?:\((?:[^()]|\([^()]*\))*\)\s*)?(.+)",
                      re.IGNORECASE | re.DOTALL)


def refused_statement(sql: str) -> str | None:
    """The text of the first statement of ``sql`` that may change something, or None if every
    statement only reads.

    Raises duckdb.Error (a ParserException) if ``sql`` does not parse.
    """
    import duckdb

    for statement in duckdb.extract_statements(sql):
        if not _reads_only(statement):
            return statement.query.strip()
    return None


def _reads_only(statement) -> bool:
    import duckdb

    kind = statement.type
    text = statement.query[_LEADING.match(statement.query).end():]
    if kind == duckdb.StatementType.SELECT:
        return True
    if kind == duckdb.StatementType.MULTI:
        return re.match(r"PIVOT\b", text, re.IGNORECASE) is not None
    if kind == duckdb.StatementType.EXPLAIN:
        match = _EXPLAIN.match(text)
        if match is None:
            return False
        try:
            inner = duckdb.extract_statements(match.group(1))
        except duckdb.Error:
            return False
        return (len(inner) == 1 and inner[0].type != duckdb.StatementType.EXPLAIN
                and _reads_only(inner[0]))
    return False


def reader_config() -> dict[str, Any]:
    """DuckDB settings of a query connection: spill to a private folder under the system's
    temporary folder, and install no extension.

    The folder's name does not exist yet: DuckDB creates it only if a query spills, and
    removes a folder it created when the connection closes.
    """
    spill = Path(tempfile.gettempdir()) / f"servesim-query-{os.getpid()}-{secrets.token_hex(6)}"
    return {"temp_directory": str(spill), "autoinstall_known_extensions": False}
