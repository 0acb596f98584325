"""Theory: an engine serving one request at a time is an M/G/1 queue.

Set-up: vLLM batching with k_max = 1, so requests are served one at a time in FCFS order. Each
request has P prompt tokens and 1 output token; with the piecewise-linear cost
t(b) = c + a*max(0, b - b0) and b0 = 0, its service time is the prefill iteration plus one decode
iteration: S = (c + a*P) + (c + a) = 2c + a*(P + 1).

Formula checked (Pollaczek-Khinchine):
    E[T] = E[S] + lambda*E[S^2] / (2*(1 - rho)),  rho = lambda*E[S].
- M/D/1: P deterministic, so E[S^2] = E[S]^2.
- M/M/1: P geometric with mean 1000, so S is a fine-grained geometric, exponential to within
  SCV 0.998; PK then agrees with the M/M/1 formula E[T] = 1/(mu - lambda) to 0.1%, and the test
  checks both.

Tolerance: a 99% confidence interval, t-based, over independent replications (seeds), each the
mean response time of its requests after a warm-up.
"""

import numpy as np
import pytest
from scipy import stats

from servesim.core.rng import Streams
from servesim.engine.config import EngineConfig
from servesim.engine.cost import PiecewiseLinear
from servesim.engine.replica import run_engine
from servesim.workload.arrivals import Poisson
from servesim.workload.distributions import Deterministic, Geometric
from servesim.workload.requests import Requests

pytestmark = pytest.mark.slow  # replications for a CI: seconds per test

A_S, C_S = 1e-3, 1e-7        # seconds per token, fixed seconds per iteration
N, WARMUP, REPLICATIONS = 10_000, 1_000, 10


def service_moments(prompt):
    """E[S] and E[S^2] of S = 2c + a*(P + 1), from the distribution's own moments."""
    mean_p, var_p = prompt.mean, prompt.variance
    m1 = 2 * C_S + A_S * (mean_p + 1)
    var_s = A_S**2 * var_p
    return m1, var_s + m1**2


def pk_mean_response(rate, prompt):
    m1, m2 = service_moments(prompt)
    rho = rate * m1
    return m1 + rate * m2 / (2 * (1 - rho))


def replication_means(rate, prompt, seed0):
    config = EngineConfig(batching="vllm", token_budget=1 << 20, max_batch_size=1)  # > any prompt
    cost = PiecewiseLinear(c_s=C_S, a_s=A_S, b0=0)
    means = []
    for r in range(REPLICATIONS):
        streams = Streams(seed0 + r)
        arrivals = Poisson(rate).sample(streams.get("arrivals"), n=N)
        prompts = prompt.sample(streams.get("prompt"), N)
        reqs = Requests.from_lists(arrivals, prompts, np.ones(N, np.int64))
        res = run_engine(reqs, config, cost).requests
        e2e = (res.finish_s - res.arrival_s).to_numpy()[WARMUP:]
        means.append(e2e.mean())
    return np.asarray(means)


def ci99(samples):
    half = stats.t.ppf(0.995, len(samples) - 1) * samples.std(ddof=1) / np.sqrt(len(samples))
    return samples.mean() - half, samples.mean() + half


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_md1_matches_pollaczek_khinchine(rho):
    prompt = Deterministic(999)
    rate = rho / service_moments(prompt)[0]
    lo, hi = ci99(replication_means(rate, prompt, seed0=100))
    expected = pk_mean_response(rate, prompt)
    assert lo <= expected <= hi, (lo, expected, hi)


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_mm1_matches_pollaczek_khinchine_and_mm1(rho):
    prompt = Geometric(1000)
    m1 = service_moments(prompt)[0]
    rate = rho / m1
    expected = pk_mean_response(rate, prompt)
    mm1 = 1 / (1 / m1 - rate)
    assert expected == pytest.approx(mm1, rel=2e-3)
    lo, hi = ci99(replication_means(rate, prompt, seed0=200))
    assert lo <= expected <= hi, (lo, expected, hi)
