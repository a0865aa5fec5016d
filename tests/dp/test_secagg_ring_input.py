"""SecAgg's ring-input mode (additive, for securefl.dp): encoded vectors in, ring sum out."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from securefl.dp import DPConfig, calibrate, encode_update, secagg_config
from securefl.errors import ConfigError
from securefl.primitives import dp as native
from securefl.secagg.client import SecAggClient
from securefl.secagg.config import SecAggConfig
from securefl.testing.drbg import Drbg
from securefl.transports.inmemory import run_session


def config(**options: object) -> SecAggConfig:
    return SecAggConfig(num_clients=3, threshold=2, dimension=8, bits=20, **options)  # type: ignore[arg-type]


def test_ring_input_changes_the_digest_only_when_set() -> None:
    assert config().digest() == config(ring_input=False).digest()
    assert config(ring_input=True).digest() != config().digest()
    # SecAgg returns integers (issue 13): a ring-input session of any b <= 64 is allowed.
    wide = SecAggConfig(num_clients=3, threshold=2, dimension=8, bits=60, ring_input=True)
    assert SecAggConfig.from_bytes(wide.to_bytes()).digest() == wide.digest()
    assert wide.bits == 60 and wide.ring_input


def test_ring_input_session_returns_the_exact_ring_sum() -> None:
    cfg = config(ring_input=True)
    rng = np.random.default_rng(4)
    vectors = [rng.integers(0, 2**20, size=8, dtype=np.uint32) for _ in range(3)]
    report = run_session(cfg, vectors, rng=Drbg(b"ring"))
    assert report.result is not None and report.result.ring_sum is not None
    expected = sum(v.astype(np.uint64) for v in vectors) % 2**20
    assert np.array_equal(report.result.ring_sum, expected)
    assert np.array_equal(report.result.weighted_mean, expected.astype(np.float64))
    assert report.result.total_weight == 3


@pytest.mark.parametrize(
    ("update", "error"),
    [
        (np.full(8, 2**20, dtype=np.uint32), ValueError),
        (np.full(8, 0.5), ValueError),
        (np.full(8, -1.0), ValueError),
        (np.full(8, 3, dtype=np.int32), TypeError),
        ([1] * 8, TypeError),
    ],
)
def test_ring_input_client_refuses_values_outside_the_ring(update: object, error: type) -> None:
    with pytest.raises(error):
        SecAggClient(0, config(ring_input=True), update)  # type: ignore[arg-type]


def test_floats_holding_integers_are_accepted() -> None:
    client = SecAggClient(0, config(ring_input=True), np.arange(8, dtype=np.float64))
    assert client.stage.value == "AdvertiseKeys"


def test_secagg_config_from_a_plan() -> None:
    plan = calibrate(DPConfig(epsilon=2.0, delta=1e-5, clip=1.0, num_clients=5, bits=24), 100)
    cfg = secagg_config(plan, threshold=3)
    assert (cfg.dimension, cfg.bits, cfg.ring_input, cfg.num_clients) == (128, 24, True, 5)
    with pytest.raises(ConfigError, match="comes from the DP plan"):
        secagg_config(plan, threshold=3, bits=32)


def test_encoded_update_cannot_be_pickled() -> None:
    plan = calibrate(DPConfig(epsilon=2.0, delta=1e-5, clip=1.0, num_clients=5, bits=24), 10)
    encoded = encode_update(np.zeros(10), plan, round_seed=bytes(32))
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(encoded)
    assert repr(encoded) == "EncodedUpdate(D=16, tries=1)"


def test_large_mean_poisson_moments() -> None:
    # PTRS at lambda = 5e7: Skellam variance 1e8, kurtosis excess 1/mu ~ 0.
    z = native.sample_noise(1 << 18, bytes(range(16)), kind="skellam", param=1e8)
    n = z.size
    assert abs(z.mean()) <= 5 * (1e4 / n**0.5)
    assert z.var() == pytest.approx(1e8, rel=5 * (2 / n) ** 0.5)
