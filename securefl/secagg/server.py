"""The SecAgg / SecAgg+ server as a sans-IO state machine (Bonawitz et al., CCS 2017,
Fig. 4; Bell et al., CCS 2020).

The transport calls ``receive(sender, message)`` for every message of the current
round and ``close_round()`` when that round's collection window closes: clients that
have not answered by then have dropped. ``close_round`` returns the messages to send,
per client. Bad input from a client never raises: the message is rejected (recorded
in ``rejections``) and the client is treated as dropped if it sends nothing valid.
The masked vectors are summed as they arrive, so the server holds one accumulator of
d + 1 ring elements, never n vectors.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

from securefl.encoding.base import AggregateResult, RingSum
from securefl.primitives import masked_accumulate, ring_dtype, shamir, sum_mod
from securefl.primitives.masking import RingArray
from securefl.primitives.share_decoding import decode_shares
from securefl.secagg import crypto
from securefl.secagg.config import MAX_CLIENT_ID, SecAggConfig
from securefl.secagg.messages import (
    Abort,
    AdvertiseKeys,
    ClientMessage,
    ConsistencyCheck,
    ConsistencyRequest,
    KeyDirectory,
    KeyEntry,
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

# AggregateResult moved to securefl.encoding (the decoded result); it stays importable
# from here for one release.
__all__ = ["AggregateResult", "Rejection", "SecAggServer"]

SHARE_CIPHERTEXT_BYTES = crypto.NONCE_BYTES + 8 + 2 * shamir.SHARE_BYTES + 16
MAX_DECODES = 16
"""Error-correcting decodings a session may need before it aborts: each one follows
a caught lie, so an honest session needs none and a liar cannot make the server
decode without bound."""


@dataclass(frozen=True)
class Rejection:
    sender: int
    stage: Stage
    reason: str


class _Abort(Exception):
    pass


class SecAggServer:
    """The server's side of one session.

    Parameters
    ----------
    config:
        Session parameters (clients check them by digest).
    identity_public_keys:
        Authenticated mode: the Ed25519 public key of every enrolled client. Messages
        from other ids, or badly signed, are rejected.
    rng:
        Source of randomness (session nonce, graph seed); ``os.urandom`` by default.
    threads:
        Threads for the sum and the unmasking (``None``: all cores).
    """

    def __init__(
        self,
        config: SecAggConfig,
        *,
        identity_public_keys: Mapping[int, bytes] | None = None,
        rng: Callable[[int], bytes] = os.urandom,
        threads: int | None = None,
    ) -> None:
        if config.authenticated and identity_public_keys is None:
            raise ValueError("authenticated mode needs the enrolled identity_public_keys")
        self.config = config
        self.stage: Stage | None = None
        self.abort_reason: str | None = None
        self.result: RingSum | None = None
        self.rejections: list[Rejection] = []
        self._identities = dict(identity_public_keys or {})
        self._rng = rng
        self._threads = threads
        self._digest = config.digest()
        self._nonce = b""
        self._session = b""
        self._keys: dict[int, AdvertiseKeys] = {}
        self._u1: tuple[int, ...] = ()
        self._neighbours: dict[int, frozenset[int]] = {}
        self._shares: dict[int, dict[int, bytes]] = {}
        self._u2: frozenset[int] = frozenset()
        self._acc: npt.NDArray[np.uint32] | npt.NDArray[np.uint64] | None = None
        self._u3: set[int] = set()
        self._survivors: tuple[int, ...] = ()
        self._signatures: dict[int, bytes] = {}
        self._requests: dict[int, UnmaskingRequest] = {}
        self._responses: dict[int, UnmaskingResponse] = {}
        self._decodes = 0
        self.liars: set[int] = set()
        """Share holders caught sending a share that does not fit the verified secret."""

    # ---- public interface ---------------------------------------------------------------

    def start(self) -> SessionStart:
        """Open AdvertiseKeys; the returned message goes to every client."""
        if self.stage is not None:
            raise RuntimeError("the session has already started")
        self._nonce = self._rng(32)
        self.stage = Stage.ADVERTISE_KEYS
        return SessionStart(self._nonce, self._digest)

    def receive(self, sender: int, message: ClientMessage) -> bool:
        """Collect one client's message for the current round.

        Returns whether it was accepted; a rejection is recorded with its reason.
        """
        try:
            self._accept(sender, message)
        except _Abort as exc:
            self.rejections.append(Rejection(sender, self.stage or Stage.ADVERTISE_KEYS, str(exc)))
            return False
        return True

    def close_round(self) -> dict[int, ServerMessage]:
        """End the current round's collection; return the next messages per client."""
        handlers = {
            Stage.ADVERTISE_KEYS: self._close_advertise,
            Stage.SHARE_KEYS: self._close_share_keys,
            Stage.MASKED_INPUT_COLLECTION: self._close_masked_input,
            Stage.CONSISTENCY_CHECK: self._close_consistency,
            Stage.UNMASKING: self._close_unmasking,
        }
        if self.stage not in handlers:
            return {}
        try:
            return handlers[self.stage]()
        except _Abort as exc:
            return self._abort(str(exc))

    @property
    def participants(self) -> tuple[int, ...]:
        """Clients still expected to answer."""
        return tuple(sorted(self._expected()))

    # ---- receiving ------------------------------------------------------------------------

    def _expected(self) -> set[int]:
        if self.stage == Stage.SHARE_KEYS:
            return set(self._u1)
        if self.stage == Stage.MASKED_INPUT_COLLECTION:
            return set(self._u2)
        if self.stage == Stage.CONSISTENCY_CHECK:
            return set(self._u3)
        if self.stage == Stage.UNMASKING:
            return set(self._requests)
        return set()

    def _accept(self, sender: int, message: ClientMessage) -> None:
        if getattr(message, "sender", None) != sender:
            raise _Abort("message names another sender than the one it came from")
        expected_type = {
            Stage.ADVERTISE_KEYS: AdvertiseKeys,
            Stage.SHARE_KEYS: ShareKeys,
            Stage.MASKED_INPUT_COLLECTION: MaskedInput,
            Stage.CONSISTENCY_CHECK: ConsistencyCheck,
            Stage.UNMASKING: UnmaskingResponse,
        }.get(self.stage)  # type: ignore[arg-type]
        if expected_type is None or not isinstance(message, expected_type):
            stage = self.stage.value if self.stage else "not started"
            raise _Abort(f"{type(message).__name__} is out of round (stage {stage})")
        if isinstance(message, AdvertiseKeys):
            self._accept_advertise(message)
        elif isinstance(message, ShareKeys):
            self._accept_share_keys(message)
        elif isinstance(message, MaskedInput):
            self._accept_masked_input(message)
        elif isinstance(message, ConsistencyCheck):
            self._accept_consistency(message)
        elif isinstance(message, UnmaskingResponse):
            self._accept_unmasking(message)

    def _accept_advertise(self, m: AdvertiseKeys) -> None:
        if not 0 <= m.sender <= MAX_CLIENT_ID:
            raise _Abort(f"client id {m.sender} is out of range")
        if m.sender in self._keys:
            raise _Abort("duplicate AdvertiseKeys")
        if len(self._keys) >= self.config.num_clients:
            raise _Abort(f"session is full ({self.config.num_clients} clients)")
        if (
            len(m.mask_public_key) != crypto.KEY_BYTES
            or len(m.encryption_public_key) != crypto.KEY_BYTES
        ):
            raise _Abort("public keys must be 32 bytes")
        if len(m.self_mask_commitment) != crypto.COMMITMENT_BYTES:
            raise _Abort(f"the self-mask commitment must be {crypto.COMMITMENT_BYTES} bytes")
        if self.config.authenticated:
            identity = self._identities.get(m.sender)
            if identity is None:
                raise _Abort("client is not enrolled")
            payload = advertise_payload(
                self._nonce,
                self._digest,
                m.sender,
                m.mask_public_key,
                m.encryption_public_key,
                m.self_mask_commitment,
            )
            if not crypto.verify(identity, m.signature, *payload):
                raise _Abort("AdvertiseKeys signature is invalid")
        self._keys[m.sender] = m

    def _accept_share_keys(self, m: ShareKeys) -> None:
        if m.sender not in self._neighbours:
            raise _Abort("sender did not advertise keys")
        if m.sender in self._shares:
            raise _Abort("duplicate ShareKeys")
        recipients = [r for r, _ in m.ciphertexts]
        if recipients != sorted(self._neighbours[m.sender]):
            raise _Abort("ShareKeys must address exactly the sender's neighbours")
        if any(len(blob) != SHARE_CIPHERTEXT_BYTES for _, blob in m.ciphertexts):
            raise _Abort("share ciphertext has the wrong size")
        self._shares[m.sender] = dict(m.ciphertexts)

    def _accept_masked_input(self, m: MaskedInput) -> None:
        cfg = self.config
        if m.sender not in self._u2:
            raise _Abort("sender did not share keys")
        if m.sender in self._u3:
            raise _Abort("duplicate MaskedInput")
        dtype = ring_dtype(cfg.bits)
        v = m.vector
        if m.bits != cfg.bits or not isinstance(v, np.ndarray) or v.dtype != dtype:
            raise _Abort(f"masked vector must be in Z_2^{cfg.bits} ({dtype})")
        if v.shape != (cfg.dimension + 1,):
            raise _Abort(f"masked vector must have {cfg.dimension + 1} elements, got {v.shape}")
        if cfg.bits < 8 * dtype.itemsize and int(v.max()) >> cfg.bits:
            raise _Abort(f"masked vector has elements outside Z_2^{cfg.bits}")
        assert self._acc is not None
        sum_mod(
            [self._acc, cast("RingArray", np.ascontiguousarray(v))],
            bits=cfg.bits,
            out=self._acc,
            threads=self._threads,
        )
        self._u3.add(m.sender)

    def _accept_consistency(self, m: ConsistencyCheck) -> None:
        if m.sender not in self._u3:
            raise _Abort("sender is not a survivor")
        if m.sender in self._signatures:
            raise _Abort("duplicate ConsistencyCheck")
        payload = consistency_payload(self._session, self._survivors)
        if not crypto.verify(self._identities[m.sender], m.signature, *payload):
            raise _Abort("ConsistencyCheck signature is invalid")
        self._signatures[m.sender] = m.signature

    def _accept_unmasking(self, m: UnmaskingResponse) -> None:
        request = self._requests.get(m.sender)
        if request is None:
            raise _Abort("sender was not asked to unmask")
        if m.sender in self._responses:
            raise _Abort("duplicate UnmaskingResponse")
        if tuple(i for i, _ in m.self_mask_shares) != request.survivors:
            raise _Abort("self-mask shares do not match the request")
        if tuple(i for i, _ in m.key_shares) != request.dropped:
            raise _Abort("key shares do not match the request")
        for _, share in (*m.self_mask_shares, *m.key_shares):
            if len(share) != shamir.SHARE_BYTES:
                raise _Abort("share has the wrong size")
        self._responses[m.sender] = m

    # ---- closing rounds -----------------------------------------------------------------

    def _abort(self, reason: str) -> dict[int, ServerMessage]:
        notify = self._expected()
        if self.stage is Stage.ADVERTISE_KEYS:
            # Closing AdvertiseKeys: everyone who advertised is waiting for a directory.
            notify = set(self._keys)
        self.stage = Stage.ABORTED
        self.abort_reason = reason
        self._acc = None
        return {i: Abort(reason) for i in sorted(notify)}

    def _require(self, count: int, what: str) -> None:
        # Below t + 1 live clients nobody keeps t neighbours: stop before revealing more.
        if count < self.config.threshold + 1:
            raise _Abort(
                f"only {count} clients {what}; need at least t + 1 = {self.config.threshold + 1}"
            )

    def _require_survivors(self, count: int, what: str) -> None:
        # A sum of fewer than min_survivors inputs carries less DP noise than promised:
        # it must never be unmasked (decoding would refuse it only after the fact).
        minimum = self.config.min_survivors
        if minimum is not None and count < minimum:
            raise _Abort(
                f"only {count} clients {what}; the session needs at least "
                f"min_survivors={minimum} before its sum may be unmasked"
            )

    def _close_advertise(self) -> dict[int, ServerMessage]:
        owners: dict[bytes, list[int]] = {}
        for i, m in self._keys.items():
            for key in (m.mask_public_key, m.encryption_public_key):
                owners.setdefault(key, []).append(i)
        # A key advertised twice is a copy: we cannot tell the original, so drop all.
        cheats = {i for ids in owners.values() if len(ids) > 1 for i in ids}
        for i in sorted(cheats):
            self.rejections.append(
                Rejection(i, Stage.ADVERTISE_KEYS, "public key advertised by another client")
            )
            del self._keys[i]
        self._u1 = tuple(sorted(self._keys))
        self._require(len(self._u1), "advertised keys")
        self._require_survivors(len(self._u1), "advertised keys")
        # Clients would refuse a directory that breaks the rules: abort, saying why.
        problem = self.config.directory_problem(len(self._u1))
        if problem is not None:
            raise _Abort(problem)
        entries = tuple(
            KeyEntry(
                i,
                self._keys[i].mask_public_key,
                self._keys[i].encryption_public_key,
                self._keys[i].self_mask_commitment,
                self._keys[i].signature,
            )
            for i in self._u1
        )
        self._session = crypto.session_id(
            self._nonce,
            self._digest,
            [
                (e.client_id, e.mask_public_key, e.encryption_public_key, e.self_mask_commitment)
                for e in entries
            ],
        )
        # The graph is a function of the session id (every client recomputes it), so
        # the server cannot choose it after it knows which clients it controls.
        seed = crypto.graph_seed(self._session)
        graph = build_graph(self.config, self._u1, seed)
        self._neighbours = {i: graph.neighbours(i) for i in self._u1}
        self.stage = Stage.SHARE_KEYS
        directory = KeyDirectory(seed, entries)
        return {i: directory for i in self._u1}

    def _close_share_keys(self) -> dict[int, ServerMessage]:
        self._u2 = frozenset(self._shares)
        self._require(len(self._u2), "shared keys")
        self._require_survivors(len(self._u2), "shared keys")
        out: dict[int, ServerMessage] = {}
        for v in sorted(self._u2):
            senders = sorted(self._neighbours[v] & self._u2)
            out[v] = ShareRouting(tuple((u, self._shares[u][v]) for u in senders))
        self._acc = np.zeros(self.config.dimension + 1, dtype=ring_dtype(self.config.bits))
        self.stage = Stage.MASKED_INPUT_COLLECTION
        return out

    def _holders(self, u: int, alive: set[int] | frozenset[int]) -> set[int]:
        """Live clients holding u's shares: its neighbours that received them."""
        return set(self._neighbours[u] & self._u2) & set(alive)

    def _check_recoverable(self, alive: set[int]) -> None:
        for u in sorted(self._u2):
            held = len(self._holders(u, alive))
            if held < self.config.threshold:
                raise _Abort(
                    f"client {u} has only {held} live neighbours holding its shares; "
                    f"threshold t={self.config.threshold}"
                )

    def _close_masked_input(self) -> dict[int, ServerMessage]:
        self._require(len(self._u3), "sent masked inputs")
        # U3 is fixed here: below the minimum, no Unmasking request ever goes out.
        self._require_survivors(len(self._u3), "sent masked inputs")
        self._check_recoverable(self._u3)
        self._survivors = tuple(sorted(self._u3))
        if self.config.authenticated:
            self.stage = Stage.CONSISTENCY_CHECK
            request = ConsistencyRequest(self._survivors)
            return {i: request for i in self._survivors}
        return self._request_unmasking(self._u3)

    def _close_consistency(self) -> dict[int, ServerMessage]:
        signers = set(self._signatures)
        if len(signers) < self.config.threshold:
            raise _Abort(
                f"only {len(signers)} consistency signatures; threshold t={self.config.threshold}"
            )
        self._check_recoverable(signers)
        return self._request_unmasking(signers)

    def _request_unmasking(self, askees: set[int]) -> dict[int, ServerMessage]:
        survivors = set(self._u3)
        signatures = tuple(sorted(self._signatures.items()))
        for v in sorted(askees):
            held = self._neighbours[v] & self._u2
            self._requests[v] = UnmaskingRequest(
                tuple(sorted(held & survivors)),
                tuple(sorted(held - survivors)),
                self._survivors if self.config.authenticated else (),
                signatures,
            )
        self.stage = Stage.UNMASKING
        return dict(self._requests)

    def _reconstruct(self, owner: int, field: str) -> bytes:
        """Rebuild ``owner``'s self-mask seed or mask key and verify it.

        The seed is checked against the commitment the owner advertised, the key
        against its public key. Fast path: the first t shares (from holders not yet
        caught lying) rebuild a verified secret and the last t agree. Otherwise the
        shares are decoded as a Reed-Solomon codeword
        (:func:`securefl.primitives.share_decoding.decode_shares`): with at most
        (m - t) / 2 false shares the holders off the polynomial are exactly the liars,
        recorded in ``rejections`` and ``liars`` and skipped by later fast paths. The
        session aborts, and never completes, when the secret cannot be verified:
        too many false shares (naming the holders), a decoded polynomial whose secret
        fails the check (the owner dealt inconsistent shares, or more holders lied
        than can be corrected), or more than ``MAX_DECODES`` decodings in a session.
        """
        what = "self-mask seed" if field == "self_mask_shares" else "mask key"
        shares: list[tuple[int, shamir.Share]] = []
        for v, response in sorted(self._responses.items()):
            for i, value in getattr(response, field):
                if i == owner:
                    shares.append((v, shamir.Share(v + 1, value)))
        t = self.config.threshold
        if len(shares) < t:
            raise _Abort(f"only {len(shares)} shares of client {owner}'s {what}; threshold t={t}")

        def verifies(secret: bytes | None) -> bool:
            return secret is not None and self._verifies(owner, field, secret)

        trusted = [s for s in shares if s[0] not in self.liars]
        if len(trusted) >= t:
            first = _combine(trusted[:t], t)
            if verifies(first) and (len(trusted) == t or _combine(trusted[-t:], t) == first):
                assert first is not None
                return first
        self._decodes += 1
        if self._decodes > MAX_DECODES:
            raise _Abort(
                f"more than {MAX_DECODES} secrets needed error correction in this session "
                f"(holders caught lying: {sorted(self.liars)})"
            )
        holders = ", ".join(str(v) for v, _ in shares)
        # With fewer than t + 2 shares no false share can be corrected (m - t < 2).
        decoded = decode_shares([s for _, s in shares], t) if len(shares) >= t + 2 else None
        if decoded is None:
            raise _Abort(
                f"the shares of client {owner}'s {what} do not reconstruct the committed "
                f"value and cannot be corrected: more than (m - t) / 2 = "
                f"{(len(shares) - t) // 2} of the m={len(shares)} holders lied "
                f"(holders: {holders})"
            )
        consistent = [shares[i] for i in decoded.consistent]
        secret = _combine(consistent[:t], t)
        if not verifies(secret):
            raise _Abort(
                f"the {len(consistent)} consistent shares of client {owner}'s {what} "
                f"rebuild a value its commitment or public key refuses: client {owner} "
                f"dealt inconsistent shares, or more holders lied than can be corrected "
                f"(holders: {holders})"
            )
        assert secret is not None
        for i in decoded.false:
            v = shares[i][0]
            self.liars.add(v)
            self.rejections.append(
                Rejection(v, Stage.UNMASKING, f"sent a false share of client {owner}'s {what}")
            )
        return secret

    def _verifies(self, owner: int, field: str, secret: bytes) -> bool:
        if field == "self_mask_shares":
            expected = self._keys[owner].self_mask_commitment
            actual = crypto.self_mask_commitment(self._nonce, self._digest, owner, secret)
        else:
            expected = self._keys[owner].mask_public_key
            # X25519 ignores the clamped bits, so several byte strings share one public
            # key; clients share the clamped form, the only one accepted here.
            if secret != crypto.clamp_x25519(secret):
                return False
            try:
                actual = crypto.public_bytes(crypto.x25519_from_private(secret))
            except ValueError:
                return False
        return hmac.compare_digest(actual, expected)

    def _close_unmasking(self) -> dict[int, ServerMessage]:
        cfg = self.config
        survivors = self._survivors
        dropped = sorted(self._u2 - set(survivors))
        self._require_survivors(len(survivors), "sent masked inputs")  # defence in depth
        keys: list[bytes] = []
        signs: list[int] = []
        for u in survivors:
            seed = self._reconstruct(u, "self_mask_shares")
            keys.append(crypto.self_mask_key(seed, session=self._session, client=u))
            signs.append(-1)
        for u in dropped:
            private = crypto.x25519_from_private(self._reconstruct(u, "key_shares"))
            for v in sorted(self._neighbours[u] & set(survivors)):
                try:
                    secret = crypto.shared_secret(private, self._keys[v].mask_public_key)
                except ValueError:
                    raise _Abort(f"client {v} advertised an invalid public key") from None
                keys.append(crypto.pairwise_mask_key(secret, session=self._session, pair=(u, v)))
                signs.append(-1 if v < u else 1)  # v added +PRG when v < u
        acc = self._acc
        assert acc is not None
        masked_accumulate(acc, keys, signs, bits=cfg.bits, threads=self._threads)
        d = cfg.dimension
        total_weight = int(acc[d])
        # The weights are public integers in [1, W]: a sum outside [m, m W] is no sum
        # of honest weights (a lying client or share holder corrupted the aggregate).
        if not len(survivors) <= total_weight <= len(survivors) * cfg.max_weight:
            raise _Abort("unmasked total weight is out of range: the aggregate is corrupted")
        # Integers out: what the sum means is the encoder's business (securefl.encoding).
        self.result = RingSum(
            ring_sum=acc[:d],
            total_weight=total_weight,
            contributors=survivors,
            dropped=tuple(sorted(set(self._u1) - set(survivors))),
        )
        self.stage = Stage.COMPLETED
        self._acc = None
        return {}


def _combine(shares: Sequence[tuple[int, shamir.Share]], t: int) -> bytes | None:
    try:
        return shamir.combine([s for _, s in shares], t)
    except ValueError:  # a chunk out of the field: not a sharing of any secret
        return None
