"""Bad engine settings: one line naming the field, the value, what was expected."""

import pytest

from servesim.core.errors import ConfigError
from servesim.engine.config import EngineConfig, KVConfig
from servesim.engine.replica import run_engine
from servesim.policies.batching import make_policy


@pytest.mark.parametrize("kwargs, field", [
    (dict(batching="sarathy"), "engine.batching"),
    (dict(token_budget=0), "engine.token_budget"),
    (dict(max_batch_size=0), "engine.max_batch_size"),
    (dict(chunk_tokens=0), "engine.chunk_tokens"),
    (dict(max_model_len=1), "engine.max_model_len"),
])
def test_engine_fields(kwargs, field):
    with pytest.raises(ConfigError) as err:
        EngineConfig(**kwargs)
    assert str(err.value).startswith(field + ":")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs, field", [
    (dict(block_tokens=0), "engine.kv.block_tokens"),
    (dict(blocks=0), "engine.kv.blocks"),
    (dict(watermark=1.0), "engine.kv.watermark"),
    (dict(preemption="swapp"), "engine.kv.preemption"),
    (dict(victim="oldest"), "engine.kv.victim"),
    (dict(host_blocks=-1), "engine.kv.host_blocks"),
    (dict(swap_bytes_per_s=0), "engine.kv.swap_bytes_per_s"),
])
def test_kv_fields(kwargs, field):
    with pytest.raises(ConfigError) as err:
        KVConfig(**kwargs)
    assert str(err.value).startswith(field + ":")


def test_suggestions():
    with pytest.raises(ConfigError, match="did you mean 'sarathi'"):
        EngineConfig(batching="sarathy")
    with pytest.raises(ConfigError, match="did you mean 'swap'"):
        KVConfig(preemption="swapp")
    with pytest.raises(ConfigError, match="did you mean 'orca'"):
        make_policy("orka")


def test_impossible_capacity():
    # 10 blocks of 16 tokens cannot hold one request of 1000 tokens.
    with pytest.raises(ConfigError, match=r"engine.kv.blocks: got 10 \(160 tokens\), expected "
                       r"enough for one request \(at least 63 blocks for a request of "
                       "max_model_len = 1000 tokens"):
        EngineConfig(max_model_len=1000, kv=KVConfig(blocks=10))


def test_unknown_stepper():
    from servesim.engine.cost import Staircase
    from servesim.workload.requests import Requests
    with pytest.raises(ConfigError, match="did you mean 'fast'"):
        run_engine(Requests.from_lists([0], [1], [1]), EngineConfig(), Staircase(),
                   stepper="fastt")
