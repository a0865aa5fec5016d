"""securefl.aggregate's bad inputs, the same for every protocol (issue 12, items 5 and 6).

Each case runs through plain, secagg, secagg+ and (with TenSEAL) ckks: a layout that
differs between clients, a weight that is not an integer >= 1, a non-finite value,
integer leaves, values beyond the clip and a precision too coarse for the inputs. A
protocol either gives the same number as the others or refuses with the same error,
naming the client index and the offending value.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest

import securefl
from securefl.api import ClippingWarning, PrecisionWarning
from securefl.secagg.messages import Stage
from securefl.testing.drbg import Drbg

ALL = ["plain", "secagg", "secagg+", "ckks"]
SECURE = ["secagg", "secagg+", "ckks"]


def run(protocol: str, updates: list[Any], weights: Any = None, **options: Any) -> Any:
    if protocol == "ckks":
        pytest.importorskip("tenseal")
    return securefl.aggregate(
        updates,
        weights,
        protocol=protocol,  # type: ignore[arg-type]
        rng=Drbg(f"inputs-{protocol}"),
        **options,
    )


def three(update: Any) -> list[Any]:
    """Three clients: the smallest federation every protocol accepts (t >= 2)."""
    return [update, update, update]


# -- layouts: names, order, shapes, dtypes, framework ---------------------------------


@pytest.mark.parametrize("protocol", ALL)
class TestLayoutsAreCheckedAlike:
    def test_different_keys(self, protocol) -> None:
        a = np.arange(3.0)
        ups = [{"a": a, "b": a}, {"a": a, "b": a}, {"a": a, "c": a}]
        with pytest.raises(ValueError, match=r"client 2\b.*lacks 'b'.*has 'c'") as info:
            run(protocol, ups)
        assert "client 0" in str(info.value)

    def test_same_keys_in_another_order(self, protocol) -> None:
        a = np.arange(3.0)
        ups = [{"a": a, "b": a + 10}, {"b": a + 10, "a": a}, {"a": a, "b": a + 10}]
        with pytest.raises(ValueError, match=r"client 1\b.*order.*\['b', 'a'\].*\['a', 'b'\]"):
            run(protocol, ups)

    def test_transposed_shapes(self, protocol) -> None:
        ups = [np.zeros((2, 5)), np.zeros((2, 5)), np.zeros((5, 2))]
        with pytest.raises(ValueError, match=r"client 2\b.*shape \(5, 2\).*\(2, 5\)"):
            run(protocol, ups)

    def test_shape_of_one_named_leaf(self, protocol) -> None:
        ups = [{"w": np.zeros((2, 5))}, {"w": np.zeros((5, 2))}, {"w": np.zeros((2, 5))}]
        with pytest.raises(ValueError, match=r"client 1\b.*'w'.*shape \(5, 2\).*\(2, 5\)"):
            run(protocol, ups)

    def test_dtypes(self, protocol) -> None:
        x = np.zeros(4)
        ups = [{"w": x}, {"w": x}, {"w": x.astype(np.float32)}]
        with pytest.raises(ValueError, match=r"client 2\b.*'w'.*float32.*float64"):
            run(protocol, ups)

    def test_number_of_list_leaves(self, protocol) -> None:
        x = np.zeros(2)
        ups = [[x, x], [x, x, x], [x, x]]
        with pytest.raises(ValueError, match=r"client 1\b.*3 leaves.*2"):
            run(protocol, ups)

    def test_list_against_dict(self, protocol) -> None:
        x = np.zeros(2)
        ups = [{"0": x}, [x], {"0": x}]
        with pytest.raises(ValueError, match=r"client 1\b.*list.*dict"):
            run(protocol, ups)

    def test_numpy_mixed_with_torch(self, protocol) -> None:
        torch = pytest.importorskip("torch")
        ups = [{"w": np.zeros(3)}, {"w": np.zeros(3)}, {"w": torch.zeros(3, dtype=torch.float64)}]
        with pytest.raises(ValueError, match=r"client 2\b.*torch.*numpy"):
            run(protocol, ups)

    def test_one_client_mixing_numpy_and_torch_is_named(self, protocol) -> None:
        torch = pytest.importorskip("torch")
        ups = three({"w": np.zeros(3)})
        ups[1] = {"w": np.zeros(3), "b": torch.zeros(1)}
        with pytest.raises(TypeError, match=r"client 1\b.*mixes torch tensors and numpy"):
            run(protocol, ups)

    def test_equal_layouts_still_aggregate(self, protocol) -> None:
        ups = [{"a": np.full(2, float(i)), "b": np.full(3, -float(i))} for i in range(3)]
        result = run(protocol, ups)
        assert list(result.aggregate) == ["a", "b"]
        np.testing.assert_allclose(result.aggregate["a"], [1.0, 1.0], atol=1e-3)
        np.testing.assert_allclose(result.aggregate["b"], [-1.0] * 3, atol=1e-3)


# -- weights ---------------------------------------------------------------------------


BAD_WEIGHTS = [
    (1.5, "1.5"),
    (1.9999, "1.9999"),
    (0.5, "0.5"),
    (True, "True"),
    (-1, "-1"),
    (0, "0"),
    (float("nan"), "nan"),
    (float("inf"), "inf"),
    ("3", "'3'"),
    (np.float32(2.5), "2.5"),
    (2**32, str(2**32)),
]


@pytest.mark.parametrize("protocol", ALL)
class TestWeights:
    @pytest.mark.parametrize(("weight", "shown"), BAD_WEIGHTS)
    def test_bad_weight_is_refused_naming_the_client_and_value(
        self, protocol, weight, shown
    ) -> None:
        with pytest.raises(securefl.ConfigError, match=rf"client 1\b.*{shown}") as info:
            run(protocol, three(np.arange(3.0)), [2, weight, 3])
        assert "weight" in str(info.value)

    def test_integral_floats_and_numpy_integers_are_exact_weights(self, protocol) -> None:
        ups = [np.full(2, 1.0), np.full(2, 2.0), np.full(2, 4.0)]
        result = run(protocol, ups, [np.int64(1), 2.0, np.float32(5.0)])
        assert result.total_weight == 8 and type(result.total_weight) is int
        tolerance = 1e-3 if protocol == "ckks" else 1e-6  # CKKS's noise
        np.testing.assert_allclose(result.aggregate, [(1 + 4 + 20) / 8] * 2, atol=tolerance)

    def test_one_weight_per_client(self, protocol) -> None:
        with pytest.raises(securefl.ConfigError, match=r"2 weights for 3 clients"):
            run(protocol, three(np.zeros(2)), [1, 2])

    def test_weight_above_max_weight_names_the_client(self, protocol) -> None:
        with pytest.raises(securefl.ConfigError, match=r"client 2\b.*weight 9.*max_weight=5"):
            run(protocol, three(np.zeros(2)), [1, 5, 9], max_weight=5)


# -- non-finite values -----------------------------------------------------------------


@pytest.mark.parametrize("protocol", ALL)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_value_names_client_leaf_and_index(protocol, bad) -> None:
    ups = three({"w": np.zeros((2, 2)), "b": np.zeros(3)})
    ups[2] = {"w": np.zeros((2, 2)), "b": np.array([0.0, bad, 1.0])}
    with pytest.raises(ValueError, match=rf"client 2\b.*{bad}.*'b'\[1\]"):
        run(protocol, ups)


# -- integer and bool leaves -----------------------------------------------------------


@pytest.mark.parametrize("protocol", ALL)
@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8", "int8"])
def test_integer_leaves_are_averaged_as_float64(protocol, dtype) -> None:
    ups = [np.array([0, 1], dtype), np.array([1, 2], dtype)] * 2
    result = run(protocol, ups)
    # The mean of integers is no integer: it comes back as float64, never rounded.
    assert result.aggregate.dtype == np.float64
    np.testing.assert_allclose(result.aggregate, [0.5, 1.5], atol=1e-3)


@pytest.mark.parametrize("protocol", ALL)
def test_bool_and_integer_leaves_in_a_dict_keep_float_leaves_dtype(protocol) -> None:
    ups = [
        {"w": np.full(2, i, np.float32), "mask": np.array([i % 2 == 0]), "n": np.array(i + 1)}
        for i in range(3)
    ]
    result = run(protocol, ups)
    assert result.aggregate["w"].dtype == np.float32
    assert result.aggregate["mask"].dtype == np.float64
    assert result.aggregate["n"].dtype == np.float64 and result.aggregate["n"].shape == ()
    np.testing.assert_allclose(result.aggregate["mask"], [2 / 3], atol=1e-3)
    np.testing.assert_allclose(result.aggregate["n"], 2.0, atol=1e-3)


def test_integer_leaves_agree_across_protocols() -> None:
    """The issue's case: plain gave [0 2] and CKKS [1 1] for the mean [0.5 1.5]."""
    ups = [np.array([0, 1]), np.array([1, 2])] * 2
    protocols = [p for p in ALL if p != "ckks" or securefl.ckks_available()]
    means = [run(p, ups).aggregate for p in protocols]
    for mean in means:
        assert mean.dtype == np.float64
        np.testing.assert_allclose(mean, means[0], atol=1e-3)


def test_integer_torch_buffers_come_back_as_float64_tensors() -> None:
    torch = pytest.importorskip("torch")
    ups = [
        {"w": torch.full((2,), float(i)), "num_batches_tracked": torch.tensor(i)} for i in (1, 2)
    ]
    ups.append({"w": torch.full((2,), 4.0), "num_batches_tracked": torch.tensor(4)})
    result = run("secagg", ups, [1, 1, 2])
    assert result.aggregate["w"].dtype == torch.float32
    assert result.aggregate["num_batches_tracked"].dtype == torch.float64
    assert abs(float(result.aggregate["num_batches_tracked"]) - 11 / 4) < 1e-6


# -- clipping --------------------------------------------------------------------------


def big_first() -> list[np.ndarray]:
    return [np.array([1e6, 0.5]), np.array([0.0, 0.5]), np.zeros(2), np.array([-9.0, 0.5])]


@pytest.mark.parametrize("protocol", ALL)
class TestClipping:
    def test_every_protocol_clips_reports_and_warns(self, protocol) -> None:
        with pytest.warns(ClippingWarning, match=r"client 0\b.*1e\+06.*client 3\b.*-9") as info:
            result = run(protocol, big_first())
        assert len(info) == 1
        # The same clip everywhere: mean of (8, 0, 0, -8) and of (0.5, 0.5, 0, 0.5).
        np.testing.assert_allclose(result.aggregate, [0.0, 0.375], atol=1e-3)
        assert result.clipped == {0: 1, 1: 0, 2: 0, 3: 1}

    def test_clip_error_names_the_client_and_value(self, protocol) -> None:
        with pytest.raises(ValueError, match=r"client 0\b.*1e\+06.*\[0\].*clip=8"):
            run(protocol, big_first(), on_clip="error")

    def test_clip_ignore_still_reports(self, protocol) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            result = run(protocol, big_first(), on_clip="ignore")
        assert result.clipped == {0: 1, 1: 0, 2: 0, 3: 1}

    def test_nothing_clipped_reports_zero_per_contributor(self, protocol) -> None:
        result = run(protocol, [np.full(3, 0.1 * i) for i in range(3)])
        assert result.clipped == {0: 0, 1: 0, 2: 0}

    def test_a_dropped_client_is_not_reported(self, protocol) -> None:
        ups = big_first()
        ups[3] = np.zeros(2)
        result = run(protocol, ups, dropouts={0: Stage.MASKED_INPUT_COLLECTION})
        assert result.contributors == (1, 2, 3)
        assert result.clipped == {1: 0, 2: 0, 3: 0}

    def test_bad_on_clip(self, protocol) -> None:
        with pytest.raises(securefl.ConfigError, match=r"on_clip.*'loud'"):
            run(protocol, three(np.zeros(2)), on_clip="loud")


@pytest.mark.parametrize("protocol", ["plain", "ckks"])
def test_clip_none_keeps_every_value_where_no_fixed_point_is_needed(protocol) -> None:
    result = run(protocol, big_first(), clip=None)
    assert abs(result.aggregate[0] - (1e6 - 9) / 4) < 1e-2
    assert result.clipped == {0: 0, 1: 0, 2: 0, 3: 0}


@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
def test_clip_none_is_refused_by_secagg(protocol) -> None:
    with pytest.raises(securefl.ConfigError, match=r"clip"):
        run(protocol, big_first(), clip=None)


def test_the_issue_case_agrees_across_protocols() -> None:
    """1e6 against clip 8: SecAgg gave 1.98, plain and CKKS 2.5e5, with no warning."""
    ups = [np.array([1e6]), np.zeros(1), np.zeros(1), np.zeros(1)]
    protocols = [p for p in ALL if p != "ckks" or securefl.ckks_available()]
    for protocol in protocols:
        with pytest.warns(ClippingWarning, match=r"client 0\b"):
            result = run(protocol, ups)
        assert abs(result.aggregate[0] - 2.0) < 1e-3, protocol
        assert result.clipped == {0: 1, 1: 0, 2: 0, 3: 0}


# -- precision -------------------------------------------------------------------------


def small_values(n: int = 4, loc: float = 0.04) -> list[np.ndarray]:
    data = np.random.default_rng(3)  # test data
    return [data.normal(loc, loc / 4, 10) for _ in range(n)]


@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
def test_bits_too_few_for_the_inputs_warn(protocol) -> None:
    with pytest.warns(PrecisionWarning, match=r"bits=8.*1%.*bits=(\d+)") as info:
        run(protocol, small_values(), bits=8)
    suggested = int(info[0].message.args[0].rsplit("bits=", 1)[1].split()[0].rstrip(",;.)"))
    # The suggestion is enough: no warning with it.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = run(protocol, small_values(), bits=suggested)
    want = np.mean(small_values(), axis=0)
    assert np.max(np.abs(result.aggregate - want)) <= 0.01 * np.max(np.abs(small_values()))


@pytest.mark.parametrize("protocol", ["plain", "ckks"])
def test_bits_do_not_matter_where_there_is_no_fixed_point(protocol) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = run(protocol, small_values(), bits=8)
    assert np.max(np.abs(result.aggregate - np.mean(small_values(), axis=0))) < 4e-4


def test_ckks_noise_beyond_one_percent_warns() -> None:
    pytest.importorskip("tenseal")
    with pytest.warns(PrecisionWarning, match=r"CKKS.*1%"):
        run("ckks", small_values(loc=1e-4))


@pytest.mark.parametrize("protocol", ALL)
def test_zero_updates_need_no_precision(protocol) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = run(protocol, three(np.zeros(3)), bits=8)
    # CKKS adds its (flooding) noise even to zeros; the others are exact.
    np.testing.assert_allclose(
        result.aggregate, np.zeros(3), atol=1e-3 if protocol == "ckks" else 0
    )


def test_precision_warning_is_a_user_warning() -> None:
    assert issubclass(PrecisionWarning, UserWarning)
    assert issubclass(ClippingWarning, UserWarning)


# -- the DP path checks the same inputs ------------------------------------------------


@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
def test_dp_path_checks_layouts_weights_and_values_alike(protocol) -> None:
    from securefl.dp import DPConfig

    config = DPConfig(epsilon=math.inf, delta=1e-5, clip=4.0, num_clients=3, bits=32)
    x = np.zeros(4)
    with pytest.raises(ValueError, match=r"client 1\b.*shape \(2, 2\).*\(4,\)"):
        run(protocol, [x, x.reshape(2, 2), x], dp=config)
    with pytest.raises(securefl.ConfigError, match=r"client 2\b.*1.5"):
        run(protocol, [x, x, x], [1, 2, 1.5], dp=config)
    with pytest.raises(ValueError, match=r"client 0\b.*nan.*\[3\]"):
        run(protocol, [np.array([0, 0, 0, np.nan]), x, x], dp=config)
    ints = [np.array([0, 1, 0, 1]), np.array([1, 0, 1, 0]), np.array([1, 1, 0, 0])]  # L2 <= 4
    result = run(protocol, ints, dp=config)
    assert result.aggregate.dtype == np.float64 and result.clipped == {}
    np.testing.assert_allclose(result.aggregate, [2 / 3, 2 / 3, 1 / 3, 1 / 3], atol=1e-6)
