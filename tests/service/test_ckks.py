"""A CKKS FedAvg session over the service: clients encrypt, the server adds ciphertexts
it cannot decrypt, clients decrypt the weighted mean."""

from __future__ import annotations

import signal

import numpy as np
import pytest

pytest.importorskip("tenseal")

from securefl.ckks.keys import CKKSParams, ClientContext
from securefl.secagg.messages import Stage
from securefl.transports.service import CKKSSession

from .conftest import expected_mean, finish, in_threads, join_all

D = 500


@pytest.fixture(scope="module")
def ckks_pki(pki):
    """The clients' secret context in the PKI directory (client_proc reads it)."""
    # FLARE's parameters (N = 8192, scale 2^40): securefl.ckks floods decryptions, which
    # needs a scale well above the noise (smaller test parameters are refused).
    ctx = ClientContext.generate(CKKSParams())
    (pki / "ckks-client.ctx").write_bytes(ctx.to_bytes())
    return ctx


def test_ckks_rounds_with_a_client_killed(serve, clients, tmp_path, ckks_pki) -> None:
    """Five client processes, two training rounds; client 0 is killed before it
    uploads in round 2. Each round's mean is the weighted mean of who uploaded."""
    session = CKKSSession(ckks_pki.server_context(), num_clients=5, dimension=D)
    running = serve(session, sessions=2, round_timeout=2.0)
    procs = [
        clients(
            i,
            running.target,
            ckks=True,
            dim=D,
            rounds=2,
            seed=11,
            die_at=[2, "encrypt"] if i == 0 else None,
        )
        for i in range(5)
    ]
    reports = [finish(p) for p in procs]
    running.join()
    assert [o.stage for o in running.server.outcomes] == [Stage.COMPLETED] * 2
    assert running.server.outcomes[1].contributors == (1, 2, 3, 4)
    for cid in range(1, 5):
        for record in reports[cid]:
            r = record["round"]
            who = range(5) if r == 1 else range(1, 5)
            assert record["contributors"] == list(who)
            want, weight = expected_mean(D, 11, r, who, clip=np.inf)
            assert record["total_weight"] == weight
            mean = np.load(tmp_path / f"mean-{cid}-{r}.npy")
            # CKKS noise (and decryption flooding) at scale 2^40: far below 1e-3.
            assert np.max(np.abs(mean - want)) < 1e-3


@pytest.mark.parametrize("n", [4, 5, 10])
def test_a_killed_ckks_client_costs_no_deadline(n, serve, clients, tmp_path, ckks_pki) -> None:
    """Issue 12, the fault matrix for CKKS: client 0 is SIGKILLed as its session's
    single round (encrypt and upload) reaches it. Its connection closes, so the server
    counts it dropped at once: the round closes well before its deadline, and every
    survivor decrypts the weighted mean of the others."""
    deadline = 30.0
    session = CKKSSession(ckks_pki.server_context(), num_clients=n, dimension=D)
    running = serve(session, sessions=1, round_timeout=deadline)
    procs = [
        clients(
            i, running.target, ckks=True, dim=D, seed=n, die_at=[1, "encrypt"] if i == 0 else None
        )
        for i in range(n)
    ]
    reports = [finish(p) for p in procs[1:]]
    running.join()
    (outcome,) = running.server.outcomes
    assert outcome.stage is Stage.COMPLETED
    assert outcome.contributors == tuple(range(1, n))
    ((collecting, _closing),) = outcome.round_seconds.values()
    assert collecting < deadline / 3, outcome.round_seconds
    assert procs[0].wait(timeout=10) == -signal.SIGKILL
    want, weight = expected_mean(D, n, 1, range(1, n), clip=np.inf)
    for cid, (record,) in enumerate(reports, 1):
        assert record["contributors"] == list(range(1, n))
        assert record["total_weight"] == weight
        assert np.max(np.abs(np.load(tmp_path / f"mean-{cid}-1.npy") - want)) < 1e-3


def test_a_stopped_ckks_client_costs_its_round_one_deadline(
    serve, clients, tmp_path, ckks_pki
) -> None:
    """A CKKS client stopped with SIGSTOP before it uploads keeps its connection open:
    the round waits for its deadline once (at least it, less than twice), then closes
    with the others, who decrypt their mean."""
    stall, n = 3.0, 4
    session = CKKSSession(ckks_pki.server_context(), num_clients=n, dimension=D)
    running = serve(session, sessions=1, round_timeout=stall)
    procs = [
        clients(
            i, running.target, ckks=True, dim=D, seed=3, stop_at=[1, "encrypt"] if i == 0 else None
        )
        for i in range(n)
    ]
    try:
        reports = [finish(p) for p in procs[1:]]
        running.join()
    finally:
        procs[0].send_signal(signal.SIGCONT)
    (outcome,) = running.server.outcomes
    assert outcome.stage is Stage.COMPLETED and outcome.contributors == (1, 2, 3)
    ((collecting, _closing),) = outcome.round_seconds.values()
    assert stall <= collecting < 2 * stall, outcome.round_seconds
    want, _ = expected_mean(D, 3, 1, range(1, n), clip=np.inf)
    for cid, (record,) in enumerate(reports, 1):
        assert record["contributors"] == [1, 2, 3]
        assert np.max(np.abs(np.load(tmp_path / f"mean-{cid}-1.npy") - want)) < 1e-3
    finish(procs[0])
    assert procs[0].returncode != 0


def test_the_ckks_session_describes_itself_in_words(ckks_pki) -> None:
    """What `securefl serve` prints: parameters, not the context's object repr."""
    text = CKKSSession(ckks_pki.server_context(), num_clients=5, dimension=D).describe()
    assert text.startswith(f"CKKS, n = 5, d = {D}, at least 2 contributions, tolerates 3")
    assert "N = 8192" in text and "object at 0x" not in text


def test_an_update_of_another_length_is_refused_at_the_door(serve, pki, ckks_pki) -> None:
    """A client whose update has 2 values joins a session of 500: refused at once, the
    option named with both values."""
    from securefl.errors import ServiceError
    from securefl.transports.service import AggregationClient, ClientTLS

    running = serve(CKKSSession(ckks_pki.server_context(), num_clients=5, dimension=D))
    tls = ClientTLS.from_files(
        str(pki / "ca.pem"), str(pki / "client-4.pem"), str(pki / "client-4.key")
    )
    client = AggregationClient(running.target, 4, tls, ckks_context=ckks_pki, timeout=20)
    with client, pytest.raises(ServiceError) as info:
        client.aggregate(np.zeros(2), weight=1)
    assert info.value.code == "FAILED_PRECONDITION"
    assert f"--dim: this client 2, the server {D}" in str(info.value)
    assert running.server.outcomes == []


def test_a_ciphertext_of_another_length_is_refused(serve, pki, ckks_pki) -> None:
    """Client 4 declares the session's 500 values when it joins, then encrypts 2: the
    server refuses the ciphertext with INVALID_ARGUMENT before the aggregator sees it, so
    it cannot fix the length for the others, and clients 0-3 receive their weighted
    mean."""

    from securefl.errors import ServiceError
    from securefl.transports.service import AggregationClient, ClientTLS
    from securefl.transports.service.sessions import JoinRequest

    session = CKKSSession(ckks_pki.server_context(), num_clients=5, dimension=D)
    running = serve(session, round_timeout=2.0)
    results: dict[int, object] = {}

    def hospital(cid: int) -> None:
        tls = ClientTLS.from_files(
            str(pki / "ca.pem"), str(pki / f"client-{cid}.pem"), str(pki / f"client-{cid}.key")
        )
        update = np.zeros(2) if cid == 4 else np.full(D, 0.1 * cid)
        with AggregationClient(
            running.target, cid, tls, ckks_context=ckks_pki, timeout=20, threads=1
        ) as client:
            if cid == 4:  # it lies about its length at the door
                join = client._join
                client._join = lambda request: join(JoinRequest(dimension=D))  # type: ignore[method-assign]
            try:
                results[cid] = client.aggregate(update, weight=cid + 1)
            except ServiceError as exc:
                results[cid] = exc

    threads = in_threads(hospital, (4, 0, 1, 2, 3))
    join_all(threads)
    running.join()
    (outcome,) = running.server.outcomes
    assert outcome.stage is Stage.COMPLETED
    assert outcome.contributors == (0, 1, 2, 3)
    assert isinstance(results[4], ServiceError) and results[4].code == "INVALID_ARGUMENT"
    assert "501" in str(results[4])
    want = sum(0.1 * c * (c + 1) for c in range(4)) / sum(c + 1 for c in range(4))
    for cid in range(4):
        np.testing.assert_allclose(results[cid].weighted_mean, want, atol=1e-3)


class OneCiphertextServer:
    """A deviating CKKS server: it hands every client one peer's (the victim's)
    ciphertext as "the aggregate", naming ``claim`` as the contributors."""

    def __init__(self, victim: int, claim: tuple[int, ...]) -> None:
        self.victim, self.claim = victim, claim

    def install(self, server) -> None:
        """Make ``server``'s session start this deviating run (one run class: the
        transport is unchanged, as for any protocol)."""
        from securefl.transports.service.framing import Kind
        from securefl.transports.service.runs import CKKSRun, RoundClosed
        from securefl.transports.service.sessions import encode_ckks_result

        tool, kept = self, {}

        class OneCiphertextRun(CKKSRun):
            def accept(self, client: int, message) -> None:
                super().accept(client, message)  # the honest checks still run
                if client == tool.victim:
                    kept[client] = bytes(message)

            def close_round(self, outcome, gone) -> RoundClosed:
                outcome.stage = Stage.COMPLETED
                outcome.contributors = tool.claim
                payload = encode_ckks_result(tool.claim, kept[tool.victim])
                return RoundClosed(final=(Kind.RESULT, payload))

        session = server.session
        object.__setattr__(
            session, "start", lambda members, threads: OneCiphertextRun(session, members, threads)
        )


def ckks_hospitals(target: str, pki, ctx, ids, policy=None) -> dict[int, object]:
    """In-process CKKS clients: client c sends 0.1 * c with weight c + 1; its result or
    the error it raised."""
    from securefl.errors import ProtocolAbort, ServiceError
    from securefl.transports.service import AggregationClient, ClientTLS

    results: dict[int, object] = {}

    def hospital(cid: int) -> None:
        tls = ClientTLS.from_files(
            str(pki / "ca.pem"), str(pki / f"client-{cid}.pem"), str(pki / f"client-{cid}.key")
        )
        extra = {} if policy is None else {"policy": policy}
        with AggregationClient(
            target, cid, tls, ckks_context=ctx, timeout=20, threads=1, **extra
        ) as client:
            try:
                results[cid] = client.aggregate(np.full(D, 0.1 * cid), weight=cid + 1)
            except (ProtocolAbort, ServiceError) as exc:
                results[cid] = exc

    join_all(in_threads(hospital, ids))
    return results


@pytest.mark.parametrize(
    ("claim", "named"),
    [((1,), "min_contributors"), ((0, 1, 2, 3, 4), "total weight of 2 cannot be 5")],
    ids=["one-contributor", "claims-all-five"],
)
def test_one_peers_ciphertext_as_the_aggregate_is_refused(
    serve, pki, ckks_pki, claim: tuple[int, ...], named: str
) -> None:
    """A deviating server sends client 1's ciphertext alone as the aggregate, naming
    client 1 as the only contributor, or all five: every client refuses it with
    ProtocolAbort (below min_contributors = 2; client 1's weight of 2 cannot be five
    clients' of weight >= 1) and releases nothing: client 1's update stays hidden."""
    from securefl.errors import ProtocolAbort

    session = CKKSSession(ckks_pki.server_context(), num_clients=5, dimension=D)
    running = serve(session, round_timeout=5.0)
    OneCiphertextServer(victim=1, claim=claim).install(running.server)
    results = ckks_hospitals(running.target, pki, ckks_pki, range(5))
    running.join()
    for cid in range(5):
        assert isinstance(results[cid], ProtocolAbort), (cid, results[cid])
        # securefl.ckks may refuse it first, from the aggregate's own contribution count.
        reason = results[cid].reason
        assert named in reason or "min_contributors" in reason, reason


def test_policy_min_contributors_at_the_bound_is_accepted_and_above_refused(
    serve, pki, ckks_pki
) -> None:
    """An honest CKKS session of four contributors: clients whose policy asks for four
    receive the mean; clients that ask for five refuse the result, naming
    min_contributors with both counts."""
    from securefl.errors import ProtocolAbort
    from securefl.transports.service import ClientPolicy

    want = sum(0.1 * c * (c + 1) for c in range(4)) / sum(c + 1 for c in range(4))
    for least, accepted in ((4, True), (5, False)):
        session = CKKSSession(ckks_pki.server_context(), num_clients=4, dimension=D)
        running = serve(session, round_timeout=5.0, enrolled=range(4))
        policy = ClientPolicy(min_contributors=least)
        results = ckks_hospitals(running.target, pki, ckks_pki, range(4), policy)
        running.join()
        assert running.server.outcomes[0].contributors == (0, 1, 2, 3)
        for cid in range(4):
            if accepted:
                np.testing.assert_allclose(results[cid].weighted_mean, want, atol=1e-3)
            else:
                assert isinstance(results[cid], ProtocolAbort)
                assert (
                    "min_contributors: the server's result has 4 contributor(s), this "
                    "client's policy requires at least 5" in results[cid].reason
                )
