"""Property tests (hypothesis): native kernels equal the references on any input, and
the algebraic facts the protocols rely on hold."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from securefl.primitives import (
    FixedPoint,
    dequantize,
    keystream,
    masked_accumulate,
    quantize,
    rns_sum,
    shamir,
    sum_mod,
)
from securefl.testing import reference

keys16 = st.binary(min_size=16, max_size=16)


@st.composite
def ring_vectors(draw, count: int | None = None):
    bits = draw(st.integers(1, 64))
    dtype = np.uint32 if bits <= 32 else np.uint64
    length = draw(st.integers(0, 3000))
    n = count if count is not None else draw(st.integers(1, 6))
    elements = st.integers(0, (1 << bits) - 1)
    arrays = [draw(hnp.arrays(dtype, length, elements=elements)) for _ in range(n)]
    return bits, arrays


@given(keys16, st.integers(0, 5000), keys16.map(lambda b: b))
def test_keystream_equals_cryptography(key, nbytes, counter) -> None:
    assert keystream(key, nbytes, counter_block=counter).tobytes() == reference.keystream(
        key, nbytes, counter
    )


@given(
    ring_vectors(count=1),
    st.lists(st.tuples(keys16, st.sampled_from([1, -1])), max_size=6),
    st.integers(1, 4),
)
def test_masked_accumulate_equals_reference(data, key_signs, threads) -> None:
    bits, (acc,) = data
    keys = [k for k, _ in key_signs]
    signs = [s for _, s in key_signs]
    expected = reference.masked_accumulate(acc, keys, signs, bits)
    masked_accumulate(acc, keys, signs, bits=bits, threads=threads)
    np.testing.assert_array_equal(acc, expected)


@given(ring_vectors())
def test_sum_mod_equals_reference(data) -> None:
    bits, arrays = data
    np.testing.assert_array_equal(sum_mod(arrays, bits=bits), reference.sum_mod(arrays, bits))


@given(ring_vectors(), st.data())
def test_pairwise_masks_cancel_in_the_sum(data, draw) -> None:
    """sum_u (x_u + sum_{v>u} PRG(s_uv) - sum_{v<u} PRG(s_uv)) = sum_u x_u (mod 2^b)."""
    bits, xs = data
    n = len(xs)
    seeds = {(u, v): draw.draw(keys16) for u in range(n) for v in range(u + 1, n)}
    masked = []
    for u, x in enumerate(xs):
        y = x.copy()
        pairs = [(seeds[min(u, v), max(u, v)], 1 if u < v else -1) for v in range(n) if v != u]
        masked_accumulate(y, [k for k, _ in pairs], [s for _, s in pairs], bits=bits)
        masked.append(y)
    np.testing.assert_array_equal(sum_mod(masked, bits=bits), reference.sum_mod(xs, bits))


fixed_points = st.builds(
    lambda clip, n, bits: FixedPoint.for_ring(bits=bits, clip=clip, max_summands=n),
    st.floats(0.01, 100.0),
    st.integers(1, 1000),
    st.integers(28, 64),
)


@given(fixed_points, st.data(), keys16)
def test_quantize_equals_reference(fp, data, key) -> None:
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    x = data.draw(
        hnp.arrays(
            dtype,
            st.integers(0, 3000),
            elements=st.floats(-1e6, 1e6, width=32 if dtype == np.float32 else 64),
        )
    )
    np.testing.assert_array_equal(quantize(x, fp, key), reference.quantize(x, fp, key))


@given(fixed_points, st.data(), keys16)
def test_quantization_error_is_below_precision(fp, data, key) -> None:
    x = data.draw(hnp.arrays(np.float64, st.integers(1, 2000), elements=st.floats(-1e3, 1e3)))
    decoded = dequantize(quantize(x, fp, key), fp, 1)
    # The decoded value is a grid point next to clip(x), computed in float64.
    bound = fp.precision + 4 * np.finfo(np.float64).eps * (fp.clip + 1)
    assert np.all(np.abs(decoded - np.clip(x, -fp.clip, fp.clip)) <= bound)


@given(st.binary(min_size=32, max_size=32), st.data())
def test_any_t_shares_reconstruct(secret, data) -> None:
    n = data.draw(st.integers(1, 25))
    t = data.draw(st.integers(1, n))
    shares = shamir.split(secret, t, n, seed=data.draw(keys16))
    subset = data.draw(st.permutations(shares)).__getitem__(slice(0, data.draw(st.integers(t, n))))
    assert shamir.combine(subset, t) == secret


@given(st.data())
def test_rns_sum_equals_reference(data) -> None:
    limbs = data.draw(st.integers(1, 4))
    moduli = data.draw(st.lists(st.integers(2, (1 << 62) - 1), min_size=limbs, max_size=limbs))
    size = data.draw(st.integers(1, 3))
    degree = data.draw(st.integers(1, 2500))
    n = data.draw(st.integers(1, 20))
    q = np.array(moduli, dtype=np.uint64).reshape(1, -1, 1)
    inputs = [
        data.draw(hnp.arrays(np.uint64, (size, limbs, degree), elements=st.integers(0, 2**64 - 1)))
        % q
        for _ in range(n)
    ]
    np.testing.assert_array_equal(rns_sum(inputs, moduli), reference.rns_sum(inputs, moduli))
