"""Stream exhaustion: stalled uploads, parallel calls of one id and floods of empty
chunks must not keep enrolled clients from taking part (docs/SERVICE.md, "Limits")."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from securefl.errors import InvalidMessage
from securefl.secagg.config import SecAggConfig
from securefl.secagg.messages import Stage
from securefl.transports.service import AggregationClient, ClientTLS, SecAggSession, framing
from securefl.transports.service.framing import Kind, Protocol
from securefl.transports.service.server import METHOD

from .conftest import UNENROLLED, in_threads, join_all

CONFIG = SecAggConfig(num_clients=5, threshold=3, dimension=20, max_weight=10)


def client_tls(pki: Path, name: str) -> ClientTLS:
    return ClientTLS.from_files(
        str(pki / "ca.pem"), str(pki / f"{name}.pem"), str(pki / f"{name}.key")
    )


def raw_call(
    target: str, pki: Path, cid: int
) -> tuple[grpc.Channel, grpc.StreamStreamMultiCallable]:
    tls = client_tls(pki, f"client-{cid}")
    creds = grpc.ssl_channel_credentials(tls.server_ca, tls.private_key, tls.certificate)
    channel = grpc.secure_channel(target, creds)
    return channel, channel.stream_stream(METHOD)


def stalled(cid: int, hold: threading.Event) -> Iterator[bytes]:
    """A JOIN that announces 1000 payload bytes and never sends them."""
    yield framing.header(Kind.JOIN, Protocol.SECAGG, cid, 0, 0, 1000)
    hold.wait()


def status_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        b"".join(call)  # type: ignore[call-overload]
    return info.value.code()


def test_stalled_streams_from_an_unenrolled_certificate_do_not_block_clients(serve, pki) -> None:
    """A CA-signed but unenrolled certificate opens as many stalled streams as the server
    has workers: each is refused before a chunk is read, and the five enrolled clients
    complete their session."""
    running = serve(SecAggSession(CONFIG), round_timeout=5.0)
    hold = threading.Event()
    channel, call = raw_call(running.target, pki, UNENROLLED)
    streams = [call(stalled(UNENROLLED, hold), timeout=60) for _ in range(2 * 5 + 8)]
    results: dict[int, object] = {}

    def hospital(cid: int) -> None:
        tls = client_tls(pki, f"client-{cid}")
        with AggregationClient(
            running.target, cid, tls, config=CONFIG, timeout=20, threads=1
        ) as client:
            results[cid] = client.aggregate(np.full(20, 0.1 * cid), weight=1)

    threads = in_threads(hospital, range(5))
    join_all(threads)
    hold.set()
    codes = {status_of(s) for s in streams}
    channel.close()
    running.join()
    assert codes == {grpc.StatusCode.PERMISSION_DENIED}
    (outcome,) = running.server.outcomes
    assert outcome.stage is Stage.COMPLETED
    assert outcome.result.contributors == (0, 1, 2, 3, 4)
    for cid in range(5):
        np.testing.assert_allclose(results[cid].weighted_mean, 0.2, atol=1e-3)


def test_a_second_call_of_the_same_client_is_refused_and_a_stall_is_cut_off(serve, pki) -> None:
    """Client 4 stalls one upload: its second call is refused with ALREADY_EXISTS, and
    the server ends the stalled one at its deadline with DEADLINE_EXCEEDED."""
    running = serve(SecAggSession(CONFIG), round_timeout=1.0)
    hold = threading.Event()
    channel, call = raw_call(running.target, pki, 4)
    first = call(stalled(4, hold), timeout=60)
    while 4 not in running.server._in_flight:  # the server has taken the first call
        time.sleep(0.01)
    join = b"".join(bytes(p) for p in framing.encode(Kind.JOIN, Protocol.SECAGG, 4, 0, 0))
    with pytest.raises(grpc.RpcError) as info:
        b"".join(call(iter([join]), timeout=20))
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert status_of(first) == grpc.StatusCode.DEADLINE_EXCEEDED
    hold.set()
    channel.close()


def test_empty_chunks_are_refused(serve, pki) -> None:
    """A frame followed by a flood of empty gRPC messages is refused at the first one."""
    running = serve(SecAggSession(CONFIG))
    channel, call = raw_call(running.target, pki, 4)
    head = framing.header(Kind.JOIN, Protocol.SECAGG, 4, 0, 0, 8)
    flood = [head, *([b""] * 1000), b"\x00" * 8]
    with pytest.raises(grpc.RpcError) as info:
        b"".join(call(iter(flood), timeout=20))
    channel.close()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "empty chunk" in info.value.details()


def test_assemble_bounds_the_chunks_of_a_frame() -> None:
    parts = framing.encode(Kind.SUBMIT, Protocol.SECAGG, 1, 1, 0, b"\x01" * 256)
    data = b"".join(bytes(p) for p in parts)
    assert framing.assemble(framing.chunks(parts, framing.HEADER), 1 << 10).client_id == 1
    with pytest.raises(InvalidMessage, match="empty chunk"):
        framing.assemble([data[:32], b"", data[32:]], 1 << 10)
    with pytest.raises(InvalidMessage, match="more than"):
        framing.assemble([data[i : i + 1] for i in range(len(data))], 1 << 10)
