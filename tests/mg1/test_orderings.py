"""Orderings on the M/G/1 engine: small traces checked by hand (times in seconds)."""

import numpy as np
import pytest

from servesim.core.errors import ConfigError
from servesim.engine.mg1 import run_mg1
from servesim.policies.ordering import ORDERINGS, Segment, kendall_tau, make_ordering
from servesim.predictors import PredictionCost


def finish(name, arrival, size, pred=None, **kw):
    r = run_mg1(make_ordering(name), arrival, size, pred, **kw)
    return list(r.finish_s), list(r.preemptions)


def test_fcfs():
    assert finish("fcfs", [0, 1, 2], [3, 1, 1]) == ([3, 4, 5], [0, 0, 0])


def test_sjf_and_spjf_are_non_preemptive():
    # Job 0 runs to the end; then the shorter (true or predicted) of the two waiting jobs.
    assert finish("sjf", [0, 0.5, 0.6], [2, 3, 1]) == ([2, 6, 3], [0, 0, 0])
    assert finish("spjf", [0, 0.5, 0.6], [2, 3, 1], [2, 0.5, 5]) == ([2, 5, 6], [0, 0, 0])


def test_psjf_preempts_on_a_shorter_arrival():
    assert finish("psjf", [0, 1], [3, 1]) == ([4, 2], [1, 0])


def test_srpt_compares_remaining_work():
    assert finish("srpt", [0, 1], [3, 2.5]) == ([3, 5.5], [0, 0])  # remaining 2 < 2.5
    assert finish("srpt", [0, 1], [3, 1.5]) == ([4.5, 2.5], [1, 0])


def test_sprpt_rank_goes_negative_but_pspjf_keeps_the_prediction():
    # Job 0 predicted 1, true 4: at t = 2 its SPRPT rank is -1, below the newcomer's 0.5.
    assert finish("sprpt", [0, 2], [4, 1], [1, 0.5]) == ([4, 5], [0, 0])
    assert finish("pspjf", [0, 2], [4, 1], [1, 0.5]) == ([5, 3], [1, 0])


def test_sprpt_bounce_rank_rises_after_zero():
    # At t = 2 job 0's rank has bounced to |1 - 2| = 1 > 0.5: the newcomer runs 2..3.
    assert finish("sprpt_bounce", [0, 2], [4, 1], [1, 0.5]) == ([5, 3], [1, 0])
    o = make_ordering("sprpt_bounce")
    assert o.segment(4, 1, 0.25, 0) == Segment(0, 0.75, -1.0, 1.0)
    assert o.segment(4, 1, 1.5, 0) == Segment(0, 0.5, 1.0)


def test_sprpt_bounce_overdue_jobs_take_turns_by_the_margin():
    r = run_mg1(make_ordering({"kind": "sprpt_bounce", "margin": 0.5}), [0, 0], [3, 3], [0, 0])
    # Both overdue from the start: a turn lasts until the runner leads the other by 0.5.
    assert sorted(r.finish_s) == pytest.approx([5.5, 6.0])
    # Turns end at t = 0.5, 1.5, 2.5, 3.5, 4.5: job 0 then job 1 lead by 0.5 after 0.5, then 1.
    assert r.total_preemptions == 5


def test_one_bit_classes():
    bits = [1, 1, 0, 0]
    assert finish("one_bit", [0, 0.1, 0.2, 0.3], [1, 1, 1, 1], bits) == ([1, 4, 2, 3],
                                                                         [0, 0, 0, 0])
    assert finish("one_bit_preemptive", [0, 0.5], [2, 1], [1, 0]) == ([3, 1.5], [1, 0])
    # With a full prediction, the threshold makes the bit.
    o = make_ordering({"kind": "one_bit", "threshold": 10})
    assert o.rank(1, 11, 0, 7.0) == (1, 7.0) and o.rank(1, 9, 0, 7.0) == (0, 7.0)


def test_skippredict_shorts_first_then_sprpt_among_longs():
    f, pre = finish("skippredict", [0, 0.5, 1.0], [2, 2, 1], [5, 1, 99], bit=[1, 1, 0])
    assert f == [5, 3.5, 2] and pre == [1, 1, 0]


def test_skip_join_mlfq():
    assert finish("mlfq", [0, 0.1, 0.2], [3, 1, 2]) == ([5, 2, 6], [1, 0, 1])
    # Job 1's first iteration (1.5) needs queue 1 (quantum 2): it skips queue 0.
    got = finish("mlfq", [0, 0.1, 0.2], [3, 1, 2], first_s=[0, 1.5, 0])
    assert got == ([4, 5, 6], [1, 0, 1])
    assert make_ordering("mlfq").entry(100.0) == 4


def test_trail_limited_preemption_and_cap():
    trail = {"kind": "trail", "c": 0.5}
    assert finish(trail, [0, 1], [4, 1], [4, 1]) == ([5, 2], [1, 0])  # age 1 < 0.5 * 4
    assert finish(trail, [0, 2.5], [4, 1], [4, 1]) == ([4, 5], [0, 0])  # age 2.5 > 2
    capped = {**trail, "max_preemptions": 1}
    assert finish(capped, [0, 1, 2.5], [4, 1, 0.5], [4, 1, 0.5]) == ([5, 2, 5.5], [1, 0, 0])
    o = make_ordering(trail)
    # Victim: the preemptible job with the largest predicted remaining (job 2 is past c * pred).
    assert o.victim([9, 9, 9], [4, 6, 20], [1, 1, 15], [0, 1, 2]) == 1
    assert make_ordering("spjf").victim([1], [1], [0], [0]) == -1


def test_skippredict_victim_reads_the_cheap_bit():
    """SkipPredict ranks bit-0 jobs (0, arrival) ahead of bit-1 jobs (1, pred - age), so the
    victim is a predicted-long job whatever the numbers, and only the bits say which is long."""
    o = make_ordering("skippredict")
    sizes, preds, ages, arrivals = [9, 9, 9], [2, 50, 3], [0, 0, 0], [0, 1, 2]
    assert o.victim(sizes, preds, ages, arrivals, bits=[1.0, 0.0, 0.0]) == 0
    assert o.victim(sizes, preds, ages, arrivals, bits=[0.0, 0.0, 1.0]) == 2
    assert o.victim(sizes, preds, ages, arrivals, bits=[1.0, 0.0, 1.0]) == 2


def test_trail_extremes_are_sjf_and_srpt():
    arrival, size = [0, 1, 1.2, 3], [4, 1, 2.5, 0.2]
    assert finish({"kind": "trail", "c": 0}, arrival, size, size) == finish("sjf", arrival, size)
    assert finish({"kind": "trail", "c": 1}, arrival, size, size) == finish("srpt", arrival, size)


def test_aging_boosts_a_starving_job():
    arrival, size = [0, 0.1, 0.5, 1.5, 2.5], [1, 3, 1, 1, 1]
    assert finish("sjf", arrival, size)[0] == [1, 7, 2, 3, 4]
    aged = {"kind": "aging", "base": "sjf", "wait_s": 2}
    assert finish(aged, arrival, size)[0] == [1, 6, 2, 3, 7]


def test_server_time_prediction_cost_takes_the_server():
    cost = PredictionCost("server_time", 0.5)
    r = run_mg1(make_ordering("spjf"), [0, 0.1], [1, 1], [1, 1], prediction_cost=cost)
    # Predictions run above every job: job 0's 0..0.5, job 1's 0.5..1; then job 0, job 1.
    assert list(r.finish_s) == [2.0, 3.0] and r.prediction_work_s == pytest.approx(1.0)
    assert r.busy_periods_s.tolist() == [[0.0, 3.0]]


def test_external_costs_are_booked_per_prediction():
    r = run_mg1(make_ordering("skippredict"), [0, 0.1], [1, 1], [1, 1], bit=[0, 1],
                prediction_cost=PredictionCost("external", 1.0),
                bit_cost=PredictionCost("external", 0.1))
    assert list(r.prediction_cost) == pytest.approx([0.1, 1.1])
    assert list(r.finish_s) == [1, 2]


def test_kendall_tau():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_registry_names_and_errors():
    expected = {"fcfs", "sjf", "srpt", "spjf", "pspjf", "sprpt", "sprpt_bounce", "one_bit",
                "one_bit_preemptive", "skippredict", "ltr", "mlfq", "trail", "aging"}
    assert expected <= set(ORDERINGS)
    with pytest.raises(ConfigError, match=r"policy\.order\.kind: .*did you mean 'sprpt'"):
        make_ordering("sprtp")
    with pytest.raises(ConfigError, match=r"policy\.order\.cc: .*did you mean 'c'"):
        make_ordering({"kind": "trail", "cc": 1})
    with pytest.raises(ConfigError, match=r"policy\.order\.c: got -1"):
        make_ordering({"kind": "trail", "c": -1})
    with pytest.raises(ConfigError, match=r"policy\.order\.base\.kind: .*'fcfs'"):
        make_ordering({"kind": "aging", "base": "fcf", "wait_s": 1})
    with pytest.raises(ConfigError, match=r"mg1\.prediction: got None"):
        run_mg1(make_ordering("spjf"), [0], [1])


def test_ltr_orders_by_score():
    scores = np.array([3.0, 1.0, 2.0])
    f, _ = finish("ltr", [0, 0.1, 0.2], [1, 1, 1], scores)
    assert f == [1, 2, 3]


def test_skippredict_server_time_cheap_for_all_expensive_for_long():
    # Job 0: bit 0..0.1, expensive 0.1..0.3; job 1: bit 0.3..0.4, then (short) 0.4..1.4;
    # job 0 (long) 1.4..2.4.
    r = run_mg1(make_ordering("skippredict"), [0, 0.1], [1, 1], [1, 1], bit=[1, 0],
                prediction_cost=PredictionCost("server_time", 0.2),
                bit_cost=PredictionCost("server_time", 0.1))
    assert list(r.finish_s) == pytest.approx([2.4, 1.4])
    assert r.prediction_work_s == pytest.approx(0.4)
