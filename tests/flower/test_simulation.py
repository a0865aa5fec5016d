"""Flower's simulation engine (Ray backend, 5 supernodes) running securefl's SecAgg
through the adapter gives FedAvg's global model within the quantization bound, also
when a node drops in the middle of the protocol or fails in training."""

from __future__ import annotations

import gc
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from flower import sim_app
from securefl.secagg.messages import Stage
from securefl.transports.flower import SecAggFedAvg

NUM_NODES = 5
ROUNDS = 3


def _run(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    # Ray warns (FutureWarning) about a coming change of its GPU env-var handling
    # unless this opt-in is set; pytest turns warnings into errors.
    monkeypatch.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    monkeypatch.setenv("RAY_DEDUP_LOGS", "0")
    out: dict[str, Any] = {}
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = SecAggFedAvg(
            fraction_evaluate=0.0,
            min_train_nodes=NUM_NODES,
            min_available_nodes=NUM_NODES,
            clip=sim_app.CLIP,
            max_weight=100,
            round_timeout=60,
        )
        initial = ArrayRecord({k: Array(v) for k, v in sim_app.initial_arrays().items()})
        history = []

        def evaluate(server_round: int, arrays: ArrayRecord) -> None:
            history.append({k: a.numpy().copy() for k, a in arrays.items()})

        strategy.start(grid=grid, initial_arrays=initial, num_rounds=ROUNDS, evaluate_fn=evaluate)
        out["strategy"] = strategy
        out["history"] = history

    run_simulation(
        server_app=server,
        client_app=sim_app.make_client_app(),
        num_supernodes=NUM_NODES,
        # Two single-CPU actors: a node's protocol messages land on either one, so the
        # client state must survive in Context.state, as on a real SuperNode.
        backend_config={"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 2}},
    )
    # Ray's shutdown leaves Popen handles of its helper processes for the garbage
    # collector, whose ResourceWarning ("still running") would surface, as an
    # unraisable exception, after the session: collect them here, under this test's
    # filter.
    gc.collect()
    return out


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_secure_fedavg_matches_plaintext_with_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _run(monkeypatch)
    strategy: SecAggFedAvg = out["strategy"]
    history = out["history"]
    assert len(history) == ROUNDS + 1
    assert [r.stage for r in strategy.reports] == [Stage.COMPLETED] * ROUNDS
    expected_sets = {
        1: [p for p in range(NUM_NODES) if p != sim_app.DROP_PARTITION],
        2: [p for p in range(NUM_NODES) if p != sim_app.RAISE_PARTITION],
        3: list(range(NUM_NODES)),
    }
    node_counts = {1: (4, 1), 2: (4, 0), 3: (5, 0)}
    expected = {k: v.astype(np.float64) for k, v in sim_app.initial_arrays().items()}
    for server_round in range(1, ROUNDS + 1):
        report = strategy.reports[server_round - 1]
        assert (len(report.contributors), len(report.dropped)) == node_counts[server_round]
        parts = expected_sets[server_round]
        total = sum(sim_app.weight(p) for p in parts)
        assert report.total_weight == total
        assert report.config is not None
        mean = {
            k: sum(
                sim_app.weight(p)
                * np.clip(sim_app.update(p, server_round)[k], -sim_app.CLIP, sim_app.CLIP)
                for p in parts
            )
            / total
            for k in expected
        }
        expected = {
            k: (expected[k] + mean[k]).astype(np.float32).astype(np.float64) for k in expected
        }
        # Each client's n_u x_u / W is rounded to 2^-p; the mean's error is below
        # 2^-p |U3| W / N, plus the float32 rounding of the stored model.
        bound = 2.0**-report.config.fixed_point.frac_bits * len(parts) * 100 / total
        for k, value in history[server_round].items():
            assert value.dtype == np.float32
            err = np.max(np.abs(value.astype(np.float64) - expected[k]))
            assert err <= bound + 2 * np.finfo(np.float32).eps * np.max(np.abs(expected[k]))
        # The updates did move the model: the test can fail.
        assert not np.allclose(history[server_round]["w"], history[server_round - 1]["w"])
