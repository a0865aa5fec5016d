"""The client side of securefl inside Flower: a Mod around the user's train function.

A Flower ClientApp answers one message at a time and may run in a fresh process for
each message (a SuperNode's ``subprocess`` isolation, or another Ray actor in the
simulation engine); only the node's ``Context.state`` survives between messages. The
SecAgg+ client (Bonawitz et al. 2017, Bell et al. 2020) needs several exchanges per FL
round, so this mod keeps, in ``Context.state`` and nowhere else:

- a fresh 32-byte session seed from ``os.urandom``, the only source of the client's
  randomness for the session (AES-128-CTR keystream of a key HKDF-derived from it);
- the server messages received so far (public protocol messages, a few KiB).

For each new server message it rebuilds the :class:`SecAggClient` from the seed and
replays the earlier messages. The replay is deterministic, so the client re-derives
exactly the keys and shares it already sent, and reveals nothing new. As in Flower's
own SecAgg+ mod, the user's train function runs when the server's ShareRouting
arrives (MaskedInputCollection), with the global model carried by that message; the
update is used at once and never stored. Replaying ShareRouting in the Unmasking round
uses a zero update instead: the client's state after it (held shares, peers) does not
depend on the update, only the discarded masked vector does; it costs one extra
masked-vector computation, milliseconds. Every other replay uses a read-only zero
view of length d instead of a float vector (``SecAggClient``'s finiteness check still
makes a transient d-byte boolean array). The record is deleted when the session
completes or aborts, and replaced by the next session.

The mod refuses a session whose dimension d exceeds its ``max_dimension``: d is chosen
by the server, and the client allocates O(d) memory for the masked vector.

Security
--------
The session seed is equivalent to all of the client's protocol secrets. It lives in
``Context.state``, which Flower keeps on the client's node and never sends to the
server; in the simulation engine Ray moves it between worker processes of the same
machine. It never appears in a reply, a log line or a ``repr``.
"""

from __future__ import annotations

import os
from typing import NoReturn

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MessageType, RecordDict
from flwr.clientapp.typing import ClientAppCallable, Mod

from securefl import vectors
from securefl.errors import InvalidMessage
from securefl.primitives import keystream
from securefl.secagg import codec
from securefl.secagg.client import SecAggClient
from securefl.secagg.config import SecAggConfig
from securefl.secagg.messages import Abort, KeyDirectory, SessionStart, ShareRouting, Stage
from securefl.transports.flower.records import (
    NEXT_RECORD_KEY,
    RECORD_KEY,
    Envelope,
    read_envelope,
    read_weight,
    unpack_config,
    write_envelope,
)

__all__ = ["DEFAULT_MAX_DIMENSION", "ERROR_CODE", "STATE_KEY", "make_secagg_mod", "secagg_mod"]

STATE_KEY = "securefl.secagg"
"""Prefix of the keys of the client's session records in ``Context.state``."""

ERROR_CODE = 7301
"""Flower error code of a reply in which the mod declines or leaves a session."""

DEFAULT_MAX_DIMENSION = 2**28
"""The largest model (number of float parameters) the mod accepts by default: 1 GiB
of uint32 masked vector, 2 GiB with b = 64."""

_SEED_BYTES = 32
_RNG_LABEL = b"securefl/flower/client-session-rng/v1"


class _SessionRng:
    """``rng(n)``: the next n bytes of AES-128-CTR under a key derived from a seed.

    Two instances built from one seed return the same byte sequence for the same
    sequence of calls: that is what makes replaying a session reproduce it exactly.

    Security
    --------
    The seed must be fresh from ``os.urandom`` for every session and never leave the
    client's node; reusing it across sessions would reuse every key.
    """

    def __init__(self, seed: bytes) -> None:
        self._key = HKDF(algorithm=SHA256(), length=16, salt=None, info=_RNG_LABEL).derive(seed)
        self._offset = 0

    def __repr__(self) -> str:
        return "_SessionRng(<secret>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("_SessionRng holds a secret key and cannot be pickled")

    def __call__(self, n: int) -> bytes:
        block, skip = divmod(self._offset, 16)
        stream = keystream(self._key, skip + n, counter_block=block.to_bytes(16, "big"))
        self._offset += n
        return stream[skip:].tobytes()


def _error(msg: Message, reason: str) -> Message:
    return Message(Error(ERROR_CODE, f"securefl: {reason}"), reply_to=msg)


def _state_key(session: bytes) -> str:
    """Where a session's record lives in ``Context.state`` (two may overlap: this
    round's, finishing, and the next round's, advertising)."""
    return f"{STATE_KEY}/{session.hex()}"


def _single_array_record(content: RecordDict, who: str) -> ArrayRecord:
    records = list(content.array_records.values())
    if len(records) != 1:
        raise InvalidMessage(f"{who} must hold exactly one ArrayRecord, found {len(records)}")
    return records[0]


def _flat(record: ArrayRecord) -> tuple[npt.NDArray[np.float64], vectors.Layout]:
    flat, layout = vectors.flatten({key: array.numpy() for key, array in record.items()})
    return flat.astype(np.float64, copy=False), layout


class _Session:
    """The session record kept in ``Context.state`` (see the module docstring)."""

    def __init__(self, record: ConfigRecord) -> None:
        self.record = record

    @classmethod
    def create(cls, session: bytes, client_id: int, config: bytes) -> _Session:
        return cls(
            ConfigRecord(
                {
                    "session": session,
                    "seed": os.urandom(_SEED_BYTES),
                    "client-id": client_id,
                    "config": config,
                    "history": [],
                }
            )
        )

    @property
    def session(self) -> bytes:
        return self._bytes("session")

    @property
    def config(self) -> SecAggConfig:
        return unpack_config(self._bytes("config"))

    def _bytes(self, key: str) -> bytes:
        value = self.record[key]
        assert isinstance(value, bytes)
        return value

    def client(
        self,
        threads: int | None,
        update: npt.NDArray[np.floating] | None = None,
        weight: int = 1,
    ) -> SecAggClient:
        """Rebuild the client and replay the server messages it has already answered.

        ``update`` is needed only to answer ShareRouting; elsewhere a zero vector
        stands in (see the module docstring).

        Raises
        ------
        ValueError, MemoryError
            If the client cannot be built for the session's dimension.
        """
        config = self.config
        if update is None:
            # A read-only broadcast view: no 8d-byte zero vector per message; only a
            # replayed ShareRouting copies it to mask it (float32, the smaller dtype).
            update = np.broadcast_to(np.zeros(1, np.float32), (config.dimension,))
        client_id = self.record["client-id"]
        assert isinstance(client_id, int)
        client = SecAggClient(
            client_id, config, update, weight, rng=_SessionRng(self._bytes("seed")), threads=threads
        )
        history = self.record["history"]
        assert isinstance(history, list)
        for old in history:
            assert isinstance(old, bytes)
            client.handle(codec.decode(old))  # type: ignore[arg-type]
        return client

    def remember(self, message: bytes) -> None:
        history = self.record["history"]
        assert isinstance(history, list)
        self.record["history"] = [*history, message]


def make_secagg_mod(
    *,
    weight_key: str = "num-examples",
    min_threshold: int = 2,
    max_dimension: int = DEFAULT_MAX_DIMENSION,
    threads: int | None = None,
) -> Mod:
    """Build the client Mod that runs securefl's SecAgg / SecAgg+ for train messages.

    Add it to the ClientApp (``ClientApp(mods=[secagg_mod])``); the user's
    ``@app.train()`` function stays unchanged. When
    :class:`~securefl.transports.flower.SecAggFedAvg`'s message with the global model
    arrives (with the protocol's ShareRouting), the mod calls the train function,
    takes the returned ArrayRecord minus the global model (the update) and the
    ``weight_key`` metric (the weight, an integer), and masks them. The user's arrays
    and metrics are never sent: the server learns only the weighted mean of the
    updates of the clients that complete the session. Messages without securefl's
    record pass through untouched.

    Parameters
    ----------
    weight_key:
        The metric holding the client's integer FedAvg weight.
    min_threshold:
        The smallest Shamir threshold t the client accepts: a server asking for
        t = 1 would let any single neighbour rebuild this client's secrets.
    max_dimension:
        The largest dimension d (model parameters) the client accepts; set it to the
        size of the model this node trains where known. The client allocates O(d)
        memory, and d is the server's choice.
    threads:
        Threads for quantizing and masking (``None``: all cores).

    Returns
    -------
    Mod
        ``mod(message, context, call_next) -> reply``. Bad input from the server
        (malformed records or bytes, out-of-round or foreign-session messages, an
        unacceptable configuration) gets an error reply; it never raises. Errors
        raised by the user's train function propagate, as without the mod.

    Raises
    ------
    ValueError
        If ``max_dimension`` is below 1.
    """
    if max_dimension < 1:
        raise ValueError(f"max_dimension must be >= 1, got {max_dimension}")

    def secagg(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        records = msg.content.config_records
        if msg.metadata.message_type != MessageType.TRAIN or not (
            RECORD_KEY in records or NEXT_RECORD_KEY in records
        ):
            return call_next(msg, context)
        # The next round's envelope is handled last and never shown to the train function.
        upcoming = records.pop(NEXT_RECORD_KEY, None)
        reply, current = None, None
        if RECORD_KEY in records:
            reply, current = _current(msg, context, call_next)
            if reply.has_error():
                return reply  # a node that left this round does not go on to the next one
        if upcoming is None:
            assert reply is not None
            return reply
        answer = _step_or_error(
            RecordDict({NEXT_RECORD_KEY: upcoming}), context, NEXT_RECORD_KEY, current
        )
        if isinstance(answer, str):
            return reply if reply is not None else _error(msg, answer)
        if reply is None:
            reply = Message(RecordDict(), reply_to=msg)
        write_envelope(reply.content, answer, NEXT_RECORD_KEY)
        return reply

    def _current(
        msg: Message, context: Context, call_next: ClientAppCallable
    ) -> tuple[Message, bytes | None]:
        """Answer the envelope of the session in progress (or starting)."""
        try:
            envelope = read_envelope(msg.content)
            server_message = codec.decode(envelope.message)
        except InvalidMessage as exc:
            return _error(msg, f"malformed request: {exc}"), None
        if not isinstance(server_message, ShareRouting):
            answer = _step_or_error(msg.content, context, RECORD_KEY, None)
            if isinstance(answer, str):
                return _error(msg, answer), envelope.session
            content = RecordDict()
            write_envelope(content, answer)
            return Message(content, reply_to=msg), envelope.session
        session = _find(context, envelope.session)
        if isinstance(session, str):
            return _error(msg, session), envelope.session
        return _train_and_mask(msg, context, call_next, session, envelope.message), session.session

    def _step_or_error(
        content: RecordDict, context: Context, key: str, keep: bytes | None
    ) -> Envelope | str:
        """Answer the (non-training) protocol message under ``key``; a reason if not.

        ``keep``: the session whose envelope the same message also carries, which a
        ``SessionStart`` here must not discard.
        """
        try:
            envelope = read_envelope(content, key)
            server_message = codec.decode(envelope.message)
        except InvalidMessage as exc:
            return f"malformed request: {exc}"
        # The next round's session only sets up keys while this round's runs: it may
        # neither train nor unmask.
        if key == NEXT_RECORD_KEY and not isinstance(server_message, (SessionStart, KeyDirectory)):
            return "only a SessionStart or KeyDirectory may ride on another session's message"
        if isinstance(server_message, SessionStart):
            started = _start(context, envelope, keep)
            if isinstance(started, str):
                return started
            session = started
        elif isinstance(server_message, ShareRouting):
            return "a training request in the wrong place"
        else:
            found = _find(context, envelope.session)
            if isinstance(found, str):
                return found
            session = found
        return _step(context, session, envelope.message)

    def _find(context: Context, tag: bytes) -> _Session | str:
        record = context.state.config_records.get(_state_key(tag))
        if record is not None:
            return _Session(record)
        # A message of another (older or forged) session must not reach this one.
        if any(k.startswith(STATE_KEY + "/") for k in context.state.config_records):
            return "message for another session"
        return "no session in progress on this node"

    def _start(context: Context, envelope: Envelope, keep: bytes | None) -> _Session | str:
        # Reusing the running session's tag would overwrite that session's record.
        if envelope.session == keep:
            return "refused session: its tag is the running session's"
        # A new session replaces whatever unfinished ones left behind, except the
        # session whose Unmasking this same message carries.
        kept = None if keep is None else _state_key(keep)
        for k in [k for k in context.state.config_records if k.startswith(STATE_KEY + "/")]:
            if k != kept:
                del context.state.config_records[k]
        try:
            if envelope.client_id is None or envelope.config is None:
                raise InvalidMessage("SessionStart without client-id or config")
            config = unpack_config(envelope.config)
            if config.threshold < min_threshold:
                raise InvalidMessage(
                    f"threshold t={config.threshold} below this client's minimum {min_threshold}"
                )
            if config.authenticated:
                raise InvalidMessage("the Flower adapter has no identity keys (authenticated mode)")
            # A server-chosen huge d would exhaust the node's memory (denial of service).
            if config.dimension > max_dimension:
                raise InvalidMessage(
                    f"dimension d={config.dimension} above this client's maximum {max_dimension}"
                )
        except InvalidMessage as exc:
            return f"refused session: {exc}"
        return _Session.create(envelope.session, envelope.client_id, envelope.config)

    def _train_and_mask(
        msg: Message,
        context: Context,
        call_next: ClientAppCallable,
        session: _Session,
        payload: bytes,
    ) -> Message:
        try:
            ready = session.client(threads).stage is Stage.MASKED_INPUT_COLLECTION
        except (ValueError, MemoryError):
            ready = False
        if not ready:
            # An out-of-round ShareRouting must not trigger a training run (wasted work
            # the server could force at will): the client leaves without training.
            answer = _step(context, session, payload)
            return _error(msg, answer if isinstance(answer, str) else "training out of round")
        config = session.config
        try:
            global_flat, layout = _flat(_single_array_record(msg.content, "the train message"))
        except (InvalidMessage, TypeError, ValueError) as exc:
            return _error(msg, f"malformed train message: {exc}")
        del msg.content[RECORD_KEY]
        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        try:
            local_flat, local_layout = _flat(_single_array_record(reply.content, "the train reply"))
            if local_layout != layout:
                raise InvalidMessage("the trained arrays differ in names, shapes or dtypes")
            update = local_flat - global_flat
            if update.size != config.dimension:
                raise InvalidMessage(f"update has {update.size} values, the session expects d")
            if not np.all(np.isfinite(update)):
                raise InvalidMessage("the trained arrays contain NaN or infinity")
            weight = read_weight(reply.content, weight_key, config.max_weight)
        except (InvalidMessage, TypeError, ValueError) as exc:
            context.state.config_records.pop(_state_key(session.session), None)
            return _error(msg, f"cannot take part: {exc}")
        answer = _step(context, session, payload, update, weight)
        if isinstance(answer, str):
            return _error(msg, answer)
        content = RecordDict()
        write_envelope(content, answer)
        return Message(content, reply_to=msg)

    def _step(
        context: Context,
        session: _Session,
        payload: bytes,
        update: npt.NDArray[np.float64] | None = None,
        weight: int = 1,
    ) -> Envelope | str:
        """Rebuild the client, answer ``payload`` and save (or drop) the session."""
        server_message = codec.decode(payload)
        try:
            client = session.client(threads, update, weight)
            answer = client.handle(server_message)  # type: ignore[arg-type]
        except (ValueError, MemoryError) as exc:
            # The contract is an error reply, never an exception, whatever the server chose.
            context.state.config_records.pop(_state_key(session.session), None)
            return f"left the session: cannot run it on this node: {type(exc).__name__}"
        session.remember(payload)
        if client.stage in (Stage.COMPLETED, Stage.ABORTED):
            # Nothing more to answer: the seed leaves the node's state.
            context.state.config_records.pop(_state_key(session.session), None)
        else:
            context.state.config_records[_state_key(session.session)] = session.record
        if answer is None:
            if isinstance(server_message, Abort):
                return f"session aborted by the server: {server_message.reason}"
            return f"left the session: {client.abort_reason}"
        return Envelope(session.session, codec.encode(answer))

    return secagg


secagg_mod: Mod = make_secagg_mod()
"""The mod with default settings: weight from ``"num-examples"``, t >= 2."""
