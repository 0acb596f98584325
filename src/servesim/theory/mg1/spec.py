"""The ``[mg1]`` table of a scenario file: which policies, sizes, predictor and loads to evaluate.

    [mg1]
    policies = ["fcfs", "spjf", { kind = "trail", c = 0.5 },
                { kind = "trail", c = 0.5, predictor = { kind = "oracle" } }]
    sizes = { kind = "exponential", mean = 1.0 }
    predictor = { kind = "exponential" }      # optional; omitted means exact sizes
    load = [0.5, 0.8]                         # rho = lambda E[S]; or arrival_rate = ...
    best_one_bit_threshold = true             # optional, default true

    [mg1.params]                              # optional, per policy name
    trail = { c = 0.8 }
    one_bit = { threshold = 1.0 }

A policy is a name, or a table ``{ kind = name, param = value, ..., predictor = {...} }`` as the
simulator's ``[schedule] order`` takes it: its params override ``[mg1.params]`` and its predictor
the file's. Other top-level tables are ignored, so the same file can also describe a simulation.
Every error is a one-line ConfigError naming the field (after ``file:line:`` when read from a
file), the value, what was expected and the closest name. Every row is checked before anything
is computed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servesim.core.errors import ConfigError
from servesim.core.fields import check_keys, number, table
from servesim.core.tomlfile import read_toml
from servesim.theory.mg1.api import check_evaluation
from servesim.theory.mg1.policies import POLICIES, check_name
from servesim.theory.mg1.predictors import make_predictor
from servesim.theory.mg1.sizes import make_sizes
from servesim.theory.mg1.toml_lines import with_location

__all__ = ["Mg1Spec", "PolicyRow", "load_mg1", "parse_mg1"]

_KEYS = ["policy", "policies", "sizes", "predictor", "load", "arrival_rate", "params",
         "best_one_bit_threshold"]


@dataclass(frozen=True)
class PolicyRow:
    """One policy to evaluate: its params and the predictor its rank reads (None: exact);
    ``field`` is where it was given and ``own`` the keys its own table set (errors name them)."""

    policy: str
    params: Mapping[str, Any]
    predictor: Mapping[str, Any] | None
    field: str = "mg1.policy"
    own: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The policy with its params, e.g. ``trail(c=0.5)``."""
        if not self.params:
            return self.policy
        inner = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.policy}({inner})"


@dataclass(frozen=True)
class Mg1Spec:
    """A validated ``[mg1]`` table; ``rates`` are arrival rates, one per requested load;
    ``predictor`` is the file's, the default of every row."""

    rows: tuple[PolicyRow, ...]
    sizes: Mapping[str, Any]
    predictor: Mapping[str, Any] | None
    rates: tuple[float, ...]
    params: Mapping[str, Mapping[str, Any]]
    best_one_bit_threshold: bool
    source: str = "<string>"

    @property
    def policies(self) -> tuple[str, ...]:
        return tuple(row.policy for row in self.rows)


def load_mg1(path: str | Path) -> Mg1Spec:
    """Read and validate the ``[mg1]`` table of the TOML file ``path``.

    Raises ConfigError if the file is missing or not TOML, or any field is invalid (the message
    then starts with ``path:line:`` where the field's line can be found).
    """
    doc = read_toml(path, "scenario")
    try:
        return parse_mg1(doc, str(path))
    except ConfigError as err:
        raise with_location(err, Path(path)) from None


def parse_mg1(doc: Mapping[str, Any], source: str = "<string>") -> Mg1Spec:
    """Validate a parsed document's ``[mg1]`` table."""
    if "mg1" not in doc:
        raise ConfigError("mg1", None, "an [mg1] table (policies, sizes, predictor, load)")
    mg1 = table(doc["mg1"], "mg1")
    check_keys(mg1, "mg1", _KEYS)
    if "sizes" not in mg1:
        raise ConfigError("mg1.sizes", None, "a size law such as { kind = \"exponential\" }")
    sizes = make_sizes(mg1["sizes"], "mg1.sizes")
    predictor = mg1.get("predictor")
    if predictor is not None:
        make_predictor(predictor, "mg1.predictor")
        predictor = dict(predictor)
    rates = _rates(mg1, sizes.mean)
    params = _params(mg1.get("params", {}))
    rows = _rows(mg1, params, predictor)
    for row in rows:
        _check_row(row, dict(sizes.spec), rates[0])
    best = mg1.get("best_one_bit_threshold", True)
    if not isinstance(best, bool):
        raise ConfigError("mg1.best_one_bit_threshold", best, "true or false")
    return Mg1Spec(rows, dict(sizes.spec), predictor, rates, params, best, source)


def _rows(mg1: Mapping[str, Any], params: Mapping[str, Mapping[str, Any]],
          predictor: Mapping[str, Any] | None) -> tuple[PolicyRow, ...]:
    if ("policy" in mg1) == ("policies" in mg1):
        raise ConfigError("mg1.policies", mg1.get("policies", mg1.get("policy")),
                          "exactly one of policy = \"name\" or policies = [\"name\", ...]")
    if "policy" in mg1:
        return (_row(mg1["policy"], "mg1.policy", params, predictor),)
    names = mg1["policies"]
    if not isinstance(names, list) or not names:
        raise ConfigError("mg1.policies", names, "a non-empty list of policy names or tables")
    return tuple(_row(raw, f"mg1.policies[{i}]", params, predictor)
                 for i, raw in enumerate(names))


def _row(raw: Any, field: str, params: Mapping[str, Mapping[str, Any]],
         predictor: Mapping[str, Any] | None) -> PolicyRow:
    """A policy name, or a table { kind = name, params..., predictor = {...} }."""
    if isinstance(raw, str):
        name = check_name(raw, field)
        return PolicyRow(name, dict(params.get(name, {})), predictor, field)
    if not isinstance(raw, Mapping):
        raise ConfigError(field, raw, "a policy name or a table { kind = \"name\", ... }")
    if "kind" not in raw:
        key = "name" if "name" in raw else "kind"
        raise ConfigError(f"{field}.{key}", raw.get(key), "the policy's name as kind = "
                          "\"...\", the key the simulator's [schedule] order uses")
    name = check_name(raw["kind"], f"{field}.kind")
    check_keys(raw, field, ["kind", "predictor", *POLICIES[name][1]])
    own = {k: v for k, v in raw.items() if k not in ("kind", "predictor")}
    if "predictor" in raw:
        make_predictor(raw["predictor"], f"{field}.predictor")
        predictor = dict(raw["predictor"])
    return PolicyRow(name, {**params.get(name, {}), **own}, predictor, field,
                     tuple(k for k in raw if k != "kind"))


def _check_row(row: PolicyRow, sizes: Mapping[str, Any], rate: float) -> None:
    """Validate a row as the evaluation would, naming the field the bad value came from."""
    try:
        check_evaluation(row.policy, sizes, row.predictor, rate, **row.params)
    except ConfigError as err:
        raise _row_error(err, row) from None


def _row_error(err: ConfigError, row: PolicyRow) -> ConfigError:
    """``err`` of ``check_evaluation`` renamed to the field the value came from."""
    f = err.field
    if f.startswith("params."):
        key = f[len("params."):]
        from_row = key.split(".")[0] in row.own
        where = f"{row.field}.{key}" if from_row else f"mg1.params.{row.policy}.{key}"
    elif f == "predictor" or f.startswith("predictor."):
        base = f"{row.field}.predictor" if "predictor" in row.own else "mg1.predictor"
        where = base + f[len("predictor"):]
    else:
        return err
    hint = None if err.suggestion is None else [err.suggestion]
    return ConfigError(where, err.value, err.expected, choices=hint)


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
    out = {}
    for name, values in params.items():
        check_name(name, f"mg1.params.{name}")
        values = table(values, f"mg1.params.{name}")
        check_keys(values, f"mg1.params.{name}", POLICIES[name][1])
        out[name] = dict(values)
    return out
