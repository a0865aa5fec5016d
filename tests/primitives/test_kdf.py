"""securefl.primitives.kdf: HKDF-SHA256 as RFC 5869 defines it, with ids in the info."""

from __future__ import annotations

import struct

from securefl.primitives import kdf


def test_rfc5869_test_case_1() -> None:
    # RFC 5869, Appendix A.1 (SHA-256, basic test case).
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    okm = bytes.fromhex(
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )
    assert kdf.derive(ikm, session=salt, purpose=info, length=42) == okm


def test_rfc5869_test_case_3_without_salt_or_info() -> None:
    # RFC 5869, Appendix A.3: salt and info empty (a missing salt is HashLen zeros).
    ikm = bytes.fromhex("0b" * 22)
    okm = bytes.fromhex(
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )
    assert kdf.derive(ikm, session=None, purpose=b"", length=42) == okm
    assert kdf.derive(ikm, session=b"", purpose=b"", length=42) == okm


def test_ids_are_appended_to_the_purpose_as_little_endian_u32() -> None:
    secret, session = b"s" * 32, b"session"
    with_ids = kdf.derive(secret, session=session, purpose=b"p", ids=(1, 258), length=16)
    spelled = kdf.derive(
        secret, session=session, purpose=b"p" + struct.pack("<II", 1, 258), length=16
    )
    assert with_ids == spelled
    assert with_ids != kdf.derive(secret, session=session, purpose=b"p", ids=(258, 1), length=16)
