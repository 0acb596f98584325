"""The learned predictor as a simulator predictor: ``{kind = "learned", model, prompts}``.

``model`` is a model folder (or its ``model.json``) from ``servesim predictor train``;
``prompts`` is a prompts JSONL file (``prompt_id``, ``instruction``). Request i of a run (its
index in arrival order, the order in which predictions are drawn) reads prompt
(offset + i) mod N of the file, N its number of prompts, so the prompts cycle when the run has
more requests than the file has lines. A lengths trace written in the prompts file's order
(one row per prompt, the target model's output lengths) thus pairs each request with its own
prompt; ``offset`` (default 0) shifts the pairing. In a scenario, relative paths resolve
against the scenario's folder (as a trace's path does); given directly, against the working
directory.

The prediction of a request is the model's prediction for its prompt: it reads neither the
request's true size nor the seed, so the draws are the same in every run. Building the
predictor reads the model and the prompts (so a bad file fails when a scenario is loaded); the
model runs once, over the whole prompts file, at the first draw, and a draw is then an index.
Because a request's prediction depends on its index, the engines draw these predictions for
every request at once, which they do for every predictor they do not know to be per-request.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from servesim.core.errors import ConfigError
from servesim.core.fields import integer
from servesim.predictors.base import Predictor


class LearnedPredictor(Predictor):
    """y_i = the learned model's prediction for prompt (offset + i) mod N (see the docstring).

    Raises ConfigError (or TraceError for a bad prompts line) when built if the model or the
    prompts file cannot be read; ``model`` or ``prompts`` that is not a string is refused too.
    """

    kind = "learned"

    def __init__(self, spec, rng=None, cost=None):
        super().__init__(spec, rng, cost)
        from servesim.predictors.learned.data import read_prompts
        from servesim.predictors.learned.model import load_model

        for key in ("model", "prompts"):
            if not isinstance(spec.get(key), str) or not spec[key]:
                raise ConfigError(f"predictor.{key}", spec.get(key), "a file path (a string)")
        self.offset = integer(spec.get("offset", 0), "predictor.offset", low=0)
        model = load_model(spec["model"])
        prompts = read_prompts(spec["prompts"])
        self.target_model = model.target_model
        self._model, self._prompts = model, prompts
        self._predictions: np.ndarray | None = None

    @property
    def prompt_predictions(self) -> np.ndarray:
        """The model's prediction for every prompt of the file, in file order (computed once:
        a scenario's validation builds a predictor it never draws from)."""
        if self._predictions is None:
            self._predictions = self._model.predict(self._prompts.texts,
                                                    self._prompts.prompt_tokens)
        return self._predictions

    def _draw(self, x: np.ndarray, prompt: np.ndarray | None,
              rng: np.random.Generator) -> np.ndarray:
        index = (self.offset + np.arange(x.size)) % len(self.prompt_predictions)
        return self.prompt_predictions[index].reshape(x.shape).astype(np.float64)

    def describe(self) -> dict[str, Any]:
        return dict(self.spec)
