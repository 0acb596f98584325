"""The results store of a sweep: per-point Parquet files plus a DuckDB catalogue.

Layout of a sweep folder ``DIR``:

- ``DIR/points/point_id=<id>/``: the point's ``summary.json``, ``requests.parquet`` and
  ``iterations.parquet`` (written by ``experiments.outputs``), then ``point.json``, its catalogue
  record with each file's size and hash, last. A folder whose files match its ``point.json``
  holds a finished point; any other (a point in flight when a sweep stopped, or a damaged
  file) is simulated again by the next run.
- ``DIR/sweep.lock``: held by the sweep running into ``DIR`` (``folder_lock``).
- ``DIR/sweep.json``: the sweep that last ran into ``DIR``: its name, the ids of its points and
  a fingerprint of that list. Points of an earlier version of the sweep (one whose file has since
  changed) stay on disk and in the catalogue, but the views show only the current sweep's
  points unless asked for every point.
- ``DIR/catalog.duckdb``: table ``catalog``, one row per finished point (its parameters as
  JSON, seed and summary metrics). Only the sweep's parent process writes it, in batches, opening
  and closing the database each time so that readers (``servesim query``) can look while a
  sweep runs. A record not yet in the catalogue when a sweep stopped is added from its
  ``point.json`` by the next run, without simulating the point again.

``query`` copies the catalogue's rows into memory through a read-only attachment, and exposes
the views ``points`` (the catalogue with one column per sweep parameter, dots in names turned
into underscores), ``requests`` and ``iterations`` (every finished point's rows, with
``point_id``); it runs only statements that read (``sql_guard``).

A catalogue that cannot be opened (another process holds its lock past ``LOCK_WAIT_S``, or the
file is damaged) is a one-line ConfigError, never a traceback; a damaged catalogue is rebuilt
from the points' folders by the next run. A damaged Parquet file is named with its point.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from servesim.core.errors import ConfigError
from servesim.experiments.integrity import damage_error, find_damage
from servesim.experiments.runner import METRIC_COLUMNS
from servesim.experiments.sql_guard import ALLOWED, reader_config, refused_statement

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CATALOG", "CATALOG_COLUMNS", "SWEEP_FILE", "catalog_error", "finished_ids",
           "one_line", "open_views", "query", "record_points", "sweep_ids", "write_sweep_file"]

CATALOG = "catalog.duckdb"
SWEEP_FILE = "sweep.json"
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

T = TypeVar("T")


def _wait_for_lock(open_db: Callable[[], T], wait_s: float | None = None) -> T:
    """Call ``open_db``, retrying for up to ``wait_s`` (default ``LOCK_WAIT_S``) while another
    process holds the catalogue's lock (a sweep flushing records, or a reader)."""
    import duckdb

    deadline = time.monotonic() + (LOCK_WAIT_S if wait_s is None else wait_s)
    while True:
        try:
            return open_db()
        except duckdb.IOException as e:
            if not is_lock_error(e) or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def _connect(path: Path, read_only: bool = False, wait_s: float | None = None):
    """Open the catalogue file, waiting while another process holds it."""
    import duckdb

    return _wait_for_lock(lambda: duckdb.connect(str(path), read_only=read_only), wait_s)


def _create(con) -> None:
    cols = ", ".join(f'"{name}" {kind}' for name, kind in CATALOG_COLUMNS)
    con.execute(f"CREATE TABLE IF NOT EXISTS catalog ({cols})")


def is_lock_error(error: Exception) -> bool:
    """Whether a DuckDB error says another process holds the database file."""
    import duckdb

    return isinstance(error, duckdb.IOException) and "lock" in str(error).lower()


def catalog_error(out_dir: str | Path, error: Exception) -> ConfigError:
    """A DuckDB error on the catalogue as one line saying what to do about it."""
    path = Path(out_dir) / CATALOG
    if is_lock_error(error):
        expected = ("a catalogue no other process holds (another sweep or a reader has it "
                    "open); try again once it is closed")
    else:
        expected = ("a readable DuckDB catalogue; finished points are kept in their "
                    f"folders (points/*/point.json), so removing {path.name} and running "
                    "the sweep again rebuilds it")
    return ConfigError(str(path), one_line(str(error), 200), expected)


def finished_ids(out_dir: str | Path) -> set[str]:
    """The ids of the points with a catalogue row (none if there is no catalogue yet).

    Raises ConfigError if the catalogue is held by another process or cannot be read.
    """
    import duckdb

    path = Path(out_dir) / CATALOG
    if not path.exists():
        return set()
    try:
        con = _connect(path, read_only=True)
        try:
            if not _has_catalog(con, None):
                return set()
            return {r[0] for r in con.execute("SELECT point_id FROM catalog").fetchall()}
        finally:
            con.close()
    except duckdb.Error as e:
        raise catalog_error(out_dir, e) from None


def _has_catalog(con, database: str | None) -> bool:
    """Whether the catalogue file (``database``, or the connection's own) has its table."""
    where = "database_name = current_database()" if database is None else "database_name = ?"
    rows = con.execute(f"SELECT 1 FROM duckdb_tables() WHERE {where} AND "
                       "table_name = 'catalog'", [] if database is None else [database])
    return bool(rows.fetchall())


def fingerprint(point_ids: Iterable[str]) -> str:
    """A short hash of a sweep's point ids: equal exactly when the sweeps have the same
    points."""
    text = "\n".join(sorted(point_ids))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def write_sweep_file(out_dir: str | Path, name: str, point_ids: list[str]) -> str | None:
    """Record the sweep now running into ``out_dir`` in ``sweep.json``; return the fingerprint
    of the sweep recorded there before if it was a different one, else None."""
    from servesim.experiments.outputs import atomic_write

    path = Path(out_dir) / SWEEP_FILE
    previous = _read_sweep_file(out_dir)
    current = fingerprint(point_ids)
    text = json.dumps({"name": name, "fingerprint": current, "point_ids": list(point_ids)},
                      indent=1)
    atomic_write(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
    if previous is None or previous.get("fingerprint") == current:
        return None
    return str(previous.get("fingerprint"))


def _read_sweep_file(out_dir: str | Path) -> dict[str, Any] | None:
    try:
        data = json.loads((Path(out_dir) / SWEEP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def sweep_ids(out_dir: str | Path) -> list[str] | None:
    """The point ids of the sweep that last ran into ``out_dir`` (None if unknown: a folder
    written before ``sweep.json`` existed, whose points all count)."""
    data = _read_sweep_file(out_dir)
    ids = data.get("point_ids") if data else None
    return [str(i) for i in ids] if isinstance(ids, list) else None


def record_points(out_dir: str | Path, records: Iterable[Mapping[str, Any]],
                  wait_s: float | None = None) -> int:
    """Insert (or replace) finished points' records in one transaction; return how many.

    A record is what a point leaves in its ``point.json``: point_id, sweep, seed, params and
    ``row`` (values for the metric columns). DuckDB errors propagate: the caller decides
    whether the records can wait for a later write.
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


def query(out_dir: str | Path, sql: str, every_point: bool = False) -> pd.DataFrame:
    """Run ``sql`` against a sweep folder's views and return a pandas DataFrame.

    Views: ``points`` (the catalogue plus a column per parameter), ``requests`` and
    ``iterations`` (each finished point's Parquet rows with a ``point_id`` column; empty views
    with only ``point_id`` when no point has finished). They cover the points of the sweep
    that last ran into ``out_dir``, or with ``every_point`` every catalogued point, earlier
    versions of the sweep included. Only statements that read run (``sql_guard``).

    Raises ConfigError if ``out_dir`` holds no readable catalogue, a point's file is damaged
    (naming the point and the file), the SQL fails (the database's message, on one line),
    holds a statement that could change something (``DROP``, ``COPY ... TO``, ``ATTACH``,
    ``SET``, ...), or returns no rows at all (an empty or comment-only text).
    """
    import duckdb

    try:
        refused = refused_statement(sql)
    except duckdb.Error as e:
        raise _sql_error(sql, e) from None
    if refused is not None:
        raise ConfigError("sql", one_line(refused, 80), ALLOWED)
    con = open_views(out_dir, every_point=every_point)
    try:
        result = con.execute(sql)
        if con.description is None:
            raise ConfigError("sql", one_line(sql, 80), "a query that returns rows, such as "
                              "SELECT * FROM points")
        return result.df()
    except duckdb.Error as e:
        raise _read_error(out_dir, e, _sql_error(sql, e)) from None
    finally:
        con.close()


def _sql_error(sql: str, error: Exception) -> ConfigError:
    return ConfigError("sql", one_line(sql, 80), f"a query DuckDB accepts ("
                       f"{one_line(str(error), 300)})")


def _read_error(out_dir: str | Path, error: Exception, otherwise: ConfigError) -> ConfigError:
    """The error to show for a DuckDB error while reading a sweep folder: when it concerns a
    Parquet file, the damaged file of a point if there is one (``integrity``), else
    ``otherwise``."""
    if ".parquet" in str(error):
        damage = find_damage(out_dir, str(error))
        if damage is not None:
            return damage_error(out_dir, damage)
    return otherwise


def open_views(out_dir: str | Path, every_point: bool = False):
    """An in-memory DuckDB connection with the sweep's views set up (``every_point`` as in
    ``query``).

    The catalogue's rows are copied into memory and the file let go before the connection is
    returned, so a long query never keeps the sweep from recording its points. DuckDB spills
    to a private folder under the system's temporary folder (removed when the connection
    closes) rather than to ``.tmp`` in the working folder, installs no extensions, and the
    settings are locked once the views exist.

    Raises ConfigError if ``out_dir`` holds no catalogue, one that cannot be opened, or a
    point whose Parquet file is damaged (naming the point and the file).
    """
    import duckdb

    out = Path(out_dir)
    path = out / CATALOG
    if not path.is_file():
        raise ConfigError("DIR", str(out), f"a sweep folder holding {CATALOG} "
                                           "(written by servesim sweep)")
    ids = None if every_point else sweep_ids(out)
    con = duckdb.connect(config=reader_config())
    try:
        _snapshot(con, path, ids)
        fixed = {name for name, _ in CATALOG_COLUMNS}
        extra = [f'{_extract(p, kind)} AS "{_column(p)}"'
                 for p, kind in _param_types(con).items() if _column(p) not in fixed]
        select = ", ".join(["*", *extra])
        con.execute(f"CREATE TEMP VIEW points AS SELECT {select} FROM current_catalog")
        for name in TABLES:
            con.execute(_table_view(out, name))
        con.execute("SET lock_configuration = true")
    except duckdb.Error as e:
        con.close()
        otherwise = (ConfigError(str(out / "points"), one_line(str(e), 200),
                                 "Parquet files DuckDB can read") if ".parquet" in str(e)
                     else catalog_error(out, e))
        raise _read_error(out, e, otherwise) from None
    except BaseException:
        con.close()
        raise
    return con


def _snapshot(con, path: Path, ids: list[str] | None) -> None:
    """Register ``current_catalog``: the catalogue rows of ``ids`` (every row if None), as an
    Arrow table in memory (which no statement can modify); the catalogue file is detached
    again at once."""
    _attach(con, path)
    try:
        if not _has_catalog(con, "cat"):
            raise ConfigError(str(path), "no catalog table", "a catalogue written by servesim "
                              "sweep (running the sweep again rebuilds it)")
        if ids is None:
            rows = con.sql("SELECT * FROM cat.catalog").to_arrow_table()
        else:
            rows = con.sql("SELECT * FROM cat.catalog WHERE point_id IN "
                           "(SELECT unnest($ids::VARCHAR[]))",
                           params={"ids": ids}).to_arrow_table()
    finally:
        con.execute("DETACH cat")
    con.register("current_catalog", rows)


def _attach(con, path: Path) -> None:
    _wait_for_lock(lambda: con.execute(f"ATTACH {_sql_str(str(path))} AS cat (READ_ONLY)"))


def _table_view(out: Path, name: str) -> str:
    files = sorted(out.glob(f"points/point_id=*/{name}.parquet"))
    if not files:
        return f"CREATE TEMP VIEW {name} AS SELECT NULL::VARCHAR AS point_id WHERE false"
    pattern = _sql_str(str(out / "points" / "*" / f"{name}.parquet"))
    return (f"CREATE TEMP VIEW {name} AS SELECT * FROM read_parquet({pattern}, "
            "hive_partitioning = true, hive_types_autocast = false, union_by_name = true) "
            "WHERE point_id IN (SELECT point_id FROM current_catalog)")


def _param_types(con) -> dict[str, str]:
    """Each parameter's SQL type: DOUBLE if every value is a number, BOOLEAN if every value is
    a boolean, VARCHAR if a string, else JSON."""
    kinds: dict[str, set[str]] = {}
    for (text,) in con.execute("SELECT params FROM current_catalog").fetchall():
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
    """``text`` as a SQL string literal.

    Only for statements that cannot take query parameters: view definitions, and ATTACH,
    whose path older DuckDB versions accept only as a literal. Queries pass values as
    parameters instead.
    """
    return "'" + text.replace("'", "''") + "'"


def one_line(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters: error messages stay one line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."

