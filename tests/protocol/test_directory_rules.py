"""The threshold rules hold for the directory the server sends, not only for n.

Review finding (after issue 11's first fix): c was computed as if the graph covered
all n clients, but the graph is built over U1, which the server chooses. A server
that admitted its floor(gamma n) corrupt clients and a few honest ones got a small,
dense (complete) graph in which the corrupt neighbours alone hold t shares: with
``from_rates(1000, ..., corruption_rate=0.05, authenticated=True)`` (k=52, t=37, c=20)
and 3 honest + 50 corrupt admitted, both secrets of an honest client were rebuilt.
Clients now check the rules against the directory, and authenticated mode needs a
majority, so that two directories cannot split the clients.
"""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from securefl.secagg import crypto
from securefl.secagg.client import SecAggClient
from securefl.secagg.config import GraphKind, SecAggConfig
from securefl.secagg.messages import AdvertiseKeys, KeyDirectory, KeyEntry, SessionStart, Stage
from securefl.secagg.parameters import corrupt_clients
from securefl.secagg.server import SecAggServer
from securefl.testing.drbg import Drbg


def _identity(i: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(i.to_bytes(4, "little") * 8)


def _clients(config: SecAggConfig, ids: list[int]) -> dict[int, SecAggClient]:
    public = {i: crypto.public_bytes(_identity(i)) for i in ids}
    return {
        i: SecAggClient(
            i,
            config,
            np.zeros(config.dimension, np.float32),
            identity_key=_identity(i),
            identity_public_keys=public,
            rng=Drbg(f"directory/{i}"),
        )
        for i in ids
    }


def _directory(config: SecAggConfig, nonce: bytes, adverts: list[AdvertiseKeys]) -> KeyDirectory:
    entries = tuple(
        KeyEntry(a.sender, a.mask_public_key, a.encryption_public_key,
                 a.self_mask_commitment, a.signature)
        for a in sorted(adverts, key=lambda a: a.sender)
    )  # fmt: skip
    session = crypto.session_id(
        nonce,
        config.digest(),
        [(e.client_id, e.mask_public_key, e.encryption_public_key, e.self_mask_commitment)
         for e in entries],
    )  # fmt: skip
    return KeyDirectory(crypto.graph_seed(session), entries)


def test_a_server_that_admits_its_corrupt_clients_and_few_others_is_refused() -> None:
    config = SecAggConfig.from_rates(
        500, 4, dropout_rate=0.05, corruption_rate=0.05, authenticated=True
    )
    k, t = config.neighbourhood_size, config.threshold
    corrupt = corrupt_clients(500, 0.05)  # 25, more than the c the rules assume per client
    assert corrupt > config.tolerated_corrupt_neighbours
    ids = list(range(k + 1 - corrupt)) + list(range(400, 400 + corrupt))  # k + 1 members
    clients = _clients(config, ids)
    start = SessionStart(b"\x07" * 32, config.digest())
    adverts = [clients[i].handle(start) for i in ids]
    directory = _directory(config, start.nonce, adverts)  # type: ignore[arg-type]
    victim = clients[0]
    assert victim.handle(directory) is None  # no ShareKeys: no share leaves the client
    assert victim.stage is Stage.ABORTED
    assert f"admitted {k + 1} of n=500" in victim.abort_reason
    # In that complete graph of k + 1 members, t corrupt neighbours would have held
    # both of the victim's secrets: the reason the directory must be refused.
    assert t <= corrupt + 0 or 2 * t <= k + corrupt


def test_an_honest_server_aborts_with_the_same_reason() -> None:
    config = SecAggConfig(
        num_clients=20, threshold=3, dimension=4, authenticated=True, max_weight=10,
        graph=GraphKind.HARARY, degree=4,
    )  # fmt: skip
    ids = list(range(10))  # t + 1 = 4 advertised, but not more than half of n = 20
    clients = _clients(config, ids)
    public = {i: crypto.public_bytes(_identity(i)) for i in ids}
    server = SecAggServer(config, identity_public_keys=public, rng=Drbg("directory-server"))
    start = server.start()
    for i in ids:
        assert server.receive(i, clients[i].handle(start))  # type: ignore[arg-type]
    out = server.close_round()
    assert server.stage is Stage.ABORTED
    assert "admitted 10 of n=20" in server.abort_reason
    assert sorted(out) == ids and all(m.reason == server.abort_reason for m in out.values())


@pytest.mark.parametrize(
    ("members", "refused"),
    [(5, True), (6, False), (10, False)],  # authenticated: more than (n + 0) / 2
)
def test_authenticated_sessions_need_a_majority(members: int, refused: bool) -> None:
    config = SecAggConfig(num_clients=10, threshold=5, dimension=4, authenticated=True)
    problem = config.directory_problem(members)
    assert (problem is not None) == refused
    if refused:
        assert "more than (n + 0 corrupt) / 2 = 5" in problem


def test_a_smaller_harary_directory_is_checked_with_its_own_graph() -> None:
    # sigma = 2 bits: the tail bound over 40 clients allows c = 3 of the 4 corrupt
    # clients as neighbours, so t = 4 is accepted for n = 40...
    config = SecAggConfig(
        num_clients=40, threshold=4, dimension=4, graph=GraphKind.HARARY, degree=8,
        corruption_rate=0.1, security_bits=2,
    )  # fmt: skip
    assert config.tolerated_corrupt_neighbours == 3
    assert config.directory_problem(40) is None
    # ...but a directory of 9 is a complete graph in which all 4 may be neighbours.
    assert "up to c=4 of k=8 neighbours may be corrupt, t=4 <= c" in config.directory_problem(9)
    with_margin = SecAggConfig(
        num_clients=40, threshold=5, dimension=4, graph=GraphKind.HARARY, degree=8,
        corruption_rate=0.1, security_bits=2,
    )  # fmt: skip
    assert with_margin.directory_problem(9) is None
