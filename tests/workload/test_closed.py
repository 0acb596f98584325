"""The closed-loop workload kind: parsing through the [workload] builder, think-time laws and
their moments, the length draws a simulation reads, and one-line errors for bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from servesim.core.errors import ConfigError
from servesim.core.rng import Streams
from servesim.scenario import scenario_from_dict
from servesim.workload.arrivals import ARRIVALS, ArrivalProcess, make_arrivals
from servesim.workload.build import build_workload
from servesim.workload.closed import (
    MAX_CLIENTS,
    ClosedArrivals,
    DeterministicTime,
    ExponentialTime,
    LogNormalTime,
    UniformTime,
    closed_loop_of,
    make_think_time,
)

LENGTHS = {"prompt_tokens": {"kind": "uniform", "low": 10, "high": 90},
           "output_tokens": {"kind": "geometric", "mean": 30}}


def workload(arrival, **lengths):
    return build_workload({"arrival": arrival, **(lengths or LENGTHS)})


def scenario(arrival, run=None):
    return scenario_from_dict({"run": run or {"requests": 50},
                               "workload": {"arrival": arrival, **LENGTHS}})


def test_parsed_by_the_workload_builder():
    w = workload({"kind": "closed", "clients": 8, "think_s": 0.5})
    assert isinstance(w.arrival, ClosedArrivals)
    assert w.arrival.clients == 8 and w.arrival.think == DeterministicTime(0.5)
    assert w.describe()["arrival"] == {"kind": "closed", "clients": 8,
                                       "think_s": {"kind": "deterministic", "value_s": 0.5}}
    assert math.isnan(w.arrival.rate_per_s) and math.isnan(w.arrival.scv)


def test_think_time_omitted_is_zero_and_tables_build_each_law():
    assert workload({"kind": "closed", "clients": 1}).arrival.think == DeterministicTime(0.0)
    cases = {
        "deterministic": ({"value_s": 2.0}, DeterministicTime(2.0)),
        "exponential": ({"mean_s": 2.0}, ExponentialTime(2.0)),
        "uniform": ({"low_s": 1.0, "high_s": 3.0}, UniformTime(1.0, 3.0)),
        "lognormal": ({"mean_s": 2.0, "cv": 1.5}, LogNormalTime(2.0, 1.5)),
    }
    for kind, (params, expected) in cases.items():
        got = make_think_time({"kind": kind, **params}, "think_s")
        assert got == expected
        assert got.describe() == {"kind": kind, **params}


@pytest.mark.parametrize("think", [ExponentialTime(2.0), UniformTime(1.0, 3.0),
                                   LogNormalTime(2.0, 1.5), DeterministicTime(0.25)])
def test_think_time_moments_match_samples(think):
    x = think.sample(np.random.default_rng(0), 400_000)
    assert (x >= 0).all()
    assert x.mean() == pytest.approx(think.mean_s, rel=0.02)
    assert x.var() == pytest.approx(think.variance_s2, rel=0.15, abs=1e-12)


def test_think_draws_do_not_depend_on_blocks():
    think = LogNormalTime(1.0, 0.8)
    whole = think.sample(np.random.default_rng(5), 3000)
    rng = np.random.default_rng(5)
    parts = np.concatenate([think.sample(rng, 1000) for _ in range(3)])
    assert np.array_equal(whole, parts)


def test_closed_loop_of_and_its_helpers():
    assert closed_loop_of(scenario({"kind": "poisson", "rate_per_s": 2.0})) is None
    loop = closed_loop_of(scenario({"kind": "closed", "clients": 3,
                                    "think_s": {"kind": "exponential", "mean_s": 2.0}}))
    assert loop is not None and loop.clients == 3
    think = loop.think_times_s(np.random.default_rng(1), 5)
    assert think.shape == (5,) and think.dtype == np.float64
    prompt, output = loop.lengths(Streams(7), 40)
    assert prompt.dtype == np.int64 and len(prompt) == len(output) == 40
    # The per-request draws a simulation reads are the same values, whatever the blocks.
    draws = loop.length_draws(Streams(7), "run.requests", 40)
    got = [draws.get(k) for k in range(40)]
    assert [p for _, p, _ in got] == prompt.tolist()
    assert [o for _, _, o in got] == output.tolist()


def test_networks_keep_the_open_loop_kinds():
    assert "closed" not in ARRIVALS
    with pytest.raises(ConfigError, match="arrival.kind: got 'closed'"):
        make_arrivals({"kind": "closed", "clients": 2}, "arrival")


def test_closed_arrivals_fill_the_arrival_slot():
    assert isinstance(ClosedArrivals(2), ArrivalProcess)


def test_sample_refuses():
    with pytest.raises(ConfigError, match="simulation"):
        ClosedArrivals(2).sample(np.random.default_rng(0), n=3)


@pytest.mark.parametrize(("arrival", "pattern"), [
    ({"kind": "closd", "clients": 2}, r"workload\.arrival\.kind: got 'closd'.*did you mean "
                                      r"'closed'\?"),
    ({"kind": "closed"}, r"workload\.arrival\.clients: got None, expected a value"),
    ({"kind": "closed", "clients": 0}, r"workload\.arrival\.clients: got 0"),
    ({"kind": "closed", "clients": -3}, r"workload\.arrival\.clients: got -3"),
    ({"kind": "closed", "clients": 2.5}, r"workload\.arrival\.clients: got 2\.5"),
    ({"kind": "closed", "clients": "8"}, r"workload\.arrival\.clients: got '8'"),
    ({"kind": "closed", "clients": True}, r"workload\.arrival\.clients: got True"),
    ({"kind": "closed", "clients": MAX_CLIENTS + 1}, r"workload\.arrival\.clients: got "),
    ({"kind": "closed", "clients": 2, "thinks_s": 1}, r"workload\.arrival\.thinks_s.*did you "
                                                      r"mean 'think_s'\?"),
    ({"kind": "closed", "clients": 2, "rate_per_s": 3.0}, r"workload\.arrival\.rate_per_s: got "
                                                          r"3\.0, expected nothing here"),
    ({"kind": "closed", "clients": 2, "think_s": -1}, r"workload\.arrival\.think_s: got -1"),
    ({"kind": "closed", "clients": 2, "think_s": math.inf}, r"workload\.arrival\.think_s: "),
    ({"kind": "closed", "clients": 2, "think_s": "1s"}, r"workload\.arrival\.think_s: got '1s'"),
    ({"kind": "closed", "clients": 2, "think_s": {"kind": "exponental", "mean_s": 1}},
     r"workload\.arrival\.think_s\.kind: got 'exponental'.*did you mean 'exponential'\?"),
    ({"kind": "closed", "clients": 2, "think_s": {"kind": "exponential"}},
     r"workload\.arrival\.think_s\.mean_s: got None"),
    ({"kind": "closed", "clients": 2, "think_s": {"kind": "exponential", "mean": 1}},
     r"workload\.arrival\.think_s\.mean.*did you mean 'mean_s'\?"),
    ({"kind": "closed", "clients": 2, "think_s": {"kind": "exponential", "mean_s": 0}},
     r"workload\.arrival\.think_s\.mean_s: got 0"),
    ({"kind": "closed", "clients": 2, "think_s": {"kind": "uniform", "low_s": 2, "high_s": 1}},
     r"workload\.arrival\.think_s\.high_s: got 1\.0, expected a time >= low_s"),
    ({"kind": "closed", "clients": 2, "think_s": {"kind": "lognormal", "mean_s": 1, "cv": 0}},
     r"workload\.arrival\.think_s\.cv: got 0"),
    ({"kind": "closed", "clients": 2, "think_s": {"kind": "deterministic", "value_s": -2}},
     r"workload\.arrival\.think_s\.value_s: got -2"),
])
def test_bad_input_is_one_line_naming_the_field(arrival, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        workload(arrival)
    assert "\n" not in str(info.value)
