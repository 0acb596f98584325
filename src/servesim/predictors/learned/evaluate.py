"""Accuracy of predicted output lengths, as the scheduling literature reports it.

- ``mae_tokens``: mean absolute error, tokens;
- ``spearman``: Spearman's rank correlation of prediction and truth;
- ``kendall_tau``: Kendall's tau-b (ties counted as scipy does);
- ``bin_accuracy``: the fraction of prompts whose prediction falls in the bin of the true
  length, on the model's log-scale bins;
- ``n_prompts``.

``baseline`` holds the same keys for the prompt-length-only predictor. Cross-validation splits
by prompt (every row of a prompt in one fold; folds drawn from a seeded stream), trains on
K - 1 folds, predicts the held-out one, and scores the pooled held-out predictions, so the
numbers are honest. Those pooled pairs are also the empirical joint distribution of
(true size, prediction) that ``cross_validate`` returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from servesim.core.errors import ConfigError
from servesim.core.rng import Streams
from servesim.predictors.base import bin_of
from servesim.predictors.learned.data import Dataset
from servesim.predictors.learned.model import LearnedModel, log_edges, train_model

METRIC_KEYS = ("mae_tokens", "spearman", "kendall_tau", "bin_accuracy", "n_prompts")


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def metrics(y_true: Any, y_pred: Any, edges: np.ndarray) -> dict[str, Any]:
    """The accuracy of ``y_pred`` against ``y_true`` (see the module docstring); a rank
    correlation that is undefined (constant predictions) is None."""
    from scipy import stats

    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    constant = len(y) < 2 or np.ptp(p) == 0 or np.ptp(y) == 0
    rho = None if constant else _finite(stats.spearmanr(y, p).statistic)
    tau = None if constant else _finite(stats.kendalltau(y, p).statistic)
    hits = bin_of(p, edges) == bin_of(y, edges)
    return {"mae_tokens": float(np.mean(np.abs(p - y))) if len(y) else None,
            "spearman": rho, "kendall_tau": tau,
            "bin_accuracy": float(np.mean(hits)) if len(y) else None,
            "n_prompts": int(len(y))}


def evaluate(model: LearnedModel, data: Dataset) -> dict[str, Any]:
    """The model's accuracy on ``data`` and the baseline's (the model's own baseline fit)."""
    pred = model.predict(data.texts, data.prompt_tokens)
    out = metrics(data.output_tokens, pred, model.edges)
    out["baseline"] = metrics(data.output_tokens, model.predict_baseline(data.prompt_tokens),
                              model.edges)
    return out


@dataclass(frozen=True)
class CrossValidation:
    """Pooled held-out predictions of K-fold CV: the joint sample of (size, prediction)."""

    sizes: np.ndarray        # true output lengths, tokens, in the data's order
    predictions: np.ndarray  # the held-out prediction of each
    baseline: np.ndarray     # the held-out prompt-length-only prediction of each
    folds: np.ndarray        # the fold of each row
    edges: np.ndarray        # bins for bin accuracy: from all the lengths, as one model's
    prompt_ids: np.ndarray   # the prompt of each row

    def report(self) -> dict[str, Any]:
        out = metrics(self.sizes, self.predictions, self.edges)
        out["baseline"] = metrics(self.sizes, self.baseline, self.edges)
        out["folds"] = int(self.folds.max()) + 1
        return out

    def joint_csv(self) -> str:
        """The joint sample as CSV: prompt_id, output_tokens, predicted_tokens,
        baseline_tokens, fold (one row per prompt, in the data's order)."""
        lines = ["prompt_id,output_tokens,predicted_tokens,baseline_tokens,fold"]
        lines += [f"{i},{int(y)},{p:.6g},{b:.6g},{f}" for i, y, p, b, f in zip(
            self.prompt_ids.tolist(), self.sizes.tolist(), self.predictions.tolist(),
            self.baseline.tolist(), self.folds.tolist(), strict=True)]
        return "\n".join(lines) + "\n"


def fold_of(prompt_ids: Any, k: int, seed: int = 0) -> np.ndarray:
    """A fold in [0, k) per row, equal-sized over the distinct prompts, seeded."""
    ids = np.asarray(prompt_ids)
    unique, inverse = np.unique(ids, return_inverse=True)
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= len(unique):
        raise ConfigError("--cv", k, f"an integer number of folds in [2, {len(unique)}] "
                          "(the number of distinct prompts)")
    order = Streams(seed).get("predictor/cv_folds").permutation(len(unique))
    fold_of_prompt = np.empty(len(unique), dtype=np.int64)
    fold_of_prompt[order] = np.arange(len(unique)) % k
    return fold_of_prompt[inverse]


def cross_validate(data: Dataset, k: int = 5, *, embedder: str = "tfidf", head: str = "bins",
                   n_bins: int = 8, seed: int = 0, embedder_options: dict[str, Any] | None = None,
                   progress: Any = None) -> CrossValidation:
    """K-fold cross-validation split by prompt (see the module docstring).

    ``progress(what, done, total)`` is told after each fold. Raises ConfigError for a bad
    ``k`` or any training argument.
    """
    folds = fold_of(data.prompt_ids, k, seed)
    y = np.asarray(data.output_tokens, dtype=np.float64)
    pred = np.empty(len(y))
    base = np.empty(len(y))
    for f in range(k):
        train, test = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        model = train_model([data.texts[i] for i in train], data.prompt_tokens[train], y[train],
                            target_model=data.target_model, embedder=embedder, head=head,
                            n_bins=n_bins, seed=seed, embedder_options=embedder_options)
        pred[test] = model.predict([data.texts[i] for i in test], data.prompt_tokens[test])
        base[test] = model.predict_baseline(data.prompt_tokens[test])
        if progress is not None:
            progress(f"cross-validating {data.target_model}", f + 1, k)
    return CrossValidation(y, pred, base, folds, log_edges(y, n_bins),
                           np.asarray(data.prompt_ids))
