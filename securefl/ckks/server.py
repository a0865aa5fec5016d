"""The server side of CKKS FedAvg: add clients' ciphertexts without any secret key.

CKKS ciphertexts are added coefficient-wise modulo each RNS prime q_l (SEAL's
``Evaluator::add``); for n fresh ciphertexts at the same level and scale the result is
``sum_k c_k mod q_l``, exactly what TenSEAL's ``+`` computes one pair at a time. The
:class:`Aggregator` does that sum in the native RNS kernel
(:func:`securefl.primitives.rns_sum`) directly on the serialized coefficients, streaming:
each client's message is validated and decoded into one scratch buffer and added into
one accumulator, so memory is O(one update + accumulator) whatever the number of clients.
Its result loads in TenSEAL and decrypts bit-identically to TenSEAL's own ``+`` over the
same inputs (``tests/ckks``).

Robustness: a message is checked completely -- structure, sizes, parameter set, level,
scale, SEAL version, contributions not already in the sum, and every coefficient below
its q_l -- before it touches the accumulator, so a rejected client leaves the honest
clients' sum unchanged. The result lists every contribution it sums, so that the clients
can check the count (:mod:`securefl.ckks.contributions`). A ciphertext
encrypted under *another key* with the same parameters is indistinguishable from a valid
one to a server without the secret key; it corrupts the sum, which the clients detect
when the weight slot does not decrypt to an integer
(:func:`securefl.ckks.client.decrypt_aggregate`).
"""

from __future__ import annotations

import os
import re
from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from securefl.ckks import protobuf, tenseal_format, wire
from securefl.ckks.keys import ServerContext
from securefl.errors import InvalidMessage, SecureFLError
from securefl.primitives import rns_sum

__all__ = ["Aggregator", "OutputFormat"]

OutputFormat: TypeAlias = Literal["packed", "raw", "tenseal"]
_POSITION = re.compile(r"at \[0\]\[(\d+)\]\[(\d+)\]")


class Aggregator:
    """Streaming sum of clients' encrypted updates for one round.

    Parameters
    ----------
    context:
        The server's context (parameters only).
    threads:
        Threads for the native sum and for unpacking; ``None`` uses every core.

    Notes
    -----
    Accepted inputs are ``SFCK`` messages (raw or packed, see :mod:`securefl.ckks.wire`)
    and, for compatibility with unmodified TenSEAL clients, ``CKKSVector.serialize()``
    output (whose zstd blobs are slower to read). The first accepted message fixes the
    vector length and SEAL version of the round. An aggregator serves one round and is not
    thread-safe: call :meth:`add` from one thread.

    Raises
    ------
    TypeError
        If ``context`` is not a :class:`ServerContext` (a client context, with its secret
        key, must never reach the server).
    """

    def __init__(self, context: ServerContext, *, threads: int | None = None) -> None:
        if not isinstance(context, ServerContext):
            raise TypeError(f"context must be a ServerContext, got {type(context).__name__}")
        self._spec = context.spec
        self._moduli = np.array(self._spec.moduli, dtype=np.uint64)
        self._threads = threads
        self._unpack_threads = threads or os.cpu_count() or 1
        self._acc: npt.NDArray[np.uint64] | None = None
        self._scratch: npt.NDArray[np.uint64] | None = None
        self._length = 0
        self._version: tuple[int, int] | None = None
        self._clients: list[str] = []
        self._contributions: set[bytes] = set()

    @property
    def clients(self) -> tuple[str, ...]:
        """The clients whose updates are in the sum, in order of arrival."""
        return tuple(self._clients)

    @property
    def contributions(self) -> int:
        """The number of contributions (tagged updates) in the sum."""
        return len(self._contributions)

    def _decode(self, message: bytes | bytearray | memoryview) -> wire.EncryptedVector:
        if tenseal_format.is_tenseal(message):
            length = sum(protobuf.decode_vector(message).sizes)
            if self._acc is not None and length != self._length:
                raise InvalidMessage(f"vector length {length}, the round's is {self._length}")
            vec = tenseal_format.from_tenseal(message, self._spec, out=self._scratch)
        else:
            header = wire.read_header(message)
            header.check(self._spec)
            if self._acc is not None and header.length != self._length:
                raise InvalidMessage(
                    f"vector length {header.length}, the round's is {self._length}"
                )
            vec = wire.decode(
                message,
                header,
                out=self._scratch if header.encoding == "packed" else None,
                threads=self._unpack_threads,
            )
        if self._acc is not None:
            if vec.length != self._length:
                raise InvalidMessage(f"vector length {vec.length}, the round's is {self._length}")
            if vec.seal_version != self._version:
                raise InvalidMessage(
                    f"SEAL version {vec.seal_version}, the round's is {self._version}"
                )
        return vec

    def add(self, client: str, message: bytes | bytearray | memoryview) -> None:
        """Validate one client's encrypted update and add it to the sum.

        Parameters
        ----------
        client:
            The client's identifier, used in error messages; each may contribute once.
        message:
            Its encrypted update.

        Raises
        ------
        InvalidMessage
            Naming the client, if the message is malformed or truncated, is of another
            parameter set or level, has another scale, length or SEAL version, has a
            coefficient >= its q_l, the client already contributed, a contribution it
            names is already in the sum (a replayed ciphertext), or the sum would name
            more than 2^16 contributions. The sum is then unchanged: drop the client or
            abort, as the protocol says.
        BackendUnavailable
            For a zstd-compressed TenSEAL message when no zstd decoder is available.
        """
        if client in self._clients:
            # Counting one client twice would skew the weighted mean.
            raise InvalidMessage(f"client {client!r}: already contributed to this round")
        try:
            vec = self._decode(message)
        except InvalidMessage as exc:
            raise InvalidMessage(f"client {client!r}: {exc}") from None
        # The same ciphertext twice would count (and weigh) one update twice.
        if any(nonce in self._contributions for nonce in vec.contributions):
            raise InvalidMessage(
                f"client {client!r}: a contribution it names is already in the sum "
                "(a replayed ciphertext)"
            )
        if len(self._contributions) + len(vec.contributions) > wire.MAX_CONTRIBUTIONS:
            raise InvalidMessage(
                f"client {client!r}: the sum would name more than {wire.MAX_CONTRIBUTIONS} "
                "contributions"
            )
        coeffs = vec.coeffs
        limbs, chunks, polys, n_deg = coeffs.shape
        flat = coeffs.reshape(1, limbs, chunks * polys * n_deg)
        if self._acc is None:
            acc = np.empty_like(flat)
            inputs = [flat]
        else:
            acc = self._acc.reshape(flat.shape)
            inputs = [acc, flat]
        try:
            # The kernel checks every input coefficient < q_l before writing the
            # accumulator: SEAL would refuse such a ciphertext, and the sum would be wrong.
            rns_sum(inputs, self._moduli, out=acc, threads=self._threads)
        except ValueError as exc:
            raise InvalidMessage(
                f"client {client!r}: {_coefficient_error(exc, polys, n_deg)}"
            ) from None
        if self._acc is None:
            self._acc = acc.reshape(coeffs.shape)
            self._length = vec.length
            self._version = vec.seal_version
        if self._scratch is None and coeffs.base is None:
            # A buffer we own (not a view of the message) is reused for later clients:
            # memory stays at one update plus the accumulator.
            self._scratch = coeffs
        self._clients.append(client)
        self._contributions.update(vec.contributions)

    def result(self, encoding: OutputFormat = "packed") -> bytes:
        """The aggregate ciphertext.

        Parameters
        ----------
        encoding:
            ``"packed"`` or ``"raw"`` for an ``SFCK`` message, ``"tenseal"`` for a
            ``CKKSVector`` serialization (uncompressed SEAL blobs) that
            ``tenseal.ckks_vector_from`` loads directly.

        Returns
        -------
        bytes
            The sum of every accepted client's ciphertexts, listing their contributions
            (in TenSEAL's format as securefl's protobuf field 15, which TenSEAL skips).

        Raises
        ------
        SecureFLError
            If no client has been accepted.
        ValueError
            For an unknown encoding.
        """
        if encoding not in ("packed", "raw", "tenseal"):
            raise ValueError(f"encoding must be 'packed', 'raw' or 'tenseal', got {encoding!r}")
        if self._acc is None or self._version is None:
            raise SecureFLError("no client update has been accepted")
        vec = wire.EncryptedVector(
            self._version,
            self._spec.parms_id,
            self._spec.scale,
            self._length,
            self._spec.widths,
            self._acc,
            tuple(sorted(self._contributions)),
        )
        if encoding == "tenseal":
            return tenseal_format.to_tenseal(vec)
        return wire.encode(vec, encoding, threads=self._unpack_threads)


def _coefficient_error(exc: ValueError, polys: int, n_deg: int) -> str:
    """Translate the kernel's [0][l][k] position into ciphertext, polynomial, index."""
    text = str(exc)
    match = _POSITION.search(text)
    if match is None:
        return text
    limb, flat = int(match.group(1)), int(match.group(2))
    chunk, rest = divmod(flat, polys * n_deg)
    poly, index = divmod(rest, n_deg)
    return (
        f"coefficient {index} of polynomial {poly} of ciphertext {chunk}, limb {limb}, "
        f"is not below q_{limb} ({text})"
    )
