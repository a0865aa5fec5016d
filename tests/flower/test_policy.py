"""The client's own policy (ClientPolicy) against the ServerApp's choice of parameters.

The ServerApp chooses every parameter of a session; the client mod checks them against
its local policy before it does any work, and a session below the policy gets an error
reply that names the parameter with the server's and the client's values. Each
parameter is tested end to end (SecAggFedAvg through the in-process grid): a ServerApp
just below the policy is refused by every client, and one at the policy completes with
FedAvg's model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from flower import sim_app
from securefl.dp import DPConfig, DPPlan, calibrate, secagg_config
from securefl.errors import ConfigError
from securefl.secagg import codec
from securefl.secagg.config import GraphKind, SecAggConfig
from securefl.secagg.messages import AdvertiseKeys, SessionStart, Stage
from securefl.secagg.parameters import ThreatModel
from securefl.transports.flower import (
    ERROR_CODE,
    ClientPolicy,
    SecAggFedAvg,
    make_secagg_mod,
    secagg_mod,
)
from securefl.transports.flower.local_grid import LocalGrid, task_identity
from securefl.transports.flower.mod import STATE_KEY
from securefl.transports.flower.records import Envelope, pack_config, write_envelope

NODES = 5
D = sum(math.prod(s) for s in sim_app.SHAPES.values())  # 16 model parameters
MAX_WEIGHT = 100


@pytest.fixture(autouse=True)
def _identity() -> Iterator[None]:
    with task_identity():
        yield


def config(n: int, d: int, threshold: int, **fields: Any) -> SecAggConfig:
    """A float session of the test model (clip and W as the strategy's below)."""
    fields.setdefault("corruption_rate", 0.1)
    return SecAggConfig(
        num_clients=n,
        threshold=threshold,
        dimension=d,
        clip=sim_app.CLIP,
        max_weight=MAX_WEIGHT,
        **fields,
    )


Factory = Callable[[int, int], SecAggConfig]


def run(
    policy: ClientPolicy, factory: Factory | None = None, *, nodes: int = NODES, **options: Any
) -> tuple[SecAggFedAvg, list[dict[str, np.ndarray]], LocalGrid]:
    """One FL round of SecAggFedAvg against clients holding ``policy``."""
    app = sim_app.make_client_app(faults=False, mod=make_secagg_mod(policy=policy))
    grid = LocalGrid.for_app(app, nodes)
    strategy = sim_app.strategy(nodes, MAX_WEIGHT, config_factory=factory, **options)
    return strategy, sim_app.start(strategy, grid, 1), grid


def assert_refused(
    strategy: SecAggFedAvg, history: list[dict[str, np.ndarray]], grid: LocalGrid, reason: str
) -> None:
    """Every node refused the session with ``reason``; nothing was aggregated and no
    node kept session state."""
    (report,) = strategy.reports
    assert report.stage is Stage.ABORTED
    refusals = [r for r in report.rejections if r.stage is Stage.ADVERTISE_KEYS]
    assert sorted(r.sender for r in refusals) == list(range(len(grid.contexts)))
    for rejection in refusals:
        assert f"refused session: {reason}" in rejection.reason, rejection.reason
    for k, v in history[1].items():
        np.testing.assert_array_equal(v, history[0][k])
    for context in grid.contexts.values():
        assert not [k for k in context.state.config_records if k.startswith(STATE_KEY)]


# Each case: the client's policy, a server at the policy (it completes), a server just
# below it (every client refuses), and the reason the refusal must give.
CASES = {
    "threshold": (
        ClientPolicy(min_threshold=4),
        lambda n, d: config(n, d, 4),
        lambda n, d: config(n, d, 3),
        "threshold: the server's t=3, this client's minimum t=4 (min_threshold)",
    ),
    # gamma = 0.2 of 5 clients: c = 1, and 2t > k + c = 5 needs t = 3; at gamma = 0.1,
    # c = 0 would let t = 3 pass SecAggConfig's rules with room to spare.
    "corruption_rate": (
        ClientPolicy(min_corruption_rate=0.2),
        lambda n, d: config(n, d, 3, corruption_rate=0.2),
        lambda n, d: config(n, d, 3, corruption_rate=0.1),
        "corruption_rate: the server's 0.1, this client's minimum 0.2 (min_corruption_rate)",
    ),
    # SecAgg+ (Harary, k = 2): c is a tail bound at 2^-sigma.
    "security_bits": (
        ClientPolicy(min_security_bits=40),
        lambda n, d: config(n, d, 2, graph=GraphKind.HARARY, degree=2, security_bits=40),
        lambda n, d: config(n, d, 2, graph=GraphKind.HARARY, degree=2, security_bits=39),
        "security_bits: the server's sigma=39, this client's minimum sigma=40",
    ),
    # The finding: t = 2 of k = 4 is a valid SecAggConfig without authentication, and
    # a server that lies about dropouts gets 2 self-mask and 2 key shares of a client.
    "lying about dropouts": (
        ClientPolicy(),
        lambda n, d: config(n, d, 3),
        lambda n, d: config(n, d, 2),
        "threshold: the server's t=2, this client needs t >= 3 against a server that lies "
        "about dropouts (2t > k + c with k=4, c=0; threat_model=semi-malicious)",
    ),
    "dimension": (
        ClientPolicy(max_dimension=D),
        lambda n, d: config(n, d, 3),
        lambda n, d: config(n, d + 1, 3),  # a server asking for more memory than needed
        f"dimension: the server's d={D + 1}, this client's maximum {D} (max_dimension)",
    ),
    "min_survivors": (
        ClientPolicy(min_survivors=5),
        lambda n, d: config(n, d, 3, min_survivors=5),
        lambda n, d: config(n, d, 3, min_survivors=4),
        "min_survivors: the server's 4, this client's minimum 5",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_server_app_below_the_clients_policy_is_refused_and_one_at_it_works(case: str) -> None:
    policy, at, below, reason = CASES[case]
    strategy, history, grid = run(policy, below)
    assert_refused(strategy, history, grid, reason)
    strategy, history, _ = run(policy, at)
    assert strategy.reports[0].stage is Stage.COMPLETED
    sim_app.check_models(strategy.reports, history, {1: list(range(NODES))}, MAX_WEIGHT)


def test_authenticated_mode_is_refused_by_both_sides() -> None:
    """The adapter provisions no identity keys: the mod refuses an authenticated session
    (a deviating server's SessionStart) and SecAggFedAvg skips a round whose factory asks
    for one, with the reason, instead of failing."""
    authenticated = config(NODES, D, 3, authenticated=True)
    reason, context = answer(ClientPolicy(), start(authenticated))
    assert reason is not None and (
        "refused session: authenticated: the server asks for authenticated mode, which needs "
        "enrolled identity keys; the Flower adapter provisions none" in reason
    )
    assert not context.state.config_records
    strategy, history, grid = run(ClientPolicy(), lambda n, d: config(n, d, 3, authenticated=True))
    (report,) = strategy.reports
    assert report.stage is Stage.ABORTED and grid.exchanges == 0
    assert "authenticated mode needs enrolled identity keys" in (report.abort_reason or "")
    for k, v in history[1].items():
        np.testing.assert_array_equal(v, history[0][k])


def test_a_semi_honest_policy_accepts_what_the_default_refuses() -> None:
    """t = 2 of k = 4 is refused by default (above), accepted by a client that trusts
    the server to report dropouts truthfully: the rule is the client's choice."""
    weak: Factory = lambda n, d: config(n, d, 2)  # noqa: E731
    strategy, history, _ = run(ClientPolicy(threat_model=ThreatModel.SEMI_HONEST), weak)
    sim_app.check_models(strategy.reports, history, {1: list(range(NODES))}, MAX_WEIGHT)


def test_the_default_server_satisfies_the_default_policy() -> None:
    """SecAggFedAvg's defaults (rates 0.2 / 0.1, semi-malicious chooser) against
    secagg_mod's: the pair a user gets without choosing anything works."""
    for nodes in (3, 4, 5, 6, 10):
        app = sim_app.make_client_app(faults=False, mod=secagg_mod)
        strategy = SecAggFedAvg(
            fraction_evaluate=0.0, min_train_nodes=nodes, min_available_nodes=nodes
        )
        strategy.start(
            grid=LocalGrid.for_app(app, nodes),
            initial_arrays=ArrayRecord({k: Array(v) for k, v in sim_app.initial_arrays().items()}),
            num_rounds=1,
        )
        assert strategy.reports[0].stage is Stage.COMPLETED, (nodes, strategy.reports[0])


# ---- the mod alone, against a deviating server's SessionStart ---------------------------


@pytest.fixture(scope="module")
def plan() -> DPPlan:
    return calibrate(
        DPConfig(epsilon=10.0, delta=1e-5, clip=1.0, num_clients=6, dropout_rate=0.2), D
    )


def start(config: SecAggConfig, digest: bytes | None = None) -> Message:
    content = RecordDict()
    start = codec.encode(SessionStart(bytes(32), config.digest()))
    write_envelope(content, Envelope(b"s" * 16, start, 0, pack_config(config), digest))
    return Message(content, dst_node_id=7, message_type=MessageType.TRAIN)


def answer(policy: ClientPolicy, message: Message) -> tuple[str | None, Context]:
    """The mod's error reason for ``message`` (``None``: it answered AdvertiseKeys)."""
    context = Context(
        run_id=1, node_id=7, node_config={"partition-id": 0}, state=RecordDict(), run_config={}
    )

    def never(msg: Message, context: Context) -> Message:
        raise AssertionError("the user's train function must not run")

    reply = make_secagg_mod(policy=policy)(message, context, never)
    if reply.has_error():
        assert reply.error.code == ERROR_CODE
        return reply.error.reason, context
    record = reply.content.config_records["securefl"]
    assert isinstance(codec.decode(record["message"]), AdvertiseKeys)  # type: ignore[arg-type]
    return None, context


def dp_session(plan: DPPlan, **options: Any) -> SecAggConfig:
    fields = {"threshold": 3, "max_weight": MAX_WEIGHT, "corruption_rate": 0.1}
    return secagg_config(plan, **{**fields, **options})


def test_the_mod_refuses_dp_sessions_that_are_not_its_plan(plan: DPPlan) -> None:
    """DP is all or nothing and the plan must be the client's own, by digest; a DP
    session's min_survivors must be at least the plan's n_min (a deviating server could
    send a config that does not carry it: its own strategy would not build one)."""
    mine = ClientPolicy(dp=plan)
    session = dp_session(plan)
    assert answer(mine, start(session, plan.digest()))[0] is None
    other = calibrate(DPConfig(epsilon=9.0, delta=1e-5, clip=1.0, num_clients=6), D)
    cases = [
        (mine, start(config(6, D, 4)), "dp: this client requires differential privacy"),
        (ClientPolicy(), start(session, plan.digest()), "dp: the server's session is "),
        (mine, start(session), "dp-plan: the server's plan digest none, this client's "),
        (
            mine,
            start(session, other.digest()),
            f"dp-plan: the server's plan digest {other.digest().hex()[:16]}, this client's "
            f"{plan.digest().hex()[:16]}",
        ),
    ]
    n_min = plan.config.min_survivors
    # A ring-input session whose min_survivors is below n_min: SecAgg would unmask a sum
    # with less noise than the plan promises.
    lax = SecAggConfig(
        num_clients=6,
        threshold=4,
        dimension=plan.padded_dimension,
        bits=plan.config.bits,
        max_weight=MAX_WEIGHT,
        ring_input=True,
        min_survivors=n_min - 1,
        corruption_rate=0.1,
    )
    cases.append(
        (
            mine,
            start(lax, plan.digest()),
            f"min_survivors: the server's {n_min - 1}, this client's minimum {n_min}",
        )
    )
    wider = SecAggConfig(
        num_clients=7,
        threshold=4,
        dimension=plan.padded_dimension,
        bits=plan.config.bits,
        max_weight=MAX_WEIGHT,
        ring_input=True,
        min_survivors=n_min,
        corruption_rate=0.1,
    )
    cases.append(
        (
            mine,
            start(wider, plan.digest()),
            "dp: num_clients: the configuration has 7, the DP plan 6",
        )
    )
    for policy, message, reason in cases:
        got, context = answer(policy, message)
        assert got is not None and f"refused session: {reason}" in got, (reason, got)
        assert not context.state.config_records


def test_policy_values_are_checked() -> None:
    for bad, name in [
        ({"min_threshold": 1}, "min_threshold"),
        ({"min_threshold": True}, "min_threshold"),
        ({"min_corruption_rate": 1.0}, "min_corruption_rate"),
        ({"min_corruption_rate": -0.1}, "min_corruption_rate"),
        ({"min_security_bits": 0}, "min_security_bits"),
        ({"max_dimension": 0}, "max_dimension"),
        ({"threat_model": "semi-honest"}, "threat_model"),
        ({"dp": "plan"}, "dp"),
        ({"min_survivors": 0}, "min_survivors"),
    ]:
        with pytest.raises(ConfigError, match=name):
            ClientPolicy(**bad)
    with pytest.raises(ConfigError, match="policy"):
        make_secagg_mod(policy={"min_threshold": 3})  # type: ignore[arg-type]


def test_a_dp_policy_cannot_lower_the_plans_minimum_of_survivors(plan: DPPlan) -> None:
    n_min = plan.config.min_survivors
    with pytest.raises(ConfigError, match=f"n_min={n_min}"):
        ClientPolicy(dp=plan, min_survivors=n_min - 1)
    assert ClientPolicy(dp=plan).survivors_floor == n_min
    assert ClientPolicy(dp=plan, min_survivors=n_min + 1).survivors_floor == n_min + 1
    assert ClientPolicy().survivors_floor is None


def test_pass_through_messages_are_untouched_by_the_policy() -> None:
    """Messages without securefl's record reach the user's function whatever the policy."""
    seen = []

    def evaluate(msg: Message, context: Context) -> Message:
        seen.append(msg.metadata.message_type)
        return Message(RecordDict({"ok": ConfigRecord({"ok": True})}), reply_to=msg)

    mod = make_secagg_mod(policy=ClientPolicy(min_threshold=9, max_dimension=1))
    context = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})
    message = Message(RecordDict(), dst_node_id=7, message_type=MessageType.EVALUATE)
    assert "ok" in mod(message, context, evaluate).content
    assert seen == [MessageType.EVALUATE]
