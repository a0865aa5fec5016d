"""SecAgg / SecAgg+ benchmarks (issue 3 scenarios); Flower's side is in
test_flower_baseline.py and runs on the same inputs in the same session.

Each benchmark checks its result: masked vectors unmask to the plain weighted mean
within the quantization step.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from protocol.harness import Session

from securefl.encoding import FixedPointEncoder, decoded
from securefl.secagg.config import GraphKind, SecAggConfig
from securefl.secagg.messages import Stage
from securefl.testing.drbg import Drbg
from securefl.transports.inmemory import run_session


def bench_config(n: int, d: int, *, k: int | None, t: int) -> SecAggConfig:
    graph = GraphKind.COMPLETE if k is None or k >= n - 1 else GraphKind.HARARY
    return SecAggConfig(
        num_clients=n,
        threshold=t,
        dimension=d,
        bits=32,
        clip=1.0,
        max_weight=1000,
        graph=graph,
        degree=None if graph is GraphKind.COMPLETE else k,
    )


def shared_updates(n: int, d: int) -> tuple[list[np.ndarray], list[int]]:
    data = np.random.default_rng(0)  # benchmark data, not masks
    base = data.normal(0.0, 0.2, d).astype(np.float32)
    # Distinct, cheap updates: one array scaled per client keeps memory at O(d) per client.
    return [base * np.float32(1 + i / n) for i in range(n)], [100 + i for i in range(n)]


def error_bound(config: SecAggConfig, result) -> float:
    """Each client's n_u x_u / W is off by < 2^-p; the mean scales that by W |U3| / N."""
    m = len(result.contributors)
    return config.fixed_point.precision * m * config.max_weight / result.total_weight


def clipped_mean(updates, weights, survivors, clip: float) -> np.ndarray:
    total = sum(weights[i] * np.clip(updates[i].astype(np.float64), -clip, clip) for i in survivors)
    return total / sum(weights[i] for i in survivors)


@pytest.mark.parametrize(
    "d,k", [(1_000_000, 10), (10_000_000, 50)], ids=["d=1M,k=10", "d=10M,k=50"]
)
def test_bench_securefl_client_masking(benchmark, record, d: int, k: int) -> None:
    """One client's MaskedInputCollection: decrypt k share ciphertexts, agree k mask
    seeds, quantize, weight and mask its d-vector (threads=1, like Flower's client)."""
    n = k + 1
    config = bench_config(n, d, k=None, t=k // 2 + 1)
    data = np.random.default_rng(1)
    update = data.normal(0.0, 0.2, d).astype(np.float32)
    state = {}

    def setup():
        # Client 0 holds the benchmark vector (the others never reach masking).
        session = Session.create(config, n, seed="client-bench", updates={0: update}, threads=1)
        session.round()
        session.round()
        state["session"] = session
        return (session.inbox[0],), {}

    def masked_input(message):
        return state["session"].clients[0].handle(message)

    reply = benchmark.pedantic(masked_input, setup=setup, rounds=3 if d > 1e6 else 5)
    assert reply.vector.shape == (d + 1,)
    # The mask hides the update: the masked vector is uniform, not the encoding.
    assert abs(float(np.mean(reply.vector[:100_000] / 2**32)) - 0.5) < 0.01
    record(items=d * (k + 1), unit="mask elements")


@pytest.mark.parametrize("k,t", [(10, 6), (None, 25)], ids=["secagg+ k=10 t=6", "complete t=25"])
def test_bench_securefl_server_unmasking(benchmark, record, k, t) -> None:
    """Server Unmasking, n = 50, d = 1M, 5 clients dropped after ShareKeys:
    reconstruct 45 self-mask seeds and 5 keys, remove every mask, decode."""
    n, d = 50, 1_000_000
    config = bench_config(n, d, k=k, t=t)
    updates, weights = shared_updates(n, d)
    dropped = {5, 15, 25, 35, 45}
    state = {}

    def setup():
        session = Session.create(
            config,
            n,
            seed="server-bench",
            updates=dict(enumerate(updates)),
            weights=dict(enumerate(weights)),
        )
        session.round()
        session.round()
        session.round(skip=dropped)  # masked inputs; 5 dropped
        replies = session.deliver()
        for cid, reply in replies.items():
            session.server.receive(cid, reply)
        state["server"] = session.server
        return (), {}

    encoder = FixedPointEncoder.for_config(config)

    def unmask():
        # Unmasking and the decoding of the ring sum into the mean (the server did both
        # before the encoders were split from SecAgg).
        state["server"].close_round()
        state["result"] = decoded(state["server"].result, encoder)

    benchmark.pedantic(unmask, setup=setup, rounds=3)
    result = state["result"]
    assert result is not None and len(result.contributors) == 45
    survivors = result.contributors
    plain = clipped_mean(updates, weights, survivors, config.clip)
    assert np.max(np.abs(result.weighted_mean - plain)) <= error_bound(config, result)
    record(items=d, unit="coordinates")


def test_bench_securefl_full_round(benchmark, record) -> None:
    """One full SecAgg+ round in-process (clients one after another, each with one
    thread), n = 50, d = 1M, k = 10, t = 6, 10% of clients dropped after ShareKeys."""
    n, d = 50, 1_000_000
    config = bench_config(n, d, k=10, t=6)
    updates, weights = shared_updates(n, d)
    schedule = dict.fromkeys(range(0, n, 10), Stage.MASKED_INPUT_COLLECTION)

    report = benchmark.pedantic(
        run_session,
        (config, updates, weights),
        {"dropouts": schedule, "rng": Drbg("full"), "threads": 1},
        rounds=3,
    )
    assert report.stage is Stage.COMPLETED
    survivors = report.result.contributors
    assert len(survivors) == 45
    plain = clipped_mean(updates, weights, survivors, config.clip)
    err = float(np.max(np.abs(report.result.weighted_mean - plain)))
    assert err <= error_bound(config, report.result)
    upload = max(report.bytes_up.values())
    benchmark.extra_info["max_abs_error"] = err
    benchmark.extra_info["upload_bytes_per_client"] = upload
    benchmark.extra_info["upload_ratio_to_d_b_over_8"] = upload / (d * config.bits / 8)
    record(items=n * d, unit="client coordinates")


def test_securefl_full_round_server_memory(record, benchmark) -> None:
    """Peak server heap growth over a full round with clients in 2 worker processes."""
    n, d = 50, 1_000_000
    config = bench_config(n, d, k=10, t=6)
    updates, weights = shared_updates(n, d)
    schedule = dict.fromkeys(range(0, n, 10), Stage.MASKED_INPUT_COLLECTION)
    report = benchmark.pedantic(
        run_session,
        (config, updates, weights),
        {
            "dropouts": schedule,
            "processes": 2,
            "seed": b"mem",
            "threads": 1,
            "measure_memory": True,
        },
        rounds=1,
    )
    assert report.stage is Stage.COMPLETED
    benchmark.extra_info["server_peak_bytes"] = report.server_peak_bytes
    benchmark.extra_info["server_peak_over_8d"] = report.server_peak_bytes / (8 * d)
    assert report.server_peak_bytes < 4 * d * 8
    record(items=n * d, unit="client coordinates")
