"""Frozen engine settings, validated on construction; no I/O."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from servesim.core.errors import ConfigError

BATCHING = ("static", "fastertransformer", "vllm", "orca", "sarathi", "greedy", "wait",
            "nested_wait", "vllm_v1")
# Systems that take the WaitConfig parameters and may split prefills across iterations.
WAIT_SYSTEMS = ("wait", "nested_wait")
VICTIMS = ("newest", "most_blocks", "fewest_blocks")
PREEMPTION = ("recompute", "swap")
# The output convention: "decode" (the paper's: D decode iterations after the prefill) or
# "prefill" (vLLM's: the iteration that completes the prompt samples token 1).
FIRST_TOKEN = ("decode", "prefill")
# Systems whose own engine samples at prefill completion, so "prefill" is their default.
PREFILL_FIRST = ("vllm_v1",)
# Upper bounds of the integer settings: far beyond any real engine, and low enough that every
# count the replica derives from them stays inside int64 (and its per-residue table of
# block_tokens entries stays small). MAX_ENGINE_TOKENS is the longest length a workload draws.
MAX_ENGINE_TOKENS = 10**9
MAX_BLOCK_TOKENS = 1 << 16
MAX_BLOCKS = 1 << 40
MAX_BATCH_SIZE = 1 << 30
# Outside this range a block's transfer time is either below a nanosecond or beyond a day.
MIN_SWAP_BYTES_PER_S = 1e3
MAX_SWAP_BYTES_PER_S = 1e15


@dataclass(frozen=True)
class KVConfig:
    """The paged KV cache of one replica.

    Attributes:
        block_tokens: tokens per KV block.
        blocks: capacity in blocks (GPU memory for KV).
        watermark: fraction of blocks an admission of a waiting request must leave free.
        preemption: "recompute" (drop the KV, re-prefill prompt + generated tokens on resume) or
            "swap" (copy the KV to host memory and back).
        victim: which running request is preempted first: "newest" (most recently admitted, as
            vLLM), "most_blocks" or "fewest_blocks". No rule picks the oldest running request
            unless it runs alone, which guarantees progress: preempting the request furthest
            along can otherwise livelock, resetting it again and again before it finishes.
        host_blocks: host memory for swapped KV, in blocks (swap only).
        swap_bytes_per_s: host link bandwidth, bytes per second (swap only).
        block_bytes: bytes of one KV block (swap only: sets the transfer time).
    """

    block_tokens: int = 16
    blocks: int = 1 << 40
    watermark: float = 0.0
    preemption: str = "recompute"
    victim: str = "newest"
    host_blocks: int = 0
    swap_bytes_per_s: float = 25e9
    block_bytes: int = 16 * 131072

    def __post_init__(self) -> None:
        _bounded(self.block_tokens, "engine.kv.block_tokens", 1, MAX_BLOCK_TOKENS)
        _bounded(self.blocks, "engine.kv.blocks", 1, MAX_BLOCKS)
        if not 0.0 <= self.watermark < 1.0:
            raise ConfigError("engine.kv.watermark", self.watermark, "a fraction in [0, 1)")
        if self.preemption not in PREEMPTION:
            raise ConfigError("engine.kv.preemption", self.preemption,
                              "one of " + ", ".join(PREEMPTION), choices=PREEMPTION)
        if self.victim not in VICTIMS:
            raise ConfigError("engine.kv.victim", self.victim,
                              "one of " + ", ".join(VICTIMS), choices=VICTIMS)
        _bounded(self.host_blocks, "engine.kv.host_blocks", 0, MAX_BLOCKS)
        if not MIN_SWAP_BYTES_PER_S <= self.swap_bytes_per_s <= MAX_SWAP_BYTES_PER_S:
            raise ConfigError("engine.kv.swap_bytes_per_s", self.swap_bytes_per_s,
                              f"a bandwidth in [{MIN_SWAP_BYTES_PER_S:g}, "
                              f"{MAX_SWAP_BYTES_PER_S:g}] bytes/s")
        _bounded(self.block_bytes, "engine.kv.block_bytes", 1, MAX_BLOCKS)

    @property
    def watermark_blocks(self) -> int:
        """Blocks an admission must leave free."""
        return int(self.watermark * self.blocks)


@dataclass(frozen=True)
class WaitConfig:
    """Parameters of the WAIT and Nested WAIT policies (``[engine.wait]``).

    Attributes:
        thresholds: "practical" (n = B*rho/(iterations in the group), see
            ``servesim.policies.wait``) or explicit thresholds, one per request class (WAIT) or
            per segment (Nested WAIT), each a number > 0 (rounded down to whole requests, at
            least 1).
        memory_budget: B of the practical rule: the requests the fluid batch holds at once,
            summed over all stages. None derives it from the KV cache: the B whose fluid batch
            fills the cache on average.
        segments: Nested WAIT only: increasing segment boundaries in output tokens; segment s
            holds requests with a_(s-1) <= generated < a_s (a_0 = 0, the last is unbounded).
    """

    thresholds: str | tuple[float, ...] = "practical"
    memory_budget: float | None = None
    segments: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        field = "engine.wait.thresholds"
        if isinstance(self.thresholds, str):
            if self.thresholds != "practical":
                raise ConfigError(field, self.thresholds,
                                  "\"practical\" or a list of numbers > 0",
                                  choices=("practical",))
        else:
            values = _sequence(self.thresholds, field)
            if not values or any(not _positive(v) for v in values):
                raise ConfigError(field, self.thresholds,
                                  "\"practical\" or a non-empty list of numbers > 0")
            set_(self, "thresholds", tuple(float(v) for v in values))
        if self.memory_budget is not None and not _positive(self.memory_budget):
            raise ConfigError("engine.wait.memory_budget", self.memory_budget, "a number > 0")
        seg = _sequence(self.segments, "engine.wait.segments")
        if any(isinstance(a, bool) or not isinstance(a, int) or a < 1 for a in seg) or \
                any(b <= a for a, b in zip(seg, seg[1:], strict=False)):
            raise ConfigError("engine.wait.segments", self.segments,
                              "strictly increasing integers >= 1 (output tokens)")
        set_(self, "segments", tuple(seg))


def _bounded(value: int, field: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or not low <= value <= high:
        raise ConfigError(field, value, f"an integer >= {low} and <= {high}")


def _sequence(value, field: str) -> list:
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise ConfigError(field, value, "a list")
    return list(value)


def _positive(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and value > 0 \
        and value != float("inf")


@dataclass(frozen=True)
class EngineConfig:
    """One replica's batching rule and limits (the cost model is passed beside it).

    Attributes:
        batching: the batching system, one of ``BATCHING``.
        token_budget: b_max, the most tokens (prefill + decode) in one iteration.
        max_batch_size: k_max, the most running requests (decoding or prefilling) at once.
        chunk_tokens: the most prefill tokens one request takes in one iteration (chunking
            systems only); defaults to ``token_budget``.
        max_model_len: the longest request, prompt + output tokens; longer requests are
            rejected at arrival (default: unlimited, bounded only by the KV cache). Systems
            that do not chunk prefills also reject prompts longer than ``token_budget``. After
            a recompute preemption such a system re-prefills prompt + generated tokens whole;
            if that exceeds the budget it runs alone in an oversized iteration (vLLM avoids
            this by requiring token_budget >= max_model_len).
        kv: the KV cache.
        wait: parameters of the WAIT / Nested WAIT systems (ignored by the others).
        first_token: the output convention. "decode": a request with D output tokens takes D
            decode iterations after its prefill. "prefill": the iteration that completes the
            prompt (or, after a recompute preemption, the re-prefill of prompt + generated
            tokens) emits the next token, so D output tokens take D - 1 decode iterations.
            None (the default) resolves to "prefill" for vllm_v1 and "decode" otherwise; after
            construction it is always one of ``FIRST_TOKEN``.
    """

    batching: str = "sarathi"
    token_budget: int = 512
    max_batch_size: int = 1 << 30
    chunk_tokens: int | None = None
    max_model_len: int | None = None
    kv: KVConfig = KVConfig()
    wait: WaitConfig = WaitConfig()
    first_token: str | None = None

    def __post_init__(self) -> None:
        if self.batching not in BATCHING:
            raise ConfigError("engine.batching", self.batching,
                              "one of " + ", ".join(BATCHING), choices=BATCHING)
        self._resolve_first_token()
        _bounded(self.token_budget, "engine.token_budget", 1, MAX_ENGINE_TOKENS)
        _bounded(self.max_batch_size, "engine.max_batch_size", 1, MAX_BATCH_SIZE)
        if self.chunk_tokens is not None:
            _bounded(self.chunk_tokens, "engine.chunk_tokens", 1, MAX_ENGINE_TOKENS)
        if self.max_model_len is not None:
            _bounded(self.max_model_len, "engine.max_model_len", 2, 2 * MAX_ENGINE_TOKENS)
        self._check_capacity()
        self._check_wait()
        self._check_vllm_v1()

    def _resolve_first_token(self) -> None:
        value = self.first_token
        if value is None:
            value = "prefill" if self.batching in PREFILL_FIRST else "decode"
        if not isinstance(value, str) or value not in FIRST_TOKEN:
            raise ConfigError("engine.first_token", value, "one of " + ", ".join(FIRST_TOKEN),
                              choices=FIRST_TOKEN)
        object.__setattr__(self, "first_token", value)

    def _check_vllm_v1(self) -> None:
        """vLLM v1 preempts only by recompute, and only the last request in its running list."""
        if self.batching != "vllm_v1":
            return
        kv = self.kv
        if kv.preemption != "recompute":
            raise ConfigError("engine.kv.preemption", kv.preemption,
                              "\"recompute\" for batching = \"vllm_v1\" (vLLM v1 never swaps)",
                              choices=("recompute",))
        if kv.victim != "newest":
            raise ConfigError("engine.kv.victim", kv.victim,
                              "\"newest\" for batching = \"vllm_v1\" (vLLM v1 preempts the "
                              "last running request)", choices=("newest",))

    def _check_wait(self) -> None:
        """Segments belong to Nested WAIT; explicit thresholds are checked against the classes
        when the run starts (the config does not know them)."""
        if self.wait.segments and self.batching != "nested_wait":
            raise ConfigError("engine.wait.segments", list(self.wait.segments),
                              "nothing here: segments apply to batching = \"nested_wait\"")

    def _check_capacity(self) -> None:
        """Refuse a KV cache too small for the longest admissible request."""
        longest = self.model_len_limit
        if longest is not None and longest > self.length_limits[0]:
            raise self.total_refusal(longest, f"a request of max_model_len = {longest} tokens")

    def total_refusal(self, tokens: int, what: str) -> ConfigError:
        """The error naming the engine field that refuses a request of ``tokens`` prompt +
        output tokens (``what`` describes it, e.g. "the smallest request of 241 tokens"): the
        max_model_len if it is set and shorter, else the KV cache."""
        limit = self.max_model_len
        if limit is not None and tokens > limit:
            return ConfigError("engine.max_model_len", limit,
                               f"at least {tokens} tokens (prompt + output), for {what}")
        kv = self.kv
        needed = -(-tokens // kv.block_tokens)
        # The watermark grows with the cache: the fewest blocks B with B - floor(w B) >= needed.
        blocks = max(needed, math.ceil(needed / (1.0 - kv.watermark)) - 2)
        while blocks - int(kv.watermark * blocks) < needed:
            blocks += 1
        beside = f" beside the watermark of {kv.watermark:g}" if kv.watermark_blocks or \
            blocks > needed else ""
        return ConfigError("engine.kv.blocks", kv.blocks,
                           f"enough for one request (at least {blocks} blocks{beside} for "
                           f"{what})", shown=f"{kv.blocks} ({kv.blocks * kv.block_tokens} tokens)")

    def prompt_refusal(self, prompt: int, what: str) -> ConfigError:
        """The error naming ``engine.token_budget`` for a system that cannot chunk a prompt of
        ``prompt`` tokens (``what`` describes it, e.g. "the smallest prompt")."""
        return ConfigError("engine.token_budget", self.token_budget,
                           f"at least {prompt} tokens: {self.batching} does not chunk prefills, "
                           f"so {what} ({prompt} tokens) must fit one iteration")

    @property
    def chunks(self) -> bool:
        """Whether this batching system may split a prefill across iterations."""
        return self.batching in ("orca", "sarathi", "greedy", "vllm_v1", *WAIT_SYSTEMS)

    @property
    def chunk_limit(self) -> int:
        """Prefill tokens one request may take per iteration."""
        return self.chunk_tokens if self.chunk_tokens is not None else self.token_budget

    @property
    def model_len_limit(self) -> int | None:
        """The effective max_model_len (None: unlimited)."""
        return self.max_model_len

    @property
    def prompt_limit(self) -> int | None:
        """The longest prompt this system can ever prefill (None: unlimited)."""
        return None if self.chunks else self.token_budget

    @property
    def length_limits(self) -> tuple[int, int]:
        """The longest request (prompt + output tokens) and the longest prompt this engine can
        ever serve; longer ones are rejected at arrival."""
        kv = self.kv
        by_memory = (kv.blocks - kv.watermark_blocks) * kv.block_tokens
        total, prompt = self.model_len_limit, self.prompt_limit
        return (by_memory if total is None else min(total, by_memory),
                by_memory if prompt is None else prompt)
