"""The server's checks of docs/PROTOCOL.md ("Checks", Server), one test each.

A failed check rejects that one message: ``receive`` returns False and a
``Rejection`` with the reason and the open stage is recorded; nothing of the message
is kept, so the sender may still send a valid one. Round-close checks abort the
session before the next round's messages go out.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol.harness import Session, assert_close_to_plain, make_config, make_updates
from securefl.secagg import codec, crypto
from securefl.secagg.config import MAX_CLIENT_ID, SecAggConfig
from securefl.secagg.messages import (
    Abort,
    AdvertiseKeys,
    ConsistencyCheck,
    ConsistencyRequest,
    KeyDirectory,
    MaskedInput,
    ShareKeys,
    ShareRouting,
    Stage,
    UnmaskingRequest,
)
from securefl.secagg.server import SecAggServer
from securefl.secagg.signing import consistency_payload
from securefl.secagg.topology import build_graph
from securefl.testing.drbg import Drbg
from securefl.transports.inmemory import run_session

CIPHERTEXT_BYTES = 116  # nonce (12) || ids (8) || two 40-byte shares || tag (16)


def assert_rejected(server: SecAggServer, sender: int, message, fragment: str) -> None:
    """``message`` from ``sender`` is refused, with ``fragment`` in the recorded reason."""
    before = len(server.rejections)
    stage = server.stage
    assert server.receive(sender, message) is False
    assert len(server.rejections) == before + 1
    rejection = server.rejections[-1]
    assert rejection.sender == sender
    assert rejection.stage is stage
    assert fragment in rejection.reason, rejection.reason
    assert server.stage is stage  # a rejected message never ends or aborts the round


def finish(session: Session, pending: dict) -> None:
    """Hand the server the still-pending valid replies, close, and run to the end."""
    for cid, reply in pending.items():
        assert session.server.receive(cid, reply), session.server.rejections[-1]
    session.inbox = session.server.close_round()
    while session.server.stage not in (Stage.COMPLETED, Stage.ABORTED):
        session.round()


def assert_completed_correctly(session: Session, n: int) -> None:
    server = session.server
    assert server.stage is Stage.COMPLETED, server.abort_reason
    updates, weights = make_updates(n, session.config.dimension)
    assert_close_to_plain(session.config, server.result, updates, weights)


def fake_advertise(cid: int, byte: int) -> AdvertiseKeys:
    return AdvertiseKeys(cid, bytes([byte]) * 32, bytes([byte + 1]) * 32, bytes([byte + 2]) * 32)


# ---- AdvertiseKeys ----------------------------------------------------------------------


class TestAdvertiseKeys:
    def _session(self, n: int = 4, t: int = 2) -> tuple[Session, dict]:
        session = Session.create(make_config(n, t=t, d=6), n, seed="advertise-checks")
        return session, session.deliver()

    def test_id_2_pow_32_minus_1_is_out_of_range(self) -> None:
        session, _ = self._session()
        bad = 2**32 - 1
        assert_rejected(
            session.server, bad, fake_advertise(bad, 1), f"client id {bad} is out of range"
        )
        # The largest id, 2^32 - 2 (Shamir index 2^32 - 1), is in range.
        assert session.server.receive(MAX_CLIENT_ID, fake_advertise(MAX_CLIENT_ID, 1))

    def test_the_n_plus_first_client_finds_the_session_full(self) -> None:
        n = 4
        session, replies = self._session(n)
        for cid, reply in replies.items():
            assert session.server.receive(cid, reply)
        assert_rejected(
            session.server, 77, fake_advertise(77, 50), f"session is full ({n} clients)"
        )
        directory = session.server.close_round()[0]
        assert isinstance(directory, KeyDirectory)
        assert [e.client_id for e in directory.entries] == [0, 1, 2, 3]

    @pytest.mark.parametrize("field", ["mask_public_key", "encryption_public_key"])
    def test_a_31_byte_public_key_is_rejected(self, field: str) -> None:
        session, replies = self._session()
        short = dataclasses.replace(replies[0], **{field: getattr(replies[0], field)[:31]})
        assert_rejected(session.server, 0, short, "public keys must be 32 bytes")
        # Nothing of the rejected message was kept: the valid one is not a duplicate.
        assert session.server.receive(0, replies[0])

    def test_a_31_byte_commitment_is_rejected(self) -> None:
        session, replies = self._session()
        short = dataclasses.replace(
            replies[1], self_mask_commitment=replies[1].self_mask_commitment[:31]
        )
        assert_rejected(session.server, 1, short, "self-mask commitment must be 32 bytes")
        assert session.server.receive(1, replies[1])

    def test_duplicate_advertise_keys_is_rejected_and_the_first_kept(self) -> None:
        session, replies = self._session()
        assert session.server.receive(2, replies[2])
        other = dataclasses.replace(replies[2], mask_public_key=b"\x42" * 32)
        assert_rejected(session.server, 2, other, "duplicate AdvertiseKeys")
        assert_rejected(session.server, 2, replies[2], "duplicate AdvertiseKeys")
        for cid, reply in replies.items():
            if cid != 2:
                session.server.receive(cid, reply)
        directory = session.server.close_round()[0]
        entry = next(e for e in directory.entries if e.client_id == 2)
        assert entry.mask_public_key == replies[2].mask_public_key


# ---- ShareKeys --------------------------------------------------------------------------


def share_keys_session(config: SecAggConfig, n: int, skip: frozenset[int] = frozenset()):
    session = Session.create(config, n, seed="share-checks")
    session.round(skip=set(skip))
    assert session.server.stage is Stage.SHARE_KEYS
    return session, session.deliver()


class TestShareKeys:
    def test_sender_not_in_u1_is_rejected(self) -> None:
        n = 5
        session, replies = share_keys_session(make_config(n, t=3, d=6), n, skip=frozenset({4}))
        assert 4 not in replies  # it never saw a directory
        forged = ShareKeys(4, tuple((v, b"\x00" * CIPHERTEXT_BYTES) for v in range(4)))
        assert_rejected(session.server, 4, forged, "sender did not advertise keys")
        finish(session, replies)
        assert session.server.result.contributors == (0, 1, 2, 3)

    @pytest.mark.parametrize("change", ["missing", "extra", "self", "unknown"])
    def test_recipients_must_be_exactly_the_neighbours_complete(self, change: str) -> None:
        n = 5
        session, replies = share_keys_session(make_config(n, t=3, d=6), n)
        m = replies[0]
        blob = m.ciphertexts[0][1]
        ciphertexts = {
            "missing": m.ciphertexts[:-1],
            "extra": (*m.ciphertexts, (9, blob)),
            "self": ((0, blob), *m.ciphertexts),
            "unknown": (*m.ciphertexts[:-1], (9, blob)),
        }[change]
        bad = ShareKeys(0, ciphertexts)
        assert_rejected(session.server, 0, bad, "must address exactly the sender's neighbours")
        finish(session, replies)
        assert_completed_correctly(session, n)

    def test_recipients_must_be_exactly_the_harary_neighbours(self) -> None:
        n = 8
        config = make_config(n, t=3, d=6, graph="harary", degree=4)
        session, replies = share_keys_session(config, n)
        m = replies[0]
        assert len(m.ciphertexts) == 4  # k neighbours, not n - 1
        directory = next(iter(session.inbox.values()))
        graph = build_graph(config, [e.client_id for e in directory.entries], directory.graph_seed)
        assert [r for r, _ in m.ciphertexts] == sorted(graph.neighbours(0))
        outsider = min(set(range(1, n)) - graph.neighbours(0))
        blob = m.ciphertexts[0][1]
        # Swapping one neighbour for a non-neighbour keeps the count but not the set.
        swapped = tuple(sorted(((outsider, blob), *m.ciphertexts[1:])))
        assert_rejected(session.server, 0, ShareKeys(0, swapped), "exactly the sender's neighbours")
        # Addressing everyone (the complete graph's neighbours) is refused too.
        everyone = tuple((v, blob) for v in range(1, n))
        assert_rejected(
            session.server, 0, ShareKeys(0, everyone), "exactly the sender's neighbours"
        )
        assert session.server.receive(0, m)

    @pytest.mark.parametrize("size", [CIPHERTEXT_BYTES - 1, CIPHERTEXT_BYTES + 1, 0])
    def test_ciphertext_of_the_wrong_size_is_rejected(self, size: int) -> None:
        n = 5
        session, replies = share_keys_session(make_config(n, t=3, d=6), n)
        m = replies[1]
        assert all(len(blob) == CIPHERTEXT_BYTES for _, blob in m.ciphertexts)
        (to, blob), *rest = m.ciphertexts
        resized = (blob * 2)[:size]
        assert_rejected(
            session.server,
            1,
            ShareKeys(1, ((to, resized), *rest)),
            "share ciphertext has the wrong size",
        )
        finish(session, replies)
        assert_completed_correctly(session, n)

    def test_duplicate_share_keys_is_rejected(self) -> None:
        n = 5
        session, replies = share_keys_session(make_config(n, t=3, d=6), n)
        assert session.server.receive(3, replies[3])
        assert_rejected(session.server, 3, replies[3], "duplicate ShareKeys")


# ---- MaskedInput ------------------------------------------------------------------------


def masked_input_session(config: SecAggConfig, n: int, skip: frozenset[int] = frozenset()):
    session = Session.create(config, n, seed="masked-checks")
    session.round()
    session.round(skip=set(skip))
    assert session.server.stage is Stage.MASKED_INPUT_COLLECTION
    return session, session.deliver()


class TestMaskedInput:
    def test_wrong_bits_are_rejected(self) -> None:
        n = 5
        session, replies = masked_input_session(make_config(n, t=3, d=6, bits=32), n)
        v = replies[0].vector
        assert_rejected(session.server, 0, MaskedInput(0, 31, v), "masked vector must be in Z_2^32")
        assert_rejected(
            session.server, 0, MaskedInput(0, 64, v.astype(np.uint64)), "must be in Z_2^32"
        )
        finish(session, replies)
        assert_completed_correctly(session, n)

    def test_uint64_words_for_a_32_bit_ring_are_rejected(self) -> None:
        n = 5
        session, replies = masked_input_session(make_config(n, t=3, d=6, bits=32), n)
        wide = replies[2].vector.astype(np.uint64)  # same values, wrong dtype
        assert_rejected(
            session.server, 2, MaskedInput(2, 32, wide), "masked vector must be in Z_2^32 (uint32)"
        )
        finish(session, replies)
        assert_completed_correctly(session, n)

    @pytest.mark.parametrize("value", [2**20, 2**32 - 1])
    def test_a_word_at_or_above_2_pow_b_is_rejected(self, value: int) -> None:
        n = 5
        session, replies = masked_input_session(make_config(n, t=3, d=6, bits=20), n)
        v = np.array(replies[1].vector, dtype=np.uint32)
        assert int(v.max()) < 2**20
        v[3] = value  # not encodable: built directly, past the codec
        assert_rejected(
            session.server, 1, MaskedInput(1, 20, v), "masked vector has elements outside Z_2^20"
        )
        finish(session, replies)
        assert_completed_correctly(session, n)  # the rejected vector never reached the sum

    def test_the_largest_ring_element_is_accepted(self) -> None:
        n = 5
        session, replies = masked_input_session(make_config(n, t=3, d=6, bits=20), n)
        v = np.array(replies[1].vector, dtype=np.uint32)
        v[3] = 2**20 - 1
        assert session.server.receive(1, MaskedInput(1, 20, v))

    def test_sender_that_did_not_share_keys_is_rejected(self) -> None:
        n = 5
        config = make_config(n, t=3, d=6)
        session, replies = masked_input_session(config, n, skip=frozenset({4}))
        assert 4 not in replies
        vector = np.zeros(config.dimension + 1, dtype=np.uint32)
        vector[-1] = 1
        assert_rejected(session.server, 4, MaskedInput(4, 32, vector), "sender did not share keys")
        finish(session, replies)
        assert session.server.stage is Stage.COMPLETED, session.server.abort_reason
        assert session.server.result.contributors == (0, 1, 2, 3)

    def test_duplicate_masked_input_is_rejected_and_counted_once(self) -> None:
        n = 5
        session, replies = masked_input_session(make_config(n, t=3, d=6), n)
        first = replies.pop(0)
        assert session.server.receive(0, first)
        assert_rejected(session.server, 0, first, "duplicate MaskedInput")
        finish(session, replies)
        # Added to the sum once: a second copy would leave y_0 in the result.
        assert_completed_correctly(session, n)


# ---- ConsistencyCheck (authenticated) ---------------------------------------------------


def identity(i: int) -> Ed25519PrivateKey:
    """The identity key Session.create_authenticated enrols for client i."""
    return Ed25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32)


def consistency_session(n: int = 6, skip_masked: frozenset[int] = frozenset()):
    config = make_config(n, t=3, d=6, authenticated=True)
    session = Session.create_authenticated(config, n, seed="consistency-checks")
    session.round()
    session.round()
    session.round(skip=set(skip_masked))
    assert session.server.stage is Stage.CONSISTENCY_CHECK
    return session, session.deliver()


class TestConsistencyCheck:
    def test_bad_signature_is_rejected(self) -> None:
        session, replies = consistency_session()
        sig = replies[0].signature
        flipped = sig[:10] + bytes([sig[10] ^ 1]) + sig[11:]
        assert_rejected(
            session.server, 0, ConsistencyCheck(0, flipped), "ConsistencyCheck signature is invalid"
        )
        # A valid signature by client 0, but on another survivor set, is just as bad.
        request = session.inbox[0]
        assert isinstance(request, ConsistencyRequest)
        other_set = request.survivors[:-1]
        wrong = crypto.sign(
            identity(0), *consistency_payload(session.clients[0]._session, other_set)
        )
        assert_rejected(session.server, 0, ConsistencyCheck(0, wrong), "signature is invalid")
        # Someone else's valid signature does not count for client 0 either.
        assert_rejected(
            session.server, 0, ConsistencyCheck(0, replies[1].signature), "signature is invalid"
        )
        finish(session, replies)
        assert session.server.stage is Stage.COMPLETED, session.server.abort_reason

    def test_signer_not_in_u3_is_rejected(self) -> None:
        n = 6
        session, replies = consistency_session(n, skip_masked=frozenset({5}))
        request = session.inbox[0]
        assert request.survivors == (0, 1, 2, 3, 4)
        # Client 5 is enrolled and signs U3 correctly, but it sent no masked input.
        payload = consistency_payload(session.clients[0]._session, request.survivors)
        sig = crypto.sign(identity(5), *payload)
        assert_rejected(session.server, 5, ConsistencyCheck(5, sig), "sender is not a survivor")
        for cid, reply in replies.items():
            assert session.server.receive(cid, reply)
        inbox = session.server.close_round()
        assert session.server.stage is Stage.UNMASKING, session.server.abort_reason
        assert sorted(inbox) == [0, 1, 2, 3, 4]
        for request in inbox.values():
            assert [i for i, _ in request.signatures] == [0, 1, 2, 3, 4]

    def test_duplicate_consistency_check_is_rejected(self) -> None:
        session, replies = consistency_session()
        assert session.server.receive(3, replies[3])
        assert_rejected(session.server, 3, replies[3], "duplicate ConsistencyCheck")


# ---- UnmaskingResponse ------------------------------------------------------------------


def unmasking_session(n: int = 6, t: int = 3):
    """Clients 0..n-2 sent masked inputs, n-1 dropped after sharing keys."""
    config = make_config(n, t=t, d=6)
    session = Session.create(config, n, seed="unmasking-checks")
    session.round()
    session.round()
    session.round(skip={n - 1})
    assert session.server.stage is Stage.UNMASKING
    return session, session.deliver()


class TestUnmaskingResponse:
    def test_unrequested_responder_is_rejected(self) -> None:
        session, replies = unmasking_session()
        assert 5 not in session.inbox  # dropped: never asked
        forged = dataclasses.replace(replies[0], sender=5)
        assert_rejected(session.server, 5, forged, "sender was not asked to unmask")
        finish(session, replies)
        assert session.server.stage is Stage.COMPLETED, session.server.abort_reason
        assert session.server.result.contributors == (0, 1, 2, 3, 4)

    @pytest.mark.parametrize("change", ["self_missing", "self_renamed", "key_missing", "key_extra"])
    def test_share_ids_must_be_as_requested(self, change: str) -> None:
        session, replies = unmasking_session()
        m = replies[0]
        request = session.inbox[0]
        assert isinstance(request, UnmaskingRequest)
        assert [i for i, _ in m.self_mask_shares] == list(request.survivors) == [1, 2, 3, 4]
        assert [i for i, _ in m.key_shares] == list(request.dropped) == [5]
        share = m.self_mask_shares[0][1]
        bad, fragment = {
            "self_missing": (
                dataclasses.replace(m, self_mask_shares=m.self_mask_shares[1:]),
                "self-mask shares do not match the request",
            ),
            "self_renamed": (
                dataclasses.replace(m, self_mask_shares=(*m.self_mask_shares[:-1], (5, share))),
                "self-mask shares do not match the request",
            ),
            "key_missing": (
                dataclasses.replace(m, key_shares=()),
                "key shares do not match the request",
            ),
            "key_extra": (
                dataclasses.replace(m, key_shares=(*m.key_shares, (6, share))),
                "key shares do not match the request",
            ),
        }[change]
        assert_rejected(session.server, 0, bad, fragment)
        finish(session, replies)
        assert_completed_correctly(session, 6)

    @pytest.mark.parametrize("field", ["self_mask_shares", "key_shares"])
    def test_a_39_byte_share_is_rejected(self, field: str) -> None:
        session, replies = unmasking_session()
        m = replies[2]
        (owner, share), *rest = getattr(m, field)
        assert len(share) == 40
        bad = dataclasses.replace(m, **{field: ((owner, share[:39]), *rest)})
        assert_rejected(session.server, 2, bad, "share has the wrong size")
        finish(session, replies)
        assert_completed_correctly(session, 6)

    def test_duplicate_unmasking_response_is_rejected(self) -> None:
        session, replies = unmasking_session()
        assert session.server.receive(1, replies[1])
        assert_rejected(session.server, 1, replies[1], "duplicate UnmaskingResponse")


# ---- aborts at round close --------------------------------------------------------------


def assert_no_message_of(inbox: dict, kind: type) -> None:
    assert not any(isinstance(m, kind) for m in inbox.values()), inbox


class TestAborts:
    def test_fewer_than_t_plus_1_advertisers_abort_before_any_directory(self) -> None:
        n, t = 6, 3
        session = Session.create(make_config(n, t=t, d=6), n, seed="few-u1")
        session.round(skip={3, 4, 5})  # only t = 3 advertise: U1 < t + 1
        server = session.server
        assert server.stage is Stage.ABORTED
        assert "only 3 clients advertised keys; need at least t + 1 = 4" in server.abort_reason
        assert server.result is None
        assert_no_message_of(session.inbox, KeyDirectory)
        # The advertisers never got a directory, so none of them shared anything; each
        # is told of the abort.
        assert all(isinstance(session.inbox[i], Abort) for i in (0, 1, 2))

    def test_vanished_advertisers_in_run_session_get_session_start_and_abort(self) -> None:
        n, t = 6, 3
        config = make_config(n, t=t, d=6)
        updates, weights = make_updates(n, config.dimension)
        gone = dict.fromkeys((2, 3, 4, 5), Stage.ADVERTISE_KEYS)
        report = run_session(config, updates, weights, rng=Drbg("vanish"), dropouts=gone)
        assert report.stage is Stage.ABORTED
        assert "only 2 clients advertised keys" in report.abort_reason
        assert report.result is None
        start_bytes = 5 + 32 + 32  # header, nonce, config digest
        # No KeyDirectory followed (the final Abort notice is not counted in bytes_down).
        assert report.bytes_down[0] == report.bytes_down[1] == start_bytes
        assert report.client_stages[0] is report.client_stages[1] is Stage.ABORTED
        assert report.revealed == {}

    # Failed before the fix: an abort at AdvertiseKeys close notified nobody
    # (_expected() is empty in that stage), so the advertisers waited for a directory.
    @pytest.mark.parametrize("min_survivors", [None, 5])
    def test_advertisers_are_told_of_an_abort_at_advertise_close(self, min_survivors) -> None:
        n = 6
        config = SecAggConfig(
            num_clients=n, threshold=3, dimension=6, max_weight=10, min_survivors=min_survivors
        )
        session = Session.create(config, n, seed="abort-notice")
        skip = {3, 4, 5} if min_survivors is None else {4, 5}
        session.round(skip=skip)
        assert session.server.stage is Stage.ABORTED
        advertisers = sorted(set(range(n)) - skip)
        assert sorted(session.inbox) == advertisers
        assert all(
            isinstance(m, Abort) and m.reason == session.server.abort_reason
            for m in session.inbox.values()
        )

    def test_exactly_t_plus_1_advertisers_go_on(self) -> None:
        n, t = 6, 3
        session = Session.create(make_config(n, t=t, d=6), n, seed="few-u1")
        session.round(skip={4, 5})
        assert session.server.stage is Stage.SHARE_KEYS
        assert sorted(session.inbox) == [0, 1, 2, 3]
        assert all(isinstance(m, KeyDirectory) for m in session.inbox.values())

    def test_fewer_than_min_survivors_advertisers_abort_before_any_directory(self) -> None:
        n = 6
        config = SecAggConfig(
            num_clients=n, threshold=3, dimension=6, max_weight=10, min_survivors=5
        )
        session = Session.create(config, n, seed="few-nmin")
        session.round(skip={4, 5})  # U1 = 4 >= t + 1 = 4 but < n_min = 5
        server = session.server
        assert server.stage is Stage.ABORTED
        assert "only 4 clients advertised keys" in server.abort_reason
        assert "min_survivors=5" in server.abort_reason
        assert_no_message_of(session.inbox, KeyDirectory)
        # With n_min advertisers the session goes on.
        ok = Session.create(config, n, seed="few-nmin")
        ok.round(skip={5})
        assert ok.server.stage is Stage.SHARE_KEYS

    def test_fewer_than_t_valid_consistency_signatures_abort_without_unmasking(self) -> None:
        session, replies = consistency_session()
        server = session.server
        # Two valid signatures and one bad one: only 2 < t = 3 count.
        assert server.receive(0, replies[0])
        assert server.receive(1, replies[1])
        sig = replies[2].signature
        assert not server.receive(2, ConsistencyCheck(2, bytes([sig[0] ^ 0x80]) + sig[1:]))
        inbox = server.close_round()
        assert server.stage is Stage.ABORTED
        assert "only 2 consistency signatures; threshold t=3" in server.abort_reason
        assert_no_message_of(inbox, UnmaskingRequest)
        assert inbox and all(isinstance(m, Abort) for m in inbox.values())
        assert server.result is None
        for cid, message in inbox.items():
            assert session.clients[cid].handle(message) is None
            assert session.clients[cid].stage is Stage.ABORTED


def _add_to_masked_input(client: int, index: int, delta: int):
    """A tamper hook adding ``delta`` (mod 2^b) to y_client[index], re-encoded."""

    def tamper(cid: int, stage: Stage, wire: bytes) -> bytes:
        if cid != client or stage is not Stage.MASKED_INPUT_COLLECTION:
            return wire
        m = codec.decode(wire)
        assert isinstance(m, MaskedInput)
        v = m.vector.astype(object)
        v[len(v) - 1 if index < 0 else index] += delta
        vector = np.array([x % 2**m.bits for x in v], dtype=m.vector.dtype)
        return codec.encode(MaskedInput(m.sender, m.bits, vector))

    return tamper


class TestCorruptedAggregate:
    def test_tampered_weight_element_aborts_total_weight_out_of_range(self) -> None:
        n = 5
        config = make_config(n, t=3, d=8, bits=32, max_weight=10)
        updates, weights = make_updates(n, config.dimension)
        # N + 2^31 lies far outside [|U3|, |U3| W] = [5, 50] in Z_2^32.
        report = run_session(
            config,
            updates,
            weights,
            rng=Drbg("tamper-weight"),
            tamper=_add_to_masked_input(2, -1, 2**31),
        )
        assert report.stage is Stage.ABORTED
        assert report.result is None
        assert "total weight is out of range" in report.abort_reason

    def test_untampered_control_completes(self) -> None:
        n = 5
        config = make_config(n, t=3, d=8, bits=32, max_weight=10)
        updates, weights = make_updates(n, config.dimension)
        report = run_session(
            config,
            updates,
            weights,
            rng=Drbg("tamper-weight"),
            tamper=_add_to_masked_input(2, 0, 0),
        )
        assert report.stage is Stage.COMPLETED, report.abort_reason
        assert_close_to_plain(config, report.result, updates, weights)

    def test_tampered_coordinate_beyond_the_range_aborts_corrupted(self) -> None:
        # frac_bits = 8: each encoding is at most ceil(2 c 2^p) = 512, so an honest
        # coordinate sum is at most 5 * 512 = 2560, far below 2^32; adding 2^31 moves
        # it to [2^31, 2^31 + 2560], beyond the range dequantize accepts. (With the
        # default frac_bits the range fills almost the whole ring.)
        n = 5
        config = SecAggConfig(
            num_clients=n, threshold=3, dimension=8, bits=32, clip=1.0, frac_bits=8, max_weight=10
        )
        assert config.fixed_point.max_level == 512
        updates, weights = make_updates(n, config.dimension)
        report = run_session(
            config,
            updates,
            weights,
            rng=Drbg("tamper-coord"),
            tamper=_add_to_masked_input(3, 4, 2**31),
        )
        assert report.stage is Stage.ABORTED
        assert report.result is None
        assert "aggregate is corrupted" in report.abort_reason
        assert "total weight" not in report.abort_reason  # the weight element was intact

    def test_tampered_coordinate_with_clients_dropped(self) -> None:
        n = 6
        config = SecAggConfig(
            num_clients=n, threshold=3, dimension=8, bits=32, clip=1.0, frac_bits=8, max_weight=10
        )
        updates, weights = make_updates(n, config.dimension)
        report = run_session(
            config,
            updates,
            weights,
            rng=Drbg("tamper-coord-drop"),
            dropouts={5: Stage.MASKED_INPUT_COLLECTION},
            tamper=_add_to_masked_input(0, 0, 2**31),
        )
        assert report.stage is Stage.ABORTED
        assert report.result is None
        assert "unmasked aggregate is corrupted" in report.abort_reason


def test_share_routing_names_only_u2_senders() -> None:
    """Each v is sent the ciphertexts addressed to it from N(v) ∩ U2 (client 4 sent none)."""
    n = 5
    session = Session.create(make_config(n, t=3, d=6), n, seed="routing")
    session.round()
    session.round(skip={4})
    for v, routing in session.inbox.items():
        assert isinstance(routing, ShareRouting)
        assert [u for u, _ in routing.ciphertexts] == [u for u in range(4) if u != v]
