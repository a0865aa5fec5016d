"""Service frames: the envelope that carries protocol messages over the network service.

The network service (``docs/SERVICE.md``) moves the protocols' own wire messages (the
SecAgg codec of ``docs/PROTOCOL.md``, the ``SFCK`` ciphertexts of ``docs/CKKS.md``)
between a client and the server. Each gRPC call carries exactly one frame in each
direction, split into chunks so that a vector of any size stays under the per-message
limit of gRPC; the frame says which session and round it belongs to, so that a late or
replayed message is refused by number before anything decodes it.

Frame layout, little-endian (28-byte header, then the payload)::

    magic "SFLS" (4) · version u8 = 1 · kind u8 · protocol u8 · reserved u8 = 0
    · client id u32 · session u32 · round u32 · payload length u64 · payload

This module does no I/O; it is shared by the server and the client.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from securefl.errors import InvalidMessage

__all__ = [
    "HEADER",
    "Frame",
    "Kind",
    "Protocol",
    "Result",
    "assemble",
    "chunks",
    "decode_result",
    "encode",
    "encode_result",
    "kind_of",
]

MAGIC = b"SFLS"
VERSION = 1
_HEADER = struct.Struct("<4sBBBBIIIQ")
HEADER = _HEADER.size
"""Bytes of the frame header."""

MAX_IDS = 1 << 20


class Kind(enum.IntEnum):
    """What a frame carries."""

    JOIN = 1
    """Client -> server: take part in the next session (empty payload)."""
    SUBMIT = 2
    """Client -> server: this round's protocol message."""
    PROTOCOL = 16
    """Server -> client: the next round's protocol message (empty for CKKS: "send")."""
    RESULT = 17
    """Server -> client: the session's aggregate (:func:`encode_result`)."""
    ABORT = 18
    """Server -> client: the session aborted; the payload is the UTF-8 reason."""
    DROPPED = 19
    """Server -> client: this client is no longer part of the session (reason)."""


class Protocol(enum.IntEnum):
    """The aggregation protocol a session runs."""

    SECAGG = 1
    CKKS = 2


@dataclass(frozen=True)
class Frame:
    """One decoded frame. ``payload`` is a view of the received bytes (no copy)."""

    kind: Kind
    protocol: Protocol
    client_id: int
    session: int
    round: int
    payload: memoryview

    def __repr__(self) -> str:
        # Payloads are masked vectors or ciphertexts: print sizes, never content.
        return (
            f"Frame({self.kind.name}, {self.protocol.name}, client={self.client_id}, "
            f"session={self.session}, round={self.round}, {len(self.payload)} bytes)"
        )


def encode(
    kind: Kind,
    protocol: Protocol,
    client_id: int,
    session: int,
    round_: int,
    *payload: bytes | bytearray | memoryview,
) -> list[bytes | memoryview]:
    """Return the frame as its header followed by the payload's parts (not copied).

    Parameters
    ----------
    kind, protocol, client_id, session, round_:
        The header fields; integers must fit their field (u32).
    payload:
        The protocol message (or result, or reason), in one or more parts.
    """
    length = sum(len(memoryview(p).cast("B")) for p in payload)
    header = _HEADER.pack(MAGIC, VERSION, kind, protocol, 0, client_id, session, round_, length)
    return [header, *(memoryview(p) for p in payload)]


def kind_of(parts: list[bytes | memoryview]) -> Kind:
    """The kind of a frame that :func:`encode` returned."""
    return Kind(bytes(parts[0][5:6])[0])


def chunks(parts: Iterable[bytes | memoryview], size: int) -> Iterator[bytes]:
    """Split a frame (as :func:`encode` returns it) into gRPC messages of at most ``size``."""
    if size < HEADER:
        raise ValueError(f"chunk size must be at least {HEADER} bytes, got {size}")
    pending = bytearray()
    for part in parts:
        view = memoryview(part).cast("B")
        while len(view):
            take = min(size - len(pending), len(view))
            if not pending and take == size:
                yield bytes(view[:take])  # one copy, straight from the payload
            else:
                pending += view[:take]
            view = view[take:]
            if len(pending) == size:
                yield bytes(pending)
                pending.clear()
    if pending:
        yield bytes(pending)


def assemble(pieces: Iterable[bytes], max_payload: int) -> Frame:
    """Read one frame from a stream of chunks.

    Parameters
    ----------
    pieces:
        The gRPC messages of one call, in order.
    max_payload:
        Largest payload accepted; checked as soon as the header arrives, before the rest
        of the frame is buffered.

    Raises
    ------
    InvalidMessage
        If the header is malformed, the payload is larger than ``max_payload`` or than
        announced, or the stream ends early.
    """
    buffer: bytearray | None = None
    header = bytearray()
    expected = 0
    for piece in pieces:
        if buffer is None:
            header += piece
            if len(header) < HEADER:
                continue
            fields = _HEADER.unpack_from(header)
            magic, version, _kind, _proto, reserved, _cid, _session, _round, length = fields
            if magic != MAGIC or version != VERSION or reserved != 0:
                raise InvalidMessage("not a securefl service frame (bad magic or version)")
            # An oversized announcement would make us buffer an attacker's gigabytes.
            if length > max_payload:
                raise InvalidMessage(
                    f"frame payload of {length} bytes exceeds the limit of {max_payload}"
                )
            expected = HEADER + length
            buffer = bytearray(expected)
            rest = header[HEADER:]
            if len(rest) > length:
                raise InvalidMessage("frame is longer than its header says")
            buffer[:HEADER] = header[:HEADER]
            buffer[HEADER : HEADER + len(rest)] = rest
            filled = HEADER + len(rest)
            continue
        if filled + len(piece) > expected:
            raise InvalidMessage("frame is longer than its header says")
        buffer[filled : filled + len(piece)] = piece
        filled += len(piece)
    if buffer is None:
        raise InvalidMessage("stream ended before a complete frame header")
    if filled != expected:
        raise InvalidMessage(f"frame truncated: {filled} of {expected} bytes")
    return _parse(buffer)


def _parse(data: bytearray) -> Frame:
    _m, _v, kind, proto, _r, cid, session, round_, _length = _HEADER.unpack_from(data)
    try:
        return Frame(Kind(kind), Protocol(proto), cid, session, round_, memoryview(data)[HEADER:])
    except ValueError:
        raise InvalidMessage(f"unknown frame kind {kind} or protocol {proto}") from None


@dataclass(frozen=True)
class Result:
    """What a SecAgg session's clients receive at the end: the weighted mean of the
    contributors' updates, its total weight, and who contributed and who dropped."""

    weighted_mean: npt.NDArray[np.float64]
    total_weight: int
    contributors: tuple[int, ...]
    dropped: tuple[int, ...]


_IDS = struct.Struct("<I")


def _pack_ids(ids: tuple[int, ...]) -> bytes:
    return _IDS.pack(len(ids)) + np.asarray(ids, dtype="<u4").tobytes()


def encode_result(result: Result) -> list[bytes | memoryview]:
    """Payload of a SecAgg ``RESULT`` frame: total weight u64 · contributors (count u32,
    ids u32) · dropped (same) · d u64 · d float64 (the mean)."""
    mean = np.ascontiguousarray(result.weighted_mean, dtype="<f8")
    head = (
        struct.pack("<Q", result.total_weight)
        + _pack_ids(result.contributors)
        + _pack_ids(result.dropped)
        + struct.pack("<Q", mean.size)
    )
    return [head, memoryview(mean.data).cast("B")]


def decode_result(payload: memoryview, dimension: int) -> Result:
    """Parse a SecAgg ``RESULT`` payload for a session of dimension ``dimension``.

    Raises
    ------
    InvalidMessage
        If the payload is malformed or holds another dimension.
    """
    try:
        (total,) = struct.unpack_from("<Q", payload, 0)
        offset = 8
        lists: list[tuple[int, ...]] = []
        for _ in range(2):
            (count,) = _IDS.unpack_from(payload, offset)
            offset += 4
            # A count beyond the protocol's limit would allocate before the size check.
            if count > MAX_IDS:
                raise InvalidMessage(f"{count} ids in a result")
            ids = np.frombuffer(payload, dtype="<u4", count=count, offset=offset)
            lists.append(tuple(int(i) for i in ids))
            offset += 4 * count
        (d,) = struct.unpack_from("<Q", payload, offset)
        offset += 8
    except (struct.error, ValueError):
        raise InvalidMessage("truncated result") from None
    if d != dimension or len(payload) - offset != 8 * d:
        raise InvalidMessage(f"result holds {d} values, the session's dimension is {dimension}")
    mean = np.frombuffer(payload, dtype="<f8", count=d, offset=offset).astype(np.float64)
    return Result(mean, int(total), lists[0], lists[1])
