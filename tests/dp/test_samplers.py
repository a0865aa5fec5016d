"""Distribution tests of the native noise samplers (fixed keystream keys).

Each statistic is compared with its exact value (pmf summed numerically) within
five standard errors of the estimate over 2^20 samples, so a correct sampler fails
with probability ~1e-6 per check, and the fixed keys make the outcome reproducible.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from scipy import stats

from securefl.primitives import dp
from securefl.testing import reference

N = 1 << 20
KEY = bytes(range(16))


def discrete_gaussian_pmf(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    support = np.arange(-int(40 * sigma) - 10, int(40 * sigma) + 11)
    weights = np.exp(-(support.astype(np.float64) ** 2) / (2 * sigma**2))
    return support, weights / weights.sum()


def skellam_pmf(mu: float) -> tuple[np.ndarray, np.ndarray]:
    half = int(40 * math.sqrt(mu)) + 20
    support = np.arange(-half, half + 1)
    return support, stats.skellam.pmf(support, mu / 2, mu / 2)


def check_distribution(samples: np.ndarray, support: np.ndarray, pmf: np.ndarray) -> None:
    mean = float(np.sum(support * pmf))
    var = float(np.sum((support - mean) ** 2 * pmf))
    fourth = float(np.sum((support - mean) ** 4 * pmf))
    n = samples.size
    x = samples.astype(np.float64)
    assert abs(x.mean() - mean) <= 5 * math.sqrt(var / n)
    # Var of the sample variance ~ (mu_4 - var^2) / n.
    assert abs(x.var() - var) <= 5 * math.sqrt((fourth - var**2) / n)
    sd = math.sqrt(var)
    for k in (1.0, 2.0, 3.0, 4.0):
        p = float(pmf[np.abs(support) >= k * sd].sum())
        observed = float(np.mean(np.abs(x) >= k * sd))
        assert abs(observed - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-12, (k, observed, p)
    assert np.abs(x).max() <= support.max()


@pytest.mark.parametrize("sigma", [0.3, 1.0, 3.0, 57.5, 4000.0])
def test_discrete_gaussian_matches_its_pmf(sigma: float) -> None:
    samples = dp.sample_noise(N, KEY, kind="discrete_gaussian", param=sigma)
    support, pmf = discrete_gaussian_pmf(sigma)
    check_distribution(samples, support, pmf)
    if sigma <= 3:  # small support: every frequent value's frequency individually
        for value, p in zip(support, pmf, strict=True):
            if p > 1e-4:
                observed = float(np.mean(samples == value))
                assert abs(observed - p) <= 5 * math.sqrt(p * (1 - p) / N), value


@pytest.mark.parametrize("mu", [0.5, 6.0, 30.0, 900.0, 2e4])
def test_skellam_matches_its_pmf(mu: float) -> None:
    # mu/2 < 10 uses multiplication of uniforms, >= 10 Hoermann's PTRS: both tested.
    samples = dp.sample_noise(N, KEY, kind="skellam", param=mu)
    support, pmf = skellam_pmf(mu)
    check_distribution(samples, support, pmf)


@pytest.mark.parametrize(("kind", "std"), [("discrete_gaussian", 2.0**30), ("skellam", 2.0**17)])
def test_samplers_at_the_calibration_cap(kind: str, std: float) -> None:
    # The largest noise calibrate() asks for. At std 2^24 (Poisson mean 2^47) PTRS's
    # binary64 log-acceptance lost O(1) nats and the variance came out 4.8% high.
    param = std if kind == "discrete_gaussian" else std * std
    x = dp.sample_noise(N, KEY, kind=kind, param=param).astype(np.float64)
    z = x / std  # both are within 1/std^2 of N(0, 1) in every moment used here
    assert abs(z.mean()) <= 5 / math.sqrt(N)
    # The sample variance of a Gaussian has standard error sqrt(2 / N) (0.14% here).
    assert abs(z.var() - 1) <= 5 * math.sqrt(2 / N)
    for k in (1.0, 2.0, 3.0, 4.0):
        p = 2 * stats.norm.sf(k)
        observed = float(np.mean(np.abs(z) >= k))
        assert abs(observed - p) <= 5 * math.sqrt(p * (1 - p) / N), (k, observed, p)


def test_native_sampler_equals_reference() -> None:
    for sigma in (0.8, 12.0, 777.7):
        native = dp.sample_noise(2500, KEY, kind="discrete_gaussian", param=sigma)
        assert np.array_equal(native, reference.dp_discrete_gaussian(KEY, 2500, sigma))


def test_samples_do_not_depend_on_threads_and_do_on_key() -> None:
    one = dp.sample_noise(50_000, KEY, kind="skellam", param=100.0, threads=1)
    two = dp.sample_noise(50_000, KEY, kind="skellam", param=100.0, threads=2)
    other = dp.sample_noise(50_000, bytes(16), kind="skellam", param=100.0, threads=2)
    assert np.array_equal(one, two)
    assert np.mean(one == other) < 0.1


def test_no_noise_is_zero() -> None:
    assert not dp.sample_noise(100, KEY, kind="none", param=0.0).any()


@pytest.mark.parametrize(
    ("kind", "param"),
    [
        ("discrete_gaussian", 0.0),
        ("discrete_gaussian", -1.0),
        ("skellam", math.nan),
        ("skellam", 2.0**60),
        ("gaussian", 1.0),
    ],
)
def test_bad_parameters_are_refused(kind: str, param: float) -> None:
    with pytest.raises(ValueError):
        dp.sample_noise(10, KEY, kind=kind, param=param)  # type: ignore[arg-type]


def test_bad_key_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        dp.sample_noise(10, b"short", kind="skellam", param=1.0)
    with pytest.raises(TypeError):
        dp.sample_noise(10, "not bytes", kind="skellam", param=1.0)  # type: ignore[arg-type]


def test_skellam_noise_bytes_are_pinned() -> None:
    """Skellam noise is Poisson(mu/2) - Poisson(mu/2) with the positive draw first.

    The native code used to write ``half(s) - half(s)``, whose operands C++ may
    evaluate in either order, so two compilers could give different noise from the
    same key. The order is now fixed, and these bytes pin it (and the keystream use).
    """
    noise = dp.sample_noise(1000, KEY, kind="skellam", param=100.0, threads=1)
    assert noise[:6].tolist() == [10, 7, 9, 1, 5, -10]
    digest = "d31f5f6b6235621dcc12227f061ce840c98f3b251df4d5f73d05ab93a74fd28d"
    assert hashlib.sha256(noise.astype("<i8").tobytes()).hexdigest() == digest
