"""Writing a run's outputs to a directory: the only module of a run that touches the disk.

Layout of ``out_dir``:

- ``summary.json``: scenario echo, seed, versions, status and headline metrics;
- ``requests.parquet``: one row per request;
- ``iterations.parquet``: one row per engine iteration.

Every file is written to a temporary name in ``out_dir`` and moved into place with
``os.replace``, so a reader never sees half a file; ``summary.json`` goes last, so a summary that
says ``"complete": true`` implies both tables are in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from servesim.api import SimResult, run_header, simulate
from servesim.core.rng import Streams
from servesim.metrics.summary import jsonable
from servesim.scenario import Scenario

__all__ = ["OUTPUT_FILES", "atomic_write", "run_to_dir", "write_frames", "write_outputs",
           "write_summary"]

SUMMARY = "summary.json"
REQUESTS = "requests.parquet"
ITERATIONS = "iterations.parquet"
OUTPUT_FILES = (SUMMARY, REQUESTS, ITERATIONS)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it onto ``path``."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_summary(summary: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``summary.json`` atomically (NaN as null); return its path."""
    path = Path(out_dir) / SUMMARY
    text = json.dumps(jsonable(summary), indent=2, allow_nan=False, default=str) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def _write_table(df: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_frames(summary: dict[str, Any], requests: pd.DataFrame, iterations: pd.DataFrame,
                 out_dir: str | Path) -> Path:
    """Write the requests and iterations tables, then the summary, into ``out_dir``.

    Creates ``out_dir`` (and its parents) if needed; returns it.

    Raises OSError if the directory cannot be created or written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_table(requests, out / REQUESTS)
    _write_table(iterations, out / ITERATIONS)
    write_summary(summary, out)
    return out


def write_outputs(result: SimResult, out_dir: str | Path) -> Path:
    """Write a run's tables and summary into ``out_dir`` (see ``write_frames``); return it.

    Raises OSError if the directory cannot be created or written.
    """
    return write_frames(result.summary, result.requests, result.iterations, out_dir)


def run_to_dir(scenario: Scenario, out_dir: str | Path, seed: int | None = None,
               progress: Callable[[float], None] | None = None,
               stepper: str = "fast") -> SimResult:
    """Simulate ``scenario`` and write its outputs into ``out_dir``, recording the run's status.

    ``summary.json`` first says ``"complete": false, "status": "running"`` (tables left by an
    earlier run in the same directory are removed); on success the full outputs replace it. On
    KeyboardInterrupt or an exception it is rewritten with ``"status": "interrupted"`` or
    ``"failed"`` and an ``"error"`` message, and the exception is re-raised. Nothing is written
    outside ``out_dir``.

    Raises ConfigError for a bad seed (before anything is written), whatever ``simulate``
    raises, and OSError if ``out_dir`` cannot be written.
    """
    used_seed = scenario.run.seed if seed is None else seed
    Streams(used_seed)  # a bad seed is a config error: raise it before touching the disk
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header = {"complete": False, "status": "running", **run_header(scenario, used_seed)}
    for name in (REQUESTS, ITERATIONS):
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
    write_summary(header, out)
    try:
        result = simulate(scenario, seed=seed, progress=progress, stepper=stepper)
        write_outputs(result, out)
    except KeyboardInterrupt:
        write_summary({**header, "status": "interrupted",
                       "error": "interrupted by the user (KeyboardInterrupt)"}, out)
        raise
    except Exception as e:
        write_summary({**header, "status": "failed", "error": f"{type(e).__name__}: {e}"}, out)
        raise
    return result
