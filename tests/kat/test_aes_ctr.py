"""AES-128-CTR known answers: NIST SP 800-38A, FIPS-197, and the cryptography package."""

from __future__ import annotations

import pytest
from support import BACKENDS

from kat.vectors import FIPS197_C1, SP800_38A_F51
from securefl.primitives import keystream
from securefl.testing import reference


@pytest.mark.parametrize("backend", BACKENDS)
def test_sp800_38a_f51_ctr_encrypt(backend: str) -> None:
    v = SP800_38A_F51
    key, counter = bytes.fromhex(v["key"]), bytes.fromhex(v["counter"])
    stream = keystream(key, 64, counter_block=counter, backend=backend).tobytes()
    assert stream == bytes.fromhex("".join(v["output_blocks"]))
    plaintext = bytes.fromhex("".join(v["plaintext"]))
    ciphertext = bytes(p ^ s for p, s in zip(plaintext, stream, strict=True))
    assert ciphertext == bytes.fromhex("".join(v["ciphertext"]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_fips197_c1_single_block(backend: str) -> None:
    # The first keystream block is AES_k(counter block): one raw encryption.
    v = FIPS197_C1
    block = keystream(
        bytes.fromhex(v["key"]), 16, counter_block=bytes.fromhex(v["plaintext"]), backend=backend
    )
    assert block.tobytes() == bytes.fromhex(v["ciphertext"])


COUNTERS = [
    bytes(16),
    b"\xff" * 16,  # wraps modulo 2^128 after one block
    bytes(8) + b"\xff" * 8,  # carry from the low into the high 64 bits
    bytes(8) + b"\xff" * 7 + b"\xf5",  # carry in the middle of a wide batch
    bytes.fromhex("0123456789abcdef00000000fffffffe"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("counter", COUNTERS, ids=lambda c: c.hex())
@pytest.mark.parametrize("nbytes", [0, 1, 15, 16, 17, 255, 256, 257, 511, 1000, 4099])
def test_matches_cryptography(backend: str, counter: bytes, nbytes: int) -> None:
    key = bytes(range(16, 32))
    expected = reference.keystream(key, nbytes, counter)
    assert keystream(key, nbytes, counter_block=counter, backend=backend).tobytes() == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_long_stream_matches_cryptography(backend: str) -> None:
    key = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
    n = 1 << 16 if backend == "portable" else 3 << 20
    assert keystream(key, n, backend=backend).tobytes() == reference.keystream(key, n)
