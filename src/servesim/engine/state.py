"""Request lifecycle and the result of one engine run, shared by both steppers."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import pandas as pd

from servesim.core.errors import SimulationError


class Status(IntEnum):
    """Where a request is. The table ``ALLOWED`` lists every legal transition."""

    PENDING = 0   # not arrived yet
    WAITING = 1   # arrived; needs (re-)admission and a prefill from zero
    RUNNING = 2   # admitted: prefilling or decoding, holds KV blocks
    SWAPPED = 3   # preempted by swap; its KV sits in host memory
    FINISHED = 4
    REJECTED = 5  # longer than the engine can ever hold


ALLOWED: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.WAITING, Status.REJECTED}),
    Status.WAITING: frozenset({Status.RUNNING}),
    Status.RUNNING: frozenset({Status.WAITING, Status.SWAPPED, Status.FINISHED}),
    Status.SWAPPED: frozenset({Status.RUNNING}),
    Status.FINISHED: frozenset(),
    Status.REJECTED: frozenset(),
}

STATUS_NAMES = {s: s.name.lower() for s in Status}


def check_transition(old: Status, new: Status) -> None:
    """Raises SimulationError if ``old -> new`` is not in ``ALLOWED``."""
    if new not in ALLOWED[old]:
        raise SimulationError(f"illegal request transition {old.name} -> {new.name}")


REQUEST_COLUMNS = (
    "id", "class", "arrival_s", "prompt_tokens", "output_tokens", "status", "admitted_s",
    "first_token_s", "finish_s", "generated_tokens", "preemptions", "recomputed_tokens",
    "swapped_bytes", "max_token_gap_s",
)

ITERATION_COLUMNS = (
    "start_s", "duration_s", "prefill_tokens", "decode_tokens", "batch_size", "kv_blocks_used",
    "waiting", "running", "backlog_tokens", "demand_tokens",
)


@dataclass
class EngineRun:
    """What one replica did.

    Attributes:
        requests: one row per request (columns ``REQUEST_COLUMNS``).
        iterations: one row per iteration (columns ``ITERATION_COLUMNS``).
        end_s: the simulated clock when the run stopped, seconds.
        stopped_early: True if some request neither finished nor was rejected.
        batches: per iteration, the (request id, "p" or "d", tokens) triples; only when asked.
        stop_reason: "drained" (every request finished or was rejected), "time" (the stop time
            was reached), "max_in_system" (the cap on requests in the system was exceeded,
            the mark of an overloaded run) or "interrupted" (SIGINT, SIGTERM or Ctrl-C;
            ``stop.py``). ``requests`` then holds the requests that had arrived.
    """

    requests: pd.DataFrame
    iterations: pd.DataFrame
    end_s: float
    stopped_early: bool
    batches: list | None = None
    stop_reason: str = "drained"


def iteration_frame(cols: dict[str, list | np.ndarray]) -> pd.DataFrame:
    """Build the iteration table with fixed dtypes, whatever the stepper collected."""
    dtypes = {c: np.int64 for c in ITERATION_COLUMNS}
    dtypes["start_s"] = dtypes["duration_s"] = np.float64
    return pd.DataFrame({c: np.asarray(cols[c], dtype=dtypes[c]) for c in ITERATION_COLUMNS})
