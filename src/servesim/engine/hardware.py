"""Model and GPU specs: the numbers a roofline cost model and a KV-capacity estimate need.

Presets are public architecture and datasheet numbers. Memory sizes are in decimal bytes
(80 GB = 80e9 bytes), which is below the 80 GiB (85.9e9 bytes) an "80GB" card physically has; the
difference roughly covers the CUDA context and the allocator reserve, so capacities come out on the
safe side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from servesim.core.errors import ConfigError
from servesim.core.fields import check_keys, integer, number
from servesim.core.registry import lookup

__all__ = [
    "GPU_PRESETS",
    "MODEL_PRESETS",
    "GPUSpec",
    "ModelSpec",
    "gpu_preset",
    "kv_capacity_blocks",
    "model_preset",
]


def _check_positive(owner: str, name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{owner}.{name}", value, "a positive number")


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer, as far as serving cost is concerned.

    Attributes:
        name: a label for summaries.
        params: number of parameters.
        layers: number of transformer layers.
        hidden_size: model width (= query heads x head dim for every preset here).
        kv_heads: key/value heads per layer (fewer than query heads under GQA).
        head_dim: dimension of one attention head.
        bytes_per_value: bytes per weight and per KV value (2 for fp16/bf16).

    Raises ConfigError if a size is not positive or a count is not an integer.
    """

    name: str
    params: float
    layers: int
    hidden_size: int
    kv_heads: int
    head_dim: int
    bytes_per_value: float = 2

    def __post_init__(self) -> None:
        _check_positive("ModelSpec", "params", self.params)
        _check_positive("ModelSpec", "bytes_per_value", self.bytes_per_value)
        for name in ("layers", "hidden_size", "kv_heads", "head_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ModelSpec.{name}", value, "an integer >= 1")

    @property
    def weights_bytes(self) -> float:
        """Bytes of the weights: params x bytes_per_value."""
        return self.params * self.bytes_per_value

    @property
    def kv_bytes_per_token(self) -> float:
        """KV bytes one token occupies: 2 (K and V) x layers x kv_heads x head_dim x bytes."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.bytes_per_value


@dataclass(frozen=True)
class GPUSpec:
    """One accelerator.

    Attributes:
        name: a label for summaries.
        peak_flops: dense fp16/bf16 tensor-core peak, FLOP/s (no sparsity).
        hbm_bytes_per_s: HBM bandwidth from the datasheet, bytes/s.
        memory_bytes: device memory, bytes.

    Raises ConfigError if a number is not positive.
    """

    name: str
    peak_flops: float
    hbm_bytes_per_s: float
    memory_bytes: float

    def __post_init__(self) -> None:
        for name in ("peak_flops", "hbm_bytes_per_s", "memory_bytes"):
            _check_positive("GPUSpec", name, getattr(self, name))


MODEL_PRESETS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("llama-2-7b", 6.74e9, layers=32, hidden_size=4096, kv_heads=32, head_dim=128),
        ModelSpec("llama-3-8b", 8.03e9, layers=32, hidden_size=4096, kv_heads=8, head_dim=128),
        ModelSpec("codellama-34b", 33.7e9, layers=48, hidden_size=8192, kv_heads=8, head_dim=128),
        ModelSpec("llama-2-70b", 69e9, layers=80, hidden_size=8192, kv_heads=8, head_dim=128),
    )
}

GPU_PRESETS: dict[str, GPUSpec] = {
    spec.name: spec
    for spec in (
        # A100 SXM 80GB: 312 TFLOP/s dense fp16/bf16, 2,039 GB/s HBM2e.
        GPUSpec("a100-80gb", peak_flops=312e12, hbm_bytes_per_s=2.039e12, memory_bytes=80e9),
        # H100 SXM 80GB: 989 TFLOP/s dense bf16, 3.35 TB/s HBM3.
        GPUSpec("h100-80gb", peak_flops=989e12, hbm_bytes_per_s=3.35e12, memory_bytes=80e9),
    )
}

_MODEL_NUMBERS = ("params", "bytes_per_value")
_MODEL_INTEGERS = ("layers", "hidden_size", "kv_heads", "head_dim")
_GPU_NUMBERS = ("peak_flops", "hbm_bytes_per_s", "memory_bytes")


def model_preset(spec: str | Mapping[str, Any], field: str) -> ModelSpec:
    """Return a model by preset name, or from a custom table.

    A table gives every field of ``ModelSpec`` (``name`` and ``bytes_per_value`` optional), or names
    a ``preset`` and overrides some of its fields, e.g. ``{ preset = "llama-3-8b",
    bytes_per_value = 1 }`` for an fp8 variant.

    Raises ConfigError naming ``field`` (and the closest preset name) if the name is unknown, or
    naming the sub-field if the table is invalid.
    """
    if not isinstance(spec, Mapping):
        return lookup(MODEL_PRESETS, spec, field)
    check_keys(spec, field, ("preset", "name", *_MODEL_NUMBERS, *_MODEL_INTEGERS))
    values: dict[str, Any] = {"name": "custom", "bytes_per_value": 2}
    if "preset" in spec:
        values = asdict(lookup(MODEL_PRESETS, spec["preset"], f"{field}.preset"))
    for key in _MODEL_NUMBERS:
        if key in spec:
            values[key] = number(spec[key], f"{field}.{key}", low=0, low_open=True)
    for key in _MODEL_INTEGERS:
        if key in spec:
            values[key] = integer(spec[key], f"{field}.{key}", low=1)
    if "name" in spec:
        values["name"] = _name(spec["name"], f"{field}.name")
    _require_all(values, field, ("params", *_MODEL_INTEGERS))
    return ModelSpec(**values)


def gpu_preset(spec: str | Mapping[str, Any], field: str) -> GPUSpec:
    """Return a GPU by preset name, or from a custom table (fields as ``model_preset``).

    Raises ConfigError naming ``field`` (and the closest preset name) if the name is unknown, or
    naming the sub-field if the table is invalid.
    """
    if not isinstance(spec, Mapping):
        return lookup(GPU_PRESETS, spec, field)
    check_keys(spec, field, ("preset", "name", *_GPU_NUMBERS))
    values: dict[str, Any] = {"name": "custom"}
    if "preset" in spec:
        values = asdict(lookup(GPU_PRESETS, spec["preset"], f"{field}.preset"))
    for key in _GPU_NUMBERS:
        if key in spec:
            values[key] = number(spec[key], f"{field}.{key}", low=0, low_open=True)
    if "name" in spec:
        values["name"] = _name(spec["name"], f"{field}.name")
    _require_all(values, field, _GPU_NUMBERS)
    return GPUSpec(**values)


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(field, value, "a non-empty string")
    return value


def _require_all(values: Mapping[str, Any], field: str, keys: tuple[str, ...]) -> None:
    for key in keys:
        if key not in values:
            raise ConfigError(f"{field}.{key}", None,
                              "a value (required unless the table names a preset)")


def kv_capacity_blocks(
    model: ModelSpec,
    gpu: GPUSpec,
    block_tokens: int,
    gpu_memory_utilization: float = 0.9,
    num_gpus: int = 1,
    *,
    field: str = "engine.kv.gpu_memory_utilization",
) -> int:
    """Return how many KV blocks fit beside the weights, vLLM-style.

    ``floor((num_gpus x memory_bytes x gpu_memory_utilization - weights_bytes) /
    (kv_bytes_per_token x block_tokens))``. Weights are assumed sharded across the GPUs
    (tensor parallelism), and activations and the CUDA graph pool are not subtracted: the
    utilisation below 1 leaves room for them.

    Raises ConfigError naming ``field`` if the weights leave no room for a single block, saying
    how many bytes are needed and how many are available; ConfigError on a bad argument.
    """
    block_tokens = integer(block_tokens, "engine.kv.block_tokens", low=1)
    num_gpus = integer(num_gpus, "engine.num_gpus", low=1)
    util = number(gpu_memory_utilization, field, low=0, low_open=True, high=1)
    available = num_gpus * gpu.memory_bytes * util
    block_bytes = model.kv_bytes_per_token * block_tokens
    needed = model.weights_bytes + block_bytes
    if available < needed:
        raise ConfigError(
            field, gpu_memory_utilization,
            f"room for the weights plus one KV block: {model.name} needs "
            f"{needed:.4g} bytes ({model.weights_bytes:.4g} weights + {block_bytes:.4g} per "
            f"block) but {num_gpus} x {gpu.name} x {util:g} gives {available:.4g} bytes",
        )
    return int((available - model.weights_bytes) // block_bytes)
