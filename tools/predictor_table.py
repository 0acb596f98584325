"""The per-model accuracy table of the learned output-length predictor, from the AlpacaEval files.

For each serving model and head (TF-IDF embedder), 5-fold cross-validation split by prompt;
the pooled held-out predictions are scored against the true lengths, next to the
prompt-length-only baseline fitted on the same folds. Prints the Markdown table; with
``--docs docs/predictions.md`` it also replaces the table between the markers in that file.

    nice -n 19 .venv/bin/python tools/predictor_table.py --data ../shared/data \\
        --docs docs/predictions.md --json predictor_table.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from servesim.predictors.learned.data import dataset_of, read_lengths, read_prompts
from servesim.predictors.learned.evaluate import cross_validate

MODELS = ("gpt4_1106_preview", "gpt-4o-2024-05-13", "claude-3-opus-20240229",
          "Meta-Llama-3-70B-Instruct", "llama-2-70b-chat-hf", "Mistral-7B-Instruct-v0.2",
          "Qwen1.5-72B-Chat", "vicuna-13b-v1.5", "zephyr-7b-beta")
HEADS = ("bins", "regression", "rank")
START, END = "<!-- predictor-table:start -->", "<!-- predictor-table:end -->"


def measure(data_dir: Path, models: list[str], heads: list[str], folds: int,
            seed: int) -> list[dict]:
    """One row per (model, head), plus the baseline row of each model (head "prompt length")."""
    prompts = read_prompts(data_dir / "alpacaeval_prompts.jsonl")
    lengths = read_lengths(data_dir / "alpacaeval_output_lengths.csv")
    rows = []
    for model in models:
        data = dataset_of(prompts, lengths, model)
        mean_tokens = float(np.mean(data.output_tokens))
        for head in heads:
            t0 = time.perf_counter()
            report = cross_validate(data, folds, head=head, seed=seed).report()
            print(f"{model} {head}: rho {report['spearman']:.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
            rows.append({"model": model, "head": head, "mean_tokens": mean_tokens, **report})
        base = dict(report["baseline"], folds=report["folds"])
        rows.append({"model": model, "head": "prompt length", "mean_tokens": mean_tokens, **base})
    return rows


def markdown(rows: list[dict], folds: int) -> str:
    lines = [f"{folds}-fold cross-validation split by prompt; TF-IDF embedder; bins: 8 on a log "
             "scale between the 1st and 99th percentile of the model's lengths.", "",
             "| serving model | prompts | mean output (tokens) | head | MAE (tokens) | "
             "Spearman ρ | Kendall τ | bin accuracy |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['n_prompts']} | {r['mean_tokens']:.0f} | {r['head']} "
                     f"| {r['mae_tokens']:.0f} | {r['spearman']:.3f} | {r['kendall_tau']:.3f} "
                     f"| {r['bin_accuracy']:.3f} |")
    return "\n".join(lines) + "\n"


def replace_between_markers(doc: Path, table: str) -> None:
    text = doc.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{doc}: no {START} ... {END} markers to replace between")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{table}{END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--heads", nargs="+", default=list(HEADS))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--docs", type=Path, default=None, help="Markdown file to update in place.")
    ap.add_argument("--json", type=Path, default=None, help="Also write the rows as JSON.")
    args = ap.parse_args(argv)
    rows = measure(args.data, args.models, args.heads, args.folds, args.seed)
    table = markdown(rows, args.folds)
    print(table, end="")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    if args.docs is not None:
        replace_between_markers(args.docs, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
