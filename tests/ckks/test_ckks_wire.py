"""The SFCK wire format (no keys needed); TenSEAL's format is in test_ckks_tenseal_format."""

from __future__ import annotations

import struct
from dataclasses import replace

import numpy as np
import pytest

from securefl.ckks import tenseal_format, wire
from securefl.ckks.protobuf import decode_vector, encode_vector
from securefl.errors import InvalidMessage

from .helpers import MODULI, SPEC, N, random_vector


@pytest.mark.parametrize("encoding", ["raw", "packed"])
@pytest.mark.parametrize("length", [1, 512, 513, 1300])
def test_round_trip(rng: np.random.Generator, encoding: wire.Encoding, length: int) -> None:
    vec = random_vector(rng, length)
    data = wire.encode(vec, encoding)
    header = wire.read_header(data)
    assert header.encoding == encoding
    assert header.length == length and header.chunks == -(-length // 512)
    header.check(SPEC)
    out = wire.decode(data)
    np.testing.assert_array_equal(out.coeffs, vec.coeffs)
    assert (out.seal_version, out.parms_id, out.scale, out.length) == (
        (4, 1),
        SPEC.parms_id,
        SPEC.scale,
        length,
    )
    assert out.coeffs.flags.c_contiguous and out.coeffs.flags.aligned


def test_sizes(rng: np.random.Generator) -> None:
    vec = random_vector(rng, 1300)  # 3 ciphertexts
    coeffs = 3 * 2 * N
    assert len(wire.encode(vec, "raw")) == 64 + 8 + 2 * 8 * coeffs
    # the 60-bit limb travels as u64 (wire_width), the 40-bit one in 40 bits
    assert SPEC.widths == (64, 40)
    assert len(wire.encode(vec, "packed")) == 64 + 8 + (64 + 40) * coeffs // 8


def test_raw_layout_is_limb_major(rng: np.random.Generator) -> None:
    vec = random_vector(rng, 600)
    data = wire.encode(vec, "raw")
    words = np.frombuffer(data, dtype="<u8", offset=72)
    # coefficient (l, c, p, k) at ((l*C + c)*2 + p)*N + k
    limb, c, p, k = 1, 1, 0, 77
    assert words[((limb * 2 + c) * 2 + p) * N + k] == vec.coeffs[limb, c, p, k]


def test_decode_into_out_and_unaligned_input(rng: np.random.Generator) -> None:
    vec = random_vector(rng, 700)
    data = wire.encode(vec, "raw")
    out = np.zeros_like(vec.coeffs)
    assert wire.decode(data, out=out).coeffs is out
    np.testing.assert_array_equal(out, vec.coeffs)
    shifted = bytearray(len(data) + 1)
    shifted[1:] = data
    got = wire.decode(memoryview(shifted)[1:])
    assert got.coeffs.flags.aligned
    np.testing.assert_array_equal(got.coeffs, vec.coeffs)
    with pytest.raises(ValueError, match="shape"):
        wire.decode(data, out=np.zeros((2, 1, 2, N), np.uint64))


def patch(data: bytes, offset: int, fmt: str, value: object) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "match"),
    [
        (0, "<4s", b"SFCL", "bad magic"),
        (4, "<B", 3, "unsupported SFCK version"),  # 2 is the version with a contribution list
        (5, "<B", 2, "unknown encoding"),
        (6, "<B", 3, "only 4.x"),
        (8, "<I", 1000, "power of two"),
        (12, "<H", 3, "fresh ciphertexts have 2"),
        (14, "<H", 0, "limbs"),
        (16, "<Q", 0, "vector length"),
        (16, "<Q", 2000, "header implies"),
        (24, "<d", float("nan"), "invalid scale"),
        (64, "<B", 65, r"not in \[2, 64\]"),
        (65, "<B", 1, r"not in \[2, 64\]"),
        (65, "<B", 41, "header implies"),
        (66, "<B", 1, "padding is not zero"),
    ],
)
def test_header_rejects(
    rng: np.random.Generator, offset: int, fmt: str, value: object, match: str
) -> None:
    data = wire.encode(random_vector(rng, 600), "packed")
    with pytest.raises(InvalidMessage, match=match):
        wire.read_header(patch(data, offset, fmt, value))


def test_rejects_truncated_and_padded(rng: np.random.Generator) -> None:
    data = wire.encode(random_vector(rng, 600), "packed")
    for bad in (data[:-1], data + b"\0", data[:40], b""):
        with pytest.raises(InvalidMessage):
            wire.read_header(bad)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (wire.Spec(2048, MODULI, (1, 2, 3, 4), 2.0**40), "N = 1024"),
        (wire.Spec(N, (*MODULI, 1099511480321), (1, 2, 3, 4), 2.0**40), "2 limbs"),
        (wire.Spec(N, MODULI, (1, 2, 3, 5), 2.0**40), "parms_id"),
        (
            wire.Spec(N, (MODULI[0], 2**49 + 1), (1, 2, 3, 4), 2.0**40),
            "limb 1 sent in 40 bits, q_1 has 50",
        ),
        (wire.Spec(N, MODULI, (1, 2, 3, 4), 2.0**30), "scale"),
    ],
)
def test_check_against_context(rng: np.random.Generator, spec: wire.Spec, match: str) -> None:
    header = wire.read_header(wire.encode(random_vector(rng, 600), "packed"))
    with pytest.raises(InvalidMessage, match=match):
        header.check(spec)


def test_encode_refuses_inconsistent(rng: np.random.Generator) -> None:
    vec = random_vector(rng, 600)
    with pytest.raises(ValueError, match="encoding"):
        wire.encode(vec, "zstd")  # type: ignore[arg-type]
    short = wire.EncryptedVector((4, 1), SPEC.parms_id, SPEC.scale, 1600, SPEC.widths, vec.coeffs)
    with pytest.raises(ValueError, match="cannot hold"):
        wire.encode(short, "raw")


def test_any_width_from_b_l_to_64_is_accepted(rng: np.random.Generator) -> None:
    vec = random_vector(rng, 700)
    tight = wire.EncryptedVector((4, 1), SPEC.parms_id, SPEC.scale, 700, (60, 40), vec.coeffs)
    data = wire.encode(tight, "packed")
    header = wire.read_header(data)
    assert header.widths == (60, 40)
    assert len(data) == 72 + (60 + 40) * 2 * 2 * N // 8
    header.check(SPEC)
    np.testing.assert_array_equal(wire.decode(data).coeffs, vec.coeffs)
    # A width below q_l's bit length cannot carry this context's coefficients.
    small = vec.coeffs.copy()
    small[0] &= np.uint64(2**59 - 1)
    narrow = wire.EncryptedVector((4, 1), SPEC.parms_id, SPEC.scale, 700, (59, 40), small)
    with pytest.raises(InvalidMessage, match="limb 0 sent in 59 bits, q_0 has 60"):
        wire.read_header(wire.encode(narrow, "packed")).check(SPEC)
    # Packing refuses a coefficient that does not fit its width.
    with pytest.raises(ValueError, match="does not fit in 59 bits"):
        wire.encode(
            wire.EncryptedVector((4, 1), SPEC.parms_id, SPEC.scale, 700, (59, 40), vec.coeffs),
            "packed",
        )


def test_raw_widths_must_be_64(rng: np.random.Generator) -> None:
    data = wire.encode(random_vector(rng, 600), "raw")
    assert wire.read_header(data).widths == (64, 64)
    with pytest.raises(InvalidMessage, match="must be 64"):
        wire.read_header(patch(data, 65, "<B", 40))


def test_wire_width_policy() -> None:
    assert [wire.wire_width(b) for b in (20, 40, 56, 57, 60, 62)] == [20, 40, 56, 64, 64, 64]


NONCES = (bytes([1]) * 16, bytes([2]) * 16, bytes([7]) * 16)


@pytest.mark.parametrize("encoding", ["raw", "packed"])
def test_contribution_list_round_trips_as_version_2(
    rng: np.random.Generator, encoding: wire.Encoding
) -> None:
    vec = replace(random_vector(rng, 600), contributions=NONCES)
    data = wire.encode(vec, encoding)
    header = wire.read_header(data)
    assert data[4] == 2 and header.version == 2 and header.contributions == NONCES
    # count, reserved word, then the nonces; the payload stays 8-byte aligned after them
    assert struct.unpack_from("<II", data, 72) == (3, 0) and data[80:128] == b"".join(NONCES)
    assert header.payload_offset == 128
    assert len(data) == len(wire.encode(random_vector(rng, 600), encoding)) + 8 + 48
    out = wire.decode(data)
    assert out.contributions == NONCES
    np.testing.assert_array_equal(out.coeffs, vec.coeffs)
    # TenSEAL's format carries the list in securefl's field 15.
    back = tenseal_format.from_tenseal(tenseal_format.to_tenseal(vec), SPEC)
    assert back.contributions == NONCES
    assert decode_vector(tenseal_format.to_tenseal(vec)).contributions == NONCES


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "match"),
    [
        (72, "<I", 0, r"contribution count 0 not in \[1, 65536\]"),
        (72, "<I", 2**16 + 1, "contribution count 65537"),  # refused before the list is read
        (76, "<I", 1, "reserved bytes not zero"),
        (72, "<I", 2, "header implies"),  # the third nonce left over
        (96, "<16s", NONCES[0], "contribution 1: nonces are not strictly increasing"),
        (112, "<16s", NONCES[1], "contribution 2: nonces are not strictly increasing"),
    ],
)
def test_contribution_list_rejects(
    rng: np.random.Generator, offset: int, fmt: str, value: object, match: str
) -> None:
    data = wire.encode(replace(random_vector(rng, 600), contributions=NONCES), "packed")
    with pytest.raises(InvalidMessage, match=match):
        wire.read_header(patch(data, offset, fmt, value))
    with pytest.raises(InvalidMessage, match="truncated in the contribution list"):
        wire.read_header(data[:100])


def test_encode_and_tenseal_refuse_a_bad_contribution_list(rng: np.random.Generator) -> None:
    vec = random_vector(rng, 600)
    for bad, match in [
        ((NONCES[1], NONCES[0]), "strictly increasing"),
        ((NONCES[0], NONCES[0]), "strictly increasing"),
        ((b"short",), "5 bytes, a nonce has 16"),
    ]:
        with pytest.raises(ValueError, match=match):
            wire.encode(replace(vec, contributions=bad), "packed")
        proto = decode_vector(tenseal_format.to_tenseal(vec))
        data = encode_vector(
            proto.sizes, [bytes(b) for b in proto.ciphertexts], proto.scale, list(bad)
        )
        with pytest.raises(InvalidMessage, match=match):
            tenseal_format.from_tenseal(data, SPEC)
