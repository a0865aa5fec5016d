"""The codec's typed boundary: decoders by direction refuse the other side's messages,
and a masked vector decodes without a copy from bytes or a read-only buffer (issue 13,
Deliver 5)."""

from __future__ import annotations

import numpy as np
import pytest
from .test_codec import EXAMPLES

from securefl.errors import InvalidMessage
from securefl.secagg import codec
from securefl.secagg.messages import ClientMessage, MaskedInput, ServerMessage

SERVER_SENT = [m for m in EXAMPLES if isinstance(m, ServerMessage)]
CLIENT_SENT = [m for m in EXAMPLES if isinstance(m, ClientMessage)]


def test_the_examples_cover_both_directions() -> None:
    server = {type(m).__name__ for m in SERVER_SENT}
    client = {type(m).__name__ for m in CLIENT_SENT}
    assert len(server) == 6 and len(client) == 4  # MaskedInput has its own tests below


@pytest.mark.parametrize("message", SERVER_SENT, ids=lambda m: type(m).__name__)
def test_a_client_decodes_what_the_server_sends_and_the_server_refuses_it(message) -> None:
    wire = codec.encode(message)
    assert codec.decode_from_server(wire) == message
    with pytest.raises(InvalidMessage, match="not one of a client's messages"):
        codec.decode_from_client(wire)


@pytest.mark.parametrize("message", CLIENT_SENT, ids=lambda m: type(m).__name__)
def test_the_server_decodes_what_a_client_sends_and_a_client_refuses_it(message) -> None:
    wire = codec.encode(message)
    decoded = codec.decode_from_client(wire)
    if isinstance(message, MaskedInput):
        assert decoded.sender == message.sender
        assert np.array_equal(decoded.vector, message.vector)
    else:
        assert decoded == message
    with pytest.raises(InvalidMessage, match="not one of the server's messages"):
        codec.decode_from_server(wire)


def _masked(bits: int = 32) -> tuple[bytes, np.ndarray]:
    vector = np.arange(1000, dtype=np.uint32 if bits == 32 else np.uint64)
    return codec.encode(MaskedInput(3, bits, vector)), vector


@pytest.mark.parametrize("bits", [32, 64])
def test_a_masked_vector_is_a_view_into_bytes_and_read_only_buffers(bits) -> None:
    wire, vector = _masked(bits)
    for data in (wire, memoryview(wire), memoryview(bytearray(wire)).toreadonly()):
        decoded = codec.decode_from_client(data)
        assert isinstance(decoded, MaskedInput)
        assert np.array_equal(decoded.vector, vector)
        assert not decoded.vector.flags.owndata and not decoded.vector.flags.writeable
        assert np.shares_memory(decoded.vector, np.frombuffer(data, dtype=np.uint8))


def test_a_writable_buffer_is_copied_so_the_message_cannot_change_later() -> None:
    wire, vector = _masked()
    buffer = bytearray(wire)
    decoded = codec.decode_from_client(memoryview(buffer))
    buffer[-4:] = b"\xff\xff\xff\xff"  # the sender's buffer changes after decoding
    assert isinstance(decoded, MaskedInput)
    assert np.array_equal(decoded.vector, vector)
    decoded = codec.decode_from_client(buffer)
    buffer[-4:] = bytes(4)
    assert int(decoded.vector[-1]) == 0xFFFFFFFF
