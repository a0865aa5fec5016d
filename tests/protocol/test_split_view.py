"""A server that shows different survivor sets to different clients (issue 11, finding 1).

The adversary controls the server and c of the target's neighbours. In Unmasking it
tells some honest holders of the target u that u survived (they reveal its self-mask
share) and the others that u dropped (they reveal its mask-key share); in
authenticated mode each group first signs the survivor set it was shown, and the
corrupt clients sign both. With t self-mask shares and t key shares the server would
unmask y_u exactly. The configuration rule 2t > k + c (authenticated mode) makes that
impossible; the tests run the real client state machines against such a server.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.harness import Session
from securefl.errors import ConfigError
from securefl.secagg.config import GraphKind, SecAggConfig
from securefl.secagg.messages import (
    ConsistencyCheck,
    ConsistencyRequest,
    Stage,
    UnmaskingRequest,
    UnmaskingResponse,
)
from securefl.secagg.signing import consistency_payload

TARGET = 0


def _identity(i: int) -> Ed25519PrivateKey:
    # The keys Session.create_authenticated enrols: the adversary holds the corrupt ones.
    return Ed25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32)


def split_view_attack(config: SecAggConfig, corrupt_neighbours: int) -> tuple[int, int]:
    """Run the attack on client TARGET; return (self-mask shares, key shares) of it
    that the server collected. Both >= t means the server can unmask y_TARGET."""
    n, t = config.num_clients, config.threshold
    session = Session.create_authenticated(config, n, seed=f"split-{n}-{t}")
    session.run_until(Stage.CONSISTENCY_CHECK)
    survivors = tuple(sorted(session.clients))
    holders = sorted(session.clients[TARGET]._neighbours)
    corrupt = set(holders[:corrupt_neighbours])
    honest_holders = [v for v in holders if v not in corrupt]
    # Enough honest holders see "u survived" for t self-mask shares; the rest see
    # "u dropped" and give key shares.
    group_a = set(honest_holders[: max(0, t - len(corrupt))])
    others = [v for v in survivors if v not in holders and v != TARGET]
    # Honest non-holders sign whichever view has fewer signers; the target sees A.
    view_of: dict[int, tuple[int, ...]] = {}
    full = survivors
    without = tuple(v for v in survivors if v != TARGET)
    a_signers = len(group_a) + 1
    b_signers = len(honest_holders) - len(group_a)
    for v in others:
        if a_signers <= b_signers:
            view_of[v], a_signers = full, a_signers + 1
        else:
            view_of[v], b_signers = without, b_signers + 1
    view_of[TARGET] = full
    for v in honest_holders:
        view_of[v] = full if v in group_a else without

    signatures: dict[tuple[int, ...], dict[int, bytes]] = {full: {}, without: {}}
    for v, view in view_of.items():
        reply = session.clients[v].handle(ConsistencyRequest(view))
        if isinstance(reply, ConsistencyCheck):
            signatures[view][v] = reply.signature
    session_id = session.clients[TARGET]._session
    for view in (full, without):
        for v in corrupt:
            signatures[view][v] = _identity(v).sign(b"".join(consistency_payload(session_id, view)))

    self_mask = key = 0
    for v, view in view_of.items():
        held = session.clients[v]._neighbours
        request = UnmaskingRequest(
            tuple(sorted(held & set(view))),
            tuple(sorted(held - set(view))),
            view,
            tuple(sorted(signatures[view].items())),
        )
        reply = session.clients[v].handle(request)
        if isinstance(reply, UnmaskingResponse) and v in holders:
            self_mask += any(i == TARGET for i, _ in reply.self_mask_shares)
            key += any(i == TARGET for i, _ in reply.key_shares)
    # Corrupt holders hand over both of their shares of the target.
    return self_mask + len(corrupt), key + len(corrupt)


def _config(n: int, t: int, degree: int | None, corrupt: int) -> SecAggConfig:
    return SecAggConfig(
        num_clients=n,
        threshold=t,
        dimension=4,
        max_weight=10,
        graph=GraphKind.HARARY if degree else GraphKind.COMPLETE,
        degree=degree,
        authenticated=True,
        corruption_rate=corrupt / n,
    )


# The review's reproductions: (n, t, degree, corrupt clients).
REPORTED = [(5, 2, None, 0), (7, 3, None, 0), (10, 2, 4, 0), (12, 3, 6, 0), (10, 6, None, 3)]


@pytest.mark.parametrize("n,t,degree,corrupt", REPORTED)
def test_reported_configurations_are_refused_before_any_work(n, t, degree, corrupt) -> None:
    with pytest.raises(ConfigError, match=r"2t > k \+ c") as err:
        _config(n, t, degree, corrupt)
    k = degree or n - 1
    assert f"t = {(k + min(corrupt, k)) // 2 + 1}" in str(err.value)


@pytest.mark.parametrize("n,t,degree,corrupt", REPORTED)
def test_the_attack_works_where_the_rule_is_bypassed(n, t, degree, corrupt, monkeypatch) -> None:
    """The harness can fail: with the rule switched off, the server gets both kinds."""
    monkeypatch.setattr(SecAggConfig, "_check_threshold_rules", lambda self, k: None)
    monkeypatch.setattr(SecAggConfig, "directory_problem", lambda self, members: None)
    config = _config(n, t, degree, corrupt)
    kinds = split_view_attack(config, min(corrupt, config.neighbourhood_size))
    assert min(kinds) >= t, kinds


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(4, 12),
    sparse=st.booleans(),
    degree_half=st.integers(2, 4),
    t=st.integers(1, 11),
    corrupt=st.integers(0, 4),
)
def test_no_accepted_configuration_lets_a_split_view_unmask(
    n, sparse, degree_half, t, corrupt
) -> None:
    degree = 2 * degree_half if sparse and 2 * degree_half < n - 1 else None
    try:
        config = _config(n, t, degree, corrupt)
    except ConfigError:
        return  # refused before any client does work
    k = config.neighbourhood_size
    c = config.tolerated_corrupt_neighbours
    assert 2 * config.threshold > k + c and config.threshold >= 2
    self_mask, key = split_view_attack(config, min(c, k))
    assert min(self_mask, key) < config.threshold, (self_mask, key)


@pytest.mark.parametrize(
    "n,degree,corrupt", [(5, None, 0), (7, None, 1), (10, None, 3), (10, 4, 0), (12, 6, 1)]
)
def test_the_smallest_accepted_threshold_defeats_the_attack(n, degree, corrupt) -> None:
    k = degree or n - 1
    t = (k + min(corrupt, k)) // 2 + 1
    with pytest.raises(ConfigError):
        _config(n, t - 1, degree, corrupt)
    config = _config(n, t, degree, corrupt)
    self_mask, key = split_view_attack(config, config.tolerated_corrupt_neighbours)
    # The server got all the self-mask shares it wanted and too few key shares.
    assert self_mask >= t > key
