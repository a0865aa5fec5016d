"""The interface between SecAgg's integer core and the encodings around it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from securefl.primitives.masking import RingArray

__all__ = ["AggregateResult", "Encoder", "RingInput", "RingSum", "decoded"]


@runtime_checkable
class RingInput(Protocol):
    """A client's contribution, written into the ring when SecAgg masks it.

    SecAgg calls :meth:`write` once, in MaskedInputCollection, when the session id is
    known: an encoding whose randomness must be bound to the session (stochastic
    rounding) derives it then, from ``secret``.
    """

    @property
    def size(self) -> int:
        """The number of ring elements it writes (the session's d)."""
        ...

    def write(self, out: RingArray, *, session: bytes, client_id: int, secret: bytes) -> None:
        """Write the d ring elements into ``out`` (dtype of the ring, length d).

        Parameters
        ----------
        out:
            The destination, a slice of the masked vector.
        session, client_id:
            The session id and this client's id, to bind derived keys to.
        secret:
            32 fresh random bytes from the client's generator, for the encoding's own
            randomness (unused by an input already in the ring).

        Raises
        ------
        ValueError
            If the input does not fit the ring (then SecAgg aborts the client).
        """
        ...


@dataclass(frozen=True)
class RingSum:
    """What SecAgg's server learns: the sum in Z_2^b of the contributors' ring vectors
    and of their weights."""

    ring_sum: RingArray
    """The d sums, dtype ``uint32`` (b <= 32) or ``uint64``."""
    total_weight: int
    contributors: tuple[int, ...]
    dropped: tuple[int, ...]


class Encoder(Protocol):
    """Encodes an update and weight into the ring, and decodes a ring sum."""

    def encode(
        self, update: npt.NDArray[np.floating[Any]], weight: int, *, client_id: int = 0
    ) -> RingInput:
        """Client ``client_id``'s contribution (``update`` flat, of the session's
        length, weight n_k in [1, W])."""
        ...

    def decode(self, ring: RingSum) -> npt.NDArray[np.float64]:
        """The contributors' weighted mean, as a flat float64 vector.

        Raises
        ------
        ValueError
            If the sum cannot be an honest one (a corrupted aggregate).
        """
        ...


@dataclass(frozen=True)
class AggregateResult:
    """A session's result as a transport reports it: the ring sum and what it decodes to.

    ``weighted_mean`` = sum_u n_u x_u / sum_u n_u over ``contributors`` (U3), decoded
    by the session's encoder (fixed point: each x_u clipped to [-c, c], each client's
    n_u x_u / W rounded to 2^-p). A ring-input session has no decoder here (its
    encoder, ``securefl.dp``'s, decodes ``ring_sum`` itself): ``weighted_mean`` is
    then ``ring_sum`` as float64, exact below 2^53.
    """

    weighted_mean: npt.NDArray[np.float64]
    total_weight: int
    contributors: tuple[int, ...]
    dropped: tuple[int, ...]
    ring_sum: RingArray | None = None
    """The sum in Z_2^b of the contributors' ring vectors."""


def decoded(ring: RingSum, encoder: Encoder | None) -> AggregateResult:
    """``ring`` with the weighted mean ``encoder`` decodes it to (``None``: the ring
    sum as float64, for a caller that decodes it itself).

    Raises
    ------
    ValueError
        If the encoder refuses the sum (a corrupted aggregate).
    """
    mean = ring.ring_sum.astype(np.float64) if encoder is None else encoder.decode(ring)
    return AggregateResult(
        weighted_mean=mean,
        total_weight=ring.total_weight,
        contributors=ring.contributors,
        dropped=ring.dropped,
        ring_sum=ring.ring_sum,
    )
