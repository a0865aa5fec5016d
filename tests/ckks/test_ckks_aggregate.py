"""CKKS FedAvg end to end: bit-identity with TenSEAL's `+`, weighted means, layouts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from securefl.ckks import (
    Aggregator,
    ClientContext,
    ServerContext,
    decrypt_aggregate,
    decrypt_mean,
    decrypt_vector,
    encrypt_update,
    encrypt_vector,
    flooding,
    tenseal_format,
    wire,
)
from securefl.ckks.protobuf import decode_vector
from securefl.ckks.seal import read_ciphertext

from .helpers import tenseal_vector_bytes


def tenseal_sum(ts: Any, server: ServerContext, inputs: list[bytes]) -> bytes:
    """FLARE's server path: deserialize under the public context, sequential +, serialize."""
    total = ts.ckks_vector_from(server.tenseal, inputs[0])
    for data in inputs[1:]:
        total = total + ts.ckks_vector_from(server.tenseal, data)
    out: bytes = total.serialize()
    return out


@pytest.mark.parametrize(("degree", "n"), [(8192, 1), (8192, 2), (8192, 5), (16384, 2), (16384, 3)])
def test_bit_identical_to_tenseal_plus(
    ts: Any, contexts: dict[int, ClientContext], rng: np.random.Generator, degree: int, n: int
) -> None:
    ctx = contexts[degree]
    server = ServerContext.from_bytes(ctx.server_bytes())
    length = 2 * ctx.slots + ctx.slots // 3  # three ciphertexts, the last one partial
    inputs = [tenseal_vector_bytes(ctx, rng.normal(0, 1, length)) for _ in range(n)]
    expected = tenseal_sum(ts, server, inputs)
    expected_coeffs = tenseal_format.from_tenseal(expected, ctx.spec).coeffs
    expected_plain = np.array(ts.ckks_vector_from(ctx.tenseal, expected).decrypt())

    sfck = {
        enc: [wire.encode(tenseal_format.from_tenseal(m, ctx.spec), enc) for m in inputs]
        for enc in ("raw", "packed")
    }
    routes = {"tenseal": inputs, **sfck}
    for route, messages in routes.items():
        agg = Aggregator(server)
        for k, message in enumerate(messages):
            agg.add(f"client-{k}", message)
        out = agg.result("tenseal")
        # The ciphertext itself: same coefficients, sizes, scale and SEAL version.
        proto, ref = decode_vector(out), decode_vector(expected)
        assert proto.sizes == ref.sizes and proto.scale == ref.scale
        for mine, theirs in zip(proto.ciphertexts, ref.ciphertexts, strict=True):
            info, coeffs = read_ciphertext(mine, max_coeffs=1 << 20)
            ref_info, ref_coeffs = read_ciphertext(theirs, max_coeffs=1 << 20)
            assert info == ref_info, route
            np.testing.assert_array_equal(coeffs, ref_coeffs)
        for enc in ("packed", "raw"):
            np.testing.assert_array_equal(wire.decode(agg.result(enc)).coeffs, expected_coeffs)
        # What TenSEAL decrypts: bit-identical floats.
        plain = np.array(ts.ckks_vector_from(ctx.tenseal, out).decrypt())
        assert np.array_equal(plain, expected_plain), route
        # securefl's own decryption path, flooding off (tests only), is TenSEAL's bit for bit;
        # the public one floods within the documented bound.
        packed = wire.decode(agg.result("packed"))
        assert np.array_equal(flooding._decrypt(ctx, packed, None).values, expected_plain), route
        flooded = decrypt_vector(ctx, agg.result("packed"))
        assert np.max(np.abs(flooded - expected_plain)) < flooding.error_bound(ctx.spec, 1), route


def test_encrypt_vector_matches_tenseal_chunking(
    ts: Any, ctx: ClientContext, rng: np.random.Generator
) -> None:
    values = rng.normal(0, 1, ctx.slots + 100)
    message = encrypt_vector(ctx, values, encoding="raw")
    header = wire.read_header(message)
    assert header.chunks == 2 and header.length == values.size
    header.check(ctx.spec)
    # TenSEAL itself decrypts the converted ciphertexts to the encrypted values.
    plain = np.array(
        ts.ckks_vector_from(ctx.tenseal, tenseal_format.to_tenseal(wire.decode(message))).decrypt()
    )
    assert np.max(np.abs(plain - values)) < 1e-6


def test_weighted_mean_within_1e5_of_float64(
    ctx: ClientContext, server_ctx: ServerContext, rng: np.random.Generator
) -> None:
    d = 6000
    weights = [1, 17, 250, 1000, 3]
    updates = [rng.normal(0, 0.05, d) + rng.uniform(-1, 1, d) * (k % 2) for k in range(5)]
    agg = Aggregator(server_ctx)
    for k, (u, w) in enumerate(zip(updates, weights, strict=True)):
        message, layout = encrypt_update(ctx, u, w)
        agg.add(f"c{k}", message)
    expected = sum(w * u for u, w in zip(updates, weights, strict=True)) / sum(weights)
    result = decrypt_aggregate(ctx, agg.result())
    assert result.total_weight == sum(weights)
    assert np.max(np.abs(result.mean - expected)) < 1e-5
    mean = decrypt_mean(ctx, agg.result("tenseal"), layout)
    assert mean.dtype == np.float64 and mean.shape == (d,)
    assert np.max(np.abs(mean - expected)) < 1e-5
    # The weights matter: the unweighted mean is far from the result.
    assert np.max(np.abs(mean - np.mean(updates, axis=0))) > 1e-2


def test_dict_of_arrays_round_trip(
    ctx: ClientContext, server_ctx: ServerContext, rng: np.random.Generator
) -> None:
    updates = [
        {
            "w": rng.normal(0, 0.1, (30, 20)).astype(np.float32),
            "b": rng.normal(0, 0.1, 20),
            "steps": np.array([10 * (k + 1)], dtype=np.int32),
        }
        for k in range(3)
    ]
    weights = [2, 3, 5]
    agg = Aggregator(server_ctx)
    for k, (u, w) in enumerate(zip(updates, weights, strict=True)):
        message, layout = encrypt_update(ctx, u, w, encoding="raw")
        agg.add(f"c{k}", message)
    mean = decrypt_mean(ctx, agg.result(), layout)
    assert list(mean) == ["w", "b", "steps"]
    assert mean["w"].dtype == np.float32 and mean["w"].shape == (30, 20)
    ref_w = sum(w * u["w"].astype(np.float64) for u, w in zip(updates, weights, strict=True)) / 10
    # Total weight 10: the flood's bound on the sum (1.1e-3 for 3 contributions) over 10.
    assert np.max(np.abs(mean["w"] - ref_w)) < flooding.error_bound(ctx.spec, 3) / 10
    assert mean["steps"].dtype == np.int32 and mean["steps"][0] == 23  # (20 + 60 + 150) / 10


def test_torch_state_dict_round_trip(ctx: ClientContext, server_ctx: ServerContext) -> None:
    torch = pytest.importorskip("torch")
    states = []
    for k in range(3):
        torch.manual_seed(k)
        model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.BatchNorm1d(8))
        model[1].num_batches_tracked += 4 * (k + 1)
        states.append({name: t.clone() for name, t in model.state_dict().items()})
    weights = [5, 1, 3]
    agg = Aggregator(server_ctx)
    for k, (state, w) in enumerate(zip(states, weights, strict=True)):
        message, layout = encrypt_update(ctx, state, w)
        agg.add(f"c{k}", message)
    mean = decrypt_mean(ctx, agg.result(), layout)
    assert list(mean) == list(states[0])
    for name, tensor in mean.items():
        ref = sum(w * s[name].double() for s, w in zip(states, weights, strict=True)) / 9
        assert isinstance(tensor, torch.Tensor) and tensor.dtype == states[0][name].dtype
        assert tensor.shape == states[0][name].shape
        if tensor.dtype.is_floating_point:
            # Total weight 9: the flood's documented bound on the sum, over 9.
            bound = flooding.error_bound(ctx.spec, 3) / 9
            assert float((tensor.double() - ref).abs().max()) < bound
        else:
            assert int(tensor) == 7  # (5 * 4 + 1 * 8 + 3 * 12) / 9 = 7.1
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.BatchNorm1d(8))
    model.load_state_dict(mean)


@pytest.mark.parametrize(
    ("weight", "error"), [(True, TypeError), (2.0, TypeError), (0, ValueError), (2**32, ValueError)]
)
def test_weight_validation(ctx: ClientContext, weight: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        encrypt_update(ctx, np.zeros(4), weight)


def test_update_validation(ctx: ClientContext) -> None:
    with pytest.raises(ValueError, match="finite"):
        encrypt_update(ctx, np.array([1.0, np.nan]), 1)
    with pytest.raises(ValueError, match="non-empty"):
        encrypt_vector(ctx, np.zeros(0))
    with pytest.raises(ValueError, match="encoding"):
        encrypt_vector(ctx, np.zeros(3), encoding="zstd")  # type: ignore[arg-type]


def test_decrypt_mean_checks_the_layout(ctx: ClientContext, server_ctx: ServerContext) -> None:
    agg = Aggregator(server_ctx)
    for client in ("a", "b"):  # two: an aggregate of one is refused before the layout check
        message, _ = encrypt_update(ctx, np.ones(10), 2)
        agg.add(client, message)
    _, other_layout = encrypt_update(ctx, np.ones(11), 2)
    with pytest.raises(ValueError, match="holds 10 values, the layout 11"):
        decrypt_mean(ctx, agg.result(), other_layout)
