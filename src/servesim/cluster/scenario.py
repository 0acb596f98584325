"""Network scenario files: ``[run]`` and ``[network]`` (engines, classes, workflows) become a
frozen ``NetworkScenario``. Every error is one line naming the dotted field, the value, what
was expected and the closest valid name."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servesim import scenario as _scenario
from servesim.cluster.model import ROUTERS, EngineSpec, Network, StepClass, Workflow
from servesim.core.errors import ConfigError
from servesim.core.fields import check_keys, integer, number, require, table
from servesim.core.registry import lookup
from servesim.core.tomlfile import read_toml
from servesim.engine.cost import make_cost_model
from servesim.scenario import RunConfig
from servesim.workload.arrivals import make_arrivals
from servesim.workload.distributions import make_token_dist
from servesim.workload.source import check_arrival_count

__all__ = ["NetworkScenario", "check_network_size", "load_network", "network_from_dict",
           "renamed"]

SECTIONS = ("run", "network")
RUN_KEYS = ("seed", "horizon_s", "warmup_s", "max_in_system")
NETWORK_KEYS = ("engines", "classes", "workflows")
ENGINE_EXTRA_KEYS = ("priority", "replicas", "router", "power_d")
CLASS_KEYS = ("engine", "prompt_tokens", "output_tokens", "next", "routing", "carry_output",
              "join")
WORKFLOW_KEYS = ("arrival", "entry")


@dataclass(frozen=True, eq=False)
class NetworkScenario:
    """A validated network scenario: how to run it and the network itself."""

    run: RunConfig
    network: Network
    source: dict[str, Any] = field(default_factory=dict)
    base_dir: Path | None = None


def load_network(path: str | Path) -> NetworkScenario:
    """Read and validate a network scenario file (relative paths resolve against its folder).

    Raises ConfigError if the file is missing, unreadable, not TOML, or any field is invalid.
    """
    path = Path(path)
    raw = read_toml(path, "scenario")
    return network_from_dict(raw, base_dir=path.resolve().parent)


def network_from_dict(source: Mapping[str, Any], base_dir: Path | None = None) -> NetworkScenario:
    """Validate a network scenario table (as parsed from TOML); ``source`` is not modified."""
    source = copy.deepcopy(dict(table(source, "scenario")))
    check_keys(source, "", SECTIONS)
    run_spec = table(source.get("run", {}), "run")
    check_keys(run_spec, "run", RUN_KEYS)
    require(run_spec, "horizon_s", "run")
    run = RunConfig(**run_spec)
    if "network" not in source:
        raise ConfigError("network", None, "a [network] section (the field is required)")
    spec = table(source["network"], "network")
    check_keys(spec, "network", NETWORK_KEYS)
    engines = {name: _engine(name, e, base_dir)
               for name, e in _tables(spec, "engines").items()}
    classes = {name: _class(name, c, base_dir) for name, c in _tables(spec, "classes").items()}
    workflows = {name: _workflow(name, w) for name, w in _tables(spec, "workflows").items()}
    network = Network(engines, classes, workflows)
    check_network_size(network, run.horizon_s, run.max_in_system)
    return NetworkScenario(run, network, source, base_dir)


def check_network_size(network: Network, horizon_s: float, max_in_system: int | None,
                       field: str = "run.horizon_s") -> None:
    """Refuse a horizon whose task arrivals (every workflow's rate x horizon; explicit lists
    are bounded and left out) the records of this machine cannot hold, unless
    ``max_in_system`` bounds the run (``servesim.workload.source.check_arrival_count``).

    Raises ConfigError on ``field``.
    """
    rates = [float(w.arrival.rate_per_s) for w in network.workflows.values()]
    total = math.fsum(r for r in rates if math.isfinite(r))
    if total > 0:
        check_arrival_count(total, horizon_s, max_in_system, field)


def _tables(spec: Mapping[str, Any], key: str) -> dict[str, Mapping[str, Any]]:
    f = f"network.{key}"
    group = table(require(spec, key, "network"), f)
    if not group:
        raise ConfigError(f, {}, f"at least one [{f}.<name>] table")
    return {name: table(value, f"{f}.{name}") for name, value in group.items()}


def renamed(e: ConfigError, old: str, new: str) -> ConfigError:
    """The same error with the field prefix ``old`` replaced by ``new``."""
    name = new + e.field[len(old):] if e.field.startswith(old) else e.field
    out = ConfigError(name, e.value, e.expected)
    if e.suggestion is not None:
        out.suggestion = e.suggestion
        out.args = (f"{out.args[0]}; did you mean {e.suggestion!r}?",)
    return out


def _names(value: Any, field_name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(field_name, value, "a list of class names")
    return tuple(value)


def _engine(name: str, spec: Mapping[str, Any], base_dir: Path | None) -> EngineSpec:
    f = f"network.engines.{name}"
    check_keys(spec, f, (*_scenario.ENGINE_KEYS, *ENGINE_EXTRA_KEYS))
    cost = make_cost_model(spec.get("cost", _scenario.DEFAULT_COST), f"{f}.cost", base_dir)
    plain = {k: v for k, v in spec.items() if k not in ENGINE_EXTRA_KEYS}
    try:
        config = _scenario._engine(plain, cost)
    except ConfigError as e:
        raise renamed(e, "engine", f) from None
    router = spec.get("router", "round_robin")
    lookup(dict.fromkeys(ROUTERS), router, f"{f}.router")
    return EngineSpec(name, config, cost,
                      priority=_names(spec.get("priority", []), f"{f}.priority"),
                      replicas=integer(spec.get("replicas", 1), f"{f}.replicas", low=1),
                      router=router,
                      power_d=integer(spec.get("power_d", 2), f"{f}.power_d", low=1))


def _class(name: str, spec: Mapping[str, Any], base_dir: Path | None) -> StepClass:
    f = f"network.classes.{name}"
    check_keys(spec, f, CLASS_KEYS)
    engine = require(spec, "engine", f)
    if not isinstance(engine, str):
        raise ConfigError(f"{f}.engine", engine, "an engine name")
    routing = table(spec.get("routing", {}), f"{f}.routing")
    probs = tuple((k, number(p, f"{f}.routing.{k}", low=0, high=1)) for k, p in routing.items())
    carry, join = spec.get("carry_output", False), spec.get("join", False)
    for key, value in (("carry_output", carry), ("join", join)):
        if not isinstance(value, bool):
            raise ConfigError(f"{f}.{key}", value, "true or false")
    return StepClass(name, engine,
                     make_token_dist(require(spec, "prompt_tokens", f), f"{f}.prompt_tokens",
                                     base_dir),
                     make_token_dist(require(spec, "output_tokens", f), f"{f}.output_tokens",
                                     base_dir),
                     next=_names(spec.get("next", []), f"{f}.next"), routing=probs,
                     carry_output=carry, join=join)


def _workflow(name: str, spec: Mapping[str, Any]) -> Workflow:
    f = f"network.workflows.{name}"
    check_keys(spec, f, WORKFLOW_KEYS)
    entry = _names(require(spec, "entry", f), f"{f}.entry")
    if not entry:
        raise ConfigError(f"{f}.entry", [], "at least one class")
    return Workflow(name, make_arrivals(require(spec, "arrival", f), f"{f}.arrival"), entry)
