"""Properties of the M/G/1 engine for every ordering, on random small instances (hypothesis).

- every job completes exactly once, after it arrives;
- work is conserved: each job's service equals its size, and total busy time equals the total
  work (sizes plus server-time prediction work);
- the server is work-conserving: each job's [arrival, finish] lies inside one busy period, and
  every busy period starts at an arrival time.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servesim.engine.mg1 import run_mg1, simulate_mg1
from servesim.policies.ordering import make_ordering
from servesim.predictors import PredictionCost, make_predictor

SPECS = ["fcfs", "sjf", "psjf", "srpt", "spjf", "pspjf", "sprpt",
         {"kind": "sprpt_bounce", "margin": 0.05}, "one_bit", "one_bit_preemptive",
         "skippredict", "ltr", {"kind": "mlfq", "quanta": [0.2, 0.5, 1.0]},
         {"kind": "trail", "c": 0.5}, {"kind": "trail", "c": 0.8, "max_preemptions": 1},
         {"kind": "aging", "base": "srpt", "wait_s": 1.0},
         {"kind": "aging", "base": "spjf", "wait_s": 0.5}]

jobs = st.integers(1, 25).flatmap(lambda n: st.tuples(
    st.lists(st.floats(0, 3, allow_nan=False), min_size=n, max_size=n),
    st.lists(st.floats(0.01, 3, allow_nan=False), min_size=n, max_size=n),
    st.lists(st.floats(-1, 4, allow_nan=False), min_size=n, max_size=n),
    st.lists(st.sampled_from([0.0, 1.0]), min_size=n, max_size=n),
    st.lists(st.floats(0, 1.5, allow_nan=False), min_size=n, max_size=n),
))
costs = st.sampled_from([None, PredictionCost("server_time", 0.1),
                         PredictionCost("external", 1.0)])


@pytest.mark.parametrize("spec", SPECS, ids=str)
@settings(max_examples=30, deadline=None)
@given(data=jobs, pcost=costs, bcost=costs)
def test_invariants(spec, data, pcost, bcost):
    gaps, size, pred, bit, first = (np.array(v) for v in data)
    arrival = np.cumsum(gaps)
    r = run_mg1(make_ordering(spec), arrival, size, pred, bit=bit, first_s=first,
                prediction_cost=pcost, bit_cost=bcost)
    assert np.all(r.completions == 1)
    assert np.all(r.finish_s >= arrival + size - 1e-9)
    assert np.allclose(r.served_s, size, rtol=1e-9, atol=1e-9)
    busy = r.busy_periods_s
    work = size.sum() + r.prediction_work_s
    assert (busy[:, 1] - busy[:, 0]).sum() == pytest.approx(work, rel=1e-9, abs=1e-9)
    period = np.searchsorted(busy[:, 0], arrival, side="right") - 1
    assert np.all(period >= 0)
    assert np.all(r.finish_s <= busy[period, 1] + 1e-9)
    assert np.all(np.isin(busy[:, 0], arrival))
    assert np.all(busy[1:, 0] > busy[:-1, 1])


def test_same_seed_same_run():
    exp = lambda rng, n: rng.standard_exponential(n)  # noqa: E731
    pred = make_predictor({"kind": "exponential"})
    a = simulate_mg1(make_ordering("sprpt"), 0.7, 2000, exp, predictor=pred, seed=5)
    b = simulate_mg1(make_ordering("sprpt"), 0.7, 2000, exp, predictor=pred, seed=5)
    c = simulate_mg1(make_ordering("sprpt"), 0.7, 2000, exp, predictor=pred, seed=6)
    assert np.array_equal(a.finish_s, b.finish_s) and a.events == b.events
    assert not np.array_equal(a.finish_s, c.finish_s)


@pytest.mark.parametrize("name", ["fcfs", "sjf", "spjf", "psjf", "pspjf", "srpt", "sprpt",
                                  "one_bit_preemptive", "skippredict"])
def test_cost_is_two_events_per_job_when_ranks_never_rise(name):
    """Arrival and completion are the only events when no rank rises with age: preemptions
    happen at arrivals, and nothing is done per unit of service."""
    exp = lambda rng, n: rng.standard_exponential(n)  # noqa: E731
    pred = make_predictor({"kind": "exponential"})
    bit = make_predictor({"kind": "one_bit", "threshold": 1.0, "p_short_as_long": 0.1,
                          "p_long_as_short": 0.1})
    r = simulate_mg1(make_ordering(name), 0.9, 3000, exp, predictor=pred, bit_predictor=bit,
                     seed=1)
    assert r.events == 2 * 3000
    assert np.all(r.completions == 1)
