"""A learned model: train it for one serving model, save it as a folder, load it back.

A model folder holds ``model.json`` (the format version, the target model, the embedder's and
the head's settings, the bin edges, the length feature's scaling, the prompt-length baseline and
what it was trained on) and ``arrays.npz`` (every numpy array: IDF weights, head weights; no
pickle). ``load_model`` accepts the folder or its ``model.json``. A folder written by another
format version is refused in one line.

Bin edges are on a log scale: ``n_bins`` bins between the 1st and 99th percentiles of the
training lengths, the end bins absorbing the rest. They are the ``bins`` head's classes and
the bins of every head's bin accuracy.

The baseline is the prompt-length-only predictor fitted on the same training rows: log output
length linear in log prompt length (least squares).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from servesim.core.errors import ConfigError, file_error
from servesim.predictors.learned.features import (
    LengthFeature,
    embedder_from_state,
    make_embedder,
    with_length,
)
from servesim.predictors.learned.heads import head_from_state, make_head

FORMAT = "servesim-learned-predictor"
FORMAT_VERSION = 1
N_BINS = 8
MODEL_FILE, ARRAYS_FILE = "model.json", "arrays.npz"


@dataclass
class LearnedModel:
    """A trained predictor of one serving model's output lengths (see the module docstring)."""

    target_model: str
    embedder: Any
    head: Any
    lengths: LengthFeature
    edges: np.ndarray
    baseline: tuple[float, float]   # (intercept, slope) of log output on log1p(prompt tokens)
    info: dict[str, Any] = field(default_factory=dict)

    def features(self, texts: list[str], prompt_tokens: Any) -> Any:
        return with_length(self.embedder.transform(list(texts)), self.lengths.column(prompt_tokens))

    def predict(self, texts: list[str], prompt_tokens: Any) -> np.ndarray:
        """Predicted output length of each prompt, tokens (float64, positive)."""
        if len(texts) == 0:
            return np.zeros(0)
        return np.asarray(self.head.predict(self.features(texts, prompt_tokens)), dtype=np.float64)

    def predict_baseline(self, prompt_tokens: Any) -> np.ndarray:
        a, b = self.baseline
        return np.exp(a + b * LengthFeature.raw(prompt_tokens))

    def save(self, path: str | Path) -> Path:
        """Write the model folder (created if needed); return it."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        head_config, head_arrays = self.head.state()
        arrays = {f"embedder.{k}": v for k, v in self.embedder.arrays().items()}
        arrays.update({f"head.{k}": v for k, v in head_arrays.items()})
        arrays["edges"] = self.edges
        np.savez_compressed(folder / ARRAYS_FILE, **arrays)
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "target_model": self.target_model, "embedder": self.embedder.config(),
                "head": head_config,
                "lengths": {"mean": self.lengths.mean, "std": self.lengths.std},
                "baseline": {"intercept": self.baseline[0], "slope": self.baseline[1]},
                "info": self.info}
        (folder / MODEL_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        return folder


def log_edges(y_tokens: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    lo, hi = np.quantile(np.asarray(y_tokens, dtype=np.float64), [0.01, 0.99])
    lo = max(float(lo), 1.0)
    hi = max(float(hi), lo * 1.01)
    return np.geomspace(lo, hi, n_bins + 1)


def fit_baseline(prompt_tokens: Any, y_tokens: Any) -> tuple[float, float]:
    x = LengthFeature.raw(prompt_tokens)
    logy = np.log(np.asarray(y_tokens, dtype=np.float64))
    if np.ptp(x) == 0:
        return float(logy.mean()), 0.0
    slope, intercept = np.polyfit(x, logy, 1)
    return float(intercept), float(slope)


def train_model(texts: list[str], prompt_tokens: Any, output_tokens: Any, *,
                target_model: str, embedder: str = "tfidf", head: str = "bins",
                n_bins: int = N_BINS, seed: int = 0,
                embedder_options: dict[str, Any] | None = None) -> LearnedModel:
    """Train on prompts and the lengths of ``target_model``'s outputs to them.

    Deterministic for a seed (only the rank head draws: its pairs). Raises ConfigError for an
    unknown embedder or head, fewer than 4 prompts, or lengths below 1 token.
    """
    y = np.asarray(output_tokens, dtype=np.float64)
    p = np.asarray(prompt_tokens, dtype=np.float64)
    if len(texts) < 4 or y.shape != (len(texts),) or p.shape != y.shape:
        raise ConfigError("train.prompts", len(texts),
                          "at least 4 prompts, each with a prompt and an output length")
    if np.any(y < 1):
        raise ConfigError("train.output_tokens", float(y.min()), "lengths of at least 1 token")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or not 2 <= n_bins <= 64:
        raise ConfigError("--bins", n_bins, "an integer number of bins in [2, 64]")
    emb = make_embedder(embedder, embedder_options)
    hd = make_head(head)
    emb.fit(list(texts))
    lengths = LengthFeature().fit(p)
    edges = log_edges(y, n_bins)
    model = LearnedModel(target_model, emb, hd, lengths, edges, fit_baseline(p, y),
                         {"n_prompts": len(texts), "seed": int(seed)})
    hd.fit(model.features(texts, p), y, edges, seed)
    return model


def load_model(path: str | Path) -> LearnedModel:
    """Load a model folder (or its ``model.json``).

    Raises ConfigError in one line if it is missing, unreadable, not a model, or from another
    format version.
    """
    folder = Path(path)
    if folder.name == MODEL_FILE:
        folder = folder.parent
    meta_path = folder / MODEL_FILE
    if not meta_path.is_file():
        raise file_error(str(path), f"not a learned predictor model (no {MODEL_FILE}); "
                         "make one with servesim predictor train")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise file_error(str(meta_path), f"unreadable model file ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise file_error(str(meta_path), "not a learned predictor model file")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise file_error(str(meta_path), f"model format version {version!r}, but this servesim "
                         f"reads version {FORMAT_VERSION}; train the model again")
    try:
        with np.load(folder / ARRAYS_FILE, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        emb_arrays = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("embedder.")}
        head_arrays = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("head.")}
        return LearnedModel(
            meta["target_model"], embedder_from_state(meta["embedder"], emb_arrays),
            head_from_state(meta["head"], head_arrays),
            LengthFeature(meta["lengths"]["mean"], meta["lengths"]["std"]), arrays["edges"],
            (meta["baseline"]["intercept"], meta["baseline"]["slope"]), meta.get("info", {}))
    except (OSError, KeyError, ValueError, TypeError) as err:
        if isinstance(err, ConfigError):
            raise
        raise file_error(str(folder),
                         f"damaged model folder ({type(err).__name__}: {err})") from None
