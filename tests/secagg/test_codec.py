"""The wire codec: round trips, strictness, and fuzzing (malformed bytes -> InvalidMessage)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from securefl.errors import InvalidMessage
from securefl.secagg import codec
from securefl.secagg.messages import (
    Abort,
    AdvertiseKeys,
    ConsistencyCheck,
    ConsistencyRequest,
    KeyDirectory,
    KeyEntry,
    MaskedInput,
    SessionStart,
    ShareKeys,
    ShareRouting,
    UnmaskingRequest,
    UnmaskingResponse,
)

EXAMPLES = [
    SessionStart(b"\x01" * 32, b"\x02" * 32),
    KeyDirectory(
        b"\x03" * 16,
        (
            KeyEntry(0, b"\x04" * 32, b"\x05" * 32, b"\x19" * 32),
            KeyEntry(7, b"\x06" * 32, b"\x07" * 32, b"\x1a" * 32, b"\x08" * 64),
        ),
    ),
    ShareRouting(((1, b"\x09" * 116), (4, b"\x0a" * 116))),
    ConsistencyRequest((0, 2, 5)),
    UnmaskingRequest((1, 2), (3,), (1, 2, 9), ((1, b"\x0b" * 64), (2, b"\x0c" * 64))),
    Abort("too few clients: 3 < t + 1"),
    AdvertiseKeys(42, b"\x0d" * 32, b"\x0e" * 32, b"\x1b" * 32, b"\x0f" * 64),
    AdvertiseKeys(43, b"\x0d" * 32, b"\x0e" * 32, b"\x1b" * 32),
    ShareKeys(5, ((1, b"\x10" * 116), (6, b"\x11" * 116))),
    ConsistencyCheck(5, b"\x12" * 64),
    UnmaskingResponse(5, ((1, b"\x13" * 40),), ((2, b"\x14" * 40), (3, b"\x15" * 40))),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message) -> None:
    wire = codec.encode(message)
    assert wire[:5] == b"SFL\x02" + bytes([codec._TYPES[type(message)]])
    assert codec.decode(wire) == message


@pytest.mark.parametrize(
    "bits,dtype", [(32, np.uint32), (17, np.uint32), (64, np.uint64), (40, np.uint64)]
)
def test_masked_input_round_trip_and_size(bits, dtype) -> None:
    mask = np.uint64((1 << bits) - 1)
    vector = ((np.arange(1001, dtype=np.uint64) * np.uint64(2654435761)) & mask).astype(dtype)
    wire = codec.encode(MaskedInput(3, bits, vector))
    # header, sender, bits, count, then the elements bit-packed
    assert len(wire) == 5 + 4 + 1 + 8 + 6 + (vector.size * bits + 7) // 8
    decoded = codec.decode(wire)
    assert decoded.sender == 3 and decoded.bits == bits
    np.testing.assert_array_equal(decoded.vector, vector)


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_truncation_and_extension_is_rejected(message) -> None:
    wire = codec.encode(message)
    for cut in range(len(wire)):
        with pytest.raises(InvalidMessage):
            codec.decode(wire[:cut])
    with pytest.raises(InvalidMessage, match="trailing"):
        codec.decode(wire + b"\x00")


def test_unsorted_or_duplicate_ids_are_rejected() -> None:
    wire = bytearray(codec.encode(ConsistencyRequest((1, 2))))
    wire[-8:] = (2).to_bytes(4, "little") + (1).to_bytes(4, "little")
    with pytest.raises(InvalidMessage, match="strictly increasing"):
        codec.decode(bytes(wire))
    wire[-8:] = (2).to_bytes(4, "little") * 2
    with pytest.raises(InvalidMessage, match="strictly increasing"):
        codec.decode(bytes(wire))


def test_header_checks() -> None:
    good = codec.encode(EXAMPLES[0])
    with pytest.raises(InvalidMessage, match="magic"):
        codec.decode(b"XYZ" + good[3:])
    with pytest.raises(InvalidMessage, match="version"):
        codec.decode(good[:3] + b"\x01" + good[4:])  # version 1: before commitments
    with pytest.raises(InvalidMessage, match="unknown message type"):
        codec.decode(good[:4] + b"\x63" + good[5:])
    with pytest.raises(InvalidMessage, match="bytes"):
        codec.decode("SFL")  # type: ignore[arg-type]


def test_size_limits_are_checked_before_allocation() -> None:
    huge = (
        b"SFL\x02\x43" + (1).to_bytes(4, "little") + bytes([32]) + (1 << 40).to_bytes(8, "little")
    )
    with pytest.raises(InvalidMessage, match="exceeds the limit"):
        codec.decode(huge)
    vec = codec.encode(MaskedInput(0, 32, np.zeros(11, np.uint32)))
    with pytest.raises(InvalidMessage, match="exceeds the limit 10"):
        codec.decode(vec, max_dimension=10)
    many = b"SFL\x02\x04" + (codec.MAX_CLIENTS + 1).to_bytes(4, "little")
    with pytest.raises(InvalidMessage, match="exceeds the limit"):
        codec.decode(many)


def test_packed_padding_must_be_zero() -> None:
    wire = codec.encode(MaskedInput(0, 12, np.array([5, 4095, 7], np.uint32)))
    assert len(wire) == 24 + 5  # 36 bits in 5 bytes
    bad = wire[:-1] + bytes([wire[-1] | 0x80])  # a padding bit set
    with pytest.raises(InvalidMessage, match="padding"):
        codec.decode(bad)


def test_vector_padding_must_be_zero_and_words_are_aligned() -> None:
    wire = codec.encode(MaskedInput(0, 32, np.arange(5, dtype=np.uint32)))
    assert wire[18:24] == bytes(6)
    decoded = codec.decode(wire)
    assert decoded.vector.flags.aligned
    with pytest.raises(InvalidMessage, match="padding"):
        codec.decode(wire[:20] + b"\x01" + wire[21:])
    # A misaligned buffer still decodes (into an aligned copy).
    shifted = memoryview(b"\x00" + wire)[1:]
    np.testing.assert_array_equal(codec.decode(shifted).vector, np.arange(5))


def test_out_of_ring_elements_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="not below 2\\^12"):
        codec.encode(MaskedInput(0, 12, np.array([5, 4096], np.uint32)))


def test_abort_reason_must_be_utf8() -> None:
    wire = codec.encode(Abort("ok"))
    with pytest.raises(InvalidMessage, match="UTF-8"):
        codec.decode(wire[:-2] + b"\xff\xfe")


@given(st.binary(max_size=400))
def test_random_bytes_only_raise_invalid_message(data) -> None:
    with contextlib.suppress(InvalidMessage):
        codec.decode(data)


@given(st.sampled_from(EXAMPLES), st.data())
def test_corrupted_messages_decode_or_raise_invalid_message(message, data) -> None:
    wire = bytearray(codec.encode(message))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(wire) - 1))
        wire[pos] = data.draw(st.integers(0, 255))
    try:
        decoded = codec.decode(bytes(wire))
    except InvalidMessage:
        return
    # Whatever decodes re-encodes to the same bytes: the encoding is canonical.
    assert codec.encode(decoded) == bytes(wire)


def test_a_long_abort_reason_is_cut_on_a_character_boundary() -> None:
    """The encoder cuts a reason at MAX_REASON bytes; cutting inside a UTF-8 character
    used to produce bytes its own decoder refused."""
    reason = "x" * (codec.MAX_REASON - 1) + "é" + "tail"
    decoded = codec.decode(codec.encode(Abort(reason)))
    assert isinstance(decoded, Abort)
    assert decoded.reason == "x" * (codec.MAX_REASON - 1)
    short = "ünïcödé reason"
    assert codec.decode(codec.encode(Abort(short))) == Abort(short)
