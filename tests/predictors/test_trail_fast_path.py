"""TRAIL's few-row refinement path must be bit-identical to the vectorised one: the update
posterior ∝ (posterior T^d) ⊙ L[report] gives the same posteriors, the same predictions
sum_j posterior_j midpoint_j and the same generator draws (so the same generator state after)."""

import copy

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from servesim.predictors import make_predictor


@st.composite
def setups(draw):
    widths = draw(st.lists(st.integers(1, 300), min_size=1, max_size=9))
    spec = {"kind": "trail", "bins": [0, *np.cumsum(widths).tolist()],
            "refine_every": draw(st.integers(1, 32)),
            "confusion": draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]) | st.floats(0, 1))}
    n = draw(st.integers(1, 12))
    sizes = draw(st.lists(st.integers(1, 3000), min_size=n, max_size=n))
    return spec, sizes, draw(st.integers(0, 2**32 - 1))


def twins(spec, sizes, seed):
    """A predictor, two copies of one started state and two generators in the same state."""
    p = make_predictor(spec)
    state = p.start(sizes, rng=np.random.default_rng(seed))
    return p, state, copy.deepcopy(state), np.random.default_rng(seed + 1), \
        np.random.default_rng(seed + 1)


def assert_same(out_a, out_b, a, b, rng_a, rng_b):
    assert out_a.dtype == out_b.dtype and np.array_equal(out_a, out_b)
    assert np.array_equal(a.posterior, b.posterior)
    assert np.array_equal(a.refined_at_tokens, b.refined_at_tokens)
    assert rng_a.bit_generator.state == rng_b.bit_generator.state


@settings(max_examples=150, deadline=None)
@given(setups(), st.data())
def test_few_rows_path_equals_vectorised_path_when_rows_move_together(setup, data):
    """Rows (duplicates allowed) advanced by one common d >= 0 take the few-row path."""
    p, a, b, rng_a, rng_b = twins(*setup)
    n = a.sizes.size
    for _ in range(data.draw(st.integers(1, 6))):
        rows = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=8)),
                        dtype=np.int64)
        # Rows at different refinement points, each advanced by the same d (a repeated row
        # gets the same count twice).
        gen = a.refined_at_tokens[rows] + data.draw(st.integers(0, 70))
        few = p._refine_few(a, gen, rows, rng_a)
        many = p._refine_many(b, gen, rows, rng_b)
        assert few is not None
        assert_same(few, many, a, b, rng_a, rng_b)


@settings(max_examples=100, deadline=None)
@given(setups(), st.data())
def test_public_refine_equals_vectorised_path_on_mixed_advances(setup, data):
    """Any mix of advances (some rows not moved, several d), scalar or array counts."""
    p, a, b, rng_a, rng_b = twins(*setup)
    n = a.sizes.size
    for _ in range(data.draw(st.integers(1, 6))):
        rows = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=6,
                                           unique=True)), dtype=np.int64)
        steps = data.draw(st.lists(st.integers(-5, 50), min_size=rows.size,
                                   max_size=rows.size))
        gen = np.maximum(a.refined_at_tokens[rows] + np.array(steps), 0)
        if data.draw(st.booleans()):
            gen = int(gen.max())
        if rows.size == 1 and data.draw(st.booleans()):
            rows = int(rows[0])
        assert_same(p.refine(a, gen, rows=rows, rng=rng_a),
                    p._refine_many(b, gen, rows, rng_b), a, b, rng_a, rng_b)


def test_declined_call_leaves_state_and_generator_untouched():
    p, a, b, rng_a, rng_b = twins({"kind": "trail", "bins": [0, 8, 32, 128],
                                   "refine_every": 4, "confusion": 0.3}, [20, 90, 5], 1)
    assert p._refine_few(a, np.array([4, 8]), np.array([0, 1]), rng_a) is None
    assert_same(np.zeros(1), np.zeros(1), a, b, rng_a, rng_b)
