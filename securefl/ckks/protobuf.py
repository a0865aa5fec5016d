"""A strict reader and writer for TenSEAL's ``CKKSVectorProto`` message.

``tenseal.CKKSVector.serialize()`` returns a protocol-buffers message with three fields
(TenSEAL 0.3.x, ``tenseal/proto/tensors.proto``)::

    repeated uint32 sizes       = 1;  // values per ciphertext; written packed
    repeated bytes  ciphertexts = 2;  // one SEAL Ciphertext::save blob per chunk
    double          scale       = 3;

securefl adds one field that TenSEAL's parser skips (proto3 keeps unknown fields), so
that an aggregate in TenSEAL's format still names the contributions it sums
(:mod:`securefl.ckks.contributions`)::

    repeated bytes  contributions = 15;  // 16-byte contribution nonces, increasing

Only the protobuf wire format needed for these fields is implemented (varints,
length-delimited records, 64-bit fixed), so securefl needs no protobuf dependency. The
reader is strict: unknown fields, wrong wire types, non-minimal or overlong varints,
truncation, a repeated scale and size values above 2^32 are rejected, because these bytes
come from peers.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from securefl.errors import InvalidMessage

__all__ = ["VectorProto", "decode_vector", "encode_vector"]

_VARINT = 0
_I64 = 1
_LEN = 2
_DOUBLE = struct.Struct("<d")
_MAX_UINT32 = 2**32 - 1
CONTRIBUTIONS_FIELD = 15


@dataclass(frozen=True, eq=False)
class VectorProto:
    """The fields of one ``CKKSVectorProto``.

    Parameters
    ----------
    sizes:
        Values held by each ciphertext, in order.
    ciphertexts:
        One SEAL ciphertext blob per entry of ``sizes``; views into the message.
    scale:
        The vector's CKKS scale.
    """

    sizes: tuple[int, ...]
    ciphertexts: tuple[memoryview, ...]
    scale: float
    contributions: tuple[bytes, ...] = ()
    """securefl's field 15: the contribution nonces of an aggregate, as sent (unchecked)."""


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(10):
        if pos + i >= len(buf):
            raise InvalidMessage("protobuf: truncated varint")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            # A trailing zero byte would give one value two encodings.
            if i > 0 and byte == 0:
                raise InvalidMessage("protobuf: non-minimal varint")
            if value >= 2**64:
                raise InvalidMessage("protobuf: varint above 2^64")
            return value, pos + i + 1
    raise InvalidMessage("protobuf: varint longer than 10 bytes")


def _write_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_len(buf: memoryview, pos: int) -> tuple[memoryview, int]:
    length, pos = _read_varint(buf, pos)
    if length > len(buf) - pos:
        raise InvalidMessage(f"protobuf: record of {length} bytes overruns the message")
    return buf[pos : pos + length], pos + length


def _uint32(value: int) -> int:
    if value > _MAX_UINT32:
        raise InvalidMessage(f"protobuf: size {value} does not fit uint32")
    return value


def decode_vector(data: bytes | bytearray | memoryview) -> VectorProto:
    """Parse a ``CKKSVectorProto`` without copying the ciphertext blobs.

    Parameters
    ----------
    data:
        The bytes of ``CKKSVector.serialize()``.

    Returns
    -------
    VectorProto
        Its fields; ``ciphertexts`` are views into ``data``.

    Raises
    ------
    InvalidMessage
        On truncation, an unknown field or wire type, a malformed varint, a size above
        2^32 - 1, a repeated or non-finite scale, or a missing scale.
    """
    buf = memoryview(data).cast("B")
    pos = 0
    sizes: list[int] = []
    blobs: list[memoryview] = []
    contributions: list[bytes] = []
    scale: float | None = None
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 1 and wire == _LEN:  # packed sizes (the encoding TenSEAL writes)
            packed, pos = _read_len(buf, pos)
            inner = 0
            while inner < len(packed):
                value, inner = _read_varint(packed, inner)
                sizes.append(_uint32(value))
        elif field == 1 and wire == _VARINT:  # unpacked sizes: equally valid protobuf
            value, pos = _read_varint(buf, pos)
            sizes.append(_uint32(value))
        elif field == 2 and wire == _LEN:
            blob, pos = _read_len(buf, pos)
            blobs.append(blob)
        elif field == 3 and wire == _I64:
            # proto3 lets the last value win; a peer sending two is not TenSEAL.
            if scale is not None:
                raise InvalidMessage("protobuf: scale appears twice")
            if len(buf) - pos < _DOUBLE.size:
                raise InvalidMessage("protobuf: truncated scale")
            (scale,) = _DOUBLE.unpack_from(buf, pos)
            pos += _DOUBLE.size
        elif field == CONTRIBUTIONS_FIELD and wire == _LEN:
            nonce, pos = _read_len(buf, pos)
            contributions.append(bytes(nonce))
        else:
            raise InvalidMessage(f"protobuf: unexpected field {field} with wire type {wire}")
    if scale is None:
        raise InvalidMessage("protobuf: the vector has no scale")
    if not math.isfinite(scale) or scale <= 0:
        raise InvalidMessage(f"protobuf: invalid scale {scale}")
    return VectorProto(tuple(sizes), tuple(blobs), scale, tuple(contributions))


def encode_vector(
    sizes: tuple[int, ...] | list[int],
    ciphertexts: list[bytes],
    scale: float,
    contributions: tuple[bytes, ...] | list[bytes] = (),
) -> bytes:
    """Serialize a ``CKKSVectorProto`` the way TenSEAL does.

    Fields are written in number order, sizes packed, then the scale and securefl's
    contributions; ``CKKSVector`` loads it with ``tenseal.ckks_vector_from``.

    Parameters
    ----------
    sizes:
        Values per ciphertext, each in [0, 2^32).
    ciphertexts:
        SEAL ciphertext blobs, one per size.
    scale:
        The vector's scale.
    contributions:
        securefl's field 15, written after the scale (nothing when empty).

    Returns
    -------
    bytes
        The message.

    Raises
    ------
    ValueError
        If the counts differ or a size does not fit uint32.
    """
    if len(sizes) != len(ciphertexts):
        raise ValueError(f"{len(sizes)} sizes for {len(ciphertexts)} ciphertexts")
    packed = bytearray()
    for size in sizes:
        if not 0 <= size <= _MAX_UINT32:
            raise ValueError(f"size {size} does not fit uint32")
        packed += _write_varint(size)
    parts = [bytes([1 << 3 | _LEN]), _write_varint(len(packed)), bytes(packed)]
    for blob in ciphertexts:
        parts += [bytes([2 << 3 | _LEN]), _write_varint(len(blob)), blob]
    parts += [bytes([3 << 3 | _I64]), _DOUBLE.pack(scale)]
    for nonce in contributions:
        parts += [bytes([CONTRIBUTIONS_FIELD << 3 | _LEN]), _write_varint(len(nonce)), nonce]
    return b"".join(parts)
