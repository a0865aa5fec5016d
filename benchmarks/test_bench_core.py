"""Benchmarks of the native core; each one also checks its result.

Run with ``make bench`` (or ``pytest benchmarks --benchmark-only``); ``python
benchmarks/summarize.py RESULTS.json`` prints the table of benchmarks/README.md.
Baselines (OpenSSL's AES-CTR through ``cryptography``, NumPy) run in the same session
so that ratios, not absolute times, carry the conclusions.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from securefl.primitives import (
    FixedPoint,
    available_backends,
    dequantize,
    keystream,
    masked_accumulate,
    quantize,
    rns_sum,
    shamir,
    sum_mod,
)
from securefl.testing import reference

KEYSTREAM_BYTES = 32 << 20


@pytest.mark.parametrize("backend", ["auto", *[b for b in available_backends() if b != "portable"]])
def test_keystream(benchmark, record, backend: str) -> None:
    key = bytes(range(16))
    out = benchmark(keystream, key, KEYSTREAM_BYTES, backend=backend)
    assert out.tobytes() == reference.keystream(key, KEYSTREAM_BYTES)
    record(items=KEYSTREAM_BYTES / 4, unit="uint32 words", bytes_in=KEYSTREAM_BYTES)


def test_keystream_portable(benchmark, record) -> None:
    key = bytes(range(16))
    n = 1 << 18
    out = benchmark.pedantic(keystream, (key, n), {"backend": "portable"}, rounds=3)
    assert out.tobytes() == reference.keystream(key, n)
    record(items=n / 4, unit="uint32 words", bytes_in=n)


def test_baseline_openssl_keystream(benchmark, record) -> None:
    """OpenSSL's AES-128-CTR through `cryptography`, the PRG speed to compare with.

    Like `openssl speed`, it encrypts 16 KiB of zeros at a time into a reused buffer,
    so it measures the cipher rather than page faults of a fresh 32 MiB output.
    """
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = bytes(range(16))
    chunk = 16 << 10
    zeros = bytes(chunk)
    buf = bytearray(chunk + 15)

    def openssl_stream() -> bytes:
        enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        for _ in range(KEYSTREAM_BYTES // chunk):
            enc.update_into(zeros, buf)
        return bytes(buf[:chunk])

    last = benchmark(openssl_stream)
    expected_tail = reference.keystream(key, KEYSTREAM_BYTES)[-chunk:]
    assert last == expected_tail
    record(items=KEYSTREAM_BYTES / 4, unit="uint32 words", bytes_in=KEYSTREAM_BYTES)


KEYS = [bytes([j]) * 16 for j in range(50)]


@functools.lru_cache(maxsize=2)
def expected_masks(dim: int, nkeys: int) -> np.ndarray:
    signs = [1 if j % 2 == 0 else -1 for j in range(nkeys)]
    return reference.masked_accumulate(np.zeros(dim, np.uint32), KEYS[:nkeys], signs, 32)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("nkeys", [1, 8, 50])
@pytest.mark.parametrize("dim", [1_000_000, 10_000_000], ids=["1M", "10M"])
def test_masked_accumulate(benchmark, record, dim: int, nkeys: int, threads: int) -> None:
    keys = KEYS[:nkeys]
    signs = [1 if j % 2 == 0 else -1 for j in range(nkeys)]
    acc = np.zeros(dim, np.uint32)

    def fresh():
        acc[:] = 0
        return (acc, keys, signs), {"bits": 32, "threads": threads}

    benchmark.pedantic(masked_accumulate, setup=fresh, rounds=7 if dim * nkeys > 1e8 else 15)
    np.testing.assert_array_equal(acc, expected_masks(dim, nkeys))
    record(items=dim * nkeys, unit="uint32 mask elements")


@pytest.fixture(scope="module")
def ten_vectors(data_rng) -> list[np.ndarray]:
    return [data_rng.integers(0, 2**32, 10_000_000, dtype=np.uint32) for _ in range(10)]


@pytest.fixture(scope="module")
def ten_vectors_sum(ten_vectors) -> np.ndarray:
    return reference.sum_mod(ten_vectors, 32)


@pytest.mark.parametrize("threads", [1, 2])
def test_sum_mod_10x10M(benchmark, record, ten_vectors, ten_vectors_sum, threads: int) -> None:
    out = np.empty_like(ten_vectors[0])
    benchmark(sum_mod, ten_vectors, bits=32, out=out, threads=threads)
    np.testing.assert_array_equal(out, ten_vectors_sum)
    record(items=10 * 10_000_000, unit="uint32 inputs", bytes_in=10 * 40_000_000)


def test_baseline_numpy_sum_10x10M(benchmark, record, ten_vectors, ten_vectors_sum) -> None:
    def numpy_sum():
        acc = ten_vectors[0].copy()
        for v in ten_vectors[1:]:
            acc += v
        return acc

    out = benchmark(numpy_sum)
    np.testing.assert_array_equal(out, ten_vectors_sum)
    record(items=10 * 10_000_000, unit="uint32 inputs", bytes_in=10 * 40_000_000)


FP = FixedPoint(clip=1.0, frac_bits=24, bits=32, max_summands=100)
QKEY = bytes(range(16, 32))


@pytest.fixture(scope="module")
def update_10M(data_rng) -> np.ndarray:
    return data_rng.normal(0.0, 0.3, 10_000_000).astype(np.float32)


@pytest.fixture(scope="module")
def update_10M_quantized(update_10M) -> np.ndarray:
    return reference.quantize(update_10M, FP, QKEY)


@pytest.mark.parametrize("threads", [1, 2])
def test_quantize_10M(benchmark, record, update_10M, update_10M_quantized, threads: int) -> None:
    out = benchmark(quantize, update_10M, FP, QKEY, threads=threads)
    np.testing.assert_array_equal(out, update_10M_quantized)
    record(items=10_000_000, unit="float32 values")


def test_baseline_numpy_quantize_10M(benchmark, record, update_10M, update_10M_quantized) -> None:
    out = benchmark.pedantic(reference.quantize, (update_10M, FP, QKEY), rounds=3)
    np.testing.assert_array_equal(out, update_10M_quantized)
    record(items=10_000_000, unit="float32 values")


@pytest.mark.parametrize("threads", [1, 2])
def test_dequantize_10M(benchmark, record, update_10M_quantized, threads: int) -> None:
    out = benchmark(dequantize, update_10M_quantized, FP, 1, threads=threads)
    np.testing.assert_array_equal(out, reference.dequantize(update_10M_quantized, FP, 1))
    record(items=10_000_000, unit="values")


SECRET = bytes(range(32))


@pytest.mark.parametrize("n,t", [(100, 51), (1000, 500)])
def test_shamir_split(benchmark, record, n: int, t: int) -> None:
    shares = benchmark(shamir.split, SECRET, t, n, seed=bytes(16))
    assert len(shares) == n
    assert shamir.combine(shares[n - t :], t) == SECRET
    record(items=1, unit="secrets")


@pytest.mark.parametrize("n,t", [(100, 51), (1000, 500)])
def test_shamir_combine(benchmark, record, n: int, t: int) -> None:
    shares = shamir.split(SECRET, t, n, seed=bytes(16))[::-1]
    assert benchmark(shamir.combine, shares, t) == SECRET
    record(items=1, unit="secrets")


# N = 8192, coefficient moduli [60, 40, 40] bits; the data level of a fresh ciphertext
# has two limbs, as SEAL drops the special prime.
Q_DATA = [1152921504606584833, 1099511678977]


@pytest.fixture(scope="module")
def ciphertext_batch(data_rng) -> list[np.ndarray]:
    q = np.array(Q_DATA, dtype=np.uint64).reshape(1, -1, 1)
    # 10 clients x 64 ciphertexts of [size=2][L=2][N=8192] (262k values each).
    return [data_rng.integers(0, 2**63, (64 * 2, 2, 8192), dtype=np.uint64) % q for _ in range(10)]


@pytest.mark.parametrize("threads", [1, 2])
def test_rns_sum_10_clients(benchmark, record, ciphertext_batch, threads: int) -> None:
    out = np.empty_like(ciphertext_batch[0])
    benchmark(rns_sum, ciphertext_batch, Q_DATA, out=out, threads=threads)
    np.testing.assert_array_equal(out, reference.rns_sum(ciphertext_batch, Q_DATA))
    nbytes = sum(c.nbytes for c in ciphertext_batch)
    record(items=nbytes / 8, unit="u64 coefficients", bytes_in=nbytes)


def test_baseline_numpy_rns_sum_10_clients(benchmark, record, ciphertext_batch) -> None:
    q = np.array(Q_DATA, dtype=np.uint64).reshape(1, -1, 1)

    def numpy_sum():
        acc = ciphertext_batch[0].copy()
        for c in ciphertext_batch[1:]:
            acc += c
            np.subtract(acc, q, out=acc, where=acc >= q)
        return acc

    out = benchmark.pedantic(numpy_sum, rounds=3)
    np.testing.assert_array_equal(out, reference.rns_sum(ciphertext_batch, Q_DATA))
    nbytes = sum(c.nbytes for c in ciphertext_batch)
    record(items=nbytes / 8, unit="u64 coefficients", bytes_in=nbytes)
