"""Bit-packing of RNS limbs against a Python-integer reference."""

from __future__ import annotations

import numpy as np
import pytest

from securefl.ckks.bitpack import pack, packed_words, unpack
from securefl.primitives.masking import pack_bits as native_pack_bits
from securefl.primitives.masking import unpack_bits as native_unpack_bits


def reference_pack(values: np.ndarray, bits: int) -> np.ndarray:
    """The documented format, with Python integers: column g is one 64*b-bit integer."""
    cols = values.size // 64
    v = values.reshape(64, cols)
    out = np.zeros((bits, cols), dtype=np.uint64)
    for g in range(cols):
        big = sum(int(v[j, g]) << (j * bits) for j in range(64))
        for w in range(bits):
            out[w, g] = (big >> (64 * w)) & (2**64 - 1)
    return out


@pytest.mark.parametrize("bits", [1, 2, 7, 20, 31, 40, 59, 60, 61, 63, 64])
def test_pack_matches_reference_and_round_trips(rng: np.random.Generator, bits: int) -> None:
    values = rng.integers(0, 2**bits, size=64 * 5, dtype=np.uint64, endpoint=False)
    if bits == 64:
        values = rng.integers(0, 2**64 - 1, size=64 * 5, dtype=np.uint64, endpoint=True)
    packed = pack(values, bits)
    assert packed.shape == (bits, 5)
    assert packed_words(values.size, bits) == packed.size
    np.testing.assert_array_equal(packed, reference_pack(values, bits))
    out = np.full_like(values, 0xDEAD)
    np.testing.assert_array_equal(unpack(packed.ravel(), bits, out), values)


def test_extreme_values_survive(rng: np.random.Generator) -> None:
    bits = 40
    values = np.array([0, 2**40 - 1] * 32 * 3, dtype=np.uint64)
    out = np.empty_like(values)
    np.testing.assert_array_equal(unpack(pack(values, bits), bits, out), values)


def test_threads_give_the_same_words(rng: np.random.Generator) -> None:
    values = rng.integers(0, 2**60, size=64 * 9000, dtype=np.uint64)
    one = pack(values, 60, threads=1)
    np.testing.assert_array_equal(pack(values, 60, threads=2), one)
    a, b = np.empty_like(values), np.empty_like(values)
    unpack(one, 60, a, threads=1)
    unpack(one, 60, b, threads=2)
    np.testing.assert_array_equal(a, values)
    np.testing.assert_array_equal(b, values)


def test_refuses_values_that_do_not_fit() -> None:
    values = np.zeros(64, dtype=np.uint64)
    values[7] = 2**40
    with pytest.raises(ValueError, match="does not fit in 40 bits"):
        pack(values, 40)


@pytest.mark.parametrize("size", [63, 65, 0 + 96])
def test_refuses_sizes_not_multiple_of_64(size: int) -> None:
    with pytest.raises(ValueError, match="multiple of 64"):
        pack(np.zeros(size, dtype=np.uint64), 40)


def test_unpack_checks_word_count() -> None:
    with pytest.raises(ValueError, match="packed words"):
        unpack(np.zeros(39, dtype=np.uint64), 40, np.empty(64, dtype=np.uint64))


def test_pack_into_out_clears_it(rng: np.random.Generator) -> None:
    values = rng.integers(0, 2**40, size=128, dtype=np.uint64)
    out = np.full((40, 2), 2**64 - 1, dtype=np.uint64)
    np.testing.assert_array_equal(pack(values, 40, out=out), reference_pack(values, 40))


@pytest.mark.parametrize("bits", [2, 7, 31, 32, 33, 40, 56, 60, 64])
def test_columns_are_the_native_packers_stream_of_their_64_values(
    rng: np.random.Generator, bits: int
) -> None:
    # Why bitpack is not the native packer: the same bits per group of 64, another order.
    cols = 3
    values = rng.integers(0, 2**bits - 1, size=64 * cols, dtype=np.uint64, endpoint=True)
    packed = pack(values, bits)
    groups = np.ascontiguousarray(values.reshape(64, cols).T)
    assert native_pack_bits(groups, bits) == np.ascontiguousarray(packed.T).tobytes()
    # Below 64 bits the two orders differ; at 64 both are the words themselves.
    assert (native_pack_bits(values, bits) == packed.tobytes()) == (bits == 64)
    back = native_unpack_bits(np.ascontiguousarray(packed.T).tobytes(), values.size, bits)
    np.testing.assert_array_equal(back.reshape(cols, 64).T.ravel(), values)
