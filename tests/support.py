"""Helpers shared by the tests (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import numpy as np

from securefl.primitives import available_backends

BACKENDS = available_backends()
"""Every AES backend this CPU has; tests run each of them."""


def keys_from(rng: np.random.Generator, k: int) -> list[bytes]:
    """k test keys (deterministic test data, not key generation)."""
    return [rng.bytes(16) for _ in range(k)]
