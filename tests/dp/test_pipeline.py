"""The client encoding and server decoding of securefl.dp, alone and through SecAgg."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import securefl
from securefl.dp import DPConfig, calibrate, decode_aggregate, encode_update
from securefl.errors import ConfigError
from securefl.primitives import dp as native
from securefl.secagg.messages import Stage
from securefl.testing import reference
from securefl.testing.drbg import Drbg

SEED = bytes(range(32))


def ring_sum(vectors: list[np.ndarray], bits: int) -> np.ndarray:
    total = np.zeros(vectors[0].size, dtype=np.uint64)
    for v in vectors:
        total = (total + v.astype(np.uint64)) & np.uint64((1 << bits) - 1)
    return total


def updates(n: int, d: int, scale: float = 0.1) -> list[np.ndarray]:
    rng = np.random.default_rng(n * 1000 + d)
    return [rng.normal(scale=scale, size=d).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize(("d", "bits"), [(1, 16), (100, 20), (5000, 32), (3000, 48)])
def test_without_noise_the_sum_is_the_plain_sum_within_the_rounding_bound(
    d: int, bits: int
) -> None:
    n = 6
    xs = updates(n, d, scale=0.02)  # norms below the clip: no clipping here
    assert max(np.linalg.norm(x) for x in xs) < 5.0
    plan = calibrate(DPConfig(epsilon=math.inf, delta=1e-6, clip=5.0, num_clients=n, bits=bits), d)
    assert plan.spec.noise == "none"
    weights = [0.25, 1.0, 0.5, 0.75, 1.0, 0.125]
    enc = [
        encode_update(x, plan, round_seed=SEED, secret=bytes([i]) * 32, client_id=i, weight=w)
        for i, (x, w) in enumerate(zip(xs, weights, strict=True))
    ]
    out = decode_aggregate(
        ring_sum([e.ring for e in enc], bits),
        plan,
        round_seed=SEED,
        survivors=n,
        total_weight=sum(weights),
    )
    exact = sum(w * x.astype(np.float64) for w, x in zip(weights, xs, strict=True))
    # Each client's rounding error has norm <= error_bound integer steps; rotated back
    # (orthonormal) and scaled, the sum is off by at most gamma * n * error_bound.
    bound = plan.gamma * n * plan.error_bound
    assert np.linalg.norm(out.noisy_sum - exact) <= bound
    assert np.linalg.norm(out.mean - exact / sum(weights)) <= bound / sum(weights)
    assert bound < 1e-2 * np.linalg.norm(exact) or d == 1 or bits <= 16


def test_clipping_to_the_l2_norm() -> None:
    d, n = 256, 3
    big = [np.full(d, 1.0), np.full(d, -0.5), np.zeros(d)]  # norms 16, 8, 0
    plan = calibrate(DPConfig(epsilon=math.inf, delta=1e-6, clip=2.0, num_clients=n, bits=32), d)
    enc = [
        encode_update(x, plan, round_seed=SEED, secret=bytes([i]) * 32) for i, x in enumerate(big)
    ]
    out = decode_aggregate(ring_sum([e.ring for e in enc], 32), plan, round_seed=SEED, survivors=n)
    expected = np.full(d, 2.0 / 16) - np.full(d, 2.0 / 16)  # each clipped to norm 2
    assert np.abs(out.noisy_sum - expected).max() < 1e-4


def test_native_encoding_without_noise_equals_reference() -> None:
    x = np.random.default_rng(5).normal(size=3000)
    spec = native.EncodeSpec(3.0, 0.004, 24, 1e12, 1e12, "none", 0.0)
    ring, tries = native.encode(
        x, spec, rotation_key=b"R" * 16, rounding_key=b"U" * 16, noise_key=b"N" * 16, weight=0.5
    )
    expected = reference.dp_encode_without_noise(
        x,
        clip=3.0,
        weight=0.5,
        gamma=0.004,
        bits=24,
        rotation_key=b"R" * 16,
        rounding_key=b"U" * 16,
    )
    assert tries == 1
    assert np.array_equal(ring, expected)


@pytest.mark.parametrize("mechanism", ["discrete_gaussian", "skellam"])
def test_noise_of_the_sum_has_the_calibrated_variance(mechanism: str) -> None:
    d, n = 1 << 16, 5
    config = DPConfig(
        epsilon=2.0,
        delta=1e-5,
        clip=1.0,
        num_clients=n,
        bits=24,
        mechanism=mechanism,  # type: ignore[arg-type]
    )
    plan = calibrate(config, d)
    zero = np.zeros(d, dtype=np.float32)  # rounds to 0 exactly: only noise remains
    enc = [
        encode_update(zero, plan, round_seed=SEED, secret=bytes([i + 1]) * 32, client_id=i)
        for i in range(n)
    ]
    out = decode_aggregate(ring_sum([e.ring for e in enc], 24), plan, round_seed=SEED, survivors=n)
    expected = n * plan.client_noise_std**2
    if mechanism == "discrete_gaussian":  # N_Z(0, s^2) has variance just below s^2
        assert plan.noise_param > 5  # ... indistinguishably so here
    # The sample variance of d values: relative standard error sqrt(2 / d) < 0.6%.
    assert float(np.var(out.noisy_sum)) == pytest.approx(expected, rel=5 * math.sqrt(2 / d))
    assert abs(float(np.mean(out.noisy_sum))) <= 5 * math.sqrt(expected / d)
    assert out.noisy_sum.std() == pytest.approx(plan.aggregate_noise_std, rel=0.02)


def test_encoding_is_deterministic_in_the_secret_and_binds_its_inputs() -> None:
    d = 500
    x = updates(1, d)[0]
    plan = calibrate(DPConfig(epsilon=4.0, delta=1e-5, clip=1.0, num_clients=4, bits=24), d)
    a = encode_update(x, plan, round_seed=SEED, secret=b"s" * 32, session=b"S", client_id=1)
    b = encode_update(x, plan, round_seed=SEED, secret=b"s" * 32, session=b"S", client_id=1)
    assert np.array_equal(a.ring, b.ring)
    for other in (
        encode_update(x, plan, round_seed=SEED, secret=b"t" * 32, session=b"S", client_id=1),
        encode_update(x, plan, round_seed=SEED, secret=b"s" * 32, session=b"S", client_id=2),
        encode_update(x, plan, round_seed=SEED, secret=b"s" * 32, session=b"T", client_id=1),
        encode_update(x, plan, round_seed=b"x" * 32, secret=b"s" * 32, session=b"S", client_id=1),
    ):
        assert np.mean(other.ring == a.ring) < 0.2
    assert "ring" not in repr(a) or str(a.ring[0]) not in repr(a)
    fresh = encode_update(x, plan, round_seed=SEED)  # OS randomness by default
    assert not np.array_equal(fresh.ring, a.ring)


def test_conditional_rounding_gives_up_with_a_reason() -> None:
    spec = native.EncodeSpec(1.0, 1e-3, 32, 1e12, 1e-6, "none", 0.0, max_tries=3)
    with pytest.raises(ValueError, match="conditional rounding failed 3 times"):
        native.encode(
            np.full(64, 0.0123),
            spec,
            rotation_key=bytes(16),
            rounding_key=bytes(16),
            noise_key=bytes(16),
        )


def test_bad_client_and_server_inputs() -> None:
    plan = calibrate(
        DPConfig(epsilon=4.0, delta=1e-5, clip=1.0, num_clients=4, bits=24, dropout_rate=0.25), 10
    )
    with pytest.raises(ValueError, match="plan is for 10"):
        encode_update(np.zeros(11), plan, round_seed=SEED)
    bad = np.zeros(10)
    bad[7] = np.nan
    with pytest.raises(ValueError, match="index 7"):
        encode_update(bad, plan, round_seed=SEED)
    with pytest.raises(ValueError, match="round_seed"):
        encode_update(np.zeros(10), plan, round_seed=b"short")
    # The id is a u32 in the key derivation: out of range used to raise struct.error.
    for client_id in (-1, 2**32 - 1, 2**40):
        with pytest.raises(ValueError, match=r"client_id must be in \[0, 4294967294\]"):
            encode_update(np.zeros(10), plan, round_seed=SEED, client_id=client_id)
    with pytest.raises(TypeError, match=r"client_id must be an integer, got 1\.5"):
        encode_update(np.zeros(10), plan, round_seed=SEED, client_id=1.5)  # type: ignore[arg-type]
    top = encode_update(np.zeros(10), plan, round_seed=SEED, secret=b"s" * 32, client_id=2**32 - 2)
    assert top.ring.size == 16
    with pytest.raises(ValueError, match="weight"):
        encode_update(np.zeros(10), plan, round_seed=SEED, weight=1.5)
    with pytest.raises(TypeError):
        native.encode(
            np.zeros(10, dtype=np.int32),
            plan.spec,
            rotation_key=bytes(16),  # type: ignore[arg-type]
            rounding_key=bytes(16),
            noise_key=bytes(16),
        )
    total = np.zeros(16, dtype=np.uint32)
    with pytest.raises(ConfigError, match=r"calibrated for 3\.\.4"):
        decode_aggregate(total, plan, round_seed=SEED, survivors=2)
    with pytest.raises(ValueError, match="expected 16"):
        decode_aggregate(np.zeros(8, dtype=np.uint32), plan, round_seed=SEED, survivors=4)


def test_decode_refuses_sums_outside_the_ring_before_casting() -> None:
    plan = calibrate(
        DPConfig(epsilon=4.0, delta=1e-5, clip=1.0, num_clients=4, bits=24, dropout_rate=0.25), 10
    )
    # Out-of-ring sums are refused before the cast to the ring's dtype, which would
    # wrap them (2^40 as uint32 is 0: it used to decode as a sum of zeros).
    for bad in (
        np.full(16, 2**24, dtype=np.uint32),
        np.full(16, 2**40, dtype=np.uint64),
        np.full(16, -1, dtype=np.int64),
        np.full(16, 2.0**40),
        np.full(16, -1.0),
    ):
        with pytest.raises(ValueError, match=r"outside Z_2\^24"):
            decode_aggregate(bad, plan, round_seed=SEED, survivors=4)
    for bad in (np.full(16, 0.5), np.full(16, np.inf), np.full(16, np.nan)):
        with pytest.raises(ValueError, match="integers"):
            decode_aggregate(bad, plan, round_seed=SEED, survivors=4)
    with pytest.raises(ValueError, match="dtype complex128"):
        decode_aggregate(np.zeros(16, dtype=complex), plan, round_seed=SEED, survivors=4)
    # The largest ring element is accepted, as uint64 and as a float.
    top = np.full(16, 2**24 - 1, dtype=np.uint64)
    decoded = decode_aggregate(top, plan, round_seed=SEED, survivors=4)
    as_float = decode_aggregate(top.astype(np.float64), plan, round_seed=SEED, survivors=4)
    np.testing.assert_array_equal(decoded.noisy_sum, as_float.noisy_sum)


def test_aggregate_api_with_dp_through_secagg_and_dropouts() -> None:
    n, d = 6, 40
    xs = updates(n, d)
    weights = [5, 1, 3, 2, 4, 6]
    config = DPConfig(
        epsilon=math.inf, delta=1e-5, clip=4.0, num_clients=n, bits=32, dropout_rate=0.34
    )
    for protocol in ("secagg", "secagg+"):
        result = securefl.aggregate(
            xs,
            weights,
            protocol=protocol,
            dp=config,  # type: ignore[arg-type]
            dropouts={2: Stage.MASKED_INPUT_COLLECTION},
            rng=Drbg(b"dp-api"),
        )
        alive = [i for i in range(n) if i != 2]
        exact = sum(weights[i] * xs[i].astype(np.float64) for i in alive) / sum(
            weights[i] for i in alive
        )
        assert result.contributors == tuple(alive)
        assert result.dp is not None and math.isinf(result.dp.epsilon)
        assert np.abs(result.aggregate - exact).max() < 1e-6
        assert "client:dp-encode" in result.phase_seconds


def test_aggregate_api_with_noise_reports_epsilon_and_adds_noise() -> None:
    n, d = 8, 2048
    xs = updates(n, d, scale=0.01)
    config = DPConfig(epsilon=1.0, delta=1e-5, clip=1.0, num_clients=n, bits=24)
    result = securefl.aggregate(xs, protocol="secagg+", dp=config, rng=Drbg(b"dp-noise"))
    assert result.dp is not None
    assert result.dp.epsilon == pytest.approx(1.0, rel=0.02)
    exact = sum(x.astype(np.float64) for x in xs) / n
    error = np.asarray(result.aggregate) - exact
    # Noise of the mean: the aggregate noise std / n per coordinate.
    assert error.std() == pytest.approx(result.dp.aggregate_noise_std / n, rel=0.1)


def test_aggregate_api_refuses_dp_where_it_cannot_apply() -> None:
    config = DPConfig(epsilon=1.0, delta=1e-5, clip=1.0, num_clients=2)
    xs = [np.zeros(4), np.zeros(4)]
    with pytest.raises(ConfigError, match="needs protocol"):
        securefl.aggregate(xs, protocol="plain", dp=config)
    with pytest.raises(ConfigError, match="sized for 2"):
        securefl.aggregate([np.zeros(4)] * 3, protocol="secagg", dp=config)
    plan = calibrate(config, 5)
    with pytest.raises(ConfigError, match="d=5"):
        securefl.aggregate(xs, protocol="secagg", dp=plan)


def test_encoding_into_a_reused_buffer() -> None:
    plan = calibrate(DPConfig(epsilon=4.0, delta=1e-5, clip=1.0, num_clients=4, bits=24), 100)
    x = updates(1, 100)[0]
    buffer = np.empty(plan.padded_dimension, dtype=plan.spec.dtype)
    a = encode_update(x, plan, round_seed=SEED, secret=b"s" * 32, out=buffer)
    assert a.ring is buffer
    b = encode_update(x, plan, round_seed=SEED, secret=b"s" * 32)
    assert np.array_equal(a.ring, b.ring)
    with pytest.raises(TypeError, match="dtype"):
        encode_update(x, plan, round_seed=SEED, out=np.empty(128, dtype=np.uint64))
    with pytest.raises(ValueError, match="padded length"):
        encode_update(x, plan, round_seed=SEED, out=np.empty(64, dtype=np.uint32))


@pytest.mark.parametrize("noise", ["none", "discrete_gaussian", "skellam"])
def test_encoding_does_not_depend_on_the_thread_count(noise: str) -> None:
    x = np.random.default_rng(11).normal(size=70_000)
    spec = native.EncodeSpec(50.0, 1e-3, 32, 1e12, 1e12, noise, 40.0)  # type: ignore[arg-type]
    keys = {"rotation_key": b"R" * 16, "rounding_key": b"U" * 16, "noise_key": b"N" * 16}
    one, _ = native.encode(x, spec, threads=1, **keys)
    two, _ = native.encode(x, spec, threads=2, **keys)
    assert np.array_equal(one, two)


@settings(max_examples=40, deadline=None)
@given(
    d=st.integers(1, 5000),
    clip=st.floats(0.01, 100.0),
    weight=st.floats(0.01, 1.0),
    bits=st.integers(12, 48),
    seed=st.integers(0, 2**32 - 1),
)
def test_native_encoding_equals_reference_property(
    d: int, clip: float, weight: float, bits: int, seed: int
) -> None:
    x = np.random.default_rng(seed).normal(size=d) * np.random.default_rng(seed + 1).uniform(0, 3)
    gamma = clip / 2.0 ** (bits - 6)  # coordinates stay well inside the ring
    spec = native.EncodeSpec(clip, gamma, bits, 1e300, 1e300, "none", 0.0)
    ring, _ = native.encode(
        x,
        spec,
        rotation_key=b"R" * 16,
        rounding_key=b"U" * 16,
        noise_key=b"N" * 16,
        weight=weight,
    )
    expected = reference.dp_encode_without_noise(
        x,
        clip=clip,
        weight=weight,
        gamma=gamma,
        bits=bits,
        rotation_key=b"R" * 16,
        rounding_key=b"U" * 16,
    )
    assert np.array_equal(ring, expected)
