"""A learned output-length predictor in a KV-limited LLM engine, against the oracle and against
synthetic noise calibrated to the same MAE and to the same Kendall tau.

Run from the repository root (about 2-3 minutes on two cores; ``--quick``: a few seconds):

    python examples/learned_study.py [--out DIR] [--quick] [--seeds 0,1] [--loads 0.7,0.9]

The AlpacaEval prompts (``<repo>/../shared/data/alpacaeval_prompts.jsonl``) are replayed with
the real output lengths of each serving model (``alpacaeval_output_lengths.csv``): request i
is prompt i of the file, with that prompt's token count and that model's answer length, and
Poisson arrivals at load x lambda* (lambda* from ``servesim.theory.scenario_capacity``, the
compute capacity). Without the files the script says so and exits with status 0.

The engine (``ENGINE`` below): Llama-3-8B on one A100-80GB (roofline cost), a token budget of
512 per iteration, up to 256 running requests, and a KV cache cut to hold 70 requests of the
serving model's mean size (2,043 blocks of 16 tokens for gpt4_1106_preview) so that memory
binds; batching ``vllm_v1`` (vLLM's V1 scheduler, recompute preemption of the newest request)
and ``sarathi`` (chunked prefills). Priority preemption, for the preemptive orderings,
recomputes too.

Predictors, per serving model:

- ``oracle``: the true length;
- ``learned``: the TF-IDF rank head of ``servesim.predictors.learned``, 5-fold cross-validated
  by prompt, so every request's prediction comes from a model that never saw its prompt (the
  pooled out-of-fold predictions of ``cross_validate``, served by ``OutOfFold`` below);
- ``gauss_mae``: ``{kind = "gaussian", mae = m}`` with m the learned predictor's MAE;
- ``lognorm_tau``: ``{kind = "lognormal", sigma = s}`` with s chosen by bisection so that its
  Kendall tau with the true lengths (on this model's lengths, a fixed draw) is the learned one's.

Orderings: FCFS, SPJF, SPRPT and TRAIL with c = 0.5 and 1 under every predictor, and learning
to rank (``ltr``) under the learned predictor. ``ltr`` ranks by the score alone and does not
preempt, so on one predictor it orders as SPJF does; the run checks it and shows it once.

It prints the calibration and a markdown table (seed means; E2E and TTFT in seconds) and, with
``--out``, writes ``runs.csv``, ``table.csv`` and ``table.md`` there and nowhere else.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from servesim.core.rng import Streams
from servesim.engine.ordered import run_ordered
from servesim.policies.ordering import kendall_tau
from servesim.predictors.base import Predictor
from servesim.scenario import scenario_from_dict
from servesim.theory.capacity import scenario_capacity

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
PROMPTS = "alpacaeval_prompts.jsonl"
MODELS = ("gpt4_1106_preview", "vicuna-13b-v1.5")
BATCHING = ("vllm_v1", "sarathi")
LOADS = (0.7, 0.9)
FOLDS = 5
HEAD = "rank"
# The KV cache holds this many requests of the serving model's mean size (prompt + output):
# 70 gives 2,043 blocks for gpt4_1106_preview; scaling with the mean keeps memory binding
# about as hard for a model with shorter answers (a fixed cache would never fill for them).
KV_MEAN_REQUESTS = 70
ENGINE: dict[str, Any] = {
    "token_budget": 512, "max_batch_size": 256,
    "kv": {"block_tokens": 16, "preemption": "recompute", "victim": "newest"},
    "cost": {"kind": "roofline", "model": "llama-3-8b", "gpu": "a100-80gb"},
}
ORDERS: tuple[tuple[str, Any], ...] = (
    ("spjf", "spjf"), ("sprpt", "sprpt"),
    ("trail_c0.5", {"kind": "trail", "c": 0.5}), ("trail_c1", {"kind": "trail", "c": 1.0}))
PREDICTOR_NAMES = ("oracle", "learned", "gauss_mae", "lognorm_tau")
MAX_IN_SYSTEM = 4000   # an overloaded run stops here


class OutOfFold(Predictor):
    """Request i gets ``predictions[i mod N]``: fixed, precomputed predictions in trace order
    (here the pooled out-of-fold predictions of cross-validation)."""

    kind = "out_of_fold"

    def __init__(self, predictions: np.ndarray) -> None:
        super().__init__({"kind": self.kind, "n": int(len(predictions))})
        self.predictions = np.asarray(predictions, dtype=np.float64)

    def _draw(self, x: np.ndarray, prompt: np.ndarray | None,
              rng: np.random.Generator) -> np.ndarray:
        index = np.arange(x.size) % len(self.predictions)
        return self.predictions[index].reshape(x.shape)


def lognormal_sigma_for_tau(sizes: np.ndarray, tau: float, seed: int = 0,
                            draws: int = 8) -> float:
    """The sigma whose lognormal predictions x exp(sigma Z) have Kendall tau ``tau`` with
    ``sizes`` on average over ``draws`` fixed draws of Z (one draw's tau varies by about
    +-0.03 on 805 sizes; the mean falls as sigma grows), by bisection."""
    z = Streams(seed).get("calibration").standard_normal((draws, len(sizes)))

    def mean_tau(sigma: float) -> float:
        return float(np.mean([kendall_tau(sizes, sizes * np.exp(sigma * row)) for row in z]))

    lo, hi = 0.0, 8.0
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if mean_tau(mid) > tau:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def calibrate(data: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The study's predictors for one serving model, and what each was calibrated to."""
    from servesim.predictors.learned.evaluate import cross_validate

    cv = cross_validate(data, FOLDS, head=HEAD, seed=0)
    sizes = cv.sizes
    mae = float(np.mean(np.abs(cv.predictions - sizes)))
    tau = kendall_tau(sizes, cv.predictions)
    sigma = lognormal_sigma_for_tau(sizes, tau)
    predictors: dict[str, Any] = {
        "oracle": {"kind": "oracle"}, "learned": OutOfFold(cv.predictions),
        "gauss_mae": {"kind": "gaussian", "mae": mae},
        "lognorm_tau": {"kind": "lognormal", "sigma": sigma}}
    rows = [{"model": data.target_model, "predictor": "learned", "param": f"{HEAD} head, "
             f"{FOLDS}-fold", "mae_target": mae, "tau_target": tau},
            {"model": data.target_model, "predictor": "gauss_mae", "param": f"mae={mae:.0f}"},
            {"model": data.target_model, "predictor": "lognorm_tau",
             "param": f"sigma={sigma:.2f}"}]
    return predictors, rows


def write_trace(data: Any, path: Path) -> Path:
    """The lengths trace in the prompts' order: request i is prompt i."""
    path.write_text("num_prefill_tokens,num_decode_tokens\n" + "".join(
        f"{max(1, int(p))},{int(o)}\n"
        for p, o in zip(data.prompt_tokens, data.output_tokens, strict=True)), encoding="utf-8")
    return path


def kv_blocks(data: Any) -> int:
    """KV blocks that hold KV_MEAN_REQUESTS requests of the model's mean size."""
    mean_tokens = float(np.mean(data.prompt_tokens) + np.mean(data.output_tokens))
    return int(np.ceil(KV_MEAN_REQUESTS * mean_tokens / ENGINE["kv"]["block_tokens"]))


def scenario_for(trace: Path, batching: str, n: int, blocks: int, rate_per_s: float = 1.0):
    engine = {**ENGINE, "kv": {**ENGINE["kv"], "blocks": blocks}}
    table = {"run": {"seed": 0, "requests": n},
             "workload": {"arrival": {"kind": "poisson", "rate_per_s": rate_per_s},
                          "trace": {"format": "lengths_csv", "path": str(trace)}},
             "engine": {"batching": batching, **engine}}
    return scenario_from_dict(table)


def measure(run) -> dict[str, Any]:
    """One run's latencies, preemptions, and the accuracy of the predictions it used."""
    df = run.requests
    pred, size = df["predicted_tokens"].to_numpy(), df["output_tokens"].to_numpy(float)
    has_pred = bool(np.isfinite(pred).all())
    done = df[df["status"] == "finished"]
    e2e = done["finish_s"] - done["arrival_s"]
    ttft = done["first_token_s"] - done["arrival_s"]
    return {"e2e_mean_s": float(e2e.mean()), "e2e_p99_s": float(e2e.quantile(0.99)),
            "ttft_mean_s": float(ttft.mean()), "ttft_p99_s": float(ttft.quantile(0.99)),
            "preemptions": int(df["preemptions"].sum()),
            "priority_preemptions": int(df["priority_preemptions"].sum()),
            "recomputed_tokens": int(df["recomputed_tokens"].sum()),
            "completed": len(done), "stopped": run.stop_reason != "drained",
            "pred_mae_tokens": float(np.mean(np.abs(pred - size))) if has_pred else np.nan,
            "pred_tau": kendall_tau(size, pred) if has_pred else np.nan}


def run_point(trace: Path, batching: str, n: int, blocks: int, load: float, seed: int,
              predictors: dict[str, Any]) -> list[dict[str, Any]]:
    """Every ordering x predictor on one request sequence (paired)."""
    capacity = scenario_capacity(scenario_for(trace, batching, n, blocks))
    lam = load * capacity.request_capacity.value
    sc = scenario_for(trace, batching, n, blocks, lam)
    requests = sc.workload.generate(Streams(seed), n_requests=n, horizon_s=None)

    def one(order: str, ospec: Any, pname: str, pspec: Any) -> dict[str, Any]:
        run = run_ordered(requests, sc.engine, sc.cost, ospec, pspec, seed=seed,
                          max_in_system=MAX_IN_SYSTEM)
        return {"order": order, "predictor": pname, **measure(run)}

    rows = [one("fcfs", "fcfs", "-", None)]
    rows += [one(o, ospec, p, predictors[p]) for p in PREDICTOR_NAMES for o, ospec in ORDERS]
    rows.append(one("ltr", "ltr", "learned", predictors["learned"]))
    for row in rows:
        row.update(batching=batching, load=load, rate_per_s=lam, seed=seed, kv_blocks=blocks)
    return rows


KEYS = ["model", "batching", "load", "order", "predictor"]
METRICS = ["e2e_mean_s", "e2e_p99_s", "ttft_mean_s", "ttft_p99_s", "preemptions",
           "priority_preemptions", "recomputed_tokens", "completed"]


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    table = runs.groupby(KEYS, sort=False)[METRICS].mean().reset_index()
    table["stopped"] = runs.groupby(KEYS, sort=False)["stopped"].sum().to_numpy()
    return table


def markdown(table: pd.DataFrame) -> str:
    """One row per (model, engine, load, order): mean E2E / mean TTFT under each predictor,
    then the learned predictor's E2E p99, preemptions and recomputed tokens (thousands)."""
    head = ("| model | engine | load | order | oracle | learned | gauss MAE | lognorm τ "
            "| p99 | preempt | recomp k |")
    lines = [head, "|" + "---|" * 4 + "---:|" * 7]
    for key, g in table.groupby(["model", "batching", "load", "order"], sort=False):
        by = {r["predictor"]: r for r in g.to_dict("records")}

        def cell(name: str, by=by) -> str:
            # FCFS reads no prediction: its one run fills every predictor's column.
            r = by.get(name, by.get("-"))
            return "" if r is None else f"{r['e2e_mean_s']:.1f} / {r['ttft_mean_s']:.2f}"

        ref = by.get("learned", by.get("-"))
        cells = [cell(p) for p in PREDICTOR_NAMES]
        stop = " (stopped)" if ref["stopped"] else ""
        lines.append(f"| {key[0]} | {key[1]} | {key[2]:g} | {key[3]}{stop} | " + " | ".join(cells)
                     + f" | {ref['e2e_p99_s']:.0f} | {ref['preemptions']:.0f} | "
                     f"{ref['recomputed_tokens'] / 1e3:.0f} |")
    return "\n".join(lines)


def calibration_markdown(rows: list[dict[str, Any]], runs: pd.DataFrame) -> str:
    """Each predictor's MAE and Kendall tau as drawn in the runs (mean over seeds)."""
    spjf = runs[runs["order"] == "spjf"]
    acc = spjf.groupby(["model", "predictor"])[["pred_mae_tokens", "pred_tau"]].mean()
    lines = ["| model | predictor | parameter | MAE (tokens) | Kendall τ |",
             "|---|---|---|---:|---:|"]
    for r in rows:
        mae, tau = acc.loc[(r["model"], r["predictor"])]
        lines.append(f"| {r['model']} | {r['predictor']} | {r['param']} | {mae:.0f} | "
                     f"{tau:.3f} |")
    return "\n".join(lines)


def check_ltr(runs: pd.DataFrame) -> bool:
    """Whether LTR and SPJF gave the same mean latency on the learned predictor everywhere."""
    keys = ["model", "batching", "load", "seed"]
    learned = runs[runs["predictor"] == "learned"].set_index(keys)
    ltr = learned[learned["order"] == "ltr"]["e2e_mean_s"]
    spjf = learned[learned["order"] == "spjf"]["e2e_mean_s"]
    return bool(np.allclose(ltr.sort_index(), spjf.sort_index()))


def study(models: Sequence[str], batching: Sequence[str], loads: Sequence[float],
          seeds: Sequence[int], work: Path) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    from servesim.predictors.learned.data import load_dataset

    runs, calibration = [], []
    for model in models:
        data = load_dataset(DATA / PROMPTS, model)
        predictors, rows = calibrate(data)
        calibration += rows
        trace = write_trace(data, work / f"trace_{model}.csv")
        for system in batching:
            for load in loads:
                for seed in seeds:
                    for row in run_point(trace, system, len(data), kv_blocks(data), load, seed,
                                         predictors):
                        runs.append({"model": model, **row})
    return pd.DataFrame(runs), calibration


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None, help="write runs.csv, table.csv, table.md")
    p.add_argument("--seeds", default="0,1", help="comma-separated seeds (%(default)s)")
    p.add_argument("--loads", default=",".join(map(str, LOADS)),
                   help="comma-separated fractions of lambda* (%(default)s)")
    p.add_argument("--models", default=",".join(MODELS), help="serving models (%(default)s)")
    p.add_argument("--batching", default=",".join(BATCHING), help="systems (%(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="one model, sarathi, load 0.9, seed 0: a few seconds")
    return p.parse_args(argv)


def split(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not (DATA / PROMPTS).is_file():
        print(f"AlpacaEval data not found at {DATA}; skipped")
        return 0
    models, systems = split(args.models), split(args.batching)
    loads, seeds = [float(x) for x in split(args.loads)], [int(x) for x in split(args.seeds)]
    if args.quick:
        models, systems, loads, seeds = models[:1], ["sarathi"], [0.9], [0]
    with tempfile.TemporaryDirectory() as tmp:
        runs, calibration = study(models, systems, loads, seeds, Path(tmp))
    table = summarise(runs)
    blocks = runs.groupby("model", sort=False)["kv_blocks"].first().to_dict()
    rates = runs.groupby(["model", "batching", "load"], sort=False)["rate_per_s"].first()
    print(f"KV blocks of {ENGINE['kv']['block_tokens']} tokens: {blocks}; arrival rates "
          f"(requests/s): {rates.round(2).to_dict()}")
    print(f"seeds {seeds}; cells are mean E2E / mean TTFT (s); p99 (s), preemptions and "
          "recomputed tokens (thousands) are the learned predictor's (FCFS's own on fcfs rows)")
    print(calibration_markdown(calibration, runs))
    print()
    print(markdown(table))
    print(f"\nltr == spjf on the learned predictor in every run: {check_ltr(runs)}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        runs.to_csv(args.out / "runs.csv", index=False)
        table.to_csv(args.out / "table.csv", index=False)
        (args.out / "table.md").write_text(calibration_markdown(calibration, runs) + "\n\n"
                                           + markdown(table) + "\n", encoding="utf-8")
        print(f"outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
