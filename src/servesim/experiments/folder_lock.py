"""One sweep at a time in a sweep folder: an exclusive lock on ``DIR/sweep.lock``.

Two sweeps running into one folder would both simulate every point they see unfinished, and
race on the catalogue. The sweep's process takes an ``flock`` on the lock file for the whole
run; a second sweep into the same folder does not wait (it might wait for hours) but stops at
once with one line naming the holder's process id.

``flock`` locks belong to the open file, so the system drops the lock when the holder exits,
however it exits (even SIGKILL): a lock file left behind by a killed sweep blocks nothing.
Pool workers are started with ``spawn`` and Python opens files non-inheritable, so no worker
holds the lock after its sweep is gone. ``query`` and ``report`` never take the lock.

Where ``fcntl`` is missing (Windows) or the file system refuses locks (some network file
systems), the sweep runs without a lock and says so once.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from servesim.core.errors import ServesimError

__all__ = ["LOCK_FILE", "SweepBusyError", "sweep_lock"]

LOCK_FILE = "sweep.lock"


class SweepBusyError(ServesimError):
    """Another sweep is running into the same folder; the message is one line."""

    def __init__(self, out_dir: Path, pid: int | None) -> None:
        self.out_dir = out_dir
        self.pid = pid
        holder = f" (pid {pid})" if pid is not None else ""
        super().__init__(f"{out_dir}: another sweep is running in this folder{holder}; wait "
                         "for it or use another --out")


@contextlib.contextmanager
def sweep_lock(out_dir: Path, notice: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the sweep lock of ``out_dir`` (an existing folder) while the block runs.

    Raises SweepBusyError if another process, or another thread of this one, holds it.
    """
    try:
        import fcntl
    except ImportError:
        _unlocked(out_dir, "this system has no flock", notice)
        yield
        return
    fd = os.open(out_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepBusyError(out_dir, _holder(fd)) from None
        except OSError as e:
            _unlocked(out_dir, e.strerror or str(e), notice)
        else:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> int | None:
    """The pid the holder wrote into the lock file (None if it has not written it yet)."""
    try:
        return int(os.pread(fd, 32, 0).decode("ascii").strip())
    except (OSError, ValueError):
        return None


def _unlocked(out_dir: Path, why: str, notice: Callable[[str], None] | None) -> None:
    if notice is not None:
        notice(f"note: {out_dir}: cannot lock the folder ({why}); make sure no other sweep "
               "runs into it at the same time")
