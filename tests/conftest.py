from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Native calls vary in time on a shared machine: no per-example deadline. In CI the
# examples are derandomized so that a failure reproduces from the log.
settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=60
)
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture
def rng() -> np.random.Generator:
    """Test data (never masks): a fixed-seed generator so failures reproduce."""
    return np.random.default_rng(20261130)
