from __future__ import annotations

import itertools
import pickle

import pytest

from securefl.primitives import shamir
from securefl.primitives.shamir import PRIME, Share, combine, split
from securefl.testing import reference

SECRET = bytes(range(32))
SEED = bytes(range(16))


def test_matches_reference() -> None:
    for t, n in [(1, 1), (1, 3), (2, 2), (3, 5), (7, 10), (20, 40)]:
        shares = split(SECRET, t, n, seed=SEED)
        expected = reference.shamir_split(SECRET, t, list(range(1, n + 1)), SEED)
        assert [(s.index, s.value) for s in shares] == expected


def test_every_t_subset_reconstructs() -> None:
    secret = bytes.fromhex("ff" * 32)  # all-ones: every chunk at its largest value
    shares = split(secret, 3, 6, seed=SEED)
    for subset in itertools.permutations(shares, 3):
        assert combine(subset, 3) == secret


def test_arbitrary_indices() -> None:
    indices = [PRIME - 1, 7, 1 << 40, 3, 12345678901]
    shares = split(SECRET, 4, indices, seed=SEED)
    assert [s.index for s in shares] == indices
    assert all(len(s.value) == shamir.SHARE_BYTES == 40 for s in shares)
    assert combine(shares[1:], 4) == SECRET
    assert combine(shares[:4], 4) == SECRET


def test_extra_shares_are_ignored() -> None:
    shares = split(SECRET, 3, 6, seed=SEED)
    wrong = Share(shares[5].index, bytes(40))  # well formed, but not of this sharing
    assert combine([*shares[:3], shares[4], wrong], 3) == SECRET


def test_large_threshold_round_trip() -> None:
    shares = split(SECRET, 500, 1000, seed=SEED)
    assert combine(shares[500:], 500) == SECRET
    assert combine(shares[::2], 500) == SECRET


def test_seed_determinism() -> None:
    a = split(SECRET, 3, 5, seed=SEED)
    b = split(SECRET, 3, 5, seed=SEED)
    c = split(SECRET, 3, 5, seed=bytes(16))
    assert a == b
    assert [s.value for s in a] != [s.value for s in c]


def test_default_seed_is_fresh() -> None:
    a = split(SECRET, 2, 3)
    b = split(SECRET, 2, 3)
    assert a != b
    assert combine(a, 2) == combine(b, 2) == SECRET


def test_threshold_minus_one_shares_are_consistent_with_any_secret() -> None:
    """t - 1 shares fit every secret equally: nothing about the real one is checkable.

    For a different candidate secret we complete the t - 1 real shares with one more
    share (interpolating through (0, candidate)); the completed set reconstructs the
    candidate, so the t - 1 shares cannot rule any secret out.
    """
    t = 4
    shares = split(SECRET, t, 6, seed=SEED)
    known = shares[: t - 1]
    for candidate in (bytes(32), b"\xff" * 32, bytes(range(32, 64))):
        words = []
        chunks = reference._chunks(candidate)
        for c in range(5):
            points = [(0, chunks[c])] + [
                (s.index, reference.shamir_words(s.value)[c]) for s in known
            ]
            words.append(reference.shamir_interpolate_at(points, 6))
        forged = Share(6, b"".join(w.to_bytes(8, "little") for w in words))
        assert combine([*known, forged], t) == candidate


def test_share_repr_and_pickle_hide_the_value() -> None:
    share = split(SECRET, 2, 2, seed=SEED)[0]
    text = repr(share)
    assert "redacted" in text and share.value.hex() not in text and str(share.value) not in text
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(share)


class TestErrors:
    def test_fewer_than_t(self) -> None:
        shares = split(SECRET, 3, 5, seed=SEED)
        with pytest.raises(ValueError, match="at least t=3"):
            combine(shares[:2], 3)

    def test_duplicate_index_on_combine(self) -> None:
        shares = split(SECRET, 2, 3, seed=SEED)
        with pytest.raises(ValueError, match="duplicate share index 1"):
            combine([shares[0], shares[1], shares[0]], 2)

    def test_duplicate_index_on_split(self) -> None:
        with pytest.raises(ValueError, match="duplicate share index 4"):
            split(SECRET, 2, [4, 5, 4], seed=SEED)

    @pytest.mark.parametrize("index", [0, -1, PRIME, PRIME + 1])
    def test_out_of_range_index(self, index) -> None:
        with pytest.raises(ValueError, match="share index"):
            split(SECRET, 2, [1, index], seed=SEED)
        with pytest.raises(ValueError, match="share index"):
            combine([Share(1, bytes(40)), Share(index, bytes(40))], 2)

    @pytest.mark.parametrize("t,n", [(0, 3), (4, 3)])
    def test_bad_threshold(self, t, n) -> None:
        with pytest.raises(ValueError, match="threshold"):
            split(SECRET, t, n, seed=SEED)

    @pytest.mark.parametrize("secret", [b"", bytes(31), bytes(33)])
    def test_secret_size(self, secret) -> None:
        with pytest.raises(ValueError, match="32 bytes"):
            split(secret, 2, 3, seed=SEED)

    def test_seed_size(self) -> None:
        with pytest.raises(ValueError, match="seed"):
            split(SECRET, 2, 3, seed=bytes(32))

    def test_malformed_share_value(self) -> None:
        shares = split(SECRET, 2, 3, seed=SEED)
        too_big = Share(shares[1].index, b"\xff" * 40)  # words >= p
        with pytest.raises(ValueError, match="malformed"):
            combine([shares[0], too_big], 2)

    def test_wrong_share_length(self) -> None:
        shares = split(SECRET, 2, 3, seed=SEED)
        with pytest.raises(ValueError, match="expected 40"):
            combine([shares[0], Share(2, shares[1].value[:-1])], 2)

    def test_mixed_sharings_are_detected(self) -> None:
        a = split(SECRET, 3, 5, seed=SEED)
        b = split(bytes(32), 3, 5, seed=bytes(range(1, 17)))
        with pytest.raises(ValueError, match="inconsistent"):
            combine([a[0], a[1], b[2]], 3)

    def test_not_a_share(self) -> None:
        with pytest.raises(TypeError, match="Share"):
            combine([(1, bytes(40))], 1)  # type: ignore[list-item]


def test_default_seed_comes_from_secrets_once_per_split(monkeypatch) -> None:
    """docs/SECURITY.md: without a seed, split draws 16 bytes from the OS (secrets)."""
    calls: list[int] = []

    def token_bytes(n: int) -> bytes:
        calls.append(n)
        return bytes([len(calls)]) * n

    monkeypatch.setattr(shamir.secrets, "token_bytes", token_bytes)
    first = shamir.split(b"\x07" * 32, 2, 3)
    shamir.split(b"\x07" * 32, 2, 3)
    assert calls == [16, 16]
    assert first == shamir.split(b"\x07" * 32, 2, 3, seed=b"\x01" * 16)
