"""Pairwise masks in the ring Z_{2^b} (Bonawitz et al., CCS 2017, section 4).

A ring element is stored in a ``uint32`` word when b <= 32 and a ``uint64`` word
otherwise (:func:`ring_dtype`). The mask of a key is its AES-128-CTR keystream from
counter 0, read as little-endian words of that width, each taken modulo 2^b.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from securefl.primitives._native import Backend, check_backend, core, thread_count

__all__ = [
    "RingArray",
    "masked_accumulate",
    "pack_bits",
    "packed_size",
    "ring_dtype",
    "sum_mod",
    "unpack_bits",
]

RingArray = npt.NDArray[np.uint32] | npt.NDArray[np.uint64]


def ring_dtype(bits: int) -> np.dtype[np.uint32] | np.dtype[np.uint64]:
    """The storage dtype of Z_{2^bits}: uint32 for bits <= 32, else uint64.

    Raises
    ------
    ValueError
        Unless 1 <= bits <= 64.
    """
    if not 1 <= bits <= 64:
        raise ValueError(f"ring bits must be in [1, 64], got {bits}")
    return np.dtype(np.uint32) if bits <= 32 else np.dtype(np.uint64)


def _keys_array(keys: Sequence[bytes] | npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    if isinstance(keys, np.ndarray):
        return keys
    rows = []
    for j, key in enumerate(keys):
        if not isinstance(key, (bytes, bytearray, memoryview)):
            raise TypeError(f"keys[{j}] must be bytes, got {type(key).__name__}")
        if len(key) != 16:
            raise ValueError(f"keys[{j}] must be exactly 16 bytes, got {len(key)}")
        rows.append(bytes(key))
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), 16)


def _signs_array(signs: Sequence[int] | npt.NDArray[np.int8]) -> npt.NDArray[np.int8]:
    values = np.asarray(signs)
    if values.size == 0:
        return np.zeros(0, dtype=np.int8)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
        raise TypeError("signs must be a 1-D sequence of integers")
    if not np.all((values == 1) | (values == -1)):
        raise ValueError("signs must be +1 or -1")
    return values.astype(np.int8)


def masked_accumulate(
    acc: RingArray,
    keys: Sequence[bytes] | npt.NDArray[np.uint8],
    signs: Sequence[int] | npt.NDArray[np.int8],
    *,
    bits: int,
    threads: int | None = None,
    backend: Backend = "auto",
) -> None:
    """In place: ``acc = (acc + sum_j signs[j] * mask(keys[j])) mod 2^bits``.

    One call applies every key, cache-blocked, so ``acc`` is streamed through memory
    once however many keys there are.

    Parameters
    ----------
    acc:
        C-contiguous, writeable ``uint32`` (bits <= 32) or ``uint64`` array, any shape;
        element i (in C order) gets word i of each mask.
    keys:
        16-byte keys, as a sequence of bytes or a ``uint8`` array of shape (k, 16).
    signs:
        +1 (add) or -1 (subtract) for each key.
    bits:
        The ring Z_{2^bits}, 1 <= bits <= the word width of ``acc``.
    threads:
        Worker threads; ``None`` uses every core this process may run on.
    backend:
        AES implementation (see :mod:`securefl.primitives.prg`).

    Raises
    ------
    TypeError
        If ``acc`` is not a numpy ``uint32``/``uint64`` array or keys/signs have the
        wrong type.
    ValueError
        On a non-contiguous or read-only ``acc``, a key that is not 16 bytes, a sign
        other than +-1, mismatched lengths or ``bits`` out of range.

    Security
    --------
    Never reuse a key for two different vectors of one session: the difference of
    two masked vectors would cancel the mask.
    """
    core.masked_accumulate(
        acc,
        _keys_array(keys),
        _signs_array(signs),
        bits=bits,
        threads=thread_count(threads),
        backend=check_backend(backend),
    )


def sum_mod(
    inputs: Sequence[RingArray],
    *,
    bits: int,
    out: RingArray | None = None,
    threads: int | None = None,
) -> RingArray:
    """Return ``(inputs[0] + ... + inputs[n-1]) mod 2^bits``, reading each input once.

    Parameters
    ----------
    inputs:
        n >= 1 C-contiguous arrays of one dtype (``uint32`` or ``uint64``) and size.
    bits:
        The ring Z_{2^bits}.
    out:
        Optional destination of that dtype and size; may be one of the inputs (an
        accumulator). A new array shaped like ``inputs[0]`` by default.
    threads:
        Worker threads; ``None`` uses every available core.

    Raises
    ------
    TypeError, ValueError
        On mismatched dtypes or sizes, no inputs, or ``bits`` out of range.
    """
    arrays = list(inputs)
    if not arrays:
        raise ValueError("sum_mod needs at least one input")
    if out is None:
        first = arrays[0]
        if not isinstance(first, np.ndarray):
            raise TypeError(f"inputs[0] must be a numpy.ndarray, got {type(first).__name__}")
        out = np.empty_like(first, order="C")
    core.sum_mod(arrays, out, bits=bits, threads=thread_count(threads))
    return out


def packed_size(count: int, bits: int) -> int:
    """Bytes of ``count`` elements of ``bits`` bits packed: ceil(count * bits / 8)."""
    return (count * bits + 7) // 8


def pack_bits(words: RingArray, bits: int) -> bytes:
    """Pack elements of Z_2^bits into ``packed_size(len, bits)`` bytes, least
    significant bit first (for 32 and 64 bits: the little-endian words themselves).

    Raises
    ------
    TypeError
        If ``words`` is not a uint32/uint64 numpy array.
    ValueError
        If an element is not below 2^bits (the message gives its index).
    """
    return bytes(core.pack_bits(words, bits))


def unpack_bits(data: bytes | memoryview, count: int, bits: int) -> RingArray:
    """Inverse of :func:`pack_bits`: a new ``ring_dtype(bits)`` array of ``count`` elements.

    Raises
    ------
    ValueError
        If ``data`` is not exactly ``packed_size(count, bits)`` bytes or its padding
        bits are not zero (one canonical encoding per vector).
    """
    ring_dtype(bits)
    result: RingArray = core.unpack_bits(data, count, bits)
    return result
