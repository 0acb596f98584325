"""Training data: prompts (JSONL) and the output lengths of serving models (CSV), joined.

The prompts file has one JSON object per line with ``prompt_id`` (an integer) and
``instruction`` (the prompt text); ``prompt_tokens`` is read when present, otherwise the prompt
length is its whitespace-word count (the emulator's token convention). The lengths file is a
CSV with the header columns ``prompt_id``, ``generator`` (the serving model) and
``output_tokens``; other columns are ignored. These are the shapes of the shared AlpacaEval
files. Without an explicit lengths file, ``alpacaeval_output_lengths.csv`` beside the prompts
file is used, unless the prompts file holds both: rows that also carry ``generator`` and
``output_tokens`` (a prompt then appears once per generator, with the same text).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from servesim.core.errors import ConfigError, TraceError, file_error

DEFAULT_LENGTHS = "alpacaeval_output_lengths.csv"
LENGTH_COLUMNS = ("prompt_id", "generator", "output_tokens")


@dataclass(frozen=True)
class Prompts:
    """Prompts in file order: ids, texts and lengths (tokens)."""

    ids: np.ndarray
    texts: list[str]
    prompt_tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class Dataset:
    """One serving model's rows: a prompt and the length of that model's output to it."""

    target_model: str
    prompt_ids: np.ndarray
    texts: list[str]
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


def read_prompts(path: str | Path) -> Prompts:
    """Read a prompts JSONL file (each prompt once, in file order).

    Raises TraceError (``path:line``) for a line that is not a JSON object, lacks
    ``prompt_id`` or ``instruction``, has a non-integer id, or repeats an id (allowed only in
    the one-file form, with the same text); ConfigError if the file is missing or empty.
    """
    return read_jsonl(path)[0]


def read_jsonl(path: str | Path) -> tuple[Prompts, dict[str, dict[int, int]]]:
    """The prompts of a JSONL file and the lengths its rows carry ({} in the two-file form)."""
    path = Path(path)
    if not path.is_file():
        raise file_error(str(path), "no such prompts file")
    ids: list[int] = []
    texts: list[str] = []
    tokens: list[int] = []
    seen: dict[int, str] = {}
    lengths: dict[str, dict[int, int]] = {}
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            pid, text, n, row = _prompt_row(str(path), line_no, line)
            joined = _joined_length(str(path), line_no, row)
            if pid in seen and (joined is None or seen[pid] != text):
                raise TraceError(str(path), line_no, f"prompt_id {pid} appears twice")
            if joined is not None:
                lengths.setdefault(joined[0], {})[pid] = joined[1]
            if pid not in seen:
                seen[pid] = text
                ids.append(pid)
                texts.append(text)
                tokens.append(n)
    if not ids:
        raise file_error(str(path), "holds no prompt")
    prompts = Prompts(np.array(ids, dtype=np.int64), texts, np.array(tokens, dtype=np.int64))
    return prompts, lengths


def _joined_length(path: str, line_no: int, row: dict) -> tuple[str, int] | None:
    """(generator, output_tokens) of a one-file row, or None for a prompt-only row."""
    if "output_tokens" not in row:
        return None
    gen, n = row.get("generator"), row["output_tokens"]
    if not isinstance(gen, str):
        raise TraceError(path, line_no, "a row with output_tokens needs a generator (a string)")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise TraceError(path, line_no, f"output_tokens must be an integer >= 1, got {n!r}")
    return gen, n


def _prompt_row(path: str, line_no: int, line: str) -> tuple[int, str, int, dict]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise TraceError(path, line_no, f"not JSON ({err.msg})", column=err.colno) from None
    if not isinstance(row, dict):
        raise TraceError(path, line_no, "expected a JSON object with prompt_id and instruction")
    for key in ("prompt_id", "instruction"):
        if key not in row:
            raise TraceError(path, line_no, f"missing field {key!r}")
    pid, text = row["prompt_id"], row["instruction"]
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise TraceError(path, line_no, f"prompt_id must be an integer, got {pid!r}")
    if not isinstance(text, str):
        raise TraceError(path, line_no, "instruction must be a string")
    n = row.get("prompt_tokens")
    if n is None:
        n = len(text.split())
    elif isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise TraceError(path, line_no, f"prompt_tokens must be an integer >= 0, got {n!r}")
    return pid, text, n, row


def lengths_path_for(prompts_path: str | Path, lengths: str | Path | None) -> Path:
    """The lengths file: ``lengths`` if given, else the AlpacaEval file beside the prompts."""
    return Path(lengths) if lengths is not None else Path(prompts_path).parent / DEFAULT_LENGTHS


def read_lengths(path: str | Path) -> dict[str, dict[int, int]]:
    """Read a lengths CSV into {generator: {prompt_id: output_tokens}}.

    Raises ConfigError if the file is missing or lacks a column; TraceError (``path:line``)
    for a row whose id or length is not an integer >= 0 (ids) or >= 1 (lengths).
    """
    path = Path(path)
    if not path.is_file():
        raise file_error(str(path), "no such lengths file (give one with --lengths)")
    out: dict[str, dict[int, int]] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None) or []
        missing = [c for c in LENGTH_COLUMNS if c not in header]
        if missing:
            raise file_error(str(path), f"missing column {missing[0]!r}; expected a header "
                             "with prompt_id, generator, output_tokens")
        cols = [header.index(c) for c in LENGTH_COLUMNS]
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                pid, gen, n = (row[c] for c in cols)
                pid_i, n_i = int(pid), int(n)
            except (ValueError, IndexError):
                raise TraceError(str(path), line_no,
                                 "expected integer prompt_id and output_tokens") from None
            if pid_i < 0 or n_i < 1:
                raise TraceError(str(path), line_no, "expected prompt_id >= 0, output_tokens >= 1")
            out.setdefault(gen, {})[pid_i] = n_i
    return out


def model_names(lengths: dict[str, dict[int, int]]) -> list[str]:
    return sorted(lengths)


def check_model(lengths: dict[str, dict[int, int]], target_model: str,
                field: str = "--target-model") -> dict[int, int]:
    """The rows of ``target_model``; ConfigError naming the closest model if it is unknown."""
    if target_model in lengths:
        return lengths[target_model]
    names = model_names(lengths)
    # A name the user shortened ("gpt4_1106" for "gpt4_1106_preview") suggests its completion.
    longer = [n for n in names if isinstance(target_model, str) and n.startswith(target_model)]
    raise ConfigError(field, target_model,
                      f"a serving model of the lengths file ({len(lengths)} models)",
                      choices=sorted(longer, key=len)[:1] or names)


def load_dataset(prompts_path: str | Path, target_model: str,
                 lengths_path: str | Path | None = None) -> Dataset:
    """The prompts that ``target_model`` answered, in prompts-file order, with its lengths:
    from ``lengths_path`` if given, else from the prompts file's own rows (the one-file form),
    else from the AlpacaEval CSV beside it.

    Raises as ``read_prompts`` and ``read_lengths``; ConfigError for an unknown model (closest
    name suggested) or one with no row for any prompt of the file.
    """
    prompts, own = read_jsonl(prompts_path)
    if lengths_path is None and own:
        return dataset_of(prompts, own, target_model)
    lengths = read_lengths(lengths_path_for(prompts_path, lengths_path))
    return dataset_of(prompts, lengths, target_model)


def dataset_of(prompts: Prompts, lengths: dict[str, dict[int, int]],
               target_model: str) -> Dataset:
    """``load_dataset`` on files already read (one read serves many target models)."""
    rows = check_model(lengths, target_model)
    keep = [i for i, pid in enumerate(prompts.ids.tolist()) if pid in rows]
    if not keep:
        raise ConfigError("--target-model", target_model,
                          "a model with output lengths for prompts of the prompts file")
    idx = np.array(keep, dtype=np.int64)
    ids = prompts.ids[idx]
    outputs = np.array([rows[int(pid)] for pid in ids], dtype=np.int64)
    return Dataset(target_model, ids, [prompts.texts[i] for i in keep],
                   prompts.prompt_tokens[idx], outputs)
