"""Whole sessions over the network service: a server and client processes on loopback.

The server runs in a thread of the test process (a real gRPC server on a loopback port,
TLS with client certificates); every client is its own process, so a SIGKILL is a real
crash that closes its connection mid-protocol.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from securefl.secagg.config import GraphKind, SecAggConfig
from securefl.secagg.messages import Stage
from securefl.transports.service import SecAggSession

from .client_proc import update_for
from .conftest import assert_secagg_mean, enrolled_keys, finish


def test_several_rounds_give_the_weighted_mean(serve, clients, tmp_path) -> None:
    """Six client processes, three training rounds of SecAgg+ (a Harary graph): every
    client receives the weighted mean of all six updates of that round."""
    config = SecAggConfig(
        num_clients=6, threshold=3, dimension=300, max_weight=10, graph=GraphKind.HARARY, degree=4
    )
    running = serve(SecAggSession(config), sessions=3)
    procs = [clients(i, running.target, config=config, rounds=3, seed=5) for i in range(6)]
    reports = [finish(p) for p in procs]
    running.join()
    assert [o.stage for o in running.server.outcomes] == [Stage.COMPLETED] * 3
    for cid, report in enumerate(reports):
        assert [r["round"] for r in report] == [1, 2, 3], report
        for r in report:
            assert r["contributors"] == list(range(6))
            mean = np.load(tmp_path / f"mean-{cid}-{r['round']}.npy")
            assert_secagg_mean(config, mean, range(6), seed=5, round_=r["round"])
    # The server learnt the same mean it sent.
    for r, outcome in enumerate(running.server.outcomes, 1):
        assert outcome.session == r
        assert_secagg_mean(config, outcome.result.weighted_mean, range(6), seed=5, round_=r)


KILLS = {
    0: "AdvertiseKeys",
    1: "ShareKeys",
    2: "MaskedInputCollection",
    3: "ConsistencyCheck",
    4: "Unmasking",
}


def test_a_client_killed_in_each_round_leaves_the_survivors_mean(
    serve, clients, tmp_path, pki
) -> None:
    """Authenticated SecAgg, twelve clients, t = 6 (the smallest with 2t > k = 11): one
    is SIGKILLed as each round's message reaches it. Those killed before
    MaskedInputCollection are not in the sum; those killed after it are (the others'
    shares remove their masks); the seven left hold t shares of every secret (each
    survivor's own seed is held by the six others). Each death closes its client's
    connection, so no round waits for its deadline T: every round, and the session,
    takes less than T."""
    config = SecAggConfig(
        num_clients=12, threshold=6, dimension=200, max_weight=10, authenticated=True
    )
    keys = {i: k for i, k in enrolled_keys(pki).items() if i < 12}
    deadline = 20.0
    running = serve(SecAggSession(config, keys), round_timeout=deadline)
    procs = {
        i: clients(
            i, running.target, config=config, seed=9, die_at=[1, KILLS[i]] if i in KILLS else None
        )
        for i in range(12)
    }
    reports = {i: finish(p) for i, p in procs.items()}
    running.join()
    for i in KILLS:
        assert procs[i].returncode == -9  # really killed
    (outcome,) = running.server.outcomes
    assert outcome.stage is Stage.COMPLETED, outcome.abort_reason
    assert set(outcome.round_seconds) == set(KILLS.values())
    assert all(collecting < deadline for collecting, _ in outcome.round_seconds.values())
    assert outcome.closed - outcome.started < deadline
    assert outcome.departures == dict.fromkeys(KILLS, "its connection closed")
    contributors = tuple(range(3, 12))  # everyone who sent a masked input
    assert outcome.result.contributors == contributors
    for i in range(5, 12):
        (record,) = reports[i]
        assert tuple(record["contributors"]) == contributors
        mean = np.load(tmp_path / f"mean-{i}-1.npy")
        assert_secagg_mean(config, mean, contributors, seed=9, round_=1)


def test_too_many_kills_abort_every_live_client(serve, clients) -> None:
    """Two of six clients die before MaskedInputCollection with t = 4: fewer than t + 1
    masked inputs arrive, and every live client gets the abort and its reason."""
    config = SecAggConfig(num_clients=6, threshold=4, dimension=100, max_weight=10)
    running = serve(SecAggSession(config), round_timeout=1.5)
    die = {0: [1, "MaskedInputCollection"], 1: [1, "MaskedInputCollection"]}
    procs = {i: clients(i, running.target, config=config, die_at=die.get(i)) for i in range(6)}
    reports = {i: finish(p) for i, p in procs.items()}
    running.join()
    (outcome,) = running.server.outcomes
    assert outcome.stage is Stage.ABORTED
    assert outcome.result is None
    for i in range(2, 6):
        (record,) = reports[i]
        assert record["error"] == "ProtocolAbort"
        assert "only 4 clients" in record["message"]
        assert procs[i].returncode == 3


@pytest.mark.parametrize("stage", ["ShareKeys", "MaskedInputCollection"])
def test_late_client_is_told_it_was_dropped(serve, clients, stage: str) -> None:
    """A client that stalls past the round deadline is dropped; the others complete."""
    config = SecAggConfig(num_clients=5, threshold=3, dimension=50, max_weight=10)
    running = serve(SecAggSession(config), round_timeout=1.5)
    procs = {
        i: clients(i, running.target, config=config, stall_at=[1, stage] if i == 0 else None)
        for i in range(5)
    }
    reports = {i: finish(p) for i, p in procs.items() if i != 0}
    running.join()
    (outcome,) = running.server.outcomes
    assert outcome.stage is Stage.COMPLETED
    assert 0 not in outcome.result.contributors
    for i in range(1, 5):
        assert reports[i][0]["contributors"] == [1, 2, 3, 4]


def test_securefl_join_command(serve, pki, tmp_path) -> None:
    """Five `securefl join` processes, two rounds, updates and means as .npy files with
    {round} in their names; exit status 0 and the weighted mean in every file."""
    # corruption_rate 0.1: the command line's default --corruption-rate.
    config = SecAggConfig(
        num_clients=5, threshold=3, dimension=40, max_weight=10, corruption_rate=0.1
    )
    running = serve(SecAggSession(config), sessions=2)
    weights = {}
    for i in range(5):
        for r in (1, 2):
            update, weights[i, r] = update_for(4, i, r, 40)
            np.save(tmp_path / f"u{i}-{r}.npy", update)
    session = ["--protocol", "secagg", "--clients", "5", "--threshold", "3", "--dim", "40"]
    session += ["--max-weight", "10"]
    procs = []
    for i in range(5):
        # update_for draws a weight per round; the command takes one: use round 1's.
        command = [sys.executable, "-m", "securefl", "join", "--pki", str(pki), "--id", str(i)]
        command += ["--server", running.target, "--rounds", "2", "--weight", str(weights[i, 1])]
        command += ["--update", str(tmp_path / f"u{i}-{{round}}.npy")]
        command += ["--out", str(tmp_path / f"m{i}-{{round}}.npy"), "--timeout", "30", *session]
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        assert b"session 2: mean of 5 clients" in out
    running.join()
    for r in (1, 2):
        total = sum(weights[i, 1] * np.clip(update_for(4, i, r, 40)[0], -1, 1) for i in range(5))
        want = total / sum(weights[i, 1] for i in range(5))
        bound = (
            config.fixed_point.precision
            * 5
            * config.max_weight
            / sum(weights[i, 1] for i in range(5))
        )
        for i in range(5):
            assert np.max(np.abs(np.load(tmp_path / f"m{i}-{r}.npy") - want)) <= bound


class _EndedContext:
    """A call that ended before the server could watch it."""

    def add_callback(self, callback: object) -> bool:
        return False

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0


def test_a_call_that_ended_right_after_answering_counts_as_gone(pki) -> None:
    """A client whose call ends between its accepted answer and the server's watch is
    gone: the next round does not wait for it until the deadline."""
    from securefl.secagg import codec
    from securefl.secagg.client import SecAggClient
    from securefl.transports.service import AggregationServer, ServerTLS, framing
    from securefl.transports.service.framing import Kind, Protocol
    from securefl.transports.service.server import SessionOutcome, _Call

    config = SecAggConfig(num_clients=3, threshold=2, dimension=4, max_weight=1)
    tls = ServerTLS.from_files(
        str(pki / "server.pem"), str(pki / "server.key"), str(pki / "ca.pem")
    )
    server = AggregationServer(SecAggSession(config), tls)
    try:
        server._number, server._members = 1, frozenset(range(3))
        server._outcome = SessionOutcome(1, Protocol.SECAGG, (0, 1, 2), Stage.ADVERTISE_KEYS)
        with server._cv:
            server._open(frozenset(range(3)))
        opening = b"".join(server._outbox[1, 0][0])
        start = codec.decode(bytes(framing.assemble([opening], 1 << 20).payload))
        reply = SecAggClient(0, config, np.zeros(4), 1).handle(start)
        submit = framing.Frame(
            Kind.SUBMIT, Protocol.SECAGG, 0, 1, 0, memoryview(codec.encode(reply))
        )
        assert server._submit(_Call(0), submit, _EndedContext()) is None
        assert 0 in server._answered and 0 in server._gone
    finally:
        server.stop(grace=0)


def test_a_client_that_leaves_is_gone_at_once_with_its_reason(
    serve, clients, pki, tmp_path
) -> None:
    """Client 3 joins (its JOIN call stays open) and then sends LEAVE with a reason, as
    a client does when one of its own checks fails: AdvertiseKeys closes on the three
    others' answers, long before its deadline, the server records why client 3 went,
    and the three receive their mean."""
    import grpc

    from securefl.transports.service import framing
    from securefl.transports.service.framing import Kind, Protocol
    from securefl.transports.service.server import METHOD

    config = SecAggConfig(num_clients=4, threshold=2, dimension=30, max_weight=10)
    deadline = 20.0
    running = serve(SecAggSession(config), round_timeout=deadline, enrolled=range(4))
    tls = (pki / "ca.pem").read_bytes(), (pki / "client-3.key").read_bytes()
    creds = grpc.ssl_channel_credentials(tls[0], tls[1], (pki / "client-3.pem").read_bytes())
    channel = grpc.secure_channel(running.target, creds)
    call = channel.stream_stream(METHOD)

    def frame(kind: Kind, session: int, payload: bytes = b"") -> bytes:
        return b"".join(
            bytes(p) for p in framing.encode(kind, Protocol.SECAGG, 3, session, 0, payload)
        )

    procs = [clients(i, running.target, config=config, seed=2) for i in range(3)]
    presence = call(iter([frame(Kind.JOIN, 0)]), timeout=60, wait_for_ready=True)
    opening = framing.read_frame(presence, 1 << 20)
    assert opening.kind is Kind.PROTOCOL
    assert (
        list(call(iter([frame(Kind.LEAVE, opening.session, b"my policy refuses it")]), timeout=10))
        == []
    )
    reports = [finish(p) for p in procs]
    running.join()
    presence.cancel()
    channel.close()
    (outcome,) = running.server.outcomes
    assert outcome.stage is Stage.COMPLETED
    assert outcome.departures == {3: "it left: my policy refuses it"}
    assert outcome.round_seconds["AdvertiseKeys"][0] < deadline
    assert outcome.result.contributors == (0, 1, 2)
    for cid, (record,) in enumerate(reports):
        assert record["contributors"] == [0, 1, 2]
        assert_secagg_mean(config, np.load(tmp_path / f"mean-{cid}-1.npy"), range(3), 2, 1)
