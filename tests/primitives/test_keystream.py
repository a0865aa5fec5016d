from __future__ import annotations

import numpy as np
import pytest
from support import BACKENDS

from securefl import BackendUnavailable, _core
from securefl.primitives import available_backends, default_backend, keystream


def test_backends_are_reported() -> None:
    names = available_backends()
    assert "portable" in names
    assert default_backend() in names
    assert default_backend() != "portable" or names == ["portable"]


def test_backends_agree_on_a_long_stream() -> None:
    key = bytes(range(16))
    streams = {b: keystream(key, 100_003, backend=b) for b in BACKENDS}
    first = streams[BACKENDS[0]]
    assert first.dtype == np.uint8 and first.shape == (100_003,)
    for stream in streams.values():
        np.testing.assert_array_equal(stream, first)


def test_stream_is_seekable_by_counter() -> None:
    key = bytes(range(100, 116))
    whole = keystream(key, 4096)
    for block in (0, 1, 17, 255):
        counter = block.to_bytes(16, "big")
        part = keystream(key, 4096 - 16 * block, counter_block=counter)
        np.testing.assert_array_equal(part, whole[16 * block :])


def test_different_keys_give_different_streams() -> None:
    a = keystream(b"\x00" * 16, 64)
    b = keystream(b"\x00" * 15 + b"\x01", 64)
    assert a.tobytes() != b.tobytes()


@pytest.mark.parametrize("key", [b"", b"\x00" * 15, b"\x00" * 17, b"\x00" * 32])
def test_wrong_key_size(key: bytes) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        keystream(key, 16)


def test_wrong_key_type() -> None:
    with pytest.raises(TypeError, match="bytes"):
        keystream("0123456789abcdef", 16)  # type: ignore[arg-type]


def test_wrong_counter_size() -> None:
    with pytest.raises(ValueError, match="counter_block"):
        keystream(bytes(16), 16, counter_block=bytes(8))


def test_negative_length() -> None:
    with pytest.raises(ValueError, match="nbytes"):
        keystream(bytes(16), -1)


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="unknown AES backend"):
        keystream(bytes(16), 16, backend="rot13")  # type: ignore[arg-type]


def test_unavailable_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_core, "available_backends", lambda: ["portable"])
    with pytest.raises(BackendUnavailable, match="aesni"):
        keystream(bytes(16), 16, backend="aesni")


class TestCoreValidation:
    """The native module validates on its own, whatever the wrapper did."""

    def test_rejects_non_array_out(self) -> None:
        with pytest.raises(TypeError, match=r"numpy\.ndarray"):
            _core.keystream_into(bytearray(16), bytes(16), bytes(16), "auto")

    def test_rejects_wrong_dtype(self) -> None:
        with pytest.raises(TypeError, match="uint8"):
            _core.keystream_into(np.empty(4, np.uint32), bytes(16), bytes(16), "auto")

    def test_rejects_non_contiguous(self) -> None:
        with pytest.raises(ValueError, match="C-contiguous"):
            _core.keystream_into(np.empty(32, np.uint8)[::2], bytes(16), bytes(16), "auto")

    def test_rejects_read_only(self) -> None:
        out = np.empty(16, np.uint8)
        out.flags.writeable = False
        with pytest.raises(ValueError, match="writeable"):
            _core.keystream_into(out, bytes(16), bytes(16), "auto")

    def test_rejects_short_key(self) -> None:
        with pytest.raises(ValueError, match="16 bytes"):
            _core.keystream_into(np.empty(16, np.uint8), bytes(8), bytes(16), "auto")
