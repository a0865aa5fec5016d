"""Shamir t-of-n secret sharing of 32-byte secrets (Shamir, CACM 1979).

Used by SecAgg to share each client's self-mask seed and mask-agreement key among its
neighbours (Bonawitz et al., CCS 2017, section 4). The field is GF(2^61 - 1); the
secret is cut into five chunks (7, 7, 7, 7 and 4 bytes) shared independently, so a
share is five field elements: 40 bytes. Any ``threshold`` shares reconstruct. With
truly uniform coefficients any ``threshold - 1`` shares would be independent of the
secret; the coefficients come from AES-128-CTR under a fresh 16-byte seed, so the
hiding is computational: it holds as long as AES-CTR is indistinguishable from
random (and the seed is never reused or revealed).
"""

from __future__ import annotations

import operator
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from securefl.primitives._native import core, key_bytes

__all__ = ["PRIME", "SECRET_BYTES", "SHARE_BYTES", "Share", "combine", "split"]

PRIME: int = int(core.SHAMIR_PRIME)
"""The field prime, 2^61 - 1."""
SECRET_BYTES = 32
SHARE_BYTES: int = int(core.SHAMIR_SHARE_BYTES)


@dataclass(frozen=True)
class Share:
    """One holder's share: its index x (1 <= x < 2^61 - 1) and 40 secret bytes.

    Security
    --------
    ``value`` is secret: it never appears in ``repr`` and a share refuses pickling.
    """

    index: int
    value: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"Share(index={self.index}, value=<{len(self.value)} bytes redacted>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("Share holds secret material and cannot be pickled")


def _indices(indices: Sequence[int]) -> list[int]:
    out = []
    for x in indices:
        i = operator.index(x)
        # Index 0 would be the secret itself; indices past the field alias others.
        if not 1 <= i < PRIME:
            raise ValueError(f"share index {i} is not in [1, 2^61 - 1)")
        out.append(i)
    return out


def split(
    secret: bytes,
    threshold: int,
    indices: Sequence[int] | int,
    *,
    seed: bytes | None = None,
) -> list[Share]:
    """Share ``secret`` so that any ``threshold`` of the shares reconstruct it.

    Parameters
    ----------
    secret:
        Exactly 32 bytes.
    threshold:
        t, 1 <= t <= number of shares.
    indices:
        The holders' distinct indices, or n for indices 1..n.
    seed:
        16 bytes of fresh randomness for the polynomial coefficients. By default drawn
        from the operating system (``secrets``); pass one to make splitting
        deterministic, as sans-IO protocol code does with its injected randomness.

    Returns
    -------
    list of Share
        One share per index, in the order given.

    Raises
    ------
    ValueError
        On a secret that is not 32 bytes, a threshold out of range, or indices that
        repeat, are 0, or are >= 2^61 - 1.

    Security
    --------
    A seed must never be used twice, and whoever knows it can recompute the secret
    from a single share.
    """
    if not isinstance(secret, (bytes, bytearray, memoryview)):
        raise TypeError(f"secret must be bytes, got {type(secret).__name__}")
    if isinstance(indices, int):
        indices = range(1, indices + 1)
    xs = _indices(indices)
    seed_bytes = secrets.token_bytes(16) if seed is None else key_bytes(seed, "seed")
    blob = core.shamir_split(bytes(secret), operator.index(threshold), xs, seed_bytes)
    return [Share(x, blob[i * SHARE_BYTES : (i + 1) * SHARE_BYTES]) for i, x in enumerate(xs)]


def combine(shares: Sequence[Share], threshold: int) -> bytes:
    """Reconstruct the secret from the first ``threshold`` of ``shares``.

    Extra shares are checked for well-formedness (index, length, field range) but do
    not enter the interpolation.

    Raises
    ------
    ValueError
        If fewer than ``threshold`` shares are given, indices repeat or are out of
        range, a share is malformed, or the shares do not reconstruct a valid secret
        (they come from different sharings or were altered).
    """
    items = list(shares)
    for j, share in enumerate(items):
        if not isinstance(share, Share):
            raise TypeError(f"shares[{j}] must be a Share, got {type(share).__name__}")
        if len(share.value) != SHARE_BYTES:
            raise ValueError(
                f"share for index {share.index} has {len(share.value)} bytes, "
                f"expected {SHARE_BYTES}"
            )
    xs = _indices([s.index for s in items])
    blob = b"".join(s.value for s in items)
    return bytes(core.shamir_combine(xs, blob, operator.index(threshold)))
