"""The results store of a sweep: per-point Parquet files plus a DuckDB catalogue.

Layout of a sweep folder ``DIR``:

- ``DIR/points/point_id=<id>/``: the point's ``summary.json``, ``requests.parquet`` and
  ``iterations.parquet`` (written by ``experiments.outputs``), then ``point.json``, its catalogue
  record, last. A folder with ``point.json`` holds a finished point; one without it belongs to a
  point that was in flight when a sweep stopped, and the next run simulates it again.
- ``DIR/catalog.duckdb``: table ``catalog``, one row per finished point (its parameters as
  JSON, seed and summary metrics). Only the sweep's parent process writes it, in batches, opening
  and closing the database each time so that readers (``servesim query``) can look while a
  sweep runs. A record not yet in the catalogue when a sweep stopped is added from its
  ``point.json`` by the next run, without simulating the point again.

``query`` opens the catalogue read-only and exposes the views ``points`` (the catalogue with
one column per sweep parameter, dots in names turned into underscores), ``requests`` and
``iterations`` (every finished point's rows, with ``point_id``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from servesim.core.errors import ConfigError
from servesim.experiments.runner import METRIC_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CATALOG", "CATALOG_COLUMNS", "finished_ids", "open_views", "query", "record_points"]

CATALOG = "catalog.duckdb"
KEY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("point_id", "VARCHAR PRIMARY KEY"),
    ("sweep", "VARCHAR"),
    ("seed", "BIGINT"),
    ("params", "VARCHAR"),
)
TIME_COLUMNS: tuple[tuple[str, str], ...] = (("finished_unix_s", "DOUBLE"),)
CATALOG_COLUMNS = KEY_COLUMNS + METRIC_COLUMNS + TIME_COLUMNS
TABLES = ("requests", "iterations")
LOCK_WAIT_S = 10.0
"""How long a reader or the sweep waits for the catalogue while another process holds it."""


def _connect(path: Path, read_only: bool = False, wait_s: float = LOCK_WAIT_S):
    """Open the catalogue, waiting up to ``wait_s`` while another process holds its lock
    (a sweep flushing records, or a reader)."""
    import duckdb

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as e:
            if "lock" not in str(e).lower() or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def _create(con) -> None:
    cols = ", ".join(f'"{name}" {kind}' for name, kind in CATALOG_COLUMNS)
    con.execute(f"CREATE TABLE IF NOT EXISTS catalog ({cols})")


def finished_ids(out_dir: str | Path) -> set[str]:
    """The ids of the points with a catalogue row (none if there is no catalogue yet)."""
    path = Path(out_dir) / CATALOG
    if not path.exists():
        return set()
    con = _connect(path)
    try:
        _create(con)
        return {r[0] for r in con.execute("SELECT point_id FROM catalog").fetchall()}
    finally:
        con.close()


def record_points(out_dir: str | Path, records: Iterable[Mapping[str, Any]],
                  wait_s: float = LOCK_WAIT_S) -> int:
    """Insert (or replace) finished points' records in one transaction; return how many.

    A record is what a point leaves in its ``point.json``: point_id, sweep, seed, params and
    ``row`` (values for the metric columns).
    """
    names = [name for name, _ in CATALOG_COLUMNS]
    now = time.time()
    batch = []
    for record in records:
        values: dict[str, Any] = {
            "point_id": record["point_id"], "sweep": record["sweep"], "seed": record["seed"],
            "params": json.dumps(record["params"], default=str), "finished_unix_s": now}
        row = record.get("row", {})
        values.update({name: row.get(name) for name, _ in METRIC_COLUMNS})
        batch.append([values[n] for n in names])
    if not batch:
        return 0
    import pandas as pd

    frame = pd.DataFrame(batch, columns=names)
    con = _connect(Path(out_dir) / CATALOG, wait_s=wait_s)
    try:
        _create(con)
        con.register("batch", frame)
        con.execute("BEGIN TRANSACTION")
        con.execute("INSERT OR REPLACE INTO catalog SELECT * FROM batch")
        con.execute("COMMIT")
    finally:
        con.close()
    return len(batch)


def query(out_dir: str | Path, sql: str) -> pd.DataFrame:
    """Run ``sql`` against a sweep folder's views and return a pandas DataFrame.

    Views: ``points`` (the catalogue plus a column per parameter), ``requests`` and
    ``iterations`` (each finished point's Parquet rows with a ``point_id`` column; empty views
    with only ``point_id`` when no point has finished).

    Raises ConfigError if ``out_dir`` holds no catalogue or the SQL fails (the database's
    message, on one line).
    """
    import duckdb

    try:
        con = open_views(out_dir)
    except duckdb.Error as e:
        raise ConfigError("DIR", str(out_dir), f"a readable sweep catalogue ("
                          f"{_one_line(str(e), 300)})") from None
    try:
        return con.execute(sql).df()
    except duckdb.Error as e:
        raise ConfigError("sql", _one_line(sql, 80), f"a query DuckDB accepts ("
                          f"{_one_line(str(e), 300)})") from None
    finally:
        con.close()


def open_views(out_dir: str | Path):
    """An in-memory DuckDB connection with the sweep's catalogue attached and the views set up.

    Raises ConfigError if ``out_dir`` holds no catalogue.
    """
    import duckdb

    out = Path(out_dir)
    path = out / CATALOG
    if not path.is_file():
        raise ConfigError("DIR", str(out), f"a sweep folder holding {CATALOG} "
                                           "(written by servesim sweep)")
    con = duckdb.connect()
    try:
        _attach(con, path)
        fixed = {name for name, _ in CATALOG_COLUMNS}
        extra = [f'{_extract(p, kind)} AS "{_column(p)}"'
                 for p, kind in _param_types(con).items() if _column(p) not in fixed]
        select = ", ".join(["*", *extra])
        con.execute(f"CREATE TEMP VIEW points AS SELECT {select} FROM cat.catalog")
        for name in TABLES:
            con.execute(_table_view(out, name))
    except duckdb.Error:
        con.close()
        raise
    return con


def _attach(con, path: Path, wait_s: float = LOCK_WAIT_S) -> None:
    import duckdb

    deadline = time.monotonic() + wait_s
    while True:
        try:
            con.execute(f"ATTACH {_sql_str(str(path))} AS cat (READ_ONLY)")
            return
        except duckdb.IOException as e:
            if "lock" not in str(e).lower() or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def _table_view(out: Path, name: str) -> str:
    files = sorted(out.glob(f"points/point_id=*/{name}.parquet"))
    if not files:
        return f"CREATE TEMP VIEW {name} AS SELECT NULL::VARCHAR AS point_id WHERE false"
    pattern = _sql_str(str(out / "points" / "*" / f"{name}.parquet"))
    return (f"CREATE TEMP VIEW {name} AS SELECT * FROM read_parquet({pattern}, "
            "hive_partitioning = true, hive_types_autocast = false, union_by_name = true) "
            "WHERE point_id IN (SELECT point_id FROM cat.catalog)")


def _param_types(con) -> dict[str, str]:
    """Each parameter's SQL type: DOUBLE if every value is a number, BOOLEAN if every value is
    a boolean, VARCHAR if a string, else JSON."""
    kinds: dict[str, set[str]] = {}
    for (text,) in con.execute("SELECT params FROM cat.catalog").fetchall():
        for key, value in json.loads(text).items():
            kinds.setdefault(key, set()).add(_kind(value))
    return {key: (k.pop() if len(k) == 1 else "JSON") for key, k in kinds.items()}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int | float):
        return "DOUBLE"
    return "VARCHAR" if isinstance(value, str) else "JSON"


def _extract(param: str, kind: str) -> str:
    path = _sql_str("$." + _json_key(param))
    if kind == "VARCHAR":
        return f"json_extract_string(params, {path})"
    if kind == "JSON":
        return f"json_extract(params, {path})"
    return f"CAST(json_extract(params, {path}) AS {kind})"


def _column(param: str) -> str:
    return param.replace(".", "_")


def _json_key(param: str) -> str:
    return '"' + param.replace('"', '\\"') + '"'


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def catalog_frame(out_dir: str | Path, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """The ``points`` view as a DataFrame (all columns, or ``columns``), ordered by point_id."""
    cols = ", ".join(f'"{c}"' for c in columns) if columns else "*"
    return query(out_dir, f"SELECT {cols} FROM points ORDER BY point_id")
