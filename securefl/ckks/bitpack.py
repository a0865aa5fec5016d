"""Bit-packing of RNS limbs: each coefficient of limb l in ceil(log2 q_l) bits.

A CKKS coefficient of limb l is uniform in [0, q_l) and stored by SEAL in a 64-bit word;
for FLARE's moduli [60, 40] bits, 28 of every 128 bits are zero. Packing them away makes
a ciphertext smaller than SEAL's zstd output (which saves only 10-16% on this data) at
the cost of a few shifts, so the server never runs a general-purpose decompressor.

Format of one limb of M coefficients (M a multiple of 64) at width b bits: view the
coefficients as a 64 x (M/64) matrix V in C order (``V[j, g]`` is coefficient
``j * M/64 + g``); the packed limb is a b x (M/64) matrix P of little-endian u64 words in C
order, where column g of P, read as one 64*b-bit little-endian integer
``sum_w P[w, g] << 64 w``, holds ``V[j, g]`` in its bits ``[j*b, (j+1)*b)``. Every
operation then runs along a contiguous row of M/64 words.

The native packer of SecAgg's ring elements (:func:`securefl.primitives.masking.pack_bits`)
writes one least-significant-bit-first stream instead, element i in bits ``[i*b, (i+1)*b)``:
the same bits per group of 64 (column g of P is that stream over ``V[:, g]``), in another
order. It produces this format only with V transposed before and P transposed after, on one
thread; on a 2M-coefficient limb (1M values at N = 8192, 40 or 56 bits) that measured 5 to 8
times slower than the shifts here, in both directions (the native loop alone, without the
transposes, is already slower than :func:`unpack`), and the server unpacks every client's
update. So the two packers stay separate; ``tests/ckks/test_ckks_bitpack.py`` pins the
relation between their bytes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

__all__ = ["pack", "packed_words", "unpack"]

_ROWS = 64
U64 = npt.NDArray[np.uint64]


def packed_words(count: int, bits: int) -> int:
    """Number of u64 words that :func:`pack` writes for ``count`` coefficients."""
    return bits * (count // _ROWS)


def _check(count: int, bits: int) -> int:
    if not 1 <= bits <= 64:
        raise ValueError(f"bit width {bits} is not in [1, 64]")
    if count % _ROWS:
        raise ValueError(f"{count} coefficients is not a multiple of {_ROWS}")
    return count // _ROWS


def _column_slices(cols: int, threads: int) -> list[slice]:
    # Slices of at least 4096 columns: below that, thread overhead outweighs the gain.
    parts = max(1, min(threads, cols // 4096))
    edges = np.linspace(0, cols, parts + 1).astype(int)
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def _run(work: list[slice], fn: Callable[[slice], None], threads: int) -> None:
    if len(work) == 1 or threads <= 1:
        for cols in work:
            fn(cols)
        return
    # numpy's shifts release the GIL: column slices run in parallel.
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(fn, cols) for cols in work]:
            future.result()


def pack(values: U64, bits: int, *, out: U64 | None = None, threads: int = 1) -> U64:
    """Pack a limb's coefficients, each below 2^bits, into ``bits`` bits each.

    Parameters
    ----------
    values:
        1-D C-contiguous ``uint64`` array of M coefficients, M a multiple of 64.
    bits:
        The width b, in [1, 64].
    out:
        Optional C-contiguous ``uint64`` destination of shape ``(b, M // 64)``.
    threads:
        Worker threads over column slices.

    Returns
    -------
    ndarray
        The b x (M/64) packed words (``out`` if given).

    Raises
    ------
    ValueError
        If a value is >= 2^bits (it would be truncated), the width is out of range, M is
        not a multiple of 64 or ``out`` has the wrong shape.
    """
    cols = _check(values.size, bits)
    if values.ndim != 1 or values.dtype != np.uint64:
        raise ValueError("values must be a 1-D uint64 array")
    # Truncating a coefficient would corrupt the ciphertext silently.
    if bits < 64 and values.size and int(values.max()) >> bits:
        raise ValueError(f"a value does not fit in {bits} bits")
    if out is None:
        out = np.zeros((bits, cols), dtype=np.uint64)
    elif out.shape != (bits, cols) or out.dtype != np.uint64:
        raise ValueError(f"out must be uint64 of shape {(bits, cols)}")
    else:
        out.fill(0)
    v = values.reshape(_ROWS, cols)

    def work(c: slice) -> None:
        tmp = np.empty(c.stop - c.start, dtype=np.uint64)
        for j in range(_ROWS):
            word, shift = divmod(j * bits, 64)
            np.left_shift(v[j, c], np.uint64(shift), out=tmp)
            out[word, c] |= tmp
            if shift + bits > 64:  # the value straddles two words
                np.right_shift(v[j, c], np.uint64(64 - shift), out=tmp)
                out[word + 1, c] |= tmp

    _run(_column_slices(cols, threads), work, threads)
    return out


def unpack(words: U64, bits: int, out: U64, *, threads: int = 1) -> U64:
    """Inverse of :func:`pack`: write the M coefficients into ``out``.

    Parameters
    ----------
    words:
        ``uint64`` array of ``bits * M/64`` words, as :func:`pack` wrote them (any
        alignment; a C-contiguous view into a message is fine).
    bits:
        The width b, in [1, 64].
    out:
        1-D C-contiguous ``uint64`` array of M coefficients, M a multiple of 64.
    threads:
        Worker threads over column slices.

    Returns
    -------
    ndarray
        ``out``. Values are below 2^bits; checking them against q_l is the caller's job.

    Raises
    ------
    ValueError
        If the sizes do not match or the width is out of range.
    """
    cols = _check(out.size, bits)
    if words.size != bits * cols:
        raise ValueError(f"{words.size} packed words, expected {bits * cols}")
    p = words.reshape(bits, cols)
    v = out.reshape(_ROWS, cols)
    mask = np.uint64((1 << bits) - 1)

    def work(c: slice) -> None:
        tmp = np.empty(c.stop - c.start, dtype=np.uint64)
        for j in range(_ROWS):
            word, shift = divmod(j * bits, 64)
            dst = v[j, c]
            np.right_shift(p[word, c], np.uint64(shift), out=dst)
            if shift + bits > 64:
                np.left_shift(p[word + 1, c], np.uint64(64 - shift), out=tmp)
                dst |= tmp
            if shift + bits != 64:  # neighbouring values share the word: keep b bits
                dst &= mask

    _run(_column_slices(cols, threads), work, threads)
    return out
