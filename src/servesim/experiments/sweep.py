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
with one ConfigError line naming the field. A sweep may hold at most ``MAX_POINTS`` points
(combinations times seeds); the count is checked before anything is expanded.
"""

from __future__ import annotations

import copy
import dataclasses
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

__all__ = ["LOAD_AXIS", "MAX_POINTS", "RATE_FIELD", "Point", "Sweep", "load_sweep",
           "sweep_from_dict"]

SWEEP_SECTIONS = ("sweep", "grid", "zip")
SWEEP_KEYS = ("scenario", "name", "seeds", "set")
LOAD_AXIS = "load"
RATE_FIELD = "workload.arrival.rate_per_s"
SEED_FIELD = "run.seed"
MAX_POINTS = 100_000
"""Most points a sweep may hold: every point is built and validated when the sweep loads, so a
larger count would only exhaust memory before the first simulation."""


@dataclass(frozen=True)
class Point:
    """One simulation of a sweep: the base scenario with ``params`` set, run with ``seed``.

    Attributes:
        point_id: a short hash of the point's resolved scenario table (seed included), its
            parameters, the contents of the files the base scenario names and servesim's
            version; the name of the point's folder and its key in the catalogue.
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
    for axis in axes:
        # The load axis sets the arrival rate, so a fixed rate would be overwritten too.
        swept = RATE_FIELD if axis == LOAD_AXIS else axis
        if swept in fixed:
            raise ConfigError(f"sweep.set.{swept}", swept, "a field either in sweep.set or "
                                                           "swept by an axis, not both")
    if LOAD_AXIS in axes and RATE_FIELD in axes:
        raise ConfigError(f"grid.{RATE_FIELD}", RATE_FIELD,
                          f"either {LOAD_AXIS} or {RATE_FIELD} as an axis, not both")
    seeds = _seeds(head.get("seeds"), base)
    combos = math.prod(len(next(iter(group.values()))) for group in groups)
    if combos * len(seeds) > MAX_POINTS:
        raise ConfigError("sweep.seeds", f"{combos} combinations x {len(seeds)} seeds",
                          f"at most {MAX_POINTS} points in one sweep (split it into several)")
    hashes: dict[str, str | None] = {}
    points = []
    for params in _combinations(groups):
        point_table = _point_table(base, params, scenario_dir)
        files = _file_digests(point_table, scenario_dir, hashes)
        for seed in seeds:
            points.append(_point(point_table, params, seed, files, scenario_dir))
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

    def put(key: str, value: Any) -> None:
        # A quoted dotted key and a nested table can name the same field; TOML allows both.
        if key in out:
            what = "an axis" if leaf_lists else "a field"
            raise ConfigError(f"{field}.{key}", key, f"{what} named once (here both as a "
                                                     "dotted key and inside a table)")
        out[key] = value

    for key, value in spec.items():
        if isinstance(value, dict):
            for sub, leaf in _flatten(value, f"{field}.{key}", leaf_lists=leaf_lists).items():
                put(f"{key}.{sub}", leaf)
        elif leaf_lists and (not isinstance(value, list) or not value):
            raise ConfigError(f"{field}.{key}", value,
                              "a non-empty list of values (one per point)")
        else:
            put(key, value)
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
    if key == SEED_FIELD:
        raise ConfigError(f"{where}.{key}", key, "seeds given by sweep.seeds (a count or a "
                                                 "list), which replace run.seed at every point")


def _axis_groups(raw: Mapping[str, Any]) -> list[dict[str, list[Any]]]:
    """One group per grid axis (a group of one) and one per [[zip]] table."""
    groups: list[dict[str, list[Any]]] = []
    seen: set[str] = set()
    grid = _flatten(table(raw.get("grid", {}), "grid"), "grid", leaf_lists=True)
    for axis, values in grid.items():
        _check_field(axis, "grid")
        _check_distinct({axis: values}, "grid")
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
        _check_distinct(axes, field)
        if axes:
            groups.append(axes)
    return groups


def _check_distinct(group: Mapping[str, list[Any]], field: str) -> None:
    """Repeated values would make the same point twice, simulated at once into one folder."""
    if not group:
        return
    keys = [_canonical([values[i] for values in group.values()])
            for i in range(len(next(iter(group.values()))))]
    for i, key in enumerate(keys):
        if key in keys[:i]:
            first = keys.index(key)
            axis = ", ".join(f"{field}.{a}" for a in group)
            values = [group[a][i] for a in group]
            raise ConfigError(axis, values[0] if len(values) == 1 else values,
                              f"distinct values along the axis (entries {first} and {i} are "
                              "the same point)")


def _canonical(value: Any) -> str:
    """A text key under which 1 and 1.0 are equal but True and 1 are not."""
    def norm(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int | float | list | dict):
            return v
        if isinstance(v, list):
            return [norm(x) for x in v]
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        return float(v)

    return json.dumps(norm(value), sort_keys=True, default=str)


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
    count = integer(spec, "sweep.seeds", low=1)
    if count > MAX_POINTS:
        raise ConfigError("sweep.seeds", count, f"at most {MAX_POINTS} points in one sweep")
    return list(range(count))


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
        scenario = scenario_from_dict(out, base_dir=scenario_dir)
        arrival = scenario.workload.arrival
        # Every process reports a long-run rate, but only some have one rate field to scale.
        if not dataclasses.is_dataclass(arrival) or "rate_per_s" not in {
                f.name for f in dataclasses.fields(arrival)}:
            kind = out.get("workload", {}).get("arrival", {}).get("kind")
            raise ConfigError(f"grid.{LOAD_AXIS}", load, "arrivals with a single rate_per_s "
                              f"to scale; workload.arrival.kind = {kind!r} has no single rate "
                              "(sweep its own rate fields instead)")
        lam = _capacity(scenario)[0]
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


def _point(point_table: dict[str, Any], params: dict[str, Any], seed: int,
           files: Mapping[str, str], scenario_dir: Path | None) -> Point:
    from servesim import __version__

    table_with_seed = copy.deepcopy(point_table)
    table_with_seed.setdefault("run", {})["seed"] = seed
    scenario = scenario_from_dict(table_with_seed, base_dir=scenario_dir)
    lam, mu, m = _capacity(scenario)
    # The resolved table (load already turned into a rate), the files it names and the
    # version: a changed formula, trace or simulator gives new points instead of stale ones.
    point_id = _digest({"table": table_with_seed, "params": params, "files": dict(files),
                        "version": __version__})[:16]
    return Point(point_id=point_id, params=dict(params), seed=seed, table=table_with_seed,
                 lambda_star=lam, token_capacity=mu, mean_tokens=m)


def _file_digests(point_table: Mapping[str, Any], scenario_dir: Path | None,
                  cache: dict[str, str | None]) -> dict[str, str]:
    """Content hashes of the files a point's scenario names (traces, profiles), by name.

    Any string value naming an existing file counts; ``cache`` keeps each name's hash (None
    for a string that names no file) so every file is read once per sweep.
    """
    out: dict[str, str] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str) and node:
            if node not in cache:
                cache[node] = _file_hash(node, scenario_dir)
            if cache[node] is not None:
                out[node] = cache[node]

    walk(point_table)
    return out


def _file_hash(name: str, scenario_dir: Path | None) -> str | None:
    path = Path(name)
    if not path.is_absolute() and scenario_dir is not None:
        path = scenario_dir / path
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    except (OSError, ValueError):
        return None


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
