"""Running a sweep: pick the points not yet finished, hand them to an executor, record each one.

Executors yield ``PointResult``s as points finish, in any order:

- ``serial``: one point after another in this process;
- ``local`` (default): a pool of worker processes (``spawn``, so workers never inherit the
  parent's threads or open files); each worker writes its point's files itself;
- ``ray``: one Ray task per point, on a local instance or an existing cluster; tasks return
  their tables and the parent writes them, since a cluster node may not share the parent's
  disk.

Only one sweep at a time runs into a folder (``folder_lock``), and a point counts as finished
only if its files match the sizes and hashes in its ``point.json`` (``integrity``). Whatever
the executor, only this process writes the catalogue, one row per finished point,
after the point's files are in place. A catalogue that another process keeps locked during the
sweep costs nothing: the records wait in the points' folders, and the final message says that
the next run adds them. Results do not depend on the executor: each point is a
pure function of its scenario table and seed.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servesim.core.errors import ConfigError
from servesim.core.registry import lookup
from servesim.experiments import store
from servesim.experiments.folder_lock import sweep_lock
from servesim.experiments.integrity import file_problem
from servesim.experiments.runner import (
    PointError,
    PointResult,
    describe,
    point_dir,
    read_record,
    run_point,
    write_point,
)
from servesim.experiments.store import (
    catalog_error,
    finished_ids,
    is_lock_error,
    one_line,
    record_points,
    write_sweep_file,
)
from servesim.experiments.sweep import Point, Sweep

__all__ = ["EXECUTORS", "SweepRun", "run_sweep"]


@dataclass(frozen=True)
class SweepRun:
    """What one call of ``run_sweep`` did.

    Attributes:
        out_dir: the sweep folder.
        total: points in the sweep.
        skipped: points already finished in an earlier run (resume).
        ran: points simulated now.
        wall_s: wall-clock time of this call, seconds.
        sim_wall_s: wall-clock time spent inside the simulations, summed over points.
    """

    out_dir: Path
    total: int
    skipped: int
    ran: int
    wall_s: float
    sim_wall_s: float


Progress = Callable[[str, int, int], None]
Notice = Callable[[str], None]

FLUSH_S = 2.0
"""Seconds between catalogue writes during a sweep: one transaction per batch keeps the parent
from becoming the bottleneck, and a point whose record was not yet written is recovered from
its folder by the next run."""


def run_sweep(sweep: Sweep, out_dir: str | Path, *, executor: str = "local",
              workers: int | None = None, address: str | None = None,
              progress: Progress | None = None, notice: Notice | None = None) -> SweepRun:
    """Run every point of ``sweep`` that ``out_dir`` has not finished yet.

    ``progress(point_id, done, todo)`` is called once with ``done = 0`` before any point runs,
    then after each point's files are in place. ``workers`` sizes the local pool (default: the
    CPU count); ``address`` is the Ray cluster to join (``"auto"``, ``"HOST:PORT"`` or
    ``"ray://HOST:PORT"``; default: an instance already initialised in this process, else a
    new local one).

    ``out_dir/sweep.json`` records this sweep's point ids. If it held a different sweep (the
    file was edited since), the run goes on and ``notice`` gets one line saying so: the earlier
    points stay on disk and in the catalogue, but the views and the report now cover this
    sweep's points only. A point counts as finished only if its files match the sizes and
    hashes in its ``point.json``; a damaged one is run again, and ``notice`` gets one line
    naming it and the file.

    The sweep holds ``out_dir/sweep.lock`` while it runs (``folder_lock``), so two sweeps never
    run into one folder at once.

    Raises SweepBusyError (one line, the other sweep's pid) if another sweep is running into
    ``out_dir``; ConfigError for an unknown executor, a bad worker count, or a catalogue that
    cannot be opened or written (finished points stay in their folders); PointError (one
    line, naming the point) if a point fails; finished points stay recorded either way.
    """
    run = lookup(EXECUTORS, executor, "--executor")
    if workers is not None and workers < 1:
        raise ConfigError("--workers", workers, "an integer >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with sweep_lock(out, notice):
        return _run_locked(sweep, out, run, workers, address, progress, notice)


def _run_locked(sweep: Sweep, out: Path, run: Callable[..., Iterator[PointResult]],
                workers: int | None, address: str | None, progress: Progress | None,
                notice: Notice | None) -> SweepRun:
    """``run_sweep`` once this process holds the folder's sweep lock."""
    pending: list[dict[str, Any]] = []
    done_ids = _recover(sweep, out, finished_ids(out), pending, notice)
    previous = write_sweep_file(out, sweep.name, [p.point_id for p in sweep.points])
    if previous is not None and notice is not None:
        notice(f"note: {out} held another version of this sweep (fingerprint {previous}); its "
               "points stay on disk, but queries and the report now show only this "
               "version's points (query --all-points shows every point)")
    todo = [p for p in sweep.points if p.point_id not in done_ids]
    by_id = {p.point_id: p for p in todo}
    start = time.perf_counter()
    sim_wall = 0.0
    base_dir = str(sweep.base_dir) if sweep.base_dir is not None else None
    flushed = time.monotonic()
    if progress is not None:
        progress("", 0, len(todo))
    try:
        for count, result in enumerate(run(todo, base_dir, out, workers, address, sweep.name),
                                       start=1):
            point = by_id[result.point_id]
            if result.error is not None:
                what = describe(point.params, point.seed)
                raise PointError(f"point {point.point_id} ({what}): {result.error}")
            if result.frames is not None:
                write_point(out, result)
            pending.append(result.record)
            sim_wall += float(result.record["row"].get("sim_wall_s") or 0.0)
            if progress is not None:
                progress(point.point_id, count, len(todo))
            if time.monotonic() - flushed >= FLUSH_S:
                # A held catalogue is retried at the next interval, not after every point.
                if _flush(out, pending, 0.5) is None:
                    pending = []
                flushed = time.monotonic()
    except BaseException:
        _flush(out, pending, store.LOCK_WAIT_S)
        raise
    error = _flush(out, pending, store.LOCK_WAIT_S)
    if error is not None:
        problem = "held by another process" if is_lock_error(error) else str(error)
        raise ConfigError(str(out / store.CATALOG), one_line(problem, 160),
                          f"a catalogue free to write: every point ran and is saved in its "
                          f"folder, but {len(pending)} are not catalogued yet; "
                          "run the sweep again to add them (nothing is simulated twice)")
    return SweepRun(out_dir=out, total=len(sweep.points), skipped=len(sweep.points) - len(todo),
                    ran=len(todo), wall_s=time.perf_counter() - start, sim_wall_s=sim_wall)


def _flush(out: Path, records: list[dict[str, Any]], wait_s: float) -> Exception | None:
    """Record ``records``; return the error if the catalogue could not take them (a reader
    kept it locked for ``wait_s``, or it broke mid-sweep). The records stay in their points'
    folders, so a later flush or the next run adds them."""
    import duckdb

    if not records:
        return None
    try:
        record_points(out, records, wait_s=wait_s)
    except duckdb.Error as e:
        return e
    return None


def _recover(sweep: Sweep, out: Path, known: set[str],
             pending: list[dict[str, Any]] | None = None,
             notice: Notice | None = None) -> set[str]:
    """The ids of the sweep's points that are finished, with every file matching its
    ``point.json``; catalogue those not yet recorded (``known`` holds the recorded ids).

    A point whose files do not match is left to run again, and ``notice`` gets one line
    naming it and the file. If another process holds the catalogue and ``pending`` is given,
    the records join ``pending`` for the sweep's later writes instead.
    """
    done: set[str] = set()
    records = []
    for point in sweep.points:
        record = read_record(out, point.point_id)
        problem = (("point.json", "is missing or unreadable") if record is None
                   else file_problem(point_dir(out, point.point_id), record))
        if problem is None:
            done.add(point.point_id)
            if point.point_id not in known:
                records.append(record)
        elif notice is not None and (record is not None or point.point_id in known):
            notice(f"point {point.point_id} ({describe(point.params, point.seed)}): "
                   f"{problem[0]} {problem[1]}; rerunning")
    error = _flush(out, records, store.LOCK_WAIT_S)
    if error is not None:
        if pending is None or not is_lock_error(error):
            raise catalog_error(out, error)
        pending.extend(records)
    return done


# -- executors ----------------------------------------------------------------------------------


def _serial(points: Sequence[Point], base_dir: str | None, out: Path, workers: int | None,
            address: str | None, name: str) -> Iterator[PointResult]:
    for point in points:
        yield run_point(point, base_dir, str(out), name)


_PARENT_PID: int | None = None
"""The sweep process that started this pool worker (set by ``_worker_init``)."""


def _worker_init(parent_pid: int) -> None:
    """Make a pool worker end with the sweep process, even one killed by SIGKILL, which runs
    no clean-up: orphaned workers would go on simulating points nobody records."""
    global _PARENT_PID
    _PARENT_PID = parent_pid
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass  # the per-point check below still applies
    _exit_if_orphaned()


def _exit_if_orphaned() -> None:
    if _PARENT_PID is not None and os.getppid() != _PARENT_PID:
        os._exit(0)


def _call(args: tuple[Point, str | None, str, str]) -> PointResult:
    _exit_if_orphaned()
    return run_point(*args)


def _local(points: Sequence[Point], base_dir: str | None, out: Path, workers: int | None,
           address: str | None, name: str) -> Iterator[PointResult]:
    import multiprocessing

    if not points:
        return
    n = min(workers or os.cpu_count() or 1, len(points))
    if n == 1:
        yield from _serial(points, base_dir, out, workers, address, name)
        return
    pool = multiprocessing.get_context("spawn").Pool(processes=n, initializer=_worker_init,
                                                      initargs=(os.getpid(),))
    try:
        jobs = [(p, base_dir, str(out), name) for p in points]
        yield from pool.imap_unordered(_call, jobs, chunksize=1)
        pool.close()
    finally:
        # On an error or an interruption, workers still simulating are stopped: their points
        # were not recorded, so the next run repeats them.
        pool.terminate()
        pool.join()


def _ray(points: Sequence[Point], base_dir: str | None, out: Path, workers: int | None,
         address: str | None, name: str) -> Iterator[PointResult]:
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor", "ray", "Ray installed (pip install 'servesim[ray]')",
                          choices=None) from None
    if not points:
        return
    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        started = True
    pending: list[Any] = []
    try:
        task = ray.remote(num_cpus=1)(run_point)
        pending = [task.remote(p, base_dir, None, name) for p in points]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            yield ray.get(ready[0])
    finally:
        # Stopped early (an error or an interruption): a cluster would otherwise go on
        # simulating points whose results nobody collects.
        for ref in pending:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


EXECUTORS: dict[str, Callable[..., Iterator[PointResult]]] = {
    "local": _local,
    "serial": _serial,
    "ray": _ray,
}

