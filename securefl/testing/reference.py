"""Pure NumPy / Python references for every kernel of the native core.

Each function follows the written contract of its native counterpart as directly as
possible, using the ``cryptography`` package's AES-CTR as the keystream, so that
``native == reference`` checks the fast code against an independent one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from securefl.primitives.quantize import FixedPoint

SHAMIR_PRIME = (1 << 61) - 1
_SHAMIR_CHUNKS = (7, 7, 7, 7, 4)


def keystream(key: bytes, nbytes: int, counter_block: bytes = bytes(16)) -> bytes:
    """AES-128-CTR keystream from ``cryptography`` (OpenSSL)."""
    encryptor = Cipher(algorithms.AES(key), modes.CTR(counter_block)).encryptor()
    return encryptor.update(bytes(nbytes)) + encryptor.finalize()


def mask(key: bytes, length: int, dtype: np.dtype) -> np.ndarray:
    """The mask of ``key``: keystream read as little-endian words of ``dtype``."""
    width = np.dtype(dtype).itemsize
    return np.frombuffer(keystream(key, length * width), dtype=np.dtype(dtype).newbyteorder("<"))


def _ring_mask(bits: int, dtype: np.dtype) -> np.ndarray:
    return np.array((1 << bits) - 1, dtype=dtype)


def masked_accumulate(
    acc: np.ndarray, keys: Sequence[bytes], signs: Sequence[int], bits: int
) -> np.ndarray:
    """Returns ``(acc + sum_j signs[j] * mask(keys[j])) mod 2^bits`` (a new array)."""
    out = acc.astype(acc.dtype, copy=True).reshape(-1)
    for key, sign in zip(keys, signs, strict=True):
        m = mask(key, out.size, acc.dtype)
        out = out + m if sign > 0 else out - m
    result: np.ndarray = (out & _ring_mask(bits, acc.dtype)).reshape(acc.shape)
    return result


def sum_mod(inputs: Sequence[np.ndarray], bits: int) -> np.ndarray:
    total = np.zeros_like(inputs[0])
    for x in inputs:
        total = total + x  # wraps modulo the word size, a multiple of 2^bits
    result: np.ndarray = total & _ring_mask(bits, total.dtype)
    return result


def quantize(x: np.ndarray, fp: FixedPoint, key: bytes, weight: float = 1.0) -> np.ndarray:
    """Stochastic fixed-point encoding, operation for operation as documented."""
    v = np.asarray(x, dtype=np.float64).reshape(-1)
    noise = mask(key, v.size, np.dtype(np.uint64))
    clipped = np.minimum(np.maximum(v, -fp.clip), fp.clip)
    scaled = (clipped * weight + fp.clip) * np.ldexp(1.0, fp.frac_bits)
    floor = np.floor(scaled)
    frac = scaled - floor
    u = (noise >> np.uint64(11)).astype(np.float64) * 2.0**-53
    q = floor.astype(np.uint64) + (u < frac).astype(np.uint64)
    result: np.ndarray = q.astype(fp.dtype).reshape(np.shape(x))
    return result


def dequantize(total: np.ndarray, fp: FixedPoint, summands: int) -> np.ndarray:
    result: np.ndarray = total.astype(np.float64) * np.ldexp(1.0, -fp.frac_bits)
    return result - float(summands) * fp.clip


def _field_elements(seed: bytes, count: int) -> list[int]:
    """Uniform elements of GF(2^61 - 1) by rejection from the seed's keystream."""
    out: list[int] = []
    blocks = 0
    while len(out) < count:
        counter = blocks.to_bytes(16, "big")
        chunk = keystream(seed, 2048, counter)
        blocks += 2048 // 16
        for i in range(0, len(chunk), 8):
            v = int.from_bytes(chunk[i : i + 8], "little") & SHAMIR_PRIME
            if v != SHAMIR_PRIME:
                out.append(v)
                if len(out) == count:
                    break
    return out


def _chunks(secret: bytes) -> list[int]:
    chunks, offset = [], 0
    for width in _SHAMIR_CHUNKS:
        chunks.append(int.from_bytes(secret[offset : offset + width], "little"))
        offset += width
    return chunks


def shamir_split(
    secret: bytes, threshold: int, indices: Sequence[int], seed: bytes
) -> list[tuple[int, bytes]]:
    """Shares as (index, 40 bytes), coefficients drawn exactly as the native code."""
    p = SHAMIR_PRIME
    randomness = _field_elements(seed, 5 * (threshold - 1))
    polys = []
    for c, chunk in enumerate(_chunks(secret)):
        polys.append([chunk, *randomness[c * (threshold - 1) : (c + 1) * (threshold - 1)]])
    shares = []
    for x in indices:
        words = [sum(a * pow(x, k, p) for k, a in enumerate(poly)) % p for poly in polys]
        shares.append((x, b"".join(w.to_bytes(8, "little") for w in words)))
    return shares


def shamir_interpolate_at(points: Sequence[tuple[int, int]], at: int) -> int:
    """Value at ``at`` of the polynomial through ``points`` over GF(2^61 - 1)."""
    p = SHAMIR_PRIME
    total = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if j != i:
                num = num * (at - xj) % p
                den = den * (xi - xj) % p
        total = (total + yi * num * pow(den, p - 2, p)) % p
    return total


def shamir_words(share: bytes) -> list[int]:
    return [int.from_bytes(share[8 * c : 8 * c + 8], "little") for c in range(5)]


def shamir_combine(shares: Sequence[tuple[int, bytes]], threshold: int) -> bytes:
    used = shares[:threshold]
    out = b""
    for c, width in enumerate(_SHAMIR_CHUNKS):
        points = [(x, shamir_words(v)[c]) for x, v in used]
        out += shamir_interpolate_at(points, 0).to_bytes(width, "little")
    return out


def rns_sum(inputs: Sequence[np.ndarray], moduli: Sequence[int]) -> npt.NDArray[np.uint64]:
    q = np.array(moduli, dtype=np.uint64).reshape(1, -1, 1)
    total = np.zeros_like(inputs[0])
    for x in inputs:
        total = (total + x) % q  # both < q < 2^62: no overflow
    return total


def pack_bits(words: np.ndarray, bits: int) -> bytes:
    """Little-endian bit packing through one big integer (slow, obviously right)."""
    value = 0
    for i, w in enumerate(words.tolist()):
        value |= int(w) << (i * bits)
    return value.to_bytes((len(words) * bits + 7) // 8, "little")
