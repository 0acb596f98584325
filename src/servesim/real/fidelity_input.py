"""Reading an observed run for the fidelity replay: ``requests.parquet`` (the simulator's
request columns plus ``token_times_s`` and ``prompt_tokens_server``), ``summary.json``, and the
server settings it reports, checked against the scenario's engine."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from servesim.core.errors import ConfigError

__all__ = ["REQUIRED_COLUMNS", "Observed", "load_observed", "replay_prompt_tokens",
           "server_warnings"]

REQUIRED_COLUMNS = ("arrival_s", "prompt_tokens", "output_tokens", "status", "first_token_s",
                    "finish_s")

# What a server may report (summary.json "server") -> the scenario field it should equal.
_SERVER_FIELDS = {
    "max_num_seqs": "engine.max_batch_size",
    "max_num_batched_tokens": "engine.token_budget",
    "long_prefill_token_threshold": "engine.chunk_tokens",
    "block_size": "engine.kv.block_tokens",
    "num_gpu_blocks": "engine.kv.blocks",
    "kv_cache_tokens": "engine.kv.blocks * engine.kv.block_tokens",
    "max_model_len": "engine.max_model_len",
}


@dataclass
class Observed:
    """An observed run as read from its folder.

    Attributes:
        path: the folder.
        records: the rows of ``requests.parquet``, in file order.
        token_times: per row, its output tokens' times (seconds from the run start).
        summary: ``summary.json`` ({} when absent).
        has_token_times: whether the file has ``token_times_s`` (else ITL is not compared).
    """

    path: Path
    records: pd.DataFrame
    token_times: list[np.ndarray]
    summary: dict[str, Any]
    has_token_times: bool


def load_observed(folder: str | Path) -> Observed:
    """Read ``folder/requests.parquet`` (and ``summary.json`` if present).

    Raises ConfigError naming the folder or file if it is missing, unreadable, lacks a required
    column or holds no row.
    """
    path = Path(folder)
    if not path.is_dir():
        raise ConfigError("OBSERVED_DIR", str(path), "a folder holding an observed run's "
                          "requests.parquet (servesim observe --out)")
    table = path / "requests.parquet"
    if not table.is_file():
        raise ConfigError("OBSERVED_DIR", str(path), "a folder holding requests.parquet; "
                          "there is none")
    try:
        records = pd.read_parquet(table)
    except Exception as e:  # pyarrow raises several unrelated types for a damaged file
        raise ConfigError(str(table), "unreadable", f"a Parquet file ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from e
    missing = [c for c in REQUIRED_COLUMNS if c not in records.columns]
    if missing:
        raise ConfigError(str(table), f"columns {sorted(records.columns)}",
                          f"the observed schema; missing {', '.join(missing)}")
    if not len(records):
        raise ConfigError(str(table), "0 rows", "at least one observed request")
    _check_values(records, table)
    has_times = "token_times_s" in records.columns
    times = [_times(v) for v in records["token_times_s"]] if has_times \
        else [np.empty(0)] * len(records)
    return Observed(path, records.reset_index(drop=True), times, _summary(path), has_times)


def _check_values(records: pd.DataFrame, table: Path) -> None:
    arrival = pd.to_numeric(records["arrival_s"], errors="coerce").to_numpy(np.float64)
    if not np.isfinite(arrival).all() or (arrival < 0).any():
        raise ConfigError(f"{table}: arrival_s", "a missing or negative value",
                          "finite arrival times >= 0 s")
    for name in ("prompt_tokens", "output_tokens"):
        values = pd.to_numeric(records[name], errors="coerce").to_numpy(np.float64)
        bad = ~(np.isfinite(values) & (values >= 1) & (values == np.round(values)))
        if bad.any():
            row = int(np.argmax(bad))
            raise ConfigError(f"{table}: {name}", records[name].iloc[row],
                              f"an integer >= 1 in every row (row {row})")


def _times(value: Any) -> np.ndarray:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return np.empty(0)
    return np.asarray(value, dtype=np.float64)


def _summary(path: Path) -> dict[str, Any]:
    file = path / "summary.json"
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(str(file), "unreadable", f"a JSON object ({e})") from e
    return data if isinstance(data, dict) else {}


def _number(value: Any) -> float | None:
    """A reported setting as a number: ints and floats, or their text (metrics labels)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def server_warnings(summary: dict[str, Any], engine: Any) -> list[str]:
    """One line per setting the server reported (``summary["server"]``, its ``config`` labels
    included) that the scenario's engine does not match."""
    server = summary.get("server")
    if not isinstance(server, dict):
        return []
    reported = {**(server.get("config") if isinstance(server.get("config"), dict) else {}),
                **server}
    kv = engine.kv
    ours = {"max_num_seqs": engine.max_batch_size, "max_num_batched_tokens": engine.token_budget,
            "long_prefill_token_threshold": engine.chunk_tokens or 0,
            "block_size": kv.block_tokens, "num_gpu_blocks": kv.blocks,
            "kv_cache_tokens": kv.blocks * kv.block_tokens,
            # Without max_model_len the longest request is what the KV cache holds.
            "max_model_len": engine.length_limits[0] if engine.max_model_len is None
            else engine.max_model_len}
    out = []
    scale = _number(reported.get("time_scale"))
    if scale is not None and scale != 1.0:
        out.append(f"the server is servesim's emulator at time_scale = {scale:g}: its wall "
                   f"times are {scale:g} x the simulated ones, so every latency differs by that "
                   "factor (observe it with --time-scale 1)")
    for key, name in _SERVER_FIELDS.items():
        theirs = _number(reported.get(key))
        if theirs is None:
            continue
        mine = ours[key]
        if mine is None or theirs != float(mine):
            out.append(f"the server reported {key} = {theirs:g} but the scenario has "
                       f"{name} = {mine}")
    return out


def replay_prompt_tokens(records: pd.DataFrame) -> np.ndarray:
    """Per row: the server's prompt count where known (> 0), else the requested one."""
    asked = records["prompt_tokens"].to_numpy(np.int64)
    if "prompt_tokens_server" not in records.columns:
        return asked
    server = pd.to_numeric(records["prompt_tokens_server"], errors="coerce").fillna(-1)
    server = server.to_numpy(np.int64)
    return np.where(server > 0, server, asked)
