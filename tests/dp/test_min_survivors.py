"""SecAgg never unmasks a DP sum of fewer than the plan's n_min survivors.

The noise is calibrated for n_min survivors; a sum of fewer carries less noise than
promised. Refusing it in ``decode_aggregate`` would be too late (the server would
already hold the unmasked sum), so the minimum is a SecAgg parameter checked by the
server before unmasking and by clients before revealing shares.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from protocol.harness import Session

import securefl
from securefl import dp as dpmod
from securefl.api import _graph_options
from securefl.errors import ConfigError, ProtocolAbort
from securefl.secagg.config import SecAggConfig
from securefl.secagg.messages import ConsistencyRequest, Stage, UnmaskingRequest
from securefl.testing.drbg import Drbg
from securefl.transports.inmemory import SessionReport, run_session

D = 8


def plan_for(n: int, dropout_rate: float) -> dpmod.DPPlan:
    cfg = dpmod.DPConfig(
        epsilon=4, delta=1e-5, clip=1.0, num_clients=n, dropout_rate=dropout_rate, bits=20
    )
    return dpmod.calibrate(cfg, D)


def run_dp_session(plan: dpmod.DPPlan, round_seed: bytes, dropped: int) -> SessionReport:
    """The plan's SecAgg session (complete graph, default t); ``dropped`` vanishes
    before sending its masked input."""
    n = plan.config.num_clients
    config = dpmod.secagg_config(plan, **_graph_options("secagg", n, None, None))
    ring = [
        dpmod.encode_update(
            np.full(D, 0.3),
            plan,
            round_seed=round_seed,
            secret=bytes([i + 1]) * 32,
            session=round_seed,
            client_id=i,
        ).ring
        for i in range(n)
    ]
    dropouts = {dropped: Stage.MASKED_INPUT_COLLECTION}
    return run_session(config, ring, [1] * n, dropouts=dropouts, rng=Drbg(round_seed))


def test_min_survivors_is_validated_and_digested_only_when_set() -> None:
    base = SecAggConfig(num_clients=4, threshold=2, dimension=8)
    assert SecAggConfig(num_clients=4, threshold=2, dimension=8, min_survivors=None).digest() == (
        base.digest()
    )
    three = SecAggConfig(num_clients=4, threshold=2, dimension=8, min_survivors=3)
    four = SecAggConfig(num_clients=4, threshold=2, dimension=8, min_survivors=4)
    assert len({base.digest(), three.digest(), four.digest()}) == 3
    for bad in (0, 5, 2.5, True):
        with pytest.raises(ConfigError, match="min_survivors"):
            SecAggConfig(num_clients=4, threshold=2, dimension=8, min_survivors=bad)  # type: ignore[arg-type]


def test_secagg_config_takes_the_minimum_from_the_plan() -> None:
    plan = plan_for(4, 0.0)
    assert dpmod.secagg_config(plan, threshold=2).min_survivors == 4
    assert dpmod.secagg_config(plan, threshold=2, min_survivors=4).min_survivors == 4
    with pytest.raises(ConfigError, match="min_survivors comes from the DP plan"):
        dpmod.secagg_config(plan, threshold=2, min_survivors=3)


def test_a_dropout_below_n_min_aborts_before_unmasking() -> None:
    # n = 4, no dropout tolerated (n_min = 4), t = 2: one client drops before its
    # masked input. Formerly the session completed with 3 contributors' ring sum.
    plan = plan_for(4, 0.0)
    assert plan.config.min_survivors == 4
    assert _graph_options("secagg", 4, None, None)["threshold"] == 2
    report = run_dp_session(plan, b"r" * 32, dropped=3)
    assert report.result is None
    assert report.stage is Stage.ABORTED
    assert "min_survivors=4" in (report.abort_reason or "")
    # No live client reached Unmasking: none revealed a share.
    assert [report.client_stages[i] for i in range(3)] == [Stage.ABORTED] * 3


def test_aggregate_with_dp_aborts_below_n_min() -> None:
    xs = [np.full(D, 0.3) for _ in range(4)]
    cfg = dpmod.DPConfig(epsilon=4, delta=1e-5, clip=1.0, num_clients=4, bits=20)
    with pytest.raises(ProtocolAbort, match="min_survivors=4"):
        securefl.aggregate(
            xs,
            protocol="secagg",
            dp=cfg,
            dropouts={3: Stage.MASKED_INPUT_COLLECTION},
            rng=Drbg("aggregate-min"),
        )


def test_exactly_n_min_survivors_complete() -> None:
    plan = plan_for(5, 0.2)
    assert plan.config.min_survivors == 4
    rs = b"s" * 32
    report = run_dp_session(plan, rs, dropped=4)
    assert report.result is not None and report.result.ring_sum is not None
    assert report.result.contributors == (0, 1, 2, 3)
    decoded = dpmod.decode_aggregate(report.result.ring_sum, plan, round_seed=rs, survivors=4)
    assert decoded.survivors == 4
    assert decoded.noisy_sum.shape == (D,)


def minimum_config(n: int, *, authenticated: bool = False) -> SecAggConfig:
    return SecAggConfig(
        num_clients=n,
        threshold=3,
        dimension=12,
        max_weight=10,
        authenticated=authenticated,
        min_survivors=5,
    )


def test_client_refuses_an_unmasking_request_with_too_few_survivors() -> None:
    # A server that ignores the minimum: client 0 is told only 1..3 survived (4 with
    # itself < 5) and must reveal nothing.
    config = minimum_config(6)
    session = Session.create(config, 6, seed="client-min")
    session.run_until(Stage.MASKED_INPUT_COLLECTION)
    session.round()
    assert session.server.stage is Stage.UNMASKING
    honest = session.inbox[0]
    assert honest.survivors == (1, 2, 3, 4, 5)
    forged = UnmaskingRequest(survivors=(1, 2, 3), dropped=(4, 5))
    assert session.clients[0].handle(forged) is None
    assert session.clients[0].stage is Stage.ABORTED
    assert "min_survivors=5" in (session.clients[0].abort_reason or "")
    # Exactly the minimum (4 others and itself) is answered.
    exact = UnmaskingRequest(survivors=(2, 3, 4, 5), dropped=(0,))
    response = session.clients[1].handle(exact)
    assert response is not None
    assert [i for i, _ in response.self_mask_shares] == [2, 3, 4, 5]


def test_authenticated_client_refuses_to_sign_or_unmask_too_few_survivors() -> None:
    n = 6
    config = minimum_config(n, authenticated=True)
    session = Session.create_authenticated(config, n, seed="auth-min")
    clients = session.clients
    session.run_until(Stage.CONSISTENCY_CHECK)
    # Asked to sign a survivor set of 4 < 5: it signs nothing.
    assert clients[0].handle(ConsistencyRequest((0, 1, 2, 3))) is None
    assert clients[0].stage is Stage.ABORTED
    assert "min_survivors=5" in (clients[0].abort_reason or "")
    # The signed global set is what an authenticated client counts at Unmasking.
    session.round(skip={0})
    request = session.inbox[1]
    assert request.all_survivors == tuple(range(n))
    shrunk = dataclasses.replace(request, all_survivors=(1, 2, 3, 4))
    assert clients[1].handle(shrunk) is None
    assert clients[1].stage is Stage.ABORTED


def test_server_aborts_before_any_unmasking_request() -> None:
    config = minimum_config(6)
    session = Session.create(config, 6, seed="server-min")
    session.run_until(Stage.MASKED_INPUT_COLLECTION)
    session.round(skip={4, 5})  # 4 masked inputs: enough for t + 1 = 4, not for 5
    assert session.server.stage is Stage.ABORTED
    assert session.server.result is None
    assert session.server.abort_reason == (
        "only 4 clients sent masked inputs; the session needs at least "
        "min_survivors=5 before its sum may be unmasked"
    )
    assert all(type(m).__name__ == "Abort" for m in session.inbox.values())
