"""Flower's simulation engine (Ray backend, 5 supernodes) running securefl's SecAgg
through the adapter gives FedAvg's global model within the quantization bound, also
when a node drops in the middle of the protocol or fails in training."""

from __future__ import annotations

import gc
from typing import Any

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
    participants = {r: sim_app.participants_with_faults(r, NUM_NODES) for r in (1, 2, 3)}
    sim_app.check_models(strategy.reports, history, participants, max_weight=100)
    # Rounds 1 and 2: a node shared its keys, then failed: its masks were reconstructed.
    assert [len(r.dropped) for r in strategy.reports] == [1, 1, 0]
