"""Single quotes in a sweep's name, folder, point ids and parameter names reach DuckDB intact."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from servesim.experiments.execute import run_sweep
from servesim.experiments.runner import point_dir
from servesim.experiments.store import query
from servesim.experiments.sweep import load_sweep
from servesim.report.data import load_report_data

NAME = "it's"
IDS = ("it's", "o''k'; --")
PARAM = "it's"


def _quoted_sweep(root: Path, base_text: str):
    """A two-point sweep named NAME whose points are re-keyed to IDS, each with an extra
    parameter PARAM; the folder name holds a quote too."""
    (root / "base.toml").write_text(base_text, encoding="utf-8")
    (root / "sweep.toml").write_text(
        f'[sweep]\nscenario = "base.toml"\nname = "{NAME}"\nseeds = 1\n[grid]\n'
        '"engine.batching" = ["orca", "vllm"]\nload = [0.5]\n', encoding="utf-8")
    sweep = load_sweep(root / "sweep.toml")
    points = tuple(dataclasses.replace(p, point_id=i, params={**p.params, PARAM: k})
                   for k, (i, p) in enumerate(zip(IDS, sweep.points, strict=True)))
    return dataclasses.replace(sweep, points=points)


def test_quotes_in_names_ids_and_paths(tmp_path: Path, base_scenario_text: str) -> None:
    root = tmp_path / "sweep's folder"
    root.mkdir()
    out = root / "out's"
    run_sweep(_quoted_sweep(root, base_scenario_text), out, executor="serial")

    points = query(out, f'SELECT point_id, sweep, "{PARAM}" FROM points ORDER BY point_id')
    assert list(points["point_id"]) == sorted(IDS)
    assert set(points["sweep"]) == {NAME}
    assert sorted(points[PARAM]) == [0.0, 1.0]

    counts = query(out, "SELECT point_id, count(*) AS n FROM requests GROUP BY point_id")
    on_disk = {i: len(pd.read_parquet(point_dir(out, i) / "requests.parquet")) for i in IDS}
    assert dict(zip(counts["point_id"], counts["n"], strict=True)) == on_disk

    # The report reads the finished requests of the reference points by their ids.
    data = load_report_data(out)
    finished = sum(int((pd.read_parquet(point_dir(out, i) / "requests.parquet")["status"]
                        == "finished").sum()) for i in IDS)
    assert finished > 0
    assert len(data.requests) == finished
    assert set(data.requests["label"]) == set(data.points["label"])
