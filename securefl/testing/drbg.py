"""A seeded deterministic random byte generator for tests: AES-128-CTR of a seed.

Protocol state machines take ``rng(n) -> bytes``; injecting this one makes a whole
session reproducible. Never use it outside tests: a seed known to anyone breaks
every key it produces.
"""

from __future__ import annotations

import hashlib

from securefl.primitives import keystream


class Drbg:
    """``Drbg(seed)(n)`` returns the next n bytes of AES-CTR(SHA-256(seed)[:16])."""

    def __init__(self, seed: bytes | str) -> None:
        raw = seed.encode() if isinstance(seed, str) else seed
        self._key = hashlib.sha256(b"securefl/testing/drbg" + raw).digest()[:16]
        self._block = 0
        self._buffer = b""

    def __call__(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = max(4096, n - len(self._buffer) + 16)
            chunk += -chunk % 16
            counter = self._block.to_bytes(16, "big")
            self._buffer += keystream(self._key, chunk, counter_block=counter).tobytes()
            self._block += chunk // 16
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out
