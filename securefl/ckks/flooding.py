"""Noise flooding at decryption: a released CKKS decryption does not give away its noise.

CKKS decryption returns ``m + e``, the message plus the ciphertext's noise, and the noise
is a function of the secret key: Li and Micciancio (EUROCRYPT 2021, "On the security of
homomorphic encryption on approximate numbers") recover the key from a ciphertext
``(c0, c1)`` and its exact decryption, since ``c1 * s = m + e - c0`` is then a linear
system in ``s``. SEAL and TenSEAL release ``m + e`` as it is; OpenFHE and Lattigo add
noise at decryption. securefl does too, for every value it decrypts
(:func:`securefl.ckks.client.decrypt_vector`, ``decrypt_aggregate``, ``decrypt_mean``):

1. Draw a polynomial ``f`` whose N coefficients are independent discrete Gaussians of
   standard deviation ``sigma_flood = 2^flood_bits * sqrt(n) * sigma_fresh``, with
   :func:`securefl.primitives.dp.sample_noise` (the native discrete Gaussian sampler over
   the AES-128-CTR keystream) under a fresh ``os.urandom(16)`` key per decryption.
   ``sigma_fresh = sqrt(N/18 + 1/6)`` is the coefficient noise of a fresh SEAL
   public-key encryption (the rounding of the special prime's mod-switch, ``r0 + r1 s``
   with ``r`` uniform in [-1/2, 1/2] and ``s`` ternary, plus the encoding's rounding;
   21.3 at N = 8192, measured 21.1) and ``n`` the number of contributions the vector
   sums, so ``sqrt(n) * sigma_fresh`` estimates the aggregate's noise.
2. Add ``f`` to the ciphertext, ``(c0 + f, c1)``, which decrypts to ``m + e + f``: SEAL
   loads ``(f, 1)`` in coefficient form and brings it to NTT form, securefl adds it and
   subtracts the NTT form of ``(0, 1)`` (SEAL refuses a ciphertext whose ``c1`` is 0).
3. Decrypt with SEAL and decode.

So the flooding happens on the plaintext polynomial, before decoding, as in OpenFHE. In
the slot domain ``f`` adds to the real part of every slot an independent Gaussian of
standard deviation ``sigma_flood * sqrt(N/2) / scale`` (:func:`slot_std`): 8.1e-5 per
coordinate of the weighted sum for one contribution at the defaults (N = 8192, scale
2^40, flood_bits = 16), times ``sqrt(n)``. What this buys: each released decryption is an
LWE sample whose error is ``2^flood_bits`` times the noise it hides, and the KL
divergence between the released values for two noise values is about
``N / 2^(2 flood_bits + 1)`` = 2^-20 per decryption at the defaults -- a mitigation sized
to keep FedAvg's precision at FLARE's 40-bit scale, not the statistical 2^-40 of a
formal IND-CPA-D proof, which needs a larger scale. docs/CKKS.md has the measurements.
"""

from __future__ import annotations

import math
import operator
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from securefl.ckks import protobuf, seal, wire
from securefl.ckks._backend import sealapi, tenseal
from securefl.ckks.contributions import TAG_SLOTS
from securefl.ckks.keys import ClientContext
from securefl.errors import ConfigError, InvalidMessage
from securefl.primitives.dp import sample_noise

__all__ = [
    "FLOOD_BITS",
    "Decryption",
    "decrypt",
    "error_bound",
    "flood_std",
    "fresh_noise_std",
    "slot_std",
]

FLOOD_BITS = 16
"""log2 of ``sigma_flood`` over the estimated noise of the decrypted vector."""
MIN_FLOOD_BITS = 8
"""Below 2^8 the flood hardly exceeds the noise it hides."""
MAX_FLOOD_BITS = 30
MAX_SLOT_STD = 1 / 32
"""The largest flood allowed in the slot domain: the weight and tag slots, integers, are
read within 0.25 = 8 standard deviations."""
ENCODER_ERROR = 2**-20
"""Slack for SEAL's floating-point encoding in :func:`error_bound` (measured: at most
5.3e-8 on other slots with a value of 2^32 in the vector, 1.1e-8 with values below 1000)."""
_SAMPLER_LIMIT = 2.0**40  # the native discrete Gaussian sampler's sigma range


@dataclass(frozen=True, eq=False)
class Decryption:
    """A flooded decryption.

    Parameters
    ----------
    values:
        The real parts of the vector's slots, float64.
    tag_slots:
        The imaginary parts of slots 0..3 of the last ciphertext (the contribution tag).
    """

    values: npt.NDArray[np.float64]
    tag_slots: npt.NDArray[np.float64]


def fresh_noise_std(spec: wire.Spec) -> float:
    """Standard deviation of one coefficient of a fresh SEAL encryption's noise."""
    return math.sqrt(spec.poly_modulus_degree / 18 + 1 / 6)


def slot_std(spec: wire.Spec, coeff_std: float) -> float:
    """Standard deviation, in each slot's real part, of i.i.d. coefficient noise."""
    return coeff_std * math.sqrt(spec.poly_modulus_degree / 2) / spec.scale


def _check_bits(flood_bits: int) -> int:
    if isinstance(flood_bits, bool):
        raise TypeError("flood_bits must be an int, not a bool")
    bits = operator.index(flood_bits)
    if not MIN_FLOOD_BITS <= bits <= MAX_FLOOD_BITS:
        raise ConfigError(f"flood_bits must be in [{MIN_FLOOD_BITS}, {MAX_FLOOD_BITS}], got {bits}")
    return bits


def flood_std(spec: wire.Spec, contributions: int, flood_bits: int = FLOOD_BITS) -> float:
    """``sigma_flood``: the coefficient-domain standard deviation of the flooding noise.

    Parameters
    ----------
    spec:
        The context's data level.
    contributions:
        The contributions the vector sums (1 for a single encryption).
    flood_bits:
        log2 of the flood over the vector's estimated noise, in [8, 30].

    Raises
    ------
    ConfigError
        If ``flood_bits`` is out of range, or the flood would exceed 1/32 in the slot
        domain (the weight and tag slots could no longer be read as integers) or the
        sampler's range: lower ``flood_bits`` or use a larger scale.
    """
    bits = _check_bits(flood_bits)
    n = max(1, contributions)
    sigma = 2.0**bits * math.sqrt(n) * fresh_noise_std(spec)
    if slot_std(spec, sigma) > MAX_SLOT_STD or sigma >= _SAMPLER_LIMIT:
        raise ConfigError(
            f"flood_bits = {bits} with {n} contributions floods each slot with "
            f"{slot_std(spec, sigma):.3g}, above {MAX_SLOT_STD}: lower flood_bits or raise "
            "the scale"
        )
    return sigma


def error_bound(spec: wire.Spec, contributions: int, flood_bits: int = FLOOD_BITS) -> float:
    """The documented bound on the error of each decrypted coordinate of a sum.

    ``8 * sqrt(sigma_flood^2 + n * sigma_fresh^2) * sqrt(N/2) / scale + 2^-20``: eight
    standard deviations of the flood and CKKS noise together (exceeded with probability
    about 1e-15 per coordinate) plus the encoder's floating-point error, for values of
    magnitude below 2^32. Divide by the total weight for the error of a weighted mean.
    """
    n = max(1, contributions)
    sigma = math.hypot(flood_std(spec, n, flood_bits), math.sqrt(n) * fresh_noise_std(spec))
    return 8 * slot_std(spec, sigma) + ENCODER_ERROR


def decrypt(
    context: ClientContext,
    vector: wire.EncryptedVector,
    *,
    contributions: int,
    flood_bits: int = FLOOD_BITS,
) -> Decryption:
    """Decrypt ``vector`` with noise flooding.

    Parameters
    ----------
    context:
        The clients' context.
    vector:
        Ciphertexts of ``context``'s data level (checked by the caller).
    contributions:
        How many contributions ``vector`` sums; sets the flood.
    flood_bits:
        See :func:`flood_std`.

    Returns
    -------
    Decryption
        The flooded values and tag slots.

    Raises
    ------
    InvalidMessage
        If SEAL refuses a ciphertext (for example a coefficient >= q_l).
    ConfigError
        As :func:`flood_std`.

    Security
    --------
    The noise key is fresh for every call and never leaves this function: with it, the
    flood could be subtracted again.
    """
    sigma = flood_std(context.spec, contributions, flood_bits)
    return _decrypt(context, vector, _noise(context.spec, vector, sigma, os.urandom(16)))


def _noise(
    spec: wire.Spec, vector: wire.EncryptedVector, sigma: float, key: bytes
) -> npt.NDArray[np.int64]:
    """The flooding polynomials of ``vector``'s ciphertexts, shape ``(C, N)``."""
    chunks = int(vector.coeffs.shape[1])
    n_deg = spec.poly_modulus_degree
    samples = sample_noise(chunks * n_deg, key, kind="discrete_gaussian", param=sigma)
    return samples.reshape(chunks, n_deg)


def _load(context: ClientContext, blob: bytes, size: int, scale: float) -> Any:
    """One SEAL ciphertext, validated by SEAL (coefficients below q_l, metadata)."""
    message = protobuf.encode_vector([size], [blob], scale)
    return tenseal().ckks_vector_from(context.tenseal, message).ciphertext()[0]


def _decrypt(
    context: ClientContext,
    vector: wire.EncryptedVector,
    noise: npt.NDArray[np.int64] | None,
) -> Decryption:
    """Decrypt, adding ``noise[i]`` to the plaintext of ciphertext i; ``None`` decrypts
    exactly (tests compare with TenSEAL's own decryption)."""
    tools = context._seal_tools()
    spec = context.spec
    n_deg, limbs = vector.poly_modulus_degree, len(vector.widths)
    info = seal.CiphertextInfo(
        vector.seal_version, vector.parms_id, wire.POLYS, n_deg, limbs, vector.scale
    )
    values = np.empty(vector.length, dtype=np.float64)
    tag_slots = np.zeros(TAG_SLOTS, dtype=np.float64)
    plain = sealapi().Plaintext()
    ones = None
    if noise is not None:
        # (0, 1) in NTT form: the evaluation of the constant 1 is 1 at every root.
        unit = np.zeros((wire.POLYS, limbs, n_deg), dtype=np.uint64)
        unit[1] = 1
        ones = _load(context, seal.write_ciphertext(info, unit), spec.slots, vector.scale)
    last = len(vector.chunk_sizes) - 1
    slots = spec.slots
    for i, size in enumerate(vector.chunk_sizes):
        blob = seal.write_ciphertext(info, vector.coeffs[:, i].transpose(1, 0, 2))
        try:
            ct = _load(context, blob, size, vector.scale)
        except (ValueError, RuntimeError) as exc:
            raise InvalidMessage(f"ciphertext {i}: SEAL refuses it: {exc}") from None
        if noise is not None:
            flood = np.zeros((wire.POLYS, limbs, n_deg), dtype=np.uint64)
            for limb, q in enumerate(spec.moduli):
                flood[0, limb] = np.mod(noise[i], q).astype(np.uint64)
            flood[1, :, 0] = 1
            noisy = _load(
                context, seal.write_ciphertext(info, flood, ntt_form=False), size, vector.scale
            )
            tools.evaluator.transform_to_ntt_inplace(noisy)
            tools.evaluator.add_inplace(ct, noisy)
            tools.evaluator.sub_inplace(ct, ones)
        tools.decryptor.decrypt(ct, plain)
        if i == last:
            decoded = np.asarray(tools.encoder.decode_complex(plain), dtype=np.complex128)
            values[i * slots : i * slots + size] = decoded.real[:size]
            tag_slots[:] = decoded.imag[:TAG_SLOTS]
        else:
            chunk = np.asarray(tools.encoder.decode_double(plain), dtype=np.float64)
            values[i * slots : i * slots + size] = chunk[:size]
    return Decryption(values, tag_slots)
