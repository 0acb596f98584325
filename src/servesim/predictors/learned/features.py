"""Prompt features: an embedder's vector of the text, with the log prompt length appended.

The default embedder, ``tfidf``, needs no neural model: word 1-2-grams and character 3-5-grams
(within word boundaries) are hashed into a fixed number of columns, so the vocabulary need not
be stored; fitting keeps the columns seen in at least ``min_df`` training prompts and their IDF
weights. Term counts are sublinear (1 + log tf), and the word and character blocks are each
scaled to unit length, so neither dominates. The neural embedders live in ``neural.py``.

Every embedder offers ``fit(texts)``, ``transform(texts)`` (a matrix, sparse or dense),
``config()`` (JSON-able) and ``arrays()`` (numpy arrays) for saving, and ``from_state``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from servesim.core.errors import ConfigError

N_FEATURES = 2 ** 18   # hashed columns, half words, half characters
MIN_DF = 2


def _hashers(n_features: int) -> tuple[Any, Any]:
    from sklearn.feature_extraction.text import HashingVectorizer

    half = n_features // 2
    common = {"n_features": half, "alternate_sign": False, "norm": None, "dtype": np.float64}
    return (HashingVectorizer(analyzer="word", ngram_range=(1, 2), **common),
            HashingVectorizer(analyzer="char_wb", ngram_range=(3, 5), **common))


class TfidfEmbedder:
    """Hashed word and character n-grams with IDF weights (see the module docstring)."""

    name = "tfidf"

    def __init__(self, n_features: int = N_FEATURES, min_df: int = MIN_DF,
                 active: np.ndarray | None = None, idf: np.ndarray | None = None) -> None:
        self.n_features = int(n_features)
        self.min_df = int(min_df)
        self.active = active
        self.idf = idf

    def _counts(self, texts: list[str]) -> Any:
        from scipy import sparse

        word, char = _hashers(self.n_features)
        return sparse.hstack([word.transform(texts), char.transform(texts)], format="csr")

    def fit(self, texts: list[str]) -> TfidfEmbedder:
        counts = self._counts(texts)
        df = np.asarray((counts > 0).sum(axis=0)).ravel()
        self.active = np.flatnonzero(df >= self.min_df).astype(np.int64)
        n = len(texts)
        self.idf = np.log((1.0 + n) / (1.0 + df[self.active])) + 1.0
        return self

    def transform(self, texts: list[str]) -> Any:
        from scipy import sparse
        from sklearn.preprocessing import normalize

        if self.active is None or self.idf is None:
            raise ConfigError("embedder", self.name, "a fitted embedder (call fit first)")
        x = self._counts(texts)[:, self.active].tocsr()
        x.data = 1.0 + np.log(x.data)
        x = x.multiply(self.idf[None, :]).tocsr()
        split = int(np.searchsorted(self.active, self.n_features // 2))
        return sparse.hstack([normalize(x[:, :split]), normalize(x[:, split:])], format="csr")

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "n_features": self.n_features, "min_df": self.min_df}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"active": self.active, "idf": self.idf}

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> TfidfEmbedder:
        return cls(config["n_features"], config["min_df"], arrays["active"], arrays["idf"])


def make_embedder(name: str, options: dict[str, Any] | None = None) -> Any:
    """A fresh embedder by name: ``tfidf``, or ``model2vec`` / ``minilm`` (the [predict] extra).

    Raises ConfigError for an unknown name (closest suggested).
    """
    from servesim.predictors.learned import neural

    options = dict(options or {})
    if name == "tfidf":
        return TfidfEmbedder(**options)
    if name in neural.EMBEDDERS:
        return neural.EMBEDDERS[name](**options)
    names = ["tfidf", *sorted(neural.EMBEDDERS)]
    raise ConfigError("--embedder", name, "one of " + ", ".join(names), choices=names)


def embedder_from_state(config: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
    from servesim.predictors.learned import neural

    if config.get("name") == "tfidf":
        return TfidfEmbedder.from_state(config, arrays)
    return neural.from_state(config)


class LengthFeature:
    """The standardised log prompt length, the column appended to every embedding."""

    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        self.mean, self.std = float(mean), float(std)

    @staticmethod
    def raw(prompt_tokens: Any) -> np.ndarray:
        return np.log1p(np.asarray(prompt_tokens, dtype=np.float64))

    def fit(self, prompt_tokens: Any) -> LengthFeature:
        v = self.raw(prompt_tokens)
        self.mean = float(v.mean())
        self.std = float(v.std()) or 1.0
        return self

    def column(self, prompt_tokens: Any) -> np.ndarray:
        return ((self.raw(prompt_tokens) - self.mean) / self.std)[:, None]


def with_length(embedding: Any, length_column: np.ndarray) -> Any:
    """The embedding with the length column appended (sparse stays sparse)."""
    from scipy import sparse

    if sparse.issparse(embedding):
        return sparse.hstack([embedding, sparse.csr_matrix(length_column)], format="csr")
    return np.hstack([np.asarray(embedding, dtype=np.float64), length_column])
