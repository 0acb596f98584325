"""Experiments: run outputs on disk, sweeps (grid x seeds) over executors, and the results store
(per-point Parquet files plus a DuckDB catalogue)."""

from servesim.experiments.execute import EXECUTORS, SweepRun, run_sweep
from servesim.experiments.runner import PointError
from servesim.experiments.store import query
from servesim.experiments.sweep import Point, Sweep, load_sweep, sweep_from_dict

__all__ = [
    "EXECUTORS",
    "Point",
    "PointError",
    "Sweep",
    "SweepRun",
    "load_sweep",
    "query",
    "run_sweep",
    "sweep_from_dict",
]
