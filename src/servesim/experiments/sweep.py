"""Sweep files: a grid over scenario fields, times seeds, expanded into points.

A sweep file is TOML::

    [sweep]
    scenario = "fig1_contrast.toml"     # the base scenario, relative to this file (required)
    name = "policies"                   # default: the file's stem
    seeds = [0, 1, 2]                   # or a count n for seeds 0..n-1; default: run.seed
    set = { "run.horizon_s" = 120.0 }   # overrides applied to every point

    [grid]                              # every combination of these axes
    "engine.batching" = ["orca", "sarathi"]
    load = [0.5, 0.8]                   # arrival rate = load * lambda* of the point's scenario

    [[zip]]                             # axes that vary together (lists of one length)
    "engine.token_budget" = [256, 512]
    "engine.chunk_tokens" = [256, 512]

Axis names are the dotted field names that ``--set`` overrides use; nested tables
(``[grid.engine] batching = [...]``) mean the same. ``load`` is the one name that is not a field:
it sets ``workload.arrival.rate_per_s`` from the theoretical lambda* (``theory.capacity``) of the
point's own scenario, so the same loads mean the same thing for every budget or cost model.

Every point is validated when the sweep is loaded, before anything runs, so a bad value fails
with one ConfigError line naming the field.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servesim.core.errors import ConfigError, ServesimError
from servesim.core.fields import check_keys, integer, table
from servesim.core.tomlfile import read_toml
from servesim.scenario import SECTIONS, Scenario, load_scenario, scenario_from_dict, set_field

__all__ = ["LOAD_AXIS", "RATE_FIELD", "Point", "Sweep", "load_sweep", "sweep_from_dict"]

SWEEP_SECTIONS = ("sweep", "grid", "zip")
SWEEP_KEYS = ("scenario", "name", "seeds", "set")
LOAD_AXIS = "load"
RATE_FIELD = "workload.arrival.rate_per_s"


@dataclass(frozen=True)
class Point:
    """One simulation of a sweep: the base scenario with ``params`` set, run with ``seed``.

    Attributes:
        point_id: a short hash of the base scenario, the parameters and the seed; the name of
            the point's folder and its key in the catalogue.
        params: axis name -> value, in the sweep's axis order.
        seed: the root seed.
        table: the point's scenario table (every override and the load applied).
        lambda_star: theoretical request capacity of the point's scenario, requests/s (NaN if
            the theory does not cover it).
        token_capacity: mu*, tokens/s (NaN if unknown).
        mean_tokens: m_p + m_d per request, tokens (NaN if unknown).
    """

    point_id: str
    params: dict[str, Any]
    seed: int
    table: dict[str, Any]
    lambda_star: float
    token_capacity: float
    mean_tokens: float


@dataclass(frozen=True)
class Sweep:
    """A loaded, validated sweep: its name, base folder and points in run order."""

    name: str
    base_dir: Path | None
    axes: tuple[str, ...]
    points: tuple[Point, ...]


def load_sweep(path: str | Path) -> Sweep:
    """Read a sweep file, expand it and validate every point.

    Raises ConfigError (one line naming the field) for an unreadable file, invalid TOML, an
    unknown section or key, a malformed axis, or a point whose scenario is invalid.
    """
    path = Path(path)
    raw = read_toml(path, "sweep")
    return sweep_from_dict(raw, base_dir=path.resolve().parent, default_name=path.stem)


def sweep_from_dict(raw: Mapping[str, Any], base_dir: Path | None = None,
                    default_name: str = "sweep") -> Sweep:
    """Validate a parsed sweep table and expand it into points (see the module docstring)."""
    raw = table(raw, "sweep file")
    check_keys(raw, "", SWEEP_SECTIONS)
    head = table(raw.get("sweep", {}), "sweep")
    check_keys(head, "sweep", SWEEP_KEYS)
    name = head.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise ConfigError("sweep.name", name, "a non-empty string")
    base, scenario_dir = _base_table(head, base_dir)
    fixed = _flatten(table(head.get("set", {}), "sweep.set"), "sweep.set", leaf_lists=False)
    for key, value in fixed.items():
        _check_field(key, "sweep.set")
        set_field(base, key, value)
    groups = _axis_groups(raw)
    axes = tuple(axis for group in groups for axis in group)
    if LOAD_AXIS in axes and RATE_FIELD in axes:
        raise ConfigError(f"grid.{RATE_FIELD}", RATE_FIELD,
                          f"either {LOAD_AXIS} or {RATE_FIELD} as an axis, not both")
    seeds = _seeds(head.get("seeds"), base)
    base_hash = _digest(base)
    points = []
    for params in _combinations(groups):
        point_table = _point_table(base, params, scenario_dir)
        for seed in seeds:
            points.append(_point(point_table, params, seed, base_hash, scenario_dir))
    return Sweep(name=name, base_dir=scenario_dir, axes=axes, points=tuple(points))


def _base_table(head: Mapping[str, Any], base_dir: Path | None) -> tuple[dict[str, Any],
                                                                        Path | None]:
    if "scenario" not in head:
        raise ConfigError("sweep.scenario", None, "the path of the base scenario file "
                                                  "(the field is required)")
    ref = head["scenario"]
    if not isinstance(ref, str):
        raise ConfigError("sweep.scenario", ref, "a path to a scenario TOML file")
    path = Path(ref)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.is_file():
        raise ConfigError("sweep.scenario", ref, "an existing scenario file "
                                                 f"(looked for {path})")
    scenario = load_scenario(path)
    return copy.deepcopy(scenario.source), scenario.base_dir


def _flatten(spec: Mapping[str, Any], field: str, *, leaf_lists: bool) -> dict[str, Any]:
    """Nested tables -> dotted keys. With ``leaf_lists`` every leaf must be a list (an axis)."""
    out: dict[str, Any] = {}
    for key, value in spec.items():
        if isinstance(value, dict):
            for sub, leaf in _flatten(value, f"{field}.{key}", leaf_lists=leaf_lists).items():
                out[f"{key}.{sub}"] = leaf
        elif leaf_lists and (not isinstance(value, list) or not value):
            raise ConfigError(f"{field}.{key}", value,
                              "a non-empty list of values (one per point)")
        else:
            out[key] = value
    return out


def _check_field(key: str, where: str) -> None:
    if key == LOAD_AXIS and where != "sweep.set":
        return
    parts = key.split(".")
    if any(not p for p in parts):
        raise ConfigError(f"{where}.{key}", key, "a dotted scenario field such as "
                                                 "engine.batching")
    check_keys({parts[0]: None}, "", SECTIONS if where == "sweep.set"
               else (*SECTIONS, LOAD_AXIS))
    if len(parts) == 1 and key != LOAD_AXIS:
        raise ConfigError(f"{where}.{key}", key, "a field inside a section, such as "
                                                 f"{key}.<name>")


def _axis_groups(raw: Mapping[str, Any]) -> list[dict[str, list[Any]]]:
    """One group per grid axis (a group of one) and one per [[zip]] table."""
    groups: list[dict[str, list[Any]]] = []
    seen: set[str] = set()
    grid = _flatten(table(raw.get("grid", {}), "grid"), "grid", leaf_lists=True)
    for axis, values in grid.items():
        _check_field(axis, "grid")
        groups.append({axis: values})
        seen.add(axis)
    zips = raw.get("zip", [])
    if not isinstance(zips, list):
        raise ConfigError("zip", zips, "an array of tables ([[zip]] sections)")
    for i, spec in enumerate(zips):
        field = f"zip[{i}]"
        axes = _flatten(table(spec, field), field, leaf_lists=True)
        lengths = {len(v) for v in axes.values()}
        if len(lengths) > 1:
            first = next(iter(axes))
            bad = next(a for a in axes if len(axes[a]) != len(axes[first]))
            raise ConfigError(f"{field}.{bad}", len(axes[bad]),
                              f"{len(axes[first])} values, as many as {field}.{first}")
        for axis in axes:
            _check_field(axis, field)
            if axis in seen:
                raise ConfigError(f"{field}.{axis}", axis, "an axis named once in the sweep")
            seen.add(axis)
        if axes:
            groups.append(axes)
    return groups


def _combinations(groups: Sequence[Mapping[str, list[Any]]]) -> Iterator[dict[str, Any]]:
    """The product over groups; inside a group the axes advance together."""
    columns = [[{axis: values[i] for axis, values in group.items()}
                for i in range(len(next(iter(group.values()))))] for group in groups]
    for combo in itertools.product(*columns):
        params: dict[str, Any] = {}
        for part in combo:
            params.update(part)
        yield params


def _seeds(spec: Any, base: Mapping[str, Any]) -> list[int]:
    if spec is None:
        return [int(base.get("run", {}).get("seed", 0))]
    if isinstance(spec, list):
        if not spec:
            raise ConfigError("sweep.seeds", spec, "a non-empty list of seeds or a count >= 1")
        seeds = [integer(s, "sweep.seeds", low=0) for s in spec]
        if len(set(seeds)) != len(seeds):
            raise ConfigError("sweep.seeds", spec, "distinct seeds")
        return seeds
    return list(range(integer(spec, "sweep.seeds", low=1)))


def _point_table(base: Mapping[str, Any], params: Mapping[str, Any],
                 scenario_dir: Path | None) -> dict[str, Any]:
    """The base table with every axis value set; ``load`` turned into an arrival rate."""
    out = copy.deepcopy(dict(base))
    for axis, value in params.items():
        if axis != LOAD_AXIS:
            set_field(out, axis, copy.deepcopy(value))
    if LOAD_AXIS in params:
        load = params[LOAD_AXIS]
        if isinstance(load, bool) or not isinstance(load, int | float) or not load > 0:
            raise ConfigError(f"grid.{LOAD_AXIS}", load, "a positive fraction of lambda*")
        lam = _capacity(scenario_from_dict(out, base_dir=scenario_dir))[0]
        if not math.isfinite(lam):
            raise ConfigError(f"grid.{LOAD_AXIS}", load, "a scenario whose lambda* the theory "
                                                         "gives (use workload.arrival."
                                                         "rate_per_s instead)")
        set_field(out, RATE_FIELD, float(load) * lam)
    return out


def _capacity(scenario: Scenario) -> tuple[float, float, float]:
    """(lambda*, mu*, m) of a scenario, NaN where the theory does not apply."""
    from servesim.theory.capacity import scenario_capacity

    try:
        cap = scenario_capacity(scenario)
    except (ServesimError, ZeroDivisionError, AttributeError, TypeError):
        nan = float("nan")
        return nan, nan, nan
    return (float(cap.request_capacity.value), float(cap.token_capacity.value),
            float(cap.mean_tokens.value))


def _point(point_table: dict[str, Any], params: dict[str, Any], seed: int, base_hash: str,
           scenario_dir: Path | None) -> Point:
    table_with_seed = copy.deepcopy(point_table)
    table_with_seed.setdefault("run", {})["seed"] = seed
    scenario = scenario_from_dict(table_with_seed, base_dir=scenario_dir)
    lam, mu, m = _capacity(scenario)
    point_id = _digest({"base": base_hash, "params": params, "seed": seed})[:16]
    return Point(point_id=point_id, params=dict(params), seed=seed, table=table_with_seed,
                 lambda_star=lam, token_capacity=mu, mean_tokens=m)


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
