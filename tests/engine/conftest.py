"""Fixtures for the engine tests; the builders live in ``engine_cases``."""

from __future__ import annotations

import numpy as np
import pytest
from engine_cases import random_case


@pytest.fixture
def case_from_seed():
    return lambda seed, batching=None: random_case(np.random.default_rng(seed), batching)
