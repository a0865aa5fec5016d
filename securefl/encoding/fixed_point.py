"""The fixed-point encoding of float updates (docs/PROTOCOL.md, "The masked vector").

A client encodes q(clip(x) n_k / W) with stochastic rounding to the precision 2^-p,
the rounding noise from AES-CTR under a key derived from fresh randomness and bound to
the session and the client; the weight n_k travels as an extra masked element, so the
server learns only sum n_k q(...) and N = sum n_k. Decoding: dequantize the sum of m
encodings (refusing one out of range, which no honest sum can be) and multiply by W / N.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from securefl.encoding.base import Encoder, RingInput, RingSum
from securefl.encoding.ring import RingVector
from securefl.primitives import kdf
from securefl.primitives.masking import RingArray
from securefl.primitives.quantize import FixedPoint, dequantize, quantize

__all__ = ["ROUNDING", "FixedPointEncoder", "SessionParameters", "as_ring_input", "encoder_for"]

ROUNDING = b"securefl/secagg/rounding/v1"
"""HKDF label of the rounding key (docs/PROTOCOL.md, "Key derivation")."""


class SessionParameters(Protocol):
    """What the encoders read of a session's configuration
    (:class:`~securefl.secagg.config.SecAggConfig` has all of it)."""

    @property
    def fixed_point(self) -> FixedPoint: ...
    @property
    def dimension(self) -> int: ...
    @property
    def max_weight(self) -> int: ...
    @property
    def bits(self) -> int: ...
    @property
    def ring_input(self) -> bool: ...


class _Quantized:
    """One client's update, quantized when SecAgg asks for it (the rounding key is
    bound to the session id, known only then)."""

    def __init__(
        self,
        update: npt.NDArray[np.floating[Any]],
        fp: FixedPoint,
        weight: float,
        threads: int | None,
    ) -> None:
        self._update = update
        self._fp = fp
        self._weight = weight
        self._threads = threads

    @property
    def size(self) -> int:
        return int(self._update.size)

    def write(self, out: RingArray, *, session: bytes, client_id: int, secret: bytes) -> None:
        key = kdf.derive(secret, session=session, purpose=ROUNDING, ids=(client_id,), length=16)
        # The weight is folded in before rounding, n_k / W <= 1, so the encoding keeps
        # the whole precision of the ring (room for n values, not n W).
        quantize(self._update, self._fp, key, weight=self._weight, out=out, threads=self._threads)


class FixedPointEncoder:
    """The fixed-point encoder of a float session.

    Parameters
    ----------
    fixed_point:
        The code (clip c, precision 2^-p, ring bits b, at most n summands).
    dimension:
        d, the length of every update.
    max_weight:
        W, the largest weight a client may use.
    threads:
        Threads for quantization and dequantization (``None``: all cores).
    """

    def __init__(
        self,
        fixed_point: FixedPoint,
        dimension: int,
        max_weight: int,
        *,
        threads: int | None = None,
    ) -> None:
        self.fixed_point = fixed_point
        self.dimension = dimension
        self.max_weight = max_weight
        self._threads = threads

    @classmethod
    def for_config(
        cls, config: SessionParameters, *, threads: int | None = None
    ) -> FixedPointEncoder:
        """The encoder a float session's configuration describes."""
        return cls(config.fixed_point, config.dimension, config.max_weight, threads=threads)

    def encode(
        self, update: npt.NDArray[np.floating[Any]], weight: int, *, client_id: int = 0
    ) -> RingInput:
        """The contribution of ``update`` (flat float32/float64, length d) with weight
        n_k in [1, W]. The rounding key is bound to the client id SecAgg gives when it
        writes the input (``client_id`` is not needed here).

        Raises
        ------
        TypeError
            If ``update`` is not a float32/float64 numpy array.
        ValueError
            If it has another shape or a value that is not finite (naming the index),
            or the weight is out of range.
        """
        if not isinstance(update, np.ndarray) or update.dtype not in (np.float32, np.float64):
            raise TypeError("update must be a float32 or float64 numpy array")
        if update.ndim != 1 or update.size != self.dimension:
            raise ValueError(
                f"update must be a flat vector of {self.dimension} values, got shape {update.shape}"
            )
        finite = np.isfinite(update)
        if not finite.all():
            index = int(np.argmin(finite))
            raise ValueError(f"update[{index}] = {update[index]} is not finite")
        if not 1 <= weight <= self.max_weight:
            raise ValueError(f"weight must be in [1, {self.max_weight}], got {weight!r}")
        return _Quantized(update, self.fixed_point, weight / self.max_weight, self._threads)

    def decode(self, ring: RingSum) -> npt.NDArray[np.float64]:
        """sum_u n_u clip(x_u) / N over the contributors (each rounded to 2^-p).

        Raises
        ------
        ValueError
            If a coordinate is beyond what m honest encodings can sum to (a wrapped or
            corrupted aggregate is never silently decoded), or the total weight is out
            of range.
        """
        m = len(ring.contributors)
        if not m <= ring.total_weight <= m * self.max_weight:
            raise ValueError("unmasked total weight is out of range: the aggregate is corrupted")
        # sum_u clip(x_u) n_u / W over the contributors...
        total = dequantize(ring.ring_sum, self.fixed_point, m, threads=self._threads)
        total *= self.max_weight / ring.total_weight  # ...times W / N: in place
        return total


def encoder_for(config: SessionParameters, *, threads: int | None = None) -> Encoder | None:
    """The fixed-point encoder of a float session; ``None`` for a ring-input session,
    whose encoder (``securefl.dp``'s) the caller holds."""
    if config.ring_input:
        return None
    return FixedPointEncoder.for_config(config, threads=threads)


def as_ring_input(
    update: npt.NDArray[Any] | RingInput,
    config: SessionParameters,
    weight: int,
    *,
    threads: int | None = None,
) -> RingInput:
    """A SecAgg client's input: a :class:`RingInput` as it is; a numpy array encoded
    as the configuration says (fixed point for a float session, checked ring values
    for a ring-input one)."""
    if not isinstance(update, np.ndarray):
        if isinstance(update, RingInput):
            return update
        raise TypeError(
            f"an update must be a numpy array or a RingInput, got {type(update).__name__}"
        )
    if config.ring_input:
        return RingVector(update, config.bits)
    return FixedPointEncoder.for_config(config, threads=threads).encode(update, weight)
