"""A random generator over the AES-128-CTR keystream of one key: the only one securefl
uses where a protocol needs random bytes or integers reproducible from a key.

``KeystreamRng(key)`` reads the keystream from counter block 0 onward: ``read(n)``
returns its next n bytes, ``below(bound)`` a uniform integer from its next 8-byte
big-endian words by rejection (no modulo bias). The Harary graph's ring order, the
Flower mod's per-session randomness and the seeded generator of experiments and tests
(:func:`seeded`) are all this stream.
"""

from __future__ import annotations

import hashlib
from typing import NoReturn

from securefl.primitives.prg import keystream

__all__ = ["KeystreamRng", "seeded"]

_WORD_BYTES = 8
_WORD_RANGE = 1 << (8 * _WORD_BYTES)
_MIN_CHUNK = 4096


class KeystreamRng:
    """The keystream of ``key`` (16 bytes), read in order.

    Parameters
    ----------
    key:
        The AES-128 key; derive it with :func:`securefl.primitives.kdf.derive` for one
        purpose only.
    expected_bytes:
        How much the caller expects to read: the first chunk is computed at that size
        (plus slack), so most callers pay one native call.

    Security
    --------
    Whoever knows ``key`` knows every byte this returns: a protocol key must be fresh
    and must never be reused for two purposes. Instances refuse pickling and show no
    key in their ``repr``.
    """

    def __init__(self, key: bytes, expected_bytes: int = 0) -> None:
        if len(key) != 16:
            raise ValueError(f"the key must be 16 bytes, got {len(key)}")
        self._key = bytes(key)
        self._chunk = max(_MIN_CHUNK, expected_bytes + 64)
        self._chunk += -self._chunk % 16
        self._next_block = 0
        self._buffer = b""
        self._pos = 0

    def __repr__(self) -> str:
        return "KeystreamRng(<secret>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("KeystreamRng holds a secret key and cannot be pickled")

    def read(self, n: int) -> bytes:
        """The next ``n`` bytes of the keystream."""
        if n < 0:
            raise ValueError(f"cannot read {n} bytes")
        out = bytearray()
        while len(out) < n:
            if self._pos == len(self._buffer):
                self._refill(n - len(out))
            take = min(n - len(out), len(self._buffer) - self._pos)
            out += self._buffer[self._pos : self._pos + take]
            self._pos += take
        return bytes(out)

    __call__ = read

    def below(self, bound: int) -> int:
        """A uniform integer in [0, bound) (0 < bound <= 2^64), by rejection."""
        if not 0 < bound <= _WORD_RANGE:
            raise ValueError(f"bound must be in (0, 2^64], got {bound}")
        limit = _WORD_RANGE - _WORD_RANGE % bound
        while True:
            end = self._pos + _WORD_BYTES
            if end <= len(self._buffer):  # the common case: the word is in the buffer
                word = int.from_bytes(self._buffer[self._pos : end], "big")
                self._pos = end
            else:
                word = int.from_bytes(self.read(_WORD_BYTES), "big")
            if word < limit:
                return word % bound

    def _refill(self, wanted: int) -> None:
        size = max(self._chunk, wanted + -wanted % 16)
        counter = self._next_block.to_bytes(16, "big")
        self._buffer = keystream(self._key, size, counter_block=counter).tobytes()
        self._next_block += size // 16
        self._pos = 0


_SEEDED_LABEL = b"securefl/testing/drbg"


def seeded(seed: bytes | str) -> KeystreamRng:
    """A reproducible generator from a public seed: the keystream of
    SHA-256(label || seed)[:16]. For experiments (a simulator run, the demo's
    ``--dp-reproducible``) and tests only.

    Security
    --------
    Anyone who knows the seed knows every key, mask and noise value drawn from it: never
    use it for a deployment's randomness.
    """
    raw = seed.encode() if isinstance(seed, str) else bytes(seed)
    return KeystreamRng(hashlib.sha256(_SEEDED_LABEL + raw).digest()[:16])
