"""Fixtures for the network tests; the builders live in ``cluster_cases``."""

from __future__ import annotations

from pathlib import Path

import pytest
from cluster_cases import EXAMPLES


@pytest.fixture
def examples() -> Path:
    return EXAMPLES


@pytest.fixture(scope="module")
def examples_dir() -> Path:
    return EXAMPLES
