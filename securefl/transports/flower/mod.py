"""The client side of securefl inside Flower: a Mod around the user's train function.

A Flower ClientApp answers one message at a time and may run in a fresh process for
each message (a SuperNode's ``subprocess`` isolation, or another Ray actor in the
simulation engine); only the node's ``Context.state`` survives between messages. The
SecAgg+ client (Bonawitz et al. 2017, Bell et al. 2020) needs several exchanges per FL
round, so this mod keeps, in ``Context.state``, one record per session:

- a fresh 32-byte session seed from ``os.urandom``, the only source of the client's
  randomness for the session (AES-128-CTR keystream of a key HKDF-derived from it);
- the client id, the session's parameters and the server messages answered so far
  (public protocol messages, a few KiB).

That record is the session: from it alone a new process rebuilds the
:class:`SecAggClient` from the seed and replays the earlier messages. The replay is
deterministic, so the client re-derives exactly the keys and shares it already sent,
and reveals nothing new. The record is deleted when the session completes or aborts,
and replaced by the next session.

Within one process the record is not replayed for every message
(:class:`_DecodedSessions`, one per process and shared by every mod object, because
Flower may unpickle a new ClientApp for each message). It keeps, by a hash of the
seed, each session's configuration and messages, each decoded once, and the client
they built; on each message it checks that the record is the one it knows, or
extends it (another process answered the messages in between: those it decodes and
handles once), and answers with the live client. Each incoming message is decoded
once, and the check that keeps a server from forcing a training run out of round (is
the client at MaskedInputCollection?) reads the live client's stage.

As in Flower's own SecAgg+ mod, the user's train function runs when the server's
ShareRouting arrives (MaskedInputCollection), with the global model carried by that
message; the update is used at once and never stored. ``SecAggClient`` takes its
update when it is built, so ShareRouting is answered by a second client built with the
update, which handles SessionStart and KeyDirectory again (from the decoded messages:
key agreements, Shamir shares and share encryption for its neighbours, no masking)
and then masks; it lets go of its input once it has masked it, and is the stored
client from then on. Until then the stored client has no input: a read-only zero view
of length d stands in, not a d-sized vector. So per node and FL round one process
builds two clients, makes six ``handle`` calls (two of them repeats) and computes one
masked vector; replaying the record for every message built five clients, made twelve
calls (eight repeats), computed two masked vectors and decoded 18 or 19 messages
instead of four (``tests/flower/test_decode_once.py``). A process that sees a session
for the first time replays its record once, with the zero view: a replayed ShareRouting
costs one masked-vector computation, whose result is discarded (the client's state
after it, its held shares and peers, does not depend on the update). A client that
took its input at ShareRouting would need no second client.

The ServerApp chooses the session's parameters; the client checks them against its
own :class:`ClientPolicy` (threshold, corruption rate and security level, the rule
against a server that lies about dropouts, dimension, differential privacy, minimum
survivors) before it does any work, and refuses a session below it with an error
reply that names the parameter, the server's value and its own.

With a DP plan in the policy (``ClientPolicy(dp=plan)``) the mod encodes the update
with :func:`securefl.dp.encode_update` (L2 clip, weight, rotation, rounding and this
client's share of the noise, inside Z_2^b) and takes part in the server's ring-input
session; the rotation's public round seed is the session's SessionStart nonce.

Security
--------
The session seed is equivalent to all of the client's protocol secrets. It lives in
``Context.state``, which Flower keeps on the client's node and never sends to the
server; in the simulation engine Ray moves it between worker processes of the same
machine. It never appears in a reply or a log line. In ``Context.state`` it is held
as :class:`_SecretBytes`, whose ``repr``/``str`` show no byte of it, so Flower's own
``repr(Context)`` does not print it; Flower's protobuf form of a Context (a SuperNode
hands the Context to its ClientApp process that way) knows only plain ``bytes``, so
the mod re-wraps the seed on every message before anything else sees the Context
(docs/FLOWER.md, "Client state between messages", says what this does not cover).

Between messages a process also keeps, for each session in progress that it has seen
(at most :data:`_CACHED_SESSIONS`), the live client: the keys derived from the seed and
the shares it received, never the update (the client drops it once it is masked;
``tests/flower/test_decode_once.py`` checks that it is freed). The entry goes when
the session completes or aborts, when the client leaves it, or when a new SessionStart
replaces it; a process that exits (``subprocess`` isolation) takes it along. Nothing
of it can be pickled (the cache, its entries, ``SecAggClient`` and the generator
refuse), and no ``repr`` shows a secret.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import numpy.typing as npt
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MessageType, RecordDict
from flwr.clientapp.typing import ClientAppCallable, Mod

from securefl import vectors
from securefl.encoding import RingInput
from securefl.errors import ConfigError, InvalidMessage
from securefl.primitives.kdf import derive
from securefl.primitives.keystream_rng import KeystreamRng
from securefl.secagg import codec
from securefl.secagg.client import SecAggClient
from securefl.secagg.config import GraphKind, SecAggConfig
from securefl.secagg.messages import (
    Abort,
    ClientMessage,
    KeyDirectory,
    ServerMessage,
    SessionStart,
    ShareRouting,
    Stage,
)
from securefl.secagg.parameters import ThreatModel
from securefl.transports.flower.records import (
    NEXT_RECORD_KEY,
    RECORD_KEY,
    Envelope,
    dp_mismatch,
    read_envelope,
    read_weight,
    unpack_config,
    write_envelope,
)

if TYPE_CHECKING:
    from securefl.dp import DPPlan

__all__ = [
    "DEFAULT_MAX_DIMENSION",
    "ERROR_CODE",
    "STATE_KEY",
    "ClientPolicy",
    "make_secagg_mod",
    "secagg_mod",
]

STATE_KEY = "securefl.secagg"
"""Prefix of the keys of the client's session records in ``Context.state``."""

ERROR_CODE = 7301
"""Flower error code of a reply in which the mod declines or leaves a session."""

DEFAULT_MAX_DIMENSION = 2**28
"""``ClientPolicy.max_dimension``'s default: the largest model (number of float
parameters) the mod accepts: 1 GiB of uint32 masked vector, 2 GiB with b = 64."""

_SEED_BYTES = 32
_RNG_LABEL = b"securefl/flower/client-session-rng/v1"

_WireMessage = ServerMessage | ClientMessage
"""What ``codec.decode`` returns. A client's message sent by the server is not refused
as malformed: the client answers it by aborting, as any message out of round."""


@dataclass(frozen=True)
class ClientPolicy:
    """What this client accepts from a ServerApp: checked against the parameters of
    every ``SessionStart`` before the client does any work.

    The ServerApp chooses the session (``SecAggFedAvg``'s rates or ``config_factory``);
    without a local policy a deviating ServerApp could choose whatever suits it and
    the client would only check a digest the server itself sent. A session below the
    policy gets an error reply naming the parameter, the server's value and the
    client's (``tests/flower/test_policy.py``). The configuration must also satisfy
    :class:`~securefl.secagg.config.SecAggConfig`'s own rules (t >= 2, t > c), which
    :meth:`SecAggConfig.from_bytes` checks again on the client.

    Parameters
    ----------
    min_threshold:
        The smallest Shamir threshold t accepted (at least 2: with t = 1 any single
        neighbour holds this client's secrets outright).
    min_corruption_rate:
        The smallest corruption rate gamma accepted: the fraction of clients this
        client assumes may collude with the server. A session's threshold rules
        (t > c, and 2t > k + c below) are computed from its own ``corruption_rate``,
        so a server that claims a lower one lowers the threshold it must use. The
        default, 0.1, is ``SecAggFedAvg``'s default.
    min_security_bits:
        The smallest sigma accepted for SecAgg+ graphs: c, the corrupt neighbours
        tolerated, is a tail bound that fails with probability 2^-sigma, and a
        smaller sigma gives a smaller c (ignored on the complete graph, where c is
        exact).
    threat_model:
        ``ThreatModel.SEMI_MALICIOUS`` (default): the server may lie about which
        clients dropped out, to collect the self-mask shares of a client from some
        neighbours and its key shares from others; the client then requires
        2t > k + c, the rule under which that never yields t shares of both kinds
        (Bonawitz et al. 2017, section 6; Bell et al. 2020). ``SEMI_HONEST``: the
        server reports dropouts truthfully; t > c suffices. Without identity keys
        nothing stops a server from impersonating clients (see ``docs/FLOWER.md``).
    max_dimension:
        The largest vector length d accepted (model parameters; with DP the padded
        length). The client allocates O(d) memory for the masked vector, and d is
        the server's choice: set it to the size of the model this node trains.
    dp:
        A :class:`securefl.dp.DPPlan`: this client takes part only in differentially
        private sessions with exactly this plan (same digest, sent by the strategy)
        and encodes its update with it, adding its share of the noise inside the
        ring. ``None``: this client refuses DP (ring-input) sessions, whose updates
        it could not encode.
    min_survivors:
        The fewest clients whose inputs the session may unmask as one sum: the
        session's ``min_survivors`` must be at least this. With ``dp`` it defaults
        to, and may not be below, the plan's n_min (a smaller sum carries less noise
        than the plan promises).

    Raises
    ------
    ConfigError
        If a value is out of range (also a ``ValueError``).

    Notes
    -----
    Authenticated mode is always refused: it needs enrolled Ed25519 identity keys,
    which the Flower adapter does not provision, so there is no setting for it.
    """

    min_threshold: int = 2
    min_corruption_rate: float = 0.1
    min_security_bits: int = 40
    threat_model: ThreatModel = ThreatModel.SEMI_MALICIOUS
    max_dimension: int = DEFAULT_MAX_DIMENSION
    dp: DPPlan | None = None
    min_survivors: int | None = None

    def __post_init__(self) -> None:
        def integer(name: str, value: object, low: int, high: int | None = None) -> None:
            # bool is an int: True would silently mean 1.
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"ClientPolicy.{name} must be an integer, got {value!r}")
            if value < low or (high is not None and value > high):
                top = "" if high is None else f", <= {high}"
                raise ConfigError(f"ClientPolicy.{name} must be >= {low}{top}, got {value}")

        integer("min_threshold", self.min_threshold, 2)
        integer("min_security_bits", self.min_security_bits, 1, 256)
        integer("max_dimension", self.max_dimension, 1)
        rate = self.min_corruption_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ConfigError(f"ClientPolicy.min_corruption_rate must be in [0, 1), got {rate!r}")
        if not isinstance(self.threat_model, ThreatModel):
            raise ConfigError(
                f"ClientPolicy.threat_model must be a ThreatModel, got {self.threat_model!r}"
            )
        if self.dp is not None:
            from securefl.dp import DPPlan  # only with DP: it loads the accountant

            if not isinstance(self.dp, DPPlan):
                raise ConfigError(
                    f"ClientPolicy.dp must be a securefl.dp.DPPlan, got {type(self.dp).__name__}"
                )
        if self.min_survivors is not None:
            integer("min_survivors", self.min_survivors, 1)
            if self.dp is not None and self.min_survivors < self.dp.config.min_survivors:
                raise ConfigError(
                    f"ClientPolicy.min_survivors={self.min_survivors} is below the DP plan's "
                    f"n_min={self.dp.config.min_survivors}: a sum of fewer survivors would "
                    "carry less noise than the plan promises"
                )

    @property
    def survivors_floor(self) -> int | None:
        """The smallest ``min_survivors`` a session must carry (``None``: no floor)."""
        floors = [] if self.min_survivors is None else [self.min_survivors]
        if self.dp is not None:
            floors.append(self.dp.config.min_survivors)
        return max(floors) if floors else None

    def refusal(self, config: SecAggConfig, dp_digest: bytes | None) -> str | None:
        """Why this client refuses ``config`` (``None``: it accepts it).

        ``dp_digest`` is the plan digest that came with the SessionStart. The reason
        names the parameter with the server's and this client's values.
        """
        if config.authenticated:
            return (
                "authenticated: the server asks for authenticated mode, which needs enrolled "
                "identity keys; the Flower adapter provisions none"
            )
        if config.threshold < self.min_threshold:
            return (
                f"threshold: the server's t={config.threshold}, this client's minimum "
                f"t={self.min_threshold} (min_threshold)"
            )
        if config.corruption_rate < self.min_corruption_rate:
            return (
                f"corruption_rate: the server's {config.corruption_rate!r}, this client's "
                f"minimum {self.min_corruption_rate!r} (min_corruption_rate)"
            )
        if config.graph is GraphKind.HARARY and config.security_bits < self.min_security_bits:
            return (
                f"security_bits: the server's sigma={config.security_bits}, this client's "
                f"minimum sigma={self.min_security_bits} (min_security_bits)"
            )
        if self.threat_model is ThreatModel.SEMI_MALICIOUS:
            # A server that lies about dropouts collects one kind of share from each
            # honest neighbour and both from the corrupt ones: 2t > k + c blocks it.
            k, c = config.neighbourhood_size, config.tolerated_corrupt_neighbours
            needed = SecAggConfig.smallest_threshold(
                config.num_clients,
                graph=config.graph,
                degree=config.degree,
                authenticated=True,
                corruption_rate=config.corruption_rate,
                security_bits=config.security_bits,
            )
            if config.threshold < needed:
                return (
                    f"threshold: the server's t={config.threshold}, this client needs "
                    f"t >= {needed} against a server that lies about dropouts (2t > k + c "
                    f"with k={k}, c={c}; threat_model=semi-malicious)"
                )
        if config.dimension > self.max_dimension:
            return (
                f"dimension: the server's d={config.dimension}, this client's maximum "
                f"{self.max_dimension} (max_dimension)"
            )
        reason = self._dp_refusal(config, dp_digest)
        if reason is not None:
            return reason
        floor = self.survivors_floor
        if floor is not None and (config.min_survivors or 0) < floor:
            return (
                f"min_survivors: the server's {config.min_survivors}, this client's minimum {floor}"
            )
        if self.dp is not None:
            mismatch = dp_mismatch(config, self.dp)
            if mismatch is not None:
                return f"dp: {mismatch}"
        return None

    def _dp_refusal(self, config: SecAggConfig, dp_digest: bytes | None) -> str | None:
        """DP is all or nothing, and the plan must be this client's own."""
        plan = self.dp
        if plan is None:
            if config.ring_input or dp_digest is not None:
                return (
                    "dp: the server's session is differentially private (ring_input), "
                    "this client has no DP plan (ClientPolicy.dp) to encode its update with"
                )
            return None
        if not config.ring_input:
            return (
                "dp: this client requires differential privacy (ClientPolicy.dp), the "
                "server's session has none (ring_input=False)"
            )
        ours = plan.digest()
        if dp_digest != ours:
            theirs = "none" if dp_digest is None else dp_digest.hex()[:16]
            return (
                f"dp-plan: the server's plan digest {theirs}, this client's "
                f"{ours.hex()[:16]} (the plans differ in noise, scale, rotation or rounds)"
            )
        return None


DEFAULT_POLICY = ClientPolicy()
"""The policy of :data:`secagg_mod`."""


_CACHED_SESSIONS = 64
"""How many sessions' decoded state one process keeps (:class:`_DecodedSessions`)."""


class _SecretBytes(bytes):
    """Bytes whose ``repr`` and ``str`` show no byte of the value.

    Flower's ``repr(Context)`` prints every value of ``Context.state``; a session seed
    stored as this type prints as ``<secret: 32 bytes>``. It pickles as itself (Ray
    moves Contexts between processes by pickle), but Flower's protobuf form keeps
    only the bytes: the mod re-wraps on every message (:func:`_redact_state`).
    """

    def __repr__(self) -> str:
        return f"<secret: {len(self)} bytes>"

    __str__ = __repr__


def _redact_state(context: Context) -> None:
    """Re-wrap every session seed in ``context.state`` as :class:`_SecretBytes`."""
    for key, record in context.state.config_records.items():
        if key.startswith(STATE_KEY + "/"):
            seed = record.get("seed")
            if isinstance(seed, bytes) and type(seed) is not _SecretBytes:
                record["seed"] = _SecretBytes(seed)


def _session_rng(seed: bytes) -> KeystreamRng:
    """``rng(n)``: the next n bytes of the AES-128-CTR keystream, from counter block 0,
    under a key HKDF-SHA256-derived from ``seed`` (no salt, info ``_RNG_LABEL``).

    Two generators from one seed return the same bytes for the same sequence of
    reads, however the reads are split: that is what makes a client rebuilt from the
    session record reproduce the session exactly.

    Security
    --------
    The seed must be fresh from ``os.urandom`` for every session and never leave the
    client's node; reusing it across sessions would reuse every key. The generator
    refuses pickling and shows no key in its ``repr``.
    """
    return KeystreamRng(derive(seed, session=None, purpose=_RNG_LABEL, length=16))


def _fingerprint(seed: bytes) -> bytes:
    """The cache key of a session: a hash of its seed, so the cache's keys are no secret."""
    return hashlib.blake2b(seed, digest_size=16, person=b"securefl/cache").digest()


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


def _read(content: RecordDict, key: str) -> tuple[Envelope, _WireMessage] | str:
    """The envelope under ``key`` and its protocol message, decoded (the only decode of
    an incoming message); a reason if either is malformed."""
    try:
        envelope = read_envelope(content, key)
        return envelope, codec.decode(envelope.message)
    except InvalidMessage as exc:
        return f"malformed request: {exc}"


class _Session:
    """The session record kept in ``Context.state``: the durable part, the only one
    that reaches another process (see the module docstring)."""

    def __init__(self, record: ConfigRecord) -> None:
        self.record = record

    @classmethod
    def create(cls, session: bytes, client_id: int, config: bytes) -> _Session:
        return cls(
            ConfigRecord(
                {
                    "session": session,
                    "seed": _SecretBytes(os.urandom(_SEED_BYTES)),
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
    def seed(self) -> bytes:
        return self._bytes("seed")

    @property
    def config_bytes(self) -> bytes:
        return self._bytes("config")

    @property
    def client_id(self) -> int:
        client_id = self.record["client-id"]
        assert isinstance(client_id, int)
        return client_id

    @property
    def history(self) -> list[bytes]:
        """The server messages answered so far, as received."""
        history = self.record["history"]
        assert isinstance(history, list) and all(isinstance(m, bytes) for m in history)
        return history  # type: ignore[return-value]

    def _bytes(self, key: str) -> bytes:
        value = self.record[key]
        assert isinstance(value, bytes)
        return value

    def remember(self, message: bytes) -> None:
        self.record["history"] = [*self.history, message]


class _Decoded:
    """What this process has made of one session record: its configuration and
    server messages, each decoded once, and the client rebuilt from them.

    Until ShareRouting the stored client has no input: a read-only zero view of length
    d stands in for the update (``SecAggClient`` takes the update when it is built,
    and the mod has one only while answering ShareRouting; see the module docstring).
    The client with the update that answers ShareRouting is stored in its place: it
    has let go of the update once it has masked it.

    Security
    --------
    The client holds the session's keys and the shares it received: this object is
    never pickled and its ``repr`` shows none of them.
    """

    def __init__(self, session: _Session, threads: int | None) -> None:
        self.key = _fingerprint(session.seed)
        self.session = session.session
        self.client_id = session.client_id
        self.config_bytes = session.config_bytes
        self.config = unpack_config(self.config_bytes)
        self.threads = threads
        self.payloads: list[bytes] = []
        self.messages: list[_WireMessage] = []
        self._client: SecAggClient | None = None
        self._handled = 0

    def __repr__(self) -> str:
        return f"_Decoded(session={self.session.hex()}, messages={len(self.messages)})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a decoded session holds secret keys and cannot be pickled")

    def extends(self, session: _Session, threads: int | None) -> bool:
        """Whether ``session``'s record is this one's, answered as far or further."""
        history = session.history
        return (
            (self.session, self.client_id, self.config_bytes, self.threads)
            == (session.session, session.client_id, session.config_bytes, threads)
            and len(history) >= len(self.payloads)
            and history[: len(self.payloads)] == self.payloads
        )

    def learn(self, history: list[bytes]) -> None:
        """Decode the messages of ``history`` (the record's) not decoded yet."""
        for payload in history[len(self.payloads) :]:
            self.messages.append(codec.decode(payload))
            self.payloads.append(payload)

    @property
    def nonce(self) -> bytes:
        """The SessionStart's nonce: public, fresh per session; DP's round seed."""
        start = self.messages[0]
        assert isinstance(start, SessionStart)
        return start.nonce

    def client(self, seed: bytes) -> SecAggClient:
        """The stored client, brought up to date with every decoded message (built
        without input and replayed, in a process new to the session).

        Raises
        ------
        ValueError, MemoryError
            If the client cannot be built for the session's dimension.
        """
        if self._client is None:
            self._client, self._handled = self._build(seed), 0
        for message in self.messages[self._handled :]:
            self._client.handle(message)  # type: ignore[arg-type]
            self._handled += 1
        return self._client

    def client_with_input(
        self, seed: bytes, update: RingInput | npt.NDArray[Any], weight: int
    ) -> SecAggClient:
        """A new client with the real ``update`` and ``weight``, at the stored
        client's stage: it handles the decoded messages again (the one replay of a
        session in a process).

        Raises
        ------
        ValueError, MemoryError
            If the client cannot be built for the session's dimension.
        """
        client = self._build(seed, update, weight)
        for message in self.messages:
            client.handle(message)  # type: ignore[arg-type]
        return client

    def answered(self, payload: bytes, message: _WireMessage, client: SecAggClient) -> None:
        """Record ``message`` as answered by ``client``, which is stored from now on."""
        self.payloads.append(payload)
        self.messages.append(message)
        self._client, self._handled = client, len(self.messages)

    def _build(
        self, seed: bytes, update: RingInput | npt.NDArray[Any] | None = None, weight: int = 1
    ) -> SecAggClient:
        config = self.config
        if update is None:
            # A read-only broadcast view: no 8d-byte zero vector; only a ShareRouting
            # replayed in a new process encodes it to mask it (float32, the smaller
            # dtype; in a ring-input session the ring's own dtype, used as it is).
            dtype = config.fixed_point.dtype if config.ring_input else np.float32
            update = np.broadcast_to(np.zeros(1, dtype), (config.dimension,))
        return SecAggClient(
            self.client_id,
            config,
            update,
            weight,
            rng=_session_rng(seed),
            threads=self.threads,
        )


class _DecodedSessions:
    """This process's :class:`_Decoded` sessions, by :func:`_fingerprint` of their
    seed: at most ``size``, the least recently used forgotten first (a forgotten
    session is rebuilt from its record, as in a new process).

    An entry is taken out while a message is handled and put back only once the
    record in ``Context.state`` says the same, so an error half-way leaves no entry
    ahead of its record.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[bytes, _Decoded] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<{len(self._entries)} decoded securefl sessions>"

    def __reduce__(self) -> NoReturn:
        raise TypeError("decoded sessions hold secret keys and cannot be pickled")

    def take(self, session: _Session, threads: int | None) -> _Decoded:
        """``session``'s decoded state, caught up with its record, out of the cache."""
        with self._lock:
            decoded = self._entries.pop(_fingerprint(session.seed), None)
        if decoded is None or not decoded.extends(session, threads):
            decoded = _Decoded(session, threads)
        decoded.learn(session.history)
        return decoded

    def put(self, decoded: _Decoded) -> None:
        with self._lock:
            self._entries[decoded.key] = decoded
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def forget(self, seed: object) -> None:
        """Drop the entry of a session whose record is deleted."""
        if isinstance(seed, bytes):
            with self._lock:
                self._entries.pop(_fingerprint(seed), None)

    def clear(self) -> None:
        """Forget every session: what a new process knows (nothing but the records)."""
        with self._lock:
            self._entries.clear()


_DECODED = _DecodedSessions(_CACHED_SESSIONS)
"""One per process, shared by every mod object: Flower may unpickle a new copy of
the ClientApp, and so of its mods, for each message (Ray's simulation does)."""


class _SecAggMod:
    """The Mod :func:`make_secagg_mod` builds: ``mod(message, context, call_next)``.

    It holds only its settings (it pickles as them); what it knows of sessions is
    in ``Context.state`` and in this process's :data:`_DECODED`.
    """

    def __init__(self, policy: ClientPolicy, weight_key: str, threads: int | None) -> None:
        self._policy = policy
        self._weight_key = weight_key
        self._threads = threads

    def __repr__(self) -> str:
        return (
            f"secagg_mod(policy={self._policy!r}, weight_key={self._weight_key!r}, "
            f"threads={self._threads!r})"
        )

    def __call__(self, msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        # First, before any other code (the user's functions included) sees the Context.
        _redact_state(context)
        records = msg.content.config_records
        if msg.metadata.message_type != MessageType.TRAIN or not (
            RECORD_KEY in records or NEXT_RECORD_KEY in records
        ):
            return call_next(msg, context)
        # The next round's envelope is handled last and never shown to the train function.
        upcoming = records.pop(NEXT_RECORD_KEY, None)
        reply, current = None, None
        if RECORD_KEY in records:
            reply, current = self._current(msg, context, call_next)
            if reply.has_error():
                return reply  # a node that left this round does not go on to the next one
        if upcoming is None:
            assert reply is not None
            return reply
        answer = self._next(RecordDict({NEXT_RECORD_KEY: upcoming}), context, current)
        if isinstance(answer, str):
            return reply if reply is not None else _error(msg, answer)
        if reply is None:
            reply = Message(RecordDict(), reply_to=msg)
        write_envelope(reply.content, answer, NEXT_RECORD_KEY)
        return reply

    def _current(
        self, msg: Message, context: Context, call_next: ClientAppCallable
    ) -> tuple[Message, bytes | None]:
        """Answer the envelope of the session in progress (or starting)."""
        read = _read(msg.content, RECORD_KEY)
        if isinstance(read, str):
            return _error(msg, read), None
        envelope, server_message = read
        if not isinstance(server_message, ShareRouting):
            answer = self._answer(context, envelope, server_message, None)
            if isinstance(answer, str):
                return _error(msg, answer), envelope.session
            content = RecordDict()
            write_envelope(content, answer)
            return Message(content, reply_to=msg), envelope.session
        session = self._find(context, envelope.session)
        if isinstance(session, str):
            return _error(msg, session), envelope.session
        reply = self._train_and_mask(
            msg, context, call_next, session, server_message, envelope.message
        )
        return reply, session.session

    def _next(self, content: RecordDict, context: Context, keep: bytes | None) -> Envelope | str:
        """Answer the next round's envelope; a reason if not.

        ``keep``: the session whose envelope the same message also carries, which a
        ``SessionStart`` here must not discard.
        """
        read = _read(content, NEXT_RECORD_KEY)
        if isinstance(read, str):
            return read
        envelope, server_message = read
        # The next round's session only sets up keys while this round's runs: it may
        # neither train nor unmask.
        if not isinstance(server_message, (SessionStart, KeyDirectory)):
            return "only a SessionStart or KeyDirectory may ride on another session's message"
        return self._answer(context, envelope, server_message, keep)

    def _answer(
        self, context: Context, envelope: Envelope, server_message: _WireMessage, keep: bytes | None
    ) -> Envelope | str:
        """Answer a (non-training) protocol message; a reason if not."""
        if isinstance(server_message, SessionStart):
            started = self._start(context, envelope, keep)
            if isinstance(started, str):
                return started
            session = started
        elif isinstance(server_message, ShareRouting):
            return "a training request in the wrong place"
        else:
            found = self._find(context, envelope.session)
            if isinstance(found, str):
                return found
            session = found
        return self._step(context, session, server_message, envelope.message)

    @staticmethod
    def _find(context: Context, tag: bytes) -> _Session | str:
        record = context.state.config_records.get(_state_key(tag))
        if record is not None:
            return _Session(record)
        # A message of another (older or forged) session must not reach this one.
        if any(k.startswith(STATE_KEY + "/") for k in context.state.config_records):
            return "message for another session"
        return "no session in progress on this node"

    def _start(self, context: Context, envelope: Envelope, keep: bytes | None) -> _Session | str:
        # Reusing the running session's tag would overwrite that session's record.
        if envelope.session == keep:
            return "refused session: its tag is the running session's"
        # A new session replaces whatever unfinished ones left behind, except the
        # session whose Unmasking this same message carries.
        kept = None if keep is None else _state_key(keep)
        records = context.state.config_records
        for k in [k for k in records if k.startswith(STATE_KEY + "/")]:
            if k != kept:
                _DECODED.forget(records.pop(k).get("seed"))
        try:
            if envelope.client_id is None or envelope.config is None:
                raise InvalidMessage("SessionStart without client-id or config")
            config = unpack_config(envelope.config)  # SecAggConfig's own rules, again
        except InvalidMessage as exc:
            return f"refused session: {exc}"
        # The server's parameters against this client's own (a weak threshold, a
        # server-chosen huge d that would exhaust the node's memory, a DP plan that
        # is not this client's, ...).
        reason = self._policy.refusal(config, envelope.dp_plan)
        if reason is not None:
            return f"refused session: {reason}"
        return _Session.create(envelope.session, envelope.client_id, envelope.config)

    def _train_and_mask(
        self,
        msg: Message,
        context: Context,
        call_next: ClientAppCallable,
        session: _Session,
        routing: ShareRouting,
        payload: bytes,
    ) -> Message:
        decoded = _DECODED.take(session, self._threads)
        try:
            ready = decoded.client(session.seed).stage is Stage.MASKED_INPUT_COLLECTION
        except (ValueError, MemoryError):
            ready = False
        else:
            _DECODED.put(decoded)
        if not ready:
            # An out-of-round ShareRouting must not trigger a training run (wasted work
            # the server could force at will): the client leaves without training.
            answer = self._step(context, session, routing, payload)
            return _error(msg, answer if isinstance(answer, str) else "training out of round")
        config = decoded.config
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
            plan = self._policy.dp if config.ring_input else None
            expected = config.dimension if plan is None else plan.dimension
            if update.size != expected:
                raise InvalidMessage(
                    f"update has {update.size} values, the session expects {expected}"
                )
            if not np.all(np.isfinite(update)):
                raise InvalidMessage("the trained arrays contain NaN or infinity")
            weight = read_weight(reply.content, self._weight_key, config.max_weight)
            vector: RingInput | npt.NDArray[Any] = update
            if config.ring_input:
                vector = self._dp_encode(decoded, update, weight)
        except (InvalidMessage, TypeError, ValueError) as exc:
            context.state.config_records.pop(_state_key(session.session), None)
            _DECODED.forget(session.seed)
            return _error(msg, f"cannot take part: {exc}")
        answer = self._step(context, session, routing, payload, vector, weight)
        if isinstance(answer, str):
            return _error(msg, answer)
        content = RecordDict()
        write_envelope(content, answer)
        return Message(content, reply_to=msg)

    def _dp_encode(
        self, decoded: _Decoded, update: npt.NDArray[np.float64], weight: int
    ) -> RingInput:
        """Clip, weight, rotate, round and noise the update into Z_2^b with the policy's
        plan (the DP encoder every transport uses); the public round seed is the
        session's nonce, the noise's secret coins come from the OS and never leave this
        call (Security: securefl.dp)."""
        from securefl.dp import DPEncoder

        plan = self._policy.dp
        if plan is None:  # accepted at SessionStart only with a plan: a corrupt state
            raise InvalidMessage("a ring-input session but this client has no DP plan")
        encoder = DPEncoder(
            plan,
            round_seed=decoded.nonce,
            max_weight=decoded.config.max_weight,
            threads=self._threads,
        )
        return encoder.encode(update, weight, client_id=decoded.client_id)

    def _step(
        self,
        context: Context,
        session: _Session,
        server_message: _WireMessage,
        payload: bytes,
        update: RingInput | npt.NDArray[Any] | None = None,
        weight: int = 1,
    ) -> Envelope | str:
        """Answer ``server_message`` (``payload`` as received) and save (or drop) the
        session; with ``update``, by a client that has it (ShareRouting)."""
        decoded = _DECODED.take(session, self._threads)
        try:
            if update is None:
                client = decoded.client(session.seed)
            else:
                client = decoded.client_with_input(session.seed, update, weight)
            answer = client.handle(server_message)  # type: ignore[arg-type]
        except (ValueError, MemoryError) as exc:
            # The contract is an error reply, never an exception, whatever the server chose.
            context.state.config_records.pop(_state_key(session.session), None)
            return f"left the session: cannot run it on this node: {type(exc).__name__}"
        session.remember(payload)
        decoded.answered(payload, server_message, client)
        if client.stage in (Stage.COMPLETED, Stage.ABORTED):
            # Nothing more to answer: the seed leaves the node's state.
            context.state.config_records.pop(_state_key(session.session), None)
        else:
            context.state.config_records[_state_key(session.session)] = session.record
            _DECODED.put(decoded)
        if answer is None:
            if isinstance(server_message, Abort):
                return f"session aborted by the server: {server_message.reason}"
            return f"left the session: {client.abort_reason}"
        return Envelope(session.session, codec.encode(answer))


def make_secagg_mod(
    *,
    policy: ClientPolicy = DEFAULT_POLICY,
    weight_key: str = "num-examples",
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
    updates of the clients that complete the session (with ``policy.dp``: their
    noisy weighted mean). Messages without securefl's record pass through untouched.

    Parameters
    ----------
    policy:
        What this client accepts from the server (:class:`ClientPolicy`): checked
        against every SessionStart before any work.
    weight_key:
        The metric holding the client's integer FedAvg weight.
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
    ConfigError
        If ``policy`` is not a :class:`ClientPolicy`.
    """
    if not isinstance(policy, ClientPolicy):
        raise ConfigError(f"policy must be a ClientPolicy, got {type(policy).__name__}")
    return _SecAggMod(policy, weight_key, threads)


secagg_mod: Mod = make_secagg_mod()
"""The mod with default settings: weight from ``"num-examples"``, the default
:class:`ClientPolicy` (t >= 2, corruption rate >= 0.1, 2t > k + c, no DP)."""
