"""Fixed-point encoding of real vectors into Z_{2^b} with unbiased stochastic rounding.

A value x is clipped to [-c, c], optionally multiplied by a weight factor w in (0, 1],
shifted and scaled, ``v = (clip(x) * w + c) * 2^p``, then
rounded up with probability ``frac(v)`` so that ``E[q(x)] = v`` exactly (up to 2^-53).
The coin for element i is bytes [8i, 8i + 8) of the AES-128-CTR keystream of a key,
never ``numpy.random``: ``u = (r >> 11) * 2^-53`` and ``q = floor(v) + (u < frac(v))``.

A sum of k encodings decodes to ``S * 2^-p - k * c``. The configuration is refused up
front if n encodings could wrap the ring: ``n * ceil(2 c 2^p) >= 2^b``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from securefl.errors import ConfigError
from securefl.primitives._native import Backend, check_backend, core, key_bytes, thread_count
from securefl.primitives.masking import RingArray, ring_dtype

__all__ = ["FixedPoint", "dequantize", "quantize"]

_MAX_FRAC_BITS = 62


@dataclass(frozen=True)
class FixedPoint:
    """A fixed-point code for sums of at most ``max_summands`` clipped values.

    Parameters
    ----------
    clip:
        c > 0: inputs are clipped to [-c, c]. Larger c loses less to clipping but
        needs more ring bits for the same precision.
    frac_bits:
        p: the precision is 2^-p. Each value gets rounding noise of variance at most
        2^-2p / 4.
    bits:
        b: the ring Z_{2^b}, 1 <= b <= 64.
    max_summands:
        n: the largest number of encodings ever added together (clients).

    Raises
    ------
    ConfigError
        If the parameters are invalid or n encodings could wrap Z_{2^b}; the message
        names n, c, b and the precision.
    """

    clip: float
    frac_bits: int
    bits: int
    max_summands: int

    def __post_init__(self) -> None:
        if not 0 <= self.frac_bits <= _MAX_FRAC_BITS:
            raise ConfigError(f"frac_bits must be in [0, {_MAX_FRAC_BITS}], got {self.frac_bits}")
        if not 1 <= self.bits <= 64:
            raise ConfigError(f"ring bits must be in [1, 64], got {self.bits}")
        if self.max_summands < 1:
            raise ConfigError(f"max_summands must be >= 1, got {self.max_summands}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigError(f"clip must be finite and > 0, got {self.clip}")
        try:
            core.fixed_point_max_level(self.clip, self.frac_bits, self.bits, self.max_summands)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    @classmethod
    def for_ring(cls, *, bits: int, clip: float, max_summands: int) -> FixedPoint:
        """The finest precision for which ``max_summands`` values fit ``bits`` bits.

        Raises
        ------
        ConfigError
            If even integer precision (p = 0) can wrap the ring.
        """
        # Whether p fits is monotone in p: binary search for the largest that does.
        low, high = -1, _MAX_FRAC_BITS  # invariant: `best` has p = low; p = high + 1 fails
        best: FixedPoint | None = None
        while low < high:
            mid = (low + high + 1) // 2
            try:
                best = cls(clip, mid, bits, max_summands)
                low = mid
            except ConfigError:
                high = mid - 1
        # None: even p = 0 fails; constructing it raises the explanation.
        return best if best is not None else cls(clip, 0, bits, max_summands)

    @property
    def max_level(self) -> int:
        """The largest encoding of one value, ``ceil(2 c 2^p)``."""
        return int(
            core.fixed_point_max_level(self.clip, self.frac_bits, self.bits, self.max_summands)
        )

    @property
    def precision(self) -> float:
        """The quantization step 2^-p."""
        return math.ldexp(1.0, -self.frac_bits)

    @property
    def dtype(self) -> np.dtype[np.uint32] | np.dtype[np.uint64]:
        """Storage dtype of the ring."""
        return ring_dtype(self.bits)

    def _args(self) -> dict[str, float | int]:
        return {
            "clip": self.clip,
            "frac_bits": self.frac_bits,
            "bits": self.bits,
            "max_summands": self.max_summands,
        }


def quantize(
    x: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    fp: FixedPoint,
    key: bytes,
    *,
    weight: float = 1.0,
    out: RingArray | None = None,
    threads: int | None = None,
    backend: Backend = "auto",
) -> RingArray:
    """Encode ``clip(x) * weight`` into Z_{2^b} with stochastic rounding driven by ``key``.

    Parameters
    ----------
    x:
        ``float32`` or ``float64`` array of any shape; every value must be finite.
    fp:
        The fixed-point code.
    key:
        16-byte key of the rounding noise.
    weight:
        A factor w in (0, 1] applied after clipping, so that a client can fold its
        relative weight into the encoding without widening the ring.
    out:
        Optional C-contiguous destination of ``x``'s size and dtype ``fp.dtype``.
    threads, backend:
        As for :func:`securefl.primitives.masking.masked_accumulate`.

    Returns
    -------
    numpy.ndarray
        Encodings of ``x``'s shape, dtype ``fp.dtype``.

    Raises
    ------
    TypeError
        If ``x`` is not a float32/float64 numpy array.
    ValueError
        If ``x`` holds NaN or infinity (the message gives the first index).

    Security
    --------
    Use each key for one vector only: the noise of two vectors encoded under one key
    is identical, which leaks their difference modulo the precision.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"x must have dtype float32 or float64, got {x.dtype}")
    src = np.ascontiguousarray(x)
    if out is None:
        out = np.empty(src.shape, dtype=fp.dtype)
    elif not isinstance(out, np.ndarray) or out.dtype != fp.dtype:
        raise TypeError(f"out must be a numpy array of dtype {fp.dtype}")
    core.quantize_into(
        src,
        out,
        key_bytes(key),
        **fp._args(),
        weight=float(weight),
        threads=thread_count(threads),
        backend=check_backend(backend),
    )
    return out


def dequantize(
    total: RingArray,
    fp: FixedPoint,
    summands: int,
    *,
    threads: int | None = None,
) -> npt.NDArray[np.float64]:
    """Decode a sum of ``summands`` encodings to the sum of the (rounded) values.

    Parameters
    ----------
    total:
        The ring sum, dtype ``uint32`` or ``uint64``, values in [0, 2^b).
    fp:
        The fixed-point code the encodings used.
    summands:
        How many encodings were added (1 <= summands <= fp.max_summands).

    Returns
    -------
    numpy.ndarray
        ``float64`` array: ``total * 2^-p - summands * c``.

    Raises
    ------
    ValueError
        If ``summands`` is out of range or a value exceeds ``summands * max_level``
        (a wrapped or corrupted aggregate is never silently decoded).
    """
    if not isinstance(total, np.ndarray):
        raise TypeError(f"total must be a numpy.ndarray, got {type(total).__name__}")
    src = np.ascontiguousarray(total)
    out = np.empty(src.shape, dtype=np.float64)
    core.dequantize_into(src, out, **fp._args(), summands=summands, threads=thread_count(threads))
    return out
