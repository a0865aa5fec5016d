from __future__ import annotations

import math

import numpy as np
import pytest
from support import BACKENDS

from securefl import ConfigError
from securefl.primitives import FixedPoint, dequantize, quantize
from securefl.testing import reference

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")


def sample(rng: np.random.Generator, n: int, dtype: type, scale: float = 1.5) -> np.ndarray:
    # Values beyond the clip range on purpose, and some exact grid points.
    x = rng.normal(0.0, scale, n).astype(dtype)
    x[:: max(1, n // 7)] = 0.25
    return x


CONFIGS = [
    FixedPoint(clip=1.0, frac_bits=20, bits=32, max_summands=100),
    FixedPoint(clip=0.5, frac_bits=8, bits=16, max_summands=10),
    FixedPoint(clip=3.0, frac_bits=40, bits=64, max_summands=1000),
    FixedPoint(clip=2.0, frac_bits=0, bits=4, max_summands=3),
]


class TestQuantize:
    @pytest.mark.parametrize("fp", CONFIGS, ids=repr)
    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    @pytest.mark.parametrize("n", [0, 1, 2, 3, 2047, 2048, 2049, 50_001])
    def test_matches_reference(self, rng, fp, dtype, n) -> None:
        x = sample(rng, n, dtype)
        q = quantize(x, fp, KEY)
        assert q.dtype == fp.dtype and q.shape == x.shape
        np.testing.assert_array_equal(q, reference.quantize(x, fp, KEY))

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_every_backend_matches_reference(self, rng, backend) -> None:
        fp = CONFIGS[0]
        x = sample(rng, 4_001 if backend == "portable" else 100_001, np.float32)
        np.testing.assert_array_equal(
            quantize(x, fp, KEY, backend=backend), reference.quantize(x, fp, KEY)
        )

    @pytest.mark.parametrize("threads", [1, 2, 3])
    def test_threads_do_not_change_the_result(self, rng, threads) -> None:
        fp = CONFIGS[2]
        x = sample(rng, 77_777, np.float64)
        np.testing.assert_array_equal(
            quantize(x, fp, KEY, threads=threads), reference.quantize(x, fp, KEY)
        )

    def test_keeps_shape(self, rng) -> None:
        x = sample(rng, 60, np.float32).reshape(3, 4, 5)
        q = quantize(x, CONFIGS[0], KEY)
        assert q.shape == (3, 4, 5)
        np.testing.assert_array_equal(q.reshape(-1), quantize(x.reshape(-1), CONFIGS[0], KEY))

    def test_non_contiguous_input_is_copied(self, rng) -> None:
        x = sample(rng, 200, np.float64)
        np.testing.assert_array_equal(
            quantize(x[::2], CONFIGS[0], KEY), quantize(x[::2].copy(), CONFIGS[0], KEY)
        )

    def test_grid_points_are_exact_and_clipping_saturates(self) -> None:
        fp = FixedPoint(clip=1.0, frac_bits=4, bits=16, max_summands=4)
        x = np.array([-7.0, -1.0, -0.5, 0.0, 0.0625, 1.0, 1e30], dtype=np.float64)
        q = quantize(x, fp, KEY)
        # (clip(x) + 1) * 16 is an integer for each: no rounding happens.
        np.testing.assert_array_equal(q, [0, 0, 8, 16, 17, 32, 32])
        np.testing.assert_array_equal(
            dequantize(q, fp, 1), [-1.0, -1.0, -0.5, 0.0, 0.0625, 1.0, 1.0]
        )

    def test_rounding_is_unbiased(self) -> None:
        # 1/3 sits between grid points 0.25 and 0.5 (p = 2): rounds up w.p. 1/3.
        fp = FixedPoint(clip=1.0, frac_bits=2, bits=8, max_summands=1)
        n = 1_000_000
        q = quantize(np.full(n, 1 / 3), fp, KEY)
        assert set(np.unique(q).tolist()) == {5, 6}
        frac = ((1 / 3) + 1.0) * 4 - 5  # = 1/3
        up = np.count_nonzero(q == 6) / n
        sigma = math.sqrt(frac * (1 - frac) / n)
        assert abs(up - frac) < 6 * sigma
        mean = float(np.mean(dequantize(q, fp, 1)))
        assert abs(mean - 1 / 3) < 6 * sigma * 0.25

    def test_noise_depends_on_key_only(self, rng) -> None:
        fp = CONFIGS[0]
        x = sample(rng, 10_000, np.float32)
        a, b = quantize(x, fp, KEY), quantize(x, fp, KEY)
        c = quantize(x, fp, bytes(16))
        np.testing.assert_array_equal(a, b)
        assert np.count_nonzero(a != c) > 1_000

    def test_error_within_precision(self, rng) -> None:
        fp = CONFIGS[0]
        x = rng.uniform(-1.0, 1.0, 100_000)
        err = np.abs(dequantize(quantize(x, fp, KEY), fp, 1) - x)
        assert err.max() < fp.precision
        assert err.max() > fp.precision / 2  # noise really is stochastic, not exact

    @pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
    def test_non_finite_rejected_with_index(self, bad) -> None:
        x = np.zeros(5000, dtype=np.float32)
        x[3001] = bad
        x[4000] = bad
        with pytest.raises(ValueError, match="not finite at index 3001"):
            quantize(x, CONFIGS[0], KEY)

    @pytest.mark.parametrize("dtype", [np.int32, np.float16, np.uint64])
    def test_wrong_dtype(self, dtype) -> None:
        with pytest.raises(TypeError, match="float32 or float64"):
            quantize(np.zeros(4, dtype), CONFIGS[0], KEY)

    def test_not_an_array(self) -> None:
        with pytest.raises(TypeError, match=r"numpy\.ndarray"):
            quantize([0.5, 0.25], CONFIGS[0], KEY)  # type: ignore[arg-type]

    def test_key_size(self) -> None:
        with pytest.raises(ValueError, match="16 bytes"):
            quantize(np.zeros(4), CONFIGS[0], bytes(32))


class TestDequantize:
    @pytest.mark.parametrize("fp", CONFIGS, ids=repr)
    def test_matches_reference(self, rng, fp) -> None:
        k = min(fp.max_summands, 3)
        total = rng.integers(0, k * fp.max_level + 1, 9_999, dtype=np.uint64).astype(fp.dtype)
        np.testing.assert_array_equal(dequantize(total, fp, k), reference.dequantize(total, fp, k))

    def test_sum_of_encodings_decodes_to_sum(self, rng) -> None:
        fp = FixedPoint(clip=1.0, frac_bits=24, bits=32, max_summands=20)
        xs = [rng.uniform(-1.0, 1.0, 5_000) for _ in range(20)]
        keys = [bytes([i]) * 16 for i in range(20)]
        total = np.zeros(5_000, dtype=np.uint32)
        for x, key in zip(xs, keys, strict=True):
            total += quantize(x, fp, key)
        err = np.abs(dequantize(total, fp, 20) - np.sum(xs, axis=0))
        assert err.max() < 20 * fp.precision

    def test_out_of_range_sum_is_refused(self) -> None:
        fp = FixedPoint(clip=1.0, frac_bits=4, bits=16, max_summands=4)
        total = np.array([0, 2 * fp.max_level + 1], dtype=np.uint32)  # 2 summands max 64
        with pytest.raises(ValueError, match="out of range"):
            dequantize(total, fp, 2)
        np.testing.assert_array_equal(dequantize(total, fp, 3), [-3.0, 2 * 32 / 16 + 1 / 16 - 3.0])

    @pytest.mark.parametrize("summands", [0, 5])
    def test_summands_out_of_range(self, summands) -> None:
        fp = FixedPoint(clip=1.0, frac_bits=4, bits=16, max_summands=4)
        with pytest.raises(ValueError, match="summands"):
            dequantize(np.zeros(3, np.uint32), fp, summands)

    def test_wrong_dtype(self) -> None:
        with pytest.raises(TypeError, match="uint32 or uint64"):
            dequantize(np.zeros(3, np.int64), CONFIGS[0], 1)


class TestFixedPoint:
    def test_wrap_is_refused_with_every_parameter_named(self) -> None:
        with pytest.raises(ConfigError) as info:
            FixedPoint(clip=1.0, frac_bits=20, bits=24, max_summands=10)
        message = str(info.value)
        for part in ("n=10", "c=1", "b=24", "2^-20", "wrap"):
            assert part in message

    def test_config_error_is_a_value_error(self) -> None:
        with pytest.raises(ValueError):
            FixedPoint(clip=1.0, frac_bits=30, bits=32, max_summands=2)

    def test_boundary(self) -> None:
        # n * ceil(2 c 2^p) must stay below 2^b: 3 * 2 * 2^4 = 96 < 128, 4 * 32 = 128 not.
        assert FixedPoint(clip=1.0, frac_bits=4, bits=7, max_summands=3).max_level == 32
        with pytest.raises(ConfigError):
            FixedPoint(clip=1.0, frac_bits=4, bits=7, max_summands=4)

    def test_non_integer_levels_round_up(self) -> None:
        fp = FixedPoint(clip=0.3, frac_bits=2, bits=8, max_summands=1)
        assert fp.max_level == math.ceil(2 * 0.3 * 4)  # 2.4 -> 3

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"clip": 0.0},
            {"clip": -1.0},
            {"clip": float("nan")},
            {"clip": float("inf")},
            {"frac_bits": -1},
            {"frac_bits": 63},
            {"bits": 0},
            {"bits": 65},
            {"max_summands": 0},
        ],
    )
    def test_invalid(self, kwargs) -> None:
        params = {"clip": 1.0, "frac_bits": 8, "bits": 32, "max_summands": 2} | kwargs
        with pytest.raises(ConfigError):
            FixedPoint(**params)

    @pytest.mark.parametrize("bits,clip,n", [(32, 1.0, 100), (64, 10.0, 10_000), (16, 0.5, 3)])
    def test_for_ring_picks_the_finest_precision(self, bits, clip, n) -> None:
        fp = FixedPoint.for_ring(bits=bits, clip=clip, max_summands=n)
        assert fp.bits == bits and fp.clip == clip and fp.max_summands == n
        with pytest.raises(ConfigError):
            FixedPoint(clip, fp.frac_bits + 1, bits, n)

    def test_for_ring_refuses_impossible(self) -> None:
        with pytest.raises(ConfigError, match="n=1000"):
            FixedPoint.for_ring(bits=8, clip=1.0, max_summands=1000)

    def test_dtype_and_precision(self) -> None:
        assert FixedPoint(1.0, 3, 32, 2).dtype == np.uint32
        assert FixedPoint(1.0, 3, 33, 2).dtype == np.uint64
        assert FixedPoint(1.0, 3, 33, 2).precision == 0.125


def test_unpickled_input_is_accepted() -> None:
    import pickle

    x = pickle.loads(pickle.dumps(np.linspace(-1, 1, 9, dtype=np.float32)))
    np.testing.assert_array_equal(
        quantize(x, CONFIGS[0], KEY), reference.quantize(x, CONFIGS[0], KEY)
    )


@pytest.mark.parametrize("weight", [1.0, 0.5, 0.37, 1e-3])
def test_weight_factor_matches_reference(rng, weight) -> None:
    x = sample(rng, 20_001, np.float32)
    fp = CONFIGS[0]
    q = quantize(x, fp, KEY, weight=weight)
    np.testing.assert_array_equal(q, reference.quantize(x, fp, KEY, weight))
    decoded = dequantize(q, fp, 1)
    assert np.max(np.abs(decoded - np.clip(x.astype(np.float64), -1, 1) * weight)) < fp.precision


@pytest.mark.parametrize("weight", [0.0, -0.5, 1.5, float("nan")])
def test_weight_factor_out_of_range(weight) -> None:
    with pytest.raises(ValueError, match="weight factor"):
        quantize(np.zeros(4), CONFIGS[0], KEY, weight=weight)
