"""CKKS FedAvg as NVIDIA FLARE runs it on TenSEAL: the baseline securefl's CKKS is measured against.

FLARE's homomorphic-encryption FedAvg uses TenSEAL end to end: each client encrypts its
weighted update ``n_k * x_k`` as one ``tenseal.ckks_vector`` and sends its
``serialize()`` bytes (SEAL blobs zstd-compressed, TenSEAL's default); the server loads
every vector and adds them with TenSEAL's ``+``, one at a time in Python, then serializes
the sum; the clients decrypt it and divide by the total weight. This module does exactly
that and nothing else, with securefl's weight slot (the weight rides after the update, as
in :func:`securefl.ckks.encrypt_update`) so that both protocols see the same values.
``securefl bench --compare tenseal`` (:mod:`securefl.bench.compare`) times
:func:`server_sum` against :class:`securefl.ckks.Aggregator` on the same ciphertexts.

It is a baseline, not a second protocol: it carries no contribution tags and floods no
decryption (:mod:`securefl.ckks.contributions`, :mod:`securefl.ckks.flooding`); use
:mod:`securefl.ckks` for federations.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt

from securefl.ckks._backend import tenseal
from securefl.ckks.keys import ClientContext, ServerContext

__all__ = ["decrypt_mean", "encrypt_update", "server_sum", "version"]


@contextlib.contextmanager
def _quiet_native_output() -> Iterator[None]:
    """Silence standard output and error: TenSEAL prints a warning about matmul being
    unavailable for every vector longer than one ciphertext, which is irrelevant here.

    TenSEAL writes it through Python's ``sys.stdout`` (pybind11's stream redirect), so the
    Python streams are swapped for a discarded buffer, which also holds under pytest's or
    a notebook's capture; file descriptors 1 and 2 go to ``/dev/null`` for whatever native
    code writes to them directly.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def version() -> str:
    """TenSEAL's version string.

    Raises
    ------
    BackendUnavailable
        If TenSEAL is not installed.
    """
    return str(tenseal().__version__)


def encrypt_update(context: ClientContext, update: npt.NDArray[np.floating], weight: int) -> bytes:
    """A FLARE client's upload: ``weight * update`` and ``weight`` as one TenSEAL vector.

    Parameters
    ----------
    context:
        The clients' context.
    update:
        1-D real update x_k.
    weight:
        The client's weight n_k.

    Returns
    -------
    bytes
        ``tenseal.ckks_vector(context.tenseal, values).serialize()`` of the d + 1 values
        ``n_k * x_k`` (in float64) followed by ``n_k``: TenSEAL's own chunking and zstd
        blobs, which :func:`securefl.ckks.tenseal_format.from_tenseal` reads.

    Raises
    ------
    BackendUnavailable
        If TenSEAL is not installed.

    Notes
    -----
    Standard output and error (Python's streams and file descriptors 1 and 2) are
    silenced while TenSEAL encrypts, to drop the warning it prints for every vector of
    more than one ciphertext; whatever another thread writes there meanwhile is lost too.
    """
    ts = tenseal()
    values = np.append(update.astype(np.float64) * weight, weight)
    with _quiet_native_output():
        data: bytes = ts.ckks_vector(context.tenseal, values).serialize()
    return data


def server_sum(context: ServerContext, messages: Sequence[bytes]) -> bytes:
    """A FLARE server's aggregation: load each vector and add it with TenSEAL's ``+``.

    Parameters
    ----------
    context:
        The server's context (no secret key).
    messages:
        At least one serialized TenSEAL vector, summed in this order.

    Returns
    -------
    bytes
        The serialized sum, as TenSEAL writes it.

    Raises
    ------
    ValueError
        If ``messages`` is empty, or TenSEAL refuses a vector (its own error).
    BackendUnavailable
        If TenSEAL is not installed.
    """
    if not messages:
        raise ValueError("server_sum needs at least one vector")
    ts = tenseal()
    total = ts.ckks_vector_from(context.tenseal, messages[0])
    for message in messages[1:]:
        total = total + ts.ckks_vector_from(context.tenseal, message)
    data: bytes = total.serialize()
    return data


def decrypt_mean(context: ClientContext, aggregate: bytes) -> npt.NDArray[np.float64]:
    """A FLARE client's last step: decrypt the sum and divide by its weight slot.

    Parameters
    ----------
    context:
        The clients' context (with the secret key).
    aggregate:
        :func:`server_sum`'s result over :func:`encrypt_update` vectors.

    Returns
    -------
    ndarray
        ``sum_k n_k x_k / sum_k n_k``, float64, within CKKS noise of the exact mean.

    Raises
    ------
    BackendUnavailable
        If TenSEAL is not installed.

    Security
    --------
    The decryption is exact, as TenSEAL's ``decrypt`` is: its low-order digits carry the
    ciphertext's noise, and whoever sees them and the ciphertext can recover the secret
    key (Li and Micciancio, EUROCRYPT 2021). Nothing here checks how many updates the sum
    holds either. Use it to measure, and :func:`securefl.ckks.decrypt_mean` (flooded,
    contribution-checked) for models that leave the clients.
    """
    ts = tenseal()
    values = np.asarray(ts.ckks_vector_from(context.tenseal, aggregate).decrypt(), np.float64)
    mean: npt.NDArray[np.float64] = values[:-1] / values[-1]
    return mean
