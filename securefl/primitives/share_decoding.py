"""Error-correcting reconstruction of Shamir shares (Reed-Solomon decoding).

Shamir shares of one secret are a Reed-Solomon codeword: the values at x_1..x_m of
one polynomial of degree < t per 61-bit chunk (``securefl.primitives.shamir``). With
m > t shares of which at most e = floor((m - t) / 2) are false, the polynomial is
unique and Gao's algorithm ("A New Algorithm for Decoding Reed-Solomon Codes", 2003)
finds it in O(m^2) field operations per chunk: interpolate all m points, run the
extended Euclidean algorithm on (prod (X - x_i), interpolant) until the remainder
has degree < (m + t) / 2, and divide. The holders whose share is off that polynomial
are exactly the false ones. Beyond e false shares decoding may fail, or (when the
liars coordinate) return another polynomial: callers verify the secret it gives.

This is plain Python over GF(2^61 - 1): it runs only when a cheaper check found a
false share, and its cost is bounded (no search over subsets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from securefl.primitives.shamir import PRIME, SHARE_BYTES, Share

__all__ = ["Decoded", "decode_shares"]

_CHUNKS = SHARE_BYTES // 8

Poly = list[int]  # coefficients, lowest degree first, no trailing zeros


@dataclass(frozen=True)
class Decoded:
    """Which shares lie on the decoded polynomials (every chunk) and which do not."""

    consistent: tuple[int, ...]
    """Positions (in the input) of the shares that fit every chunk's polynomial."""
    false: tuple[int, ...]
    """Positions of the shares that do not."""


def decode_shares(shares: Sequence[Share], threshold: int) -> Decoded | None:
    """Decode t-of-m shares with errors; ``None`` if more than (m - t) / 2 are false.

    With m - t < 2 nothing can be corrected: m = t shares always fit one polynomial
    (``false`` is empty whatever they hold), and one false share among t + 1 makes
    decoding fail. Callers verify the secret of the consistent shares either way.

    Raises
    ------
    ValueError
        On fewer than ``threshold`` shares, repeated indices or malformed shares.
    """
    m, t = len(shares), threshold
    if not 1 <= t <= m:
        raise ValueError(f"need at least threshold={t} shares, got {m}")
    xs = [s.index % PRIME for s in shares]
    if len(set(xs)) != m:
        raise ValueError("share indices repeat")
    if any(len(s.value) != SHARE_BYTES for s in shares):
        raise ValueError(f"shares must be {SHARE_BYTES} bytes")
    false: set[int] = set()
    vanishing = _vanishing(xs)
    for c in range(_CHUNKS):
        ys = [int.from_bytes(s.value[8 * c : 8 * c + 8], "little") for s in shares]
        if any(y >= PRIME for y in ys):
            raise ValueError("a share word is not a field element")
        poly = _gao(xs, ys, t, vanishing)
        if poly is None:
            return None
        false |= {i for i, (x, y) in enumerate(zip(xs, ys, strict=True)) if _eval(poly, x) != y}
    if len(false) > (m - t) // 2:
        return None  # the chunks disagree on who lied: more errors than decodable
    consistent = tuple(i for i in range(m) if i not in false)
    return Decoded(consistent, tuple(sorted(false)))


def _gao(xs: list[int], ys: list[int], t: int, vanishing: Poly) -> Poly | None:
    m = len(xs)
    g1 = _interpolate(xs, ys, vanishing)
    # Extended Euclid on (g0, g1), tracking only the cofactor of g1.
    r0, r1 = vanishing, g1
    v0: Poly = []
    v1: Poly = [1]
    bound = (m + t) / 2
    while len(r1) - 1 >= bound:  # deg r1 >= (m + t) / 2 (deg of [] is -1)
        q, r = _divmod(r0, r1)
        r0, r1 = r1, r
        v0, v1 = v1, _sub(v0, _mul(q, v1))
    quotient, remainder = _divmod(r1, v1)
    if remainder or len(quotient) > t:
        return None
    return quotient


def _trim(p: Poly) -> Poly:
    while p and p[-1] == 0:
        p.pop()
    return p


def _sub(a: Poly, b: Poly) -> Poly:
    n = max(len(a), len(b))
    return _trim(
        [((a[i] if i < len(a) else 0) - (b[i] if i < len(b) else 0)) % PRIME for i in range(n)]
    )


def _mul(a: Poly, b: Poly) -> Poly:
    if not a or not b:
        return []
    out = [0] * (len(a) + len(b) - 1)
    for i, ai in enumerate(a):
        if ai:
            for j, bj in enumerate(b):
                out[i + j] = (out[i + j] + ai * bj) % PRIME
    return _trim(out)


def _divmod(a: Poly, b: Poly) -> tuple[Poly, Poly]:
    if not b:
        raise ZeroDivisionError("polynomial division by zero")
    rem = list(a)
    inv = pow(b[-1], PRIME - 2, PRIME)
    q = [0] * max(0, len(a) - len(b) + 1)
    for shift in range(len(a) - len(b), -1, -1):
        coef = rem[shift + len(b) - 1] * inv % PRIME
        q[shift] = coef
        if coef:
            for j, bj in enumerate(b):
                rem[shift + j] = (rem[shift + j] - coef * bj) % PRIME
    return _trim(q), _trim(rem[: len(b) - 1])


def _vanishing(xs: list[int]) -> Poly:
    poly = [1]
    for x in xs:  # poly *= (X - x)
        poly = [((poly[i - 1] if i else 0) - x * (poly[i] if i < len(poly) else 0)) % PRIME
                for i in range(len(poly) + 1)]  # fmt: skip
    return poly


def _interpolate(xs: list[int], ys: list[int], vanishing: Poly) -> Poly:
    """The polynomial of degree < m through the points (barycentric, O(m^2))."""
    m = len(xs)
    out = [0] * m
    for xi, yi in zip(xs, ys, strict=True):
        # basis = vanishing / (X - xi) by synthetic division; its value at xi is the
        # barycentric denominator prod_{j != i} (xi - xj).
        basis = [0] * m
        carry = 0
        for k in range(m, 0, -1):
            carry = (vanishing[k] + carry * xi) % PRIME
            basis[k - 1] = carry
        weight = yi * pow(_eval(basis, xi), PRIME - 2, PRIME) % PRIME
        if weight:
            for k in range(m):
                out[k] = (out[k] + weight * basis[k]) % PRIME
    return _trim(out)


def _eval(poly: Poly, x: int) -> int:
    acc = 0
    for coef in reversed(poly):
        acc = (acc * x + coef) % PRIME
    return acc
