"""Errors: one base class, and a config error whose message is a single actionable line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ServesimError(Exception):
    """Base class of every error servesim raises on purpose."""


class ConfigError(ServesimError, ValueError):
    """A scenario field has a value servesim cannot use.

    The message names the field, the value, what was expected and, where one exists, the closest
    valid name, e.g. ``engine.batching: got 'sarathy', expected one of fastertransformer, orca,
    sarathi, ...; did you mean 'sarathi'?``.
    """

    def __init__(
        self,
        field: str,
        value: object,
        expected: str,
        *,
        choices: Iterable[str] | None = None,
    ) -> None:
        self.field = field
        self.value = value
        self.expected = expected
        self.suggestion = closest(value, choices) if choices is not None else None
        message = f"{field}: got {value!r}, expected {expected}"
        if self.suggestion is not None:
            message += f"; did you mean {self.suggestion!r}?"
        super().__init__(message)


class TraceError(ServesimError, ValueError):
    """A trace file has a row servesim cannot read; the message carries path and line number."""

    def __init__(self, path: str, line: int, problem: str) -> None:
        self.path = path
        self.line = line
        super().__init__(f"{path}:{line}: {problem}")


class SimulationError(ServesimError, RuntimeError):
    """The simulation reached a state its invariants forbid; this is a servesim bug or misuse."""


def closest(value: object, choices: Iterable[str] | None) -> str | None:
    """Return the valid name nearest to ``value``, or None if nothing is close."""
    if not isinstance(value, str) or choices is None:
        return None
    matches = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None
