"""Theory: a closed loop of N clients in front of an engine that serves one request at a time is
the machine-repairman queue M/M/1//N (finite source, exponential think times).

Set-up: vLLM batching with max_batch_size = 1, so requests are served one at a time in FCFS
order; each request has P prompt tokens and 1 output token, and with the piecewise-linear cost
t(b) = c + a*max(0, b - b0), b0 = 0, its service time is the prefill iteration plus one decode
iteration: S = (c + a*P) + (c + a) = 2c + a*(P + 1). P is geometric with mean m = 1000, so S is
a fine-grained geometric (SCV 1 - 3/m + O(1/m^2)), exponential to within the lattice a. Think
times are exponential with mean Z = 1/lambda. Every client sends its first request at t = 0,
so the first requests of each run are left out (a warm-up in requests); under FCFS a request's
response depends only on the requests sent before it, so a count-mode run has no end effect.

Formulas checked:
- M/M/1//N, service rate mu = 1/E[S]: with r = lambda/mu,
      p0 = [sum_{k=0}^{N} N!/(N-k)! r^k]^-1,  U = 1 - p0,  X = mu U,  R = N/X - 1/lambda.
- M/G/1//N (Takacs), exact for the geometric service: with phi the Laplace-Stieltjes transform
  of S and B_k = prod_{i=1}^{k} (1 - phi(i lambda)) / phi(i lambda),
      p0 = [1 + N lambda E[S] sum_{k=0}^{N-1} C(N-1, k) B_k]^-1,  X = (1 - p0)/E[S],
      R = N/X - 1/lambda.
  For exponential S, B_k = k! r^k and it reduces to the M/M/1//N formula above. The two differ
  here by the discretisation of S (asserted below 0.1%), far inside the interval.

Tolerance: a 99% confidence interval, t-based, over independent replications (seeds), each the
mean response time of its requests after the warm-up.
"""

import math

import numpy as np
import pytest
from scipy import stats

from servesim.api import simulate
from servesim.scenario import scenario_from_dict

pytestmark = pytest.mark.slow  # replications for a CI: seconds per test

A_S, C_S, MEAN_P = 1e-3, 1e-7, 1000.0     # seconds per token, per iteration; mean prompt
REQUESTS, WARMUP, REPLICATIONS = 8000, 500, 10


def service_mean_s() -> float:
    return 2 * C_S + A_S * (MEAN_P + 1)


def service_lst(s: float) -> float:
    """E[exp(-s S)] for S = 2c + a(P + 1), P geometric on {1, 2, ...} with p = 1/m."""
    p = 1 / MEAN_P
    step = math.exp(-s * A_S)
    return math.exp(-s * (2 * C_S + A_S)) * p * step / (1 - (1 - p) * step)


def mm1n_response_s(n: int, think_s: float, service_s: float) -> float:
    r = service_s / think_s
    p0 = 1 / sum(math.factorial(n) / math.factorial(n - k) * r**k for k in range(n + 1))
    return n * service_s / (1 - p0) - think_s


def mg1n_response_s(n: int, think_s: float, service_s: float, lst) -> float:
    lam = 1 / think_s
    total, b = 0.0, 1.0
    for k in range(n):
        if k:
            phi = lst(k * lam)
            b *= (1 - phi) / phi
        total += math.comb(n - 1, k) * b
    p0 = 1 / (1 + n * lam * service_s * total)
    return n * service_s / (1 - p0) - think_s


def scenario(clients: int, think_s: float, seed: int):
    return scenario_from_dict({
        "run": {"seed": seed, "requests": REQUESTS},
        "workload": {"arrival": {"kind": "closed", "clients": clients,
                                 "think_s": {"kind": "exponential", "mean_s": think_s}},
                     "prompt_tokens": {"kind": "geometric", "mean": MEAN_P},
                     "output_tokens": {"kind": "deterministic", "value": 1}},
        "engine": {"batching": "vllm", "token_budget": 1 << 20, "max_batch_size": 1,
                   "cost": {"kind": "piecewise", "c_ms": C_S * 1e3, "a_ms": A_S * 1e3,
                            "b0": 0}},
    })


def replication_means(clients: int, think_s: float) -> np.ndarray:
    means = []
    for r in range(REPLICATIONS):
        req = simulate(scenario(clients, think_s, seed=1000 + r)).requests
        assert (req["status"] == "finished").all()
        e2e = (req["finish_s"] - req["arrival_s"]).to_numpy()[WARMUP:]
        means.append(e2e.mean())
    return np.asarray(means)


def ci99(samples: np.ndarray) -> tuple[float, float]:
    half = stats.t.ppf(0.995, len(samples) - 1) * samples.std(ddof=1) / np.sqrt(len(samples))
    return samples.mean() - half, samples.mean() + half


def test_takacs_reduces_to_machine_repairman_for_exponential_service():
    for n, z, s in [(1, 2.0, 1.0), (4, 3.0, 1.0), (10, 1.0, 0.3)]:
        exact = mg1n_response_s(n, z, s, lambda x, s=s: 1 / (1 + x * s))
        assert exact == pytest.approx(mm1n_response_s(n, z, s), rel=1e-12)
    assert mm1n_response_s(1, 2.0, 1.0) == pytest.approx(1.0)   # alone: R = E[S]


@pytest.mark.parametrize(("clients", "think_over_service"), [(4, 3.0), (8, 4.0)])
def test_closed_loop_matches_machine_repairman(clients, think_over_service):
    service_s = service_mean_s()
    think_s = think_over_service * service_s
    expected = mm1n_response_s(clients, think_s, service_s)
    exact = mg1n_response_s(clients, think_s, service_s, service_lst)
    assert abs(exact - expected) / expected < 1e-3     # the geometric lattice's bias
    lo, hi = ci99(replication_means(clients, think_s))
    assert hi - lo < 0.1 * expected                   # an interval narrow enough to mean something
    assert lo <= expected <= hi, (lo, expected, hi)
    assert lo <= exact <= hi, (lo, exact, hi)
