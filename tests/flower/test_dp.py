"""Distributed DP over Flower, in-process (no Ray): SecAggFedAvg(dp=plan) with clients
holding ClientPolicy(dp=plan). Each client encodes its update with the plan (L2 clip,
weight, rotation, rounding and its share of the noise) into a ring-input SecAgg+
session; the strategy decodes the ring sum. The Ray simulation of the same, with noise,
is in test_simulation.py."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from flwr.app import Message

from flower import sim_app
from securefl.dp import DPConfig, DPPlan, calibrate
from securefl.secagg import codec
from securefl.secagg.config import GraphKind, SecAggConfig
from securefl.secagg.messages import MaskedInput, Stage
from securefl.transports.flower import RECORD_KEY, ClientPolicy, SecAggFedAvg, make_secagg_mod
from securefl.transports.flower.local_grid import Intercept, LocalGrid, task_identity
from securefl.transports.flower.mod import STATE_KEY

NODES = 6  # n = 6 at rates 0.2 / 0.1: SecAgg+ on a Harary graph, k = 4, t = 3
MAX_WEIGHT = 100
SHAPES = {"w": (3, 4), "b": (5,)}  # d = 17, padded to D = 32 by the rotation
D = 17
CLIP = 1.0  # L2, of the whole update: every test update is longer, so all are clipped


@pytest.fixture(autouse=True)
def _identity() -> Iterator[None]:
    with task_identity():
        yield


@pytest.fixture(scope="module")
def exact_plan() -> DPPlan:
    """No noise (epsilon = inf): the pipeline's only error is its rounding."""
    config = DPConfig(
        epsilon=math.inf, delta=1e-5, clip=CLIP, num_clients=NODES, dropout_rate=0.2, bits=32
    )
    return calibrate(config, D)


def run(
    plan: DPPlan,
    rounds: int,
    *,
    faults: bool = False,
    nodes: int = NODES,
    shapes: dict[str, tuple[int, ...]] = SHAPES,
    intercept: Intercept | None = None,
    policy: ClientPolicy | None = None,
    **options: Any,
) -> tuple[SecAggFedAvg, list[dict[str, np.ndarray]], LocalGrid]:
    mod = make_secagg_mod(policy=policy or ClientPolicy(dp=plan))
    grid = LocalGrid.for_app(sim_app.make_client_app(faults=faults, mod=mod), nodes, intercept)
    strategy = SecAggFedAvg(
        fraction_evaluate=0.0,
        min_train_nodes=nodes,
        min_available_nodes=nodes,
        max_weight=MAX_WEIGHT,
        dp=plan,
        **options,
    )
    return strategy, sim_app.start(strategy, grid, rounds, shapes=shapes, faults=faults), grid


def test_dp_secagg_plus_without_noise_gives_the_encodings_exact_decoding(
    exact_plan: DPPlan,
) -> None:
    """Three rounds with the faults of sim_app (round 1: a node lost after sharing its
    keys; round 2: a node's training fails), keys prefetched: every round's model moves
    by the weighted mean of the survivors' L2-clipped updates, within the rounding bound
    of the DP encoding (each client's rounding error is at most error_bound integer
    steps in L2, so the sum's is at most N gamma error_bound) plus float32 storage."""
    strategy, history, grid = run(exact_plan, 3, faults=True)
    assert grid.exchanges == 4 + 3 + 3  # prefetching works for the padded dimension too
    assert [r.stage for r in strategy.reports] == [Stage.COMPLETED] * 3
    for report in strategy.reports:
        assert report.config is not None and report.config.ring_input
        assert report.config.graph is GraphKind.HARARY and report.config.degree == 4
        assert report.config.dimension == exact_plan.padded_dimension == 32
        assert report.config.min_survivors == exact_plan.config.min_survivors == 5
    participants = {r: sim_app.participants_with_faults(r, NODES) for r in (1, 2, 3)}
    errors = sim_app.dp_errors(history, participants, clip=CLIP, max_weight=MAX_WEIGHT)
    for server_round, (error, weight_sum) in errors.items():
        parts = participants[server_round]
        assert strategy.reports[server_round - 1].total_weight == sum(
            sim_app.weight(p) for p in parts
        )
        rounding = exact_plan.gamma * len(parts) * exact_plan.error_bound / weight_sum
        ulp = max(
            float(np.spacing(np.float32(np.abs(v).max()))) for v in history[server_round].values()
        )
        assert np.max(np.abs(error)) <= rounding + 2 * ulp, (server_round, error)
        # The clipped mean is far from the unclipped one: this check can fail.
        assert not np.allclose(history[server_round]["w"], history[server_round - 1]["w"])
    assert not any(
        k.startswith(STATE_KEY) for c in grid.contexts.values() for k in c.state.config_records
    )


def test_a_dp_round_with_fewer_survivors_than_the_plan_is_never_unmasked(
    exact_plan: DPPlan,
) -> None:
    """Two of six nodes are lost before their masked input: SecAgg+ (t = 3) could unmask
    the other four, but the noise is calibrated for n_min = 5 survivors, so the session
    aborts before any Unmasking request; the global model is kept."""
    unmasked: list[int] = []

    def drop(node: int, reply: Message) -> Message | None:
        if reply.has_error():
            return reply
        kind = type(codec.decode(reply.content[RECORD_KEY]["message"]))  # type: ignore[arg-type]
        if kind is MaskedInput and node - 1000 < 2:
            return None
        if kind.__name__ == "UnmaskingResponse":
            unmasked.append(node)
        return reply

    strategy, history, grid = run(exact_plan, 1, intercept=drop)
    (report,) = strategy.reports
    assert report.stage is Stage.ABORTED
    assert "min_survivors=5" in (report.abort_reason or ""), report.abort_reason
    assert unmasked == []
    for k, v in history[1].items():
        np.testing.assert_array_equal(v, history[0][k])
    assert not any(
        k.startswith(STATE_KEY) for c in grid.contexts.values() for k in c.state.config_records
    )


def test_the_strategy_opens_no_session_the_plan_does_not_fit(exact_plan: DPPlan) -> None:
    """A model of another size, more nodes than the plan's n, or a factory whose session
    would not carry the plan: the round is skipped with the reason, nothing is sent."""
    float_session = lambda n, d: SecAggConfig(n, 3, d, max_weight=MAX_WEIGHT)  # noqa: E731
    cases = [
        ({"shapes": {"w": (4, 4)}}, "the model has d=16 parameters, the DP plan is for d=17"),
        ({"nodes": NODES + 1}, "7 nodes sampled, the DP plan needs between n_min=5 and n=6"),
        (
            {"config_factory": float_session},
            "the session cannot carry the DP plan: differential privacy needs a ring_input",
        ),
    ]
    for options, reason in cases:
        strategy, history, grid = run(exact_plan, 1, **options)
        (report,) = strategy.reports
        assert report.stage is Stage.ABORTED and reason in (report.abort_reason or "")
        assert grid.exchanges == 0
        for k, v in history[1].items():
            np.testing.assert_array_equal(v, history[0][k])


def test_clients_with_another_plan_refuse_the_session(exact_plan: DPPlan) -> None:
    """The plan is agreed by digest: clients holding another plan (here: another
    epsilon) refuse at SessionStart, before any work, naming both digests."""
    other = calibrate(
        DPConfig(epsilon=8.0, delta=1e-5, clip=CLIP, num_clients=NODES, dropout_rate=0.2), D
    )
    strategy, _, _ = run(exact_plan, 1, policy=ClientPolicy(dp=other))
    (report,) = strategy.reports
    assert report.stage is Stage.ABORTED
    assert len(report.rejections) >= NODES
    reason = (
        f"dp-plan: the server's plan digest {exact_plan.digest().hex()[:16]}, this client's "
        f"{other.digest().hex()[:16]}"
    )
    assert all(reason in r.reason for r in report.rejections[:NODES])
