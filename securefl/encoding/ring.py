"""An input already in the ring: the vectors ``securefl.dp`` encodes."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import numpy.typing as npt

from securefl.primitives.masking import RingArray, ring_dtype

__all__ = ["RingVector"]

_EXACT_FLOAT = 2**53


class RingVector:
    """``values`` in Z_2^bits, checked once, written as they are.

    Parameters
    ----------
    values:
        Unsigned integers, or floats holding exact integers (what transports that
        carry floats deliver), every one in [0, 2^bits).
    bits:
        b, the ring's width (1..64).

    Raises
    ------
    TypeError
        If ``values`` is not an unsigned or float numpy array.
    ValueError
        If it is not flat, holds a value outside [0, 2^b), or (floats) a non-integer,
        a non-finite value or one of 2^53 or more, which a float cannot hold exactly.
    """

    def __init__(self, values: npt.NDArray[Any], bits: int) -> None:
        if not isinstance(values, np.ndarray) or values.dtype.kind not in "uf":
            raise TypeError("a ring input must be an unsigned or float numpy array")
        if values.ndim != 1:
            raise ValueError(f"a ring input must be flat, got shape {values.shape}")
        dtype = ring_dtype(bits)
        if values.dtype.kind == "f":
            if not np.all(np.isfinite(values)) or np.any(values != np.floor(values)):
                raise ValueError("a ring input must hold integers")
            top = min(2.0**bits, float(_EXACT_FLOAT))
            if values.size and (values.min() < 0 or values.max() >= top):
                # A float of 2^53 or more may already have lost its low bits.
                raise ValueError(
                    f"a ring input held as floats must hold values in [0, {top:.0f})"
                    + ("" if top == 2.0**bits else " (floats are exact below 2^53)")
                )
            ring = values.astype(dtype)
        else:
            # Values above the ring would leak through the masked sum's high bits.
            if values.size and int(values.max()) >= 2**bits:
                raise ValueError(f"a ring input must hold values in [0, 2^{bits})")
            ring = values.astype(dtype, copy=False)
        self._values = cast("RingArray", ring)
        self.bits = bits

    @property
    def size(self) -> int:
        return int(self._values.size)

    def write(self, out: RingArray, *, session: bytes, client_id: int, secret: bytes) -> None:
        out[:] = self._values
