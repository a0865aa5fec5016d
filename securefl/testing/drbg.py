"""A seeded deterministic random byte generator for tests: AES-128-CTR of a seed.

Protocol state machines take ``rng(n) -> bytes``; injecting this one makes a whole
session reproducible. Never use it outside tests: a seed known to anyone breaks
every key it produces.
"""

from __future__ import annotations

from securefl.primitives.keystream_rng import seeded


class Drbg:
    """``Drbg(seed)(n)`` returns the next n bytes of AES-CTR(SHA-256(label || seed)[:16])
    (:func:`securefl.primitives.keystream_rng.seeded`)."""

    def __init__(self, seed: bytes | str) -> None:
        self._stream = seeded(seed)

    def __call__(self, n: int) -> bytes:
        return self._stream.read(n)
