"""The ``[mg1]`` table of a scenario file: which policies, sizes, predictor and loads to evaluate.

    [mg1]
    policies = ["fcfs", "sjf", "spjf"]        # or policy = "sprpt"
    sizes = { kind = "exponential", mean = 1.0 }
    predictor = { kind = "exponential" }      # optional; omitted means exact sizes
    load = [0.5, 0.8]                         # rho = lambda E[S]; or arrival_rate = ...
    best_one_bit_threshold = true             # optional, default true

    [mg1.params]                              # optional, per policy
    limited_srpt = { c = 0.8 }
    one_bit = { threshold = 1.0 }

Other top-level tables are ignored, so the same file can also describe a simulation. Every error
is a one-line ConfigError naming the field, the value, what was expected and the closest name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servesim.core.errors import ConfigError
from servesim.core.fields import check_keys, number, table
from servesim.core.registry import lookup
from servesim.core.tomlfile import read_toml
from servesim.theory.mg1.api import POLICIES
from servesim.theory.mg1.predictors import make_predictor
from servesim.theory.mg1.sizes import make_sizes

__all__ = ["Mg1Spec", "load_mg1", "parse_mg1"]

_KEYS = ["policy", "policies", "sizes", "predictor", "load", "arrival_rate", "params",
         "best_one_bit_threshold"]


@dataclass(frozen=True)
class Mg1Spec:
    """A validated ``[mg1]`` table; ``rates`` are arrival rates, one per requested load."""

    policies: tuple[str, ...]
    sizes: Mapping[str, Any]
    predictor: Mapping[str, Any] | None
    rates: tuple[float, ...]
    params: Mapping[str, Mapping[str, Any]]
    best_one_bit_threshold: bool
    source: str = "<string>"


def load_mg1(path: str | Path) -> Mg1Spec:
    """Read and validate the ``[mg1]`` table of the TOML file ``path``.

    Raises ConfigError if the file is missing or not TOML, or any field is invalid.
    """
    doc = read_toml(path, "scenario")
    return parse_mg1(doc, str(path))


def parse_mg1(doc: Mapping[str, Any], source: str = "<string>") -> Mg1Spec:
    """Validate a parsed document's ``[mg1]`` table."""
    if "mg1" not in doc:
        raise ConfigError("mg1", None, "an [mg1] table (policies, sizes, predictor, load)")
    mg1 = table(doc["mg1"], "mg1")
    check_keys(mg1, "mg1", _KEYS)
    policies = _policies(mg1)
    if "sizes" not in mg1:
        raise ConfigError("mg1.sizes", None, "a size law such as { kind = \"exponential\" }")
    sizes = make_sizes(mg1["sizes"], "mg1.sizes")
    predictor = mg1.get("predictor")
    if predictor is not None:
        make_predictor(predictor, "mg1.predictor")
    rates = _rates(mg1, sizes.mean)
    params = _params(mg1.get("params", {}))
    best = mg1.get("best_one_bit_threshold", True)
    if not isinstance(best, bool):
        raise ConfigError("mg1.best_one_bit_threshold", best, "true or false")
    return Mg1Spec(policies, dict(sizes.spec), dict(predictor) if predictor else None, rates,
                   params, best, source)


def _policies(mg1: Mapping[str, Any]) -> tuple[str, ...]:
    if ("policy" in mg1) == ("policies" in mg1):
        raise ConfigError("mg1.policies", mg1.get("policies", mg1.get("policy")),
                          "exactly one of policy = \"name\" or policies = [\"name\", ...]")
    names = mg1.get("policies", mg1.get("policy"))
    field = "mg1.policies" if "policies" in mg1 else "mg1.policy"
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not names:
        raise ConfigError(field, names, "a policy name or a non-empty list of names")
    for i, name in enumerate(names):
        lookup(POLICIES, name, f"{field}[{i}]" if field == "mg1.policies" else field)
    return tuple(names)


def _rates(mg1: Mapping[str, Any], mean_size: float) -> tuple[float, ...]:
    if ("load" in mg1) == ("arrival_rate" in mg1):
        raise ConfigError("mg1.load", mg1.get("load"),
                          "exactly one of load (rho = lambda E[S]) or arrival_rate")
    key = "load" if "load" in mg1 else "arrival_rate"
    values = mg1[key] if isinstance(mg1[key], list) else [mg1[key]]
    if not values:
        raise ConfigError(f"mg1.{key}", values, "a number or a non-empty list of numbers")
    rates = []
    for v in values:
        if key == "load":
            rho = number(v, "mg1.load", low=0, low_open=True)
            if rho >= 1:
                raise ConfigError("mg1.load", v, "a load rho < 1 (rho >= 1 is impossible)")
            rates.append(rho / mean_size)
        else:
            lam = number(v, "mg1.arrival_rate", low=0, low_open=True)
            if lam * mean_size >= 1:
                raise ConfigError("mg1.arrival_rate", v, f"a rate below 1/E[S] = "
                                  f"{1 / mean_size:.6g} (rho >= 1 is impossible)")
            rates.append(lam)
    return tuple(rates)


def _params(raw: Any) -> dict[str, dict[str, Any]]:
    params = table(raw, "mg1.params")
    check_keys(params, "mg1.params", POLICIES)
    out = {}
    for name, values in params.items():
        values = table(values, f"mg1.params.{name}")
        check_keys(values, f"mg1.params.{name}", POLICIES[name][1])
        out[name] = dict(values)
    return out
