"""securefl.encoding: SecAgg adds integers; the encoders say what they mean (issue 13,
Deliver 1). The fixed-point encoder writes exactly what the client used to compute
itself (the golden vectors pin that too), and decodes exactly as the server used to."""

from __future__ import annotations

import numpy as np
import pytest

from securefl.encoding import FixedPointEncoder, RingSum, RingVector, decoded, encoder_for
from securefl.encoding.fixed_point import ROUNDING, as_ring_input
from securefl.primitives import kdf
from securefl.primitives.quantize import dequantize, quantize
from securefl.secagg.config import SecAggConfig

CONFIG = SecAggConfig(num_clients=5, threshold=3, dimension=64, clip=1.0, max_weight=10)


def test_the_fixed_point_input_is_the_session_bound_quantization() -> None:
    x = np.linspace(-1.5, 1.5, 64)
    encoder = FixedPointEncoder.for_config(CONFIG)
    out = np.zeros(64, dtype=np.uint32)
    session, secret = b"s" * 32, b"k" * 32
    encoder.encode(x, 7).write(out, session=session, client_id=3, secret=secret)
    key = kdf.derive(secret, session=session, purpose=ROUNDING, ids=(3,), length=16)
    want = quantize(x, CONFIG.fixed_point, key, weight=7 / 10)
    assert np.array_equal(out, want)
    # Another client id, or another session, gives other rounding (same secret).
    other = np.zeros(64, dtype=np.uint32)
    encoder.encode(x, 7).write(other, session=session, client_id=4, secret=secret)
    assert not np.array_equal(other, want)


def test_the_fixed_point_decoding_is_dequantize_times_w_over_n() -> None:
    fp = CONFIG.fixed_point
    ring = np.full(64, 3 * fp.max_level // 2, dtype=np.uint32)
    summed = RingSum(ring, 12, (0, 1, 2), (3, 4))
    mean = FixedPointEncoder.for_config(CONFIG).decode(summed)
    assert np.array_equal(mean, dequantize(ring, fp, 3) * (10 / 12))
    result = decoded(summed, encoder_for(CONFIG))
    assert np.array_equal(result.weighted_mean, mean) and result.ring_sum is ring
    assert (result.total_weight, result.contributors, result.dropped) == (12, (0, 1, 2), (3, 4))


@pytest.mark.parametrize(
    ("total_weight", "value", "match"),
    [(2, 0, "total weight is out of range"), (31, 0, "total weight"), (12, 2**31, "exceeds")],
)
def test_a_sum_no_honest_clients_can_make_is_refused(total_weight, value, match) -> None:
    ring = np.zeros(64, dtype=np.uint32)
    ring[5] = value
    with pytest.raises(ValueError, match=match):
        FixedPointEncoder.for_config(CONFIG).decode(RingSum(ring, total_weight, (0, 1, 2), ()))


@pytest.mark.parametrize(
    ("update", "weight", "error", "match"),
    [
        (np.zeros(63), 1, ValueError, "flat vector of 64"),
        (np.zeros((8, 8)), 1, ValueError, "flat vector of 64"),
        (np.zeros(64, dtype=np.int64), 1, TypeError, "float32 or float64"),
        (np.full(64, np.nan), 1, ValueError, r"update\[0\] = nan is not finite"),
        (np.zeros(64), 0, ValueError, r"weight must be in \[1, 10\]"),
        (np.zeros(64), 11, ValueError, r"weight must be in \[1, 10\]"),
    ],
)
def test_the_fixed_point_encoder_refuses_bad_updates(update, weight, error, match) -> None:
    with pytest.raises(error, match=match):
        FixedPointEncoder.for_config(CONFIG).encode(update, weight)


def test_a_ring_vector_is_written_as_it_is() -> None:
    values = np.array([0, 1, 2**64 - 1, 2**63 + 12345], dtype=np.uint64)
    out = np.zeros(4, dtype=np.uint64)
    RingVector(values, 64).write(out, session=b"", client_id=0, secret=b"")
    assert out.tolist() == values.tolist()
    floats = RingVector(np.array([3.0, 2.0**52]), 64)
    out = np.zeros(2, dtype=np.uint64)
    floats.write(out, session=b"", client_id=0, secret=b"")
    assert out.tolist() == [3, 2**52]


@pytest.mark.parametrize(
    ("values", "bits", "error", "match"),
    [
        (np.array([2**20], dtype=np.uint32), 20, ValueError, r"\[0, 2\^20\)"),
        (np.array([0.5]), 32, ValueError, "integers"),
        (np.array([-1.0]), 32, ValueError, r"\[0, 4294967296\)"),
        # A float of 2^53 or more may have lost its low bits: refused, never rounded.
        (np.array([2.0**53]), 64, ValueError, "exact below 2\\^53"),
        (np.array([np.inf]), 64, ValueError, "integers"),
        (np.array([1, 2], dtype=np.int64), 32, TypeError, "unsigned or float"),
        (np.zeros((2, 2), dtype=np.uint32), 32, ValueError, "flat"),
        ([1, 2], 32, TypeError, "unsigned or float"),
    ],
)
def test_a_ring_vector_refuses_what_is_not_in_the_ring(values, bits, error, match) -> None:
    with pytest.raises(error, match=match):
        RingVector(values, bits)  # type: ignore[arg-type]


def test_the_session_configuration_picks_the_encoding() -> None:
    ring_config = SecAggConfig(num_clients=5, threshold=3, dimension=4, bits=20, ring_input=True)
    assert encoder_for(ring_config) is None
    assert isinstance(as_ring_input(np.zeros(4, dtype=np.uint32), ring_config, 1), RingVector)
    assert not isinstance(as_ring_input(np.zeros(64), CONFIG, 1), RingVector)
    with pytest.raises(TypeError, match="numpy array or a RingInput"):
        as_ring_input([0.0] * 64, CONFIG, 1)  # type: ignore[arg-type]


def test_secagg_sums_64_bit_integers_exactly() -> None:
    """Integers in, integers out: a ring-input session of b = 64 (refused before, when
    the ring sum travelled as float64) returns the exact sum mod 2^64, even of values
    that float64 cannot hold."""
    from securefl.testing.drbg import Drbg
    from securefl.transports.inmemory import run_session

    config = SecAggConfig(
        num_clients=4, threshold=3, dimension=3, bits=64, ring_input=True, max_weight=4
    )
    values = [np.array([2**64 - 1, 2**53 + 1, i], dtype=np.uint64) for i in range(4)]
    report = run_session(config, values, [1, 2, 3, 4], rng=Drbg("64-bit ring"))
    assert report.result is not None and report.result.ring_sum is not None
    want = [(4 * (2**64 - 1)) % 2**64, (4 * (2**53 + 1)) % 2**64, 0 + 1 + 2 + 3]
    assert report.result.ring_sum.tolist() == want
    assert report.result.total_weight == 10
    assert report.aggregate is None  # a ring-input result is not unflattened as a mean
