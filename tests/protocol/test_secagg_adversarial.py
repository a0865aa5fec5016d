"""Malicious or broken peers: the invariants of docs/PROTOCOL.md, one test each."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol.harness import Session, assert_close_to_plain, make_config, make_updates
from securefl.secagg import codec, crypto
from securefl.secagg.client import SecAggClient
from securefl.secagg.messages import (
    AdvertiseKeys,
    KeyDirectory,
    MaskedInput,
    SessionStart,
    ShareKeys,
    ShareRouting,
    Stage,
    UnmaskingRequest,
)
from securefl.testing.drbg import Drbg
from securefl.transports.inmemory import run_session


def unmasking_session(n: int = 6, t: int = 3) -> tuple[Session, dict]:
    """A session where clients 0..n-2 sent masked inputs and n-1 dropped before."""
    config = make_config(n, t=t, d=12)
    session = Session.create(config, n, seed="unmask")
    session.run_until(Stage.MASKED_INPUT_COLLECTION)
    session.round(skip={n - 1})
    assert session.server.stage is Stage.UNMASKING
    return session, session.inbox


class TestUnmaskingRequests:
    """A client reveals, for any peer, one share or the other, never both."""

    def test_honest_request_reveals_one_share_per_peer(self) -> None:
        session, inbox = unmasking_session()
        request = inbox[0]
        assert request.dropped == (5,) and request.survivors == (1, 2, 3, 4)
        response = session.clients[0].handle(request)
        assert [i for i, _ in response.self_mask_shares] == [1, 2, 3, 4]
        assert [i for i, _ in response.key_shares] == [5]
        assert session.clients[0].stage is Stage.COMPLETED

    def test_overlapping_sets_are_refused(self) -> None:
        session, _ = unmasking_session()
        bad = UnmaskingRequest(survivors=(1, 2, 3, 4, 5), dropped=(5,))
        assert session.clients[0].handle(bad) is None
        assert session.clients[0].stage is Stage.ABORTED
        assert "both survivor and dropped" in session.clients[0].abort_reason

    def test_unknown_ids_are_refused(self) -> None:
        session, _ = unmasking_session()
        bad = UnmaskingRequest(survivors=(1, 2, 3, 4, 77), dropped=(5,))
        assert session.clients[1].handle(bad) is None
        assert "holds no shares of" in session.clients[1].abort_reason

    def test_contradicting_request_is_refused(self) -> None:
        # Claims survivor 4 dropped: its key share would then unmask 4's update.
        session, _ = unmasking_session()
        bad = UnmaskingRequest(survivors=(1, 2, 3), dropped=(4, 5))
        response = session.clients[0].handle(bad)
        # Client 0 cannot know 4 survived in semi-honest mode: it answers, but only
        # ever one share per peer; asking again for the other share is refused.
        assert response is not None
        again = UnmaskingRequest(survivors=(1, 2, 3, 4, 5), dropped=())
        assert session.clients[0].handle(again) is None
        assert session.clients[0].stage is Stage.COMPLETED

    def test_incomplete_request_is_refused(self) -> None:
        session, _ = unmasking_session()
        bad = UnmaskingRequest(survivors=(1, 3), dropped=(5,))
        assert session.clients[2].handle(bad) is None
        assert "does not account for every neighbour" in session.clients[2].abort_reason

    def test_authenticated_client_refuses_a_request_contradicting_the_signed_set(self) -> None:
        n = 6
        config = make_config(n, t=3, d=12, authenticated=True)
        session = Session.create_authenticated(config, n, seed="auth-contradict")
        clients = session.clients
        session.run_until(Stage.CONSISTENCY_CHECK)
        session.round()
        request = session.inbox[0]
        assert request.all_survivors == tuple(range(n))
        # The same signatures, but 4 moved to "dropped": refused.
        forged = dataclasses.replace(request, survivors=(1, 2, 3, 5), dropped=(4,))
        assert clients[0].handle(forged) is None
        assert "contradicts" in clients[0].abort_reason
        # A request whose signatures are missing is refused too.
        unsigned = dataclasses.replace(session.inbox[1], signatures=())
        assert clients[1].handle(unsigned) is None
        assert "valid consistency signatures" in clients[1].abort_reason


class TestServerRejections:
    def test_duplicate_public_keys_drop_both_clients(self) -> None:
        n = 7
        config = make_config(n, t=3, d=10)
        updates, weights = make_updates(n, config.dimension)

        def copy_keys(cid, stage, wire):
            if stage is Stage.ADVERTISE_KEYS and cid == 1:
                stolen = copied["0"]
                return codec.encode(dataclasses.replace(codec.decode(wire), mask_public_key=stolen))
            if stage is Stage.ADVERTISE_KEYS and cid == 0:
                copied["0"] = codec.decode(wire).mask_public_key
            return wire

        copied: dict[str, bytes] = {}
        report = run_session(config, updates, weights, rng=Drbg("dup"), tamper=copy_keys)
        assert report.stage is Stage.COMPLETED, report.abort_reason
        assert report.result.contributors == (2, 3, 4, 5, 6)
        assert {r.sender for r in report.rejections} == {0, 1}
        assert_close_to_plain(config, report.result, updates, weights)

    def test_replayed_and_out_of_round_messages_are_rejected(self) -> None:
        n = 5
        config = make_config(n, t=3, d=10)
        session = Session.create(config, n, seed="replay")
        advertised = session.round()
        shares = session.round()
        # Replay of round 0 during round 2, and a duplicate of round 1.
        assert not session.server.receive(0, advertised[0])
        assert not session.server.receive(1, shares[1])
        masked = session.deliver()
        assert session.server.receive(2, masked[2])
        assert not session.server.receive(2, masked[2])  # counted once, not twice
        for cid, m in masked.items():
            if cid != 2:
                session.server.receive(cid, m)
        session.inbox = session.server.close_round()
        session.round()
        reasons = [r.reason for r in session.server.rejections]
        assert any("out of round" in r for r in reasons)
        assert sum("duplicate MaskedInput" in r for r in reasons) == 1
        assert session.server.stage is Stage.COMPLETED
        updates, weights = make_updates(n, config.dimension)
        assert_close_to_plain(config, session.server.result, updates, weights)

    def test_spoofed_sender_is_rejected(self) -> None:
        session = Session.create(make_config(4, t=2, d=4), 4, seed="spoof")
        replies = session.deliver()
        assert not session.server.receive(3, replies[0])
        assert "another sender" in session.server.rejections[-1].reason

    def test_forged_share_ciphertext_makes_its_recipient_drop_out(self) -> None:
        n = 6
        config = make_config(n, t=3, d=10)
        updates, weights = make_updates(n, config.dimension)

        def forge(cid, stage, wire):
            if stage is Stage.SHARE_KEYS and cid == 0:
                m = codec.decode(wire)
                (to, blob), *rest = m.ciphertexts  # the ciphertext for client 1
                flipped = blob[:-1] + bytes([blob[-1] ^ 1])
                return codec.encode(ShareKeys(m.sender, ((to, flipped), *rest)))
            return wire

        report = run_session(config, updates, weights, rng=Drbg("forge"), tamper=forge)
        assert report.client_stages[1] is Stage.ABORTED
        assert report.stage is Stage.COMPLETED, report.abort_reason
        assert report.result.contributors == (0, 2, 3, 4, 5)
        assert_close_to_plain(config, report.result, updates, weights)

    def test_malformed_upload_is_dropped_not_fatal(self) -> None:
        n = 6
        config = make_config(n, t=3, d=10)
        updates, weights = make_updates(n, config.dimension)

        def truncate(cid, stage, wire):
            return wire[:-3] if (stage is Stage.MASKED_INPUT_COLLECTION and cid == 4) else wire

        report = run_session(config, updates, weights, rng=Drbg("trunc"), tamper=truncate)
        assert report.stage is Stage.COMPLETED
        assert report.result.contributors == (0, 1, 2, 3, 5)
        assert any("undecodable" in r.reason for r in report.rejections)
        assert_close_to_plain(config, report.result, updates, weights)

    def test_wrong_length_masked_vector_is_rejected(self) -> None:
        session = Session.create(make_config(4, t=2, d=8), 4, seed="len")
        session.round()
        session.round()
        masked = session.deliver()
        short = MaskedInput(0, 32, masked[0].vector[:-1].copy())
        assert not session.server.receive(0, short)
        assert "elements" in session.server.rejections[-1].reason


class TestSignatures:
    def _run(self, tamper=None, enrolled_subset=None):
        n = 6
        config = make_config(n, t=3, d=10, authenticated=True)
        updates, weights = make_updates(n, config.dimension)
        keys = {i: Ed25519PrivateKey.from_private_bytes(bytes([i + 7]) * 32) for i in range(n)}
        return (
            config,
            updates,
            weights,
            run_session(
                config, updates, weights, identity_keys=keys, rng=Drbg("sig"), tamper=tamper
            ),
        )

    def test_mis_signed_client_is_rejected(self) -> None:
        def resign(cid, stage, wire):
            if stage is Stage.ADVERTISE_KEYS and cid == 3:
                m = codec.decode(wire)
                bad = Ed25519PrivateKey.from_private_bytes(b"\x55" * 32).sign(b"nonsense")
                return codec.encode(dataclasses.replace(m, signature=bad))
            return wire

        config, updates, weights, report = self._run(resign)
        assert report.stage is Stage.COMPLETED, report.abort_reason
        assert 3 not in report.result.contributors
        assert any(r.sender == 3 and "signature is invalid" in r.reason for r in report.rejections)
        assert_close_to_plain(config, report.result, updates, weights)

    def test_unenrolled_client_is_rejected(self) -> None:
        config = make_config(4, t=2, d=4, authenticated=True)
        from securefl.secagg.server import SecAggServer

        server = SecAggServer(config, identity_public_keys={0: b"\x01" * 32}, rng=Drbg("x"))
        server.start()
        assert not server.receive(
            9, AdvertiseKeys(9, b"\x02" * 32, b"\x03" * 32, b"\x05" * 32, b"\x04" * 64)
        )
        assert "not enrolled" in server.rejections[-1].reason

    def test_client_refuses_a_directory_with_a_mis_signed_peer(self) -> None:
        n = 4
        config = make_config(n, t=2, d=4, authenticated=True)
        keys = {i: Ed25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32) for i in range(n)}
        public = {i: crypto.public_bytes(k) for i, k in keys.items()}
        updates, _ = make_updates(n, 4)
        client = SecAggClient(
            0,
            config,
            updates[0],
            1,
            identity_key=keys[0],
            identity_public_keys=public,
            rng=Drbg("c"),
        )
        start = SessionStart(b"\x09" * 32, config.digest())
        mine = client.handle(start)
        from securefl.secagg.messages import KeyEntry

        fake = KeyEntry(1, b"\x11" * 32, b"\x12" * 32, b"\x14" * 32, b"\x13" * 64)
        own = KeyEntry(
            0,
            mine.mask_public_key,
            mine.encryption_public_key,
            mine.self_mask_commitment,
            mine.signature,
        )
        assert client.handle(KeyDirectory(b"\x00" * 16, (own, fake))) is None
        assert "mis-signed" in client.abort_reason


class TestClientChecks:
    def _client(self, config=None):
        config = config or make_config(4, t=2, d=4)
        updates, _ = make_updates(4, config.dimension)
        return config, SecAggClient(0, config, updates[0], 1, rng=Drbg("client"))

    def test_configuration_mismatch_aborts(self) -> None:
        _, client = self._client()
        other = make_config(4, t=2, d=5)
        assert client.handle(SessionStart(b"\x00" * 32, other.digest())) is None
        assert client.stage is Stage.ABORTED
        assert "configuration" in client.abort_reason

    def test_out_of_round_message_aborts(self) -> None:
        _, client = self._client()
        assert client.handle(ShareRouting(())) is None
        assert "unexpected ShareRouting" in client.abort_reason

    def test_directory_without_own_keys_aborts(self) -> None:
        config, client = self._client()
        client.handle(SessionStart(b"\x00" * 32, config.digest()))
        from securefl.secagg.messages import KeyEntry

        others = tuple(
            KeyEntry(i, bytes([i]) * 32, bytes([i + 9]) * 32, bytes([i + 20]) * 32)
            for i in (1, 2, 3)
        )
        assert client.handle(KeyDirectory(b"\x00" * 16, others)) is None
        assert "does not hold this client's keys" in client.abort_reason

    def test_secrets_not_in_repr_and_not_picklable(self) -> None:
        import pickle

        _, client = self._client()
        assert repr(client) == "SecAggClient(id=0, stage=AdvertiseKeys)"
        with pytest.raises(TypeError, match="pickled"):
            pickle.dumps(client)

    def test_bad_updates_are_refused_up_front(self) -> None:
        config = make_config(4, t=2, d=4)
        with pytest.raises(ValueError, match="flat vector of 4"):
            SecAggClient(0, config, np.zeros(5, np.float32))
        with pytest.raises(ValueError, match=r"client 2: update\[1\] = nan is not finite"):
            SecAggClient(2, config, np.array([0, np.nan, 0, 0], np.float32))
        with pytest.raises(ValueError, match=r"client 3: weight must be in \[1, 10\], got 11"):
            SecAggClient(3, config, np.zeros(4, np.float32), weight=11)
        with pytest.raises(TypeError):
            SecAggClient(0, config, np.zeros(4, np.int32))
