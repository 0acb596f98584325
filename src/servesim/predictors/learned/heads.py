"""Heads: from a prompt's feature row to a predicted output length, in tokens.

- ``bins``: classification into length bins on a log scale (the model's ``edges``) by
  multinomial logistic regression, decoded as the expected value over the bins (as TRAIL
  does), each bin represented by the mean training length in it;
- ``regression``: ridge regression on log length, predicting exp of the fitted log;
- ``rank``: a pairwise ranker, a logistic regression without intercept on differences of
  feature rows labelled by which prompt got the longer output (pairs drawn from a seeded
  stream, near ties left out); its scores become lengths by quantile matching on the training
  set (a score's position among the training scores picks the same quantile of the training
  lengths), so ranks are kept and the predictions have the training lengths' spread.

A head stores only numpy arrays (weights, intercepts, representative lengths), never a pickled
estimator, so a model folder loads under any scikit-learn version.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from servesim.core.errors import ConfigError
from servesim.core.rng import Streams
from servesim.predictors.base import bin_of

RIDGE_ALPHA = 1.0
LOGISTIC_C = 1.0
RANK_PARTNERS = 16        # pairs drawn per training prompt
RANK_MIN_GAP_LOG = 0.1    # pairs whose log lengths differ by less are near ties, left out


def _linear(x: Any, coef: np.ndarray, intercept: np.ndarray | float) -> np.ndarray:
    return np.asarray(x @ coef.T, dtype=np.float64) + intercept


class RegressionHead:
    name = "regression"

    def __init__(self, coef: np.ndarray | None = None, intercept: float = 0.0) -> None:
        self.coef, self.intercept = coef, float(intercept)

    def fit(self, x: Any, y_tokens: np.ndarray, edges: np.ndarray, seed: int) -> RegressionHead:
        from sklearn.linear_model import Ridge

        est = Ridge(alpha=RIDGE_ALPHA).fit(x, np.log(y_tokens))
        self.coef, self.intercept = np.asarray(est.coef_, dtype=np.float64), float(est.intercept_)
        return self

    def predict(self, x: Any) -> np.ndarray:
        return np.exp(_linear(x, self.coef, self.intercept))

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"name": self.name, "intercept": self.intercept}, {"coef": self.coef}

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> RegressionHead:
        return cls(arrays["coef"], config["intercept"])


class BinsHead:
    name = "bins"

    def __init__(self, coef: np.ndarray | None = None, intercept: np.ndarray | None = None,
                 reps: np.ndarray | None = None) -> None:
        self.coef, self.intercept, self.reps = coef, intercept, reps

    def fit(self, x: Any, y_tokens: np.ndarray, edges: np.ndarray, seed: int) -> BinsHead:
        from sklearn.linear_model import LogisticRegression

        labels = bin_of(y_tokens, edges)
        present = np.unique(labels)
        self.reps = np.array([y_tokens[labels == j].mean() for j in present])
        if len(present) == 1:   # one bin holds every training length: predict its mean
            self.coef = np.zeros((1, x.shape[1]))
            self.intercept = np.zeros(1)
            return self
        est = LogisticRegression(C=LOGISTIC_C, max_iter=2000).fit(x, labels)
        coef, icpt = np.asarray(est.coef_, dtype=np.float64), np.asarray(est.intercept_)
        if len(present) == 2:   # scikit-learn keeps one row for two classes: logit of class 1
            coef, icpt = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], icpt])
        self.coef, self.intercept = coef, icpt.astype(np.float64)
        return self

    def probabilities(self, x: Any) -> np.ndarray:
        z = _linear(x, self.coef, self.intercept)
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, x: Any) -> np.ndarray:
        return self.probabilities(x) @ self.reps

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return ({"name": self.name},
                {"coef": self.coef, "intercept": self.intercept, "reps": self.reps})

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> BinsHead:
        return cls(arrays["coef"], arrays["intercept"], arrays["reps"])


class RankHead:
    name = "rank"

    def __init__(self, coef: np.ndarray | None = None, scores: np.ndarray | None = None,
                 log_lengths: np.ndarray | None = None) -> None:
        self.coef, self.scores, self.log_lengths = coef, scores, log_lengths

    def fit(self, x: Any, y_tokens: np.ndarray, edges: np.ndarray, seed: int) -> RankHead:
        from sklearn.linear_model import LogisticRegression

        logy = np.log(y_tokens)
        i, j = _pairs(logy, seed)
        if len(i) < 2:
            raise ConfigError("--head", self.name, "training lengths that differ (pairs to rank)")
        diff = x[i] - x[j]
        longer = (logy[i] > logy[j]).astype(np.int64)
        if longer.min() == longer.max():
            raise ConfigError("--head", self.name, "pairs ranked both ways")
        est = LogisticRegression(C=LOGISTIC_C, fit_intercept=False, max_iter=2000)
        self.coef = np.asarray(est.fit(diff, longer).coef_.ravel(), dtype=np.float64)
        self.scores = np.sort(np.asarray(x @ self.coef, dtype=np.float64))
        self.log_lengths = np.sort(logy)
        return self

    def predict(self, x: Any) -> np.ndarray:
        s = np.asarray(x @ self.coef, dtype=np.float64)
        # The quantile of s among the training scores, then the same quantile of the lengths.
        q = np.interp(s, self.scores, np.linspace(0.0, 1.0, len(self.scores)))
        return np.exp(np.quantile(self.log_lengths, q))

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return ({"name": self.name},
                {"coef": self.coef, "scores": self.scores, "log_lengths": self.log_lengths})

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> RankHead:
        return cls(arrays["coef"], arrays["scores"], arrays["log_lengths"])


def _pairs(logy: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training pairs (i, j): RANK_PARTNERS random partners per prompt, near ties dropped;
    the order inside a pair is random, so both labels occur."""
    rng = Streams(seed).get("predictor/rank_pairs")
    n = len(logy)
    i = np.repeat(np.arange(n), RANK_PARTNERS)
    j = rng.integers(0, n, size=len(i))
    keep = np.abs(logy[i] - logy[j]) >= RANK_MIN_GAP_LOG
    return i[keep], j[keep]


HEADS: dict[str, Any] = {"bins": BinsHead, "regression": RegressionHead, "rank": RankHead}


def make_head(name: str, field: str = "--head") -> Any:
    if name not in HEADS:
        raise ConfigError(field, name, "one of " + ", ".join(sorted(HEADS)), choices=sorted(HEADS))
    return HEADS[name]()


def head_from_state(config: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
    name = config.get("name")
    if name not in HEADS:
        raise ConfigError("model.head", name, "one of " + ", ".join(sorted(HEADS)),
                          choices=sorted(HEADS))
    return HEADS[name].from_state(config, arrays)
