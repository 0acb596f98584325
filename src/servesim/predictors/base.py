"""What every output-length predictor shares: its spec, its own RNG stream and its cost."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from servesim.core.errors import ConfigError
from servesim.core.fields import check_keys, number, require, table
from servesim.core.rng import Streams

STREAM = "predictor"


@dataclass(frozen=True)
class PredictionCost:
    """The price of one prediction.

    ``kind == "external"``: ``amount`` is added to a cost account per prediction and never delays
    the server. ``kind == "server_time"``: ``amount`` seconds of server time per prediction.
    """

    kind: str
    amount: float

    def describe(self) -> dict[str, Any]:
        key = "value" if self.kind == "external" else "seconds"
        return {"kind": self.kind, key: self.amount}


def parse_cost(spec: Any, field: str) -> PredictionCost | None:
    """Build a PredictionCost from ``{kind = "external", value = c}`` or ``{kind = "server_time",
    seconds = c}``; None stays None.

    Raises ConfigError naming the field if the kind or amount is invalid.
    """
    if spec is None:
        return None
    spec = table(spec, field)
    kinds = {"external": "value", "server_time": "seconds"}
    kind = require(spec, "kind", field)
    if kind not in kinds:
        raise ConfigError(f"{field}.kind", kind, "one of external, server_time",
                          choices=sorted(kinds))
    check_keys(spec, field, ["kind", kinds[kind]])
    key = kinds[kind]
    return PredictionCost(kind, number(require(spec, key, field), f"{field}.{key}", low=0))


def as_rng(rng: np.random.Generator | None, seed: int = 0) -> np.random.Generator:
    """Return ``rng``, or the named predictor stream of ``seed`` if none is given."""
    return rng if rng is not None else Streams(seed).get(STREAM)


def params(spec: Mapping[str, Any], field: str, required: Sequence[str],
           optional: Sequence[str] = ()) -> dict[str, Any]:
    """Check ``spec`` holds ``kind``, ``cost`` and only the named keys; return the required ones."""
    check_keys(spec, field, ["kind", "cost", *required, *optional])
    return {key: require(spec, key, field) for key in required}


def sizes_array(true_sizes: Any) -> np.ndarray:
    """Return the true sizes as a float64 array (tokens or seconds: predictors are unit-blind)."""
    return np.asarray(true_sizes, dtype=np.float64)


def edges_array(value: Any, field: str, *, min_bins: int = 1) -> np.ndarray:
    """Return bin edges as a strictly increasing float array of at least ``min_bins`` + 1 values.

    Raises ConfigError naming ``field`` otherwise.
    """
    if not isinstance(value, list | tuple | np.ndarray) or len(value) < min_bins + 1:
        raise ConfigError(field, value, f"a list of at least {min_bins + 1} increasing edges")
    for v in value:
        number(v, field, low=0)
    arr = np.asarray(value, dtype=np.float64)
    if np.any(np.diff(arr) <= 0):
        raise ConfigError(field, list(value), "strictly increasing edges")
    return arr


def bin_of(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each x: bin j holds edges[j] <= x < edges[j+1]; the ends absorb the rest."""
    k = len(edges) - 1
    return np.clip(np.searchsorted(edges, x, side="right") - 1, 0, k - 1)


class Predictor:
    """Base class: a spec (echoed by ``describe``), an RNG stream and an optional cost.

    Subclasses implement ``_draw(x, prompt, rng)``; ``predict`` is the public, vectorised entry.
    """

    kind = "base"

    def __init__(self, spec: Mapping[str, Any], rng: np.random.Generator | None = None,
                 cost: PredictionCost | None = None) -> None:
        self.spec = dict(spec)
        self.rng = as_rng(rng)
        self.cost = cost

    def predict(self, true_sizes: Any, prompt_sizes: Any = None,
                rng: np.random.Generator | None = None) -> np.ndarray:
        """Return one prediction per job, float64; ``rng`` overrides the predictor's own stream."""
        x = sizes_array(true_sizes)
        prompt = None if prompt_sizes is None else np.asarray(prompt_sizes, dtype=np.float64)
        if prompt is not None and prompt.shape != x.shape:
            raise ConfigError("predict.prompt_sizes", f"shape {prompt.shape}",
                              f"the shape of true_sizes, {x.shape}")
        return self._draw(x, prompt, self.rng if rng is None else rng)

    def _draw(self, x: np.ndarray, prompt: np.ndarray | None,
              rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return dict(self.spec)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"
