"""securefl.primitives.keystream_rng: the keystream of one key, byte for byte the
AES-128-CTR of ``cryptography`` (the reference), however it is read."""

from __future__ import annotations

import pickle

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from securefl.primitives.keystream_rng import KeystreamRng

KEY = bytes(range(16))


def _reference(key: bytes, n: int) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    return encryptor.update(bytes(n)) + encryptor.finalize()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5000), max_size=8), st.integers(0, 9000))
def test_reads_in_any_pieces_are_the_reference_keystream(pieces, expected) -> None:
    rng = KeystreamRng(KEY, expected_bytes=expected)
    got = b"".join(rng.read(n) for n in pieces)
    assert got == _reference(KEY, sum(pieces))


def test_calling_it_is_reading() -> None:
    assert KeystreamRng(KEY)(33) == _reference(KEY, 33)


def test_below_takes_big_endian_words_and_rejects_the_biased_tail() -> None:
    stream = _reference(KEY, 8 * 64)
    words = [int.from_bytes(stream[i : i + 8], "big") for i in range(0, len(stream), 8)]
    # bound 3 * 2^62: the limit is 2^64 - 2^62, so words at or above it are skipped.
    bound = 3 << 62
    limit = (1 << 64) - (1 << 64) % bound
    expected = [w % bound for w in words if w < limit][:20]
    rng = KeystreamRng(KEY)
    assert [rng.below(bound) for _ in range(20)] == expected
    assert any(w >= limit for w in words[:21])  # the key does exercise a rejection


def test_below_after_an_odd_read_continues_the_same_stream() -> None:
    stream = _reference(KEY, 64)
    rng = KeystreamRng(KEY)
    assert rng.read(3) == stream[:3]
    assert rng.below(1 << 64) == int.from_bytes(stream[3:11], "big")


@pytest.mark.parametrize("bound", [0, -1, (1 << 64) + 1])
def test_a_bound_outside_the_word_range_is_refused(bound) -> None:
    with pytest.raises(ValueError, match="bound"):
        KeystreamRng(KEY).below(bound)


def test_a_key_of_another_length_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        KeystreamRng(b"short")


def test_the_key_never_shows_and_cannot_be_pickled() -> None:
    rng = KeystreamRng(KEY)
    assert KEY.hex() not in repr(rng) and "secret" in repr(rng)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(rng)
