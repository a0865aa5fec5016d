"""SEAL ciphertext blobs: the layout of docs/CKKS.md, checked against SEAL itself."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np
import pytest

from securefl.ckks import ClientContext
from securefl.ckks.protobuf import decode_vector, encode_vector
from securefl.ckks.seal import CiphertextInfo, read_ciphertext, write_ciphertext
from securefl.errors import InvalidMessage

HEADER = struct.Struct("<HBBBBHQ")
MAX = 2 * 2 * 8192


@pytest.fixture(scope="module")
def fresh(ts: Any, ctx: ClientContext) -> tuple[Any, CiphertextInfo, np.ndarray, bytes]:
    vector = ts.ckks_vector(ctx.tenseal, [0.5, 1.5, -2.0])
    blob = bytes(decode_vector(vector.serialize()).ciphertexts[0])
    info, coeffs = read_ciphertext(blob, max_coeffs=MAX)
    return vector, info, coeffs, write_ciphertext(info, coeffs)


def test_reads_tenseal_zstd_blob(ts: Any, ctx: ClientContext, fresh: Any) -> None:
    vector, info, coeffs, _ = fresh
    assert HEADER.unpack_from(decode_vector(vector.serialize()).ciphertexts[0])[4] == 2  # zstd
    assert info.polys == 2 and info.limbs == 2 and info.poly_modulus_degree == 8192
    assert info.parms_id == ctx.spec.parms_id
    assert info.scale == 2.0**40
    assert info.version[0] == 4
    # SEAL's Ciphertext.data(i) is the first coefficient of polynomial i.
    seal_ct = vector.ciphertext()[0]
    assert coeffs[0, 0, 0] == seal_ct.data(0)
    assert coeffs[1, 0, 0] == seal_ct.data(1)
    for limb, q in enumerate(ctx.spec.moduli):
        assert int(coeffs[:, limb].max()) < q
    assert coeffs.flags.aligned


def test_uncompressed_blob_loads_in_tenseal(ts: Any, ctx: ClientContext, fresh: Any) -> None:
    vector, info, coeffs, raw = fresh
    assert HEADER.unpack_from(raw)[4] == 0 and HEADER.unpack_from(raw)[6] == len(raw)
    assert len(raw) == 16 + 97 + 8 * coeffs.size
    loaded = ts.ckks_vector_from(ctx.tenseal, encode_vector([3], [raw], info.scale))
    assert loaded.decrypt() == vector.decrypt()
    info2, coeffs2 = read_ciphertext(raw, max_coeffs=MAX)
    assert info2 == info
    np.testing.assert_array_equal(coeffs2, coeffs)


def test_zlib_blob_round_trips_through_seal(ts: Any, ctx: ClientContext, fresh: Any) -> None:
    vector, info, coeffs, raw = fresh
    body = zlib.compress(raw[16:])
    blob = HEADER.pack(0xA15E, 16, *info.version, 1, 0, 16 + len(body)) + body
    np.testing.assert_array_equal(read_ciphertext(blob, max_coeffs=MAX)[1], coeffs)
    loaded = ts.ckks_vector_from(ctx.tenseal, encode_vector([3], [blob], info.scale))
    assert loaded.decrypt() == vector.decrypt()


def patched(raw: bytes, offset: int, fmt: str, value: object) -> bytes:
    out = bytearray(raw)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "match"),
    [
        (0, "<H", 0xA15F, "bad magic"),
        (2, "<B", 17, "bad magic or header size"),
        (3, "<B", 3, "only 4.x"),
        (5, "<B", 3, "unknown compression"),
        (6, "<H", 1, "reserved"),
        (8, "<Q", 99, "header says 99 bytes"),
        (16 + 32, "<B", 0, "not in NTT form"),
        (16 + 33, "<Q", 3, "coefficients, at most"),
        (16 + 41, "<Q", 4096, "count disagrees"),
        (16 + 41, "<Q", 5000, "power of two"),
        (16 + 49, "<Q", 0, "limbs out of range"),
        (16 + 57, "<d", float("inf"), "invalid scale"),
        (16 + 65, "<Q", 2, "correction factor"),
        (16 + 73 + 5, "<B", 2, "coefficient array"),
        (16 + 73 + 3, "<B", 9, "coefficient array"),
        (16 + 89, "<Q", 5, "count disagrees"),
    ],
)
def test_rejects_corrupted_fields(
    fresh: Any, offset: int, fmt: str, value: object, match: str
) -> None:
    raw = fresh[3]
    with pytest.raises(InvalidMessage, match=match):
        read_ciphertext(patched(raw, offset, fmt, value), max_coeffs=MAX)


def test_rejects_truncation_and_trailing_bytes(fresh: Any) -> None:
    raw = fresh[3]
    for bad in (raw[:-8], raw + b"\0" * 8, raw[:10]):
        with pytest.raises(InvalidMessage):
            read_ciphertext(bad, max_coeffs=MAX)
    # A consistent header over a short payload is still caught.
    short = patched(raw[:-8], 8, "<Q", len(raw) - 8)
    with pytest.raises(InvalidMessage, match="payload of"):
        read_ciphertext(short, max_coeffs=MAX)


def test_bounds_decompressed_size(fresh: Any) -> None:
    _, info, _, raw = fresh
    body = zlib.compress(raw[16:])
    blob = HEADER.pack(0xA15E, 16, *info.version, 1, 0, 16 + len(body)) + body
    with pytest.raises(InvalidMessage, match="too long"):
        read_ciphertext(blob, max_coeffs=MAX // 2)


def test_rejects_corrupt_compressed_payload(ts: Any, fresh: Any) -> None:
    vector = fresh[0]
    blob = bytearray(decode_vector(vector.serialize()).ciphertexts[0])
    blob[40:60] = b"\xff" * 20
    with pytest.raises(InvalidMessage, match="zstd"):
        read_ciphertext(bytes(blob), max_coeffs=MAX)


def test_write_checks_shape(fresh: Any) -> None:
    _, info, coeffs, _ = fresh
    with pytest.raises(ValueError, match="shape"):
        write_ciphertext(info, coeffs[:, :1])
