"""The client side of CKKS FedAvg: encrypt a weighted update, decrypt the weighted mean.

FedAvg (McMahan et al., AISTATS 2017) averages updates x_k weighted by the number of
examples n_k: x = sum_k n_k x_k / sum_k n_k. Under CKKS the clients encrypt ``n_k * x_k``
and ``n_k`` -- the weight rides in one extra slot after the update, so it costs no extra
ciphertext unless the update fills its last one -- the server adds ciphertexts
(:mod:`securefl.ckks.server`) and the clients decrypt both sums and divide.

Encryption goes through TenSEAL, one ciphertext (N/2 values) at a time exactly as
``tenseal.ckks_vector`` chunks a long vector, then the SEAL blobs are read
(:mod:`securefl.ckks.tenseal_format`) into the ``SFCK`` wire format
(:mod:`securefl.ckks.wire`). An update also carries its contribution tag
(:mod:`securefl.ckks.contributions`). Decryption loads the aggregate's ciphertexts into
SEAL, floods them (:mod:`securefl.ckks.flooding`) and decrypts: no exact decryption leaves
this module. A client refuses an aggregate of fewer than ``min_contributors``
contributions, or one that does not sum the contributions it lists.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from securefl.ckks import contributions as tags
from securefl.ckks import flooding, protobuf, tenseal_format, wire
from securefl.ckks._backend import tenseal
from securefl.ckks.contributions import MIN_CONTRIBUTORS
from securefl.ckks.flooding import FLOOD_BITS
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
# The aggregate's weight slot decrypts to an integer plus CKKS noise and the flood (at
# most 1/32 standard deviation, flooding.MAX_SLOT_STD); anything farther than 8 of them
# is a wrong key or an overflowed sum.
_WEIGHT_TOLERANCE = tags.TAG_TOLERANCE


@dataclass(frozen=True, eq=False)
class DecryptedAggregate:
    """A decrypted aggregate.

    Parameters
    ----------
    weighted_sum:
        ``sum_k n_k x_k``, float64, one value per coordinate of the update, flooded.
    total_weight:
        ``sum_k n_k``.
    contributions:
        The number of contributions the aggregate sums, checked against their tags.
    """

    weighted_sum: npt.NDArray[np.float64]
    total_weight: int
    contributions: int = 0

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

    Notes
    -----
    The message names no contribution: :func:`decrypt_aggregate` refuses sums of such
    vectors. FedAvg updates come from :func:`encrypt_update`.
    """
    return _encrypt(context, values, encoding, None)


def _encrypt(
    context: ClientContext,
    values: npt.ArrayLike,
    encoding: wire.Encoding,
    nonce: bytes | None,
) -> bytes:
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
        info = tenseal_format.read_ciphertext_into(proto.ciphertexts[0], spec, coeffs[:, i])
        version = info.version
    assert version is not None
    listed: tuple[bytes, ...] = ()
    if nonce is not None:
        # c0 + T encrypts the values plus i * tag in slots 0..3 of the last ciphertext.
        plain = tags.tag_plaintext(context, tags.tag(tags.contribution_key(context), nonce))
        last = coeffs[:, chunks - 1, 0]
        for limb, q in enumerate(spec.moduli):
            modulus = np.uint64(q)
            last[limb] = (last[limb] + plain[limb]) % modulus  # both < q < 2^63: no overflow
        listed = (nonce,)
    encrypted = wire.EncryptedVector(
        version, spec.parms_id, spec.scale, int(vec.size), spec.widths, coeffs, listed
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
        The ``SFCK`` message holding ``n_k * x_k`` followed by ``n_k`` (length d + 1) and
        one contribution (a fresh nonce and its encrypted tag), and the layout that
        :func:`decrypt_mean` needs.

    Raises
    ------
    TypeError
        If ``weight`` is not an integer (bool included) or the update is not supported.
    ValueError
        If ``weight`` is out of range or the update is empty or not finite.

    Notes
    -----
    The aggregate decrypts correctly while ``|sum_k n_k x_k| * scale`` stays below half
    the data level's modulus (2^99 at FLARE's parameters, far beyond any model update).
    Each decrypted coordinate of the sum is within
    :func:`securefl.ckks.flooding.error_bound` (flood and CKKS noise: 1.3e-3 for 4
    contributions at those parameters), so the mean's error is that divided by
    ``sum_k n_k``.
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
    return _encrypt(context, values, encoding, tags.new_nonce()), layout


def _aggregate_vector(
    context: ClientContext, aggregate: bytes | bytearray | memoryview
) -> wire.EncryptedVector:
    if tenseal_format.is_tenseal(aggregate):
        return tenseal_format.from_tenseal(aggregate, context.spec)
    header = wire.read_header(aggregate)
    header.check(context.spec)
    return wire.decode(aggregate, header)


def decrypt_vector(
    context: ClientContext,
    aggregate: bytes | bytearray | memoryview,
    *,
    flood_bits: int = FLOOD_BITS,
) -> npt.NDArray[np.float64]:
    """Decrypt an ``SFCK`` message or TenSEAL vector into its float64 values, flooded.

    Parameters
    ----------
    context:
        The clients' context.
    aggregate:
        The vector.
    flood_bits:
        log2 of the decryption flood over the vector's noise
        (:mod:`securefl.ckks.flooding`); the flood assumes the vector sums as many
        encryptions as it lists contributions (one if it lists none).

    Raises
    ------
    InvalidMessage
        If the bytes are malformed, belong to another parameter set, or SEAL refuses to
        load a ciphertext (for example a coefficient >= q_l).
    ConfigError
        If ``flood_bits`` is out of range (:func:`securefl.ckks.flooding.flood_std`).

    Security
    --------
    No contribution count is checked: to decrypt an aggregate of updates use
    :func:`decrypt_aggregate` or :func:`decrypt_mean`.
    """
    vec = _aggregate_vector(context, aggregate)
    count = max(1, len(vec.contributions))
    return flooding.decrypt(context, vec, contributions=count, flood_bits=flood_bits).values


def decrypt_aggregate(
    context: ClientContext,
    aggregate: bytes | bytearray | memoryview,
    *,
    min_contributors: int = MIN_CONTRIBUTORS,
    flood_bits: int = FLOOD_BITS,
) -> DecryptedAggregate:
    """Decrypt the server's aggregate of :func:`encrypt_update` messages.

    Parameters
    ----------
    context:
        The clients' context (with the secret key).
    aggregate:
        The server's result, ``SFCK`` or TenSEAL format.
    min_contributors:
        The fewest contributions this client accepts in an aggregate (at least 2).
    flood_bits:
        log2 of the decryption flood over the aggregate's noise
        (:mod:`securefl.ckks.flooding`).

    Returns
    -------
    DecryptedAggregate
        The weighted sum, the total weight and the number of contributions.

    Raises
    ------
    TooFewContributors
        Naming the count and the minimum, if the aggregate lists fewer than
        ``min_contributors`` contributions (one client's ciphertext handed out as the
        aggregate, or a sum of vectors that name none); nothing is decrypted.
    InvalidMessage
        If the aggregate is malformed or of another parameter set.
    DecryptionError
        If the weight slot does not decrypt to an integer in [1, 2^46): the aggregate
        holds a ciphertext encrypted under another key, or the sum overflowed.
    UnverifiedAggregate
        If the decrypted contribution tags differ from those of the listed contributions:
        the server added, left out or repeated ciphertexts.
    ConfigError, TypeError
        If ``min_contributors`` is below 2 or not an int, or ``flood_bits`` is out of
        range.

    Security
    --------
    Every value is flooded before it is checked or returned (:mod:`securefl.ckks.flooding`).
    The contribution count is checked against tags only the key holders can make, not
    taken from the server's word; what the check cannot exclude is in
    :mod:`securefl.ckks.contributions`. Share the result only with parties entitled to
    the model.
    """
    minimum = tags.check_minimum(min_contributors)
    vec = _aggregate_vector(context, aggregate)
    listed = vec.contributions
    # A "sum" of one contribution is that client's update: refuse before decrypting.
    if len(listed) < minimum:
        raise tags.TooFewContributors(len(listed), minimum)
    plain = flooding.decrypt(context, vec, contributions=len(listed), flood_bits=flood_bits)
    values = plain.values
    if values.size < 2:
        raise InvalidMessage("an aggregate holds at least one value and the weight")
    total = float(values[-1])
    rounded = round(total) if math.isfinite(total) else 0
    if not 1 <= rounded < MAX_TOTAL_WEIGHT or abs(total - rounded) > _WEIGHT_TOLERANCE:
        raise DecryptionError("the aggregate does not decrypt to a valid total weight")
    expected = tags.expected_tags(tags.contribution_key(context), listed)
    # Any other combination of ciphertexts than each listed one once misses the tags.
    if not np.all(np.abs(plain.tag_slots - expected) <= tags.TAG_TOLERANCE):
        raise tags.UnverifiedAggregate(len(listed))
    return DecryptedAggregate(values[:-1], int(rounded), len(listed))


def decrypt_mean(
    context: ClientContext,
    aggregate: bytes | bytearray | memoryview,
    layout: Layout,
    *,
    min_contributors: int = MIN_CONTRIBUTORS,
    flood_bits: int = FLOOD_BITS,
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
    min_contributors, flood_bits:
        As :func:`decrypt_aggregate`.

    Returns
    -------
    Update
        ``sum_k n_k x_k / sum_k n_k``, shaped like the clients' updates (integer leaves
        rounded, see :func:`securefl.vectors.unflatten`), flooded: each coordinate within
        ``flooding.error_bound(spec, n, flood_bits) / sum_k n_k``.

    Raises
    ------
    TooFewContributors, UnverifiedAggregate, InvalidMessage, DecryptionError
        As :func:`decrypt_aggregate`.
    ValueError
        If the aggregate's length does not match the layout.
    """
    result = decrypt_aggregate(
        context, aggregate, min_contributors=min_contributors, flood_bits=flood_bits
    )
    if result.weighted_sum.size != layout.size:
        raise ValueError(
            f"the aggregate holds {result.weighted_sum.size} values, the layout {layout.size}"
        )
    return unflatten(result.mean, layout)
