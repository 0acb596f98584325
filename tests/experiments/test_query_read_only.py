"""Queries of a sweep folder only read: statements that would change the views, write files,
open databases or change settings are refused with one line, and the catalogue is let go
before the query runs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from servesim.cli.main import run_cli
from servesim.core.errors import ConfigError
from servesim.experiments.execute import run_sweep
from servesim.experiments.store import CATALOG, open_views, query
from servesim.experiments.sweep import load_sweep

SHORT = '\n[sweep.set]\n"run.horizon_s" = 5.0\n'


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory, base_scenario_text: str) -> Path:
    """One finished two-point sweep, shared by the tests of this module (they only read)."""
    root = tmp_path_factory.mktemp("readonly")
    (root / "base.toml").write_text(base_scenario_text, encoding="utf-8")
    (root / "sweep.toml").write_text(
        '[sweep]\nscenario = "base.toml"\nseeds = 1\n[grid]\n'
        '"engine.batching" = ["orca", "vllm"]\nload = [0.5]\n' + SHORT, encoding="utf-8")
    run_sweep(load_sweep(root / "sweep.toml"), root / "out", executor="serial")
    return root / "out"


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def _refused(tmp: Path) -> list[str]:
    target = tmp / "written"
    return [
        "DROP VIEW points",
        "DELETE FROM points",
        "CREATE TABLE t AS SELECT 1 AS x",
        "CREATE OR REPLACE TEMP VIEW points AS SELECT 1 AS x",
        "INSERT INTO points (point_id) VALUES ('x')",
        "UPDATE points SET seed = 1",
        f"COPY (SELECT * FROM points) TO '{target}.csv'",
        f"COPY points TO '{target}.parquet' (FORMAT parquet)",
        f"EXPORT DATABASE '{target}'",
        f"ATTACH '{target}.duckdb' AS other",
        f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{target}.csv'",
        f"EXPLAIN (ANALYZE) COPY (SELECT 1) TO '{target}.csv'",
        f"SELECT 1; COPY (SELECT 1) TO '{target}.csv'",
        "SELECT 1; DROP VIEW points",
        "SET threads = 1",
        "PRAGMA version",
        f"IMPORT DATABASE '{target}'",
        "INSTALL httpfs",
        "CHECKPOINT",
        "BEGIN TRANSACTION",
    ]


def test_statements_that_change_something_are_refused(sweep_dir: Path, tmp_path: Path,
                                                       capsys) -> None:
    before = _tree(sweep_dir)
    for sql in _refused(tmp_path):
        with pytest.raises(ConfigError, match="a read-only statement") as info:
            query(sweep_dir, sql)
        assert info.value.field == "sql" and "\n" not in str(info.value), sql
        assert run_cli(["query", str(sweep_dir), sql]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: sql: got ") and "\n" not in err, (sql, err)
        assert "expected a read-only statement (SELECT, WITH" in err
    assert list(tmp_path.iterdir()) == []
    assert _tree(sweep_dir) == before
    # The views are intact.
    assert len(query(sweep_dir, "SELECT * FROM points")) == 2


def test_refusal_quotes_the_offending_statement(sweep_dir: Path, capsys) -> None:
    assert run_cli(["query", str(sweep_dir), "DROP VIEW points"]) == 2
    assert capsys.readouterr().err.strip().startswith(
        "error: sql: got 'DROP VIEW points', expected a read-only statement")
    assert run_cli(["query", str(sweep_dir), "SELECT 1;\n  DROP VIEW points"]) == 2
    assert "got 'DROP VIEW points'" in capsys.readouterr().err


def test_a_data_modifying_with_clause_finds_nothing_to_modify(sweep_dir: Path) -> None:
    """DuckDB types ``WITH x AS (DELETE ...) SELECT`` as a SELECT; the connection has no table
    it could delete from, so it fails like any bad query."""
    for target in ("points", "current_catalog", "requests"):
        with pytest.raises(ConfigError, match="a query DuckDB accepts"):
            query(sweep_dir, f"WITH x AS (DELETE FROM {target} RETURNING *) SELECT * FROM x")
    assert len(query(sweep_dir, "SELECT * FROM points")) == 2


@pytest.mark.parametrize("sql", [
    "SELECT policy, load, avg(e2e_mean_s) FROM points GROUP BY ALL ORDER BY ALL",
    "SELECT policy, load, avg(e2e_mean_s) FROM points GROUP BY ALL",
    "WITH p AS (SELECT * FROM points) SELECT count(*) AS n FROM p",
    "FROM points SELECT point_id",
    "  -- a comment first\n  SELECT point_id FROM points",
    "SELECT 1 AS x; SELECT point_id FROM points",
    "DESCRIBE points",
    "SHOW TABLES",
    "SUMMARIZE points",
    "EXPLAIN SELECT * FROM requests",
    "EXPLAIN ANALYZE SELECT count(*) FROM requests",
    "PIVOT points ON engine_batching USING count(*)",
    "PIVOT points ON engine_batching IN ('orca', 'vllm') USING count(*)",
    "SELECT * FROM pragma_table_info('points')",
    "SELECT p.policy, count(*) AS n FROM requests r JOIN points p USING (point_id) GROUP BY 1",
])
def test_read_statements_still_run(sweep_dir: Path, sql: str) -> None:
    assert len(query(sweep_dir, sql)) > 0


def test_readme_query_through_the_cli(sweep_dir: Path, capsys) -> None:
    sql = "SELECT policy, load, avg(e2e_mean_s) AS e2e FROM points GROUP BY ALL ORDER BY ALL"
    assert run_cli(["query", str(sweep_dir), sql, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["policy"], r["load"]) for r in rows] == [("orca", 0.5), ("vllm", 0.5)]


def test_open_views_lets_go_of_the_catalogue(sweep_dir: Path) -> None:
    """A reader's connection holds no lock on the catalogue: another process can open it for
    writing (as the sweep does to record points) while the reader's connection is open."""
    con = open_views(sweep_dir)
    try:
        code = textwrap.dedent(f"""
            import duckdb
            duckdb.connect({str(sweep_dir / CATALOG)!r}).close()
        """)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert con.execute("SELECT count(*) FROM points").fetchone()[0] == 2
        with pytest.raises(Exception, match="lock"):
            con.execute("SET threads = 1")
    finally:
        con.close()


def test_queries_spill_to_the_temporary_folder(sweep_dir: Path, tmp_path: Path,
                                               monkeypatch) -> None:
    """DuckDB's default spill folder is ``.tmp`` in the working folder; a query's goes under
    the system's temporary folder, and only once it spills."""
    import tempfile

    monkeypatch.chdir(tmp_path)
    con = open_views(sweep_dir)
    try:
        spill, install = con.execute(
            "SELECT current_setting('temp_directory'), "
            "current_setting('autoinstall_known_extensions')").fetchone()
    finally:
        con.close()
    assert Path(spill).parent == Path(tempfile.gettempdir()) and not Path(spill).exists()
    assert install is False
    assert list(tmp_path.iterdir()) == []
