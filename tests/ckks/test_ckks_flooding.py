"""Noise flooding at decryption (IND-CPA-D, Li and Micciancio 2021): every decryption
adds fresh discrete Gaussian noise from the AES-CTR keystream to the plaintext
polynomial, of the documented size, and the outputs stay within the documented bound."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from securefl.ckks import (
    Aggregator,
    ClientContext,
    ServerContext,
    decrypt_aggregate,
    decrypt_vector,
    encrypt_update,
    flooding,
    wire,
)
from securefl.errors import ConfigError
from securefl.primitives.dp import sample_noise

D = 6000  # two ciphertexts at N = 8192
WEIGHTS = (120, 80, 300, 45)


@pytest.fixture(scope="module")
def updates() -> list[np.ndarray]:
    data = np.random.default_rng(21)  # test data
    return [data.normal(0, 0.05, D) for _ in WEIGHTS]


@pytest.fixture(scope="module")
def aggregate(ctx: ClientContext, server_ctx: ServerContext, updates: list[np.ndarray]) -> bytes:
    agg = Aggregator(server_ctx)
    for k, (u, w) in enumerate(zip(updates, WEIGHTS, strict=True)):
        agg.add(f"c{k}", encrypt_update(ctx, u, w)[0])
    return agg.result()


def test_flooded_outputs_stay_within_the_documented_bound(
    ctx: ClientContext, aggregate: bytes, updates: list[np.ndarray]
) -> None:
    n = len(WEIGHTS)
    bound = flooding.error_bound(ctx.spec, n)
    # The bound at FLARE's parameters: 8 standard deviations of 2^16 sqrt(4) 21.3 sqrt(4096)
    # / 2^40, plus 2^-20 for the encoder.
    assert bound == pytest.approx(8 * 2**16 * 2 * np.sqrt(8192 / 18 + 1 / 6) * 64 / 2**40 + 2**-20)
    assert 1.29e-3 < bound < 1.32e-3
    want = sum(w * u for u, w in zip(updates, WEIGHTS, strict=True))
    for _ in range(3):
        result = decrypt_aggregate(ctx, aggregate)
        error = np.abs(result.weighted_sum - want)
        assert error.max() < bound
        # The flood is not negligible either: it is what the bound is made of.
        assert error.max() > bound / 8
        assert np.max(np.abs(result.mean - want / sum(WEIGHTS))) < bound / sum(WEIGHTS)


def test_two_decryptions_of_one_ciphertext_differ_by_the_documented_magnitude(
    ctx: ClientContext, aggregate: bytes
) -> None:
    n = len(WEIGHTS)
    first, second = decrypt_vector(ctx, aggregate), decrypt_vector(ctx, aggregate)
    exact = flooding._decrypt(ctx, wire.decode(aggregate), None).values
    assert not np.array_equal(first, second)
    sigma = flooding.slot_std(ctx.spec, flooding.flood_std(ctx.spec, n))
    assert sigma == pytest.approx(2**16 * 2 * np.sqrt(8192 / 18 + 1 / 6) * 64 / 2**40)  # 1.6e-4
    # Each decryption's flood, and the difference of two: the documented std within 5%
    # (6001 samples: the sample std is within 2% with overwhelming probability).
    assert np.std(first - exact) == pytest.approx(sigma, rel=0.05)
    assert np.std(second - exact) == pytest.approx(sigma, rel=0.05)
    assert np.std(first - second) == pytest.approx(np.sqrt(2) * sigma, rel=0.05)
    # flood_bits sets it: 2^-4 of the flood at 12 bits.
    low = decrypt_vector(ctx, aggregate, flood_bits=12)
    assert np.std(low - exact) == pytest.approx(sigma / 16, rel=0.05)


def _embedding_real(noise: np.ndarray, n_deg: int, slots: int, scale: float) -> np.ndarray:
    """Reference: Re sigma(f)_j / scale for SEAL's slot j, the root zeta^(3^j mod 2N)."""
    powers = [pow(3, j, 2 * n_deg) for j in range(slots)]
    k = np.arange(n_deg)
    basis = np.cos(np.pi * np.outer(powers, k) / n_deg)
    return basis @ noise.astype(np.float64) / scale


def test_the_flood_is_the_keystream_discrete_gaussian_on_the_plaintext_polynomial(
    ctx: ClientContext, aggregate: bytes, monkeypatch: Any
) -> None:
    """With the key fixed, the decryption minus the exact one is the canonical embedding
    of securefl.primitives.dp.sample_noise(C N, key, discrete Gaussian, sigma_flood): the
    noise is that sampler's (AES-128-CTR keystream), per coefficient, before decoding."""
    key = bytes(range(16))
    drawn: list[int] = []

    def urandom(size: int) -> bytes:
        drawn.append(size)
        return key

    vec = wire.decode(aggregate)
    n_deg, slots, n = ctx.spec.poly_modulus_degree, ctx.spec.slots, len(WEIGHTS)
    sigma = flooding.flood_std(ctx.spec, n)
    monkeypatch.setattr(os, "urandom", urandom)
    flooded = decrypt_aggregate(ctx, aggregate)
    assert drawn == [16]  # one fresh key per decryption, from os.urandom
    exact = flooding._decrypt(ctx, vec, None).values
    noise = sample_noise(2 * n_deg, key, kind="discrete_gaussian", param=sigma).reshape(2, n_deg)
    assert np.std(noise) == pytest.approx(sigma, rel=0.02)
    first = 64  # the reference costs slots x N: check the first 64 slots of each ciphertext
    for chunk in range(2):
        want = _embedding_real(noise[chunk], n_deg, first, ctx.spec.scale)
        got = (flooded.weighted_sum if chunk == 0 else flooded.weighted_sum[slots:])[:first]
        base = exact[chunk * slots : chunk * slots + first]
        np.testing.assert_allclose(got - base, want, rtol=0, atol=1e-9)
    # The same key gives the same bits; the public path draws a new one each time.
    again = decrypt_aggregate(ctx, aggregate)
    assert np.array_equal(again.weighted_sum, flooded.weighted_sum)
    monkeypatch.undo()
    assert not np.array_equal(decrypt_aggregate(ctx, aggregate).weighted_sum, flooded.weighted_sum)


def test_flood_parameters_are_checked(ctx: ClientContext, aggregate: bytes) -> None:
    for bits in (7, 31):
        with pytest.raises(ConfigError, match="flood_bits must be in"):
            decrypt_vector(ctx, aggregate, flood_bits=bits)
    with pytest.raises(TypeError, match="bool"):
        flooding.flood_std(ctx.spec, 1, True)
    # 2^24 times the noise of 4 contributions is 0.04 per slot: the weight and tag slots
    # could no longer be read as integers.
    with pytest.raises(ConfigError, match=r"above 0\.03125"):
        decrypt_aggregate(ctx, aggregate, flood_bits=24)
    # The defaults keep every integer slot exact up to the largest aggregate allowed.
    widest = flooding.slot_std(ctx.spec, flooding.flood_std(ctx.spec, wire.MAX_CONTRIBUTIONS))
    assert widest <= flooding.MAX_SLOT_STD


def test_fresh_noise_estimate_matches_seal(ts: Any, ctx: ClientContext) -> None:
    """sigma_fresh, the base of the flood, is SEAL's: the exact decryption of fresh
    encryptions of zero has that standard deviation in each slot (within 5%)."""
    errors = np.concatenate(
        [np.array(ts.ckks_vector(ctx.tenseal, np.zeros(ctx.slots)).decrypt()) for _ in range(3)]
    )
    want = flooding.slot_std(ctx.spec, flooding.fresh_noise_std(ctx.spec))
    assert want == pytest.approx(8192 / 6 / 2**40)  # 1.24e-9 = 2^-29.6
    assert np.std(errors) == pytest.approx(want, rel=0.05)
