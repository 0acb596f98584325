"""Print the fidelity table (markdown) of observed runs: one row per run folder holding
fidelity.json (``servesim fidelity --json``) and summary.json (``servesim observe``).

Usage: python table.py DIR [DIR ...]   (project venv)
A DIR holding fidelity.json is one run (rows in argument order); any other DIR contributes its
run folders, sorted by name.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = ("run", "requests", "load avg (start→end, 1 min)", "obs. throughput (req/s)",
           "E2E mean", "E2E p50", "E2E p90", "TTFT mean", "TTFT p90", "ITL mean", "TPOT mean",
           "throughput", "E2E median per request", "verdict obs/sim")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f}%"


def _load(summary: dict) -> str:
    load = summary.get("load_average") or {}
    start, end = load.get("start"), load.get("end")
    if not start or not end:
        return "n/a"
    return f"{start[0]:.2f}→{end[0]:.2f}"


def row(folder: Path) -> list[str]:
    report = json.loads((folder / "fidelity.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    m = report["metrics"]
    thr = report["throughput_rps"]
    return [folder.name, str(report["requests"]["compared"]), _load(summary),
            f"{thr['observed']:.3f}" if thr.get("observed") else "n/a",
            _pct(m["e2e_s"]["mean"]["rel_error"]), _pct(m["e2e_s"]["p50"]["rel_error"]),
            _pct(m["e2e_s"]["p90"]["rel_error"]), _pct(m["ttft_s"]["mean"]["rel_error"]),
            _pct(m["ttft_s"]["p90"]["rel_error"]), _pct(m["itl_s"]["mean"]["rel_error"]),
            _pct(m["tpot_s"]["mean"]["rel_error"]), _pct(thr.get("rel_error")),
            f"{100 * report['e2e_median_request_rel_error']:.1f}%",
            f"{report['verdict']['observed']}/{report['verdict']['simulated']}"]


def main(argv: list[str]) -> None:
    folders: list[Path] = []
    for arg in map(Path, argv[1:]):
        if (arg / "fidelity.json").exists():
            folders.append(arg)
        else:
            folders += sorted(f for f in arg.iterdir() if (f / "fidelity.json").exists())
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for folder in folders:
        print("| " + " | ".join(row(folder)) + " |")


if __name__ == "__main__":
    main(sys.argv)
