"""Bad client input: each rejection names the client and leaves the honest sum unchanged."""

from __future__ import annotations

import struct
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from securefl.ckks import (
    Aggregator,
    CKKSParams,
    ClientContext,
    ServerContext,
    decrypt_aggregate,
    decrypt_vector,
    encrypt_update,
    tenseal_format,
    wire,
)
from securefl.ckks.protobuf import decode_vector, encode_vector
from securefl.errors import DecryptionError, InvalidMessage, SecureFLError

from .helpers import tenseal_vector_bytes

D = 5000  # two ciphertexts at N = 8192, with the weight slot


@pytest.fixture(scope="module")
def honest(ctx: ClientContext) -> list[bytes]:
    rng = np.random.default_rng(5)
    return [encrypt_update(ctx, rng.normal(0, 0.1, D), w)[0] for w in (3, 4, 5)]


@pytest.fixture(scope="module")
def reference(server_ctx: ServerContext, honest: list[bytes]) -> bytes:
    agg = Aggregator(server_ctx)
    for k, message in enumerate(honest):
        agg.add(f"h{k}", message)
    return agg.result("raw")


def patch(data: bytes, offset: int, fmt: str, value: object) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def rejected(agg: Aggregator, message: bytes, match: str) -> None:
    with pytest.raises(InvalidMessage, match=r"^client 'mallory': .*" + match):
        agg.add("mallory", message)


def check_unaffected(agg: Aggregator, honest: list[bytes], reference: bytes) -> None:
    """Add the rest of the honest clients and compare with the clean run."""
    for k in range(len(agg.clients), len(honest)):
        agg.add(f"h{k}", honest[k])
    assert agg.clients == ("h0", "h1", "h2")
    assert agg.result("raw") == reference


def bad_messages(
    ts: Any, ctx: ClientContext, contexts: dict[int, ClientContext], honest: list[bytes]
) -> dict[str, tuple[bytes, str]]:
    # honest[0]'s ciphertexts under another contribution nonce: each message below has
    # one defect, not also that of replaying h0's contribution.
    good = wire.encode(replace(wire.decode(honest[0]), contributions=(bytes(16),)), "packed")
    x = np.linspace(-1, 1, D + 1)
    rescaled = ts.ckks_vector(ctx.tenseal, x) * 2.0  # multiplied and rescaled: one level down
    low_scale = ts.context_from(ctx.to_bytes())
    low_scale.global_scale = 2.0**30
    other_moduli = ClientContext.generate(CKKSParams(8192, (60, 40, 40, 60), 40))
    other_primes = ClientContext.generate(CKKSParams(8192, (50, 40, 40), 40))
    tenseal_good = tenseal_vector_bytes(ctx, x)
    corrupt_blob = decode_vector(tenseal_good)
    blob = bytearray(corrupt_blob.ciphertexts[0])
    blob[16:20] = bytes(4)  # the zstd frame's magic number
    q1 = ctx.spec.moduli[1]
    header = wire.read_header(good)
    raw = wire.encode(wire.decode(good), "raw")
    too_big = wire.decode(good)
    coeffs = too_big.coeffs.copy()
    coeffs[1, 1, 0, 123] = q1
    tenseal_too_big = tenseal_format.to_tenseal(
        wire.EncryptedVector(
            too_big.seal_version,
            too_big.parms_id,
            too_big.scale,
            too_big.length,
            too_big.widths,
            coeffs,
        )
    )
    limb1 = header.payload_offset + 8 * header.limb_words(0)
    return {
        "other N": (encrypt_update(contexts[16384], x[:D], 3)[0], "N = 16384"),
        "other level count": (encrypt_update(other_moduli, x[:D], 3)[0], "3 limbs"),
        "other primes": (encrypt_update(other_primes, x[:D], 3)[0], "parms_id"),
        "lower level (TenSEAL)": (rescaled.serialize(), "ciphertext 0: 1 limbs"),
        "other scale (TenSEAL)": (ts.ckks_vector(low_scale, x).serialize(), "scale"),
        "other scale (SFCK)": (patch(good, 24, "<d", 2.0**41), "scale 2199023255552.0"),
        "other parms_id (SFCK)": (patch(good, 32, "<Q", 7), "parms_id"),
        "other length": (
            encrypt_update(ctx, x[: D - 1], 3)[0],
            "vector length 5000, the round's is 5001",
        ),
        "other SEAL version": (patch(good, 7, "<B", 0), "SEAL version"),
        "truncated by one": (good[:-1], "header implies"),
        "truncated to half": (good[: len(good) // 2], "header implies"),
        "truncated header": (good[:20], "shorter than its header"),
        "empty": (b"", "shorter than its header"),
        "trailing byte": (good + b"\0", "header implies"),
        "bad magic": (b"X" + good[1:], "bad magic"),
        "truncated TenSEAL": (tenseal_good[:-3], "truncated scale"),
        "corrupt zstd blob": (
            encode_vector(
                corrupt_blob.sizes,
                [bytes(blob), bytes(corrupt_blob.ciphertexts[1])],
                corrupt_blob.scale,
            ),
            "ciphertext 0: corrupt",
        ),
        "coefficient >= q (raw)": (
            patch(raw, header.payload_offset + 8 * (((1 * 2 + 1) * 2 + 0) * 8192 + 123), "<Q", q1),
            "coefficient 123 of polynomial 0 of ciphertext 1, limb 1, is not below q_1",
        ),
        "coefficient >= q (packed)": (
            patch(good, header.payload_offset, "<Q", 2**64 - 1),
            "coefficient 0 of polynomial 0 of ciphertext 0, limb 0, is not below q_0",
        ),
        "coefficient >= q (packed, limb 1)": (
            patch(good, limb1, "<Q", 2**64 - 1),
            "limb 1, is not below q_1",
        ),
        "coefficient >= q (TenSEAL)": (
            tenseal_too_big,
            "coefficient 123 of polynomial 0 of ciphertext 1, limb 1",
        ),
    }


def test_every_bad_message_is_rejected_and_the_sum_unaffected(
    ts: Any,
    ctx: ClientContext,
    contexts: dict[int, ClientContext],
    server_ctx: ServerContext,
    honest: list[bytes],
    reference: bytes,
) -> None:
    bad = bad_messages(ts, ctx, contexts, honest)
    # Bad clients before the first honest one (empty accumulator) ...
    agg = Aggregator(server_ctx)
    for name, (message, match) in bad.items():
        if name in ("other length", "other SEAL version"):
            continue  # only wrong relative to an earlier client
        try:
            rejected(agg, message, match)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None
    assert agg.clients == ()
    # ... and between honest ones.
    agg.add("h0", honest[0])
    for name, (message, match) in bad.items():
        try:
            rejected(agg, message, match)
        except BaseException as exc:
            raise AssertionError(f"{name}: {exc!r}") from None
    check_unaffected(agg, honest, reference)


def test_duplicate_client_is_rejected(
    server_ctx: ServerContext, honest: list[bytes], reference: bytes
) -> None:
    agg = Aggregator(server_ctx)
    agg.add("h0", honest[0])
    with pytest.raises(InvalidMessage, match="'h0': already contributed"):
        agg.add("h0", honest[1])
    check_unaffected(agg, honest, reference)


def test_foreign_key_is_caught_at_decryption(
    ctx: ClientContext, server_ctx: ServerContext, honest: list[bytes]
) -> None:
    # Same parameters, another secret key: the server cannot tell, the clients can.
    stranger = ClientContext.generate()
    assert stranger.spec == ctx.spec
    agg = Aggregator(server_ctx)
    agg.add("h0", honest[0])
    agg.add("stranger", encrypt_update(stranger, np.zeros(D), 3)[0])
    with pytest.raises(DecryptionError):
        decrypt_aggregate(ctx, agg.result())


def test_client_refuses_aggregate_with_coefficient_above_q(
    ctx: ClientContext, honest: list[bytes]
) -> None:
    vec = wire.decode(honest[0])
    coeffs = vec.coeffs.copy()
    coeffs[0, 0, 1, 9] = ctx.spec.moduli[0]
    bad = wire.EncryptedVector(
        vec.seal_version, vec.parms_id, vec.scale, vec.length, vec.widths, coeffs
    )
    with pytest.raises(InvalidMessage, match="SEAL refuses"):
        decrypt_vector(ctx, wire.encode(bad, "raw"))


def test_client_refuses_aggregate_of_another_context(
    contexts: dict[int, ClientContext], honest: list[bytes]
) -> None:
    with pytest.raises(InvalidMessage, match="N = 8192"):
        decrypt_vector(contexts[16384], honest[0])


def test_no_client_no_result(server_ctx: ServerContext) -> None:
    agg = Aggregator(server_ctx)
    with pytest.raises(SecureFLError, match="no client"):
        agg.result()
    with pytest.raises(ValueError, match="encoding"):
        agg.result("zstd")  # type: ignore[arg-type]
