"""TRAIL's refined predictor: posterior_t ∝ (posterior_{t-1} T^d) ⊙ L[report], prediction
sum_j posterior_j midpoint_j (predicted remaining tokens)."""

import numpy as np
import pytest

from servesim.predictors import make_predictor

SPEC = {"kind": "trail", "bins": [0, 10, 20, 40, 80], "refine_every": 5}


def test_exact_classifier_predicts_the_true_bin_midpoint():
    t = make_predictor(SPEC)
    state = t.start([5, 15, 30, 60, 500])
    assert np.allclose(t.prediction(state), [5, 15, 30, 60, 60])


def test_transition_moves_mass_one_bin_down_and_bottom_absorbs():
    """One token moves mass from bin j to j - 1 with probability 1/w_j (w = 10, 10, 20, 40)."""
    t = make_predictor(SPEC)
    assert np.allclose(np.diag(t.transition), [1.0, 0.9, 0.95, 0.975])
    assert np.allclose(np.diag(t.transition, -1), [0.1, 0.05, 0.025])
    assert np.allclose(t.transition.sum(axis=1), 1.0)


def test_refinement_moves_mass_down_as_tokens_are_generated():
    t = make_predictor({**SPEC, "confusion": 0.4}, seed=3)
    state = t.start(np.full(2000, 75.0))
    before = t.prediction(state).mean()
    # Advance without a new observation: only T^d acts, so the mean must fall.
    prior = state.posterior.copy()
    moved = prior @ np.linalg.matrix_power(t.transition, 40)
    assert (moved @ t.midpoints).mean() < before
    assert moved[:, 0].sum() > prior[:, 0].sum()
    after = t.refine(state, 40)  # true remaining 35 -> bin 2 (20..40)
    assert after.mean() < before
    assert np.all(state.refined_at_tokens == 40)
    assert np.allclose(state.posterior.sum(axis=1), 1.0)


def test_refine_rows_and_schedule():
    t = make_predictor(SPEC)
    state = t.start([30, 30, 30])
    out = t.refine(state, 15, rows=np.array([1]))
    assert out.shape == (1,) and out[0] == pytest.approx(15.0)
    assert list(state.refined_at_tokens) == [0, 15, 0]
    assert list(t.next_refine(np.array([0, 4, 5, 12]))) == [5, 5, 10, 15]
    # No token moved: the posterior stays as it was.
    assert np.array_equal(t.refine(state, 15, rows=np.array([1])), out)
