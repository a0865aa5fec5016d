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
    """Rotation signs: -1 where bit 63 of little-endian u64 keystream word i is set."""
    words = np.frombuffer(keystream(key, 8 * length), dtype=np.dtype("<u8"))
    result: np.ndarray = np.where(words >> np.uint64(63) == 1, -1.0, 1.0)
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
    # The native code sums squares in four interleaved lanes within 2048-element units
    # ((l0 + l1) + (l2 + l3)), then the units in order; cumsum reproduces each order.
    parts = []
    for i in range(0, d, _DP_CHUNK):
        unit = v[i : i + _DP_CHUNK] ** 2
        lanes = np.cumsum(np.pad(unit, (0, -unit.size % 4)).reshape(-1, 4), axis=0)[-1]
        parts.append(float((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])))
    norm = float(np.sqrt(np.cumsum(parts)[-1]))
    factor = weight * (clip / norm if norm > clip else 1.0)
    buf = np.zeros(D)
    buf[:d] = v
    buf = fwht(buf * dp_signs(rotation_key, D))
    # Clipping and weighting are folded into the scale (the rotation is linear).
    inv = factor * (1.0 / (np.sqrt(float(D)) * gamma))
    scaled = buf * inv
    coins = np.frombuffer(
        keystream(rounding_key, 8 * D, _counter_block(attempt)), dtype=np.dtype("<u8")
    )
    u = _from_bits(_ONE_BITS | (coins >> np.uint64(12))) - 1.0
    floor = np.floor(scaled)
    r = np.where(u < scaled - floor, floor + 1.0, floor)
    wrapped = r.astype(np.int64).astype(np.uint64) & np.uint64((1 << bits) - 1)
    result: np.ndarray = wrapped.astype(np.uint32 if bits <= 32 else np.uint64)
    return result


_LN2 = 0.6931471805599453
_LN2_HI = 0.6931471803691238
_LN2_LO = 1.9082149292705877e-10
_SQRT2 = 1.4142135623730951
_ONE_BITS = np.uint64(0x3FF0000000000000)
_TWO52 = 2.0**52
_DG_BATCH = 256


def _from_bits(u: np.ndarray) -> np.ndarray:
    result: np.ndarray = u.astype(np.uint64).view(np.float64)
    return result


def log_unit(u: np.ndarray) -> np.ndarray:
    """The native ``log_unit``: ln u for u in (0, 1], operation for operation."""
    bits = u.view(np.uint64)
    m = _from_bits((bits & np.uint64(0x000FFFFFFFFFFFFF)) | _ONE_BITS)
    e = _from_bits(np.float64(_TWO52).view(np.uint64) | (bits >> np.uint64(52))) - _TWO52 - 1023.0
    high = m > _SQRT2
    m = np.where(high, m * 0.5, m)
    e = np.where(high, e + 1.0, e)
    f = (m - 1.0) / (m + 1.0)
    s = f * f
    s2 = s * s
    s4 = s2 * s2
    s8 = s4 * s4
    q0, q1 = 1.0 + (1.0 / 3) * s, 1.0 / 5 + (1.0 / 7) * s
    q2, q3 = 1.0 / 9 + (1.0 / 11) * s, 1.0 / 13 + (1.0 / 15) * s
    q4, q5 = 1.0 / 17 + (1.0 / 19) * s, 1.0 / 21 + (1.0 / 23) * s
    p = ((q0 + q1 * s2) + (q2 + q3 * s2) * s4) + (q4 + q5 * s2) * s8
    result: np.ndarray = e * _LN2 + 2.0 * f * p
    return result


def exp_nonpositive(x: np.ndarray) -> np.ndarray:
    """The native ``exp_nonpositive``: e^x for x <= 0, operation for operation."""
    x = np.where(x > -708.0, x, -708.0)
    k = np.floor(x * (1.0 / _LN2) + 0.5)
    r = (x - k * _LN2_HI) - k * _LN2_LO
    r2 = r * r
    r4 = r2 * r2
    r8 = r4 * r4
    q0, q1 = 1.0 + r, 0.5 + (1.0 / 6.0) * r
    q2, q3 = 1.0 / 24.0 + (1.0 / 120.0) * r, 1.0 / 720.0 + (1.0 / 5040.0) * r
    q4 = 1.0 / 40320.0 + (1.0 / 362880.0) * r
    q5 = 1.0 / 3628800.0 + (1.0 / 39916800.0) * r
    q6 = 1.0 / 479001600.0 + (1.0 / 6227020800.0) * r
    p = ((q0 + q1 * r2) + (q2 + q3 * r2) * r4) + ((q4 + q5 * r2) + q6 * r4) * r8
    biased = np.asarray(_TWO52 + (k + 1023.0)).view(np.uint64) & np.uint64(0x7FF)
    result: np.ndarray = p * _from_bits(biased << np.uint64(52))
    return result


def dp_discrete_gaussian(key: bytes, n: int, sigma: float) -> np.ndarray:
    """CKS 2020 Algorithm 3 exactly as the native sampler runs it (dp_samplers.cpp)."""
    import math

    t = math.floor(sigma) + 1
    shift, inv_two_var = sigma * sigma / t, 0.5 / (sigma * sigma)
    out = np.empty(n, dtype=np.int64)
    batch_bytes = 16 * _DG_BATCH
    for first in range(0, n, _DP_NOISE_CHUNK):
        count = min(n - first, _DP_NOISE_CHUNK)
        values: list[int] = []
        block = 0
        while len(values) < count:
            counter = ((first // _DP_NOISE_CHUNK) << 64) + block
            raw = keystream(key, batch_bytes, counter.to_bytes(16, "big"))
            block += batch_bytes // 16
            words = np.frombuffer(raw, dtype=np.dtype("<u8")).astype(np.uint64)
            a, b = words[:_DG_BATCH], words[_DG_BATCH:]
            u = 2.0 - _from_bits(_ONE_BITS | (a >> np.uint64(12)))
            v = _from_bits(_ONE_BITS | (b >> np.uint64(12))) - 1.0
            m = np.floor(-t * log_unit(u))
            dev = m - shift
            accept = v < exp_nonpositive(-dev * dev * inv_two_var)
            negative = (a & np.uint64(1)) == 1
            accept &= ~(negative & (m == 0.0))
            signed = np.where(negative, -m, m).astype(np.int64)
            values.extend(signed[accept].tolist())
        out[first : first + count] = values[:count]
    return out
