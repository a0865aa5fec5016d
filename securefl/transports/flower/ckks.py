"""CKKS-encrypted FedAvg inside Flower (docs/CKKS.md): the server adds ciphertexts and
never holds the global model in the clear after the first round.

Each FL round is one exchange. The server's train message carries the global model:
in the clear in round 1, afterwards the encrypted aggregate of the previous round (an
``ArrayRecord`` holding the ``SFCK`` bytes and the model's layout). The client mod
decrypts it with the clients' shared CKKS secret key into the weighted mean of the
previous round's trained models, hands that to the user's unchanged train function,
encrypts ``n_k * trained`` and ``n_k`` (:func:`securefl.ckks.encrypt_update`) and
replies with the ciphertext only. The strategy sums the ciphertexts with
:class:`securefl.ckks.Aggregator` and returns the sum, still encrypted, as the next
global "arrays". Evaluate messages are decrypted the same way before the user's
evaluate function sees them. A node that fails simply contributes nothing: there are
no masks to remove.

Key distribution is outside Flower: every client loads the same
:class:`~securefl.ckks.ClientContext` (with the secret key) from its own storage
through ``load_context``; the server gets only ``ClientContext.server_bytes()``.

Security
--------
Every client holds the one secret key: the server together with any one client can
decrypt every client's model (docs/CKKS.md, "Threat model"). The strategy only releases
an aggregate of at least ``min_contributors`` replies, each checked against the global
model's layout and length, and the client mod checks it again on its side: every
encrypted model carries contribution tags (:mod:`securefl.ckks.contributions`), and the
mod refuses, with an error reply naming the count and its own minimum, an aggregate that
sums fewer than ``min_contributors`` contributions or not the ones it lists -- so a
deviating server cannot hand one node's encrypted model out as the global model. What
the mod cannot check: that the contributions come from distinct nodes or from the last
round (a server can replay a node's contributions of earlier rounds), and anything a
server learns with the help of a node. Every decryption is flooded
(:mod:`securefl.ckks.flooding`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from securefl.ckks import (
    Aggregator,
    ClientContext,
    ServerContext,
    decrypt_mean,
    encrypt_update,
    protobuf,
    tenseal_format,
    wire,
)
from securefl.ckks.client import MAX_WEIGHT
from securefl.ckks.contributions import MIN_CONTRIBUTORS, check_minimum
from securefl.errors import DecryptionError, InvalidMessage, SecureFLError
from securefl.transports.flower.mod import ERROR_CODE
from securefl.transports.flower.records import read_weight
from securefl.vectors import Layout, flatten

__all__ = [
    "CKKS_RECORD_KEY",
    "CKKSFedAvg",
    "CKKSRoundReport",
    "context_from_file",
    "decrypt_arrays",
    "make_ckks_mod",
]

CKKS_RECORD_KEY = "securefl-ckks"
"""Key of the ConfigRecord of a CKKS round: ``version``, ``session`` (16 random bytes)
and, in a client's reply, ``update`` (``SFCK`` bytes) and ``layout``."""

AGGREGATE_KEY = "securefl-ckks-aggregate"
LAYOUT_KEY = "securefl-ckks-layout"
_FORMAT_VERSION = 1
_SESSION_BYTES = 16

ContextLoader = Callable[[Context], ClientContext]


def _u8(data: bytes) -> Array:
    return Array(np.frombuffer(data, dtype=np.uint8).copy())


def _is_encrypted(arrays: ArrayRecord) -> bool:
    return set(arrays.keys()) == {AGGREGATE_KEY, LAYOUT_KEY}


def _encrypted_parts(arrays: ArrayRecord) -> tuple[bytes, Layout]:
    """The aggregate and layout of an encrypted model record.

    Raises
    ------
    InvalidMessage
        If the record does not hold exactly a byte-array aggregate and a valid layout.
    """
    if not _is_encrypted(arrays):
        raise InvalidMessage("not an encrypted securefl model record")
    blob, layout = arrays[AGGREGATE_KEY].numpy(), arrays[LAYOUT_KEY].numpy()
    if blob.dtype != np.uint8 or layout.dtype != np.uint8:
        raise InvalidMessage("encrypted model record: expected uint8 arrays")
    try:
        return blob.tobytes(), Layout.from_bytes(layout.tobytes())
    except ValueError as exc:
        raise InvalidMessage(f"encrypted model record: bad layout: {exc}") from None


def _vector_length(message: bytes) -> int:
    """The number of values a client's encrypted vector holds (``SFCK`` or TenSEAL).

    Raises
    ------
    InvalidMessage
        If the bytes are malformed.
    """
    if tenseal_format.is_tenseal(message):
        return sum(protobuf.decode_vector(message).sizes)
    return wire.read_header(message).length


def _layout_of(arrays: ArrayRecord) -> Layout:
    """The layout of a global model record, encrypted or in the clear."""
    if _is_encrypted(arrays):
        return _encrypted_parts(arrays)[1]
    return flatten({k: a.numpy() for k, a in arrays.items()})[1]


def decrypt_arrays(
    context: ClientContext, arrays: ArrayRecord, *, min_contributors: int = MIN_CONTRIBUTORS
) -> ArrayRecord:
    """The plaintext model of an encrypted model record (a key holder's view).

    ``arrays`` in the clear is returned as it is.

    Parameters
    ----------
    context:
        The clients' CKKS context.
    arrays:
        The global model record.
    min_contributors:
        The fewest contributions an encrypted model may sum (at least 2).

    Raises
    ------
    TooFewContributors
        If the encrypted model sums fewer than ``min_contributors`` contributions
        (:class:`securefl.ckks.TooFewContributors`, an ``InvalidMessage``).
    InvalidMessage, DecryptionError
        If the record is malformed, does not sum the contributions it lists
        (:class:`securefl.ckks.UnverifiedAggregate`), or was not encrypted under
        ``context``'s key.

    Security
    --------
    The result is the global model, flooded (:mod:`securefl.ckks.flooding`): give it
    only to parties entitled to it.
    """
    if not _is_encrypted(arrays):
        return arrays
    blob, layout = _encrypted_parts(arrays)
    try:
        model = decrypt_mean(context, blob, layout, min_contributors=min_contributors)
    except InvalidMessage:
        raise
    except ValueError as exc:  # the aggregate's length does not match the layout
        raise InvalidMessage(str(exc)) from None
    assert isinstance(model, dict)
    return ArrayRecord({str(k): Array(np.asarray(v)) for k, v in model.items()})


def context_from_file(path: str | os.PathLike[str]) -> ContextLoader:
    """A ``load_context`` that reads ``ClientContext.to_bytes()`` from ``path`` on the
    node, for each message (the key never travels with the ClientApp)."""
    location = Path(path)

    def load(_: Context) -> ClientContext:
        return ClientContext.from_bytes(location.read_bytes())

    return load


def _error(msg: Message, reason: str) -> Message:
    return Message(Error(ERROR_CODE, f"securefl: {reason}"), reply_to=msg)


def make_ckks_mod(
    load_context: ContextLoader,
    *,
    weight_key: str = "num-examples",
    min_contributors: int = MIN_CONTRIBUTORS,
) -> Mod:
    """Build the client Mod for :class:`CKKSFedAvg`.

    Parameters
    ----------
    load_context:
        Returns this node's CKKS :class:`~securefl.ckks.ClientContext` (e.g.
        :func:`context_from_file`); every client of the federation uses the same key.
    weight_key:
        The train reply's metric holding the integer FedAvg weight.
    min_contributors:
        This node's policy: the fewest contributions an encrypted global model may sum
        (at least 2), checked against the contribution tags, not the server's word.

    Returns
    -------
    Mod
        Decrypts the global model of train and evaluate messages that carry securefl's
        CKKS record; after training, replies with the encrypted weighted model only.
        A malformed record, an aggregate under another key, or one of fewer than
        ``min_contributors`` contributions (or not of those it lists) gets an error reply
        that says why; the user's function never sees such a model.

    Raises
    ------
    ConfigError, TypeError
        If ``min_contributors`` is below 2 or not an int.

    Security
    --------
    The session tag is the server's: nothing binds a contribution to a round (see the
    module docstring).
    """
    minimum = check_minimum(min_contributors)

    def ckks(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        record = msg.content.config_records.get(CKKS_RECORD_KEY)
        kind = msg.metadata.message_type
        if record is None or kind not in (MessageType.TRAIN, MessageType.EVALUATE):
            return call_next(msg, context)
        session = record.get("session")
        if not isinstance(session, bytes) or len(session) != _SESSION_BYTES:
            return _error(msg, "malformed CKKS record")
        ctx = load_context(context)
        names = list(msg.content.array_records)
        if len(names) != 1:
            return _error(msg, "the message must hold exactly one ArrayRecord")
        try:
            msg.content[names[0]] = decrypt_arrays(
                ctx, msg.content.array_records[names[0]], min_contributors=minimum
            )
        except (InvalidMessage, DecryptionError) as exc:
            return _error(msg, f"cannot decrypt the global model: {exc}")
        del msg.content[CKKS_RECORD_KEY]
        reply = call_next(msg, context)
        if kind == MessageType.EVALUATE or reply.has_error():
            return reply
        try:
            trained = list(reply.content.array_records.values())
            if len(trained) != 1:
                raise InvalidMessage("the train reply must hold exactly one ArrayRecord")
            weight = read_weight(reply.content, weight_key, MAX_WEIGHT - 1)
            update, layout = encrypt_update(
                ctx, {k: a.numpy() for k, a in trained[0].items()}, weight
            )
        except (InvalidMessage, TypeError, ValueError) as exc:
            return _error(msg, f"cannot take part: {exc}")
        out = ConfigRecord(
            {
                "version": _FORMAT_VERSION,
                "session": session,
                "update": update,
                "layout": layout.to_bytes(),
            }
        )
        return Message(RecordDict({CKKS_RECORD_KEY: out}), reply_to=msg)

    return ckks


@dataclass
class CKKSRoundReport:
    """What the server saw in one CKKS round."""

    server_round: int
    contributors: tuple[int, ...] = ()
    rejections: list[tuple[int, str]] = field(default_factory=list)
    """(node id, reason) of every reply left out of the sum."""
    skipped: str | None = None
    """Why the round's sum was not released (the global model is kept), or ``None``."""


class CKKSFedAvg(FedAvg):
    """FedAvg over CKKS ciphertexts: the server adds, the clients decrypt.

    Use it with :func:`make_ckks_mod` on the clients. The ``arrays`` this strategy
    returns after a round (``Result.arrays``, the ``evaluate_fn`` argument) hold the
    encrypted model: only a key holder can read it (:func:`decrypt_arrays`), so
    server-side evaluation of the model is not possible. Train metrics are not sent.

    Parameters
    ----------
    server_context:
        ``ClientContext.server_bytes()`` or a :class:`~securefl.ckks.ServerContext`:
        the parameters without any key.
    min_contributors:
        The fewest accepted replies whose sum becomes the next global model (at least
        2). With fewer, the round is skipped and the global model kept: a "sum" of one
        reply is that node's trained model, which every client would decrypt next round.
    threads:
        Threads for the ciphertext sum (``None``: all cores).
    **fedavg:
        Passed to :class:`flwr.serverapp.strategy.FedAvg`.

    Raises
    ------
    ValueError
        If ``min_contributors`` is below 2.
    """

    def __init__(
        self,
        server_context: bytes | ServerContext,
        *,
        min_contributors: int = 2,
        threads: int | None = None,
        **fedavg: Any,
    ) -> None:
        if min_contributors < 2:
            raise ValueError(f"min_contributors must be >= 2, got {min_contributors}")
        super().__init__(**fedavg)
        self.min_contributors = min_contributors
        if isinstance(server_context, (bytes, bytearray, memoryview)):
            server_context = ServerContext.from_bytes(server_context)
        self.server_context = server_context
        self.threads = threads
        self.reports: list[CKKSRoundReport] = []
        self._session = b""
        self._layout: Layout | None = None

    def summary(self) -> None:
        """Log FedAvg's summary and the encryption setting."""
        super().summary()
        log(INFO, "\t└──> Secure aggregation: securefl CKKS (the server adds ciphertexts)")

    def _tagged(self, messages: Iterable[Message], fresh: bool) -> list[Message]:
        if fresh:
            self._session = os.urandom(_SESSION_BYTES)
        record = ConfigRecord({"version": _FORMAT_VERSION, "session": self._session})
        out = []
        for message in messages:
            message.content[CKKS_RECORD_KEY] = record
            out.append(message)
        return out

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's train messages, tagged for the CKKS mod (which decrypts ``arrays``)."""
        # Every reply of the round must have this layout: that of the global model.
        self._layout = _layout_of(arrays)
        return self._tagged(super().configure_train(server_round, arrays, config, grid), True)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's evaluate messages, tagged so that clients decrypt the model first."""
        messages = super().configure_evaluate(server_round, arrays, config, grid)
        return self._tagged(messages, False)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Sum the encrypted weighted models; return the sum, encrypted."""
        report = CKKSRoundReport(server_round)
        self.reports.append(report)
        aggregator = Aggregator(self.server_context, threads=self.threads)
        expected = self._layout
        if expected is None:
            raise RuntimeError("aggregate_train before configure_train")
        for reply in replies:
            node = reply.metadata.src_node_id
            try:
                if reply.has_error():
                    raise InvalidMessage(f"error reply: {reply.error.reason}")
                record = reply.content.config_records.get(CKKS_RECORD_KEY)
                if record is None or record.get("version") != _FORMAT_VERSION:
                    raise InvalidMessage("no CKKS record of a known version")
                # A reply of an earlier round must not enter this round's sum.
                if record.get("session") != self._session:
                    raise InvalidMessage("reply for another round")
                update, this_layout = record.get("update"), record.get("layout")
                if not isinstance(update, bytes) or not isinstance(this_layout, bytes):
                    raise InvalidMessage("update and layout must be bytes")
                # Adding vectors of another model would silently mix parameters.
                if Layout.from_bytes(this_layout) != expected:
                    raise InvalidMessage("the model layout differs from the global model's")
                # A vector of another length would misalign every value after it.
                length = _vector_length(update)
                if length != expected.size + 1:
                    raise InvalidMessage(
                        f"encrypted vector of {length} values, the model needs {expected.size + 1}"
                    )
                aggregator.add(str(node), update)
            except (SecureFLError, ValueError) as exc:
                report.rejections.append((node, str(exc)))
                continue
            report.contributors += (node,)
        for node, reason in report.rejections:
            log(WARNING, "securefl: CKKS reply of node %s left out: %s", node, reason)
        if len(report.contributors) < self.min_contributors:
            # A sum of one reply is that node's model: every client would decrypt it.
            report.skipped = (
                f"{len(report.contributors)} contributor(s), fewer than "
                f"min_contributors = {self.min_contributors}: the global model is kept"
            )
            log(WARNING, "securefl: CKKS round %s skipped: %s", server_round, report.skipped)
            return None, None
        layout = _u8(expected.to_bytes())
        arrays = ArrayRecord({AGGREGATE_KEY: _u8(aggregator.result()), LAYOUT_KEY: layout})
        metrics = MetricRecord({"securefl-contributors": len(report.contributors)})
        return arrays, metrics
