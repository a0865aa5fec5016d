"""CKKS FedAvg (issue 4): securefl's native server sum against FLARE's TenSEAL path.

Same session, same ciphertexts: n = 10 clients encrypt d = 1M weighted values (plus the
weight slot) with TenSEAL at FLARE's parameters (N = 8192, moduli [60, 40, 40], scale
2^40). The baseline is NVIDIA FLARE's server path -- ``ckks_vector_from`` under the public
context, sequential ``+``, ``serialize`` -- from the clients' TenSEAL bytes (zstd blobs).
securefl's server reads the *same* ciphertexts converted to SFCK messages (packed or raw)
and must produce an aggregate with bit-identical coefficients. Times are bytes in ->
bytes out; inputs are built outside the timed region.

Run: ``pytest benchmarks/test_bench_ckks.py --benchmark-only`` (needs ``securefl[ckks]``).
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import numpy as np
import pytest

ts = pytest.importorskip("tenseal")

from securefl.ckks import (  # noqa: E402
    Aggregator,
    ClientContext,
    ServerContext,
    decrypt_mean,
    encrypt_update,
    wire,
)
from securefl.ckks.tenseal_format import from_tenseal  # noqa: E402

D = 1_000_000
N_CLIENTS = 10
N_MEMORY = 50


@pytest.fixture(scope="module")
def ctx() -> ClientContext:
    return ClientContext.generate()


@pytest.fixture(scope="module")
def server_ctx(ctx: ClientContext) -> ServerContext:
    return ServerContext.from_bytes(ctx.server_bytes())


@pytest.fixture(scope="module")
def round_inputs(ctx: ClientContext, data_rng: np.random.Generator) -> dict[str, Any]:
    """Ten clients' updates as TenSEAL bytes and as SFCK messages of the same ciphertexts."""
    weights = [int(w) for w in data_rng.integers(10, 1000, N_CLIENTS)]
    updates = [data_rng.normal(0, 0.01, D).astype(np.float32) for _ in range(N_CLIENTS)]
    tenseal_msgs = []
    for u, w in zip(updates, weights, strict=True):
        values = np.append(u.astype(np.float64) * w, float(w))
        tenseal_msgs.append(ts.ckks_vector(ctx.tenseal, values).serialize())
    vectors = [from_tenseal(m, ctx.spec) for m in tenseal_msgs]
    mean = sum(w * u.astype(np.float64) for u, w in zip(updates, weights, strict=True))
    return {
        "weights": weights,
        "mean": mean / sum(weights),
        "tenseal": tenseal_msgs,
        "packed": [wire.encode(v, "packed") for v in vectors],
        "raw": [wire.encode(v, "raw") for v in vectors],
        # Every limb in ceil(log2 q_l) bits, the 60-bit one included (docs/CKKS.md).
        "packed_tight": [
            wire.encode(
                wire.EncryptedVector(
                    v.seal_version, v.parms_id, v.scale, v.length, ctx.spec.limb_bits, v.coeffs
                ),
                "packed",
            )
            for v in vectors
        ],
    }


def flare_server(server_ctx: ServerContext, messages: list[bytes]) -> bytes:
    total = ts.ckks_vector_from(server_ctx.tenseal, messages[0])
    for m in messages[1:]:
        total = total + ts.ckks_vector_from(server_ctx.tenseal, m)
    out: bytes = total.serialize()
    return out


def native_server(server_ctx: ServerContext, messages: list[bytes], encoding: str) -> bytes:
    agg = Aggregator(server_ctx)
    for k, m in enumerate(messages):
        agg.add(f"client-{k}", m)
    return agg.result(encoding)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def expected_coeffs(server_ctx: ServerContext, round_inputs: dict[str, Any]) -> np.ndarray:
    return from_tenseal(flare_server(server_ctx, round_inputs["tenseal"]), server_ctx.spec).coeffs


def test_server_flare_tenseal(benchmark, record, server_ctx, round_inputs, expected_coeffs) -> None:
    msgs = round_inputs["tenseal"]
    out = benchmark.pedantic(flare_server, (server_ctx, msgs), rounds=3)
    np.testing.assert_array_equal(from_tenseal(out, server_ctx.spec).coeffs, expected_coeffs)
    benchmark.extra_info["bytes_in_per_client"] = len(msgs[0])
    benchmark.extra_info["bytes_out"] = len(out)
    record(items=N_CLIENTS, unit="clients", bytes_in=sum(len(m) for m in msgs))


@pytest.mark.parametrize(
    ("inputs", "output"),
    [
        ("packed", "packed"),
        ("raw", "raw"),
        ("packed_tight", "packed"),
        ("packed", "tenseal"),
        ("tenseal", "packed"),
    ],
)
def test_server_native(
    benchmark, record, server_ctx, round_inputs, expected_coeffs, inputs: str, output: str
) -> None:
    msgs = round_inputs[inputs]
    rounds = 3 if inputs == "tenseal" else 7
    out = benchmark.pedantic(native_server, (server_ctx, msgs, output), rounds=rounds)
    got = from_tenseal(out, server_ctx.spec) if output == "tenseal" else wire.decode(out)
    np.testing.assert_array_equal(got.coeffs, expected_coeffs)  # bit-identical to TenSEAL's +
    benchmark.extra_info["bytes_in_per_client"] = len(msgs[0])
    benchmark.extra_info["bytes_out"] = len(out)
    record(items=N_CLIENTS, unit="clients", bytes_in=sum(len(m) for m in msgs))


def test_bytes_per_client(benchmark, round_inputs) -> None:
    """Upload per client against the float32 update and TenSEAL's zstd serialization."""
    sizes = benchmark.pedantic(
        lambda: {k: len(round_inputs[k][0]) for k in ("tenseal", "packed", "raw", "packed_tight")},
        rounds=1,
    )
    float32 = 4 * D
    for k, v in sizes.items():
        benchmark.extra_info[f"{k}_bytes"] = v
        benchmark.extra_info[f"{k}_vs_float32"] = v / float32
        benchmark.extra_info[f"{k}_vs_tenseal_zstd"] = v / sizes["tenseal"]
    assert sizes["packed"] <= sizes["tenseal"]  # target: <= 1.0 x TenSEAL's zstd size
    assert sizes["packed"] < sizes["raw"]


def test_client_encrypt(benchmark, record, ctx, data_rng) -> None:
    update = data_rng.normal(0, 0.01, D).astype(np.float32)
    message, layout = benchmark.pedantic(encrypt_update, (ctx, update, 123), rounds=3)
    assert wire.read_header(message).length == D + 1 and layout.size == D
    record(items=D, unit="values")


def test_client_decrypt(benchmark, record, ctx, server_ctx, data_rng) -> None:
    # decrypt_mean counts the contributions' tags, which only encrypt_update writes: a
    # sum of TenSEAL-made vectors would be refused (it counts none).
    weights = [300, 700]
    updates = [data_rng.normal(0, 0.01, D).astype(np.float32) for _ in weights]
    messages = [encrypt_update(ctx, u, w)[0] for u, w in zip(updates, weights, strict=True)]
    aggregate = native_server(server_ctx, messages, "packed")
    _, layout = encrypt_update(ctx, np.zeros(D, np.float32), 1)
    mean = benchmark.pedantic(decrypt_mean, (ctx, aggregate, layout), rounds=3)
    want = sum(w * u.astype(np.float64) for u, w in zip(updates, weights, strict=True))
    # Within the decryption's noise flooding (docs/CKKS.md), far below the updates' scale.
    assert np.max(np.abs(mean - want / sum(weights))) < 1e-5
    record(items=D, unit="values")


def peak_streaming_bytes(server_ctx: ServerContext, messages: list[bytes], n: int) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        agg = Aggregator(server_ctx)
        for k in range(n):
            agg.add(f"client-{k}", messages[k % len(messages)])
        agg.result("packed")
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_server_memory_n50(benchmark, server_ctx, round_inputs) -> None:
    """Peak memory the server allocates while streaming n clients (inputs not counted).

    The 50 clients reuse the 10 distinct messages: the server cannot tell, and memory
    depends only on the shapes.
    """
    msgs = round_inputs["packed"]
    peak50 = benchmark.pedantic(peak_streaming_bytes, (server_ctx, msgs, N_MEMORY), rounds=1)
    peak10 = peak_streaming_bytes(server_ctx, msgs, N_CLIENTS)
    update_u64 = wire.read_header(msgs[0]).shape
    update_bytes = 8 * int(np.prod(update_u64))
    benchmark.extra_info.update(
        peak_n50=peak50,
        peak_n10=peak10,
        update_u64_bytes=update_bytes,
        peak_n50_over_update=peak50 / update_bytes,
    )
    assert peak50 <= 1.05 * peak10  # independent of n
    # accumulator + one decoded update + the packed output buffer and its bytes copy
    assert peak50 <= 4 * update_bytes
