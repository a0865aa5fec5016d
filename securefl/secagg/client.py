"""The SecAgg / SecAgg+ client as a sans-IO state machine (Bonawitz et al., CCS 2017,
Fig. 4; Bell et al., CCS 2020).

``handle(message)`` takes the server's message for the current round and returns the
client's answer (or ``None``). It never raises for bad input from the server: the
client moves to ``Stage.ABORTED`` with a reason instead. Randomness is injected
(``rng(n) -> n bytes``); there are no sockets, clocks or threads here.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from securefl.encoding.base import RingInput
from securefl.encoding.fixed_point import as_ring_input
from securefl.errors import ConfigError, DecryptionError
from securefl.primitives import masked_accumulate, ring_dtype, shamir
from securefl.secagg import crypto
from securefl.secagg.config import MAX_CLIENT_ID, GraphKind, SecAggConfig
from securefl.secagg.messages import (
    Abort,
    AdvertiseKeys,
    ClientMessage,
    ConsistencyCheck,
    ConsistencyRequest,
    KeyDirectory,
    MaskedInput,
    ServerMessage,
    SessionStart,
    ShareKeys,
    ShareRouting,
    Stage,
    UnmaskingRequest,
    UnmaskingResponse,
)
from securefl.secagg.signing import advertise_payload, consistency_payload
from securefl.secagg.topology import build_graph

__all__ = ["Rng", "SecAggClient"]

Rng = Callable[[int], bytes]

_PLAINTEXT = struct.Struct("<II")


class _Abort(Exception):
    """Internal: ends handling of a message with a reason."""


class SecAggClient:
    """One client's side of a session.

    Parameters
    ----------
    client_id:
        This client's id, in [0, 2^32 - 2].
    config:
        The session parameters; the server's must match (checked by digest).
    update:
        The client's input in the ring: a :class:`~securefl.encoding.RingInput` (an
        encoder's output, e.g. ``FixedPointEncoder.encode(x, n_k)``, or a
        :class:`~securefl.encoding.RingVector`), or a numpy array that the session's
        configuration encodes (floats: the fixed-point code; a ring-input session:
        values in Z_2^b), of length ``config.dimension``.
    weight:
        The integer weight n_k (e.g. number of local examples), 1 <= n_k <= W.
    identity_key, identity_public_keys:
        Authenticated mode only: this client's Ed25519 key and every enrolled
        client's Ed25519 public key.
    rng:
        Source of randomness; ``os.urandom`` by default. Tests inject a seeded DRBG.
    threads:
        Threads for quantization and masking (``None``: all cores).

    Security
    --------
    The object holds the mask-agreement key, the self-mask seed and received shares:
    it is never pickled and its repr shows none of them. For any peer it reveals the
    self-mask share or the key share, never both, and answers one unmasking request.
    """

    def __init__(
        self,
        client_id: int,
        config: SecAggConfig,
        update: RingInput | npt.NDArray[Any],
        weight: int = 1,
        *,
        identity_key: Ed25519PrivateKey | None = None,
        identity_public_keys: Mapping[int, bytes] | None = None,
        rng: Rng = os.urandom,
        threads: int | None = None,
    ) -> None:
        if not 0 <= client_id <= MAX_CLIENT_ID:
            raise ConfigError(f"client id must be in [0, {MAX_CLIENT_ID}], got {client_id}")
        if not 1 <= weight <= config.max_weight:
            raise ValueError(
                f"client {client_id}: weight must be in [1, {config.max_weight}], got {weight!r}"
            )
        try:
            ring_input = as_ring_input(update, config, weight, threads=threads)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"client {client_id}: {exc}") from None
        if ring_input.size != config.dimension:
            raise ValueError(
                f"client {client_id}: the input holds {ring_input.size} ring elements, "
                f"the session's dimension is {config.dimension}"
            )
        if config.authenticated and (identity_key is None or identity_public_keys is None):
            raise ConfigError("authenticated mode needs identity_key and identity_public_keys")
        self.client_id = client_id
        self.config = config
        self.stage = Stage.ADVERTISE_KEYS
        self.abort_reason: str | None = None
        self._input: RingInput | None = ring_input
        self._weight = int(weight)
        self._identity_key = identity_key
        self._identity_public_keys = dict(identity_public_keys or {})
        self._rng = rng
        self._threads = threads
        self._nonce = b""
        self._mask_key = crypto.x25519_from_private(crypto.clamp_x25519(rng(32)))
        self._encryption_key = crypto.x25519_from_private(rng(32))
        self._session = b""
        self._directory: dict[int, tuple[bytes, bytes]] = {}
        self._neighbours: frozenset[int] = frozenset()
        self._self_mask_seed = b""
        self._commitment = b""
        # Shares this client holds for its neighbours: peer -> (self-mask, key share).
        self._held: dict[int, tuple[bytes, bytes]] = {}
        self._survivors_signed: tuple[int, ...] | None = None
        # X25519 secrets with peers, by (0: mask agreement / 1: share encryption, peer).
        self._secrets: dict[tuple[int, int], bytes] = {}

    def __repr__(self) -> str:
        return f"SecAggClient(id={self.client_id}, stage={self.stage.value})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("SecAggClient holds secret keys and cannot be pickled")

    # ---- the state machine -----------------------------------------------------------

    def handle(self, message: ServerMessage) -> ClientMessage | None:
        """Process the server's message for the current round; return the answer."""
        if self.stage in (Stage.COMPLETED, Stage.ABORTED):
            return None  # a finished client answers nothing, replays included
        if isinstance(message, Abort):
            self._fail(f"server aborted: {message.reason}")
            return None
        expected: dict[Stage, type] = {
            Stage.ADVERTISE_KEYS: SessionStart,
            Stage.SHARE_KEYS: KeyDirectory,
            Stage.MASKED_INPUT_COLLECTION: ShareRouting,
            Stage.CONSISTENCY_CHECK: ConsistencyRequest,
            Stage.UNMASKING: UnmaskingRequest,
        }
        if not isinstance(message, expected[self.stage]):
            self._fail(f"unexpected {type(message).__name__} in stage {self.stage.value}")
            return None
        try:
            if isinstance(message, SessionStart):
                return self._advertise(message)
            if isinstance(message, KeyDirectory):
                return self._share_keys(message)
            if isinstance(message, ShareRouting):
                return self._masked_input(message)
            if isinstance(message, ConsistencyRequest):
                return self._consistency(message)
            if isinstance(message, UnmaskingRequest):
                return self._unmask(message)
        except _Abort as exc:
            self._fail(str(exc))
        return None

    def _fail(self, reason: str) -> None:
        self.stage = Stage.ABORTED
        self.abort_reason = reason
        self._held.clear()
        self._secrets.clear()
        self._self_mask_seed = b""
        self._commitment = b""

    # Round 0 --------------------------------------------------------------------------

    def _advertise(self, msg: SessionStart) -> AdvertiseKeys:
        # A server could otherwise run the session with a weaker threshold or ring.
        if msg.config_digest != self.config.digest():
            raise _Abort("the server's configuration differs from this client's")
        self._nonce = msg.nonce
        mask_pk = crypto.public_bytes(self._mask_key)
        enc_pk = crypto.public_bytes(self._encryption_key)
        # b_u is drawn now so that the server can check the b_u it reconstructs
        # against a commitment every client saw (a lying share holder is caught).
        self._self_mask_seed = self._rng(32)
        commitment = crypto.self_mask_commitment(
            msg.nonce, msg.config_digest, self.client_id, self._self_mask_seed
        )
        self._commitment = commitment
        signature = b""
        if self._identity_key is not None and self.config.authenticated:
            signature = crypto.sign(
                self._identity_key,
                *advertise_payload(
                    msg.nonce, msg.config_digest, self.client_id, mask_pk, enc_pk, commitment
                ),
            )
        self.stage = Stage.SHARE_KEYS
        return AdvertiseKeys(self.client_id, mask_pk, enc_pk, commitment, signature)

    # Round 1 --------------------------------------------------------------------------

    def _share_keys(self, msg: KeyDirectory) -> ShareKeys:
        cfg = self.config
        entries = {e.client_id: e for e in msg.entries}
        if len(entries) != len(msg.entries):
            raise _Abort("key directory repeats a client")
        if len(entries) > cfg.num_clients:
            raise _Abort("key directory lists more clients than the session allows")
        mine = entries.get(self.client_id)
        mask_pk = crypto.public_bytes(self._mask_key)
        enc_pk = crypto.public_bytes(self._encryption_key)
        # The server must relay our keys unchanged, or it could sit in the middle.
        if mine is None or (
            mine.mask_public_key,
            mine.encryption_public_key,
            mine.self_mask_commitment,
        ) != (mask_pk, enc_pk, self._commitment):
            raise _Abort("key directory does not hold this client's keys")
        keys_seen: set[bytes] = set()
        for e in msg.entries:
            # A copied key would let its copier share masks meant for another client.
            for key in (e.mask_public_key, e.encryption_public_key):
                if key in keys_seen:
                    raise _Abort(f"key directory repeats a public key (client {e.client_id})")
                keys_seen.add(key)
            if cfg.authenticated:
                identity = self._identity_public_keys.get(e.client_id)
                payload = advertise_payload(
                    self._nonce,
                    cfg.digest(),
                    e.client_id,
                    e.mask_public_key,
                    e.encryption_public_key,
                    e.self_mask_commitment,
                )
                if identity is None or not crypto.verify(identity, e.signature, *payload):
                    raise _Abort(f"client {e.client_id} is not enrolled or its keys are mis-signed")
        # A server that admits few clients keeps its own among them: the rules must
        # still hold for the directory actually sent (docs/PROTOCOL.md, Configuration).
        problem = cfg.directory_problem(len(entries))
        if problem is not None:
            raise _Abort(f"refused the key directory: {problem}")
        self._directory = {
            i: (e.mask_public_key, e.encryption_public_key) for i, e in entries.items()
        }
        self._session = crypto.session_id(
            self._nonce,
            cfg.digest(),
            [
                (i, e.mask_public_key, e.encryption_public_key, e.self_mask_commitment)
                for i, e in sorted(entries.items())
            ],
        )
        # The graph comes from the session id, not from the server: a server that
        # picked (or ground) the seed, or gave clients different graphs, is refused.
        seed = crypto.graph_seed(self._session)
        if msg.graph_seed != seed:
            raise _Abort("the server's graph seed is not the one derived from the session id")
        try:
            graph = build_graph(cfg, sorted(entries), seed)
            self._neighbours = graph.neighbours(self.client_id)
        except ValueError as exc:
            raise _Abort(f"cannot build the neighbourhood graph: {exc}") from None
        if len(self._neighbours) < cfg.threshold:
            raise _Abort(
                f"only {len(self._neighbours)} neighbours advertised keys; "
                f"threshold t={cfg.threshold}"
            )

        peers = sorted(self._neighbours)
        indices = [p + 1 for p in peers]  # Shamir index 0 is the secret itself
        mask_sk = self._mask_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        b_shares = shamir.split(self._self_mask_seed, cfg.threshold, indices, seed=self._rng(16))
        s_shares = shamir.split(mask_sk, cfg.threshold, indices, seed=self._rng(16))
        ciphertexts = []
        for peer, b_share, s_share in zip(peers, b_shares, s_shares, strict=True):
            key = self._share_key(self.client_id, peer)
            plaintext = _PLAINTEXT.pack(self.client_id, peer) + b_share.value + s_share.value
            blob = crypto.aead_encrypt(
                key,
                self._rng(crypto.NONCE_BYTES),
                plaintext,
                session=self._session,
                sender=self.client_id,
                recipient=peer,
            )
            ciphertexts.append((peer, blob))
        self.stage = Stage.MASKED_INPUT_COLLECTION
        return ShareKeys(self.client_id, tuple(ciphertexts))

    def _agree(self, own: X25519PrivateKey, peer: int, public_index: int) -> bytes:
        # Each X25519 secret is needed twice (share encryption: sending and receiving):
        # compute it once per session.
        cached = self._secrets.get((public_index, peer))
        if cached is not None:
            return cached
        try:
            secret = crypto.shared_secret(own, self._directory[peer][public_index])
        except ValueError:
            raise _Abort(f"client {peer} advertised an invalid (low-order) public key") from None
        self._secrets[(public_index, peer)] = secret
        return secret

    def _share_key(self, sender: int, recipient: int) -> bytes:
        """The AES-GCM key for shares sent from ``sender`` to ``recipient``."""
        peer = recipient if sender == self.client_id else sender
        secret = self._agree(self._encryption_key, peer, 1)
        return crypto.derive(
            secret,
            session=self._session,
            purpose=crypto.SHARE_ENCRYPTION,
            ids=(sender, recipient),
            length=32,
        )

    def _pairwise_mask_key(self, peer: int) -> bytes:
        """s_uv: the mask seed shared with ``peer``, bound to the unordered pair."""
        secret = self._agree(self._mask_key, peer, 0)
        return crypto.pairwise_mask_key(secret, session=self._session, pair=(self.client_id, peer))

    # Round 2 --------------------------------------------------------------------------

    def _masked_input(self, msg: ShareRouting) -> MaskedInput:
        cfg = self.config
        for sender, blob in msg.ciphertexts:
            if sender not in self._neighbours:
                raise _Abort(f"received shares from client {sender}, not a neighbour")
            key = self._share_key(sender, self.client_id)
            try:
                plaintext = crypto.aead_decrypt(
                    key, blob, session=self._session, sender=sender, recipient=self.client_id
                )
            except DecryptionError:
                raise _Abort(f"shares from client {sender} failed to decrypt") from None
            if len(plaintext) != _PLAINTEXT.size + 2 * shamir.SHARE_BYTES or _PLAINTEXT.unpack_from(
                plaintext
            ) != (sender, self.client_id):
                raise _Abort(f"shares from client {sender} are malformed")
            body = plaintext[_PLAINTEXT.size :]
            self._held[sender] = (body[: shamir.SHARE_BYTES], body[shamir.SHARE_BYTES :])
        if len(self._held) < cfg.threshold:
            raise _Abort(
                f"only {len(self._held)} neighbours shared keys; threshold t={cfg.threshold}"
            )
        vector = self._masked_vector(sorted(self._held))
        self._secrets.clear()  # unmasking needs shares only, not agreement secrets
        self.stage = Stage.CONSISTENCY_CHECK if cfg.authenticated else Stage.UNMASKING
        return MaskedInput(self.client_id, cfg.bits, vector)

    def _masked_vector(self, peers: list[int]) -> npt.NDArray[np.uint32] | npt.NDArray[np.uint64]:
        """y = q(clip(x) n_k / W) || n_k + PRG(b) + sum_{v>u} PRG(s_uv) - sum_{v<u} PRG(s_uv)."""
        cfg = self.config
        d = cfg.dimension
        y = np.empty(d + 1, dtype=ring_dtype(cfg.bits))
        assert self._input is not None  # one masked input per session
        try:
            # The encoding's own randomness (stochastic rounding) is drawn here, bound
            # to the session id, which is known only now.
            self._input.write(
                y[:d], session=self._session, client_id=self.client_id, secret=self._rng(32)
            )
        except ValueError as exc:
            raise _Abort(f"the input does not fit the ring: {exc}") from None
        self._input = None  # the update is not needed again
        y[d] = self._weight
        keys = [
            crypto.self_mask_key(self._self_mask_seed, session=self._session, client=self.client_id)
        ]
        signs = [1]
        for peer in peers:
            keys.append(self._pairwise_mask_key(peer))
            signs.append(1 if self.client_id < peer else -1)
        masked_accumulate(y, keys, signs, bits=cfg.bits, threads=self._threads)
        return y

    # Round 3 (authenticated) ------------------------------------------------------------

    def _consistency(self, msg: ConsistencyRequest) -> ConsistencyCheck:
        survivors = msg.survivors
        if self.client_id not in survivors:
            raise _Abort("consistency check omits this client")
        if not set(survivors) <= set(self._directory):
            raise _Abort("consistency check names clients that never advertised keys")
        if len(survivors) < self.config.threshold:
            raise _Abort(f"only {len(survivors)} survivors; threshold t={self.config.threshold}")
        self._check_min_survivors(len(survivors))
        assert self._identity_key is not None
        self._survivors_signed = survivors
        signature = crypto.sign(self._identity_key, *consistency_payload(self._session, survivors))
        self.stage = Stage.UNMASKING
        return ConsistencyCheck(self.client_id, signature)

    # Round 4 ----------------------------------------------------------------------------

    def _unmask(self, msg: UnmaskingRequest) -> UnmaskingResponse:
        survivors, dropped = set(msg.survivors), set(msg.dropped)
        held = set(self._held)
        # Revealing both shares of one peer would unmask that peer's update.
        if survivors & dropped:
            raise _Abort("unmasking request names a client as both survivor and dropped")
        if not (survivors | dropped) <= held:
            raise _Abort("unmasking request names clients this client holds no shares of")
        if survivors | dropped != held:
            raise _Abort("unmasking request does not account for every neighbour")
        if self.config.authenticated:
            self._check_consistency(msg, held)
            self._check_min_survivors(len(msg.all_survivors))  # the set all survivors signed
        elif self.config.graph is GraphKind.COMPLETE:
            # Every other survivor is a neighbour: the request names them all, plus us.
            self._check_min_survivors(len(survivors) + 1)
        # SecAgg+ without authentication shows only the neighbourhood: the server's
        # own check (before any request goes out) is what enforces the minimum there.
        response = UnmaskingResponse(
            self.client_id,
            tuple((p, self._held[p][0]) for p in sorted(survivors)),
            tuple((p, self._held[p][1]) for p in sorted(dropped)),
        )
        self.stage = Stage.COMPLETED
        self._held.clear()
        self._secrets.clear()
        self._self_mask_seed = b""
        return response

    def _check_min_survivors(self, count: int) -> None:
        # Unmasking a sum of fewer than min_survivors inputs would release less DP
        # noise than calibrated: reveal no share for it.
        minimum = self.config.min_survivors
        if minimum is not None and count < minimum:
            raise _Abort(
                f"only {count} survivors; the session needs at least min_survivors={minimum}"
            )

    def _check_consistency(self, msg: UnmaskingRequest, held: set[int]) -> None:
        signed = self._survivors_signed
        if signed is None or msg.all_survivors != signed:
            raise _Abort("unmasking request contradicts the survivor set this client signed")
        everyone = set(signed)
        if set(msg.survivors) != held & everyone or set(msg.dropped) != held - everyone:
            raise _Abort("unmasking request contradicts the signed survivor set")
        payload = consistency_payload(self._session, signed)
        valid = {
            i
            for i, sig in msg.signatures
            if i in everyone
            and i in self._identity_public_keys
            and crypto.verify(self._identity_public_keys[i], sig, *payload)
        }
        if len(valid) < self.config.threshold:
            raise _Abort(
                f"only {len(valid)} valid consistency signatures; "
                f"threshold t={self.config.threshold}"
            )
