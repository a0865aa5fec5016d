"""TenSEAL's ``CKKSVector`` format (no keys needed), and the deprecated aliases in wire."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from securefl.ckks import tenseal_format, wire
from securefl.ckks.protobuf import decode_vector, encode_vector
from securefl.ckks.seal import read_ciphertext
from securefl.errors import InvalidMessage

from .helpers import SPEC, N, random_vector

MOVED = ("from_tenseal", "is_tenseal", "read_ciphertext_into", "to_tenseal")


def test_tenseal_format_round_trip(rng: np.random.Generator) -> None:
    vec = random_vector(rng, 1300)
    data = tenseal_format.to_tenseal(vec)
    assert tenseal_format.is_tenseal(data) and not tenseal_format.is_tenseal(
        wire.encode(vec, "raw")
    )
    proto = decode_vector(data)
    assert proto.sizes == (512, 512, 276) and proto.scale == SPEC.scale
    _, coeffs = read_ciphertext(proto.ciphertexts[2], max_coeffs=2 * 2 * N)
    np.testing.assert_array_equal(coeffs, vec.coeffs[:, 2].transpose(1, 0, 2))
    back = tenseal_format.from_tenseal(data, SPEC)
    np.testing.assert_array_equal(back.coeffs, vec.coeffs)
    assert back.length == 1300 and back.seal_version == (4, 1)


def test_from_tenseal_refuses_foreign_chunking_and_mixed_ciphertexts(
    rng: np.random.Generator,
) -> None:
    vec = random_vector(rng, 1300)
    blobs = [bytes(b) for b in decode_vector(tenseal_format.to_tenseal(vec)).ciphertexts]
    for sizes in ([276, 512, 512], [512, 512, 0], [512, 512, 513], [512, 276, 512]):
        with pytest.raises(InvalidMessage, match="chunking"):
            tenseal_format.from_tenseal(encode_vector(sizes, blobs, SPEC.scale), SPEC)
    # Two sizes for three blobs: fields 1 and 2 disagree.
    two_sizes = encode_vector([512, 788, 0], blobs, SPEC.scale).replace(
        b"\x0a\x05\x80\x04\x94\x06\x00", b"\x0a\x04\x80\x04\x94\x06", 1
    )
    with pytest.raises(InvalidMessage, match="2 sizes for 3 ciphertexts"):
        tenseal_format.from_tenseal(two_sizes, SPEC)
    with pytest.raises(InvalidMessage, match="scale differs"):
        tenseal_format.from_tenseal(encode_vector([512, 512, 276], blobs, 2.0**41), SPEC)
    with pytest.raises(InvalidMessage, match="no ciphertext"):
        tenseal_format.from_tenseal(encode_vector([], [], SPEC.scale), SPEC)
    other = wire.EncryptedVector(
        (4, 1), (9, 9, 9, 9), SPEC.scale, 1, SPEC.widths, vec.coeffs[:, :1]
    )
    foreign = bytes(decode_vector(tenseal_format.to_tenseal(other)).ciphertexts[0])
    with pytest.raises(InvalidMessage, match="ciphertext 1: parms_id"):
        tenseal_format.from_tenseal(
            encode_vector([512, 512, 276], [blobs[0], foreign, blobs[2]], SPEC.scale), SPEC
        )


@pytest.mark.parametrize("name", MOVED)
def test_wire_aliases_warn_and_are_the_moved_functions(name: str) -> None:
    with pytest.warns(DeprecationWarning) as record:
        alias = getattr(wire, name)
    assert alias is getattr(tenseal_format, name)
    assert len(record) == 1
    assert str(record[0].message) == (
        f"securefl.ckks.wire.{name} is deprecated: use securefl.ckks.tenseal_format.{name}"
    )
    # Attributed to the caller, so the warning points at the line to change.
    assert record[0].filename == __file__
    assert name not in wire.__all__ and name in tenseal_format.__all__


def test_from_import_of_an_alias_warns_and_still_converts(rng: np.random.Generator) -> None:
    vec = random_vector(rng, 700)
    with pytest.warns(DeprecationWarning, match="securefl.ckks.tenseal_format.to_tenseal"):
        from securefl.ckks.wire import to_tenseal
    data = to_tenseal(vec)
    assert data == tenseal_format.to_tenseal(vec)
    np.testing.assert_array_equal(tenseal_format.from_tenseal(data, SPEC).coeffs, vec.coeffs)


def test_wire_still_refuses_unknown_names() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation warning for a name that never existed
        with pytest.raises(AttributeError, match="has no attribute 'from_seal'"):
            wire.from_seal  # noqa: B018
