from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import numpy as np
import pytest


@pytest.fixture(scope="session", autouse=True)
def _outside_the_source_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """As in tests/conftest.py: `securefl join` processes and Ray's workers put the working
    directory first on sys.path and must import the installed package, not the source tree."""
    home = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(home)


@pytest.fixture(scope="session")
def data_rng() -> np.random.Generator:
    """Benchmark inputs (data, never masks) from a fixed seed."""
    return np.random.default_rng(7)


@pytest.fixture
def record(benchmark) -> Callable[..., None]:
    """Attach throughput at the median to the benchmark's JSON record."""

    def attach(*, items: float, unit: str, bytes_in: float | None = None) -> None:
        stats = getattr(benchmark, "stats", None)
        if not stats:  # --benchmark-disable: the body ran once as a plain test
            return
        median = stats.stats.median
        benchmark.extra_info["unit"] = unit
        benchmark.extra_info["items"] = items
        benchmark.extra_info["per_second_at_median"] = items / median
        if bytes_in is not None:
            benchmark.extra_info["bytes_per_second_at_median"] = bytes_in / median

    return attach
