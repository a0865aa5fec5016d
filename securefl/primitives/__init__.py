"""Cryptographic and arithmetic building blocks over the native core.

Only this package imports :mod:`securefl._core`; protocol code uses these wrappers.
"""

from securefl.primitives import shamir
from securefl.primitives.masking import masked_accumulate, ring_dtype, sum_mod
from securefl.primitives.prg import available_backends, default_backend, keystream
from securefl.primitives.quantize import FixedPoint, dequantize, quantize
from securefl.primitives.rns import rns_sum
from securefl.primitives.shamir import Share

__all__ = [
    "FixedPoint",
    "Share",
    "available_backends",
    "default_backend",
    "dequantize",
    "keystream",
    "masked_accumulate",
    "quantize",
    "ring_dtype",
    "rns_sum",
    "shamir",
    "sum_mod",
]
