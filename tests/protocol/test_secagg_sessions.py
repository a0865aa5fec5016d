"""Whole sessions through the in-memory transport: sums, dropouts, aborts."""

from __future__ import annotations

import pytest

from protocol.harness import Session, assert_close_to_plain, make_config, make_updates
from securefl.secagg.messages import Stage
from securefl.testing.drbg import Drbg
from securefl.transports.inmemory import run_session

GRAPHS = [("complete", None), ("harary", 6)]


@pytest.mark.parametrize("graph,degree", GRAPHS)
@pytest.mark.parametrize("n", [3, 10, 100])
def test_weighted_mean_is_exact_to_the_quantization_bound(n, graph, degree) -> None:
    degree = None if degree is None else min(degree, n - 1)
    kind = graph if degree is None or degree >= 2 else "complete"
    config = make_config(n, d=40, graph=kind, degree=degree if kind == "harary" else None)
    updates, weights = make_updates(n, config.dimension)
    report = run_session(config, updates, weights, rng=Drbg(f"sum-{n}-{graph}"))
    assert report.stage is Stage.COMPLETED, report.abort_reason
    assert report.result.contributors == tuple(range(n))
    assert report.result.dropped == ()
    assert_close_to_plain(config, report.result, updates, weights)
    assert all(s is Stage.COMPLETED for s in report.client_stages.values())


@pytest.mark.parametrize("graph,degree", GRAPHS)
@pytest.mark.parametrize(
    "when",
    [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT_COLLECTION, Stage.UNMASKING],
)
def test_dropouts_in_every_round(when, graph, degree) -> None:
    n = 12
    config = make_config(n, t=3 if graph == "harary" else 6, d=33, graph=graph, degree=degree)
    updates, weights = make_updates(n, config.dimension, seed=5)
    dropped = {2: when, 7: when}
    report = run_session(
        config, updates, weights, dropouts=dropped, rng=Drbg(f"drop-{when}-{graph}")
    )
    assert report.stage is Stage.COMPLETED, report.abort_reason
    result = report.result
    if when is Stage.UNMASKING:
        # Their masked inputs arrived before they vanished: they are in the sum.
        assert result.contributors == tuple(range(n))
    else:
        assert result.contributors == tuple(i for i in range(n) if i not in dropped)
        # The server never heard of clients that vanished before advertising keys.
        assert set(result.dropped) == (set() if when is Stage.ADVERTISE_KEYS else set(dropped))
    assert_close_to_plain(config, result, updates, weights)


def test_dropouts_spread_over_all_rounds() -> None:
    n = 20
    config = make_config(n, t=8, d=25)
    updates, weights = make_updates(n, config.dimension, seed=9)
    schedule = {
        0: Stage.ADVERTISE_KEYS,
        5: Stage.SHARE_KEYS,
        6: Stage.SHARE_KEYS,
        11: Stage.MASKED_INPUT_COLLECTION,
        12: Stage.MASKED_INPUT_COLLECTION,
        17: Stage.UNMASKING,
        18: Stage.UNMASKING,
        19: Stage.UNMASKING,
    }
    report = run_session(config, updates, weights, dropouts=schedule, rng=Drbg("spread"))
    assert report.stage is Stage.COMPLETED, report.abort_reason
    assert report.result.contributors == tuple(i for i in range(n) if i not in (0, 5, 6, 11, 12))
    assert_close_to_plain(config, report.result, updates, weights)


def test_authenticated_session_with_dropouts_in_consistency_check() -> None:
    n = 10
    config = make_config(n, t=5, d=30, authenticated=True)
    updates, weights = make_updates(n, config.dimension, seed=3)
    schedule = {1: Stage.SHARE_KEYS, 4: Stage.CONSISTENCY_CHECK, 8: Stage.UNMASKING}
    report = run_session(config, updates, weights, dropouts=schedule, rng=Drbg("auth"))
    assert report.stage is Stage.COMPLETED, report.abort_reason
    # 4 and 8 sent masked inputs before vanishing: their updates are in the mean.
    assert report.result.contributors == tuple(i for i in range(n) if i != 1)
    assert_close_to_plain(config, report.result, updates, weights)


@pytest.mark.parametrize("when", [Stage.SHARE_KEYS, Stage.MASKED_INPUT_COLLECTION])
def test_too_many_dropouts_abort_before_any_share_is_revealed(when) -> None:
    n = 10
    config = make_config(n, t=6, d=10)
    updates, weights = make_updates(n, config.dimension)
    schedule = dict.fromkeys(range(5), when)  # 5 survivors < t + 1
    report = run_session(config, updates, weights, dropouts=schedule, rng=Drbg("abort"))
    assert report.stage is Stage.ABORTED
    assert report.result is None
    assert "need at least t + 1 = 7" in report.abort_reason
    assert report.revealed == {}  # no client sent a single share
    assert all(report.client_stages[i] is Stage.ABORTED for i in range(5, n))


def test_too_few_live_holders_of_a_dropped_clients_shares_aborts() -> None:
    # SecAgg+ with k = 4, t = 3: client 0 drops after sharing keys, and so do 2 of its
    # 4 neighbours: only 2 live clients hold its key shares, fewer than t.
    n = 12
    config = make_config(n, t=3, d=8, graph="harary", degree=4)
    session = Session.create(config, n, seed="holders")
    session.round()  # AdvertiseKeys
    neighbours = sorted(session.server._neighbours[0])
    assert len(neighbours) == 4
    session.round()  # ShareKeys
    session.round(skip={0, *neighbours[:2]})  # MaskedInputCollection
    assert session.server.stage is Stage.ABORTED
    assert "client 0 has only 2 live neighbours" in session.server.abort_reason
