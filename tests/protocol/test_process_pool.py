"""Clients in worker processes: same results, and the server never holds n vectors."""

from __future__ import annotations

from protocol.harness import assert_close_to_plain, make_config, make_updates
from securefl.secagg.messages import Stage
from securefl.transports.inmemory import run_session


def test_process_pool_session_with_dropouts() -> None:
    n = 9
    config = make_config(n, t=4, d=20, graph="harary", degree=6)
    updates, weights = make_updates(n, config.dimension, seed=11)
    schedule = {3: Stage.SHARE_KEYS, 6: Stage.UNMASKING}
    report = run_session(config, updates, weights, dropouts=schedule, processes=2, seed=b"pool")
    assert report.stage is Stage.COMPLETED, report.abort_reason
    assert report.result.contributors == tuple(i for i in range(n) if i != 3)
    assert_close_to_plain(config, report.result, updates, weights)
    assert report.client_stages[0] is Stage.COMPLETED
    assert report.client_stages[3] is Stage.SHARE_KEYS  # vanished while awaiting ShareKeys


def test_process_pool_authenticated() -> None:
    n = 5
    config = make_config(n, t=3, d=10, authenticated=True)
    updates, weights = make_updates(n, config.dimension, seed=12)
    report = run_session(config, updates, weights, processes=2, seed=b"pool-auth")
    assert report.stage is Stage.COMPLETED, report.abort_reason
    assert_close_to_plain(config, report.result, updates, weights)


def test_server_memory_does_not_grow_with_the_number_of_clients() -> None:
    d = 200_000
    peaks = {}
    for n in (6, 18):
        config = make_config(n, t=3, d=d, graph="harary", degree=4)
        updates, weights = make_updates(n, d, seed=n)
        report = run_session(
            config, updates, weights, processes=2, seed=b"mem", measure_memory=True
        )
        assert report.stage is Stage.COMPLETED
        peaks[n] = report.server_peak_bytes
    # Accumulator (4d) + decoded mean (8d) + one in-flight upload per worker (2 x 4d)
    # + the unflattened copy (8d): well under n vectors, and flat in n.
    assert peaks[18] < 40 * d
    assert peaks[18] < peaks[6] * 1.25
