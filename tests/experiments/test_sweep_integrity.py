"""A point is finished only if its files match the sizes and hashes in its point.json: a
damaged point is rerun on resume (to identical results) and named by query and report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from servesim.cli.main import run_cli
from servesim.core.errors import ConfigError
from servesim.experiments.execute import run_sweep
from servesim.experiments.integrity import FILES_KEY, digest_files
from servesim.experiments.outputs import OUTPUT_FILES
from servesim.experiments.runner import POINT_RECORD, point_dir
from servesim.experiments.store import query
from servesim.experiments.sweep import load_sweep

SHORT = '\n[sweep.set]\n"run.horizon_s" = 5.0\n'


def _finished(make_sweep, out: Path, seeds: int = 2):
    sweep = load_sweep(make_sweep(policies=("orca",), loads=(0.5,), seeds=seeds, extra=SHORT))
    run_sweep(sweep, out, executor="serial")
    return sweep


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_point_json_records_every_file(make_sweep, tmp_path: Path) -> None:
    out = tmp_path / "out"
    sweep = _finished(make_sweep, out, seeds=1)
    folder = point_dir(out, sweep.points[0].point_id)
    record = json.loads((folder / POINT_RECORD).read_text())
    assert record[FILES_KEY] == digest_files(folder, OUTPUT_FILES)
    assert set(record[FILES_KEY]) == set(OUTPUT_FILES)
    for name, entry in record[FILES_KEY].items():
        assert entry["bytes"] == (folder / name).stat().st_size > 0
        assert len(entry["sha256"]) == 64


def test_truncated_requests_are_named_then_rerun_to_identical_results(
        make_sweep, tmp_path: Path, capsys, results_of) -> None:
    out = tmp_path / "out"
    sweep = _finished(make_sweep, out)
    original = results_of(out)
    damaged = sweep.points[1]
    path = point_dir(out, damaged.point_id) / "requests.parquet"
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(500)

    # query and report name the point and its file, and say a rerun repairs it.
    with pytest.raises(ConfigError) as info:
        query(out, "SELECT * FROM points")
    message = str(info.value)
    assert info.value.field == str(path)
    assert f"size 500 bytes, expected {size}" in message
    assert f"point {damaged.point_id} (engine.batching='orca', load=0.5, seed=1)" in message
    assert "run the sweep into" in message and "catalog.duckdb" not in message
    for args in (["query", str(out), "SELECT count(*) FROM requests"], ["report", str(out)]):
        assert run_cli(args) == 2
        err = _one_line(capsys)
        assert err.startswith(f"error: {path}: got 'damaged (size 500 bytes")
        assert "removing" not in err and "reruns the damaged point" in err

    notes: list[str] = []
    again = run_sweep(sweep, out, executor="serial", notice=notes.append)
    assert (again.ran, again.skipped) == (1, 1)
    assert notes == [f"point {damaged.point_id} (engine.batching='orca', load=0.5, seed=1): "
                     f"requests.parquet is damaged (size 500 bytes, expected {size}); "
                     "rerunning"]
    repaired = results_of(out)
    for name, frame in original.items():
        assert frame.equals(repaired[name]), name
    assert run_sweep(sweep, out, executor="serial").ran == 0


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("damage", "problem"), [
    (lambda folder: (folder / "iterations.parquet").unlink(), "iterations.parquet is missing"),
    (lambda folder: _flip_a_byte(folder / "summary.json"),
     "summary.json is damaged (its SHA-256 differs"),
    (lambda folder: (folder / "requests.parquet").write_bytes(b""),
     "requests.parquet is damaged (size 0 bytes"),
    (lambda folder: (folder / POINT_RECORD).write_text("{\"point_id\": "),
     "point.json is missing or unreadable"),
    (lambda folder: shutil.rmtree(folder), "point.json is missing or unreadable"),
])
def test_every_kind_of_damage_is_rerun(make_sweep, tmp_path: Path, damage, problem) -> None:
    out = tmp_path / "out"
    sweep = _finished(make_sweep, out, seeds=1)
    folder = point_dir(out, sweep.points[0].point_id)
    record = json.loads((folder / POINT_RECORD).read_text())
    damage(folder)
    notes: list[str] = []
    again = run_sweep(sweep, out, executor="serial", notice=notes.append)
    assert again.ran == 1
    assert len(notes) == 1 and problem in notes[0] and notes[0].endswith("; rerunning")
    assert json.loads((folder / POINT_RECORD).read_text()) | {"row": None} \
        == record | {"row": None}  # only the wall-clock time of the run may differ


def test_a_record_without_file_digests_is_not_trusted(make_sweep, tmp_path: Path) -> None:
    out = tmp_path / "out"
    sweep = _finished(make_sweep, out, seeds=1)
    path = point_dir(out, sweep.points[0].point_id) / POINT_RECORD
    record = json.loads(path.read_text())
    del record[FILES_KEY]
    path.write_text(json.dumps(record))
    notes: list[str] = []
    assert run_sweep(sweep, out, executor="serial", notice=notes.append).ran == 1
    assert "point.json records no file sizes or hashes" in notes[0]
    assert FILES_KEY in json.loads(path.read_text())


def test_damaged_file_of_an_unfinished_point_is_named(make_sweep, tmp_path: Path) -> None:
    """A folder without point.json (a point in flight when a sweep stopped) is read by the
    views too; a broken Parquet file in it is named, with what to do."""
    out = tmp_path / "out"
    sweep = _finished(make_sweep, out, seeds=1)
    stray = out / "points" / "point_id=0123456789abcdef"
    stray.mkdir()
    shutil.copy(point_dir(out, sweep.points[0].point_id) / "requests.parquet", stray)
    with (stray / "requests.parquet").open("r+b") as f:
        f.truncate(100)
    with pytest.raises(ConfigError, match="not recorded as finished") as info:
        query(out, "SELECT * FROM points")
    assert info.value.field == str(stray / "requests.parquet")
    assert "not a whole Parquet file" in str(info.value)
