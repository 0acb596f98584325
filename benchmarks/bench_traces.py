"""Trace reading speed: rows per second of each trace reader on synthetic files.

Run from anywhere (the installed ``servesim`` is imported)::

    python benchmarks/bench_traces.py [--rows N] [--repeat R] [--quick]

Each reader (Azure CSV, lengths-only CSV, generic CSV with arrival times in ms, Mooncake JSONL)
reads a file of ``--rows`` rows (default 200,000) written beforehand into a temporary folder that
is removed at the end; nothing else is written. Row contents cycle through prompts of 1-900 and
outputs of 1-300 tokens, with Azure timestamps 0.1 s apart. The best wall time of ``--repeat``
rounds (default 3) counts, with its CPU time beside it, so contention from other processes shows.
Target: at least 40,000 rows per wall second for the Azure reader (20,000 rows in 0.5 s), the
size of a day of the public Azure conversation trace in under a second. Exit status 0 either
way: this is a report. ``--quick`` reads 20,000 rows once and enforces no target.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGET_ROWS_PER_S = 40_000.0


def _azure(i: int) -> str:
    return (f"2023-11-16 18:{i // 600 % 60:02d}:{i // 10 % 60:02d}.{i % 10}000000,"
            f"{i % 900 + 1},{i % 300 + 1}\n")


def write_files(folder: Path, rows: int) -> dict[str, Path]:
    """One file per reader, ``rows`` rows each."""
    texts = {
        "azure.csv": "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                     + "".join(_azure(i) for i in range(rows)),
        "lengths.csv": "num_prefill_tokens,num_decode_tokens\n"
                       + "".join(f"{i % 900 + 1},{i % 300 + 1}\n" for i in range(rows)),
        "generic.csv": "t_ms,in,out\n"
                       + "".join(f"{100 * i},{i % 900 + 1},{i % 300 + 1}\n" for i in range(rows)),
        "mooncake.jsonl": "".join(json.dumps({"timestamp": 100 * i, "input_length": i % 900 + 1,
                                              "output_length": i % 300 + 1, "hash_ids": [0, 1]})
                                  + "\n" for i in range(rows)),
    }
    paths = {}
    for name, text in texts.items():
        paths[name] = folder / name
        paths[name].write_text(text, encoding="utf-8")
    return paths


def readers(paths: dict[str, Path]) -> dict[str, Callable[[], Any]]:
    from servesim.workload.traces import read_azure, read_csv, read_lengths_csv, read_mooncake

    columns = {"arrival_ms": "t_ms", "prompt_tokens": "in", "output_tokens": "out"}
    return {"azure": lambda: read_azure(paths["azure.csv"]),
            "lengths csv": lambda: read_lengths_csv(paths["lengths.csv"]),
            "generic csv": lambda: read_csv(paths["generic.csv"], columns),
            "mooncake": lambda: read_mooncake(paths["mooncake.jsonl"])}


def best_time(read: Callable[[], Any], rows: int, repeat: int) -> tuple[float, float]:
    """The best (wall s, CPU s) of ``repeat`` reads; checks every read returns ``rows`` rows."""
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        got = len(read())
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if got != rows:
            raise SystemExit(f"reader returned {got} rows, expected {rows}")
        best = min(best, (wall, cpu))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows per file")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best counts")
    parser.add_argument("--quick", action="store_true", help="20,000 rows, 1 round, no target")
    args = parser.parse_args(argv)
    rows, repeat = (20_000, 1) if args.quick else (args.rows, args.repeat)
    with tempfile.TemporaryDirectory(prefix="bench_traces_") as tmp:
        timed = {name: best_time(read, rows, repeat)
                 for name, read in readers(write_files(Path(tmp), rows)).items()}
    print(f"{rows:,} rows per file, best of {repeat}")
    print("| reader | wall s | CPU s | rows / wall s |")
    print("|---|---|---|---|")
    for name, (wall, cpu) in timed.items():
        print(f"| {name} | {wall:.3f} | {cpu:.3f} | {rows / wall:,.0f} |")
    if not args.quick:
        rate = rows / timed["azure"][0]
        verdict = "met" if rate >= TARGET_ROWS_PER_S else "MISS"
        print(f"azure: {rate:,.0f} rows / s, target >= {TARGET_ROWS_PER_S:,.0f}: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
