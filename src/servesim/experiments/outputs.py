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
import functools
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from servesim.api import SimResult, run_header, simulate
from servesim.core.rng import Streams
from servesim.engine.stop import Interrupted, StopFlag
from servesim.metrics.summary import jsonable
from servesim.scenario import Scenario

__all__ = ["OUTPUT_FILES", "atomic_write", "new_file_mode", "run_to_dir", "write_frames",
           "write_outputs", "write_summary"]

SUMMARY = "summary.json"
REQUESTS = "requests.parquet"
ITERATIONS = "iterations.parquet"
OUTPUT_FILES = (SUMMARY, REQUESTS, ITERATIONS)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it onto ``path``.

    The file ends with the mode any new file gets under the user's umask (``0o666 & ~umask``),
    as if written in place: ``mkstemp`` creates the temporary file private (0600).
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def new_file_mode() -> int:
    """The mode a file created now with ``open`` would get: ``0o666`` less the umask."""
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read without changing it where the system allows.

    Linux shows it in ``/proc/self/status``. Elsewhere the only way is ``os.umask``, which sets
    a value to return the old one: a thread creating a file between setting and restoring it
    would get the temporary mask (0o077 here, so such a file is private rather than open to
    all), so that read happens once per process and is cached (a later ``os.umask`` call is
    then not seen).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _swapped_umask()


@functools.cache
def _swapped_umask() -> int:
    old = os.umask(0o077)
    os.umask(old)
    return old


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
               stepper: str = "fast", stop: StopFlag | None = None) -> SimResult:
    """Simulate ``scenario`` and write its outputs into ``out_dir``, recording the run's status.

    ``summary.json`` first says ``"complete": false, "status": "running"`` (tables left by an
    earlier run in the same directory are removed); on success the full outputs replace it. On
    an error it is rewritten with ``"status": "failed"`` and an ``"error"`` message, and the
    exception is re-raised. On an interruption (KeyboardInterrupt, or a signal that sets
    ``stop``) the run stops at an iteration boundary and what it simulated is written: both
    tables and a summary over them, with ``"complete": false, "status": "interrupted"``; the
    interruption is then re-raised. An interruption while those are written leaves the summary
    marked interrupted (and says which tables are missing). Nothing is written outside
    ``out_dir``.

    Raises ConfigError for a bad seed (before anything is written), whatever ``simulate``
    raises (Interrupted, a KeyboardInterrupt, when interrupted), and OSError if ``out_dir``
    cannot be written.
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
        # A signal while the run is summarised or written is only recorded (a second one
        # forces the stop): a run that finished keeps its whole outputs.
        with contextlib.nullcontext() if stop is None else stop.deferred():
            result = simulate(scenario, seed=seed, progress=progress, stepper=stepper,
                              stop=stop)
            write_outputs(result, out)
    except Interrupted as e:
        if e.result is None:
            _mark_interrupted(header, out, str(e))
        else:
            _write_partial(e.result, header, out)
        raise
    except KeyboardInterrupt:
        _mark_interrupted(header, out, "interrupted by the user (KeyboardInterrupt)")
        raise
    except Exception as e:
        write_summary({**header, "status": "failed", "error": f"{type(e).__name__}: {e}"}, out)
        raise
    return result


def _mark_interrupted(header: dict[str, Any], out: Path, error: str) -> None:
    write_summary({**header, "status": "interrupted", "error": error}, out)


def _write_partial(result: SimResult, header: dict[str, Any], out: Path) -> None:
    """Write an interrupted run's tables, then its summary (already marked interrupted). A
    second interruption here still leaves a summary that says interrupted, and which tables
    were not written; each file is whole or absent (``atomic_write``)."""
    try:
        write_outputs(result, out)
    except KeyboardInterrupt:
        missing = [name for name in (REQUESTS, ITERATIONS) if not (out / name).exists()]
        _mark_interrupted(header, out, f"{result.summary.get('error', 'interrupted')}; "
                          f"interrupted again while writing: {', '.join(missing) or 'no table'} "
                          "missing")
        raise
