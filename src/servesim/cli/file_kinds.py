"""The kinds of TOML file servesim reads, told apart by their tables: a scenario (``[run]``,
``[workload]``, ``[engine]``), a network (``[network]``), a sweep (``[sweep]``) or an M/G/1
table (``[mg1]``). ``servesim validate`` checks each as what it is; the commands that take a
scenario say which command runs another kind, rather than suggesting a scenario table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from servesim.core.errors import ConfigError
from servesim.core.tomlfile import read_toml

if TYPE_CHECKING:
    from servesim.scenario import Scenario

__all__ = ["COMMAND_FOR", "file_kind", "load_cli_scenario", "validate_other"]

COMMAND_FOR = {"network": "servesim network {path}", "sweep": "servesim sweep {path} --out DIR",
               "mg1": "servesim theory {path}"}
"""The command that runs each kind of file other than a scenario."""


def file_kind(raw: Mapping[str, Any]) -> str:
    """"network", "sweep" or "mg1" if the parsed file has that table, else "scenario"."""
    for kind in ("network", "sweep", "mg1"):
        if kind in raw:
            return kind
    return "scenario"


def load_cli_scenario(path: Path, overrides: Sequence[str] = ()) -> Scenario:
    """``load_scenario``, but a network, sweep or M/G/1 file gets an error naming the command
    that runs it.

    Raises ConfigError as ``load_scenario`` does, or for a file of another kind.
    """
    from servesim.scenario import load_scenario

    kind = file_kind(read_toml(path, "scenario"))
    if kind != "scenario":
        raise ConfigError(str(path), f"[{kind}]",
                          "a scenario ([run], [workload], [engine]); this is a "
                          f"{_NAMES[kind]} file: run it with "
                          f"'{COMMAND_FOR[kind].format(path=path)}'")
    return load_scenario(path, overrides)


_NAMES = {"network": "network", "sweep": "sweep", "mg1": "M/G/1"}


def validate_other(path: Path, overrides: Sequence[str]) -> tuple[str, str, dict[str, Any]] | None:
    """Validate a network, sweep or M/G/1 file as what it is: (kind, one-line description, the
    table as read); None for a scenario file.

    Raises ConfigError for an invalid file, as the command that runs it would, or for
    overrides, which only scenarios take.
    """
    raw = read_toml(path, "scenario")
    kind = file_kind(raw)
    if kind == "scenario":
        return None
    if overrides:   # the commands that run these files take no --set either
        raise ConfigError("--set", list(overrides),
                          f"no --set for a {_NAMES[kind]} file ({COMMAND_FOR[kind].split()[1]} "
                          "takes none); edit the file instead")
    describe = {"network": _network, "sweep": _sweep, "mg1": _mg1}[kind]
    return kind, describe(raw, path), raw


def _network(raw: dict[str, Any], path: Path) -> str:
    from servesim.cluster.scenario import network_from_dict

    loaded = network_from_dict(raw, base_dir=path.resolve().parent)
    net = loaded.network
    engines = ", ".join(f"{name} ({e.config.batching}"
                        + (f" x{e.replicas})" if e.replicas > 1 else ")")
                        for name, e in net.engines.items())
    return (f"network of {len(net.engines)} engines: {engines}; {len(net.classes)} classes, "
            f"{len(net.workflows)} workflows; horizon {loaded.run.horizon_s:g} s; "
            f"run it with '{COMMAND_FOR['network'].format(path=path)}'")


def _sweep(raw: dict[str, Any], path: Path) -> str:
    from servesim.experiments.sweep import sweep_from_dict

    sweep = sweep_from_dict(raw, base_dir=path.resolve().parent, default_name=path.stem)
    axes = ", ".join(sweep.axes) if sweep.axes else "no axes"
    return (f"sweep {sweep.name!r}: {len(sweep.points)} points over {axes}; run it with "
            f"'{COMMAND_FOR['sweep'].format(path=path)}'")


def _mg1(raw: dict[str, Any], path: Path) -> str:
    from servesim.theory.mg1.spec import parse_mg1

    spec = parse_mg1(raw, str(path))
    return (f"M/G/1 table: {len(spec.policies)} policies ({', '.join(spec.policies)}) at "
            f"{len(spec.rates)} loads; run it with '{COMMAND_FOR['mg1'].format(path=path)}'")
