"""The service frame format (securefl.transports.service.framing): chunking round trips,
and every malformed stream is refused with InvalidMessage before it is buffered."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from securefl.errors import InvalidMessage
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


@pytest.mark.parametrize("size", [framing.HEADER, 29, 64, 1000, 1 << 20])
@pytest.mark.parametrize("length", [0, 1, 27, 28, 999, 5000])
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
    pieces = stream(b"x" * 100, 28)
    with pytest.raises(InvalidMessage, match="exceeds the limit of 99"):
        framing.assemble(iter(pieces[:1]), max_payload=99)  # only the header arrived


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda b: b"XXXX" + b[4:], "bad magic"),
        (lambda b: b[:4] + b"\x02" + b[5:], "bad magic or version"),
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


def test_result_round_trip_and_checks() -> None:
    mean = np.linspace(-1, 1, 33)
    result = framing.Result(mean, 57, (1, 4, 9), (2,))
    payload = memoryview(b"".join(bytes(p) for p in framing.encode_result(result)))
    back = framing.decode_result(payload, 33)
    assert np.array_equal(back.weighted_mean, mean)
    assert (back.total_weight, back.contributors, back.dropped) == (57, (1, 4, 9), (2,))
    with pytest.raises(InvalidMessage, match="dimension is 32"):
        framing.decode_result(payload, 32)
    with pytest.raises(InvalidMessage):
        framing.decode_result(payload[:-1], 33)
    with pytest.raises(InvalidMessage, match="truncated"):
        framing.decode_result(payload[:10], 33)
    huge = memoryview(struct.pack("<QI", 1, 1 << 30))
    with pytest.raises(InvalidMessage):
        framing.decode_result(huge, 33)
