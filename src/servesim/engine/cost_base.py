"""What every cost model shares: the protocol the engine calls, the argument types, and the
checks of a model's parameters and of its one-token batch time. ``servesim.engine.cost`` holds
the models and re-exports these names.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, TypeAlias, runtime_checkable

import numpy as np
import numpy.typing as npt

from servesim.core.errors import ConfigError

__all__ = ["MAX_ITERATION_S", "MAX_TIME_MS", "MIN_ITERATION_S", "Count", "CostModel", "Seconds"]

Count: TypeAlias = "int | np.integer[Any] | npt.NDArray[np.integer[Any]]"
Seconds: TypeAlias = "float | npt.NDArray[np.float64]"


@runtime_checkable
class CostModel(Protocol):
    """What the engine needs from a cost model."""

    @property
    def uses_context(self) -> bool:
        """True iff the time depends on ``context_tokens``."""
        ...

    def iteration_s(self, prefill_tokens: Count, decode_tokens: Count,
                    context_tokens: Count) -> Seconds:
        """Return the iteration's duration in seconds (element-wise on arrays)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Return the kind and parameters, JSON-able, for the run summary."""
        ...


def _positive_part(x: Any) -> Any:
    """max(0, x), with np.maximum only for arrays so the scalar path stays plain Python."""
    if isinstance(x, np.ndarray):
        return np.maximum(x, 0)
    return x if x > 0 else 0


def _maximum(x: Any, y: Any) -> Any:
    """max(x, y), with np.maximum only for arrays so the scalar path stays plain Python."""
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return np.maximum(x, y)
    return x if x >= y else y


def _check_time(owner: object, name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ConfigError(f"{type(owner).__name__}.{name}", value, "a finite time >= 0 s")


def _check_block(owner: object, name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{type(owner).__name__}.{name}", value, "an integer >= 0")


# A one-token batch must take between these times: below a microsecond an iteration vanishes
# against a clock of MAX_TIME_S in float64 (the engine would spin, latencies read 0); above a day
# it is a unit mistake (seconds given as milliseconds many times over).
MIN_ITERATION_S = 1e-6
MAX_ITERATION_S = 86400.0
# The most a per-batch or per-token time field may hold, milliseconds.
MAX_TIME_MS = MAX_ITERATION_S * 1000


def _check_not_free(model: CostModel) -> None:
    """Raise ConfigError unless a one-token batch takes between MIN_ITERATION_S and
    MAX_ITERATION_S (a free one would make the engine spin)."""
    one_prefill = model.iteration_s(1, 0, 0)
    one_decode = model.iteration_s(0, 1, 1)  # a decoder attends to at least its prompt
    if not all(MIN_ITERATION_S <= t <= MAX_ITERATION_S for t in (one_prefill, one_decode)):
        raise ConfigError(
            type(model).__name__, model.describe(),
            f"parameters that give a one-token batch a time between {MIN_ITERATION_S:g} s and "
            f"{MAX_ITERATION_S:g} s; got {one_prefill:g} s for one prefill token and "
            f"{one_decode:g} s for one decode token",
        )


def _ms(seconds: float) -> float:
    return seconds * 1000.0
