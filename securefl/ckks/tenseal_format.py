"""Conversion between TenSEAL's serialized ``CKKSVector`` and securefl's ciphertext arrays.

TenSEAL's ``CKKSVector.serialize()`` is what NVIDIA FLARE's clients send and what
``tenseal.ckks_vector_from`` loads: a ``CKKSVectorProto`` (:mod:`securefl.ckks.protobuf`)
holding one SEAL ``Ciphertext::save`` blob (:mod:`securefl.ckks.seal`) per chunk of N/2
values, chunk sizes N/2, ..., N/2, rest. securefl needs that format in three places: its
client encrypts through TenSEAL and reads each one-chunk blob into the ``SFCK`` arrays
(:func:`read_ciphertext_into`); its server accepts TenSEAL vectors next to ``SFCK``
messages, so FLARE-style clients can take part (:func:`is_tenseal`, :func:`from_tenseal`);
and it can answer in TenSEAL's format, so a TenSEAL client loads and decrypts the sum
(:func:`to_tenseal`). Both sides hold the same coefficients: converting changes only their
order (SEAL's polynomial-major against ``SFCK``'s limb-major, :mod:`securefl.ckks.wire`)
and the framing.

Every reader checks a ciphertext's parameter set, level and scale against the context's
:class:`~securefl.ckks.wire.Spec` before its coefficients are used, as SEAL's own ``+``
would; coefficients are not yet checked against q_l (the server's sum does that).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from securefl.ckks import protobuf, seal
from securefl.ckks.wire import (
    MAGIC,
    MAX_LENGTH,
    POLYS,
    EncryptedVector,
    Spec,
    check_contributions,
)
from securefl.errors import InvalidMessage

__all__ = ["from_tenseal", "is_tenseal", "read_ciphertext_into", "to_tenseal"]

U64 = npt.NDArray[np.uint64]


def is_tenseal(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` looks like TenSEAL's ``CKKSVector.serialize()`` rather than SFCK."""
    buf = memoryview(data).cast("B")
    return len(buf) > 0 and bytes(buf[:4]) != MAGIC and buf[0] in (0x08, 0x0A, 0x12, 0x19)


def read_ciphertext_into(
    blob: bytes | bytearray | memoryview, spec: Spec, out: U64
) -> seal.CiphertextInfo:
    """Read one fresh SEAL ciphertext of ``spec``'s data level into ``out`` (limb-major).

    Parameters
    ----------
    blob:
        A ``Ciphertext::save`` blob.
    spec:
        The data level it must belong to.
    out:
        ``uint64`` view of shape ``(L, 2, N)``.

    Returns
    -------
    seal.CiphertextInfo
        Its metadata.

    Raises
    ------
    InvalidMessage
        If the blob is malformed, not a 2-polynomial ciphertext, or of another parameter
        set, level or scale.
    """
    info, coeffs = seal.read_ciphertext(
        blob, max_coeffs=POLYS * len(spec.moduli) * spec.poly_modulus_degree
    )
    if info.polys != POLYS:
        raise InvalidMessage(f"{info.polys} polynomials; fresh ciphertexts have 2")
    spec.check(info.poly_modulus_degree, info.limbs, info.parms_id, info.scale)
    out[...] = coeffs.transpose(1, 0, 2)
    return info


def from_tenseal(
    data: bytes | bytearray | memoryview, spec: Spec, *, out: U64 | None = None
) -> EncryptedVector:
    """Read TenSEAL's serialization of a ``CKKSVector`` under ``spec``'s context.

    Parameters
    ----------
    data:
        ``CKKSVector.serialize()`` output; its SEAL blobs may be uncompressed, zlib or zstd
        (TenSEAL's default).
    spec:
        The context the ciphertexts must belong to (data level, scale).
    out:
        Optional C-contiguous ``uint64`` destination of shape ``(L, C, 2, N)``.

    Returns
    -------
    EncryptedVector
        Coefficients not yet checked against q_l.

    Raises
    ------
    InvalidMessage
        If the message or a blob is malformed, the chunking is not TenSEAL's, a ciphertext
        belongs to another parameter set or level, scales or versions disagree, or
        securefl's contribution list (field 15) breaks :func:`check_contributions`.
    BackendUnavailable
        For zstd blobs when no zstd decoder is available.
    ValueError
        If ``out`` has the wrong shape.
    """
    proto = protobuf.decode_vector(data)
    if not proto.ciphertexts:
        raise InvalidMessage("the vector holds no ciphertext")
    if len(proto.sizes) != len(proto.ciphertexts):
        raise InvalidMessage(f"{len(proto.sizes)} sizes for {len(proto.ciphertexts)} ciphertexts")
    length = sum(proto.sizes)
    slots = spec.slots
    n_ct = len(proto.ciphertexts)
    # TenSEAL fills every chunk but the last; anything else is not one of its vectors.
    if (
        not 1 <= length < MAX_LENGTH
        or spec.chunks(length) != n_ct
        or any(s != slots for s in proto.sizes[:-1])
        or not 1 <= proto.sizes[-1] <= slots
    ):
        raise InvalidMessage(f"chunk sizes {proto.sizes[:3]}... are not TenSEAL's chunking")
    contributions = check_contributions(proto.contributions)
    limbs = len(spec.moduli)
    shape = (limbs, n_ct, POLYS, spec.poly_modulus_degree)
    if out is None:
        out = np.empty(shape, dtype=np.uint64)
    elif out.shape != shape or out.dtype != np.uint64 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous uint64 array of shape {shape}")
    version: tuple[int, int] | None = None
    for i, blob in enumerate(proto.ciphertexts):
        try:
            info = read_ciphertext_into(blob, spec, out[:, i])
        except InvalidMessage as exc:
            raise InvalidMessage(f"ciphertext {i}: {exc}") from None
        if info.scale != proto.scale:
            raise InvalidMessage(f"ciphertext {i}: scale differs from the vector's")
        if version is None:
            version = info.version
        elif info.version != version:
            raise InvalidMessage(f"ciphertext {i}: SEAL version differs from ciphertext 0's")
    assert version is not None
    return EncryptedVector(
        version, spec.parms_id, spec.scale, length, spec.widths, out, contributions
    )


def to_tenseal(vector: EncryptedVector) -> bytes:
    """Serialize ciphertexts as TenSEAL's ``CKKSVector`` (uncompressed SEAL blobs).

    ``tenseal.ckks_vector_from(context, to_tenseal(v))`` loads the result; the contribution
    list travels in securefl's protobuf field 15, which TenSEAL skips.

    Raises
    ------
    ValueError
        If the coefficient array does not have shape ``(L, C, 2, N)``, or the contribution
        list breaks :func:`check_contributions` (``InvalidMessage``).
    """
    c = vector.coeffs
    if c.ndim != 4 or c.shape[2] != POLYS or c.shape[0] != len(vector.widths):
        raise ValueError("coefficients must have shape (L, C, 2, N)")
    info = seal.CiphertextInfo(
        vector.seal_version,
        vector.parms_id,
        POLYS,
        vector.poly_modulus_degree,
        c.shape[0],
        vector.scale,
    )
    blobs = [seal.write_ciphertext(info, c[:, i].transpose(1, 0, 2)) for i in range(c.shape[1])]
    contributions = check_contributions(vector.contributions)
    return protobuf.encode_vector(vector.chunk_sizes, blobs, vector.scale, contributions)
