"""The line of a TOML file where a field path such as ``mg1.policies[1].kind`` was written.

``tomllib`` returns plain dicts without positions, so a bad value found after parsing is
located again in the text: the deepest table header or key on the field's path, and within an
array the line its i-th element starts on. It is a best effort for messages only: a field that
cannot be found keeps its message without a location.
"""

from __future__ import annotations

import re
from pathlib import Path

from servesim.core.errors import ConfigError

__all__ = ["field_line", "with_location"]

_HEADER = re.compile(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$")
_KEY = re.compile(r"""^\s*(?:"([^"]+)"|'([^']+)'|([A-Za-z0-9_-]+))\s*=""")
_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def with_location(err: ConfigError, path: Path) -> ConfigError:
    """``err`` with ``path:line:`` before its field when the field's line can be found."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return err
    line = field_line(text, err.field)
    if line is None:
        return err
    # The same field, value and suggestion; only the message gains the place.
    located = ConfigError.__new__(ConfigError)
    located.__dict__.update(err.__dict__)
    located.args = (f"{path}:{line}: {err}",)
    return located


def field_line(text: str, field: str) -> int | None:
    """The 1-based line of ``field`` (dotted keys, ``[i]`` array indices) in ``text``, or None."""
    parts = _parts(field)
    keys = [p for p in parts if isinstance(p, str)]
    best, best_len, best_at = None, 0, -1
    offset, table = 0, []
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        header = _HEADER.match(line)
        if header:
            table = [k.strip().strip("\"'") for k in header.group(1).split(".")]
            path = table
        else:
            key = _KEY.match(line)
            path = [*table, next(g for g in key.groups() if g)] if key else []
        if path and len(path) > best_len and keys[:len(path)] == path:
            best, best_len, best_at = number, len(path), -1 if header else offset
        offset += len(line)
    if best is None or best_at < 0:
        return best
    index = _index_after(parts, best_len)
    if index is None:
        return best
    found = _element_offset(text, text.index("=", best_at) + 1, index)
    return best if found is None else text.count("\n", 0, found) + 1


def _parts(field: str) -> list[str | int]:
    return [int(m.group(1)) if m.group(1) else m.group(2) for m in _PART.finditer(field)]


def _index_after(parts: list[str | int], n_keys: int) -> int | None:
    """The array index right after the first ``n_keys`` keys of ``parts``, if any."""
    seen = 0
    for i, p in enumerate(parts):
        if isinstance(p, str):
            seen += 1
            if seen == n_keys:
                nxt = parts[i + 1] if i + 1 < len(parts) else None
                return nxt if isinstance(nxt, int) else None
    return None


def _element_offset(text: str, start: int, index: int) -> int | None:
    """Where element ``index`` of the array value starting after ``start`` begins."""
    j = text.find("[", start)
    if j < 0:
        return None
    depth, count, expecting, j = 0, -1, True, j + 1
    while j < len(text):
        ch = text[j]
        if ch.isspace():
            j += 1
            continue
        if ch == "#":
            j = text.find("\n", j)
            if j < 0:
                return None
            continue
        if depth == 0:
            if ch == "]":
                return None
            if ch == ",":
                expecting, j = True, j + 1
                continue
            if expecting:
                count, expecting = count + 1, False
                if count == index:
                    return j
        if ch in "\"'":
            j = _string_end(text, j)
            continue
        depth += (ch in "[{") - (ch in "]}")
        j += 1
    return None


def _string_end(text: str, j: int) -> int:
    """The offset just past the TOML string starting at ``j``."""
    quote = text[j]
    if text.startswith(quote * 3, j):
        end = text.find(quote * 3, j + 3)
        return len(text) if end < 0 else end + 3
    k = j + 1
    while k < len(text) and text[k] != quote and text[k] != "\n":
        k += 2 if quote == '"' and text[k] == "\\" else 1
    return k + 1
