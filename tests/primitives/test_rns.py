from __future__ import annotations

import numpy as np
import pytest

from securefl.primitives import rns_sum
from securefl.testing import reference

# SEAL-sized moduli (60- and 40-bit, like N = 8192 with [60, 40, 40]), plus extremes.
Q_SEAL = [1152921504606584833, 1099511678977, 1099511795713]
Q_EXTREME = [(1 << 62) - 57, 2, 3]


def ciphertexts(rng: np.random.Generator, n: int, moduli, size=2, degree=1000) -> list:
    q = np.array(moduli, dtype=np.uint64).reshape(1, -1, 1)
    return [
        (rng.integers(0, 1 << 63, (size, len(moduli), degree), dtype=np.uint64) % q)
        for _ in range(n)
    ]


class TestRnsSum:
    @pytest.mark.parametrize("moduli", [Q_SEAL, Q_EXTREME], ids=["seal", "extreme"])
    @pytest.mark.parametrize("n", [1, 2, 3, 4, 15, 16, 17, 40])
    def test_matches_reference(self, rng, moduli, n) -> None:
        inputs = ciphertexts(rng, n, moduli)
        np.testing.assert_array_equal(rns_sum(inputs, moduli), reference.rns_sum(inputs, moduli))

    def test_maximal_coefficients(self) -> None:
        q = np.array(Q_EXTREME, dtype=np.uint64)
        inputs = [np.broadcast_to((q - 1).reshape(1, 3, 1), (2, 3, 2048)).copy() for _ in range(50)]
        np.testing.assert_array_equal(rns_sum(inputs, q), reference.rns_sum(inputs, Q_EXTREME))

    @pytest.mark.parametrize("threads", [1, 2, 3])
    def test_out_may_alias_an_input(self, rng, threads) -> None:
        inputs = ciphertexts(rng, 5, Q_SEAL, degree=8192)
        expected = reference.rns_sum(inputs, Q_SEAL)
        out = rns_sum(inputs, Q_SEAL, out=inputs[0], threads=threads)
        assert out is inputs[0]
        np.testing.assert_array_equal(out, expected)

    def test_coefficient_out_of_range_names_input_and_position(self, rng) -> None:
        inputs = ciphertexts(rng, 4, Q_SEAL)
        inputs[2][1, 2, 999] = Q_SEAL[2]
        inputs[3][0, 0, 0] = Q_SEAL[0] + 5
        with pytest.raises(ValueError, match=r"input 2: coefficient \d+ at \[1\]\[2\]\[999\]"):
            rns_sum(inputs, Q_SEAL)

    @pytest.mark.parametrize("threads", [1, 2])
    def test_bad_input_leaves_the_accumulator_unchanged(self, rng, threads) -> None:
        acc, good, bad = ciphertexts(rng, 3, Q_SEAL, degree=8192)
        bad[1, 1, 8000] = Q_SEAL[1]  # late in the array: earlier chunks would be summed
        before = acc.copy()
        with pytest.raises(ValueError, match=r"input 1: .* at \[1\]\[1\]\[8000\]"):
            rns_sum([acc, bad], Q_SEAL, out=acc, threads=threads)
        np.testing.assert_array_equal(acc, before)
        rns_sum([acc, good], Q_SEAL, out=acc, threads=threads)
        np.testing.assert_array_equal(acc, reference.rns_sum([before, good], Q_SEAL))

    def test_first_input_checked_too(self, rng) -> None:
        inputs = ciphertexts(rng, 2, Q_SEAL)
        inputs[0][0, 1, 7] = np.uint64(2**64 - 1)
        with pytest.raises(ValueError, match=r"input 0: .* at \[0\]\[1\]\[7\] is not below q_1"):
            rns_sum(inputs, Q_SEAL)

    def test_single_input_is_validated_copy(self, rng) -> None:
        (x,) = ciphertexts(rng, 1, Q_SEAL)
        np.testing.assert_array_equal(rns_sum([x], Q_SEAL), x)


class TestRnsErrors:
    def test_empty(self) -> None:
        with pytest.raises(ValueError, match="at least one input"):
            rns_sum([], Q_SEAL)

    @pytest.mark.parametrize("q", [0, 1, 1 << 62, 1 << 64])
    def test_bad_modulus(self, rng, q) -> None:
        inputs = ciphertexts(rng, 2, [5, 7, 11])
        with pytest.raises(ValueError, match="modulus q_1"):
            rns_sum(inputs, [5, q, 11])

    def test_bad_modulus_array_checked_in_core(self, rng) -> None:
        inputs = ciphertexts(rng, 1, [5, 7, 11])
        with pytest.raises(ValueError, match="q_2"):
            rns_sum(inputs, np.array([5, 7, 1], dtype=np.uint64))

    def test_modulus_count(self, rng) -> None:
        inputs = ciphertexts(rng, 2, Q_SEAL)
        with pytest.raises(ValueError, match="2 moduli for 3 limbs"):
            rns_sum(inputs, Q_SEAL[:2])

    def test_shape_mismatch(self, rng) -> None:
        a = ciphertexts(rng, 1, Q_SEAL)[0]
        b = ciphertexts(rng, 1, Q_SEAL, degree=999)[0]
        with pytest.raises(ValueError, match=r"inputs\[1\] does not have the shape"):
            rns_sum([a, b], Q_SEAL)

    def test_wrong_dtype(self) -> None:
        with pytest.raises(TypeError, match="uint64"):
            rns_sum([np.zeros((2, 3, 4), np.int64)], Q_SEAL)

    def test_wrong_rank(self) -> None:
        with pytest.raises(TypeError, match="3-D"):
            rns_sum([np.zeros((6, 4), np.uint64)], Q_SEAL)

    def test_non_contiguous(self, rng) -> None:
        a = ciphertexts(rng, 1, Q_SEAL, degree=20)[0]
        with pytest.raises(ValueError, match="C-contiguous"):
            rns_sum([a[:, :, ::2].copy(), a[:, :, ::2]], Q_SEAL)
