"""Run a whole SecAgg session in one process: n clients, one server, a dropout schedule.

Every message goes through the binary codec, as it would on a network, so the
simulator measures real message sizes and exercises the decoder. Used by the tests,
the demo and the benchmarks.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import time
import tracemalloc
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from securefl import vectors
from securefl.encoding import AggregateResult, RingInput, decoded, encoder_for
from securefl.encoding.fixed_point import as_ring_input
from securefl.errors import InvalidMessage
from securefl.secagg import codec, crypto
from securefl.secagg.client import SecAggClient
from securefl.secagg.config import SecAggConfig
from securefl.secagg.messages import ROUNDS, ServerMessage, Stage, UnmaskingResponse
from securefl.secagg.server import Rejection, SecAggServer

__all__ = ["SessionReport", "run_session"]


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
    aggregate: vectors.Update | None = None
    """The weighted mean in the clients' own structure (arrays, dict, state_dict)."""
    wall_seconds: dict[Stage, float] = field(default_factory=dict)
    server_peak_bytes: int | None = None
    """With ``measure_memory``: peak Python/NumPy heap growth of the server process
    over the session (tracemalloc). With ``processes`` it excludes the clients and
    includes the transport's in-flight messages (one per worker)."""


def flatten_updates(
    updates: Sequence[vectors.Update],
) -> tuple[list[npt.NDArray[np.floating]], vectors.Layout]:
    """Deprecated: :func:`securefl.vectors.flatten_all`."""
    warnings.warn(
        "securefl.transports.inmemory.flatten_updates is deprecated; use "
        "securefl.vectors.flatten_all",
        DeprecationWarning,
        stacklevel=2,
    )
    return vectors.flatten_all(updates)


Reply = Callable[[int, "bytes | None", float], None]


class _InProcessClients:
    """Clients in this process, run one after another."""

    def __init__(self, clients: dict[int, SecAggClient]) -> None:
        self.clients = clients

    def run(self, batch: dict[int, bytes], reply: Reply) -> None:
        for cid, down in batch.items():
            t0 = time.perf_counter()
            answer = self.clients[cid].handle(codec.decode_from_server(down))
            seconds = time.perf_counter() - t0
            reply(cid, None if answer is None else codec.encode(answer), seconds)

    def stages(self) -> dict[int, Stage]:
        return {i: c.stage for i, c in self.clients.items()}

    def close(self) -> None:
        pass


ClientSpec = tuple[int, SecAggConfig, "RingInput | npt.NDArray[Any]", int]
"""(client id, config, flat update, weight): what a worker needs to create a client."""


def _worker(
    conn: multiprocessing.connection.Connection,
    specs: list[ClientSpec],
    seed: bytes | None,
    threads: int | None,
) -> None:
    """A client process: owns its clients (their secrets never leave it) and answers
    batches of wire messages, one reply at a time."""
    from securefl.primitives.keystream_rng import seeded

    rng = os.urandom if seed is None else seeded(seed).read
    clients: dict[int, SecAggClient] = {}
    identities: dict[int, bytes] = {}
    keys: dict[int, Ed25519PrivateKey] = {}
    for cid, config, _update, _weight in specs:
        if config.authenticated:
            keys[cid] = Ed25519PrivateKey.from_private_bytes(rng(32))
            identities[cid] = crypto.public_bytes(keys[cid])
    conn.send(identities)
    enrolled = conn.recv()
    for cid, config, update, weight in specs:
        clients[cid] = SecAggClient(
            cid,
            config,
            update,
            weight,
            identity_key=keys.get(cid),
            identity_public_keys=enrolled,
            rng=rng,
            threads=threads,
        )
    runner = _InProcessClients(clients)
    while True:
        command = conn.recv()
        if command[0] == "run":
            runner.run(command[1], lambda cid, up, sec: conn.send(("reply", cid, up, sec)))
            conn.send(("done",))
        elif command[0] == "stages":
            conn.send(runner.stages())
        else:
            break


class _PooledClients:
    """Clients spread over worker processes; only wire bytes cross process borders."""

    def __init__(
        self, processes: int, specs: list[ClientSpec], seed: bytes | None, threads: int | None
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        groups = [specs[i::processes] for i in range(processes) if specs[i::processes]]
        self.owner: dict[int, int] = {}
        self.conns = []
        self.procs = []
        for w, group in enumerate(groups):
            parent, child = ctx.Pipe()
            worker_seed = None if seed is None else seed + b"/worker/%d" % w
            proc = ctx.Process(
                target=_worker, args=(child, group, worker_seed, threads), daemon=True
            )
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)
            for spec in group:
                self.owner[spec[0]] = w
        self.identities: dict[int, bytes] = {}
        for conn in self.conns:
            self.identities.update(conn.recv())

    def enroll(self, public: dict[int, bytes] | None) -> None:
        for conn in self.conns:
            conn.send(public)

    def run(self, batch: dict[int, bytes], reply: Reply) -> None:
        parts: list[dict[int, bytes]] = [{} for _ in self.conns]
        for cid, down in batch.items():
            parts[self.owner[cid]][cid] = down
        for conn, part in zip(self.conns, parts, strict=True):
            conn.send(("run", part))
        busy = list(self.conns)
        while busy:
            for ready in multiprocessing.connection.wait(busy):
                conn = cast("multiprocessing.connection.Connection", ready)
                message = conn.recv()
                if message[0] == "done":
                    busy.remove(conn)
                else:
                    _, cid, up, seconds = message
                    reply(cid, up, seconds)

    def stages(self) -> dict[int, Stage]:
        out: dict[int, Stage] = {}
        for conn in self.conns:
            conn.send(("stages",))
            out.update(conn.recv())
        return out

    def close(self) -> None:
        for conn in self.conns:
            conn.send(("stop",))
        for proc in self.procs:
            proc.join(timeout=10)


def run_session(
    config: SecAggConfig,
    updates: Sequence[vectors.Update],
    weights: Sequence[int] | None = None,
    *,
    ids: Sequence[int] | None = None,
    dropouts: Mapping[int, Stage] | None = None,
    identity_keys: Mapping[int, Ed25519PrivateKey] | None = None,
    rng: Callable[[int], bytes] | None = None,
    threads: int | None = None,
    processes: int | None = None,
    seed: bytes | None = None,
    measure_memory: bool = False,
    tamper: Callable[[int, Stage, bytes], bytes] | None = None,
) -> SessionReport:
    """Simulate one session.

    Parameters
    ----------
    config:
        Session parameters; ``config.dimension`` must be the flattened size.
    updates, weights:
        One update per client (a numpy array, a dict or list of arrays, or a torch
        state_dict, all with the same layout) and integer weights (default 1). Or one
        :class:`~securefl.encoding.RingInput` per client (an encoder's output, or the
        ring vectors of a ring-input session): used as they are, and the report's
        ``aggregate`` is then ``None`` (the caller holds the layout).
    ids:
        Client ids (default 0..n-1).
    dropouts:
        client id -> the round before which it vanishes: it sends nothing for that
        round or any later one.
    identity_keys:
        Authenticated mode, in-process clients: each client's Ed25519 key (generated
        when omitted).
    rng:
        In-process randomness for all parties; a seeded
        ``securefl.testing.drbg.Drbg`` makes the session reproducible. ``os.urandom``
        by default.
    threads:
        Threads each party may use for masking.
    processes:
        Run the clients in this many worker processes (the server stays here);
        ``None`` runs them one after another in this process.
    seed:
        With ``processes``: seed of the workers' deterministic randomness (tests);
        ``None`` uses ``os.urandom``.
    measure_memory:
        Record the server process's peak heap growth (slower: tracemalloc).
    tamper:
        Test hook: ``tamper(client_id, stage, wire_bytes)`` may alter a client's
        upload before the server decodes it.
    """
    n = len(updates)
    flat: list[RingInput | npt.NDArray[Any]]
    layout: vectors.Layout | None
    if config.ring_input or all(isinstance(u, RingInput) for u in updates):
        # Already in the ring (securefl.dp's encodings) or encoded by the caller (an
        # encoder's RingInput): handed over as they are, never flattened to floats
        # (exact only below 2^53) and never unflattened.
        flat = [as_ring_input(cast("npt.NDArray[Any]", u), config, 1) for u in updates]
        layout = None
    else:
        floats, layout = vectors.flatten_all(updates)
        flat = list(floats)
    ids = list(range(n)) if ids is None else list(ids)
    weights = [1] * n if weights is None else list(weights)
    if not len(ids) == len(weights) == n:
        raise ValueError("updates, weights and ids must have one entry per client")
    source = rng or os.urandom
    dropouts = dict(dropouts or {})

    public_identities: dict[int, bytes] | None = None
    runner: _InProcessClients | _PooledClients
    if processes is not None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        specs = [(i, config, x, w) for i, x, w in zip(ids, flat, weights, strict=True)]
        runner = _PooledClients(processes, specs, seed, threads)
        public_identities = runner.identities if config.authenticated else None
        runner.enroll(public_identities)
    else:
        identities: dict[int, Ed25519PrivateKey] = {}
        if config.authenticated:
            identities = dict(identity_keys or {})
            for i in ids:
                identities.setdefault(i, Ed25519PrivateKey.from_private_bytes(source(32)))
            public_identities = {i: crypto.public_bytes(k) for i, k in identities.items()}
        runner = _InProcessClients(
            {
                i: SecAggClient(
                    i,
                    config,
                    x,
                    w,
                    identity_key=identities.get(i),
                    identity_public_keys=public_identities,
                    rng=source,
                    threads=threads,
                )
                for i, x, w in zip(ids, flat, weights, strict=True)
            }
        )
    del flat
    try:
        return _drive(
            config,
            runner,
            ids,
            layout,
            dropouts,
            public_identities,
            source,
            threads,
            measure_memory,
            tamper,
        )
    finally:
        runner.close()


def _drive(
    config: SecAggConfig,
    runner: _InProcessClients | _PooledClients,
    ids: list[int],
    layout: vectors.Layout | None,
    dropouts: dict[int, Stage],
    public_identities: dict[int, bytes] | None,
    source: Callable[[int], bytes],
    threads: int | None,
    measure_memory: bool,
    tamper: Callable[[int, Stage, bytes], bytes] | None,
) -> SessionReport:
    if measure_memory:
        tracemalloc.start()
        baseline = tracemalloc.get_traced_memory()[0]
    server = SecAggServer(
        config, identity_public_keys=public_identities, rng=source, threads=threads
    )
    report = SessionReport(None, Stage.ADVERTISE_KEYS, None, {}, server.rejections)
    report.bytes_up = dict.fromkeys(ids, 0)
    report.bytes_down = dict.fromkeys(ids, 0)
    gone: set[int] = set()
    max_dimension = config.dimension + 1
    inbox: dict[int, ServerMessage] = dict.fromkeys(ids, server.start())
    try:
        while server.stage in ROUNDS:
            stage = server.stage
            assert stage is not None
            times = {"client": 0.0, "server": 0.0}
            batch: dict[int, bytes] = {}
            for cid, message in inbox.items():
                if dropouts.get(cid) == stage:
                    gone.add(cid)
                if cid not in gone:
                    batch[cid] = codec.encode(message)
                    report.bytes_down[cid] += len(batch[cid])

            def on_reply(
                cid: int,
                up: bytes | None,
                seconds: float,
                stage: Stage = stage,
                times: dict[str, float] = times,
            ) -> None:
                times["client"] += seconds
                if up is None:
                    return
                if tamper is not None:
                    up = tamper(cid, stage, up)
                report.bytes_up[cid] += len(up)
                t0 = time.perf_counter()
                try:
                    decoded = codec.decode_from_client(up, max_dimension=max_dimension)
                except InvalidMessage as exc:  # a transport drops what it cannot parse
                    server.rejections.append(Rejection(cid, stage, f"undecodable: {exc}"))
                else:
                    server.receive(cid, decoded)
                    if isinstance(decoded, UnmaskingResponse):
                        report.revealed[cid] = (
                            tuple(i for i, _ in decoded.self_mask_shares),
                            tuple(i for i, _ in decoded.key_shares),
                        )
                times["server"] += time.perf_counter() - t0

            t_round = time.perf_counter()
            runner.run(batch, on_reply)
            t0 = time.perf_counter()
            inbox = server.close_round()
            times["server"] += time.perf_counter() - t0
            report.wall_seconds[stage] = time.perf_counter() - t_round
            report.client_seconds[stage] = times["client"]
            report.server_seconds[stage] = times["server"]
        # Final notices (aborts) reach the clients still there.
        runner.run(
            {cid: codec.encode(m) for cid, m in inbox.items() if cid not in gone},
            lambda cid, up, sec: None,
        )
    finally:
        if measure_memory:
            report.server_peak_bytes = tracemalloc.get_traced_memory()[1] - baseline
            tracemalloc.stop()
    report.stage = server.stage or Stage.ABORTED
    report.abort_reason = server.abort_reason
    report.client_stages = runner.stages()
    if server.result is not None:
        # SecAgg returns integers; the session's encoder says what they mean. A
        # ring-input session (securefl.dp) is decoded by its caller.
        encoder = encoder_for(config, threads=threads)
        t0 = time.perf_counter()
        try:
            report.result = decoded(server.result, encoder)
        except ValueError as exc:
            report.stage = Stage.ABORTED
            report.abort_reason = f"unmasked aggregate is corrupted: {exc}"
        else:
            if encoder is not None and layout is not None:
                report.aggregate = vectors.unflatten(report.result.weighted_mean, layout)
        report.server_seconds[Stage.UNMASKING] = (
            report.server_seconds.get(Stage.UNMASKING, 0.0) + time.perf_counter() - t0
        )
    return report
