"""Reading the project's TOML files (scenarios, networks, sweeps) with one-line errors."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from servesim.core.errors import ConfigError


def read_toml(path: str | Path, kind: str = "scenario") -> dict[str, Any]:
    """Parse the TOML file at ``path``; ``kind`` names it in errors ("scenario", "sweep", ...).

    Raises ConfigError if the file is missing, unreadable or not UTF-8, or not valid TOML; the
    last gives the file and the parser's line and column on one line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(kind, str(path), f"an existing {kind} file") from None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(kind, str(path), f"a readable UTF-8 TOML file ({reason})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise syntax_error(str(path), "invalid TOML", e) from None


def syntax_error(where: str, what: str, e: Exception) -> ConfigError:
    """A ConfigError whose message is ``<where>: <what>: <parser message>`` on one line."""
    detail = " ".join(str(e).split())
    err = ConfigError(where, None, what)
    err.args = (f"{where}: {what}: {detail}",)
    return err
