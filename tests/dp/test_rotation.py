"""The randomized Walsh-Hadamard rotation (KLS 2021, section 4.2): orthonormal, exactly
invertible, and equal to the NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

from securefl.primitives import dp
from securefl.testing import reference

KEY = bytes(range(16))


@pytest.mark.parametrize("D", [1, 2, 8, 2048, 4096, 1 << 15, 1 << 17])
def test_rotation_is_orthonormal_and_inverts(D: int) -> None:
    x = np.random.default_rng(D).normal(size=D)
    y = dp.rotate(x, KEY)
    assert np.linalg.norm(y) == pytest.approx(np.linalg.norm(x), rel=1e-12)
    back = dp.rotate(y, KEY, inverse=True)
    assert np.max(np.abs(back - x)) <= 1e-12 * max(1.0, float(np.max(np.abs(x))))


@pytest.mark.parametrize("D", [16, 4096, 1 << 16])
def test_unnormalized_rotation_inverts_integers_exactly(D: int) -> None:
    x = np.random.default_rng(7).integers(-(2**20), 2**20, size=D).astype(np.float64)
    y = dp.rotate(x, KEY, normalize=False)
    assert np.array_equal(dp.rotate(y, KEY, inverse=True, normalize=False), D * x)


@pytest.mark.parametrize("D", [4, 2048, 1 << 14, 1 << 16, 1 << 17, 1 << 18, 1 << 21])
def test_native_rotation_equals_reference(D: int) -> None:
    x = np.random.default_rng(3).normal(size=D)
    assert np.array_equal(dp.rotate(x, KEY), reference.dp_rotate(x, KEY))
    assert np.array_equal(dp.rotate(x, KEY, inverse=True), reference.dp_rotate(x, KEY, True))


def test_rotation_spreads_a_spike_and_depends_on_the_key() -> None:
    x = np.zeros(1024)
    x[5] = 1.0
    y = dp.rotate(x, KEY)
    assert np.allclose(np.abs(y), 1 / 32)  # a basis vector becomes flat: |y_i| = 1/sqrt(D)
    assert not np.array_equal(y, dp.rotate(x, bytes(16)))
    assert np.array_equal(dp.rotate(x, KEY, threads=1), dp.rotate(x, KEY, threads=2))


def test_bad_rotation_input() -> None:
    with pytest.raises(ValueError, match="power of two"):
        dp.rotate(np.zeros(12), KEY)
    with pytest.raises(TypeError):
        dp.rotate(np.zeros(8, dtype=np.float32), KEY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="16 bytes"):
        dp.rotate(np.zeros(8), b"k")


def test_padded_dimension_takes_integers_only() -> None:
    assert [dp.padded_dimension(d) for d in (1, 3, 4, 5, np.int64(1000))] == [1, 4, 4, 8, 1024]
    # 3.5 used to be padded to 4 as if it were a dimension.
    for bad in (3.5, 4.0, True, "4"):
        with pytest.raises(TypeError, match="dimension must be an integer"):
            dp.padded_dimension(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dimension must be >= 1"):
        dp.padded_dimension(0)
