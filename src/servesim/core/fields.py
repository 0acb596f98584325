"""Small validators shared by every config factory; each raises ConfigError naming the field."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from servesim.core.errors import ConfigError


def check_keys(table: Mapping[str, Any], field: str, allowed: Iterable[str]) -> None:
    """Raise ConfigError for the first key of ``table`` not in ``allowed``.

    The error quotes the key itself, so the suggestion comes from the key: ``[engin]`` suggests
    ``engine`` whatever its value.
    """
    allowed = list(allowed)
    for key in table:
        if key not in allowed:
            raise ConfigError(
                f"{field}.{key}" if field else key,
                key,
                "a known field; valid fields are " + ", ".join(sorted(allowed)),
                choices=allowed,
            )


def require(table: Mapping[str, Any], key: str, field: str) -> Any:
    """Return ``table[key]``; raise ConfigError if the field is missing."""
    if key not in table:
        raise ConfigError(f"{field}.{key}", None, "a value (the field is required)")
    return table[key]


def number(value: Any, field: str, *, low: float | None = None, low_open: bool = False,
           high: float | None = None) -> float:
    """Return ``value`` as a float within bounds; raise ConfigError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(field, value, "a number")
    v = float(value)
    if v != v or v in (float("inf"), float("-inf")):
        raise ConfigError(field, value, "a finite number")
    if low is not None and (v < low or (low_open and v == low)):
        raise ConfigError(field, value, f"a number {'>' if low_open else '>='} {low:g}")
    if high is not None and v > high:
        raise ConfigError(field, value, f"a number <= {high:g}")
    return v


# Where float64 stops meaning anything for an engine whose iterations take microseconds to
# seconds: at 1e9 s (about 31 years) the clock still resolves 0.1 us, beyond it an iteration's
# duration starts to vanish when added to the clock (latencies of 0 from precision loss).
MAX_TIME_S = 1e9
# Arrival rates outside this range put arrivals beyond MAX_TIME_S or closer than a nanosecond.
MIN_RATE_PER_S = 1e-9
MAX_RATE_PER_S = 1e9


def seconds(value: Any, field: str, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a time in seconds: finite, > 0 (>= 0 with ``allow_zero``) and at most
    ``MAX_TIME_S``; raise ConfigError otherwise."""
    v = number(value, field)
    if v < 0 or (v == 0 and not allow_zero) or v > MAX_TIME_S:
        low = ">= 0" if allow_zero else "> 0"
        raise ConfigError(field, value, f"a time in seconds {low} and <= {MAX_TIME_S:g} (beyond "
                          "it float64 times lose sub-microsecond precision)")
    return v


def rate_per_s(value: Any, field: str, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a rate per second in [MIN_RATE_PER_S, MAX_RATE_PER_S] (or exactly 0
    with ``allow_zero``); raise ConfigError otherwise."""
    v = number(value, field)
    if not (MIN_RATE_PER_S <= v <= MAX_RATE_PER_S or (allow_zero and v == 0)):
        within = f"[{MIN_RATE_PER_S:g}, {MAX_RATE_PER_S:g}]"
        what = f">= 0 per second: 0 or within {within}" if allow_zero else \
            f"> 0 per second within {within}"
        raise ConfigError(field, value, f"a rate {what} (outside that range float64 arrival "
                          "times lose their meaning)")
    return v


def integer(value: Any, field: str, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an int within bounds; raise ConfigError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ConfigError(field, value, "an integer")
    if low is not None and value < low:
        raise ConfigError(field, value, f"an integer >= {low}")
    if high is not None and value > high:
        raise ConfigError(field, value, f"an integer <= {high}")
    return int(value)


def table(value: Any, field: str) -> Mapping[str, Any]:
    """Return ``value`` if it is a table (dict); raise ConfigError otherwise."""
    if not isinstance(value, Mapping):
        raise ConfigError(field, value, "a table such as { kind = ... }")
    return value
