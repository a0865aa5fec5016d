"""Shared setup for protocol tests: configs, updates and a step-by-step session."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from securefl.encoding import FixedPointEncoder, RingSum, decoded
from securefl.secagg import codec, crypto
from securefl.secagg.client import SecAggClient
from securefl.secagg.config import GraphKind, SecAggConfig
from securefl.secagg.messages import ClientMessage, ServerMessage, Stage
from securefl.secagg.server import SecAggServer
from securefl.testing.drbg import Drbg


def make_config(
    n: int,
    *,
    t: int | None = None,
    d: int = 64,
    graph: str = "complete",
    degree: int | None = None,
    bits: int = 32,
    max_weight: int = 10,
    authenticated: bool = False,
    clip: float = 1.0,
) -> SecAggConfig:
    kind = GraphKind(graph)
    k = n - 1 if kind is GraphKind.COMPLETE else degree
    assert k is not None
    return SecAggConfig(
        num_clients=n,
        threshold=t if t is not None else max(2, k // 2 + 1),
        dimension=d,
        bits=bits,
        clip=clip,
        max_weight=max_weight,
        graph=kind,
        degree=degree if kind is GraphKind.HARARY else None,
        authenticated=authenticated,
    )


def make_updates(n: int, d: int, seed: int = 1) -> tuple[list[np.ndarray], list[int]]:
    data = np.random.default_rng(seed)  # test data, not key material
    updates = [data.uniform(-1.2, 1.2, d).astype(np.float32) for _ in range(n)]
    weights = [int(w) for w in data.integers(1, 11, n)]
    return updates, weights


def expected_mean(config: SecAggConfig, updates, weights, contributors) -> np.ndarray:
    xs = np.stack(
        [np.clip(updates[i].astype(np.float64), -config.clip, config.clip) for i in contributors]
    )
    w = np.array([weights[i] for i in contributors], dtype=np.float64)
    return (w[:, None] * xs).sum(axis=0) / w.sum()


def assert_close_to_plain(config, result, updates, weights) -> None:
    assert result is not None
    if isinstance(result, RingSum):  # the server's own result: the ring sum, decoded here
        result = decoded(result, FixedPointEncoder.for_config(config))
    want = expected_mean(config, updates, weights, result.contributors)
    err = np.max(np.abs(result.weighted_mean - want))
    # Each client's scaled value moves by less than one step 2^-p; the mean scales by W / N.
    # Decoding a 64-bit sum in float64 adds a few ulps of m c (visible only for wide rings).
    m = len(result.contributors)
    factor = m * config.max_weight / result.total_weight
    float64_error = 8 * m * config.clip * np.finfo(np.float64).eps
    assert err <= factor * (config.fixed_point.precision + float64_error) * (1 + 1e-9), err
    assert result.total_weight == sum(weights[i] for i in result.contributors)


@dataclass
class Session:
    """A session driven round by round, with every message through the codec."""

    config: SecAggConfig
    server: SecAggServer
    clients: dict[int, SecAggClient]
    inbox: dict[int, ServerMessage]

    @classmethod
    def create(
        cls,
        config: SecAggConfig,
        n: int,
        seed: str = "session",
        *,
        updates: dict[int, np.ndarray] | None = None,
        weights: dict[int, int] | None = None,
        **client_kwargs,
    ) -> Session:
        """``updates`` / ``weights`` replace the generated ones for those clients."""
        made, made_weights = make_updates(n, config.dimension)
        updates = {i: (updates or {}).get(i, made[i]) for i in range(n)}
        weights = {i: (weights or {}).get(i, made_weights[i]) for i in range(n)}
        rng = Drbg(seed)
        clients = {
            i: SecAggClient(i, config, updates[i], weights[i], rng=rng, **client_kwargs)
            for i in range(n)
        }
        server = SecAggServer(config, rng=rng)
        start = server.start()
        return cls(config, server, clients, dict.fromkeys(clients, start))

    @classmethod
    def create_authenticated(cls, config: SecAggConfig, n: int, seed: str) -> Session:
        """Like :meth:`create`, with fixed enrolled Ed25519 identities for clients 0..n-1."""
        keys = {i: Ed25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32) for i in range(n)}
        public = {i: crypto.public_bytes(k) for i, k in keys.items()}
        updates, weights = make_updates(n, config.dimension)
        rng = Drbg(seed)
        clients = {
            i: SecAggClient(
                i,
                config,
                updates[i],
                weights[i],
                identity_key=keys[i],
                identity_public_keys=public,
                rng=rng,
            )
            for i in range(n)
        }
        server = SecAggServer(config, identity_public_keys=public, rng=rng)
        return cls(config, server, clients, dict.fromkeys(clients, server.start()))

    def deliver(self, skip: set[int] = frozenset()) -> dict[int, ClientMessage]:
        """Give each client its message; return the (decoded) replies."""
        replies = {}
        for cid, message in self.inbox.items():
            if cid in skip:
                continue
            reply = self.clients[cid].handle(codec.decode(codec.encode(message)))
            if reply is not None:
                replies[cid] = codec.decode(codec.encode(reply))
        return replies

    def round(self, skip: set[int] = frozenset()) -> dict[int, ClientMessage]:
        replies = self.deliver(skip)
        for cid, reply in replies.items():
            self.server.receive(cid, reply)
        self.inbox = self.server.close_round()
        return replies

    def run_until(self, stage: Stage) -> None:
        while self.server.stage != stage:
            if self.server.stage in (Stage.COMPLETED, Stage.ABORTED):
                raise AssertionError(
                    f"session ended ({self.server.stage.value}: {self.server.abort_reason}) "
                    f"before {stage.value}"
                )
            self.round()
