"""One sweep at a time in a folder: a second sweep into it stops with one line naming the
first one's pid, every point runs exactly once, and a lock left by a killed sweep blocks
nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from servesim.cli.main import run_cli
from servesim.experiments.execute import run_sweep
from servesim.experiments.folder_lock import LOCK_FILE, SweepBusyError, sweep_lock
from servesim.experiments.store import finished_ids, query
from servesim.experiments.sweep import load_sweep

SHORT = '\n[sweep.set]\n"run.horizon_s" = 5.0\n'

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")


def _busy_line(out: Path, pid: int) -> str:
    return (f"error: {out}: another sweep is running in this folder (pid {pid}); wait for it "
            "or use another --out")


def test_second_sweep_stops_with_one_line(make_sweep, tmp_path: Path, capsys) -> None:
    path = make_sweep(policies=("orca",), loads=(0.5,), seeds=1, extra=SHORT)
    out = tmp_path / "out"
    out.mkdir()
    with sweep_lock(out):
        with pytest.raises(SweepBusyError) as info:
            run_sweep(load_sweep(path), out, executor="serial")
        assert info.value.pid == os.getpid()
        assert run_cli(["sweep", str(path), "--out", str(out), "--executor", "serial"]) == 2
        assert capsys.readouterr().err.strip() == _busy_line(out, os.getpid())
    # Nothing was written by the refused sweeps; with the lock released the sweep runs.
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
    assert run_sweep(load_sweep(path), out, executor="serial").ran == 1


def test_sweeps_started_at_once_run_each_point_once(make_sweep, tmp_path: Path) -> None:
    sweep = load_sweep(make_sweep(policies=("orca", "vllm"), loads=(0.5,), seeds=2,
                                  extra=SHORT))
    out = tmp_path / "out"
    start = threading.Barrier(2)
    outcomes: list[object] = [None, None]

    def one(i: int) -> None:
        start.wait()
        try:
            outcomes[i] = run_sweep(sweep, out, executor="serial")
        except SweepBusyError as e:
            outcomes[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    runs = [o for o in outcomes if not isinstance(o, SweepBusyError)]
    assert runs and all(o is not None for o in outcomes)
    # Either the second sweep was refused, or it started after the first one ended and found
    # nothing to do: every point ran exactly once.
    assert sum(r.ran for r in runs) == len(sweep.points)
    assert finished_ids(out) == {p.point_id for p in sweep.points}
    assert len(query(out, "SELECT * FROM points")) == len(sweep.points)


def test_lock_of_a_killed_sweep_blocks_nothing(make_sweep, tmp_path: Path, capsys) -> None:
    """Another process holds the lock (as a running sweep does): the sweep is refused with its
    pid. Once it is killed with SIGKILL, which runs no clean-up, the lock file stays behind
    and still names it, but the next sweep runs."""
    path = make_sweep(policies=("orca",), loads=(0.5,), seeds=1, extra=SHORT)
    out = tmp_path / "out"
    out.mkdir()
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from servesim.experiments.folder_lock import sweep_lock
        with sweep_lock(Path({str(out)!r})):
            print("locked", flush=True)
            sys.stdin.read()
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert run_cli(["sweep", str(path), "--out", str(out), "--executor", "serial"]) == 2
        assert capsys.readouterr().err.strip() == _busy_line(out, holder.pid)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    assert (out / LOCK_FILE).read_text().strip() == str(holder.pid)
    assert run_cli(["sweep", str(path), "--out", str(out), "--executor", "serial"]) == 0


def test_lock_is_released_when_a_sweep_is_interrupted(make_sweep, tmp_path: Path) -> None:
    sweep = load_sweep(make_sweep(policies=("orca",), loads=(0.5,), seeds=2, extra=SHORT))
    out = tmp_path / "out"

    def stop(point_id: str, done: int, todo: int) -> None:
        if done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, out, executor="serial", progress=stop)
    again = run_sweep(sweep, out, executor="serial")
    assert (again.skipped, again.ran) == (1, 1)


def test_readers_do_not_wait_for_a_running_sweep(make_sweep, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_sweep(load_sweep(make_sweep(policies=("orca",), loads=(0.5,), seeds=1, extra=SHORT)),
              out, executor="serial")
    with sweep_lock(out):
        assert len(query(out, "SELECT * FROM points")) == 1
