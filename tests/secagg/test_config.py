"""Session configuration: refused up front when it cannot work."""

from __future__ import annotations

import pytest

from protocol.harness import assert_close_to_plain, make_config, make_updates
from securefl.errors import ConfigError
from securefl.secagg.config import GraphKind, SecAggConfig
from securefl.secagg.messages import Stage
from securefl.testing.drbg import Drbg
from securefl.transports.inmemory import run_session


@pytest.mark.parametrize("bits", [20, 32, 48, 64])
def test_ring_widths_up_to_64_bits(bits) -> None:
    n = 6
    config = make_config(n, t=3, d=50, bits=bits, max_weight=50)
    updates, weights = make_updates(n, config.dimension, seed=bits)
    report = run_session(
        config,
        updates,
        weights,
        rng=Drbg(f"bits-{bits}"),
        dropouts={4: Stage.MASKED_INPUT_COLLECTION},
    )
    assert report.stage is Stage.COMPLETED, report.abort_reason
    assert_close_to_plain(config, report.result, updates, weights)
    # Upload is dominated by the bit-packed masked vector: b bits per element.
    assert report.bytes_up[0] < config.dimension * bits / 8 + 1200


def test_finer_precision_with_wider_rings() -> None:
    p32 = SecAggConfig(num_clients=100, threshold=51, dimension=1, bits=32).fixed_point
    p64 = SecAggConfig(num_clients=100, threshold=51, dimension=1, bits=64).fixed_point
    assert p64.frac_bits == p32.frac_bits + 32


def test_overflowing_precision_is_refused() -> None:
    with pytest.raises(ConfigError, match="wrap") as info:
        SecAggConfig(num_clients=100, threshold=51, dimension=10, bits=32, clip=4.0, frac_bits=26)
    assert "n=100" in str(info.value) and "b=32" in str(info.value) and "2^-26" in str(info.value)


def test_total_weight_must_fit_the_ring() -> None:
    with pytest.raises(ConfigError, match="total weight"):
        SecAggConfig(num_clients=1000, threshold=10, dimension=10, bits=20, max_weight=5000)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_clients": 1}, "num_clients"),
        ({"threshold": 0}, "threshold"),
        ({"threshold": 10}, "threshold"),
        ({"dimension": 0}, "dimension"),
        ({"max_weight": 0}, "max_weight"),
        ({"graph": GraphKind.HARARY}, "degree"),
        ({"graph": GraphKind.HARARY, "degree": 10}, "degree"),
        ({"degree": 4}, "Harary graph only"),
        ({"graph": GraphKind.HARARY, "degree": 5}, "even"),
        ({"graph": "complete"}, "GraphKind"),
    ],
)
def test_invalid_configurations(kwargs, match) -> None:
    params = {"num_clients": 10, "threshold": 5, "dimension": 8} | kwargs
    with pytest.raises(ConfigError, match=match):
        SecAggConfig(**params)


def test_digest_covers_every_parameter() -> None:
    base = {"num_clients": 10, "threshold": 5, "dimension": 8}
    digests = {SecAggConfig(**base).digest()}
    for change in (
        {"threshold": 6},
        {"dimension": 9},
        {"bits": 31},
        {"clip": 2.0},
        {"max_weight": 2},
        {"frac_bits": 10},
        {"authenticated": True},
        {"graph": GraphKind.HARARY, "degree": 6},
    ):
        digests.add(SecAggConfig(**(base | change)).digest())
    assert len(digests) == 9


def test_from_rates_uses_the_parameter_chooser() -> None:
    from securefl.secagg.parameters import choose_parameters

    config = SecAggConfig.from_rates(1000, 16, dropout_rate=0.1, corruption_rate=0.1, bits=32)
    chosen = choose_parameters(1000, dropout_rate=0.1, corruption_rate=0.1)
    assert config.graph is GraphKind.HARARY
    assert (config.degree, config.threshold) == (chosen.degree, chosen.threshold)
    assert config.degree < 999


def test_from_rates_session_survives_the_tolerated_dropout() -> None:
    n = 60
    config = SecAggConfig.from_rates(
        n, 20, dropout_rate=0.1, corruption_rate=0.05, correctness_bits=10, max_weight=10
    )
    updates, weights = make_updates(n, 20, seed=60)
    schedule = dict.fromkeys(range(0, n, 10), Stage.MASKED_INPUT_COLLECTION)  # 10%
    report = run_session(config, updates, weights, dropouts=schedule, rng=Drbg("rates"))
    assert report.stage is Stage.COMPLETED, report.abort_reason
    assert_close_to_plain(config, report.result, updates, weights)


def test_from_rates_refuses_impossible_rates() -> None:
    with pytest.raises(ConfigError):
        SecAggConfig.from_rates(100, 8, dropout_rate=0.6, corruption_rate=0.5)
