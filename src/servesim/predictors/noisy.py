"""Predictors that perturb the true size: oracle and four noise laws."""

from __future__ import annotations

import math

import numpy as np

from servesim.core.errors import ConfigError
from servesim.core.fields import number
from servesim.predictors.base import Predictor


class Oracle(Predictor):
    """y = x: the true size."""

    kind = "oracle"

    def _draw(self, x, prompt, rng):
        return x.copy()


class LogNormalNoise(Predictor):
    """Multiplicative noise y = x * exp(sigma * Z), Z standard normal (median-unbiased)."""

    kind = "lognormal"

    def __init__(self, spec, rng=None, cost=None):
        super().__init__(spec, rng, cost)
        self.sigma = number(spec["sigma"], "predictor.sigma", low=0)

    def _draw(self, x, prompt, rng):
        return x * np.exp(self.sigma * rng.standard_normal(x.shape))


class ExponentialNoise(Predictor):
    """y ~ Exp(mean = x): the survey's standard test case, g(y | x) = exp(-y/x) / x."""

    kind = "exponential"

    def _draw(self, x, prompt, rng):
        return x * rng.standard_exponential(x.shape)


class UniformNoise(Predictor):
    """y ~ U[beta x, alpha x] with 0 <= beta < alpha: estimates within factors of the truth.

    The same range as the theory's density (``servesim.theory.mg1``), which needs alpha > beta.
    """

    kind = "uniform"

    def __init__(self, spec, rng=None, cost=None):
        super().__init__(spec, rng, cost)
        self.alpha = number(spec["alpha"], "predictor.alpha", low=0, low_open=True)
        self.beta = number(spec["beta"], "predictor.beta", low=0)
        if self.beta >= self.alpha:
            raise ConfigError("predictor.beta", spec["beta"], f"a number < alpha = {self.alpha:g}")

    def _draw(self, x, prompt, rng):
        return x * rng.uniform(self.beta, self.alpha, x.shape)


class GaussianNoise(Predictor):
    """Additive noise y = x + N(0, s^2) with s = mae * sqrt(pi / 2), so E|y - x| = mae.

    Negative predictions are kept as drawn, never clipped: clipping would change E|y - x| and the
    conditional law the theory integrates. Orderings only compare predictions, so a negative one
    simply ranks first; a consumer that needs a length (memory reservation) clips on its own side.
    """

    kind = "gaussian"

    def __init__(self, spec, rng=None, cost=None):
        super().__init__(spec, rng, cost)
        self.mae = number(spec["mae"], "predictor.mae", low=0)

    @property
    def std(self) -> float:
        """Standard deviation s of the noise, mae * sqrt(pi / 2)."""
        return self.mae * math.sqrt(math.pi / 2)

    def _draw(self, x, prompt, rng):
        return x + self.std * rng.standard_normal(x.shape)
