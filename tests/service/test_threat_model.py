"""The limits that docs/SERVICE.md's threat model states, shown with the real parties.

A claim that something is *not* protected can be tested too: each test here runs the
attack the threat model says works and checks that it does (and, where a mode stops it,
that it is stopped). Not a promise of the library: a check that the document is honest.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from securefl.encoding import FixedPointEncoder
from securefl.secagg.client import SecAggClient
from securefl.secagg.config import SecAggConfig
from securefl.secagg.messages import Stage
from securefl.secagg.server import SecAggServer

from .conftest import in_threads, join_all


def _public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def _keys(authenticated: bool, key: Ed25519PrivateKey, keys: dict[int, bytes]) -> dict:
    return {"identity_key": key, "identity_public_keys": keys} if authenticated else {}


@pytest.mark.parametrize("authenticated", [False, True], ids=["semi-honest", "authenticated"])
def test_a_server_that_runs_a_clients_peers_itself(authenticated: bool) -> None:
    """A deviating server seats the one real client (0) among four clients it runs
    itself (Sybils with zero updates), n = 5, t = 3. Without the authenticated mode
    nothing ties a peer's keys to an enrolled hospital: the session completes and the
    "mean" is client 0's update, so that mode is secure against a server that follows
    the protocol only. In authenticated mode client 0 checks every peer's signature
    against the enrolled identity keys it holds and refuses the directory before it
    sends any share or masked input."""
    config = SecAggConfig(5, 3, 8, max_weight=1, authenticated=authenticated)
    update = np.linspace(-0.5, 0.5, 8)
    identity = {i: Ed25519PrivateKey.generate() for i in range(5)}  # the enrolled keys
    sybil = {i: Ed25519PrivateKey.generate() for i in range(1, 5)}  # the server's own
    enrolled = {i: _public(k) for i, k in identity.items()}
    forged = {0: enrolled[0], **{i: _public(k) for i, k in sybil.items()}}
    real = _keys(authenticated, identity[0], enrolled)
    parties = {0: SecAggClient(0, config, update, 1, rng=os.urandom, **real)}
    for i in range(1, 5):
        own = _keys(authenticated, sybil[i], forged)
        parties[i] = SecAggClient(i, config, np.zeros(8), 1, rng=os.urandom, **own)
    server = SecAggServer(config, identity_public_keys=forged if authenticated else None)
    messages = dict.fromkeys(parties, server.start())
    while server.stage not in (Stage.COMPLETED, Stage.ABORTED):
        for i, message in messages.items():
            reply = parties[i].handle(message)
            if reply is not None:
                server.receive(i, reply)
        messages = server.close_round()
    if not authenticated:
        assert server.stage is Stage.COMPLETED
        assert server.result is not None and server.result.contributors == (0, 1, 2, 3, 4)
        # The sum of one real update and four zeros, times 5 (weights 1 each): x_0.
        bound = 5 * config.fixed_point.precision
        mean = FixedPointEncoder.for_config(config).decode(server.result)
        np.testing.assert_allclose(5 * mean, update, atol=bound)
    else:
        assert parties[0].stage is Stage.ABORTED
        assert "mis-signed" in (parties[0].abort_reason or "")
        assert server.result is None or 0 not in server.result.contributors


def test_the_server_and_any_one_client_decrypt_every_ckks_update(serve, pki) -> None:
    """CKKS: every client holds the one secret key. The ciphertext a server receives
    from client 2, decrypted with any other client's context (here client 4's copy),
    is client 2's weighted update: the server plus one client learn every update."""
    pytest.importorskip("tenseal")
    from securefl.ckks.client import decrypt_vector
    from securefl.ckks.keys import CKKSParams, ClientContext
    from securefl.transports.service import AggregationClient, CKKSSession, ClientTLS
    from securefl.transports.service.runs import CKKSRun

    # FLARE's parameters (N = 8192, scale 2^40): securefl.ckks floods decryptions, which
    # needs a scale well above the noise (smaller test parameters are refused).
    ctx = ClientContext.generate(CKKSParams())
    running = serve(CKKSSession(ctx.server_context(), 3, 50), enrolled=range(3))
    received: dict[int, bytes] = {}

    class RecordingRun(CKKSRun):
        """The honest run, keeping a copy of every ciphertext the server is sent."""

        def accept(self, client: int, message) -> None:
            super().accept(client, message)
            received[client] = bytes(message)

    session = running.server.session
    object.__setattr__(
        session, "start", lambda members, threads: RecordingRun(session, members, threads)
    )
    copy_of_client_4 = ClientContext.from_bytes(ctx.to_bytes())

    def hospital(cid: int) -> None:
        tls = ClientTLS.from_files(
            str(pki / "ca.pem"), str(pki / f"client-{cid}.pem"), str(pki / f"client-{cid}.key")
        )
        with AggregationClient(running.target, cid, tls, ckks_context=ctx, timeout=20) as c:
            c.aggregate(np.full(50, 0.1 * (cid + 1)), weight=cid + 1)

    join_all(in_threads(hospital, range(3)))
    running.join()
    # decrypt_vector checks no contribution count: the raw decryption a key holder
    # can always do (TenSEAL's own decrypt() too).
    values = decrypt_vector(copy_of_client_4, received[2])
    assert round(values[-1]) == 3  # client 2's weight
    np.testing.assert_allclose(values[:-1] / 3, 0.3, atol=1e-3)  # and its update
