"""Accounting (KLS Theorem 1, AKL Theorem 3.5, composed by dp_accounting) and calibration."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from securefl.dp import DPConfig, calibrate, encode_update
from securefl.dp import accounting as acc
from securefl.errors import ConfigError

DELTA = 1e-5


@pytest.mark.parametrize("rounds", [1, 10, 200])
@pytest.mark.parametrize(("delta2", "sigma", "clients"), [(1.0, 40.0, 10), (30.0, 500.0, 100)])
def test_ddg_matches_the_continuous_gaussian_where_they_must_agree(
    rounds: int, delta2: float, sigma: float, clients: int
) -> None:
    # sigma >> 1: tau ~ 10 n exp(-pi^2 sigma^2) underflows to 0 and KLS's bound is the
    # Gaussian mechanism's rho = Delta^2 / (2 n sigma^2) exactly.
    events = acc.ddg_events(delta2, delta2**2, sigma, clients, 1 << 20)
    ours = acc.compose_epsilon(events, rounds, DELTA)
    library = acc.gaussian_epsilon(math.sqrt(clients) * sigma / delta2, rounds, DELTA)
    assert ours == pytest.approx(library, rel=1e-9)


@pytest.mark.parametrize("rounds", [1, 50])
def test_skellam_approaches_the_gaussian_for_large_variance(rounds: int) -> None:
    delta2 = 20.0
    delta1 = delta2**2
    gauss = acc.gaussian_epsilon(1.5, rounds, DELTA)  # sigma_total = 1.5 delta2
    mu = (1.5 * delta2) ** 2
    small = acc.compose_epsilon(acc.skellam_events(delta2, delta1, mu), rounds, DELTA)
    big = acc.compose_epsilon(
        acc.skellam_events(delta2 * 100, delta1 * 1e4, mu * 1e4), rounds, DELTA
    )
    assert small > gauss  # the discrete mechanism pays for small variance
    assert big == pytest.approx(gauss, rel=0.01)
    assert big < small


def test_skellam_events_bound_theorem_3_5_at_every_integer_order() -> None:
    d2, d1, mu = 7.0, 30.0, 60.0
    lines = acc.skellam_events(d2, d1, mu)
    for alpha in (2, 3, 10, 100):
        exact = acc.skellam_rdp(alpha, d2, d1, mu)
        bounds = [e.xi + e.rho * alpha for e in lines]  # type: ignore[attr-defined]
        assert min(bounds) >= exact - 1e-12
        assert min(bounds) == pytest.approx(exact, rel=1e-12)  # xi is not clamped here
        assert exact >= alpha * d2**2 / (2 * mu)  # never better than the Gaussian


def test_ddg_pays_for_small_sigma_and_many_clients() -> None:
    gaussian = [a / 2 * (1.0 / 100.0) ** 2 for a in (2, 10)]
    # One client: tau = 0, the Gaussian mechanism's RDP exactly.
    assert [acc.ddg_rdp(a, 1.0, 1.0, 100.0, 1, 10**6) for a in (2, 10)] == pytest.approx(gaussian)
    for alpha in (2, 10, 100):
        small = acc.ddg_rdp(alpha, 1.0, 1.0, 0.3, 50, 10**4)
        assert small > alpha / 2 * (1.0 / (math.sqrt(50) * 0.3)) ** 2
        # The events' lines bound Proposition 14 at every order (they are its terms).
        lines = [e.xi + e.rho * alpha for e in acc.ddg_events(1.0, 1.0, 0.3, 50, 10**4)]
        assert min(lines) == pytest.approx(small, rel=1e-12)


def test_epsilon_is_monotone_in_noise_and_rounds() -> None:
    sigmas = [2.0, 5.0, 20.0, 100.0, 1000.0]
    for rounds in (1, 20):
        ddg = [
            acc.compose_epsilon(acc.ddg_events(30, 300, s, 10, 4096), rounds, DELTA) for s in sigmas
        ]
        sk = [
            acc.compose_epsilon(acc.skellam_events(30, 300, 10 * s**2), rounds, DELTA)
            for s in sigmas
        ]
        assert ddg == sorted(ddg, reverse=True) and len(set(ddg)) == len(ddg)
        assert sk == sorted(sk, reverse=True) and len(set(sk)) == len(sk)
    by_rounds = [
        acc.compose_epsilon(acc.ddg_events(30, 300, 20.0, 10, 4096), t, DELTA)
        for t in (1, 2, 10, 100)
    ]
    assert by_rounds == sorted(by_rounds) and len(set(by_rounds)) == 4


@pytest.mark.parametrize("mechanism", ["discrete_gaussian", "skellam"])
@pytest.mark.parametrize(("epsilon", "rounds"), [(1.0, 1), (3.0, 10), (8.0, 100)])
def test_calibration_meets_the_target_tightly(mechanism: str, epsilon: float, rounds: int) -> None:
    config = DPConfig(
        epsilon=epsilon,
        delta=DELTA,
        clip=1.0,
        num_clients=50,
        rounds=rounds,
        bits=24,
        mechanism=mechanism,
    )  # type: ignore[arg-type]
    plan = calibrate(config, 10_000)
    assert plan.epsilon <= epsilon
    assert plan.epsilon >= 0.99 * epsilon  # no more noise than needed
    assert plan.epsilon_per_round <= plan.epsilon
    assert plan.padded_dimension == 16384
    # The ring holds k standard deviations of the sum of n clients' noise.
    assert (
        2 ** (config.bits - 1)
        >= config.ring_stddevs * math.sqrt(50) * plan.client_noise_std / plan.gamma
    )


def test_worst_case_dropouts_cost_more_noise_per_client() -> None:
    base = DPConfig(epsilon=2.0, delta=DELTA, clip=1.0, num_clients=40, bits=24)
    plans = [calibrate(dataclasses.replace(base, dropout_rate=r), 1000) for r in (0.0, 0.25, 0.5)]
    assert [p.config.min_survivors for p in plans] == [40, 30, 20]
    stds = [p.client_noise_std for p in plans]
    assert stds == sorted(stds) and len(set(stds)) == 3
    # ... so that the survivors' noise alone is about the same.
    totals = [p.aggregate_noise_std for p in plans]
    assert max(totals) / min(totals) < 1.02


def test_more_rounds_and_smaller_epsilon_need_more_noise() -> None:
    base = DPConfig(epsilon=2.0, delta=DELTA, clip=1.0, num_clients=10, bits=24)
    noise = [
        calibrate(dataclasses.replace(base, rounds=t), 100).client_noise_std for t in (1, 5, 25)
    ]
    assert noise == sorted(noise) and len(set(noise)) == 3
    noise = [
        calibrate(dataclasses.replace(base, epsilon=e), 100).client_noise_std for e in (8, 3, 1)
    ]
    assert noise == sorted(noise) and len(set(noise)) == 3


def test_example_level_sensitivity_needs_less_noise() -> None:
    base = DPConfig(epsilon=2.0, delta=DELTA, clip=10.0, num_clients=4, bits=32, rounds=10)
    client = calibrate(base, 30)
    example = calibrate(dataclasses.replace(base, sensitivity=0.1), 30)
    assert example.client_noise_std < client.client_noise_std / 50
    assert example.epsilon <= 2.0


def test_too_few_bits_is_refused_with_the_bits_that_suffice() -> None:
    config = DPConfig(epsilon=1.0, delta=DELTA, clip=1.0, num_clients=100, rounds=10, bits=12)
    with pytest.raises(ConfigError, match=r"with b=12 bits.*b >= (\d+) bits would suffice") as info:
        calibrate(config, 1_000_000)
    bits = int(info.value.args[0].rsplit("b >= ", 1)[1].split()[0])
    assert calibrate(dataclasses.replace(config, bits=bits), 1_000_000).epsilon <= 1.0
    with pytest.raises(ConfigError, match="cannot reach"):
        calibrate(dataclasses.replace(config, bits=bits - 1), 1_000_000)
    with pytest.raises(ConfigError, match="too few bits"):
        calibrate(DPConfig(epsilon=1.0, delta=DELTA, clip=1.0, num_clients=100, bits=4), 10)


def test_too_few_clients_is_refused() -> None:
    with pytest.raises(ConfigError, match="too few clients"):
        calibrate(DPConfig(epsilon=1.0, delta=DELTA, clip=1.0, num_clients=3, dropout_rate=0.7), 10)
    with pytest.raises(ConfigError, match="too few clients"):
        calibrate(DPConfig(epsilon=1.0, delta=DELTA, clip=1.0, num_clients=1), 10)


@pytest.mark.parametrize(
    "change",
    [
        {"epsilon": 0.0},
        {"delta": 1.0},
        {"clip": -1.0},
        {"num_clients": 0},
        {"rounds": 0},
        {"dropout_rate": 1.0},
        {"bits": 54},
        {"mechanism": "laplace"},
        {"sensitivity": 2.0},
        {"beta": 0.0},
        {"ring_stddevs": 0.0},
        {"ring_stddevs": math.inf},
    ],
)
def test_bad_configurations_are_refused(change: dict[str, object]) -> None:
    fields = {"epsilon": 1.0, "delta": DELTA, "clip": 1.0, "num_clients": 10}
    with pytest.raises(ConfigError):
        DPConfig(**{**fields, **change})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # Used to fail deep inside: struct.error, the accountant's TypeError.
        ({"bits": 20.5}, "bits must be an integer, got 20.5"),
        ({"num_clients": 10.5}, "num_clients must be an integer, got 10.5"),
        ({"rounds": 2.5}, "rounds must be an integer, got 2.5"),
        ({"num_clients": True}, "num_clients must be an integer, got True"),
        ({"rounds": "3"}, "rounds must be an integer, got '3'"),
        ({"num_clients": 2**32}, r"num_clients and rounds must be in \[1, 2\^32 - 1\]"),
        # Used to raise OverflowError in the calibration's binary64 arithmetic.
        ({"clip": 1e300}, r"clip must be in \[1e-100, 1e\+100\], got 1e\+300"),
        ({"clip": 1e-300}, r"clip must be in \[1e-100, 1e\+100\]"),
        ({"clip": math.inf}, "clip must be in"),
        ({"clip": math.nan}, "clip must be in"),
    ],
)
def test_malformed_configurations_are_refused_with_a_reason(
    change: dict[str, object], message: str
) -> None:
    fields = {"epsilon": 1.0, "delta": DELTA, "clip": 1.0, "num_clients": 10}
    with pytest.raises(ConfigError, match=message):
        DPConfig(**{**fields, **change})  # type: ignore[arg-type]


def test_integer_like_values_and_extreme_clips_calibrate() -> None:
    config = DPConfig(
        epsilon=1.0, delta=DELTA, clip=1.0, num_clients=np.int64(10), rounds=np.int32(2)
    )
    assert calibrate(config, 10).config.num_clients == 10
    # Only c / gamma matters: the plan at 1e100 and 1e-100 is that of c = 1, rescaled.
    unit = calibrate(dataclasses.replace(config, clip=1.0), 10)
    for clip in (1e100, 1e-100):
        plan = calibrate(dataclasses.replace(config, clip=clip), 10)
        assert plan.gamma / clip == pytest.approx(unit.gamma, rel=1e-9)
        assert plan.epsilon == pytest.approx(unit.epsilon, rel=1e-9)


def test_no_noise_plan() -> None:
    plan = calibrate(DPConfig(epsilon=math.inf, delta=DELTA, clip=1.0, num_clients=5), 10)
    assert plan.noise_param == 0 and plan.client_noise_std == 0
    assert math.isinf(plan.epsilon) and plan.spec.noise == "none"
    assert "epsilon inf" in plan.describe()


@pytest.mark.parametrize("mechanism", ["discrete_gaussian", "skellam"])
def test_wide_rings_keep_the_noise_in_the_samplers_range(mechanism: str) -> None:
    # b = 52 for 4 clients would ask for ~2^49 integer steps of noise per client.
    config = DPConfig(
        epsilon=2.0,
        delta=DELTA,
        clip=10.0,
        num_clients=4,
        bits=52,
        mechanism=mechanism,
        sensitivity=0.1,
    )  # type: ignore[arg-type]
    plan = calibrate(config, 30)
    std = plan.noise_param if mechanism == "discrete_gaussian" else math.sqrt(plan.noise_param)
    # The samplers' accurate ranges (dp.hpp, docs/PRIVACY.md "Samplers").
    assert std <= (2.0**30 if mechanism == "discrete_gaussian" else 2.0**17)
    assert 0.99 * 2.0 <= plan.epsilon <= 2.0
    encoded = encode_update(np.zeros(30), plan, round_seed=bytes(32))
    assert encoded.ring.dtype == np.uint64


@pytest.mark.parametrize(("mechanism", "cap"), [("discrete_gaussian", 2**30), ("skellam", 2**17)])
def test_the_noise_stops_at_the_samplers_accurate_range(mechanism: str, cap: int) -> None:
    # b = 53 and n = 2: the ring alone would allow ~2^49 integer steps of noise std.
    config = DPConfig(
        epsilon=0.01, delta=DELTA, clip=1.0, num_clients=2, bits=53, mechanism=mechanism
    )  # type: ignore[arg-type]
    plan = calibrate(config, 2**20)
    std = plan.noise_param if mechanism == "discrete_gaussian" else math.sqrt(plan.noise_param)
    assert std == pytest.approx(cap, rel=1e-12)
    assert 0.99 * 0.01 <= plan.epsilon <= 0.01
    assert plan.client_noise_std == pytest.approx(plan.gamma * cap, rel=1e-12)


def test_a_target_below_the_samplers_floor_is_refused_with_the_reason() -> None:
    # At most 2^17 steps of Skellam noise: rounding 2^20 coordinates (~2^9 steps of
    # L2 error) then costs epsilon >= 0.0074 however many ring bits there are.
    config = DPConfig(
        epsilon=0.001, delta=DELTA, clip=1.0, num_clients=2, bits=53, mechanism="skellam"
    )
    with pytest.raises(ConfigError) as info:
        calibrate(config, 2**20)
    message = str(info.value)
    assert "accurate only up to a per-client noise std of 2^17 integer steps" in message
    assert "epsilon >= 0.00742" in message
    assert "or use the discrete Gaussian" in message
    # The discrete Gaussian's wider range (2^30) reaches that target.
    plan = calibrate(dataclasses.replace(config, mechanism="discrete_gaussian"), 2**20)
    assert plan.epsilon <= 0.001


def test_discrete_gaussian_beyond_its_accurate_range_is_refused() -> None:
    # sigma <= 2^30: beyond, |Y| = floor(-t ln u) on a 2^-52 grid jitters by ~2^-52 t.
    # For d = 2^36 the capped noise cannot hide ~2^17 steps of rounding error at 1e-3.
    config = DPConfig(epsilon=1e-3, delta=DELTA, clip=1.0, num_clients=2, bits=53)
    with pytest.raises(ConfigError) as info:
        calibrate(config, 2**36)
    message = str(info.value)
    assert "discrete_gaussian sampler is accurate only up to a per-client noise std of 2^30" in (
        message
    )
    assert "epsilon >= 0.00351" in message
    assert "use the discrete Gaussian" not in message
    plan = calibrate(dataclasses.replace(config, epsilon=0.004), 2**36)
    assert plan.noise_param == 2.0**30 and plan.epsilon <= 0.004
