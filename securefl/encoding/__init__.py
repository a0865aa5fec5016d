"""Encoders: how a client's update and weight become a vector in the ring Z_2^b, and how
the ring sum of the survivors becomes their weighted mean.

SecAgg adds integers: :class:`~securefl.secagg.client.SecAggClient` takes a
:class:`RingInput` and :class:`~securefl.secagg.server.SecAggServer` returns the ring
sum, the total weight and the contributors (as Google's fcp/secagg does). What the
integers mean is this layer's job, with one small interface for every transport:

- :class:`FixedPointEncoder`: clip, fold in n_k / W, stochastic rounding to 2^-p
  (the float sessions); decoding checks the sum is in range.
- :class:`RingVector`: a vector already in the ring (``securefl.dp``'s encodings; the
  DP encoder of :mod:`securefl.dp` decodes its ring sum).

:func:`encoder_for` gives the encoder a session's configuration names.
"""

from securefl.encoding.base import AggregateResult, Encoder, RingInput, RingSum, decoded
from securefl.encoding.fixed_point import FixedPointEncoder, encoder_for
from securefl.encoding.ring import RingVector

__all__ = [
    "AggregateResult",
    "Encoder",
    "FixedPointEncoder",
    "RingInput",
    "RingSum",
    "RingVector",
    "decoded",
    "encoder_for",
]
