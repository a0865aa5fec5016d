from __future__ import annotations

import os
from collections.abc import Iterator

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


@pytest.fixture(scope="session", autouse=True)
def _outside_the_source_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Run from an empty directory. Child processes started with ``python -m`` and
    Ray's workers (Flower's simulation) put the working directory first on sys.path;
    from the repository root they would import the source tree, which has no compiled
    core, instead of the installed package."""
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        yield
    finally:
        os.chdir(previous)


@pytest.fixture
def rng() -> np.random.Generator:
    """Test data (never masks): a fixed-seed generator so failures reproduce."""
    return np.random.default_rng(20261130)
