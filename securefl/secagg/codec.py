"""Versioned binary encoding of SecAgg messages (field by field in docs/PROTOCOL.md).

Every message is ``b"SFL" || version (u8) || type (u8) || body``. Integers are little
endian; id lists are strictly increasing (one canonical encoding, no duplicates);
variable-length fields carry a u32 length checked against a limit before anything is
allocated. Decoding consumes exactly the input: anything else raises
:class:`~securefl.errors.InvalidMessage`, never another exception.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable
from typing import cast

import numpy as np

from securefl.errors import InvalidMessage
from securefl.primitives.masking import RingArray, pack_bits, packed_size, ring_dtype, unpack_bits
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
    UnmaskingRequest,
    UnmaskingResponse,
)

__all__ = [
    "MAX_CIPHERTEXT",
    "MAX_CLIENTS",
    "VERSION",
    "decode",
    "decode_from_client",
    "decode_from_server",
    "encode",
]

MAGIC = b"SFL"
VERSION = 2
MAX_CLIENTS = 1 << 20
"""No list in a message may name more clients than this."""
MAX_CIPHERTEXT = 1024
MAX_REASON = 4096
DEFAULT_MAX_DIMENSION = 1 << 31
KEY = 32
COMMITMENT = 32
SIGNATURE = 64
SHARE = 40
_VECTOR_PAD = 6  # zero bytes: the masked words start at offset 24 of the message

_TYPES: dict[type, int] = {
    SessionStart: 1,
    KeyDirectory: 2,
    ShareRouting: 3,
    ConsistencyRequest: 4,
    UnmaskingRequest: 5,
    Abort: 6,
    AdvertiseKeys: 65,
    ShareKeys: 66,
    MaskedInput: 67,
    ConsistencyCheck: 68,
    UnmaskingResponse: 69,
}


# ---- encoding ---------------------------------------------------------------------------


class _Writer:
    def __init__(self, kind: int) -> None:
        self.parts: list[bytes] = [MAGIC, struct.pack("<BB", VERSION, kind)]

    def u8(self, v: int) -> None:
        self.parts.append(struct.pack("<B", v))

    def u32(self, v: int) -> None:
        self.parts.append(struct.pack("<I", v))

    def u64(self, v: int) -> None:
        self.parts.append(struct.pack("<Q", v))

    def fixed(self, b: bytes, n: int) -> None:
        if len(b) != n:
            raise ValueError(f"field must be {n} bytes, got {len(b)}")
        self.parts.append(bytes(b))

    def var(self, b: bytes) -> None:
        self.u32(len(b))
        self.parts.append(bytes(b))

    def signature(self, sig: bytes) -> None:
        if sig:
            self.u8(1)
            self.fixed(sig, SIGNATURE)
        else:
            self.u8(0)

    def ids(self, ids: tuple[int, ...]) -> None:
        self.u32(len(ids))
        self.parts.append(struct.pack(f"<{len(ids)}I", *ids))

    def pairs(self, pairs: tuple[tuple[int, bytes], ...], size: int | None = None) -> None:
        self.u32(len(pairs))
        for i, blob in pairs:
            self.u32(i)
            if size is None:
                self.var(blob)
            else:
                self.fixed(blob, size)

    def done(self) -> bytes:
        return b"".join(self.parts)


def _reason_bytes(reason: str) -> bytes:
    """At most MAX_REASON bytes of UTF-8, cut at a character boundary so that the
    decoder (which requires valid UTF-8) accepts what the encoder wrote."""
    raw = reason.encode("utf-8")
    if len(raw) <= MAX_REASON:
        return raw
    return raw[:MAX_REASON].decode("utf-8", errors="ignore").encode("utf-8")


def encode(message: ServerMessage | ClientMessage) -> bytes:
    """The wire bytes of ``message``.

    Raises
    ------
    ValueError
        If a field has the wrong size (a bug in the caller, not peer input).
    """
    w = _Writer(_TYPES[type(message)])
    if isinstance(message, SessionStart):
        w.fixed(message.nonce, 32)
        w.fixed(message.config_digest, 32)
    elif isinstance(message, KeyDirectory):
        w.fixed(message.graph_seed, 16)
        w.u32(len(message.entries))
        for e in message.entries:
            w.u32(e.client_id)
            w.fixed(e.mask_public_key, KEY)
            w.fixed(e.encryption_public_key, KEY)
            w.fixed(e.self_mask_commitment, COMMITMENT)
            w.signature(e.signature)
    elif isinstance(message, ShareRouting):
        w.pairs(message.ciphertexts)
    elif isinstance(message, ConsistencyRequest):
        w.ids(message.survivors)
    elif isinstance(message, UnmaskingRequest):
        w.ids(message.survivors)
        w.ids(message.dropped)
        w.ids(message.all_survivors)
        w.pairs(message.signatures, SIGNATURE)
    elif isinstance(message, Abort):
        w.var(_reason_bytes(message.reason))
    elif isinstance(message, AdvertiseKeys):
        w.u32(message.sender)
        w.fixed(message.mask_public_key, KEY)
        w.fixed(message.encryption_public_key, KEY)
        w.fixed(message.self_mask_commitment, COMMITMENT)
        w.signature(message.signature)
    elif isinstance(message, ShareKeys):
        w.u32(message.sender)
        w.pairs(message.ciphertexts)
    elif isinstance(message, MaskedInput):
        w.u32(message.sender)
        w.u8(message.bits)
        vector = cast(
            "RingArray", np.ascontiguousarray(message.vector, dtype=ring_dtype(message.bits))
        )
        w.u64(vector.size)
        w.parts.append(bytes(_VECTOR_PAD))
        if message.bits in (32, 64):
            w.parts.append(vector.tobytes())  # packing is the identity for whole words
        else:
            w.parts.append(pack_bits(vector, message.bits))
    elif isinstance(message, ConsistencyCheck):
        w.u32(message.sender)
        w.fixed(message.signature, SIGNATURE)
    elif isinstance(message, UnmaskingResponse):
        w.u32(message.sender)
        w.pairs(message.self_mask_shares, SHARE)
        w.pairs(message.key_shares, SHARE)
    return w.done()


# ---- decoding ---------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes | memoryview, max_dimension: int) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.max_dimension = max_dimension

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise InvalidMessage(f"truncated message: needs {n} bytes at offset {self.pos}")
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def u8(self) -> int:
        return int(self.take(1)[0])

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])

    def count(self, limit: int, what: str) -> int:
        n = self.u32()
        if n > limit:
            raise InvalidMessage(f"{what}: {n} exceeds the limit {limit}")
        return n

    def var(self, limit: int, what: str) -> bytes:
        return self.take(self.count(limit, what))

    def signature(self) -> bytes:
        flag = self.u8()
        if flag == 0:
            return b""
        if flag != 1:
            raise InvalidMessage(f"bad signature flag {flag}")
        return self.take(SIGNATURE)

    def ids(self, what: str) -> tuple[int, ...]:
        n = self.count(MAX_CLIENTS, what)
        raw = self.take(4 * n)
        ids = struct.unpack(f"<{n}I", raw)
        _increasing(ids, what)
        return tuple(int(i) for i in ids)

    def pairs(self, what: str, size: int | None = None) -> tuple[tuple[int, bytes], ...]:
        n = self.count(MAX_CLIENTS, what)
        out = []
        for _ in range(n):
            i = self.u32()
            blob = self.var(MAX_CIPHERTEXT, what) if size is None else self.take(size)
            out.append((i, blob))
        _increasing([i for i, _ in out], what)
        return tuple(out)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise InvalidMessage(f"{len(self.data) - self.pos} trailing bytes")


def _increasing(ids: list[int] | tuple[int, ...], what: str) -> None:
    # One canonical encoding per set: blocks duplicates and makes replay detection exact.
    for a, b in itertools.pairwise(ids):
        if b <= a:
            raise InvalidMessage(f"{what}: ids must be strictly increasing")


def _session_start(r: _Reader) -> SessionStart:
    return SessionStart(r.take(32), r.take(32))


def _key_directory(r: _Reader) -> KeyDirectory:
    seed = r.take(16)
    n = r.count(MAX_CLIENTS, "key directory")
    entries = tuple(
        KeyEntry(r.u32(), r.take(KEY), r.take(KEY), r.take(COMMITMENT), r.signature())
        for _ in range(n)
    )
    _increasing([e.client_id for e in entries], "key directory")
    return KeyDirectory(seed, entries)


def _unmasking_request(r: _Reader) -> UnmaskingRequest:
    return UnmaskingRequest(
        r.ids("survivors"),
        r.ids("dropped"),
        r.ids("all survivors"),
        r.pairs("signatures", SIGNATURE),
    )


def _abort(r: _Reader) -> Abort:
    raw = r.var(MAX_REASON, "abort reason")
    try:
        return Abort(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidMessage("abort reason is not UTF-8") from None


def _masked_input(r: _Reader) -> MaskedInput:
    sender = r.u32()
    bits = r.u8()
    if not 1 <= bits <= 64:
        raise InvalidMessage(f"ring bits {bits} not in [1, 64]")
    n = r.u64()
    if n > r.max_dimension:
        raise InvalidMessage(f"vector of {n} elements exceeds the limit {r.max_dimension}")
    if r.take(_VECTOR_PAD) != bytes(_VECTOR_PAD):
        raise InvalidMessage("masked vector padding must be zero")
    dtype = ring_dtype(bits)
    size = packed_size(n, bits)
    raw = r.data[r.pos : r.pos + size]
    if len(raw) != size:
        raise InvalidMessage("truncated masked vector")
    r.pos += size
    if bits in (32, 64):
        # Zero-copy, read-only view of the wire bytes (the host is little-endian); the
        # padding puts it at offset 24, so it is aligned whenever the buffer is.
        vector = cast("RingArray", np.frombuffer(raw, dtype=dtype))
        if not vector.flags.aligned:
            vector = vector.copy()
    else:
        try:
            vector = unpack_bits(raw, n, bits)
        except ValueError as exc:
            raise InvalidMessage(f"masked vector: {exc}") from None
    return MaskedInput(sender, bits, vector)


_DECODERS: dict[int, Callable[[_Reader], ServerMessage | ClientMessage]] = {
    1: _session_start,
    2: _key_directory,
    3: lambda r: ShareRouting(r.pairs("ciphertexts")),
    4: lambda r: ConsistencyRequest(r.ids("survivors")),
    5: _unmasking_request,
    6: _abort,
    65: lambda r: AdvertiseKeys(
        r.u32(), r.take(KEY), r.take(KEY), r.take(COMMITMENT), r.signature()
    ),
    66: lambda r: ShareKeys(r.u32(), r.pairs("ciphertexts")),
    67: _masked_input,
    68: lambda r: ConsistencyCheck(r.u32(), r.take(SIGNATURE)),
    69: lambda r: UnmaskingResponse(
        r.u32(), r.pairs("self-mask shares", SHARE), r.pairs("key shares", SHARE)
    ),
}


_SERVER_KINDS = frozenset(range(1, 7))
_CLIENT_KINDS = frozenset(range(65, 70))


def decode(
    data: bytes | bytearray | memoryview, *, max_dimension: int = DEFAULT_MAX_DIMENSION
) -> ServerMessage | ClientMessage:
    """Parse one message of either direction.

    Parameters
    ----------
    data:
        The wire bytes. ``bytes`` and read-only buffers are not copied: a masked vector
        of 32 or 64 bits is then a read-only view into them. A writable buffer
        (``bytearray``) is copied first, so the message cannot change after decoding.
    max_dimension:
        The largest masked vector accepted (the session's d + 1): a size limit
        checked before allocating.

    Raises
    ------
    InvalidMessage
        For anything but a well-formed message of a known type and version.
    """
    return _decode(data, max_dimension, None)


def decode_from_server(
    data: bytes | bytearray | memoryview, *, max_dimension: int = DEFAULT_MAX_DIMENSION
) -> ServerMessage:
    """Parse a message a client receives (:func:`decode`, typed for the client).

    Raises
    ------
    InvalidMessage
        Also for a well-formed message that only a client sends.
    """
    return cast("ServerMessage", _decode(data, max_dimension, _SERVER_KINDS))


def decode_from_client(
    data: bytes | bytearray | memoryview, *, max_dimension: int = DEFAULT_MAX_DIMENSION
) -> ClientMessage:
    """Parse a message the server receives (:func:`decode`, typed for the server).

    Raises
    ------
    InvalidMessage
        Also for a well-formed message that only the server sends.
    """
    return cast("ClientMessage", _decode(data, max_dimension, _CLIENT_KINDS))


def _decode(
    data: bytes | bytearray | memoryview, max_dimension: int, kinds: frozenset[int] | None
) -> ServerMessage | ClientMessage:
    if isinstance(data, bytes):
        buffer: bytes | memoryview = data
    elif isinstance(data, memoryview):
        # A read-only view is used as it is; a writable one could change under us.
        buffer = data if data.readonly else bytes(data)
    elif isinstance(data, bytearray):
        buffer = bytes(data)
    else:
        raise InvalidMessage(f"expected bytes, got {type(data).__name__}")
    r = _Reader(buffer, max_dimension)
    if r.take(3) != MAGIC:
        raise InvalidMessage("not a securefl message (bad magic)")
    version, kind = r.u8(), r.u8()
    if version != VERSION:
        raise InvalidMessage(f"unsupported message version {version}")
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise InvalidMessage(f"unknown message type {kind}")
    if kinds is not None and kind not in kinds:
        # A reflected or misrouted message must not reach the wrong state machine.
        expected = "a client's" if kinds is _CLIENT_KINDS else "the server's"
        raise InvalidMessage(f"message type {kind} is not one of {expected} messages")
    message = decoder(r)
    r.end()
    return message
