"""Helpers of the CKKS tests."""

from __future__ import annotations

import numpy as np

from securefl.ckks import ClientContext, wire


def tenseal_vector_bytes(ctx: ClientContext, values: np.ndarray) -> bytes:
    """TenSEAL's own serialization (zstd blobs) of ``values``, as a FLARE client sends."""
    import tenseal

    data: bytes = tenseal.ckks_vector(ctx.tenseal, values).serialize()
    return data


# A data level for key-free tests: N = 1024 with FLARE's two data primes.
N = 1024
MODULI = (1152921504606830593, 1099510890497)  # SEAL's 60- and 40-bit primes at N = 8192
SPEC = wire.Spec(N, MODULI, (1, 2, 3, 4), 2.0**40)


def random_vector(
    rng: np.random.Generator, length: int, spec: wire.Spec = SPEC
) -> wire.EncryptedVector:
    """Ciphertexts of ``length`` values with coefficients uniform below each q_l."""
    chunks = spec.chunks(length)
    coeffs = np.empty((len(spec.moduli), chunks, 2, spec.poly_modulus_degree), np.uint64)
    for limb, q in enumerate(spec.moduli):
        coeffs[limb] = rng.integers(0, q, size=coeffs[limb].shape, dtype=np.uint64)
    return wire.EncryptedVector((4, 1), spec.parms_id, spec.scale, length, spec.widths, coeffs)
