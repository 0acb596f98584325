"""Whether a finished point's files are whole: their sizes and SHA-256 hashes in ``point.json``.

A point's files are moved into place atomically, but a rename is not a flush to disk: after a
power loss or a full disk a file can be left shorter than it was written, and a user can
truncate or edit one by mistake. ``point.json``, written last, records every file's size in
bytes and its hash, so that

- resuming a sweep counts a point as finished only if every file still matches (and reruns it
  otherwise, saying which file was damaged);
- ``query`` and ``report``, when DuckDB cannot read a Parquet file, name the damaged point and
  file and say that running the sweep again repairs it, instead of blaming the catalogue.

Hashing reads each finished point's files once per resume, which costs far less than
simulating any of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servesim.core.errors import ConfigError

__all__ = ["FILES_KEY", "Damage", "damage_error", "digest_files", "file_problem",
           "find_damage"]

FILES_KEY = "files"
"""The key of ``point.json`` that maps each file name to ``{"bytes": n, "sha256": hex}``."""

PARQUET_MAGIC = b"PAR1"
"""The four bytes a Parquet file starts and ends with."""


def digest_files(folder: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Size in bytes and SHA-256 of each named file in ``folder``.

    Raises OSError if a file cannot be read.
    """
    return {name: {"bytes": (folder / name).stat().st_size, "sha256": _sha256(folder / name)}
            for name in names}


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_problem(folder: Path, record: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first file of a finished point that does not match its ``point.json`` record, as
    (file name, what is wrong with it), or None if every file matches.

    Sizes are compared before any hash is computed, so a truncated file costs one ``stat``.
    A record without file digests cannot vouch for its files, so it counts as a mismatch.
    """
    files = record.get(FILES_KEY)
    if not isinstance(files, dict) or not files:
        return "point.json", "records no file sizes or hashes"
    for name, want in files.items():
        try:
            size = (folder / name).stat().st_size
        except OSError:
            return name, "is missing"
        if size != want.get("bytes"):
            return name, f"is damaged (size {size} bytes, expected {want.get('bytes')})"
    for name, want in files.items():
        try:
            digest = _sha256(folder / name)
        except OSError as e:
            return name, f"cannot be read ({e.strerror or e})"
        if digest != want.get("sha256"):
            return name, "is damaged (its SHA-256 differs from the one in point.json)"
    return None


@dataclass(frozen=True)
class Damage:
    """A damaged file in a sweep folder.

    Attributes:
        folder: the point's folder.
        file: the file's name.
        problem: what is wrong with it ("is damaged (size 500 bytes, expected 12338)").
        record: the point's ``point.json`` record; None for a point that never finished.
    """

    folder: Path
    file: str
    problem: str
    record: dict[str, Any] | None


def find_damage(out_dir: str | Path, hint: str = "") -> Damage | None:
    """The first damaged file under ``out_dir/points``, or None if every file is whole.

    A finished point's files are checked against its ``point.json``; the Parquet files of a
    point that never finished (no ``point.json``) only for the bytes that open and close every
    Parquet file. The folder whose path appears in ``hint`` (a DuckDB error message) is
    checked first.
    """
    from servesim.experiments.runner import POINT_RECORD, read_record

    folders = sorted(Path(out_dir).glob("points/point_id=*"))
    named = [f for f in folders if f.name in hint]
    for folder in [*named, *(f for f in folders if f not in named)]:
        if not (folder / POINT_RECORD).exists():
            damage = _unfinished_damage(folder)
        else:
            record = read_record(out_dir, folder.name.split("=", 1)[1])
            if record is None:
                damage = Damage(folder, POINT_RECORD, "is unreadable", None)
            else:
                found = file_problem(folder, record)
                damage = Damage(folder, *found, record) if found is not None else None
        if damage is not None:
            return damage
    return None


def _unfinished_damage(folder: Path) -> Damage | None:
    for path in sorted(folder.glob("*.parquet")):
        try:
            with path.open("rb") as f:
                head = f.read(4)
                f.seek(max(path.stat().st_size - 4, 0))
                tail = f.read(4)
        except OSError:
            continue
        if head != PARQUET_MAGIC or tail != PARQUET_MAGIC:
            return Damage(folder, path.name, "is damaged (not a whole Parquet file)", None)
    return None


def damage_error(out_dir: str | Path, damage: Damage) -> ConfigError:
    """A damaged file as one line: the file, what is wrong, and how to repair it."""
    from servesim.experiments.runner import describe

    path = damage.folder / damage.file
    if damage.record is None:
        return ConfigError(str(path), damage.problem.removeprefix("is "),
                           f"whole files; the point is not recorded as finished, so remove "
                           f"{damage.folder} or run its sweep into {out_dir} again, which "
                           "reruns it")
    point = damage.record.get("point_id")
    what = describe(damage.record.get("params", {}), damage.record.get("seed"))
    return ConfigError(str(path), damage.problem.removeprefix("is "),
                       f"the file point {point} ({what}) finished with; run the sweep into "
                       f"{out_dir} again (servesim sweep SWEEP.toml --out {out_dir}), which "
                       "reruns the damaged point")
