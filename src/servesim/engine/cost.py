"""Cost models: the duration in seconds of one engine iteration, from the batch's contents.

Every model prices an iteration from three aggregates:

- ``prefill_tokens``: prefill (chunk) tokens in the batch;
- ``decode_tokens``: decoding requests in the batch, one token each;
- ``context_tokens``: the sum, over the decoding requests, of the KV tokens each attends to that
  were cached before this iteration.

``iteration_s`` is called in the simulator's hot loop with Python ints, so it is plain Python
arithmetic. The same expression also works element-wise on numpy int64 arrays (broadcasting) and
then returns float64 arrays, which the engine uses to price a long decode-only stretch at once.
Scalar and array results agree exactly because both do the same IEEE double operations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servesim.core.errors import ConfigError
from servesim.core.fields import check_keys, integer, number, require, table
from servesim.core.registry import lookup
from servesim.engine.cost_base import (
    MAX_TIME_MS,
    CostModel,
    Count,
    Seconds,
    _check_block,
    _check_not_free,
    _check_time,
    _maximum,
    _ms,
    _positive_part,
)
from servesim.engine.cost_fit import PROFILE_COLUMNS, Fitted, fit_profile, fit_rows
from servesim.engine.hardware import (
    GPU_PRESETS,
    MODEL_PRESETS,
    GPUSpec,
    ModelSpec,
    gpu_preset,
)
from servesim.engine.hardware import model_preset as _model_preset

__all__ = [
    "COST_MODELS",
    "PROFILE_COLUMNS",
    "Affine",
    "Constant",
    "CostModel",
    "Fitted",
    "PiecewiseLinear",
    "Roofline",
    "Staircase",
    "batch_time_s",
    "fit_profile",
    "fit_rows",
    "make_cost_model",
]

# Defaults: the paper's fit for CodeLlama-34B on one A100-80GB.
STAIRCASE_C_MS = 11.28
STAIRCASE_A_MS = 35.47
STAIRCASE_B0 = 128


@dataclass(frozen=True, slots=True)
class Staircase:
    """t = c + a * ceil(b / b0), with b = prefill + decode tokens.

    Raises ConfigError if a time is negative, b0 < 1, or a one-token batch would take no time.
    """

    c_s: float = STAIRCASE_C_MS / 1000
    a_s: float = STAIRCASE_A_MS / 1000
    b0: int = STAIRCASE_B0
    uses_context: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        _check_time(self, "c_s", self.c_s)
        _check_time(self, "a_s", self.a_s)
        if isinstance(self.b0, bool) or not isinstance(self.b0, int) or self.b0 < 1:
            raise ConfigError("Staircase.b0", self.b0, "an integer >= 1")
        _check_not_free(self)

    def iteration_s(self, prefill_tokens: Count, decode_tokens: Count,
                    context_tokens: Count) -> Seconds:
        """Return c + a * ceil((prefill + decode) / b0) seconds."""
        # 0 * context_tokens costs nothing on ints and broadcasts the result to its shape on arrays.
        return (self.c_s + self.a_s * -(-(prefill_tokens + decode_tokens) // self.b0)
                + 0 * context_tokens)

    def describe(self) -> dict[str, Any]:
        """Return the config table that rebuilds this model."""
        return {"kind": "staircase", "c_ms": _ms(self.c_s), "a_ms": _ms(self.a_s), "b0": self.b0}


@dataclass(frozen=True, slots=True)
class PiecewiseLinear:
    """t = c + a * max(0, b - b0), with b = prefill + decode tokens and a per token.

    Raises ConfigError if a time is negative, b0 < 0, or a one-token batch would take no time.
    """

    c_s: float
    a_s: float
    b0: int
    uses_context: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        _check_time(self, "c_s", self.c_s)
        _check_time(self, "a_s", self.a_s)
        _check_block(self, "b0", self.b0)
        _check_not_free(self)

    def iteration_s(self, prefill_tokens: Count, decode_tokens: Count,
                    context_tokens: Count) -> Seconds:
        """Return c + a * max(0, prefill + decode - b0) seconds."""
        return (self.c_s + self.a_s * _positive_part(prefill_tokens + decode_tokens - self.b0)
                + 0 * context_tokens)

    def describe(self) -> dict[str, Any]:
        """Return the config table that rebuilds this model."""
        return {"kind": "piecewise", "c_ms": _ms(self.c_s), "a_ms": _ms(self.a_s), "b0": self.b0}


@dataclass(frozen=True, slots=True)
class Affine:
    """t = d0 + d1 * (prefill + context) + decode_s * decode (the WAIT paper's model, decode_s=0).

    Raises ConfigError if a time is negative or a one-token batch would take no time.
    """

    d0_s: float
    d1_s: float
    decode_s: float = 0.0
    uses_context: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        _check_time(self, "d0_s", self.d0_s)
        _check_time(self, "d1_s", self.d1_s)
        _check_time(self, "decode_s", self.decode_s)
        object.__setattr__(self, "uses_context", self.d1_s > 0)
        _check_not_free(self)

    def iteration_s(self, prefill_tokens: Count, decode_tokens: Count,
                    context_tokens: Count) -> Seconds:
        """Return d0 + d1 * (prefill + context) + decode_s * decode seconds."""
        return (self.d0_s + self.d1_s * (prefill_tokens + context_tokens)
                + self.decode_s * decode_tokens)

    def describe(self) -> dict[str, Any]:
        """Return the config table that rebuilds this model."""
        return {"kind": "affine", "d0_ms": _ms(self.d0_s), "d1_ms": _ms(self.d1_s),
                "decode_ms": _ms(self.decode_s)}


@dataclass(frozen=True, slots=True)
class Constant:
    """t = time_s for every iteration, whatever the batch holds (a fixed-step engine).

    Raises ConfigError unless MIN_ITERATION_S <= time_s <= MAX_ITERATION_S.
    """

    time_s: float
    uses_context: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        _check_time(self, "time_s", self.time_s)
        _check_not_free(self)

    def iteration_s(self, prefill_tokens: Count, decode_tokens: Count,
                    context_tokens: Count) -> Seconds:
        """Return time_s seconds (an array of that shape for array arguments)."""
        # 0 * (...) costs nothing on ints and broadcasts the result to its shape on arrays.
        return self.time_s + 0 * (prefill_tokens + decode_tokens + context_tokens)

    def describe(self) -> dict[str, Any]:
        """Return the config table that rebuilds this model."""
        return {"kind": "constant", "iteration_ms": _ms(self.time_s)}


# Roofline defaults, see the Roofline docstring.
ROOFLINE_MFU = 0.5
ROOFLINE_BANDWIDTH_EFFICIENCY = 0.8
ROOFLINE_OVERHEAD_MS = 1.0


@dataclass(frozen=True, slots=True)
class Roofline:
    """t = overhead + max(compute, memory), from a model and a GPU.

    - compute = FLOPs / (num_gpus * peak * mfu), FLOPs = 2 * params * (prefill + decode)
      + 4 * layers * hidden * context (QK^T and AV of each decoder over its cached tokens).
    - memory = (weights + kv_bytes_per_token * (context + prefill + decode))
      / (num_gpus * HBM bandwidth * bandwidth_efficiency): the weights are read once, cached KV is
      read by the decoders, and the new tokens' KV is written.

    Approximations: ``context_tokens`` covers decoders only, so a prefill chunk's attention (over
    itself, quadratic in its length, and over earlier chunks of the same prompt) is left out; this
    underestimates long prompts (at 4k tokens attention adds about 15% to a 7B model's prefill
    FLOPs). Compute and memory overlap perfectly; activations' traffic, tensor-parallel
    communication and sampling are left out except through ``overhead_s``.

    Defaults: ``mfu`` 0.5 is what well-tuned fp16 GEMMs of a few hundred tokens or more reach on
    A100/H100 in serving prefills; ``bandwidth_efficiency`` 0.8 is the share of datasheet HBM
    bandwidth that memory-bound decode kernels sustain (about 1.6 TB/s of 2.0 on A100);
    ``overhead_s`` 1 ms stands for per-iteration scheduling, sampling and kernel launches with CUDA
    graphs. Together they give Llama-2-7B on one A100-80GB about 9.3 ms for a batch-1 decode
    (13.5 GB of weights / 1.63 TB/s + 1 ms) and about 45 ms for a 512-token prefill.

    Raises ConfigError if mfu or bandwidth_efficiency is not in (0, 1], overhead is negative or
    num_gpus < 1.
    """

    model: ModelSpec
    gpu: GPUSpec
    mfu: float = ROOFLINE_MFU
    bandwidth_efficiency: float = ROOFLINE_BANDWIDTH_EFFICIENCY
    overhead_s: float = ROOFLINE_OVERHEAD_MS / 1000
    num_gpus: int = 1
    uses_context: bool = field(default=True, init=False)
    # Per-unit seconds, precomputed so iteration_s is a handful of multiply-adds.
    _compute_per_token: float = field(default=0.0, init=False, repr=False)
    _compute_per_context: float = field(default=0.0, init=False, repr=False)
    _memory_fixed: float = field(default=0.0, init=False, repr=False)
    _memory_per_token: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("mfu", "bandwidth_efficiency"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
                raise ConfigError(f"Roofline.{name}", value, "a number in (0, 1]")
        _check_time(self, "overhead_s", self.overhead_s)
        gpus = self.num_gpus
        if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
            raise ConfigError("Roofline.num_gpus", self.num_gpus, "an integer >= 1")
        flops_per_s = self.num_gpus * self.gpu.peak_flops * self.mfu
        bytes_per_s = self.num_gpus * self.gpu.hbm_bytes_per_s * self.bandwidth_efficiency
        m = self.model
        object.__setattr__(self, "_compute_per_token", 2 * m.params / flops_per_s)
        object.__setattr__(self, "_compute_per_context", 4 * m.layers * m.hidden_size / flops_per_s)
        object.__setattr__(self, "_memory_fixed", m.weights_bytes / bytes_per_s)
        object.__setattr__(self, "_memory_per_token", m.kv_bytes_per_token / bytes_per_s)

    def iteration_s(self, prefill_tokens: Count, decode_tokens: Count,
                    context_tokens: Count) -> Seconds:
        """Return overhead + max(compute, memory) seconds."""
        b = prefill_tokens + decode_tokens
        compute = self._compute_per_token * b + self._compute_per_context * context_tokens
        memory = self._memory_fixed + self._memory_per_token * (b + context_tokens)
        return self.overhead_s + _maximum(compute, memory)

    def describe(self) -> dict[str, Any]:
        """Return the config table that rebuilds this model (presets by name, others in full)."""
        model: Any = self.model.name
        if MODEL_PRESETS.get(self.model.name) != self.model:
            model = _spec_table(self.model)
        gpu: Any = self.gpu.name
        if GPU_PRESETS.get(self.gpu.name) != self.gpu:
            gpu = _spec_table(self.gpu)
        return {"kind": "roofline", "model": model, "gpu": gpu, "mfu": self.mfu,
                "bandwidth_efficiency": self.bandwidth_efficiency,
                "overhead_ms": _ms(self.overhead_s), "num_gpus": self.num_gpus}


def _spec_table(spec: ModelSpec | GPUSpec) -> dict[str, Any]:
    return {name: getattr(spec, name) for name in spec.__dataclass_fields__}


def _time_s(spec: Mapping[str, Any], key: str, field: str, default_ms: float | None) -> float:
    """Return ``spec[key]`` (milliseconds, >= 0) in seconds; required if there is no default."""
    value = require(spec, key, field) if key in spec or default_ms is None else default_ms
    return number(value, f"{field}.{key}", low=0, high=MAX_TIME_MS) / 1000


def _construct(factory: Callable[..., CostModel], spec: Mapping[str, Any], field: str,
               *args: Any, **kwargs: Any) -> CostModel:
    """Build a model, renaming a whole-model error (a free one-token batch) to ``field``."""
    try:
        return factory(*args, **kwargs)
    except ConfigError as e:
        raise ConfigError(field, dict(spec), e.expected) from e


def _staircase(spec: Mapping[str, Any], field: str, base_dir: Path | None) -> CostModel:
    check_keys(spec, field, ("kind", "c_ms", "a_ms", "b0"))
    b0 = integer(spec.get("b0", STAIRCASE_B0), f"{field}.b0", low=1)
    return _construct(Staircase, spec, field, _time_s(spec, "c_ms", field, STAIRCASE_C_MS),
                      _time_s(spec, "a_ms", field, STAIRCASE_A_MS), b0)


def _piecewise(spec: Mapping[str, Any], field: str, base_dir: Path | None) -> CostModel:
    check_keys(spec, field, ("kind", "c_ms", "a_ms", "b0"))
    b0 = integer(require(spec, "b0", field), f"{field}.b0", low=0)
    return _construct(PiecewiseLinear, spec, field, _time_s(spec, "c_ms", field, None),
                      _time_s(spec, "a_ms", field, None), b0)


def _constant(spec: Mapping[str, Any], field: str, base_dir: Path | None) -> CostModel:
    check_keys(spec, field, ("kind", "iteration_ms"))
    return _construct(Constant, spec, field, _time_s(spec, "iteration_ms", field, None))


def _affine(spec: Mapping[str, Any], field: str, base_dir: Path | None) -> CostModel:
    check_keys(spec, field, ("kind", "d0_ms", "d1_ms", "decode_ms"))
    return _construct(Affine, spec, field, _time_s(spec, "d0_ms", field, None),
                      _time_s(spec, "d1_ms", field, None), _time_s(spec, "decode_ms", field, 0.0))


def _roofline(spec: Mapping[str, Any], field: str, base_dir: Path | None) -> CostModel:
    check_keys(spec, field, ("kind", "model", "gpu", "mfu", "bandwidth_efficiency",
                             "overhead_ms", "num_gpus"))
    model = _model_preset(require(spec, "model", field), f"{field}.model")
    gpu = gpu_preset(require(spec, "gpu", field), f"{field}.gpu")
    mfu = number(spec.get("mfu", ROOFLINE_MFU), f"{field}.mfu", low=0, low_open=True, high=1)
    efficiency = number(spec.get("bandwidth_efficiency", ROOFLINE_BANDWIDTH_EFFICIENCY),
                        f"{field}.bandwidth_efficiency", low=0, low_open=True, high=1)
    num_gpus = integer(spec.get("num_gpus", 1), f"{field}.num_gpus", low=1)
    return Roofline(model, gpu, mfu=mfu, bandwidth_efficiency=efficiency,
                    overhead_s=_time_s(spec, "overhead_ms", field, ROOFLINE_OVERHEAD_MS),
                    num_gpus=num_gpus)


def _fitted(spec: Mapping[str, Any], field: str, base_dir: Path | None) -> CostModel:
    check_keys(spec, field, ("kind", "path"))
    path = require(spec, "path", field)
    if not isinstance(path, str | Path) or not str(path):
        raise ConfigError(f"{field}.path", path, "a path to a profile CSV")
    path = Path(path)
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    return fit_profile(path, field=f"{field}.path")


COST_MODELS: dict[str, Callable[[Mapping[str, Any], str, Path | None], CostModel]] = {
    "staircase": _staircase,
    "piecewise": _piecewise,
    "constant": _constant,
    "affine": _affine,
    "roofline": _roofline,
    "fitted": _fitted,
}


def make_cost_model(spec: Mapping[str, Any], field: str = "engine.cost",
                    base_dir: Path | None = None) -> CostModel:
    """Build a cost model from its config table, e.g. ``{ kind = "staircase", c_ms = 11.28 }``.

    Kinds: staircase (c_ms, a_ms, b0; all optional), piecewise (c_ms, a_ms per token, b0),
    constant (iteration_ms), affine (d0_ms, d1_ms, decode_ms = 0), roofline (model, gpu, mfu,
    bandwidth_efficiency, overhead_ms, num_gpus) and fitted (path, relative to ``base_dir``).

    Raises ConfigError naming the full field (e.g. ``engine.cost.a_ms``) and the closest valid
    name for an unknown kind or key, a missing or negative value, or an unusable profile;
    TraceError for a malformed profile row.
    """
    spec = table(spec, field)
    factory = lookup(COST_MODELS, require(spec, "kind", field), f"{field}.kind")
    return factory(spec, field, base_dir)


def batch_time_s(model: CostModel, tokens: int) -> float:
    """Return the time of a batch of ``tokens`` prefill tokens with no context, in seconds."""
    return float(model.iteration_s(tokens, 0, 0))
