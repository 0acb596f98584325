"""Scenario files: one TOML table becomes a frozen, validated ``Scenario``.

A scenario has these sections (see ``docs/scenarios.md`` for every field):

- ``[run]``: seed, how many requests (or a horizon), warm-up and a time limit;
- ``[workload]``: arrivals and lengths (validated by ``servesim.workload.build``);
- ``[engine]``: batching, limits, the KV cache and the cost model;
- ``[slo]``: optional latency objectives for goodput;
- ``[schedule]``: optional order and predictor (``servesim.policies.schedule``).

Every unknown key, wrong type or out-of-range value raises ConfigError naming the dotted field,
the value, what was expected and the closest valid name. Loading does no I/O beyond reading the
scenario file and the traces or profiles it names.
"""

from __future__ import annotations

import copy
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servesim.core.errors import ConfigError, file_error
from servesim.core.fields import check_keys, integer, number, seconds, table
from servesim.core.tomlfile import read_toml
from servesim.engine.config import WAIT_SYSTEMS, EngineConfig, KVConfig, WaitConfig
from servesim.engine.cost import CostModel, Roofline, make_cost_model
from servesim.engine.hardware import ModelSpec, gpu_preset, kv_capacity_blocks, model_preset
from servesim.policies.schedule import ScheduleConfig, parse_schedule
from servesim.scenario_checks import check_across_sections
from servesim.workload.build import Workload, build_workload
from servesim.workload.closed import ClosedArrivals
from servesim.workload.source import check_run_size

__all__ = [
    "RunConfig",
    "SLOConfig",
    "Scenario",
    "apply_overrides",
    "load_scenario",
    "scenario_from_dict",
]

SECTIONS = ("run", "workload", "engine", "slo", "schedule")
RUN_KEYS = ("seed", "requests", "horizon_s", "warmup_s", "max_time_s", "max_in_system")
ENGINE_KEYS = ("batching", "token_budget", "max_batch_size", "chunk_tokens", "max_model_len",
               "kv", "cost", "wait", "first_token")
WAIT_KEYS = ("thresholds", "memory_budget", "segments")
KV_KEYS = ("block_tokens", "blocks", "watermark", "preemption", "victim", "host_blocks",
           "swap_bytes_per_s", "block_bytes", "gpu_memory_utilization", "model", "gpu",
           "num_gpus")
# Any of these asks for the block count to be derived from GPU memory.
KV_DERIVE_KEYS = ("gpu_memory_utilization", "model", "gpu", "num_gpus")
SLO_KEYS = ("ttft_s", "tpot_s", "e2e_s")

TABLES = "[run], [workload] and [engine] tables"
DEFAULT_COST: Mapping[str, Any] = {"kind": "staircase"}
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9


# -- the frozen configs -------------------------------------------------------------------------


@dataclass(frozen=True)
class RunConfig:
    """How long to run and with which seed.

    Attributes:
        seed: the root seed of every random stream (integer >= 0).
        requests: simulate exactly this many requests (request-count mode), run until all finish.
        horizon_s: simulate arrivals before this time, seconds; the run stops at it.
        warmup_s: arrivals before this time (and iterations starting before it) are left out of
            the summary statistics, seconds.
        max_time_s: request-count mode only: stop the run at this simulated time, seconds.
        max_in_system: stop the run as soon as more requests than this are in the system, so an
            overloaded run ends bounded in time and memory (None: no cap).

    Raises ConfigError unless exactly one of ``requests`` / ``horizon_s`` is given, or if a value
    is out of range.
    """

    seed: int = 0
    requests: int | None = None
    horizon_s: float | None = None
    warmup_s: float = 0.0
    max_time_s: float | None = None
    max_in_system: int | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "seed", integer(self.seed, "run.seed", low=0))
        if (self.requests is None) == (self.horizon_s is None):
            given = "both" if self.requests is not None else "neither"
            raise ConfigError("run.requests", self.requests,
                              f"exactly one of run.requests and run.horizon_s ({given} given)")
        if self.requests is not None:
            set_(self, "requests", integer(self.requests, "run.requests", low=1))
        else:
            set_(self, "horizon_s", seconds(self.horizon_s, "run.horizon_s"))
        set_(self, "warmup_s", seconds(self.warmup_s, "run.warmup_s", allow_zero=True))
        if self.max_in_system is not None:
            set_(self, "max_in_system", integer(self.max_in_system, "run.max_in_system", low=1))
        if self.max_time_s is not None:
            if self.horizon_s is not None:
                raise ConfigError("run.max_time_s", self.max_time_s,
                                  "nothing here: run.horizon_s already ends the run")
            set_(self, "max_time_s", seconds(self.max_time_s, "run.max_time_s"))
        end = self.horizon_s if self.horizon_s is not None else self.max_time_s
        if end is not None and self.warmup_s >= end:
            raise ConfigError("run.warmup_s", self.warmup_s,
                              f"a warm-up shorter than the run ({end:g} s)")

    @property
    def until_s(self) -> float | None:
        """The simulated time at which the run stops (None: when every request has finished)."""
        return self.horizon_s if self.horizon_s is not None else self.max_time_s


@dataclass(frozen=True)
class SLOConfig:
    """Latency objectives; a request meets the SLO if it meets every objective given.

    Attributes:
        ttft_s: time to first token, seconds.
        tpot_s: time per output token after the first, seconds.
        e2e_s: end-to-end latency, seconds.

    Raises ConfigError if a given objective is not a number > 0.
    """

    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None

    def __post_init__(self) -> None:
        for name in SLO_KEYS:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, seconds(value, f"slo.{name}"))

    @property
    def empty(self) -> bool:
        """True iff no objective is set."""
        return all(getattr(self, name) is None for name in SLO_KEYS)

    def describe(self) -> dict[str, float]:
        """The objectives that are set."""
        return {name: getattr(self, name) for name in SLO_KEYS if getattr(self, name) is not None}


@dataclass(frozen=True, eq=False)
class Scenario:
    """A validated scenario: everything one simulation run needs.

    Attributes:
        run: seed and run length.
        workload: the arrival process and request classes.
        engine: the replica's batching rule, limits and KV cache (blocks already derived).
        cost: the iteration cost model.
        slo: latency objectives (possibly empty).
        schedule: the order requests are served in and their predictor (default FCFS).
        source: the raw scenario table (after overrides), echoed into the run summary.
        base_dir: the folder relative paths in the scenario resolve against.
    """

    run: RunConfig
    workload: Workload
    engine: EngineConfig
    cost: CostModel
    slo: SLOConfig = SLOConfig()
    source: dict[str, Any] = field(default_factory=dict)
    base_dir: Path | None = None
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def describe(self) -> str:
        """One line: run length, arrivals, engine and cost."""
        run = self.run
        amount = (f"{run.requests} requests" if run.requests is not None
                  else f"horizon {run.horizon_s:g} s")
        wl = self.workload.describe()
        arrival = wl.get("arrival", {})
        rate = arrival.get("rate_per_s")
        arrivals = f"{arrival.get('kind', '?')} arrivals"
        if arrival.get("kind") == "closed":
            arrivals = f"closed loop of {arrival['clients']} clients"
        elif isinstance(rate, int | float):
            arrivals += f" at {rate:.4g}/s"
        classes = len(wl.get("classes", ()))
        e = self.engine
        kv = e.kv
        blocks = "unlimited" if kv.blocks >= 1 << 40 else f"{kv.blocks} blocks"
        return (f"{amount}, seed {run.seed}; {arrivals}, {classes} class"
                f"{'es' if classes != 1 else ''}; {e.batching} batching, token_budget "
                f"{e.token_budget}, KV {blocks} of {kv.block_tokens} tokens; "
                f"{self.cost.describe().get('kind', type(self.cost).__name__)} cost")


# -- loading ------------------------------------------------------------------------------------


def load_scenario(path: str | Path, overrides: Sequence[str] = ()) -> Scenario:
    """Read a TOML scenario file, apply ``--set``-style overrides and validate it.

    Relative paths inside the file (traces, profiles) resolve against the file's folder.

    Raises ConfigError if the file cannot be read, is not valid TOML (the message gives the file
    and the parser's line and column), or any field is invalid; TraceError for a bad trace row.
    """
    path = Path(path)
    raw = read_toml(path, "scenario")
    if not raw:
        raise file_error(str(path), f"the scenario file is empty; expected {TABLES}")
    return scenario_from_dict(apply_overrides(raw, overrides), base_dir=path.resolve().parent)


def scenario_from_dict(source: Mapping[str, Any], base_dir: Path | None = None) -> Scenario:
    """Validate a scenario table (as parsed from TOML) and build its ``Scenario``.

    ``source`` is not modified; the Scenario keeps a deep copy.

    Raises ConfigError naming the dotted field for an unknown section or key (suggesting the
    closest valid name), a wrong type, an out-of-range value or a missing required value.
    """
    source = copy.deepcopy(dict(table(source, "scenario")))
    if not source:
        raise ConfigError("scenario", source, f"{TABLES} (the scenario is empty)")
    check_keys(source, "", SECTIONS)
    run = _run(source.get("run", {}))
    if "workload" not in source:
        raise ConfigError("workload", None, "a [workload] section (the field is required)")
    workload = build_workload(source["workload"], "workload", base_dir)
    check_run_size(run, workload)   # records that cannot fit in memory: refused before any run
    engine_spec = table(source.get("engine", {}), "engine")
    cost = make_cost_model(engine_spec.get("cost", DEFAULT_COST), "engine.cost", base_dir)
    engine = _engine(engine_spec, cost)
    check_across_sections(run, workload, engine)
    slo = _slo(source.get("slo", {}))
    schedule = parse_schedule(source.get("schedule", {}), base_dir=base_dir)
    scenario = Scenario(run=run, workload=workload, engine=engine, cost=cost, slo=slo,
                        source=source, base_dir=base_dir, schedule=schedule)
    if isinstance(workload.arrival, ClosedArrivals):
        # What a closed loop cannot run yet ([schedule] orderings, WAIT), refused at load.
        from servesim.cluster.closed import check_closed_loop

        check_closed_loop(scenario)
    return scenario


def _run(spec: Any) -> RunConfig:
    spec = table(spec, "run")
    check_keys(spec, "run", RUN_KEYS)
    return RunConfig(**spec)


def _slo(spec: Any) -> SLOConfig:
    spec = table(spec, "slo")
    check_keys(spec, "slo", SLO_KEYS)
    return SLOConfig(**spec)


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(field, value, "a string")
    return value


def _engine(spec: Mapping[str, Any], cost: CostModel) -> EngineConfig:
    """Build the EngineConfig; its own validation errors pass through unchanged."""
    check_keys(spec, "engine", ENGINE_KEYS)
    kwargs: dict[str, Any] = {}
    if "batching" in spec:
        kwargs["batching"] = _string(spec["batching"], "engine.batching")
    if "first_token" in spec:
        # "decode" or "prefill"; EngineConfig checks the value and names the closest.
        kwargs["first_token"] = _string(spec["first_token"], "engine.first_token")
    for key in ("token_budget", "max_batch_size", "chunk_tokens", "max_model_len"):
        if key in spec:
            kwargs[key] = integer(spec[key], f"engine.{key}")
    kwargs["kv"] = _kv(spec.get("kv", {}), cost)
    if "wait" in spec:
        kwargs["wait"] = _wait(spec["wait"], kwargs.get("batching", EngineConfig.batching))
    return EngineConfig(**kwargs)


def _wait(spec: Any, batching: str) -> WaitConfig:
    """Build the WaitConfig of the WAIT systems; the table means nothing to the others."""
    field = "engine.wait"
    spec = table(spec, field)
    if batching not in WAIT_SYSTEMS:
        raise ConfigError(field, dict(spec), "nothing here: [engine.wait] applies to batching "
                          "= " + " or ".join(f'"{b}"' for b in WAIT_SYSTEMS))
    check_keys(spec, field, WAIT_KEYS)
    kwargs: dict[str, Any] = {}
    if "thresholds" in spec:
        kwargs["thresholds"] = spec["thresholds"]
    if "memory_budget" in spec:
        kwargs["memory_budget"] = number(spec["memory_budget"], f"{field}.memory_budget",
                                         low=0, low_open=True)
    if "segments" in spec:
        kwargs["segments"] = spec["segments"]
    return WaitConfig(**kwargs)


def _kv(spec: Any, cost: CostModel) -> KVConfig:
    """Build the KVConfig, deriving ``blocks`` from GPU memory when asked to."""
    field = "engine.kv"
    spec = table(spec, field)
    check_keys(spec, field, KV_KEYS)
    kwargs: dict[str, Any] = {}
    block_tokens = integer(spec.get("block_tokens", KVConfig.block_tokens),
                           f"{field}.block_tokens", low=1)
    kwargs["block_tokens"] = block_tokens
    roofline = cost if isinstance(cost, Roofline) else None
    model: ModelSpec | None = None
    if "model" in spec:
        model = model_preset(spec["model"], f"{field}.model")
    elif roofline is not None:
        model = roofline.model
    derive = [key for key in KV_DERIVE_KEYS if key in spec]
    if derive and "blocks" in spec:
        raise ConfigError(f"{field}.blocks", spec["blocks"],
                          f"nothing here: {field}.{derive[0]} derives the block count from GPU "
                          "memory; give blocks or gpu_memory_utilization/model/gpu, not both")
    if "blocks" in spec:
        kwargs["blocks"] = integer(spec["blocks"], f"{field}.blocks", low=1)
    elif derive:
        kwargs["blocks"] = _derived_blocks(spec, model, roofline, block_tokens)
    if "watermark" in spec:
        kwargs["watermark"] = number(spec["watermark"], f"{field}.watermark")
    for key in ("preemption", "victim"):
        if key in spec:
            kwargs[key] = _string(spec[key], f"{field}.{key}")
    if "host_blocks" in spec:
        kwargs["host_blocks"] = integer(spec["host_blocks"], f"{field}.host_blocks")
    if "swap_bytes_per_s" in spec:
        kwargs["swap_bytes_per_s"] = number(spec["swap_bytes_per_s"], f"{field}.swap_bytes_per_s")
    if "block_bytes" in spec:
        kwargs["block_bytes"] = integer(spec["block_bytes"], f"{field}.block_bytes")
    elif model is not None:
        kwargs["block_bytes"] = max(1, math.ceil(block_tokens * model.kv_bytes_per_token))
    return KVConfig(**kwargs)


def _derived_blocks(spec: Mapping[str, Any], model: ModelSpec | None, roofline: Roofline | None,
                    block_tokens: int) -> int:
    field = "engine.kv"
    why = "needed to derive blocks from GPU memory unless engine.cost is a roofline"
    if model is None:
        raise ConfigError(f"{field}.model", None, f"a model preset name or table ({why})")
    if "gpu" in spec:
        gpu = gpu_preset(spec["gpu"], f"{field}.gpu")
    elif roofline is not None:
        gpu = roofline.gpu
    else:
        raise ConfigError(f"{field}.gpu", None, f"a GPU preset name or table ({why})")
    default_gpus = roofline.num_gpus if roofline is not None else 1
    num_gpus = integer(spec.get("num_gpus", default_gpus), f"{field}.num_gpus", low=1)
    util = number(spec.get("gpu_memory_utilization", DEFAULT_GPU_MEMORY_UTILIZATION),
                  f"{field}.gpu_memory_utilization", low=0, low_open=True, high=1)
    return kv_capacity_blocks(model, gpu, block_tokens, util, num_gpus,
                              field=f"{field}.gpu_memory_utilization")


# -- overrides ----------------------------------------------------------------------------------


def apply_overrides(source: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a deep copy of ``source`` with ``key.path=value`` overrides applied, in order.

    Values are parsed as TOML values (``256``, ``0.5``, ``"vllm"``, ``true``, ``[1, 2]``,
    ``{ kind = "poisson", rate_per_s = 10 }``); anything that does not parse is taken as a bare
    string, so ``engine.batching=vllm`` works. An empty value (``run.horizon_s=``) removes the key.
    Missing intermediate tables are created; keys below the top level are checked when the
    scenario is validated.

    Raises ConfigError if an item has no ``=`` or an empty key, names an unknown section
    (suggesting the closest), or passes through a value that is not a table.
    """
    result = copy.deepcopy(dict(source))
    if isinstance(overrides, str):
        overrides = [overrides]
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not sep or not key or any(not p.strip() for p in parts):
            raise ConfigError("--set", item, "key=value, e.g. engine.token_budget=256")
        parts = [p.strip() for p in parts]
        check_keys({parts[0]: None}, "", SECTIONS)
        set_field(result, ".".join(parts), _parse_value(text.strip()) if text.strip() else None)
    return result


def set_field(table: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``table[a][b][c] = value`` for ``dotted = "a.b.c"`` in place, creating missing
    tables; a value of None removes the key.

    Raises ConfigError if the path passes through a value that is not a table.
    """
    parts = dotted.split(".")
    node = table
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts[:depth + 1]), child,
                              f"a table, so that {dotted} can be set inside it")
        node = child
    if value is None:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value


def _parse_value(text: str) -> Any:
    """Parse one TOML value; fall back to the text itself as a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
