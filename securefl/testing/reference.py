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


# ---- distributed DP (csrc/include/securefl/dp.hpp) ----------------------------------

_DP_CHUNK = 2048
_DP_NOISE_CHUNK = 1024


def _counter_block(stream: int) -> bytes:
    return stream.to_bytes(8, "big") + bytes(8)


def dp_signs(key: bytes, length: int) -> np.ndarray:
    """Rotation signs: bit i of the keystream (byte i // 8, bit i % 8) set means -1."""
    raw = np.frombuffer(keystream(key, (length + 7) // 8), dtype=np.uint8)
    bits = np.unpackbits(raw, bitorder="little")[:length]
    result: np.ndarray = np.where(bits == 1, -1.0, 1.0)
    return result


def fwht(x: np.ndarray) -> np.ndarray:
    """Unnormalized Walsh-Hadamard transform, radix 2, levels h = 1, 2, 4, ..."""
    a = np.array(x, dtype=np.float64)
    n, h = a.size, 1
    while h < n:
        view = a.reshape(-1, 2, h)
        top, bottom = view[:, 0, :].copy(), view[:, 1, :].copy()
        view[:, 0, :] = top + bottom
        view[:, 1, :] = top - bottom
        h *= 2
    return a


def dp_rotate(x: np.ndarray, key: bytes, inverse: bool = False) -> np.ndarray:
    """H diag(s) x / sqrt(D), or diag(s) H y / sqrt(D) for the inverse."""
    s = dp_signs(key, x.size)
    scale = 1.0 / np.sqrt(float(x.size))
    if not inverse:
        result: np.ndarray = fwht(x * s) * scale
        return result
    result = (fwht(x) * scale) * s
    return result


def dp_encode_without_noise(
    x: np.ndarray,
    *,
    clip: float,
    weight: float,
    gamma: float,
    bits: int,
    rotation_key: bytes,
    rounding_key: bytes,
    attempt: int = 0,
) -> np.ndarray:
    """The native encoding with noise "none", for one rounding attempt, op for op."""
    v = np.asarray(x, dtype=np.float64).reshape(-1)
    d = v.size
    D = 1 << max(0, (d - 1).bit_length())
    # The native code sums squares sequentially within 2048-element units, then the
    # units in order: cumsum reproduces that order exactly.
    parts = [float(np.cumsum(v[i : i + _DP_CHUNK] ** 2)[-1]) for i in range(0, d, _DP_CHUNK)]
    norm = float(np.sqrt(np.cumsum(parts)[-1]))
    factor = weight * (clip / norm if norm > clip else 1.0)
    buf = np.zeros(D)
    buf[:d] = v * factor
    buf = fwht(buf * dp_signs(rotation_key, D))
    inv = 1.0 / (np.sqrt(float(D)) * gamma)
    scaled = buf * inv
    coins = np.frombuffer(
        keystream(rounding_key, 8 * D, _counter_block(attempt)), dtype=np.dtype("<u8")
    )
    u = (coins >> np.uint64(11)).astype(np.float64) * 2.0**-53
    floor = np.floor(scaled)
    r = floor + (u < scaled - floor)
    wrapped = r.astype(np.int64).astype(np.uint64) & np.uint64((1 << bits) - 1)
    result: np.ndarray = wrapped.astype(np.uint32 if bits <= 32 else np.uint64)
    return result


class _WordStream:
    def __init__(self, key: bytes, stream: int) -> None:
        self._key, self._stream, self._block = key, stream, 0
        self._words: list[int] = []

    def next(self) -> int:
        if not self._words:
            counter = (self._stream << 64) + self._block
            raw = keystream(self._key, 2048, counter.to_bytes(16, "big"))
            self._words = list(np.frombuffer(raw, dtype=np.dtype("<u8")).tolist())[::-1]
            self._block += 2048 // 16
        return self._words.pop()


def dp_discrete_gaussian(key: bytes, n: int, sigma: float) -> np.ndarray:
    """CKS 2020 Algorithm 3 with the native code's stream layout and binary64 trials."""
    import math

    t = math.floor(sigma) + 1
    shift, inv_two_var = sigma * sigma / t, 0.5 / (sigma * sigma)
    out = np.empty(n, dtype=np.int64)
    for chunk in range(0, n, _DP_NOISE_CHUNK):
        s = _WordStream(key, chunk // _DP_NOISE_CHUNK)
        for i in range(chunk, min(n, chunk + _DP_NOISE_CHUNK)):
            while True:
                w = s.next()
                m = math.floor(-t * math.log(((w >> 11) + 1) * 2.0**-53))
                negative = w & 1
                if negative and m == 0:
                    continue
                dev = m - shift
                if (s.next() >> 11) * 2.0**-53 < math.exp(-dev * dev * inv_two_var):
                    out[i] = -m if negative else m
                    break
    return out
