"""The SecAgg+ graph seed is derived from the session id (issue 11, finding 3).

A server that picked the seed after seeing which clients it controls could grind for
a graph in which some client has many corrupt neighbours, or give clients different
graphs. Every client now recomputes the seed from the session id (which hashes every
advertised key and commitment) and refuses a directory with any other seed.
"""

from __future__ import annotations

import dataclasses

from protocol.harness import Session, make_config
from securefl.secagg import crypto
from securefl.secagg.messages import KeyDirectory, ShareKeys, Stage
from securefl.secagg.topology import build_graph


def _session() -> Session:
    config = make_config(10, t=3, d=8, graph="harary", degree=4)
    session = Session.create(config, 10, seed="graph-seed")
    session.run_until(Stage.SHARE_KEYS)
    return session


def test_the_seed_is_the_session_ids_and_every_party_builds_the_same_graph() -> None:
    session = _session()
    directory = session.inbox[0]
    assert isinstance(directory, KeyDirectory)
    session_id = session.server._session
    assert directory.graph_seed == crypto.graph_seed(session_id)
    graph = build_graph(
        session.config, [e.client_id for e in directory.entries], directory.graph_seed
    )
    replies = session.deliver()
    assert all(isinstance(r, ShareKeys) for r in replies.values())
    for cid, client in session.clients.items():
        assert client._neighbours == graph.neighbours(cid)


def test_a_seed_the_server_picked_is_refused() -> None:
    session = _session()
    directory = session.inbox[0]
    picked = dataclasses.replace(directory, graph_seed=b"\x42" * 16)
    client = session.clients[0]
    assert client.handle(picked) is None
    assert client.stage is Stage.ABORTED
    assert "graph seed" in client.abort_reason


def test_clients_given_different_seeds_are_detected() -> None:
    session = _session()
    directory = session.inbox[0]
    other = dataclasses.replace(directory, graph_seed=bytes(16))
    session.inbox = {cid: (directory if cid % 2 else other) for cid in session.inbox}
    replies = session.deliver()
    assert set(replies) == {cid for cid in session.clients if cid % 2}
    for cid, client in session.clients.items():
        assert (client.stage is Stage.ABORTED) == (cid % 2 == 0)
