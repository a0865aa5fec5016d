"""A seeded deterministic random byte generator for tests: AES-128-CTR of a seed.

Protocol state machines take ``rng(n) -> bytes``; injecting this one makes a whole
session reproducible. Never use it outside tests: a seed known to anyone breaks
every key it produces.
"""

from __future__ import annotations

import hashlib

from securefl.primitives.keystream_rng import KeystreamRng


class Drbg:
    """``Drbg(seed)(n)`` returns the next n bytes of AES-CTR(SHA-256(seed)[:16])."""

    def __init__(self, seed: bytes | str) -> None:
        raw = seed.encode() if isinstance(seed, str) else seed
        key = hashlib.sha256(b"securefl/testing/drbg" + raw).digest()[:16]
        self._stream = KeystreamRng(key)

    def __call__(self, n: int) -> bytes:
        return self._stream.read(n)
