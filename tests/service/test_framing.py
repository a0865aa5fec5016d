"""The service frame format (securefl.transports.service.framing): chunking round trips,
and every malformed stream is refused with InvalidMessage before it is buffered."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from securefl.errors import InvalidMessage
from securefl.primitives.quantize import dequantize
from securefl.secagg.config import SecAggConfig
from securefl.transports.service import framing
from securefl.transports.service.framing import Kind, Protocol


def stream(payload: bytes, size: int, **fields: int) -> list[bytes]:
    parts = framing.encode(
        Kind.SUBMIT,
        Protocol.SECAGG,
        fields.get("client", 7),
        fields.get("session", 3),
        fields.get("round", 2),
        payload,
    )
    return list(framing.chunks(parts, size))


@pytest.mark.parametrize("size", [framing.HEADER, 33, 64, 1000, 1 << 20])
@pytest.mark.parametrize("length", [0, 1, 31, 32, 999, 5000])
def test_chunks_reassemble_exactly(size: int, length: int) -> None:
    payload = bytes(range(256)) * (length // 256) + bytes(length % 256)
    pieces = stream(payload, size)
    assert all(len(p) <= size for p in pieces)
    assert sum(map(len, pieces)) == framing.HEADER + length
    frame = framing.assemble(pieces, max_payload=length)
    assert (frame.kind, frame.protocol, frame.client_id, frame.session, frame.round) == (
        Kind.SUBMIT,
        Protocol.SECAGG,
        7,
        3,
        2,
    )
    assert bytes(frame.payload) == payload
    assert "bytes)" in repr(frame) and str(payload[:8]) not in repr(frame)


def test_payload_over_the_limit_is_refused_from_the_header() -> None:
    pieces = stream(b"x" * 100, framing.HEADER)
    with pytest.raises(InvalidMessage, match="exceeds the limit of 99"):
        framing.assemble(iter(pieces[:1]), max_payload=99)  # only the header arrived


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda b: b"NOPE" + b[4:], "bad magic"),
        (lambda b: b[:4] + b"\x01" + b[5:], "bad magic or version"),  # version 1
        (lambda b: b[:5] + b"\x63" + b[6:], "unknown frame kind"),
        (lambda b: b[:6] + b"\x09" + b[7:], "unknown frame kind 2 or protocol 9"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b + b"!", "longer than its header"),
        (lambda b: b[:10], "before a complete frame header"),
        (lambda b: b"", "before a complete frame header"),
    ],
)
def test_malformed_frames_are_refused(mutate, match: str) -> None:
    data = mutate(b"".join(stream(b"payload", 1 << 10)))
    with pytest.raises(InvalidMessage, match=match):
        framing.assemble([data[i : i + 5] for i in range(0, len(data), 5)], max_payload=1 << 10)


CONFIG = SecAggConfig(num_clients=5, threshold=3, dimension=33, max_weight=10)


def payload_of(result: framing.Result) -> memoryview:
    return memoryview(b"".join(bytes(p) for p in framing.encode_result(result)))


def test_float64_result_round_trip_and_checks() -> None:
    mean = np.linspace(-1, 1, 33)  # a result without its ring sum: sent as float64
    result = framing.Result(mean, 17, (1, 2, 4), (3,))
    payload = payload_of(result)
    assert len(payload) == 8 + (4 + 4 * 3) + (4 + 4) + 16 + 8 * 33
    back = framing.decode_result(payload, CONFIG)
    assert np.array_equal(back.weighted_mean, mean) and back.ring_sum is None
    assert (back.total_weight, back.contributors, back.dropped) == (17, (1, 2, 4), (3,))
    other = SecAggConfig(num_clients=5, threshold=3, dimension=32, max_weight=10)
    with pytest.raises(InvalidMessage, match="dimension is 32"):
        framing.decode_result(payload, other)
    with pytest.raises(InvalidMessage):
        framing.decode_result(payload[:-1], CONFIG)
    with pytest.raises(InvalidMessage, match="truncated"):
        framing.decode_result(payload[:10], CONFIG)
    with pytest.raises(InvalidMessage):
        framing.decode_result(memoryview(struct.pack("<QI", 1, 1 << 30)), CONFIG)


def test_ring_sum_result_is_half_the_bytes_and_bit_exact() -> None:
    """The server's result travels as SecAgg's ring sum (4 bytes a value at b = 32), and
    every client decodes it to the server's float64 mean bit for bit."""
    fp = CONFIG.fixed_point
    m, total = 3, 17
    levels = int(np.ceil(2 * fp.clip * 2**fp.frac_bits))
    ring = np.random.default_rng(2).integers(0, m * levels, 33).astype(np.uint32)
    mean = dequantize(ring, fp, m) * (CONFIG.max_weight / total)
    payload = payload_of(framing.Result(mean, total, (0, 1, 2), (), ring))
    assert len(payload) == 8 + (4 + 4 * 3) + 4 + 16 + 4 * 33
    back = framing.decode_result(payload, CONFIG)
    assert np.array_equal(back.weighted_mean, mean)
    assert back.ring_sum is not None and np.array_equal(back.ring_sum, ring)
    # An impossible weight for three contributors is refused, not decoded.
    forged = bytearray(payload)
    struct.pack_into("<Q", forged, 0, 1000)
    with pytest.raises(InvalidMessage, match="impossible"):
        framing.decode_result(memoryview(forged), CONFIG)


def fresh_chunks(data: bytes, size: int):
    """The frame as gRPC hands it over: a new bytes object per message."""
    view = memoryview(data)
    for i in range(0, len(data), size):
        yield bytes(view[i : i + size])


@pytest.mark.parametrize("size", [8, 64, 1 << 16], ids=["8B", "64B", "64KiB"])
def test_a_signed_frame_is_assembled_in_about_one_frame_of_memory(size: int) -> None:
    """Without mutual TLS a frame's signature can only be checked once the whole frame
    is in, so whoever can open a call makes the server buffer one. What it holds per
    call is the frame itself (plus the chunk in hand), not a list of its chunks and a
    joined copy (about 6x the frame at 8-byte chunks): the payload is copied once into
    one buffer and hashed as it streams, and that hash is what the signature covers."""
    import hashlib
    import tracemalloc

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    payload = np.random.default_rng(1).bytes(1 << 20)
    key = Ed25519PrivateKey.generate()
    parts = framing.encode(Kind.SUBMIT, Protocol.SECAGG, 7, 3, 2, payload, signing_key=key)
    data = b"".join(bytes(p) for p in parts)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        frame = framing.assemble(fresh_chunks(data, size), max_payload=len(payload))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - before < 1.1 * len(data) + 2 * size
    assert bytes(frame.payload) == payload
    assert frame.payload_sha256 == hashlib.sha256(payload).digest()
    digest = framing.signing_digest(frame.raw_header, frame.payload_sha256)
    key.public_key().verify(frame.signature, digest)  # raises if it does not verify


def test_an_unsigned_frame_is_not_hashed_and_one_chunk_is_not_copied() -> None:
    data = b"".join(
        bytes(p) for p in framing.encode(Kind.SUBMIT, Protocol.SECAGG, 1, 1, 0, b"x" * 99)
    )
    frame = framing.assemble([data], max_payload=99)
    assert frame.payload_sha256 == b""
    assert frame.payload.obj is data  # a view of the received message
