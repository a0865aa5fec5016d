"""Run a whole SecAgg session in one process: n clients, one server, a dropout schedule.

Every message goes through the binary codec, as it would on a network, so the
simulator measures real message sizes and exercises the decoder. Used by the tests,
the demo and the benchmarks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from securefl.secagg import codec
from securefl.secagg.client import SecAggClient
from securefl.secagg.config import SecAggConfig
from securefl.secagg.messages import ServerMessage, Stage
from securefl.secagg.server import AggregateResult, Rejection, SecAggServer
from securefl.secagg import crypto

__all__ = ["SessionReport", "run_session"]

ROUNDS = (
    Stage.ADVERTISE_KEYS,
    Stage.SHARE_KEYS,
    Stage.MASKED_INPUT_COLLECTION,
    Stage.CONSISTENCY_CHECK,
    Stage.UNMASKING,
)


@dataclass
class SessionReport:
    """Outcome of a simulated session, with its costs."""

    result: AggregateResult | None
    stage: Stage
    abort_reason: str | None
    client_stages: dict[int, Stage]
    rejections: list[Rejection]
    client_seconds: dict[Stage, float] = field(default_factory=dict)
    server_seconds: dict[Stage, float] = field(default_factory=dict)
    bytes_up: dict[int, int] = field(default_factory=dict)
    bytes_down: dict[int, int] = field(default_factory=dict)
    revealed: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    """Per client that answered Unmasking: (peers whose self-mask share it revealed,
    peers whose key share it revealed)."""


def run_session(
    config: SecAggConfig,
    updates: Sequence[npt.NDArray[np.floating]],
    weights: Sequence[int] | None = None,
    *,
    ids: Sequence[int] | None = None,
    dropouts: Mapping[int, Stage] | None = None,
    identity_keys: Mapping[int, Ed25519PrivateKey] | None = None,
    rng: Callable[[int], bytes] | None = None,
    threads: int | None = None,
    tamper: Callable[[int, Stage, bytes], bytes] | None = None,
) -> SessionReport:
    """Simulate one session.

    Parameters
    ----------
    config:
        Session parameters.
    updates, weights:
        One flat update and integer weight per client (weights default to 1).
    ids:
        Client ids (default 0..n-1).
    dropouts:
        client id -> the round before which it vanishes: it sends nothing for that
        round or any later one.
    identity_keys:
        Authenticated mode: each client's Ed25519 key (generated when omitted).
    rng:
        Randomness for all parties; a seeded ``securefl.testing.drbg.Drbg`` makes
        the session reproducible. ``os.urandom`` by default.
    threads:
        Threads each party may use for masking.
    tamper:
        Test hook: ``tamper(client_id, stage, wire_bytes)`` may alter a client's
        upload before the server decodes it.
    """
    n = len(updates)
    ids = list(range(n)) if ids is None else list(ids)
    weights = [1] * n if weights is None else list(weights)
    if not len(ids) == len(weights) == n:
        raise ValueError("updates, weights and ids must have one entry per client")
    source = rng or os.urandom
    dropouts = dict(dropouts or {})
    identities: dict[int, Ed25519PrivateKey] = {}
    public_identities: dict[int, bytes] | None = None
    if config.authenticated:
        identities = dict(identity_keys or {})
        for i in ids:
            identities.setdefault(i, Ed25519PrivateKey.from_private_bytes(source(32)))
        public_identities = {i: crypto.public_bytes(k) for i, k in identities.items()}

    clients = {
        i: SecAggClient(
            i, config, x, w,
            identity_key=identities.get(i),
            identity_public_keys=public_identities,
            rng=source, threads=threads,
        )
        for i, x, w in zip(ids, updates, weights, strict=True)
    }
    server = SecAggServer(config, identity_public_keys=public_identities, rng=source, threads=threads)
    report = SessionReport(None, Stage.ADVERTISE_KEYS, None, {}, server.rejections)
    report.bytes_up = dict.fromkeys(ids, 0)
    report.bytes_down = dict.fromkeys(ids, 0)
    gone: set[int] = set()
    max_dimension = config.dimension + 1

    start = server.start()
    inbox: dict[int, ServerMessage] = dict.fromkeys(ids, start)
    while server.stage in ROUNDS:
        stage = server.stage
        assert stage is not None
        client_time = server_time = 0.0
        for cid, message in inbox.items():
            if dropouts.get(cid) == stage:
                gone.add(cid)
            if cid in gone:
                continue
            down = codec.encode(message)
            report.bytes_down[cid] += len(down)
            t0 = time.perf_counter()
            reply = clients[cid].handle(codec.decode(down))  # type: ignore[arg-type]
            client_time += time.perf_counter() - t0
            if reply is None:
                continue
            up = codec.encode(reply)
            if tamper is not None:
                up = tamper(cid, stage, up)
            report.bytes_up[cid] += len(up)
            t0 = time.perf_counter()
            try:
                decoded = codec.decode(up, max_dimension=max_dimension)
            except Exception as exc:  # InvalidMessage: a transport drops the message
                server.rejections.append(Rejection(cid, stage, f"undecodable: {exc}"))
            else:
                server.receive(cid, decoded)  # type: ignore[arg-type]
                if stage == Stage.UNMASKING:
                    r = decoded
                    report.revealed[cid] = (
                        tuple(i for i, _ in r.self_mask_shares),  # type: ignore[union-attr]
                        tuple(i for i, _ in r.key_shares),  # type: ignore[union-attr]
                    )
            server_time += time.perf_counter() - t0
        t0 = time.perf_counter()
        inbox = server.close_round()
        server_time += time.perf_counter() - t0
        report.client_seconds[stage] = client_time
        report.server_seconds[stage] = server_time
    for cid, message in inbox.items():  # final notices (aborts)
        if cid not in gone:
            clients[cid].handle(message)
    report.result = server.result
    report.stage = server.stage or Stage.ABORTED
    report.abort_reason = server.abort_reason
    report.client_stages = {i: c.stage for i, c in clients.items()}
    return report


