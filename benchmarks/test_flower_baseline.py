"""Flower 1.42 SecAgg+ baseline: correctness of the wrappers, then benchmarks.

Needs ``flwr==1.42.0`` (skipped otherwise; the ``bench`` extra installs it):

    pytest benchmarks/test_flower_baseline.py --benchmark-only -q

Flower's output is a weighted *average*; every check compares it with the plain weighted
average of the survivors' updates within Flower's quantization error
(``securefl.bench.flower.flower_expected_average``).
"""

from __future__ import annotations

import resource
import time
import warnings

import numpy as np
import pytest

with warnings.catch_warnings():
    # flwr 1.42 -> typer -> a deprecated click attribute, at import time only.
    warnings.simplefilter("ignore", DeprecationWarning)
    pytest.importorskip("flwr")
    from flwr.client.mod.secure_aggregation.secaggplus_mod import SecAggPlusState
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
    from flwr.common.secure_aggregation.ndarrays_arithmetic import factor_extract
    from flwr.common.secure_aggregation.quantization import dequantize
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
    from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key

    from securefl.bench import flower as fb


C, Q, M, W = 8.0, 2**22, 2**32, 1000.0
QUANT = {"clipping_range": C, "quantization_range": Q, "modulus_range": M}
ONE_M, TEN_M = 1_000_000, 10_000_000


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _private_mask(group, nid, shapes):
    return pseudo_rand_gen(group.states[nid]["rd_seed"], M, shapes)


def _pairwise_masks(group, nid, shapes):
    """(sign, mask) of each pairwise mask the client added, from its own keys (test oracle)."""
    state = SecAggPlusState(**group.states[nid])
    sk1 = bytes_to_private_key(state.sk1)
    for v, (pk1, _) in state.public_keys_dict.items():
        if v == nid:
            continue
        seed = generate_shared_key(sk1, bytes_to_public_key(pk1))
        yield (1 if nid > v else -1), pseudo_rand_gen(seed, M, shapes)


def _remove_own_masks(group, nid, masked):
    """A single client's quantized vector, from its masked vector and its secrets."""
    shapes = [a.shape for a in masked]
    out = [a - p for a, p in zip(masked, _private_mask(group, nid, shapes), strict=True)]
    for sign, mask in _pairwise_masks(group, nid, shapes):
        out = [a - sign * m for a, m in zip(out, mask, strict=True)]
    return [a % M for a in out]


def _dequantize_one(quantized):
    """Flower's server arithmetic (unmask_stage) for a single contribution."""
    q_ratio, params = factor_extract(quantized)
    return [v * (Q / q_ratio) for v in dequantize(params, C, Q)]


def _check_close(actual, expected, bound):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        assert a.shape == e.shape
        err = float(np.max(np.abs(a - e)))
        assert err <= bound, (err, bound)


# ------------------------------------------------------------------------------------------
# Correctness (d = 1000, n = 5..10)
# ------------------------------------------------------------------------------------------


def test_client_masked_input_layout_and_masks():
    rng = np.random.default_rng(1)
    group = fb.flower_client_group(4, seed=3)
    nid = group.node_ids[0]
    update = [rng.uniform(-1, 1, 1000).astype(np.float32), rng.uniform(-1, 1, (3, 5))]
    masked = fb.flower_client_masked_input(
        update, 4, seed=5, group=group, num_examples=250, max_weight=W, **QUANT
    )
    assert [a.shape for a in masked] == [(1,), (1000,), (3, 5)]
    assert all(a.dtype == np.int64 and a.min() >= 0 and a.max() < M for a in masked)
    # Masks hide the value: the masked vector spans the ring, the quantized one does not.
    assert masked[1].max() - masked[1].min() > M // 2
    quantized = _remove_own_masks(group, nid, masked)
    assert quantized[0][0] == round(250 / W * Q)  # the weight travels inside the vector
    assert quantized[1].max() <= Q
    # Once unmasked, one client's contribution is its update within one step / dq (+ float32).
    dq = fb.flower_weight_ratio(250, W, Q)
    for got, x in zip(_dequantize_one(quantized), update, strict=True):
        assert np.max(np.abs(got - x)) <= 1.75 * (2 * C / Q) / dq
    # Same group and seed (same rounding coins): bit-identical.
    again = fb.flower_client_masked_input(
        update, 4, seed=5, group=group, num_examples=250, max_weight=W, **QUANT
    )
    assert all(np.array_equal(a, b) for a, b in zip(masked, again, strict=True))


def test_client_masked_inputs_of_a_group_sum_to_the_weighted_average():
    """6 clients, each with the 5 others as neighbours: pairwise masks cancel in the sum."""
    rng = np.random.default_rng(2)
    group = fb.flower_client_group(5, seed=4)
    updates = [rng.uniform(-1, 1, 1000).astype(np.float32) for _ in group.node_ids]
    weights = [int(w) for w in rng.integers(1, int(W), len(updates))]
    total = [np.zeros(1, np.int64), np.zeros(1000, np.int64)]
    for i, nid in enumerate(group.node_ids):
        masked = fb.flower_client_masked_input(
            updates[i],
            5,
            seed=i,
            group=group,
            node_id=nid,
            num_examples=weights[i],
            max_weight=W,
            **QUANT,
        )
        total = [(t + m) % M for t, m in zip(total, masked, strict=True)]
        total = [
            (t - p) % M
            for t, p in zip(total, _private_mask(group, nid, [(1,), (1000,)]), strict=True)
        ]
    q_total, params = factor_extract(total)
    assert q_total == sum(round(w / W * Q) for w in weights)
    n = len(updates)
    avg = (dequantize(params, C, Q)[0] - (n - 1) * C) * (Q / q_total)  # unmask_stage
    expected, bound = fb.flower_expected_average(
        updates, weights, range(n), clipping_range=C, quantization_range=Q, max_weight=W
    )
    assert 0 < np.max(np.abs(avg - expected[0])) <= bound
    plain = sum(w * u.astype(np.float64) for w, u in zip(weights, updates, strict=True)) / sum(
        weights
    )
    assert np.max(np.abs(avg - plain)) <= bound + 1e-6  # Flower's weights ~ w / max_weight


@pytest.mark.parametrize(
    ("n", "num_shares", "threshold", "dropped"), [(10, 5, 3, 2), (8, 8, 4, 1), (5, 5, 3, 0)]
)
def test_server_unmask_matches_weighted_average(n, num_shares, threshold, dropped):
    rng = np.random.default_rng(n)
    updates = [
        [rng.uniform(-1, 1, 1000).astype(np.float32), rng.normal(0, 2, (4, 3))] for _ in range(n)
    ]
    weights = [int(w) for w in rng.integers(50, 1000, n)]
    inputs = fb.flower_server_setup(
        n,
        1000,
        num_shares=num_shares,
        threshold=threshold,
        num_dropped=dropped,
        updates=updates,
        weights=weights,
        max_weight=W,
        seed=n,
    )
    rnd = inputs.round
    assert len(rnd.dropped) == dropped and len(rnd.survivors) == n - dropped
    expected, bound = fb.flower_expected_average(updates, weights, rnd.survivors, max_weight=W)
    for include_sum in (True, False, True):  # replays are independent of each other
        agg = fb.flower_server_unmask(inputs, include_sum=include_sum)
        assert all(np.array_equal(a, b) for a, b in zip(agg, inputs.live_aggregate, strict=True))
        _check_close(agg, expected, bound)
    # A dropped client's update is not in the aggregate.
    if dropped:
        wrong, _ = fb.flower_expected_average(updates, weights, range(n), max_weight=W)
        assert np.max(np.abs(agg[0] - wrong[0])) > 100 * bound


@pytest.mark.parametrize(
    ("n", "dropout", "num_shares", "threshold"), [(10, 0.2, 5, 3), (6, 0.0, 6, 3), (7, 1 / 7, 3, 2)]
)
def test_full_round_matches_weighted_average(n, dropout, num_shares, threshold):
    rng = np.random.default_rng(10 + n)
    updates = [rng.uniform(-1, 1, 1000).astype(np.float32) for _ in range(n)]
    weights = [int(w) for w in rng.integers(1, 1000, n)]
    res = fb.flower_full_round(
        n,
        1000,
        dropout,
        num_shares=num_shares,
        threshold=threshold,
        updates=updates,
        weights=weights,
        max_weight=W,
        seed=n,
    )
    assert len(res.dropped) == round(dropout * n)
    assert sorted(res.survivors + res.dropped) == list(range(n))
    expected, bound = fb.flower_expected_average(updates, weights, res.survivors, max_weight=W)
    assert res.aggregate[0].dtype == np.float64
    _check_close(res.aggregate, expected, bound)


def test_full_round_halts_when_a_neighbourhood_falls_below_threshold():
    # n = 6, neighbourhoods of 5 (itself included), threshold 4: with 2 of 6 dropped, some
    # survivor keeps only 3 active members; Flower's workflow stops before unmasking.
    with pytest.raises(RuntimeError, match="halted"):
        fb.flower_full_round(6, 100, 2 / 6, num_shares=5, threshold=4, seed=1)


# ------------------------------------------------------------------------------------------
# Benchmarks (slow; few rounds)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("d", "k", "rounds"), [(ONE_M, 10, 3), (TEN_M, 50, 2)], ids=["d=1M,k=10", "d=10M,k=50"]
)
def test_bench_flower_client_masking(benchmark, record, data_rng, d, k, rounds):
    group = fb.flower_client_group(k, seed=k)
    update = data_rng.uniform(-1, 1, d).astype(np.float32)
    masked = benchmark.pedantic(
        fb.flower_client_masked_input,
        args=(update, k),
        kwargs={"seed": 0, "group": group, **QUANT},
        rounds=rounds,
        iterations=1,
    )
    assert [a.shape for a in masked] == [(1,), (d,)]
    assert all(a.dtype == np.int64 and a.min() >= 0 and a.max() < M for a in masked)
    got = _dequantize_one(_remove_own_masks(group, group.node_ids[0], masked))
    assert np.max(np.abs(got[0] - update)) <= 1.75 * (2 * C / Q)
    benchmark.extra_info.update(prg_elements=(k + 1) * d, peak_rss_mib=_peak_rss_mib())
    record(items=d, unit="coordinates")


@pytest.mark.parametrize(
    ("num_shares", "threshold"), [(11, 6), (50, 25)], ids=["secagg+ k=10 t=6", "complete t=25"]
)
def test_bench_flower_server_unmasking(benchmark, record, data_rng, num_shares, threshold):
    n, d, dropped = 50, ONE_M, 5
    updates = data_rng.uniform(-1, 1, (n, d)).astype(np.float32)
    inputs = fb.flower_server_setup(
        n,
        d,
        num_shares=num_shares,
        threshold=threshold,
        num_dropped=dropped,
        updates=updates,
        seed=num_shares,
    )
    t0 = time.perf_counter()
    fb.flower_server_unmask(inputs, include_sum=False)
    unmask_only = time.perf_counter() - t0
    agg = benchmark.pedantic(fb.flower_server_unmask, args=(inputs,), rounds=3, iterations=1)
    assert np.array_equal(agg[0], inputs.live_aggregate[0])
    expected, bound = fb.flower_expected_average(
        updates, inputs.round.weights, inputs.round.survivors
    )
    _check_close(agg, expected, bound)
    benchmark.extra_info.update(unmask_only_s=unmask_only, peak_rss_mib=_peak_rss_mib())
    record(items=(n - dropped) * d, unit="masked coordinates")


def test_bench_flower_full_round(benchmark, record, data_rng):
    n, d = 50, ONE_M
    updates = data_rng.uniform(-1, 1, (n, d)).astype(np.float32)
    rnd = fb.flower_prepare_round(n, d, 0.1, num_shares=11, threshold=6, updates=updates, seed=1)
    res = benchmark.pedantic(fb.flower_run_round, args=(rnd,), rounds=2, iterations=1)
    assert len(res.dropped) == 5
    expected, bound = fb.flower_expected_average(updates, rnd.weights, res.survivors)
    _check_close(res.aggregate, expected, bound)
    benchmark.extra_info.update(peak_rss_mib=_peak_rss_mib())
    record(items=n * d, unit="client coordinates")


def test_aggregate_error_vs_flower_at_the_same_bit_budget(benchmark, record):
    """Same updates, weights and dropouts through Flower's SecAgg+ and securefl's, both
    in a 32-bit ring with clip range 8: securefl's error must be no worse."""
    from securefl.secagg.config import GraphKind, SecAggConfig
    from securefl.secagg.messages import Stage
    from securefl.transports.inmemory import run_session

    n, d = 20, 200_000
    data = np.random.default_rng(3)  # test data
    updates = [data.uniform(-1, 1, d).astype(np.float32) for _ in range(n)]
    weights = [int(w) for w in data.integers(50, 1001, n)]
    rnd = fb.flower_prepare_round(
        n, d, 0.1, num_shares=11, threshold=6, updates=updates, weights=weights, seed=3
    )
    flower = fb.flower_run_round(rnd)
    survivors = list(flower.survivors)

    config = SecAggConfig(
        num_clients=n,
        threshold=6,
        dimension=d,
        bits=32,
        clip=C,
        max_weight=int(W),
        graph=GraphKind.HARARY,
        degree=10,
    )
    schedule = dict.fromkeys(flower.dropped, Stage.MASKED_INPUT_COLLECTION)
    ours = benchmark.pedantic(
        run_session, (config, updates, weights), {"dropouts": schedule, "threads": 1}, rounds=1
    )
    assert list(ours.result.contributors) == survivors

    total = sum(weights[i] for i in survivors)
    plain = sum(weights[i] * updates[i].astype(np.float64) for i in survivors) / total
    flower_error = float(np.max(np.abs(np.asarray(flower.aggregate[0], np.float64) - plain)))
    our_error = float(np.max(np.abs(ours.result.weighted_mean - plain)))
    benchmark.extra_info.update(
        flower_max_abs_error=flower_error,
        securefl_max_abs_error=our_error,
        flower_upload_bytes_int64=8 * d,
        securefl_upload_bytes=max(ours.bytes_up.values()),
    )
    assert our_error <= flower_error
    record(items=n * d, unit="client coordinates")
