"""Helpers of the CKKS tests."""

from __future__ import annotations

import numpy as np

from securefl.ckks import ClientContext


def tenseal_vector_bytes(ctx: ClientContext, values: np.ndarray) -> bytes:
    """TenSEAL's own serialization (zstd blobs) of ``values``, as a FLARE client sends."""
    import tenseal

    data: bytes = tenseal.ckks_vector(ctx.tenseal, values).serialize()
    return data
