"""M/G/1 simulation against the survey's Table 1 (Mitzenmacher and Shahout, arXiv 2503.07545).

Set-up: Poisson arrivals at rate lambda, Exp(1) sizes, predictions y ~ Exp(mean = x), i.e.
g(x, y) = e^{-x} e^{-y/x} / x. Table 1 gives E[T] from the closed forms:
    FCFS  x + lambda E[S^2] / (2 (1 - rho))
    SJF   x + lambda E[S^2] / (2 (1 - rho(x))^2)
    SPJF  x + lambda E[S^2] / (2 (1 - rho'_y)^2)
    PSJF  lambda int_0^x t^2 f / (2 (1 - rho(x))^2) + x / (1 - rho(x))
    PSPJF lambda int_0^y int t^2 g / (2 (1 - rho'_y)^2) + x / (1 - rho'_y)
    SRPT  lambda [int_0^x t^2 f + x^2 (1 - F(x))] / (2 (1 - rho(x))^2) + int_0^x dt / (1 - rho(t))
integrated over g (see docs/predictions.md for the notation).

CI method: independent replications. Each replication (its own seed) simulates 10,000 jobs from
an empty system and averages the response times of jobs 1,001..10,000 (the warm-up is many
relaxation times at rho = 0.8); the 99% interval is t-based over 10 replications. The published
value must lie inside it.
"""

import pytest
from mg1_stats import ci, exp_sizes, replication_means

from servesim.policies.ordering import make_ordering
from servesim.predictors import make_predictor

pytestmark = pytest.mark.slow  # replications for a CI: seconds per test

TABLE_1 = {  # policy: (E[T] at lambda = 0.5, at lambda = 0.8)
    "fcfs": (2.000, 5.000),
    "sjf": (1.7127, 2.8822),
    "spjf": (1.7948, 3.3758),
    "psjf": (1.5314, 2.6589),
    "pspjf": (1.6637, 3.1945),
    "srpt": (1.4254, 2.3528),
}


@pytest.mark.parametrize("load_index, rate", [(0, 0.5), (1, 0.8)])
@pytest.mark.parametrize("policy", sorted(TABLE_1))
def test_simulation_agrees_with_table_1(policy, load_index, rate):
    ordering = make_ordering(policy)
    predictor = make_predictor({"kind": "exponential"}) if ordering.uses == "prediction" else None
    means = replication_means(ordering, rate, exp_sizes, predictor=predictor, n_jobs=10_000,
                              warmup=1_000, replications=10, seed0=1000)
    lo, hi = ci(means)
    assert lo <= TABLE_1[policy][load_index] <= hi, (lo, TABLE_1[policy][load_index], hi)
