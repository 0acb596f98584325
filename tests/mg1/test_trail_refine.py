"""TRAIL's refining predictor in the M/G/1 mode: the predicted remaining is re-estimated every K
units of attained service, as events of the job in service; the rank reads attained + predicted
remaining, and the preemption limit stays on the initial prediction."""

import math

import numpy as np
import pytest
from mg1_stats import ci

from servesim.engine.mg1 import Refinement, run_mg1, simulate_mg1
from servesim.policies.ordering import make_ordering
from servesim.predictors import make_predictor

# Bins [0, 4), [4, 8), [8, 16) (midpoints 2, 6, 12); with confusion 0 the classifier reads the
# true bin of the remaining size, so predicted remaining = the midpoint of that bin.
COARSE = {"kind": "trail", "bins": [0.0, 4.0, 8.0, 16.0], "refine_every": 4}
# Fine bins: ratio 1.25 from 1 to about 2e4, with an exact classifier.
FINE = {"kind": "trail", "bins": [0.0, *(1.25**k for k in range(45))], "refine_every": 8}


def lognormal_sizes(rng, n):
    """Lognormal sizes with mean 40 and cv 2 (in the predictor's bin units)."""
    s2 = np.log1p(4.0)
    return rng.lognormal(np.log(40.0) - s2 / 2, np.sqrt(s2), n)


def run(order, arrival, size, spec, *, refine=True, calls=None):
    """run_mg1 with the predictor's initial predictions, refined (or not) from seed 0."""
    p = make_predictor(spec)
    if calls is not None:
        p.refine = spy(p, calls)
    rng = np.random.default_rng(0)
    state = p.start(size, rng=rng)
    ref = Refinement(p, state, rng) if refine else None
    return run_mg1(make_ordering(order), arrival, size, p.prediction(state), refinement=ref)


def spy(predictor, calls):
    refine = predictor.refine

    def record(state, generated, rows=None, rng=None):
        calls.append((np.atleast_1d(rows).tolist(), np.atleast_1d(generated).tolist()))
        return refine(state, generated, rows=rows, rng=rng)

    return record


def test_refinements_are_events_at_multiples_of_k_of_attained_service():
    # SPRPT. A (size 9, predicted 12) runs from 0; B (size 5, predicted 6) preempts it at 1 and
    # runs [1, 6). A resumes at age 1 and is refined at age 4 (t = 9): remaining 5, predicted 6,
    # so its rank at t = 9.5 is 4 + 6 - 4.5 = 5.5 and C (size 7, predicted 6) arriving then
    # waits: A finishes at 14, C at 21. Unrefined, A ranks 12 - 4.5 = 7.5 there and C preempts.
    arrival, size = [0.0, 1.0, 9.5], [9.0, 5.0, 7.0]
    calls = []
    r = run("sprpt", arrival, size, COARSE, calls=calls)
    assert list(r.finish_s) == [14.0, 6.0, 21.0]
    assert list(r.preemptions) == [1, 0, 0]
    # B at its age 4, A at 4 and 8, C at 4: never at a completion (C is refined once, at 4 < 7).
    assert calls == [([1], [4]), ([0], [4]), ([0], [8]), ([2], [4])]
    assert list(r.refinements) == [2, 1, 1]
    plain = run("sprpt", arrival, size, COARSE, refine=False)
    assert list(plain.finish_s) == [21.0, 6.0, 16.5]
    assert plain.refinements.sum() == 0


def test_refined_limit_stays_on_the_initial_prediction():
    # TRAIL c = 0.5. A (size 9, predicted 12: limit 6) is refined at age 4 to predicted 10, rank
    # 10 - 5.5 = 4.5 at t = 5.5 when C (size 3, predicted 2) arrives. 5.5 <= 0.5 * 12, so A is
    # preempted (with the refined 10 it would not be: 5.5 > 5). C runs [5.5, 8.5), A ends at 12.
    r = run({"kind": "trail", "c": 0.5}, [0.0, 5.5], [9.0, 3.0], COARSE)
    assert list(r.finish_s) == [12.0, 8.5]
    assert list(r.preemptions) == [1, 0]


def test_every_job_is_refined_at_each_multiple_of_k_below_its_size():
    calls = []
    p = make_predictor({**FINE, "confusion": 0.2})
    p.refine = spy(p, calls)
    r = simulate_mg1(make_ordering({"kind": "trail", "c": 0.8}), 0.8 / 40, 300, lognormal_sizes,
                     predictor=p, seed=3)
    k = FINE["refine_every"]
    assert list(r.refinements) == [math.ceil(x / k) - 1 for x in r.size_s]
    seen = {}
    for rows, generated in calls:
        seen.setdefault(rows[0], []).append(generated[0])
    for j, ages in seen.items():
        assert ages == list(range(k, k * len(ages) + 1, k)), j
    assert r.total_preemptions > 0 and (r.completions == 1).all()


def test_refine_every_beyond_every_size_is_the_unrefined_run():
    order = make_ordering({"kind": "trail", "c": 0.8})
    spec = {**FINE, "refine_every": 10**9, "confusion": 0.3}
    a = simulate_mg1(order, 0.8 / 40, 2_000, lognormal_sizes, predictor=make_predictor(spec),
                     seed=7)
    b = simulate_mg1(order, 0.8 / 40, 2_000, lognormal_sizes, predictor=make_predictor(spec),
                     seed=7, refine=False)
    assert a.size_s.max() < 10**9 and a.refinements.sum() == 0
    for field in ("arrival_s", "finish_s", "served_s", "preemptions", "completions"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.events == b.events


def test_refinement_draws_only_from_the_predictor_stream():
    order = make_ordering("sprpt")
    spec = {**FINE, "confusion": 0.3}
    a, b = (simulate_mg1(order, 0.02, 500, lognormal_sizes, predictor=make_predictor(spec),
                         seed=11) for _ in range(2))
    plain = simulate_mg1(order, 0.02, 500, lognormal_sizes, predictor=make_predictor(spec),
                         seed=11, refine=False)
    np.testing.assert_array_equal(a.finish_s, b.finish_s)
    np.testing.assert_array_equal(a.arrival_s, plain.arrival_s)
    np.testing.assert_array_equal(a.size_s, plain.size_s)
    assert a.refinements.sum() > 0 and not np.array_equal(a.finish_s, plain.finish_s)


def test_a_non_preemptive_ordering_is_not_refined():
    spec = {**FINE, "confusion": 0.3}
    a = simulate_mg1(make_ordering("spjf"), 0.02, 300, lognormal_sizes,
                     predictor=make_predictor(spec), seed=5)
    b = simulate_mg1(make_ordering("spjf"), 0.02, 300, lognormal_sizes,
                     predictor=make_predictor(spec), seed=5, refine=False)
    assert a.refinements.sum() == 0
    np.testing.assert_array_equal(a.finish_s, b.finish_s)


@pytest.mark.slow
def test_refined_trail_is_no_worse_than_unrefined():
    """Paired seeds (same arrivals, sizes and initial predictions), TRAIL c = 0.8, exact bin
    classifier with fine bins, lognormal sizes (mean 40, cv 2) at load 0.8, 10 replications of
    2,000 jobs (first 200 discarded): the 99% t-interval of E[T refined] - E[T unrefined] must
    not lie above 0. Every job finishes exactly once, having received exactly its size."""
    order = make_ordering({"kind": "trail", "c": 0.8})
    predictor = make_predictor(FINE)
    diffs = []
    for seed in range(10):
        res = [simulate_mg1(order, 0.8 / 40, 2_000, lognormal_sizes, predictor=predictor,
                            seed=6000 + seed, refine=refine) for refine in (True, False)]
        for r in res:
            assert (r.completions == 1).all()
            np.testing.assert_allclose(r.served_s, r.size_s, rtol=1e-12, atol=1e-9)
        assert res[0].refinements.sum() > 0
        diffs.append(res[0].response_s[200:].mean() - res[1].response_s[200:].mean())
    lo, hi = ci(np.asarray(diffs))
    assert lo <= 0.0, (lo, hi)
    assert hi < 0.05 * res[1].response_s.mean(), (lo, hi)


@pytest.mark.parametrize("order", ["sprpt", {"kind": "aging", "base": "sprpt", "wait_s": 50.0}])
def test_refinement_with_other_orderings_finishes_every_job_once(order):
    r = simulate_mg1(make_ordering(order), 0.02, 300, lognormal_sizes,
                     predictor=make_predictor({**FINE, "confusion": 0.2}), seed=2)
    assert (r.completions == 1).all() and r.refinements.sum() > 0


def test_skippredict_refines_only_predicted_long_jobs():
    rng = np.random.default_rng(4)
    size = lognormal_sizes(rng, 300)
    arrival = np.cumsum(rng.exponential(50.0, 300))
    bit = (size > 40).astype(float)
    p = make_predictor({**FINE, "confusion": 0.2})
    state = p.start(size, rng=rng)
    r = run_mg1(make_ordering("skippredict"), arrival, size, p.prediction(state), bit=bit,
                refinement=Refinement(p, state, rng))
    assert (r.completions == 1).all()
    assert r.refinements[bit == 0].sum() == 0 and r.refinements[bit == 1].sum() > 0
