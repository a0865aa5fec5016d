"""Optional backends: TenSEAL's lazy import and the zstd decoders."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from securefl.ckks import ClientContext, _backend
from securefl.ckks.protobuf import decode_vector
from securefl.ckks.seal import read_ciphertext
from securefl.errors import BackendUnavailable, InvalidMessage


@pytest.fixture
def zstd_blob(ts: Any, ctx: ClientContext) -> memoryview:
    return decode_vector(ts.ckks_vector(ctx.tenseal, [1.0, 2.0]).serialize()).ciphertexts[0]


@pytest.fixture
def fresh_cache() -> Iterator[None]:
    _backend._decoder.cache_clear()
    yield
    _backend._decoder.cache_clear()


def test_a_decoder_is_found(ts: Any) -> None:
    assert _backend.zstd_backend() == "zstandard"


def test_decoders_agree_with_the_seal_layout(zstd_blob: memoryview) -> None:
    decoders = [f() for f in (_backend._zstandard_decoder, _backend._stdlib_decoder)]
    size = 97 + 8 * 2 * 2 * 8192
    outputs = []
    for decode in decoders:
        if decode is None:  # compression.zstd exists from Python 3.14 only
            continue
        out = np.zeros(size, np.uint8)
        assert decode(zstd_blob[16:], out) == size
        outputs.append(out)
    assert outputs
    assert all(np.array_equal(o, outputs[0]) for o in outputs)
    # The decoded payload starts with the parms_id and an NTT flag of 1.
    assert outputs[0][32] == 1


def test_decoder_never_overflows_its_buffer(zstd_blob: memoryview) -> None:
    small = np.zeros(1000, np.uint8)
    with pytest.raises(InvalidMessage, match="longer than its header allows"):
        _backend.zstd_decompress_into(zstd_blob[16:], small)


def test_corrupt_frame_is_invalid(zstd_blob: memoryview) -> None:
    broken = bytearray(zstd_blob[16:])
    broken[:4] = b"\x00\x00\x00\x00"  # destroy the frame magic
    with pytest.raises(InvalidMessage, match="zstd"):
        _backend.zstd_decompress_into(memoryview(bytes(broken)), np.zeros(10**6, np.uint8))


def test_no_decoder_is_reported(
    monkeypatch: pytest.MonkeyPatch, fresh_cache: None, zstd_blob: memoryview
) -> None:
    for name in ("_zstandard_decoder", "_stdlib_decoder"):
        monkeypatch.setattr(_backend, name, lambda: None)
    with pytest.raises(BackendUnavailable, match="zstd decoder"):
        _backend.zstd_backend()
    with pytest.raises(BackendUnavailable):
        read_ciphertext(zstd_blob, max_coeffs=2 * 2 * 8192)


def test_missing_tenseal_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tenseal", None)
    with pytest.raises(BackendUnavailable, match=r"securefl\[ckks\]"):
        _backend.tenseal()
    with pytest.raises(BackendUnavailable):
        ClientContext.generate()
