"""The TenSEAL baseline (FLARE's CKKS FedAvg): its round recovers the weighted mean, and its
server's sum is the one securefl's Aggregator computes on the same ciphertexts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from securefl.ckks import Aggregator, ClientContext, ServerContext, tenseal_baseline, wire
from securefl.ckks.tenseal_format import from_tenseal, is_tenseal

D = 5000  # two ciphertexts at N = 8192: TenSEAL's chunking, and its warning, apply
WEIGHTS = (17, 250, 999)


@pytest.fixture(scope="module")
def updates() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.normal(0.0, 0.2, D).astype(np.float32) for _ in WEIGHTS]


@pytest.fixture(scope="module")
def uploads(ctx: ClientContext, updates: list[np.ndarray]) -> list[bytes]:
    return [
        tenseal_baseline.encrypt_update(ctx, u, w) for u, w in zip(updates, WEIGHTS, strict=True)
    ]


def test_round_recovers_the_weighted_mean(
    ctx: ClientContext,
    server_ctx: ServerContext,
    updates: list[np.ndarray],
    uploads: list[bytes],
) -> None:
    mean = tenseal_baseline.decrypt_mean(ctx, tenseal_baseline.server_sum(server_ctx, uploads))
    exact = sum(w * u.astype(np.float64) for u, w in zip(updates, WEIGHTS, strict=True))
    exact /= sum(WEIGHTS)
    assert mean.dtype == np.float64 and mean.shape == (D,)
    # Exact CKKS decryption at scale 2^40: about 1e-11 here, never zero.
    error = float(np.max(np.abs(mean - exact)))
    assert 0 < error < 1e-8


def test_upload_is_tenseal_bytes_of_weighted_update_then_weight(
    ctx: ClientContext, updates: list[np.ndarray], uploads: list[bytes]
) -> None:
    assert is_tenseal(uploads[0])
    vec = from_tenseal(uploads[0], ctx.spec)
    assert vec.length == D + 1 and vec.chunk_sizes == (4096, D + 1 - 4096)
    # One upload "summed" alone decrypts to its update: the last slot held its weight.
    alone = tenseal_baseline.decrypt_mean(ctx, uploads[0])
    np.testing.assert_allclose(alone, updates[0].astype(np.float64), rtol=0, atol=1e-8)


def test_server_sum_is_securefl_aggregators_sum(
    server_ctx: ServerContext, uploads: list[bytes]
) -> None:
    theirs = from_tenseal(tenseal_baseline.server_sum(server_ctx, uploads), server_ctx.spec)
    aggregator = Aggregator(server_ctx)
    for k, upload in enumerate(uploads):
        aggregator.add(f"client-{k}", upload)
    ours = wire.decode(aggregator.result("packed"))
    np.testing.assert_array_equal(ours.coeffs, theirs.coeffs)


def test_server_sum_needs_a_vector(server_ctx: ServerContext) -> None:
    with pytest.raises(ValueError, match="at least one vector"):
        tenseal_baseline.server_sum(server_ctx, [])


def test_encrypt_silences_tenseals_warning_only_while_it_runs(
    ctx: ClientContext, capfd: pytest.CaptureFixture[str]
) -> None:
    tenseal_baseline.encrypt_update(ctx, np.zeros(D, np.float32), 1)
    print("after")
    out, err = capfd.readouterr()
    assert out == "after\n" and err == ""


def test_version_is_tenseals(ts: Any) -> None:
    assert tenseal_baseline.version() == ts.__version__
