"""Shared helpers for the M/G/1 statistical tests."""

import numpy as np
from scipy import stats

from servesim.engine.mg1 import simulate_mg1


def exp_sizes(rng, n):
    """Exp(1) job sizes."""
    return rng.standard_exponential(n)


def replication_means(ordering, rate, sizes, *, predictor=None, bit_predictor=None, n_jobs,
                      warmup, replications, seed0):
    """Mean response time of jobs warmup..n_jobs in each of independent replications."""
    means = []
    for r in range(replications):
        res = simulate_mg1(ordering, rate, n_jobs, sizes, predictor=predictor,
                           bit_predictor=bit_predictor, seed=seed0 + r)
        means.append(res.response_s[warmup:].mean())
    return np.asarray(means)


def ci(samples, level=0.99):
    """Two-sided t confidence interval of the mean of independent samples."""
    half = stats.t.ppf((1 + level) / 2, len(samples) - 1) * samples.std(ddof=1)
    half /= np.sqrt(len(samples))
    return samples.mean() - half, samples.mean() + half
