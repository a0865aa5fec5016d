"""The client side of CKKS FedAvg: encrypt a weighted update, decrypt the weighted mean.

FedAvg (McMahan et al., AISTATS 2017) averages updates x_k weighted by the number of
examples n_k: x = sum_k n_k x_k / sum_k n_k. Under CKKS the clients encrypt ``n_k * x_k``
and ``n_k`` -- the weight rides in one extra slot after the update, so it costs no extra
ciphertext unless the update fills its last one -- the server adds ciphertexts
(:mod:`securefl.ckks.server`) and the clients decrypt both sums and divide.

Encryption goes through TenSEAL, one ciphertext (N/2 values) at a time exactly as
``tenseal.ckks_vector`` chunks a long vector, then the SEAL blobs are converted into the
``SFCK`` wire format (:mod:`securefl.ckks.wire`). Decryption converts the aggregate back
into a TenSEAL vector, so TenSEAL decrypts the ciphertext the server computed.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from securefl.ckks import protobuf, seal, wire
from securefl.ckks._backend import tenseal
from securefl.ckks.keys import ClientContext
from securefl.errors import DecryptionError, InvalidMessage, SecureFLError
from securefl.vectors import Layout, Update, flatten, unflatten

__all__ = [
    "DecryptedAggregate",
    "decrypt_aggregate",
    "decrypt_mean",
    "decrypt_vector",
    "encrypt_update",
    "encrypt_vector",
]

MAX_WEIGHT = 2**32
"""Exclusive bound on one client's weight n_k."""
MAX_TOTAL_WEIGHT = 2**46
"""Exclusive bound on sum_k n_k that :func:`decrypt_aggregate` accepts: float64 still
resolves 0.01 there, and a sum decrypted under a wrong key is far larger (about 2^53 to
2^186 in measurements: the noise of a random ring element divided by the scale)."""
# The aggregate's weight slot decrypts to an integer plus CKKS noise (about 2^-20 at
# FLARE's parameters); anything farther is a wrong key or an overflowed sum.
_WEIGHT_TOLERANCE = 0.01


@dataclass(frozen=True, eq=False)
class DecryptedAggregate:
    """A decrypted aggregate.

    Parameters
    ----------
    weighted_sum:
        ``sum_k n_k x_k``, float64, one value per coordinate of the update.
    total_weight:
        ``sum_k n_k``.
    """

    weighted_sum: npt.NDArray[np.float64]
    total_weight: int

    @property
    def mean(self) -> npt.NDArray[np.float64]:
        """The weighted mean, ``weighted_sum / total_weight``."""
        result: npt.NDArray[np.float64] = self.weighted_sum / self.total_weight
        return result


def encrypt_vector(
    context: ClientContext,
    values: npt.ArrayLike,
    *,
    encoding: wire.Encoding = "packed",
) -> bytes:
    """Encrypt a real vector as TenSEAL would and serialize it as an ``SFCK`` message.

    Parameters
    ----------
    context:
        The clients' context.
    values:
        1-D finite real values.
    encoding:
        ``"packed"`` (default, smallest) or ``"raw"``.

    Returns
    -------
    bytes
        The message for :meth:`securefl.ckks.server.Aggregator.add`.

    Raises
    ------
    ValueError
        If ``values`` is empty, not 1-D, or not finite, or the encoding is unknown.
    """
    ts = tenseal()
    vec = np.asarray(values, dtype=np.float64)
    if vec.ndim != 1 or vec.size == 0:
        raise ValueError(f"values must be a non-empty 1-D vector, got shape {vec.shape}")
    if not np.all(np.isfinite(vec)):
        raise ValueError("values must be finite")
    if encoding not in ("raw", "packed"):
        raise ValueError(f"encoding must be 'raw' or 'packed', got {encoding!r}")
    spec = context.spec
    slots = spec.slots
    chunks = spec.chunks(vec.size)
    coeffs = np.empty((len(spec.moduli), chunks, wire.POLYS, spec.poly_modulus_degree), np.uint64)
    version: tuple[int, int] | None = None
    for i in range(chunks):
        # One TenSEAL vector per chunk: the same ciphertexts as one long vector, without
        # holding every serialized chunk at once.
        chunk = vec[i * slots : (i + 1) * slots]
        proto = protobuf.decode_vector(ts.ckks_vector(context.tenseal, chunk).serialize())
        if proto.sizes != (chunk.size,) or len(proto.ciphertexts) != 1:
            raise SecureFLError("TenSEAL produced an unexpected chunking")
        info = wire.read_ciphertext_into(proto.ciphertexts[0], spec, coeffs[:, i])
        version = info.version
    assert version is not None
    encrypted = wire.EncryptedVector(
        version, spec.parms_id, spec.scale, int(vec.size), spec.widths, coeffs
    )
    return wire.encode(encrypted, encoding)


def encrypt_update(
    context: ClientContext,
    update: Update,
    weight: int,
    *,
    encoding: wire.Encoding = "packed",
) -> tuple[bytes, Layout]:
    """Encrypt ``weight * update`` and ``weight`` for CKKS FedAvg.

    Parameters
    ----------
    context:
        The clients' context.
    update:
        A numpy array, a dict/list/tuple of arrays, a torch tensor or ``state_dict`` (see
        :func:`securefl.vectors.flatten`).
    weight:
        The client's integer weight n_k (typically its number of examples), 1 <= n_k < 2^32.
    encoding:
        ``"packed"`` (default) or ``"raw"``: see ``docs/CKKS.md``.

    Returns
    -------
    (message, layout):
        The ``SFCK`` message holding ``n_k * x_k`` followed by ``n_k`` (length d + 1), and
        the layout that :func:`decrypt_mean` needs.

    Raises
    ------
    TypeError
        If ``weight`` is not an integer (bool included) or the update is not supported.
    ValueError
        If ``weight`` is out of range or the update is empty or not finite.

    Notes
    -----
    The aggregate decrypts correctly while ``|sum_k n_k x_k| * scale`` stays below half
    the data level's modulus (2^99 at FLARE's parameters, far beyond any model update);
    the absolute CKKS error of each coordinate of the sum is about 2^-20 per client at
    those parameters, so the mean's error is that divided by ``sum_k n_k``.
    """
    if isinstance(weight, bool):
        raise TypeError("weight must be an int, not a bool")
    w = operator.index(weight)
    if not 1 <= w < MAX_WEIGHT:
        raise ValueError(f"weight must be in [1, 2^32), got {w}")
    vector, layout = flatten(update)
    values = np.empty(layout.size + 1, dtype=np.float64)
    np.multiply(vector, float(w), out=values[:-1])
    values[-1] = w
    return encrypt_vector(context, values, encoding=encoding), layout


def _aggregate_vector(
    context: ClientContext, aggregate: bytes | bytearray | memoryview
) -> wire.EncryptedVector:
    if wire.is_tenseal(aggregate):
        return wire.from_tenseal(aggregate, context.spec)
    header = wire.read_header(aggregate)
    header.check(context.spec)
    return wire.decode(aggregate, header)


def decrypt_vector(
    context: ClientContext, aggregate: bytes | bytearray | memoryview
) -> npt.NDArray[np.float64]:
    """Decrypt an ``SFCK`` message or TenSEAL vector into its float64 values.

    Raises
    ------
    InvalidMessage
        If the bytes are malformed, belong to another parameter set, or SEAL refuses to
        load a ciphertext (for example a coefficient >= q_l).
    """
    ts = tenseal()
    vec = _aggregate_vector(context, aggregate)
    out = np.empty(vec.length, dtype=np.float64)
    slots = context.slots
    info = seal.CiphertextInfo(
        vec.seal_version,
        vec.parms_id,
        wire.POLYS,
        vec.poly_modulus_degree,
        len(vec.widths),
        vec.scale,
    )
    for i, size in enumerate(vec.chunk_sizes):
        blob = seal.write_ciphertext(info, vec.coeffs[:, i].transpose(1, 0, 2))
        message = protobuf.encode_vector([size], [blob], vec.scale)
        try:
            chunk = ts.ckks_vector_from(context.tenseal, message).decrypt()
        except (ValueError, RuntimeError) as exc:
            raise InvalidMessage(f"ciphertext {i}: SEAL refuses it: {exc}") from None
        out[i * slots : i * slots + size] = chunk
    return out


def decrypt_aggregate(
    context: ClientContext, aggregate: bytes | bytearray | memoryview
) -> DecryptedAggregate:
    """Decrypt the server's aggregate of :func:`encrypt_update` messages.

    Parameters
    ----------
    context:
        The clients' context (with the secret key).
    aggregate:
        The server's result, ``SFCK`` or TenSEAL format.

    Returns
    -------
    DecryptedAggregate
        The weighted sum and the total weight.

    Raises
    ------
    InvalidMessage
        If the aggregate is malformed or of another parameter set.
    DecryptionError
        If the weight slot does not decrypt to an integer in [1, 2^46): the aggregate
        holds a ciphertext encrypted under another key, or the sum overflowed.

    Security
    --------
    The decrypted values carry CKKS noise that depends on the secret key; share them
    only with parties entitled to the model.
    """
    values = decrypt_vector(context, aggregate)
    if values.size < 2:
        raise InvalidMessage("an aggregate holds at least one value and the weight")
    total = float(values[-1])
    rounded = round(total) if math.isfinite(total) else 0
    if not 1 <= rounded < MAX_TOTAL_WEIGHT or abs(total - rounded) > _WEIGHT_TOLERANCE:
        raise DecryptionError("the aggregate does not decrypt to a valid total weight")
    return DecryptedAggregate(values[:-1], int(rounded))


def decrypt_mean(
    context: ClientContext, aggregate: bytes | bytearray | memoryview, layout: Layout
) -> Update:
    """Decrypt the aggregate and return the weighted mean in the update's layout.

    Parameters
    ----------
    context:
        The clients' context.
    aggregate:
        The server's result.
    layout:
        The layout :func:`encrypt_update` returned.

    Returns
    -------
    Update
        ``sum_k n_k x_k / sum_k n_k``, shaped like the clients' updates (integer leaves
        rounded, see :func:`securefl.vectors.unflatten`).

    Raises
    ------
    InvalidMessage, DecryptionError
        As :func:`decrypt_aggregate`.
    ValueError
        If the aggregate's length does not match the layout.
    """
    result = decrypt_aggregate(context, aggregate)
    if result.weighted_sum.size != layout.size:
        raise ValueError(
            f"the aggregate holds {result.weighted_sum.size} values, the layout {layout.size}"
        )
    return unflatten(result.mean, layout)
