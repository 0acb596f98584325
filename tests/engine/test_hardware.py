"""Model/GPU specs, presets and KV capacity, checked against hand-computed numbers."""

from __future__ import annotations

import pytest

from servesim.core.errors import ConfigError
from servesim.engine import hardware
from servesim.engine.hardware import (
    GPU_PRESETS,
    MODEL_PRESETS,
    GPUSpec,
    ModelSpec,
    gpu_preset,
    kv_capacity_blocks,
    model_preset,
)

LLAMA_2_7B = MODEL_PRESETS["llama-2-7b"]
A100 = GPU_PRESETS["a100-80gb"]


def test_public_surface() -> None:
    assert set(hardware.__all__) == {
        "GPU_PRESETS", "MODEL_PRESETS", "GPUSpec", "ModelSpec", "gpu_preset",
        "kv_capacity_blocks", "model_preset",
    }


@pytest.mark.parametrize(("name", "kv_bytes"), [
    ("llama-2-7b", 2 * 32 * 32 * 128 * 2),    # 524,288: MHA, 32 KV heads
    ("llama-3-8b", 2 * 32 * 8 * 128 * 2),     # 131,072: GQA, 8 KV heads
    ("codellama-34b", 2 * 48 * 8 * 128 * 2),  # 196,608
    ("llama-2-70b", 2 * 80 * 8 * 128 * 2),    # 327,680
])
def test_kv_bytes_per_token(name: str, kv_bytes: int) -> None:
    assert MODEL_PRESETS[name].kv_bytes_per_token == kv_bytes


def test_weights_bytes_fp16() -> None:
    assert LLAMA_2_7B.weights_bytes == 13.48e9
    assert MODEL_PRESETS["llama-2-70b"].weights_bytes == 138e9


def test_preset_names_match_keys() -> None:
    assert all(spec.name == name for name, spec in MODEL_PRESETS.items())
    assert all(spec.name == name for name, spec in GPU_PRESETS.items())
    assert GPU_PRESETS["h100-80gb"].peak_flops == 989e12
    assert A100.memory_bytes == 80e9  # decimal bytes, stated in the module docstring


def test_kv_capacity_llama_2_7b_a100_by_hand() -> None:
    # 80e9 B x 0.9 = 72e9 B; minus 13.48e9 B of weights = 58.52e9 B free.
    # One 16-token block = 16 x 524,288 B = 8,388,608 B; 58.52e9 / 8,388,608 = 6976.09 -> 6976.
    assert kv_capacity_blocks(LLAMA_2_7B, A100, 16) == 6976
    # Utilisation 0.5: (40e9 - 13.48e9) / 8,388,608 = 3161.47 -> 3161.
    assert kv_capacity_blocks(LLAMA_2_7B, A100, 16, gpu_memory_utilization=0.5) == 3161
    # Block 32 halves the count: 58.52e9 / 16,777,216 = 3488.05 -> 3488.
    assert kv_capacity_blocks(LLAMA_2_7B, A100, 32) == 3488


def test_kv_capacity_needs_two_gpus_for_70b() -> None:
    llama_70b = MODEL_PRESETS["llama-2-70b"]
    with pytest.raises(ConfigError) as info:
        kv_capacity_blocks(llama_70b, A100, 16)
    assert info.value.field == "engine.kv.gpu_memory_utilization"
    assert "1.38e+11 weights" in str(info.value) and "7.2e+10 bytes" in str(info.value)
    # 2 x 80e9 x 0.9 = 144e9; minus 138e9 = 6e9; / (16 x 327,680 = 5,242,880) = 1144.4 -> 1144.
    assert kv_capacity_blocks(llama_70b, A100, 16, num_gpus=2) == 1144


def test_kv_capacity_field_name_and_bad_arguments() -> None:
    with pytest.raises(ConfigError) as info:
        kv_capacity_blocks(LLAMA_2_7B, A100, 16, gpu_memory_utilization=0.1, field="e0.util")
    assert info.value.field == "e0.util"
    with pytest.raises(ConfigError, match="gpu_memory_utilization"):
        kv_capacity_blocks(LLAMA_2_7B, A100, 16, gpu_memory_utilization=1.5)
    with pytest.raises(ConfigError, match="block_tokens"):
        kv_capacity_blocks(LLAMA_2_7B, A100, 0)


@pytest.mark.parametrize(("typo", "suggestion"), [
    ("llama2-7b", "llama-2-7b"), ("llama-3-8B", "llama-3-8b"), ("codellama-34", "codellama-34b"),
])
def test_model_typo_suggests(typo: str, suggestion: str) -> None:
    with pytest.raises(ConfigError) as info:
        model_preset(typo, "engine.cost.model")
    assert info.value.field == "engine.cost.model"
    assert info.value.suggestion == suggestion
    assert f"did you mean {suggestion!r}" in str(info.value)


def test_gpu_typo_suggests() -> None:
    with pytest.raises(ConfigError) as info:
        gpu_preset("h100-80g", "engine.cost.gpu")
    assert info.value.suggestion == "h100-80gb"
    assert gpu_preset("a100-80gb", "f") is A100


def test_custom_model_table() -> None:
    spec = model_preset({"name": "tiny", "params": 1e9, "layers": 16, "hidden_size": 2048,
                         "kv_heads": 4, "head_dim": 64}, "engine.cost.model")
    assert spec == ModelSpec("tiny", 1e9, 16, 2048, 4, 64, 2)
    assert spec.kv_bytes_per_token == 2 * 16 * 4 * 64 * 2


def test_custom_model_from_preset_with_override() -> None:
    fp8 = model_preset({"preset": "llama-3-8b", "bytes_per_value": 1}, "m")
    assert fp8.kv_bytes_per_token == MODEL_PRESETS["llama-3-8b"].kv_bytes_per_token / 2
    assert fp8.layers == 32 and fp8.name == "llama-3-8b"


@pytest.mark.parametrize(("table", "field"), [
    ({"params": 1e9, "layers": 16, "hidden_size": 2048, "kv_heads": 4}, "m.head_dim"),
    ({"params": 1e9, "layers": 16.5, "hidden_size": 2048, "kv_heads": 4, "head_dim": 64},
     "m.layers"),
    ({"params": -1, "layers": 16, "hidden_size": 2048, "kv_heads": 4, "head_dim": 64}, "m.params"),
    ({"params": 1e9, "layers": 16, "hiden_size": 2048}, "m.hiden_size"),
    ({"preset": "llama-2-7"}, "m.preset"),
])
def test_bad_model_table_names_field(table: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        model_preset(table, "m")
    assert info.value.field == field


def test_unknown_model_key_suggests() -> None:
    with pytest.raises(ConfigError) as info:
        model_preset({"params": 1e9, "kv_head": 4}, "m")
    assert info.value.suggestion == "kv_heads"


def test_custom_gpu_table() -> None:
    gpu = gpu_preset({"name": "l4", "peak_flops": 121e12, "hbm_bytes_per_s": 300e9,
                      "memory_bytes": 24e9}, "g")
    assert gpu == GPUSpec("l4", 121e12, 300e9, 24e9)
    slow = gpu_preset({"preset": "a100-80gb", "hbm_bytes_per_s": 1.555e12}, "g")
    assert slow.peak_flops == A100.peak_flops and slow.hbm_bytes_per_s == 1.555e12
    with pytest.raises(ConfigError) as info:
        gpu_preset({"peak_flops": 1e12, "hbm_bytes_per_s": 1e12}, "g")
    assert info.value.field == "g.memory_bytes"


def test_direct_construction_validates() -> None:
    with pytest.raises(ConfigError, match="ModelSpec.kv_heads"):
        ModelSpec("x", 1e9, 16, 2048, 0, 64)
    with pytest.raises(ConfigError, match="GPUSpec.memory_bytes"):
        GPUSpec("x", 1e12, 1e12, 0)
