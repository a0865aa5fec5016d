"""The strict CKKSVectorProto reader and writer."""

from __future__ import annotations

import struct

import pytest

from securefl.ckks.protobuf import decode_vector, encode_vector
from securefl.errors import InvalidMessage

ONE = struct.pack("<d", 1.0)


def test_encode_is_byte_exact() -> None:
    # field 1 packed [2, 300], field 2 b"ab", field 2 b"", field 3 1.0
    expected = b"\x0a\x03\x02\xac\x02" + b"\x12\x02ab" + b"\x12\x00" + b"\x19" + ONE
    assert encode_vector([2, 300], [b"ab", b""], 1.0) == expected


def test_round_trip() -> None:
    blobs = [bytes(range(200)), b"x" * 70000]
    proto = decode_vector(encode_vector([4096, 17], blobs, 2.0**40))
    assert proto.sizes == (4096, 17)
    assert [bytes(b) for b in proto.ciphertexts] == blobs
    assert proto.scale == 2.0**40


def test_unpacked_sizes_and_any_field_order_are_valid_protobuf() -> None:
    data = b"\x19" + ONE + b"\x12\x01z" + b"\x08\x05" + b"\x08\x06"
    proto = decode_vector(data)
    assert proto.sizes == (5, 6)
    assert [bytes(b) for b in proto.ciphertexts] == [b"z"]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x0a\x01\x02\x22\x00" + b"\x19" + ONE, "unexpected field 4"),
        (b"\x0d\x00\x00\x00\x00" + b"\x19" + ONE, "unexpected field 1 with wire type 5"),
        (b"\x19" + ONE + b"\x19" + ONE, "scale appears twice"),
        (b"\x0a\x01\x02", "no scale"),
        (b"\x19" + ONE[:5], "truncated scale"),
        (b"\x12\x05ab", "overruns"),
        (b"\x12", "truncated varint"),
        (b"\x12\x80\x00", "non-minimal varint"),
        (b"\x12" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
        (b"\x08\x80\x80\x80\x80\x10" + b"\x19" + ONE, "does not fit uint32"),
        (b"\x19" + struct.pack("<d", float("nan")), "invalid scale"),
        (b"\x19" + struct.pack("<d", -1.0), "invalid scale"),
    ],
)
def test_rejects_malformed(data: bytes, match: str) -> None:
    with pytest.raises(InvalidMessage, match=match):
        decode_vector(data)


def test_encode_checks_counts() -> None:
    with pytest.raises(ValueError, match="2 sizes for 1"):
        encode_vector([1, 2], [b""], 1.0)
    with pytest.raises(ValueError, match="uint32"):
        encode_vector([2**32], [b""], 1.0)


def test_securefl_contributions_field_round_trips() -> None:
    nonces = [bytes([1]) * 16, bytes([2]) * 16]
    data = encode_vector([2], [b"ab"], 1.0, nonces)
    # after the scale: field 15 (key 0x7a), one record per nonce
    assert data.endswith(b"\x19" + ONE + b"\x7a\x10" + nonces[0] + b"\x7a\x10" + nonces[1])
    proto = decode_vector(data)
    assert proto.contributions == tuple(nonces) and proto.sizes == (2,)
    assert decode_vector(encode_vector([2], [b"ab"], 1.0)).contributions == ()
    # field 15 with another wire type is still refused
    with pytest.raises(InvalidMessage, match="unexpected field 15 with wire type 0"):
        decode_vector(b"\x78\x01" + b"\x19" + ONE)
