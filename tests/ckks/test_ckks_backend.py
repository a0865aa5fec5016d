"""Optional backends: TenSEAL's lazy import and the zstd decoders."""

from __future__ import annotations

import ctypes.util
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
    expected = "compression.zstd" if sys.version_info >= (3, 14) else "tenseal-bundled"
    assert _backend.zstd_backend() == expected


def test_system_libzstd_decodes_like_tenseals(zstd_blob: memoryview) -> None:
    if ctypes.util.find_library("zstd") is None:
        pytest.skip("no system libzstd")
    system = _backend._system_decoder()
    bundled = _backend._tenseal_decoder()
    assert system is not None and bundled is not None
    size = 97 + 8 * 2 * 2 * 8192
    a, b = np.zeros(size, np.uint8), np.zeros(size, np.uint8)
    assert system(zstd_blob[16:], a) == size == bundled(zstd_blob[16:], b)
    assert np.array_equal(a, b)
    # The decoded payload starts with the parms_id and an NTT flag of 1.
    assert a[32] == 1


def test_decoder_never_overflows_its_buffer(zstd_blob: memoryview) -> None:
    small = np.zeros(1000, np.uint8)
    with pytest.raises(InvalidMessage, match="oversized"):
        _backend.zstd_decompress_into(zstd_blob[16:], small)


def test_no_decoder_is_reported(
    monkeypatch: pytest.MonkeyPatch, fresh_cache: None, zstd_blob: memoryview
) -> None:
    for name in ("_stdlib_decoder", "_tenseal_decoder", "_system_decoder"):
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
