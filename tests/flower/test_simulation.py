"""Flower's simulation engine (Ray backend, 5 supernodes) running securefl's SecAgg
through the adapter gives FedAvg's global model within the quantization bound, also
when a node drops in the middle of the protocol or fails in training; with a DP plan
(6 supernodes, SecAgg+), the plan's noisy mean."""

from __future__ import annotations

import gc
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Context
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from flower import sim_app
from securefl.dp import DPConfig, calibrate
from securefl.secagg.config import GraphKind
from securefl.secagg.messages import Stage
from securefl.transports.flower import ClientPolicy, SecAggFedAvg, make_secagg_mod

NUM_NODES = 5
ROUNDS = 3


def _run(
    monkeypatch: pytest.MonkeyPatch,
    *,
    nodes: int = NUM_NODES,
    client_app: ClientApp | None = None,
    shapes: sim_app.Shapes = sim_app.SHAPES,
    **strategy_options: Any,
) -> dict[str, Any]:
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
            min_train_nodes=nodes,
            min_available_nodes=nodes,
            clip=sim_app.CLIP,
            max_weight=100,
            round_timeout=60,
            **strategy_options,
        )
        initial = ArrayRecord({k: Array(v) for k, v in sim_app.initial_arrays(shapes).items()})
        history = []

        def evaluate(server_round: int, arrays: ArrayRecord) -> None:
            history.append({k: a.numpy().copy() for k, a in arrays.items()})

        strategy.start(grid=grid, initial_arrays=initial, num_rounds=ROUNDS, evaluate_fn=evaluate)
        out["strategy"] = strategy
        out["history"] = history

    run_simulation(
        server_app=server,
        client_app=client_app or sim_app.make_client_app(),
        num_supernodes=nodes,
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


DP_NODES = 6  # rates 0.2 / 0.1: SecAgg+ on a Harary graph, k = 4, t = 3
DP_SHAPES = {"w": (40, 25)}  # d = 1000 (padded to D = 1024): enough to measure a std


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_dp_secagg_plus_in_ray_simulation_gives_the_plans_noisy_mean(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DP-SecAgg+ in the Ray simulation: 6 supernodes, 3 rounds with sim_app's faults
    (rounds 1 and 2 each lose a node, leaving n_min = 5 survivors). Every round's model
    moves by the survivors' L2-clipped weighted mean plus noise whose std is the plan's:
    each survivor adds its share, client_noise_std per coordinate, so the mean's error
    has std client_noise_std sqrt(N) / (sum n_k / W) (plus rounding, far below it)."""
    d = math.prod(DP_SHAPES["w"])
    plan = calibrate(
        DPConfig(
            epsilon=10.0,
            delta=1e-5,
            clip=1.0,
            num_clients=DP_NODES,
            dropout_rate=0.2,
            rounds=ROUNDS,
            bits=20,
        ),
        d,
    )
    assert plan.config.min_survivors == DP_NODES - 1
    mod = make_secagg_mod(policy=ClientPolicy(dp=plan), threads=1)
    out = _run(
        monkeypatch,
        nodes=DP_NODES,
        client_app=sim_app.make_client_app(mod=mod),
        shapes=DP_SHAPES,
        dp=plan,
    )
    strategy: SecAggFedAvg = out["strategy"]
    assert [r.stage for r in strategy.reports] == [Stage.COMPLETED] * ROUNDS
    for report in strategy.reports:
        assert report.config is not None and report.config.ring_input
        assert report.config.graph is GraphKind.HARARY and report.config.degree == 4
    participants = {r: sim_app.participants_with_faults(r, DP_NODES) for r in (1, 2, 3)}
    assert [len(r.contributors) for r in strategy.reports] == [5, 5, 6]
    errors = sim_app.dp_errors(out["history"], participants, clip=1.0, max_weight=100)
    for server_round, (error, weight_sum) in errors.items():
        survivors = len(participants[server_round])
        noise = plan.client_noise_std * math.sqrt(survivors) / weight_sum
        rounding = plan.gamma / 2 * math.sqrt(survivors) / weight_sum
        assert rounding < 0.01 * noise  # the error is the noise, not the rounding
        spread = float(np.std(error))
        assert 0.85 * noise <= spread <= 1.15 * math.hypot(noise, rounding), (
            server_round,
            spread,
            noise,
        )
        assert np.max(np.abs(error)) <= 6 * math.hypot(noise, rounding)


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_ckks_fedavg_in_ray_simulation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """CKKS: 5 supernodes, 2 rounds, one node failing in round 2; the clients' key
    comes from a file on the "node" (only its path travels with the ClientApp)."""
    pytest.importorskip("tenseal")
    from securefl.ckks import ClientContext
    from securefl.transports.flower import (
        CKKSFedAvg,
        context_from_file,
        decrypt_arrays,
        make_ckks_mod,
    )

    monkeypatch.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    key = ClientContext.generate()
    path = tmp_path / "ckks-context.bin"
    path.write_bytes(key.to_bytes())
    client = ClientApp(mods=[make_ckks_mod(context_from_file(path))])
    client.train()(sim_app.train)
    history: list[ArrayRecord] = []
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = CKKSFedAvg(
            key.server_bytes(),
            fraction_evaluate=0.0,
            min_train_nodes=NUM_NODES,
            min_available_nodes=NUM_NODES,
        )
        initial = ArrayRecord({k: Array(v) for k, v in sim_app.initial_arrays().items()})
        strategy.start(
            grid=grid,
            initial_arrays=initial,
            num_rounds=2,
            evaluate_fn=lambda r, arrays: history.append(arrays),
        )

    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=NUM_NODES,
        backend_config={"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 2}},
    )
    gc.collect()
    assert len(history) == 3
    for server_round, parts in {1: list(range(NUM_NODES)), 2: [0, 1, 2, 3]}.items():
        before = decrypt_arrays(key, history[server_round - 1])
        after = decrypt_arrays(key, history[server_round])
        total = sum(sim_app.weight(p) for p in parts)
        for k, value in after.items():
            prev = before[k].numpy().astype(np.float64)
            expected = sum(
                sim_app.weight(p)
                * (prev + sim_app.update(p, server_round)[k]).astype(np.float32).astype(np.float64)
                for p in parts
            )
            assert np.max(np.abs(value.numpy() - expected / total)) < 1e-5
