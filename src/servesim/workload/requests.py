"""The frozen request specs a workload produces: one struct of arrays, one row per request."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Requests:
    """What was asked for, never overwritten by the simulation.

    Attributes:
        arrival_s: arrival times in seconds, non-decreasing, float64.
        prompt_tokens: prompt (prefill) length in tokens, int64, each >= 1.
        output_tokens: output (decode) length in tokens, int64, each >= 1.
        class_id: index into ``class_names``, int32.
        class_names: the names of the request classes.
    """

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    class_id: np.ndarray
    class_names: tuple[str, ...] = field(default=("default",))

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        for name in ("prompt_tokens", "output_tokens", "class_id"):
            if len(getattr(self, name)) != n:
                got = len(getattr(self, name))
                raise ValueError(f"Requests.{name} has length {got}, expected {n}")
        if n and np.any(np.diff(self.arrival_s) < 0):
            raise ValueError("Requests.arrival_s must be non-decreasing")

    def __len__(self) -> int:
        return len(self.arrival_s)

    @classmethod
    def from_lists(cls, arrival_s, prompt_tokens, output_tokens, class_id=None,
                   class_names: tuple[str, ...] = ("default",)) -> Requests:
        """Build from plain sequences; handy in tests and notebooks."""
        n = len(arrival_s)
        return cls(
            arrival_s=np.asarray(arrival_s, dtype=np.float64),
            prompt_tokens=np.asarray(prompt_tokens, dtype=np.int64),
            output_tokens=np.asarray(output_tokens, dtype=np.int64),
            class_id=np.zeros(n, np.int32) if class_id is None else np.asarray(class_id, np.int32),
            class_names=class_names,
        )
