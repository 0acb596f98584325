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
        shown: str | None = None,
    ) -> None:
        self.field = field
        self.value = value
        self.expected = expected
        self.suggestion = closest(value, choices) if choices is not None else None
        # ``shown`` replaces repr(value) in the message, to add a unit: "got 2 (32 tokens)".
        message = f"{field}: got {repr(value) if shown is None else shown}, expected {expected}"
        if self.suggestion is not None:
            message += f"; did you mean {self.suggestion!r}?"
        super().__init__(message)


class TraceError(ServesimError, ValueError):
    """A trace file has a row servesim cannot read.

    The message is ``path:line:column: problem`` (1-based line and column; the column is left
    out when unknown, the line too when the problem is the whole file, e.g. an empty one).
    """

    def __init__(self, path: str, line: int | None, problem: str, *,
                 column: int | None = None) -> None:
        self.path = path
        self.line = line
        self.column = column
        where = str(path)
        if line is not None:
            where += f":{line}" + (f":{column}" if column is not None else "")
        super().__init__(f"{where}: {problem}")


def file_error(path: str, problem: str) -> ConfigError:
    """A ConfigError about a whole file, whose message is ``<path>: <problem>`` on one line."""
    err = ConfigError(str(path), None, problem)
    err.args = (f"{path}: {problem}",)
    return err


class SimulationError(ServesimError, RuntimeError):
    """The simulation reached a state its invariants forbid; this is a servesim bug or misuse."""


def closest(value: object, choices: Iterable[str] | None) -> str | None:
    """Return the valid name nearest to ``value``, or None if nothing is close."""
    if not isinstance(value, str) or choices is None:
        return None
    matches = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None
