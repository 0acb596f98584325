"""Output length predicted from the prompt length: a fitted line or per-bucket means."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from servesim.core.errors import ConfigError
from servesim.core.fields import number
from servesim.predictors.base import Predictor, bin_of, edges_array

MODELS = ("linear", "buckets")
ALPACAEVAL_PROMPTS = "alpacaeval_prompts.jsonl"
ALPACAEVAL_LENGTHS = "alpacaeval_output_lengths.csv"


class PromptRegression(Predictor):
    """y = intercept + slope * p (``model = "linear"``), or y = means[bucket of p] with bucket
    ``edges`` (``model = "buckets"``); p is the prompt length. Deterministic given p.

    Raises ConfigError (from ``predict``) if no prompt sizes are given.
    """

    kind = "prompt"

    def __init__(self, spec, rng=None, cost=None):
        super().__init__(spec, rng, cost)
        self.model = spec["model"]
        if self.model not in MODELS:
            raise ConfigError("predictor.model", self.model, "one of linear, buckets",
                              choices=MODELS)
        if self.model == "linear":
            self.intercept = number(spec.get("intercept"), "predictor.intercept")
            self.slope = number(spec.get("slope"), "predictor.slope")
        else:
            self.edges = edges_array(spec.get("edges"), "predictor.edges")
            means = spec.get("means")
            if not isinstance(means, list | tuple) or len(means) != len(self.edges) - 1:
                raise ConfigError("predictor.means", means,
                                  f"a list of {len(self.edges) - 1} bucket means")
            self.means = np.array([number(m, "predictor.means") for m in means])

    def _draw(self, x, prompt, rng):
        if prompt is None:
            raise ConfigError("predict.prompt_sizes", None, "prompt sizes for a prompt predictor")
        if self.model == "linear":
            return self.intercept + self.slope * prompt
        return self.means[bin_of(prompt, self.edges)]


def fit_prompt_spec(prompt_tokens: Any, output_tokens: Any, model: str = "linear",
                    edges: Any = None) -> dict[str, Any]:
    """Fit a prompt predictor by least squares; return its spec (``make_predictor`` builds it).

    ``linear`` fits intercept and slope; ``buckets`` takes the mean output per prompt bucket (an
    empty bucket gets the overall mean). Raises ConfigError on an unknown model or missing edges.
    """
    p = np.asarray(prompt_tokens, dtype=np.float64)
    o = np.asarray(output_tokens, dtype=np.float64)
    if p.shape != o.shape or p.size < 2:
        raise ConfigError("fit.prompt_tokens", f"{p.size} values",
                          f"at least 2 values, as many as output_tokens ({o.size})")
    if model == "linear":
        slope, intercept = np.polyfit(p, o, 1)
        return {"kind": "prompt", "model": "linear", "intercept": float(intercept),
                "slope": float(slope)}
    if model != "buckets":
        raise ConfigError("fit.model", model, "one of linear, buckets", choices=MODELS)
    e = edges_array(edges, "fit.edges")
    b = bin_of(p, e)
    counts = np.bincount(b, minlength=len(e) - 1)
    sums = np.bincount(b, weights=o, minlength=len(e) - 1)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), o.mean())
    return {"kind": "prompt", "model": "buckets", "edges": e.tolist(), "means": means.tolist()}


def load_alpacaeval(data_dir: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read (prompt_id, prompt_tokens, output_tokens), one row per (prompt, model) output.

    Expects ``alpacaeval_prompts.jsonl`` and ``alpacaeval_output_lengths.csv`` (see the data
    README for their public source). Raises ConfigError if either file is missing.
    """
    folder = Path(data_dir)
    prompts_path, lengths_path = folder / ALPACAEVAL_PROMPTS, folder / ALPACAEVAL_LENGTHS
    for path in (prompts_path, lengths_path):
        if not path.is_file():
            raise ConfigError("data_dir", str(data_dir), f"a folder holding {path.name}")
    tokens = {}
    with prompts_path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                tokens[int(row["prompt_id"])] = int(row["prompt_tokens"])
    data = np.genfromtxt(lengths_path, delimiter=",", skip_header=1, usecols=(0, 2),
                         dtype=np.int64)
    ids, outputs = data[:, 0], data[:, 1]
    prompt = np.array([tokens[i] for i in ids.tolist()], dtype=np.int64)
    return ids, prompt, outputs
