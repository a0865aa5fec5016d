"""Who may take part, and what the server does with frames it cannot accept.

An unenrolled client, a certificate from another CA or a certificate that names another
client is refused; a malformed, oversized or out-of-round frame is rejected with a
status naming the problem, and the session of the honest clients completes unchanged.
"""

from __future__ import annotations

import struct
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from securefl.errors import ServiceError
from securefl.secagg.config import SecAggConfig
from securefl.secagg.messages import Stage
from securefl.transports.service import AggregationClient, ClientTLS, SecAggSession, framing
from securefl.transports.service.framing import Kind, Protocol
from securefl.transports.service.server import METHOD

from .conftest import UNENROLLED, assert_secagg_mean, enrolled_keys, finish, in_threads, join_all

CONFIG = SecAggConfig(num_clients=6, threshold=3, dimension=100, max_weight=10)


def client_tls(pki: Path, name: str) -> ClientTLS:
    return ClientTLS.from_files(
        str(pki / "ca.pem"), str(pki / f"{name}.pem"), str(pki / f"{name}.key")
    )


@pytest.mark.parametrize(
    ("cid", "cert", "code"),
    [
        (UNENROLLED, f"client-{UNENROLLED}", "PERMISSION_DENIED"),  # CA-signed, not enrolled
        (1, "client-2", "PERMISSION_DENIED"),  # claims another client's id
        (0, "foreign-client-0", "UNAVAILABLE"),  # another CA: the TLS handshake fails
    ],
    ids=["unenrolled", "wrong-id", "foreign-ca"],
)
def test_unenrolled_client_is_refused(serve, pki, cid: int, cert: str, code: str) -> None:
    running = serve(SecAggSession(CONFIG), enrolled=range(6))
    # A refused handshake looks like an unreachable server: the client retries until
    # its join deadline, then fails.
    client = AggregationClient(
        running.target, cid, client_tls(pki, cert), config=CONFIG, timeout=5, join_timeout=1
    )
    with client, pytest.raises(ServiceError) as info:
        client.aggregate(np.zeros(CONFIG.dimension), 1)
    assert info.value.code == code
    if code == "PERMISSION_DENIED":
        assert "not enrolled" in str(info.value) or "does not identify" in str(info.value)
    assert running.server.outcomes == []  # nothing started on its behalf


def test_client_without_certificate_is_refused_under_mutual_tls(serve, pki) -> None:
    running = serve(SecAggSession(CONFIG))
    tls = ClientTLS(server_ca=(pki / "ca.pem").read_bytes())
    client = AggregationClient(running.target, 0, tls, config=CONFIG, timeout=5, join_timeout=1)
    with client, pytest.raises(ServiceError) as info:
        client.aggregate(np.zeros(CONFIG.dimension), 1)
    assert info.value.code == "UNAVAILABLE"


class Rogue:
    """An enrolled client (id 5) that speaks raw frames."""

    def __init__(self, target: str, pki: Path) -> None:
        tls = client_tls(pki, "client-5")
        creds = grpc.ssl_channel_credentials(tls.server_ca, tls.private_key, tls.certificate)
        self.channel = grpc.secure_channel(
            target, creds, options=[("grpc.max_send_message_length", 64 << 20)]
        )
        self.call = self.channel.stream_stream(METHOD)

    def send(self, pieces: list[bytes]) -> bytes:
        """Send raw gRPC messages; return the answer's bytes (raises grpc.RpcError)."""
        return b"".join(self.call(iter(pieces), timeout=30, wait_for_ready=True))

    def join(self) -> bytes:
        """JOIN and return the session's first frame. The call stays open (the server
        counts client 5 present while it is), as a real client's does."""
        self.presence = self.call(iter([frame(Kind.JOIN, 0, 0)]), timeout=60, wait_for_ready=True)
        first = framing.read_frame(self.presence, 1 << 20)
        return first.raw_header + bytes(first.payload)

    def status(self, pieces: list[bytes]) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as info:
            self.send(pieces)
        return info.value.code(), info.value.details()


def frame(kind: Kind, session: int, round_: int, payload: bytes = b"") -> bytes:
    return b"".join(
        bytes(p) for p in framing.encode(kind, Protocol.SECAGG, 5, session, round_, payload)
    )


def test_malformed_and_oversized_frames_do_not_disturb_the_round(
    serve, clients, pki, tmp_path
) -> None:
    """Client 5 joins, then sends garbage, a frame announcing too large a payload, a
    gRPC message above the size limit, a truncated frame, an undecodable protocol
    message and a replay of another round; each is refused with a reason. The five
    honest client processes complete and receive their mean."""
    # Round 0 stays open until its deadline (client 5 never answers it validly): the
    # rogue's frames below all arrive while it is open.
    running = serve(SecAggSession(CONFIG), round_timeout=3.0)
    rogue = Rogue(running.target, pki)
    honest = [clients(i, running.target, config=CONFIG, seed=3) for i in range(5)]
    start: list[bytes] = []
    joiner = threading.Thread(target=lambda: start.append(rogue.join()))
    joiner.start()
    joiner.join(30)
    (opening,) = start
    assert opening[:4] == b"SFLS" and opening[5] == Kind.PROTOCOL

    code, details = rogue.status([b"\x00" * 100])
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a securefl service frame" in details
    header = bytearray(frame(Kind.SUBMIT, 1, 0))
    struct.pack_into("<Q", header, 24, 1 << 40)
    code, details = rogue.status([bytes(header)])
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "exceeds the limit" in details
    code, _ = rogue.status([frame(Kind.SUBMIT, 1, 0, b"\x01" * (5 << 20))])
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED  # above grpc.max_receive_message_length
    code, details = rogue.status([frame(Kind.SUBMIT, 1, 0, b"abc")[:-1]])
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "truncated" in details
    code, details = rogue.status([frame(Kind.SUBMIT, 1, 0, b"SFL\x01\x41garbage")])
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "undecodable" in details
    code, details = rogue.status([frame(Kind.SUBMIT, 1, 3, b"late")])
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "not open" in details
    code, details = rogue.status([frame(Kind.RESULT, 1, 0)])
    assert code == grpc.StatusCode.INVALID_ARGUMENT

    reports = [finish(p) for p in honest]
    running.join()
    rogue.channel.close()
    (outcome,) = running.server.outcomes
    assert outcome.stage is Stage.COMPLETED
    assert outcome.result.contributors == (0, 1, 2, 3, 4)  # client 5 dropped, nothing else
    assert any("undecodable" in r.reason for r in outcome.rejections)
    for cid, (record,) in enumerate(reports):
        assert record["contributors"] == [0, 1, 2, 3, 4]
        mean = np.load(tmp_path / f"mean-{cid}-1.npy")
        assert_secagg_mean(CONFIG, mean, range(5), seed=3, round_=1)


def identity_key(pki: Path, cid: int) -> Ed25519PrivateKey:
    raw = bytes.fromhex((pki / f"client-{cid}.ed25519").read_text())
    return Ed25519PrivateKey.from_private_bytes(raw)


def signed_hospital(
    target: str,
    tls: ClientTLS,
    config: SecAggConfig,
    keys: dict[int, bytes],
    cid: int,
    key: Ed25519PrivateKey,
    results: dict[int, object],
) -> None:
    """Client ``cid`` of an authenticated session sends 0.1 * cid with weight cid + 1;
    its result, or the ServiceError it got, goes to ``results``."""
    client = AggregationClient(
        target,
        cid,
        tls,
        config=config,
        identity_key=key,
        identity_public_keys=keys,
        timeout=20,
        threads=1,
    )
    with client:
        try:
            results[cid] = client.aggregate(np.full(30, 0.1 * cid), weight=cid + 1)
        except ServiceError as exc:
            results[cid] = exc


def test_identity_keys_enroll_clients_without_client_certificates(serve, pki) -> None:
    """Server-side TLS only, authenticated SecAgg: the enrolled Ed25519 keys decide who
    takes part. Client 3 holds a key that is not its enrolled one: the server refuses its
    signed JOIN and the others' mean excludes it; an unenrolled id is refused."""
    # Authenticated mode needs 2t > k + c = 4: t = 3, so the four honest clients suffice.
    config = SecAggConfig(
        num_clients=5, threshold=3, dimension=30, max_weight=10, authenticated=True
    )
    keys = {i: k for i, k in enrolled_keys(pki).items() if i < 5}
    running = serve(SecAggSession(config, keys), round_timeout=3.0, join_timeout=3.0, mutual=False)
    server_only = ClientTLS(server_ca=(pki / "ca.pem").read_bytes())

    def identity(cid: int) -> Ed25519PrivateKey:
        if cid == 3:
            return Ed25519PrivateKey.generate()  # an impostor's key for id 3
        return identity_key(pki, cid)

    results: dict[int, object] = {}

    def hospital(cid: int) -> None:
        signed_hospital(running.target, server_only, config, keys, cid, identity(cid), results)

    outsider = AggregationClient(
        running.target,
        UNENROLLED,
        server_only,
        config=config,
        identity_key=Ed25519PrivateKey.generate(),
        identity_public_keys=keys,
        timeout=5,
        join_timeout=5,
    )
    with outsider, pytest.raises(ServiceError) as info:
        outsider.aggregate(np.zeros(30), 1)
    assert info.value.code == "PERMISSION_DENIED"

    threads = in_threads(hospital, range(5))
    join_all(threads)
    running.join()
    (outcome,) = running.server.outcomes
    assert outcome.stage is Stage.COMPLETED
    assert outcome.result.contributors == (0, 1, 2, 4)
    assert 3 not in outcome.members  # its frames' signatures do not verify
    assert isinstance(results[3], ServiceError)
    assert results[3].code == "UNAUTHENTICATED"
    want = sum(0.1 * c * (c + 1) for c in (0, 1, 2, 4)) / sum(c + 1 for c in (0, 1, 2, 4))
    for cid in (0, 1, 2, 4):
        np.testing.assert_allclose(results[cid].weighted_mean, want, atol=1e-6)


def test_forged_frames_are_refused_without_mutual_tls(serve, pki) -> None:
    """Server-side TLS only: an outsider with just the CA certificate sends frames that
    claim client 0 (a JOIN before client 0 joins, then a forged MaskedInput while the
    session runs), unsigned or signed with enrolled client 1's key. Each is refused with
    UNAUTHENTICATED; the real client 0 and the others complete with the correct mean."""
    from securefl.secagg import codec
    from securefl.secagg.messages import MaskedInput

    # Authenticated mode needs 2t > k + c = 4: t = 3, so the four honest clients suffice.
    config = SecAggConfig(
        num_clients=5, threshold=3, dimension=30, max_weight=10, authenticated=True
    )
    keys = {i: k for i, k in enrolled_keys(pki).items() if i < 5}
    running = serve(SecAggSession(config, keys), round_timeout=5.0, mutual=False)
    server_only = ClientTLS(server_ca=(pki / "ca.pem").read_bytes())
    channel = grpc.secure_channel(
        running.target, grpc.ssl_channel_credentials(server_only.server_ca)
    )
    call = channel.stream_stream(METHOD)

    def forged(kind: Kind, session: int, round_: int, payload: bytes, key=None) -> list[bytes]:
        parts = framing.encode(kind, Protocol.SECAGG, 0, session, round_, payload, signing_key=key)
        return [b"".join(bytes(p) for p in parts)]

    def refusal(pieces: list[bytes]) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as info:
            b"".join(call(iter(pieces), timeout=10, wait_for_ready=True))
        return info.value.code()

    # Occupying client 0's seat before it joins.
    assert refusal(forged(Kind.JOIN, 0, 0, b"")) == grpc.StatusCode.UNAUTHENTICATED
    other = identity_key(pki, 1)
    assert refusal(forged(Kind.JOIN, 0, 0, b"", other)) == grpc.StatusCode.UNAUTHENTICATED

    results: dict[int, object] = {}

    def hospital(cid: int) -> None:
        key = identity_key(pki, cid)
        signed_hospital(running.target, server_only, config, keys, cid, key, results)

    threads = in_threads(hospital, range(5))
    # Knocking client 0 out with a forged MaskedInput: refused before its round is even
    # looked at, whatever round is open.
    masked = codec.encode(MaskedInput(0, 32, np.zeros(31, dtype=np.uint32)))
    for key in (None, other):
        assert refusal(forged(Kind.SUBMIT, 1, 2, masked, key)) in (
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.PERMISSION_DENIED,
        )
    join_all(threads)
    channel.close()
    running.join()
    (outcome,) = running.server.outcomes
    assert outcome.stage is Stage.COMPLETED
    assert outcome.result.contributors == (0, 1, 2, 3, 4)
    assert outcome.rejections == []
    want = sum(0.1 * c * (c + 1) for c in range(5)) / sum(c + 1 for c in range(5))
    for cid in range(5):
        np.testing.assert_allclose(results[cid].weighted_mean, want, atol=1e-6)


def test_a_server_certificate_from_another_ca_is_refused(serve, pki) -> None:
    """The client checks the server's certificate against the CA it was given: a server
    whose certificate another CA signed fails the handshake (UNAVAILABLE), and no
    session starts."""
    running = serve(SecAggSession(CONFIG), enrolled=range(6))
    tls = ClientTLS.from_files(
        str(pki / "foreign-ca.pem"), str(pki / "client-0.pem"), str(pki / "client-0.key")
    )
    client = AggregationClient(running.target, 0, tls, config=CONFIG, timeout=5, join_timeout=1)
    with client, pytest.raises(ServiceError) as info:
        client.aggregate(np.zeros(CONFIG.dimension), 1)
    assert info.value.code == "UNAVAILABLE"
    assert running.server.outcomes == []


def test_without_mutual_tls_only_the_authenticated_mode_is_served(pki) -> None:
    """Without client certificates nothing but identity keys could enrol clients: a
    server for the unauthenticated mode refuses to start."""
    from securefl.errors import ConfigError
    from securefl.transports.service import AggregationServer, ServerTLS

    tls = ServerTLS.from_files(str(pki / "server.pem"), str(pki / "server.key"), None)
    with pytest.raises(ConfigError, match=r"mutual TLS .* or the authenticated SecAgg mode"):
        AggregationServer(SecAggSession(CONFIG), tls)


def test_the_client_shows_no_secret_and_cannot_be_pickled(pki) -> None:
    import pickle

    key = identity_key(pki, 0)
    config = SecAggConfig(num_clients=5, threshold=3, dimension=4, authenticated=True)
    keys = {i: k for i, k in enrolled_keys(pki).items() if i < 5}
    tls = client_tls(pki, "client-0")
    client = AggregationClient(
        "127.0.0.1:1", 0, tls, config=config, identity_key=key, identity_public_keys=keys
    )
    with client:
        text = repr(client)
        assert text == "AggregationClient(target='127.0.0.1:1', id=0, protocol=SECAGG)"
        assert tls.private_key is not None and tls.private_key.decode() not in text
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(client)


def test_too_few_joins_abort_the_session_for_those_who_joined(serve, pki) -> None:
    """n = 5, t = 3 needs t + 1 = 4 clients; three join within the join timeout: each
    receives the abort and its reason, and no session is counted."""
    from securefl.errors import ProtocolAbort

    config = SecAggConfig(num_clients=5, threshold=3, dimension=4, max_weight=10)
    running = serve(SecAggSession(config), join_timeout=1.0, enrolled=range(5))
    results: dict[int, object] = {}

    def hospital(cid: int) -> None:
        with AggregationClient(
            running.target, cid, client_tls(pki, f"client-{cid}"), config=config, timeout=20
        ) as client:
            try:
                results[cid] = client.aggregate(np.zeros(4), 1)
            except (ProtocolAbort, ServiceError) as exc:
                results[cid] = exc

    join_all(in_threads(hospital, range(3)))
    assert running.server.outcomes == []
    for cid in range(3):
        assert isinstance(results[cid], ProtocolAbort), results[cid]
        assert "only 3 clients joined session 1 within 1 s; need 4" in results[cid].reason


def test_with_mutual_tls_a_frame_signature_is_verified_too(serve, pki) -> None:
    """Mutual TLS and authenticated SecAgg: client 0 (its own certificate) signs its JOIN
    with a key that is not its enrolled one: refused with UNAUTHENTICATED."""
    config = SecAggConfig(
        num_clients=5, threshold=3, dimension=30, max_weight=10, authenticated=True
    )
    keys = {i: k for i, k in enrolled_keys(pki).items() if i < 5}
    running = serve(SecAggSession(config, keys))
    client = AggregationClient(
        running.target,
        0,
        client_tls(pki, "client-0"),
        config=config,
        identity_key=Ed25519PrivateKey.generate(),
        identity_public_keys=keys,
        timeout=5,
        join_timeout=5,
    )
    with client, pytest.raises(ServiceError) as info:
        client.aggregate(np.zeros(30), 1)
    assert info.value.code == "UNAUTHENTICATED"
    assert "not client 0's enrolled identity key" in str(info.value)
