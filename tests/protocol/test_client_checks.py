"""The client's checks of docs/PROTOCOL.md ("Checks", Client), one test each.

An unexpected message or a failed check moves the client to ``Aborted`` with a
reason; ``handle`` then returns None (nothing is sent, no share or signature is
revealed) and the client never answers again.
"""

from __future__ import annotations

import dataclasses
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol.harness import Session, make_config
from securefl.secagg import crypto
from securefl.secagg.client import SecAggClient
from securefl.secagg.config import SecAggConfig
from securefl.secagg.messages import (
    Abort,
    ConsistencyCheck,
    ConsistencyRequest,
    KeyDirectory,
    KeyEntry,
    MaskedInput,
    SessionStart,
    ShareKeys,
    ShareRouting,
    Stage,
    UnmaskingRequest,
    UnmaskingResponse,
)
from securefl.secagg.signing import consistency_payload
from securefl.secagg.topology import build_graph


def assert_refused(client: SecAggClient, message, fragment: str) -> None:
    """``message`` aborts ``client`` with ``fragment`` in the reason; nothing is sent."""
    assert client.stage is not Stage.ABORTED
    assert client.handle(message) is None
    assert client.stage is Stage.ABORTED
    assert fragment in client.abort_reason, client.abort_reason


def identity(i: int) -> Ed25519PrivateKey:
    """The identity key Session.create_authenticated enrols for client i."""
    return Ed25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32)


# ---- after an abort ----------------------------------------------------------------------


class TestAfterAbort:
    def test_after_a_server_abort_a_valid_directory_gets_no_answer(self) -> None:
        n = 5
        session = Session.create(make_config(n, t=3, d=6), n, seed="after-abort")
        session.round()
        directory = session.inbox[0]
        assert isinstance(directory, KeyDirectory)
        client = session.clients[0]
        assert client.handle(Abort("maintenance")) is None
        assert client.stage is Stage.ABORTED
        assert client.abort_reason == "server aborted: maintenance"
        assert client.handle(directory) is None
        assert client.stage is Stage.ABORTED
        assert client.abort_reason == "server aborted: maintenance"
        # A peer that was not aborted answers the very same directory.
        assert isinstance(session.clients[1].handle(directory), ShareKeys)

    def test_after_a_failed_check_the_valid_message_gets_no_answer(self) -> None:
        n = 5
        session = Session.create(make_config(n, t=3, d=6), n, seed="after-check")
        session.round()
        session.round()
        routing = session.inbox[2]
        assert isinstance(routing, ShareRouting)
        client = session.clients[2]
        assert_refused(
            client, ShareRouting(routing.ciphertexts[:1]), "only 1 neighbours shared keys"
        )
        reason = client.abort_reason
        assert client.handle(routing) is None  # the genuine routing, now too late
        assert client.stage is Stage.ABORTED
        assert client.abort_reason == reason
        assert client.handle(Abort("later")) is None
        assert client.abort_reason == reason

    def test_after_a_digest_mismatch_the_right_session_start_gets_no_answer(self) -> None:
        config = make_config(4, t=2, d=4)
        session = Session.create(config, 4, seed="after-digest")
        start = session.inbox[0]
        client = session.clients[0]
        other = dataclasses.replace(start, config_digest=make_config(4, t=3, d=4).digest())
        assert_refused(client, other, "configuration differs")
        assert client.handle(start) is None
        assert client.stage is Stage.ABORTED


# ---- KeyDirectory ------------------------------------------------------------------------


def reseeded(config: SecAggConfig, nonce: bytes, entries) -> KeyDirectory:
    """A directory of ``entries`` with the graph seed a client derives for them, so a
    refusal is down to the check under test and not to a mismatched seed."""
    session = crypto.session_id(
        nonce,
        config.digest(),
        [
            (e.client_id, e.mask_public_key, e.encryption_public_key, e.self_mask_commitment)
            for e in sorted(entries, key=lambda e: e.client_id)
        ],
    )
    return KeyDirectory(crypto.graph_seed(session), tuple(entries))


def flip(data: bytes, at: int = 0) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


class TestKeyDirectory:
    def _setup(self, n: int = 5, t: int = 3):
        config = make_config(n, t=t, d=6)
        session = Session.create(config, n, seed="directory-checks")
        start = session.inbox[0]
        assert isinstance(start, SessionStart)
        session.round()
        directory = session.inbox[0]
        assert isinstance(directory, KeyDirectory)
        return config, session, start.nonce, list(directory.entries)

    def test_reseeded_control_directory_is_accepted(self) -> None:
        config, session, nonce, entries = self._setup()
        rebuilt = reseeded(config, nonce, entries)
        assert rebuilt == session.inbox[0]
        assert isinstance(session.clients[0].handle(rebuilt), ShareKeys)

    @pytest.mark.parametrize(
        "field", ["self_mask_commitment", "mask_public_key", "encryption_public_key"]
    )
    def test_own_entry_altered_is_refused(self, field: str) -> None:
        config, session, nonce, entries = self._setup()
        entries[0] = dataclasses.replace(entries[0], **{field: flip(getattr(entries[0], field))})
        assert_refused(
            session.clients[0],
            reseeded(config, nonce, entries),
            "key directory does not hold this client's keys",
        )
        # The other clients' own entries are intact: they would answer.
        assert isinstance(session.clients[1].handle(reseeded(config, nonce, entries)), ShareKeys)

    def test_own_entry_missing_is_refused(self) -> None:
        config, session, nonce, entries = self._setup()
        assert_refused(
            session.clients[0],
            reseeded(config, nonce, entries[1:]),
            "does not hold this client's keys",
        )

    def test_repeated_id_is_refused(self) -> None:
        config, session, nonce, entries = self._setup()
        copy = dataclasses.replace(
            entries[2], mask_public_key=b"\x31" * 32, encryption_public_key=b"\x32" * 32
        )
        assert_refused(
            session.clients[0],
            reseeded(config, nonce, [*entries[:3], copy, *entries[3:]]),
            "key directory repeats a client",
        )

    @pytest.mark.parametrize(
        "target, source",
        [
            ("mask_public_key", "mask_public_key"),
            ("encryption_public_key", "encryption_public_key"),
            ("encryption_public_key", "mask_public_key"),
        ],
    )
    def test_repeated_public_key_is_refused(self, target: str, source: str) -> None:
        config, session, nonce, entries = self._setup()
        entries[3] = dataclasses.replace(entries[3], **{target: getattr(entries[1], source)})
        assert_refused(
            session.clients[0],
            reseeded(config, nonce, entries),
            "key directory repeats a public key (client 3)",
        )

    def test_a_peer_copying_this_clients_key_is_refused(self) -> None:
        config, session, nonce, entries = self._setup()
        entries[4] = dataclasses.replace(entries[4], mask_public_key=entries[0].mask_public_key)
        assert_refused(
            session.clients[0], reseeded(config, nonce, entries), "repeats a public key (client 4)"
        )

    def test_more_than_n_entries_is_refused(self) -> None:
        n = 5
        config, session, nonce, entries = self._setup(n)
        extra = KeyEntry(9, b"\x51" * 32, b"\x52" * 32, b"\x53" * 32)
        assert len(entries) == n
        assert_refused(
            session.clients[0],
            reseeded(config, nonce, [*entries, extra]),
            "key directory lists more clients than the session allows",
        )

    def test_fewer_than_t_neighbours_is_refused(self) -> None:
        config, session, nonce, entries = self._setup(n=6, t=3)
        assert_refused(
            session.clients[0],
            reseeded(config, nonce, entries[:3]),  # itself and 2 < t = 3 others
            "only 2 neighbours advertised keys; threshold t=3",
        )
        # Exactly t neighbours are enough.
        assert isinstance(
            session.clients[1].handle(reseeded(config, nonce, entries[:4])), ShareKeys
        )

    def test_fewer_than_t_harary_neighbours_is_refused(self) -> None:
        # SecAgg+: n = 8, k = 4 but t = 4 cannot be reached with fewer than 5 entries.
        n = 8
        config = make_config(n, t=4, d=6, graph="harary", degree=4)
        session = Session.create(config, n, seed="harary-few")
        nonce = session.inbox[0].nonce
        session.round()
        entries = list(session.inbox[0].entries)
        assert_refused(
            session.clients[0],
            reseeded(config, nonce, entries[:4]),
            "only 3 neighbours advertised keys; threshold t=4",
        )


# ---- ShareRouting ------------------------------------------------------------------------


def routing_session(config: SecAggConfig, n: int, seed: str) -> Session:
    session = Session.create(config, n, seed=seed)
    session.round()
    session.round()
    assert session.server.stage is Stage.MASKED_INPUT_COLLECTION
    return session


class TestShareRouting:
    def _harary(self):
        n = 8
        config = make_config(n, t=3, d=6, graph="harary", degree=4)
        session = Session.create(config, n, seed="routing-harary")
        session.round()
        directory = session.inbox[0]
        graph = build_graph(config, [e.client_id for e in directory.entries], directory.graph_seed)
        session.round()
        return session, graph

    def test_shares_from_a_non_neighbour_are_refused(self) -> None:
        session, graph = self._harary()
        v = 0
        routing = session.inbox[v]
        assert [u for u, _ in routing.ciphertexts] == sorted(graph.neighbours(v))
        w = min(set(range(8)) - graph.neighbours(v) - {v})
        x = min(graph.neighbours(w))  # w's genuine ciphertext for its neighbour x
        blob = dict(session.inbox[x].ciphertexts)[w]
        forged = ShareRouting(tuple(sorted((*routing.ciphertexts, (w, blob)))))
        assert_refused(
            session.clients[v], forged, f"received shares from client {w}, not a neighbour"
        )

    def test_a_correctly_encrypted_share_from_a_non_neighbour_is_refused(self) -> None:
        # w seals a well-formed plaintext for v under their real share key: only the
        # neighbour check stands between it and v's held shares.
        session, graph = self._harary()
        v = 0
        w = min(set(range(8)) - graph.neighbours(v) - {v})
        sender = session.clients[w]
        key = sender._share_key(w, v)
        plaintext = struct.pack("<II", w, v) + bytes(80)
        blob = crypto.aead_encrypt(
            key, b"\x07" * 12, plaintext, session=sender._session, sender=w, recipient=v
        )
        assert len(blob) == 116
        routing = session.inbox[v]
        forged = ShareRouting(tuple(sorted((*routing.ciphertexts, (w, blob)))))
        assert_refused(
            session.clients[v], forged, f"received shares from client {w}, not a neighbour"
        )

    def test_fewer_than_t_senders_are_refused(self) -> None:
        session, _ = self._harary()
        routing = session.inbox[1]
        assert len(routing.ciphertexts) == 4
        assert_refused(
            session.clients[1],
            ShareRouting(routing.ciphertexts[:2]),
            "only 2 neighbours shared keys; threshold t=3",
        )
        # Exactly t senders are enough.
        assert isinstance(
            session.clients[2].handle(ShareRouting(session.inbox[2].ciphertexts[:3])), MaskedInput
        )

    def test_fewer_than_t_senders_complete_graph(self) -> None:
        n = 5
        session = routing_session(make_config(n, t=4, d=6), n, "routing-few")
        routing = session.inbox[0]
        assert_refused(
            session.clients[0],
            ShareRouting(routing.ciphertexts[:3]),
            "only 3 neighbours shared keys; threshold t=4",
        )
        assert_refused(session.clients[1], ShareRouting(()), "only 0 neighbours shared keys")


class TestReplayedCiphertexts:
    def _setup(self):
        n = 5
        return routing_session(make_config(n, t=3, d=6), n, "replay-shares")

    def test_ciphertext_relabelled_as_from_another_sender_fails_to_decrypt(self) -> None:
        session = self._setup()
        routing = dict(session.inbox[0].ciphertexts)
        routing[2] = routing[1]  # 1 -> 0's ciphertext, delivered as if from 2
        assert_refused(
            session.clients[0],
            ShareRouting(tuple(sorted(routing.items()))),
            "shares from client 2 failed to decrypt",
        )

    def test_ciphertext_replayed_to_another_recipient_fails_to_decrypt(self) -> None:
        session = self._setup()
        for_0 = dict(session.inbox[0].ciphertexts)[1]  # 1 -> 0
        routing = dict(session.inbox[3].ciphertexts)
        routing[1] = for_0  # delivered to 3, as from its true sender 1
        assert_refused(
            session.clients[3],
            ShareRouting(tuple(sorted(routing.items()))),
            "shares from client 1 failed to decrypt",
        )

    def test_ciphertext_replayed_by_its_own_recipient_fails_to_decrypt(self) -> None:
        # 1 -> 0's ciphertext handed back to 1 as if 0 had sent it to 1.
        session = self._setup()
        for_0 = dict(session.inbox[0].ciphertexts)[1]
        routing = dict(session.inbox[1].ciphertexts)
        routing[0] = for_0
        assert_refused(
            session.clients[1],
            ShareRouting(tuple(sorted(routing.items()))),
            "shares from client 0 failed to decrypt",
        )

    def test_the_genuine_routing_is_accepted(self) -> None:
        session = self._setup()
        assert isinstance(session.clients[0].handle(session.inbox[0]), MaskedInput)


# ---- ConsistencyRequest ------------------------------------------------------------------


class TestConsistencyRequest:
    def _setup(self) -> Session:
        # Client 5 never advertises keys; U1 = U3 = {0, ..., 4}.
        n = 6
        config = make_config(n, t=3, d=6, authenticated=True)
        session = Session.create_authenticated(config, n, seed="consistency-request")
        session.round(skip={5})
        session.round()
        session.round()
        assert session.server.stage is Stage.CONSISTENCY_CHECK
        assert session.inbox[0] == ConsistencyRequest((0, 1, 2, 3, 4))
        return session

    def test_request_omitting_the_client_is_refused(self) -> None:
        session = self._setup()
        assert_refused(
            session.clients[0],
            ConsistencyRequest((1, 2, 3, 4)),
            "consistency check omits this client",
        )

    @pytest.mark.parametrize("stranger", [5, 99])
    def test_request_naming_a_client_that_never_advertised_is_refused(self, stranger: int) -> None:
        session = self._setup()
        assert_refused(
            session.clients[1],
            ConsistencyRequest((0, 1, 2, 3, 4, stranger)),
            "consistency check names clients that never advertised keys",
        )

    def test_request_with_fewer_than_t_ids_is_refused(self) -> None:
        session = self._setup()
        assert_refused(
            session.clients[0], ConsistencyRequest((0, 1)), "only 2 survivors; threshold t=3"
        )
        # Exactly t ids are signed.
        assert isinstance(
            session.clients[2].handle(ConsistencyRequest((0, 1, 2))), ConsistencyCheck
        )

    def test_the_genuine_request_is_signed(self) -> None:
        session = self._setup()
        reply = session.clients[0].handle(session.inbox[0])
        assert isinstance(reply, ConsistencyCheck)


# ---- UnmaskingRequest (authenticated) ----------------------------------------------------


class TestAuthenticatedUnmaskingRequest:
    N, T = 7, 4  # 2t > k + c = 6 + 0

    def _setup(self) -> tuple[Session, UnmaskingRequest]:
        # Client 6 shares keys but sends no masked input: U2 = {0..6}, U3 = {0..5}.
        config = make_config(self.N, t=self.T, d=6, authenticated=True)
        assert config.threshold == self.T
        session = Session.create_authenticated(config, self.N, seed="auth-unmask")
        session.round()
        session.round()
        session.round(skip={6})
        session.round()
        assert session.server.stage is Stage.UNMASKING
        request = session.inbox[0]
        assert isinstance(request, UnmaskingRequest)
        assert request.all_survivors == (0, 1, 2, 3, 4, 5)
        assert request.survivors == (1, 2, 3, 4, 5) and request.dropped == (6,)
        assert [i for i, _ in request.signatures] == [0, 1, 2, 3, 4, 5]
        return session, request

    def test_the_genuine_request_and_exactly_t_signatures_are_answered(self) -> None:
        session, request = self._setup()
        exactly_t = dataclasses.replace(request, signatures=request.signatures[: self.T])
        assert isinstance(session.clients[0].handle(exactly_t), UnmaskingResponse)
        assert isinstance(session.clients[1].handle(session.inbox[1]), UnmaskingResponse)

    def test_t_minus_1_valid_signatures_are_refused(self) -> None:
        session, request = self._setup()
        short = dataclasses.replace(request, signatures=request.signatures[: self.T - 1])
        assert_refused(
            session.clients[0],
            short,
            f"only {self.T - 1} valid consistency signatures; threshold t={self.T}",
        )

    def test_a_non_member_signature_does_not_make_up_the_count(self) -> None:
        session, request = self._setup()
        # Client 6 is enrolled and signs (session_id, U3) validly, but it is not in U3.
        payload = consistency_payload(session.clients[0]._session, request.all_survivors)
        outsider = crypto.sign(identity(6), *payload)
        padded = dataclasses.replace(
            request, signatures=(*request.signatures[: self.T - 1], (6, outsider))
        )
        assert_refused(
            session.clients[0], padded, f"only {self.T - 1} valid consistency signatures"
        )

    def test_an_invalid_signature_does_not_make_up_the_count(self) -> None:
        session, request = self._setup()
        i, sig = request.signatures[self.T - 1]
        padded = dataclasses.replace(
            request, signatures=(*request.signatures[: self.T - 1], (i, flip(sig, 5)))
        )
        assert_refused(
            session.clients[0], padded, f"only {self.T - 1} valid consistency signatures"
        )

    @pytest.mark.parametrize(
        "altered", [(0, 1, 2, 3, 4, 5, 6), (0, 1, 2, 3, 4), (0, 1, 2, 3, 5, 6)]
    )
    def test_altered_all_survivors_are_refused(self, altered: tuple[int, ...]) -> None:
        session, request = self._setup()
        assert_refused(
            session.clients[0],
            dataclasses.replace(request, all_survivors=altered),
            "unmasking request contradicts the survivor set this client signed",
        )

    def test_a_refused_request_reveals_nothing_later(self) -> None:
        session, _ = self._setup()
        client = session.clients[2]
        assert_refused(
            client, dataclasses.replace(session.inbox[2], signatures=()), "valid consistency"
        )
        assert client.handle(session.inbox[2]) is None
        assert client.stage is Stage.ABORTED
