from __future__ import annotations

import numpy as np
import pytest
from support import BACKENDS, keys_from

from securefl.primitives import masked_accumulate, ring_dtype, sum_mod
from securefl.testing import reference

RINGS = [
    (np.uint32, 1),
    (np.uint32, 7),
    (np.uint32, 31),
    (np.uint32, 32),
    (np.uint64, 1),
    (np.uint64, 33),
    (np.uint64, 63),
    (np.uint64, 64),
]
LENGTHS = [0, 1, 3, 4, 5, 2047, 2048, 2049, 4096, 70_001]


def ring_values(rng: np.random.Generator, n: int, dtype: type, bits: int) -> np.ndarray:
    return rng.integers(0, 1 << bits, size=n, dtype=np.uint64).astype(dtype)


class TestMaskedAccumulate:
    @pytest.mark.parametrize("dtype,bits", RINGS)
    @pytest.mark.parametrize("length", LENGTHS)
    def test_matches_reference(self, rng, dtype, bits, length) -> None:
        keys = keys_from(rng, 5)
        signs = [1, -1, 1, 1, -1]
        acc = ring_values(rng, length, dtype, bits)
        expected = reference.masked_accumulate(acc, keys, signs, bits)
        masked_accumulate(acc, keys, signs, bits=bits)
        assert acc.dtype == dtype
        np.testing.assert_array_equal(acc, expected)

    @pytest.mark.parametrize("backend", BACKENDS)
    @pytest.mark.parametrize("dtype,bits", [(np.uint32, 32), (np.uint32, 20), (np.uint64, 64)])
    def test_every_backend_matches_reference(self, rng, backend, dtype, bits) -> None:
        length = 5_003 if backend == "portable" else 300_007
        keys = keys_from(rng, 3)
        acc = ring_values(rng, length, dtype, bits)
        expected = reference.masked_accumulate(acc, keys, [1, -1, -1], bits)
        masked_accumulate(acc, keys, [1, -1, -1], bits=bits, backend=backend)
        np.testing.assert_array_equal(acc, expected)

    @pytest.mark.parametrize("threads", [1, 2, 3, 8])
    def test_thread_count_does_not_change_the_result(self, rng, threads) -> None:
        keys = keys_from(rng, 4)
        start = ring_values(rng, 123_457, np.uint32, 32)
        expected = reference.masked_accumulate(start, keys, [1, 1, -1, 1], 32)
        acc = start.copy()
        masked_accumulate(acc, keys, [1, 1, -1, 1], bits=32, threads=threads)
        np.testing.assert_array_equal(acc, expected)

    @pytest.mark.parametrize("dtype,bits", [(np.uint32, 24), (np.uint64, 64)])
    def test_opposite_signs_cancel(self, rng, dtype, bits) -> None:
        keys = keys_from(rng, 3)
        start = ring_values(rng, 10_000, dtype, bits)
        acc = start.copy()
        masked_accumulate(acc, keys, [1, 1, 1], bits=bits)
        assert np.count_nonzero(acc != start) > 9_900  # the mask really changed it
        masked_accumulate(acc, keys, [-1, -1, -1], bits=bits)
        np.testing.assert_array_equal(acc, start)

    def test_mask_is_reduced_keystream(self) -> None:
        key = bytes(range(16))
        acc = np.zeros(8, dtype=np.uint32)
        masked_accumulate(acc, [key], [1], bits=12)
        words = np.frombuffer(reference.keystream(key, 32), dtype="<u4")
        np.testing.assert_array_equal(acc, words & 0xFFF)

    def test_no_keys_only_reduces(self) -> None:
        acc = np.array([0xFFFF_FFFF, 5], dtype=np.uint32)
        masked_accumulate(acc, [], [], bits=4)
        np.testing.assert_array_equal(acc, [0xF, 5])

    def test_multidimensional_accumulator_uses_c_order(self, rng) -> None:
        keys = keys_from(rng, 2)
        acc = np.zeros((3, 5, 7), dtype=np.uint64)
        masked_accumulate(acc, keys, [1, -1], bits=64)
        flat = reference.masked_accumulate(np.zeros(105, np.uint64), keys, [1, -1], 64)
        np.testing.assert_array_equal(acc.reshape(-1), flat)

    def test_keys_as_array(self, rng) -> None:
        keys = keys_from(rng, 3)
        a = np.zeros(999, np.uint32)
        b = np.zeros(999, np.uint32)
        masked_accumulate(a, keys, [1, -1, 1], bits=32)
        masked_accumulate(
            b, np.frombuffer(b"".join(keys), np.uint8).reshape(3, 16), np.array([1, -1, 1]), bits=32
        )
        np.testing.assert_array_equal(a, b)


class TestMaskedAccumulateErrors:
    def test_list_accumulator(self) -> None:
        with pytest.raises(TypeError, match=r"numpy\.ndarray"):
            masked_accumulate([0, 0], [bytes(16)], [1], bits=32)  # type: ignore[arg-type]

    @pytest.mark.parametrize("dtype", [np.int32, np.float32, np.uint16, np.int64])
    def test_wrong_dtype(self, dtype) -> None:
        with pytest.raises(TypeError, match="uint32 or uint64"):
            masked_accumulate(np.zeros(4, dtype), [bytes(16)], [1], bits=8)

    def test_non_contiguous(self) -> None:
        with pytest.raises(ValueError, match="C-contiguous"):
            masked_accumulate(np.zeros(8, np.uint32)[::2], [bytes(16)], [1], bits=32)

    def test_read_only(self) -> None:
        acc = np.zeros(8, np.uint32)
        acc.flags.writeable = False
        with pytest.raises(ValueError, match="writeable"):
            masked_accumulate(acc, [bytes(16)], [1], bits=32)

    def test_big_endian_words_are_rejected(self) -> None:
        with pytest.raises(TypeError, match="uint32 or uint64"):
            masked_accumulate(np.zeros(4, ">u4"), [bytes(16)], [1], bits=32)

    @pytest.mark.parametrize("key", [bytes(15), bytes(17)])
    def test_key_size(self, key) -> None:
        with pytest.raises(ValueError, match=r"keys\[1\] must be exactly 16 bytes"):
            masked_accumulate(np.zeros(4, np.uint32), [bytes(16), key], [1, 1], bits=32)

    @pytest.mark.parametrize("sign", [0, 2, -2, 255])
    def test_bad_sign(self, sign) -> None:
        with pytest.raises(ValueError, match="signs"):
            masked_accumulate(np.zeros(4, np.uint32), [bytes(16)], [sign], bits=32)

    def test_sign_count_mismatch(self) -> None:
        with pytest.raises(ValueError, match="2 keys but 1 signs"):
            masked_accumulate(np.zeros(4, np.uint32), [bytes(16)] * 2, [1], bits=32)

    @pytest.mark.parametrize("dtype,bits", [(np.uint32, 0), (np.uint32, 33), (np.uint64, 65)])
    def test_bits_out_of_range(self, dtype, bits) -> None:
        with pytest.raises(ValueError, match="ring bits"):
            masked_accumulate(np.zeros(4, dtype), [bytes(16)], [1], bits=bits)

    def test_bad_thread_count(self) -> None:
        with pytest.raises(ValueError, match="threads"):
            masked_accumulate(np.zeros(4, np.uint32), [bytes(16)], [1], bits=32, threads=0)

    def test_error_leaves_accumulator_untouched(self) -> None:
        acc = np.arange(8, dtype=np.uint32)
        with pytest.raises(ValueError):
            masked_accumulate(acc, [bytes(16), bytes(16)], [1, 3], bits=32)
        np.testing.assert_array_equal(acc, np.arange(8))


class TestSumMod:
    @pytest.mark.parametrize("dtype,bits", RINGS)
    @pytest.mark.parametrize("n", [1, 2, 3, 10])
    def test_matches_reference(self, rng, dtype, bits, n) -> None:
        inputs = [ring_values(rng, 10_007, dtype, bits) for _ in range(n)]
        total = sum_mod(inputs, bits=bits)
        assert total.dtype == dtype
        np.testing.assert_array_equal(total, reference.sum_mod(inputs, bits))

    @pytest.mark.parametrize("threads", [1, 2, 5])
    def test_out_may_alias_an_input(self, rng, threads) -> None:
        inputs = [ring_values(rng, 50_001, np.uint64, 64) for _ in range(4)]
        expected = reference.sum_mod(inputs, 64)
        out = sum_mod(inputs, bits=64, out=inputs[2], threads=threads)
        assert out is inputs[2]
        np.testing.assert_array_equal(inputs[2], expected)

    def test_shape_follows_first_input(self, rng) -> None:
        a = ring_values(rng, 12, np.uint32, 32).reshape(3, 4)
        total = sum_mod([a, a], bits=32)
        assert total.shape == (3, 4)
        np.testing.assert_array_equal(total, a * np.uint32(2))

    def test_empty(self) -> None:
        with pytest.raises(ValueError, match="at least one input"):
            sum_mod([], bits=32)

    def test_dtype_mismatch(self) -> None:
        with pytest.raises(TypeError, match="dtype"):
            sum_mod([np.zeros(4, np.uint32), np.zeros(4, np.uint64)], bits=32)

    def test_size_mismatch(self) -> None:
        with pytest.raises(ValueError, match="elements"):
            sum_mod([np.zeros(4, np.uint32), np.zeros(5, np.uint32)], bits=32)

    def test_non_contiguous_input(self) -> None:
        with pytest.raises(ValueError, match="C-contiguous"):
            sum_mod([np.zeros(4, np.uint32), np.zeros(8, np.uint32)[::2]], bits=32)

    def test_bits_out_of_range(self) -> None:
        with pytest.raises(ValueError, match="ring bits"):
            sum_mod([np.zeros(4, np.uint32)], bits=40)


@pytest.mark.parametrize(
    "bits,dtype", [(1, np.uint32), (32, np.uint32), (33, np.uint64), (64, np.uint64)]
)
def test_ring_dtype(bits, dtype) -> None:
    assert ring_dtype(bits) == dtype


@pytest.mark.parametrize("bits", [0, 65])
def test_ring_dtype_rejects(bits) -> None:
    with pytest.raises(ValueError):
        ring_dtype(bits)


def test_arrays_with_their_own_dtype_objects_are_accepted() -> None:
    # An unpickled array (e.g. sent to a worker process) carries a fresh dtype
    # object equal to, but not the same as, numpy's built-in one.
    import pickle

    acc = pickle.loads(pickle.dumps(np.zeros(10, np.uint32)))
    assert acc.dtype is not np.dtype(np.uint32)
    masked_accumulate(acc, [bytes(16)], [1], bits=32)
    np.testing.assert_array_equal(
        acc, reference.masked_accumulate(np.zeros(10, np.uint32), [bytes(16)], [1], 32)
    )
    other = pickle.loads(pickle.dumps(np.ones(10, np.uint32)))
    np.testing.assert_array_equal(sum_mod([acc, other], bits=32), acc + np.uint32(1))


class TestPackBits:
    @pytest.mark.parametrize(
        "dtype,bits", [*RINGS, (np.uint32, 20), (np.uint64, 48), (np.uint64, 61)]
    )
    @pytest.mark.parametrize("n", [0, 1, 2, 7, 8, 9, 63, 64, 65, 1001])
    def test_matches_reference_and_round_trips(self, rng, dtype, bits, n) -> None:
        from securefl.primitives import masking

        words = ring_values(rng, n, dtype, bits)
        packed = masking.pack_bits(words, bits)
        assert len(packed) == masking.packed_size(n, bits) == (n * bits + 7) // 8
        assert packed == reference.pack_bits(words, bits)
        back = masking.unpack_bits(packed, n, bits)
        assert back.dtype == ring_dtype(bits)
        np.testing.assert_array_equal(back, words)

    def test_whole_words_pack_to_their_bytes(self, rng) -> None:
        from securefl.primitives import masking

        words = ring_values(rng, 100, np.uint32, 32)
        assert masking.pack_bits(words, 32) == words.tobytes()

    def test_rejects_out_of_range_element(self) -> None:
        from securefl.primitives import masking

        with pytest.raises(ValueError, match="element 1 is not below 2\\^5"):
            masking.pack_bits(np.array([3, 32], np.uint32), 5)

    def test_rejects_wrong_length_and_padding(self) -> None:
        from securefl.primitives import masking

        with pytest.raises(ValueError, match="needs 2 bytes"):
            masking.unpack_bits(b"\x00", 3, 5)
        with pytest.raises(ValueError, match="padding"):
            masking.unpack_bits(b"\x00\x80", 3, 5)


def test_misaligned_views_are_refused() -> None:
    raw = bytearray(4 * 9)
    view = np.frombuffer(raw, dtype=np.uint8)[1:33].view(np.uint32)  # offset 1
    assert not view.flags.aligned
    with pytest.raises(ValueError, match="aligned"):
        sum_mod([view], bits=32)
