"""Registries are plain dicts from a name to a factory; an unknown name suggests the closest."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from servesim.core.errors import ConfigError

T = TypeVar("T")


def lookup(registry: Mapping[str, T], name: object, field: str) -> T:
    """Return ``registry[name]``.

    Raises ConfigError naming ``field`` and the closest registered name if ``name`` is unknown.
    """
    if isinstance(name, str) and name in registry:
        return registry[name]
    names = sorted(registry)
    raise ConfigError(field, name, "one of " + ", ".join(names), choices=names)
