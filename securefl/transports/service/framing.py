"""Service frames: the envelope that carries protocol messages over the network service.

The network service (``docs/SERVICE.md``) moves the protocols' own wire messages (the
SecAgg codec of ``docs/PROTOCOL.md``, the ``SFCK`` ciphertexts of ``docs/CKKS.md``)
between a client and the server. Each gRPC call carries exactly one frame in each
direction, split into chunks so that a vector of any size stays under the per-message
limit of gRPC; the frame says which session and round it belongs to, so that a late or
replayed message is refused by number before anything decodes it.

Frame layout, little-endian (32-byte header, then the payload)::

    magic "SFLS" (4) · version u8 = 3 · kind u8 · protocol u8 · flags u8
    · client id u32 · session u32 · round u32 · 4 zero bytes · payload length u64
    · payload · [signature (64), if flags has SIGNED]

A signed frame (flag bit 0, :data:`SIGNED`) ends with the client's Ed25519 signature over
:func:`signing_digest` (the 32 header bytes and the payload's SHA-256, domain-separated);
the payload length does not count it. Without mutual TLS it is what ties a frame to
the enrolled client it claims to come from.

The header's size keeps the payload 8-byte aligned in the receive buffer, so a masked
vector (docs/PROTOCOL.md) or a raw ciphertext (docs/CKKS.md) is used in place.

This module does no I/O; it is shared by the server and the client.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from securefl.encoding import RingSum, decoded, encoder_for
from securefl.errors import InvalidMessage
from securefl.primitives.masking import RingArray, ring_dtype

if TYPE_CHECKING:
    from securefl.secagg.config import SecAggConfig

__all__ = [
    "HEADER",
    "SIGNATURE",
    "SIGNED",
    "Frame",
    "Kind",
    "Protocol",
    "Result",
    "ResultEncoding",
    "assemble",
    "chunks",
    "decode_result",
    "encode",
    "encode_result",
    "header",
    "kind_of",
    "read_frame",
    "signing_digest",
]

MAGIC = b"SFLS"
VERSION = 3
"""Version 2: the JOIN call stays open for the session (the server's sign that the client
is alive), JOIN carries the client's session options, and a client may LEAVE."""
_HEADER = struct.Struct("<4sBBBBIII4xQ")
HEADER = _HEADER.size
"""Bytes of the frame header."""

MAX_IDS = 1 << 20

SIGNED = 1
"""Flag bit: an Ed25519 signature of :data:`SIGNATURE` bytes follows the payload."""
SIGNATURE = 64
"""Bytes of a frame signature."""
_FLAGS = SIGNED
_DOMAIN = b"securefl/service/frame/v1\x00"


class Kind(enum.IntEnum):
    """What a frame carries."""

    JOIN = 1
    """Client -> server: take part in the next session. The payload declares the
    client's session options (:func:`securefl.transports.service.sessions.join_payload`).
    The call stays open for the session: when it ends early, the client is gone."""
    SUBMIT = 2
    """Client -> server: this round's protocol message."""
    LEAVE = 3
    """Client -> server: this client stops taking part in the session (it failed a
    check, or gives up); the payload is the UTF-8 reason."""
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
    raw_header: bytes = b""
    """The 32 header bytes as received (what a signature covers)."""
    signature: bytes = b""
    """The client's signature (:data:`SIGNED` frames), else empty."""
    payload_sha256: bytes = b""
    """SHA-256 of the payload, computed as it streamed in (:data:`SIGNED` frames, for
    :func:`signing_digest`), else empty."""

    def __repr__(self) -> str:
        # Payloads are masked vectors or ciphertexts: print sizes, never content.
        return (
            f"Frame({self.kind.name}, {self.protocol.name}, client={self.client_id}, "
            f"session={self.session}, round={self.round}, {len(self.payload)} bytes)"
        )


def header(
    kind: Kind,
    protocol: Protocol,
    client_id: int,
    session: int,
    round_: int,
    length: int,
    flags: int = 0,
) -> bytes:
    """The 32-byte header of a frame whose payload has ``length`` bytes."""
    return _HEADER.pack(MAGIC, VERSION, kind, protocol, flags, client_id, session, round_, length)


def signing_digest(raw_header: bytes, payload_sha256: bytes) -> bytes:
    """What a client signs: SHA-256 of a domain label, the frame's 32 header bytes and
    the SHA-256 of its payload. The label keeps a frame signature from ever verifying
    as a protocol signature (docs/PROTOCOL.md) made with the same key, or vice versa."""
    return hashlib.sha256(_DOMAIN + bytes(raw_header) + payload_sha256).digest()


def encode(
    kind: Kind,
    protocol: Protocol,
    client_id: int,
    session: int,
    round_: int,
    *payload: bytes | bytearray | memoryview,
    signing_key: Ed25519PrivateKey | None = None,
) -> list[bytes | memoryview]:
    """Return the frame as its header followed by the payload's parts (not copied).

    Parameters
    ----------
    kind, protocol, client_id, session, round_:
        The header fields; integers must fit their field (u32).
    payload:
        The protocol message (or result, or reason), in one or more parts.
    signing_key:
        A client's enrolled identity key: the frame is :data:`SIGNED` and ends with
        the signature of :func:`signing_digest`.
    """
    views = [memoryview(p).cast("B") for p in payload]
    length = sum(len(v) for v in views)
    flags = 0 if signing_key is None else SIGNED
    head = header(kind, protocol, client_id, session, round_, length, flags)
    parts: list[bytes | memoryview] = [head, *(memoryview(p) for p in payload)]
    if signing_key is not None:
        digest = hashlib.sha256()
        for v in views:
            digest.update(v)
        parts.append(signing_key.sign(signing_digest(head, digest.digest())))
    return parts


def kind_of(parts: Sequence[bytes | memoryview]) -> Kind:
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


def max_pieces(size: int) -> int:
    """The most chunks a frame of ``size`` bytes may arrive in: 8 bytes per chunk on
    average, plus a few (:func:`chunks` cuts at least :data:`HEADER` bytes but the
    last), so that the chunks' bookkeeping stays within a few times the frame's size."""
    return size // 8 + 8


def assemble(pieces: Iterable[bytes], max_payload: int) -> Frame:
    """Read one frame from a stream of chunks.

    A frame in one chunk is parsed in place. A longer one is copied, chunk by chunk as
    it arrives, into one buffer of the size its header announces (allocated, not
    touched: pages fill as the bytes do), so the memory a call holds is about one
    frame plus the chunk in hand, however small the chunks. The payload of a
    :data:`SIGNED` frame is hashed on the way (``Frame.payload_sha256``), so its
    signature is checked without a second pass or a copy.

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
        announced, the stream ends early, or a chunk is empty or the frame comes in
        more chunks than :func:`max_pieces` allows.
    """
    reader = _Reader(max_payload)
    for piece in pieces:
        reader.feed(piece)
    return reader.frame()


def read_frame(pieces: Iterable[bytes], max_payload: int) -> Frame:
    """Read the first frame from a stream that goes on after it (a JOIN call stays open
    for its session): stop as soon as the frame is complete, leaving the stream open.

    Raises
    ------
    InvalidMessage
        As :func:`assemble`.
    """
    reader = _Reader(max_payload)
    for piece in pieces:
        reader.feed(piece)
        if reader.complete:
            break
    return reader.frame()


class _Reader:
    """The state of :func:`assemble`: the header, then the frame's one buffer."""

    def __init__(self, max_payload: int) -> None:
        self.max_payload = max_payload
        self.count = 0  # chunks so far
        self.most = max_pieces(HEADER + max_payload + SIGNATURE)
        self.head: list[bytes] = []  # chunks received before the header was complete
        self.received = 0
        self.expected = -1  # total frame size, once the header is in
        self.end = 0  # where the payload ends
        self.whole: bytes | None = None  # a frame that came in one chunk
        self.buffer: npt.NDArray[np.uint8] | None = None
        self.hasher: Any = None  # SHA-256 of the payload, for signed frames

    @property
    def complete(self) -> bool:
        """Whether the whole frame (header, payload, signature) has arrived."""
        return self.expected >= 0 and self.received == self.expected

    def feed(self, piece: bytes) -> None:
        # Empty or tiny chunks would cost far more bookkeeping than the bytes they carry.
        if not piece:
            raise InvalidMessage("empty chunk in a frame")
        if self.count >= self.most:
            raise InvalidMessage(f"frame split into more than {self.most} chunks")
        self.count += 1
        if self.expected >= 0:
            self._copy(piece)
            return
        self.head.append(piece)
        self.received += len(piece)
        if self.received < HEADER:
            return
        head = self.head[0] if len(self.head[0]) >= HEADER else b"".join(self.head)
        self._start(head)
        chunks, self.head, self.received = self.head, [], 0
        if len(chunks) == 1 and len(piece) == self.expected:
            self.whole = piece  # the whole frame in one message: used in place
            self.received = len(piece)
            if self.hasher is not None:
                self.hasher.update(memoryview(piece)[HEADER : self.end])
            return
        for chunk in chunks:
            self._copy(chunk)

    def _start(self, head: bytes) -> None:
        fields = _HEADER.unpack_from(head)
        magic, version, _kind, _proto, flags, _cid, _session, _round, length = fields
        if magic != MAGIC or version != VERSION or flags & ~_FLAGS:
            raise InvalidMessage("not a securefl service frame (bad magic or version)")
        # An oversized announcement would make us buffer an attacker's gigabytes.
        if length > self.max_payload:
            raise InvalidMessage(
                f"frame payload of {length} bytes exceeds the limit of {self.max_payload}"
            )
        self.end = HEADER + length
        self.expected = self.end + (SIGNATURE if flags & SIGNED else 0)
        self.most = max_pieces(self.expected)
        if flags & SIGNED:
            self.hasher = hashlib.sha256()

    def _copy(self, piece: bytes) -> None:
        start = self.received
        stop = start + len(piece)
        if stop > self.expected:
            raise InvalidMessage("frame is longer than its header says")
        if self.buffer is None:
            # np.empty does not touch the memory: a stalled upload holds only the pages
            # its bytes have filled.
            self.buffer = np.empty(self.expected, dtype=np.uint8)
        view = memoryview(piece)
        self.buffer[start:stop] = np.frombuffer(piece, dtype=np.uint8)
        if self.hasher is not None and start < self.end and stop > HEADER:
            self.hasher.update(view[max(HEADER, start) - start : min(self.end, stop) - start])
        self.received = stop

    def frame(self) -> Frame:
        if self.expected < 0:
            raise InvalidMessage("stream ended before a complete frame header")
        if self.received != self.expected:
            raise InvalidMessage(f"frame truncated: {self.received} of {self.expected} bytes")
        if self.whole is not None:
            view = memoryview(self.whole)
        else:
            assert self.buffer is not None
            # Read-only: nothing writes the assembled frame again, and the codec then
            # decodes a masked vector as a view into it instead of copying it.
            view = self.buffer.data.toreadonly()
        digest = b"" if self.hasher is None else self.hasher.digest()
        return _parse(view.cast("B"), digest)


def _parse(view: memoryview, payload_sha256: bytes = b"") -> Frame:
    _m, _v, kind, proto, flags, cid, session, round_, length = _HEADER.unpack_from(view)
    end = HEADER + length
    signature = bytes(view[end:]) if flags & SIGNED else b""
    try:
        return Frame(
            Kind(kind),
            Protocol(proto),
            cid,
            session,
            round_,
            view[HEADER:end],
            bytes(view[:HEADER]),
            signature,
            payload_sha256,
        )
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
    ring_sum: RingArray | None = None
    """The unmasked sum in Z_2^b that ``weighted_mean`` decodes from (a ring-input
    session's result: ``weighted_mean`` holds it as float64, exact below 2^53)."""


class ResultEncoding(enum.IntEnum):
    """How a ``RESULT`` frame carries the mean."""

    FLOAT64 = 0
    """d float64 values: the mean itself."""
    RING_SUM = 1
    """d ring elements (4 bytes each for b <= 32, else 8): the unmasked sum S that SecAgg
    returns. Every client decodes it with the session's encoder (fixed point:
    ``dequantize(S) * W / N``; DP: ``securefl.dp``) and gets the server's mean bit for
    bit; half the bytes of float64 at b <= 32."""


_IDS = struct.Struct("<I")


def _pack_ids(ids: tuple[int, ...]) -> bytes:
    return _IDS.pack(len(ids)) + np.asarray(ids, dtype="<u4").tobytes()


def encode_result(result: Result) -> list[bytes | memoryview]:
    """Payload of a SecAgg ``RESULT`` frame: total weight u64 · contributors (count u32,
    ids u32) · dropped (same) · d u64 · encoding u8 · 7 zero bytes · the values
    (:class:`ResultEncoding`): the ring sum where the result has one, else float64."""
    ring = result.ring_sum
    values: npt.NDArray[Any]
    if ring is None:
        values = np.ascontiguousarray(result.weighted_mean, dtype="<f8")
        encoding = ResultEncoding.FLOAT64
    else:
        values, encoding = np.ascontiguousarray(ring), ResultEncoding.RING_SUM
    head = (
        struct.pack("<Q", result.total_weight)
        + _pack_ids(result.contributors)
        + _pack_ids(result.dropped)
        + struct.pack("<QB7x", values.size, encoding)
    )
    return [head, memoryview(values.data).cast("B")]


def decode_result(payload: memoryview, config: SecAggConfig) -> Result:
    """Parse a SecAgg ``RESULT`` payload of a session with configuration ``config``.

    Raises
    ------
    InvalidMessage
        If the payload is malformed, holds another dimension, or a ring sum that does
        not decode (out of range for its contributors; for a ``ring_input`` session,
        values that are not integers in [0, 2^b)).
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
        d, encoding = struct.unpack_from("<QB7x", payload, offset)
        offset += 16
    except (struct.error, ValueError):
        raise InvalidMessage("truncated result") from None
    dimension = config.dimension
    width = 8 if encoding == ResultEncoding.FLOAT64 or config.bits > 32 else 4
    if encoding not in (ResultEncoding.FLOAT64, ResultEncoding.RING_SUM):
        raise InvalidMessage(f"unknown result encoding {encoding}")
    if d != dimension or len(payload) - offset != width * d:
        raise InvalidMessage(f"result holds {d} values, the session's dimension is {dimension}")
    m = len(lists[0])
    if not 1 <= m <= config.num_clients or not m <= total <= m * config.max_weight:
        raise InvalidMessage("result names an impossible contributor count or weight")
    ring: RingArray | None = None
    if encoding == ResultEncoding.FLOAT64:
        if config.ring_input:
            raise InvalidMessage("a ring-input result is sent as its ring sum")
        mean = np.frombuffer(payload, dtype="<f8", count=d, offset=offset).astype(np.float64)
    else:
        ring = cast(
            "RingArray",
            np.frombuffer(payload, dtype=ring_dtype(config.bits), count=d, offset=offset),
        )
        if ring.size and int(ring.max()) >= 2**config.bits:
            raise InvalidMessage(f"a ring sum must hold values in [0, 2^{config.bits})")
        summed = RingSum(ring, int(total), lists[0], lists[1])
        encoder = encoder_for(config)
        try:
            mean = decoded(summed, encoder).weighted_mean
        except ValueError as exc:
            raise InvalidMessage(f"result does not decode: {exc}") from None
    return Result(mean, int(total), lists[0], lists[1], ring)
