"""The aggregation server of the network service (``securefl serve``).

A gRPC server (TLS, mutual TLS by default) that runs aggregation sessions back to back,
one per training round. The protocol of a session is a run
(:mod:`securefl.transports.service.runs`) that the session object starts: it drives the
same sans-IO state machines as the in-process simulator
(:class:`securefl.secagg.SecAggServer` for SecAgg / SecAgg+,
:class:`securefl.ckks.Aggregator` for CKKS); this module keeps only the transport
(listening, authentication, streams, deadlines) and has no per-protocol branch. The
transport decides only what the state machines leave to it (docs/PROTOCOL.md, "Parties and
rounds"): when a round's collection window closes. A round closes when every client
still expected has answered or when its deadline passes; whoever has not answered by
then has dropped out for good.

Each client long-polls with one gRPC call per round, ``/securefl.Aggregation/Exchange``:
it streams its frame for the round (``framing.Kind.SUBMIT``, in chunks) and the call
returns, when the round closes, the frame that opens the next one (or the result, or an
abort). The client's JOIN call stays open for the whole session: when it ends before the
session does (the client was killed, its connection broke, it gave up), the client is
gone at once, and no round waits for its deadline on its account; a client that fails a
check says so with a LEAVE frame. A round's deadline is only ever waited for a client
that is connected but silent (a stalled machine).
"""

from __future__ import annotations

import errno
import gc
import hashlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from securefl.encoding import AggregateResult
from securefl.errors import ConfigError, InvalidMessage, SecureFLError
from securefl.secagg.messages import Stage
from securefl.secagg.server import Rejection
from securefl.transports.service import framing
from securefl.transports.service.framing import Kind, Protocol
from securefl.transports.service.runs import Refused, ServerRun
from securefl.transports.service.sessions import (
    CKKSSession,
    SecAggSession,
    parse_join,
)
from securefl.transports.service.tls import ServerTLS, parse_client_id

if TYPE_CHECKING:
    import grpc  # type: ignore[import-untyped, unused-ignore]

    from securefl.dp import DPAggregate

__all__ = ["METHOD", "METHOD_SMALL", "AggregationServer", "ServiceOptions", "SessionOutcome"]

log = logging.getLogger(__name__)

SERVICE = "securefl.Aggregation"
METHOD = f"/{SERVICE}/Exchange"
"""Client-streaming in, server-streaming out: a frame of any size each way."""
METHOD_SMALL = f"/{SERVICE}/ExchangeSmall"
"""The same exchange for a frame that fits one gRPC message: a unary request spares the
client gRPC's request-streaming thread (most rounds' messages are small)."""

_LOG_EVERY = 10.0
"""Seconds between the server's "waiting for ..." log lines while it waits."""


def describe_ids(ids: Iterable[int]) -> str:
    """Client ids for a log line: all of them up to 10, else runs as ranges."""
    ordered = sorted(ids)
    if len(ordered) <= 10:
        return ", ".join(map(str, ordered))
    runs: list[str] = []
    start = prev = ordered[0]
    for i in [*ordered[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(runs)


def _clients(ids: Iterable[int]) -> str:
    ordered = sorted(ids)
    return f"client{'' if len(ordered) == 1 else 's'} {describe_ids(ordered)}"


def _bind_failure(address: str) -> str:
    """Why ``address`` cannot be listened on, found by trying it with a plain socket
    (gRPC says only "Failed to bind")."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        family, kind, proto, _, where = socket.getaddrinfo(host, int(port), 0, socket.SOCK_STREAM)[
            0
        ]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does
            probe.bind(where)
    except (OSError, ValueError) as exc:
        code = getattr(exc, "errno", None)
        if code == errno.EADDRINUSE:
            return (
                f"cannot listen on {address}: {address} is already in use (another "
                "`securefl serve`, or another program, listens there; choose another "
                "--address or stop it)"
            )
        if code == errno.EADDRNOTAVAIL:
            return f"cannot listen on {address}: {host} is not an address of this machine"
        if code == errno.EACCES:
            return (
                f"cannot listen on {address}: permission denied (ports below 1024 need privileges)"
            )
        return f"cannot listen on {address}: {exc}"
    return f"cannot listen on {address}"


@dataclass(frozen=True)
class ServiceOptions:
    """Deadlines and limits of the service.

    Parameters
    ----------
    round_timeout:
        Seconds a round collects answers; clients that have not answered by then are
        dropouts. It bounds how long a session waits for a dead or slow client.
    join_timeout:
        Seconds, from the first client's join, that the server waits for the others
        before it starts the session with those present (at least the protocol's
        minimum, else the joined clients get an abort and joining starts over).
    chunk_size:
        Bytes per gRPC message of a streamed frame.
    max_message:
        gRPC's per-message limit (``grpc.max_receive_message_length``); must exceed
        ``chunk_size``. Frames are limited separately, by what the session can need.
    threads:
        Threads of the state machines' native kernels (``None``: all cores).
    idle_timeout:
        Seconds a session may wait for its first client; then :meth:`AggregationServer.
        run` stops and says why in :attr:`AggregationServer.stop_reason` (``None``: wait
        for as long as it takes).
    """

    round_timeout: float = 30.0
    join_timeout: float = 60.0
    chunk_size: int = 1 << 20
    max_message: int = 4 << 20
    threads: int | None = None
    idle_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.round_timeout <= 0 or self.join_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if self.idle_timeout is not None and self.idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive (or None: no limit)")
        if not framing.HEADER <= self.chunk_size < self.max_message:
            raise ValueError("need frame header size <= chunk_size < max_message")


@dataclass
class SessionOutcome:
    """What one session (training round) ended with, as the server saw it."""

    session: int
    protocol: Protocol
    members: tuple[int, ...]
    """Clients that joined it."""
    stage: Stage
    abort_reason: str | None = None
    result: AggregateResult | None = None
    """SecAgg: the weighted mean (the server learns it; clients receive it). With
    differential privacy, the unmasked ring sum (``result.ring_sum``); see ``dp``."""
    dp: DPAggregate | None = None
    """With differential privacy (``SecAggSession.dp``): the noisy sum and mean the ring
    sum decodes to, exactly what every client computes from the result it receives."""
    contributors: tuple[int, ...] = ()
    rejections: list[Rejection] = field(default_factory=list)
    started: float = 0.0
    """``time.perf_counter()`` when the session's first round opened."""
    closed: float = 0.0
    """When its last round closed."""
    delivered: float = 0.0
    """When the last client finished receiving its final frame (0 if none did)."""
    round_seconds: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Per round: (seconds collecting answers, seconds closing it); CKKS has one round,
    reported as AdvertiseKeys."""
    departures: dict[int, str] = field(default_factory=dict)
    """Members that dropped out of the session, and how the server knew: its connection
    closed, it left (and its reason), or no answer in a round by the deadline."""


def _cut_off(context: grpc.ServicerContext) -> None:
    """End a call whose upload missed its deadline with ``DEADLINE_EXCEEDED`` (the
    handler's blocked read then fails and frees its thread)."""
    from grpc._cython import cygrpc  # type: ignore[attr-defined, import-untyped, unused-ignore]

    # grpc's public ServicerContext.cancel() says CANCELLED, which reads as the client's
    # doing; the underlying call can end with the status that names the cause.
    call: Any = getattr(getattr(context, "_rpc_event", None), "call", None)
    try:
        call.cancel(cygrpc.StatusCode.deadline_exceeded, "the frame did not arrive in time")
    except Exception:  # another grpc version's internals: the public, vaguer way
        context.cancel()


class _Refuse(Exception):
    """End a call with a gRPC status (raised inside the handler's lock-free parts)."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


@dataclass
class _Call:
    """One client's pending long-poll: ``answered`` once its reply is being sent."""

    client: int
    answered: bool = False
    session: int = 0


class AggregationServer:
    """Runs aggregation sessions over gRPC for enrolled clients.

    Parameters
    ----------
    session:
        The protocol and its parameters: :class:`SecAggSession` or :class:`CKKSSession`.
    tls:
        Server certificate and key; ``tls.client_ca`` set means mutual TLS: a client's
        id is its certificate's common name (``securefl-client-<id>``). Without it, only
        the authenticated SecAgg mode is allowed (identity keys enroll clients).
    enrolled:
        Ids allowed to join (default: the identity keys' ids in authenticated mode,
        else 0 .. num_clients - 1).
    options:
        Deadlines and limits.
    address:
        ``host:port`` to bind; port 0 picks a free one (see :attr:`port`).

    Raises
    ------
    ConfigError
        If neither mutual TLS nor the authenticated mode enrolls clients, or the TLS
        material is unusable (:meth:`ServerTLS.check`).
    SecureFLError
        If ``address`` cannot be listened on, with the reason (for example another
        server listens there: the port is bound exclusively).
    """

    def __init__(
        self,
        session: SecAggSession | CKKSSession,
        tls: ServerTLS,
        *,
        enrolled: Iterable[int] | None = None,
        options: ServiceOptions | None = None,
        address: str = "127.0.0.1:0",
    ) -> None:
        if tls.client_ca is None and not session.authenticated:
            raise ConfigError(
                "only enrolled clients may take part: use mutual TLS (a client CA) or the "
                "authenticated SecAgg mode (identity keys)"
            )
        tls.check()
        self.session = session
        self.options = options or ServiceOptions()
        self.protocol = session.protocol
        keys = session.identity_public_keys
        if enrolled is None:
            enrolled = keys.keys() if keys else range(session.num_clients)
        self.enrolled = frozenset(enrolled)
        self._mutual = tls.client_ca is not None
        try:
            self._identity_keys = {
                int(c): Ed25519PublicKey.from_public_bytes(bytes(k))
                for c, k in (keys or {}).items()
            }
        except ValueError as exc:
            raise ConfigError(f"malformed identity public key: {exc}") from None
        self._join_token = session.join_token
        self._limit = session.frame_limit
        self._dimension = session.dimension
        self.outcomes: list[SessionOutcome] = []
        # One lock, three conditions: the driver waits for answers (_cv), the handlers for
        # the next round to open (_opened), the open JOIN calls for their session's end
        # (_ended); an answer must not wake every waiting handler.
        lock = threading.Lock()
        self._cv = threading.Condition(lock)
        self._opened = threading.Condition(lock)
        self._ended = threading.Condition(lock)
        self._number = 0  # current session number (1, 2, ...)
        self._joining: dict[int, _Call] = {}  # clients waiting for the session to start
        self._refused: dict[int, str] = {}  # refused at the door, until they join: why
        self._in_flight: dict[int, object] = {}  # client -> the token of its one open call
        self._accepting = False
        self._first_join = 0.0
        self._idle_since = 0.0  # when the join phase last had nobody joined
        self._over = False  # the current session's final frames are out: presence ends
        self._last: int | None = None  # the last session run() will start
        self.stop_reason: str | None = None
        """Why :meth:`run` stopped before its sessions were done (the idle timeout)."""
        self._members: frozenset[int] = frozenset()
        self._round = -1  # the open round of the current session
        # (session, round) -> the frame each client receives when that round opens.
        self._outbox: dict[tuple[int, int], dict[int, list[bytes]]] = {}
        self._expected: set[int] = set()
        self._answered: set[int] = set()
        self._gone: set[int] = set()
        self._run: ServerRun | None = None  # the open session's protocol run
        self._stopped = False
        self._undelivered: dict[int, int] = {}  # session -> final frames not yet sent
        self._outcome: SessionOutcome | None = None
        self._outcomes: dict[int, SessionOutcome] = {}  # by session number
        self._server = self._build(tls, address)

    # ---- lifecycle --------------------------------------------------------------------------

    def _build(self, tls: ServerTLS, address: str) -> grpc.Server:
        import grpc  # type: ignore[import-untyped, unused-ignore]

        opts = self.options
        workers = 2 * self.session.num_clients + 8  # every client may hold a long-poll
        # Every client holds its JOIN call open for the session (its presence) and one
        # round call: 2n, and a few for refusals.
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="securefl-rpc"),
            options=[
                ("grpc.max_receive_message_length", opts.max_message),
                ("grpc.max_send_message_length", opts.max_message),
                # gRPC sets SO_REUSEPORT by default: a second server on the same port
                # would start without error and take half of the clients.
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=workers,
        )
        handlers: dict[str, Any] = {
            "Exchange": grpc.stream_stream_rpc_method_handler(self._exchange),
            "ExchangeSmall": grpc.unary_stream_rpc_method_handler(
                lambda request, context: self._exchange(iter((request,)), context)
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        credentials = grpc.ssl_server_credentials(
            [(tls.private_key, tls.certificate)],
            root_certificates=tls.client_ca,
            require_client_auth=self._mutual,
        )
        try:
            self.port = server.add_secure_port(address, credentials)
        except RuntimeError:  # grpcio >= 1.5x raises where older versions returned 0
            self.port = 0
        if self.port == 0:
            raise SecureFLError(_bind_failure(address))
        self.address = f"{address.rsplit(':', 1)[0]}:{self.port}"
        return server

    def run(
        self,
        sessions: int | None = None,
        *,
        on_outcome: Callable[[SessionOutcome], None] | None = None,
    ) -> list[SessionOutcome]:
        """Start serving and run ``sessions`` sessions (``None``: until :meth:`stop`).

        Returns the outcome of every session run; each is also passed to
        ``on_outcome`` as soon as it ends. With ``options.idle_timeout``, a session that
        no client joins in that time ends the run early (:attr:`stop_reason` says so).
        """
        # A server process runs only this loop from here on: the objects created so far
        # (imported modules, configuration) live until exit, and freezing them keeps the
        # cyclic garbage collector from traversing them on every collection.
        gc.freeze()
        self._server.start()
        try:
            done = 0
            while (sessions is None or done < sessions) and not self._stopped:
                if sessions is not None and done == sessions - 1:
                    self._last = self._number + 1
                outcome = self._run_session()
                if self.stop_reason is not None:
                    break
                if outcome is None:
                    continue
                done += 1
                self.outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)
            self._wait_delivered()
        finally:
            self.stop()
        return self.outcomes

    def stop(self, grace: float = 1.0) -> None:
        """Stop serving; calls still in flight end (their clients see an error)."""
        with self._cv:
            self._stopped = True
            self._cv.notify_all()
            self._opened.notify_all()
            self._ended.notify_all()
        self._server.stop(grace).wait()

    def _wait_delivered(self) -> None:
        # Let the last session's results reach their clients before shutting down.
        deadline = time.monotonic() + self.options.round_timeout
        with self._cv:
            while any(self._undelivered.values()) and not self._stopped:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)

    # ---- the driver: one session ----------------------------------------------------------

    def _run_session(self) -> SessionOutcome | None:
        """Gather joins, then run one session's rounds; ``None`` if too few joined (or
        nobody within the idle timeout: then ``stop_reason`` is set)."""
        opts = self.options
        with self._cv:
            self._number += 1
            number = self._number
            self._joining = {}
            self._gone = set()
            self._round = -1
            self._over = False
            self._accepting = True
            self._first_join = 0.0
            self._idle_since = time.monotonic()
            self._opened.notify_all()
            if not self._gather(number):
                return None
            self._accepting = False
            members = frozenset(self._joining)
            if len(members) < self.session.min_clients:
                reason = (
                    f"only {len(members)} clients joined session {number} within "
                    f"{opts.join_timeout:g} s; need {self.session.min_clients}"
                )
                log.warning("session %d: %s", number, reason)
                frames = {c: self._frame(Kind.ABORT, c, 0, reason.encode()) for c in members}
                self._publish(0, frames)
                self._over = True
                self._ended.notify_all()
                return None
            self._members = members
            missing = self._expected_joins() - members
            log.info(
                "session %d: starting with %s%s",
                number,
                _clients(members),
                f" (without {describe_ids(missing)})" if missing else "",
            )
            outcome = SessionOutcome(
                number, self.protocol, tuple(sorted(members)), Stage.ADVERTISE_KEYS
            )
            self._outcome = outcome
            self._outcomes[number] = outcome
            outcome.started = time.perf_counter()
            self._open(members)
            while True:
                opened = time.perf_counter()
                stage = outcome.stage
                self._collect(outcome)
                if self._stopped:
                    return None
                collected = time.perf_counter()
                over = self._close_round(outcome)
                now = time.perf_counter()
                outcome.round_seconds[stage.value] = (collected - opened, now - collected)
                if over:
                    break
            outcome.closed = time.perf_counter()
            return outcome

    def _expected_joins(self) -> set[int]:
        """The clients a session waits for (lock held): the enrolled, less those refused
        at the door since (they would not come with the same options)."""
        return set(self.enrolled) - set(self._refused)

    def _gather(self, number: int) -> bool:
        """Wait (lock held) until every expected client has joined, or the join window
        has passed since the first join; False if the server stopped or nobody joined
        within the idle timeout (``stop_reason`` then says so)."""
        opts = self.options
        next_log = time.monotonic()
        while not self._stopped:
            expected = self._expected_joins()
            want = min(len(expected), self.session.num_clients)
            joined = set(self._joining)
            now = time.monotonic()
            if joined and len(joined) >= want:
                return True
            waits = [next_log - now]
            if self._first_join:
                left = self._first_join + opts.join_timeout - now
                if left <= 0:
                    return True
                waits.append(left)
            elif opts.idle_timeout is not None:
                idle = self._idle_since + opts.idle_timeout - now
                if idle <= 0:
                    self.stop_reason = (
                        f"no client joined session {number} within {opts.idle_timeout:g} s"
                    )
                    if self._refused:
                        self.stop_reason += f"; refused: {self._refusals()}"
                    return False  # run() returns; its caller reports stop_reason
                waits.append(idle)
            if now >= next_log:
                self._log_joins(number, expected - joined, joined, want)
                next_log = now + _LOG_EVERY
                continue
            self._cv.wait(max(min(waits), 0.01))
        return False

    def _refusals(self) -> str:
        by_reason: dict[str, list[int]] = {}
        for client, reason in self._refused.items():
            by_reason.setdefault(reason, []).append(client)
        return "; ".join(f"{_clients(ids)} ({reason})" for reason, ids in by_reason.items())

    def _log_joins(self, number: int, waiting: set[int], joined: set[int], want: int) -> None:
        line = f"session {number}: waiting for {_clients(waiting)} to join"
        if joined:
            left = self._first_join + self.options.join_timeout - time.monotonic()
            line += f" ({len(joined)} of {want} joined; starting without them in {left:.0f} s)"
        if self._refused:
            line += f"; refused: {self._refusals()}"
        log.info("%s", line)

    def _collect(self, outcome: SessionOutcome) -> None:
        """Wait (lock held) until every client still expected in the open round has
        answered or is gone, or the round's deadline passes; whoever is still silent
        then has dropped out (it is connected, or it would be gone)."""
        opts = self.options
        stage = outcome.stage
        now = time.monotonic()
        deadline = now + opts.round_timeout
        next_log = now + _LOG_EVERY
        while not self._stopped:
            pending = self._expected - self._answered - self._gone
            now = time.monotonic()
            left = deadline - now
            if not pending or left <= 0:
                break
            if now >= next_log:
                log.info(
                    "session %d: %s: waiting for %s (%.0f s left of the round's %g s)",
                    outcome.session,
                    stage.value,
                    _clients(pending),
                    left,
                    opts.round_timeout,
                )
                next_log = now + _LOG_EVERY
            self._cv.wait(min(left, next_log - now))
        if self._stopped:
            return
        for client in sorted(self._expected - self._answered - self._gone):
            self._depart(
                client, f"no answer in {stage.value} within the round's {opts.round_timeout:g} s"
            )

    def _depart(self, client: int, how: str) -> None:
        """Record (lock held) that a member dropped out of the current session."""
        outcome = self._outcome
        if outcome is None or outcome.session != self._number or client in outcome.departures:
            return
        outcome.departures[client] = how
        log.warning("session %d: client %d dropped out: %s", self._number, client, how)

    def _open(self, members: frozenset[int]) -> None:
        """Start the session's protocol run (lock held) and publish its first round."""
        run = self.session.start(members, self.options.threads)
        self._run = run
        assert self._outcome is not None
        self._outcome.rejections = run.rejections
        first = run.open()
        self._publish(0, {c: self._frame(Kind.PROTOCOL, c, 0, *p) for c, p in first.items()})
        self._expected = set(first)

    def _close_round(self, outcome: SessionOutcome) -> bool:
        """Close the open round (lock held); publish what the run gives. True when the
        session is over."""
        run = self._run
        assert run is not None
        r = self._round
        waiting = self._answered - self._gone  # clients blocked on this round's answer
        closed = run.close_round(outcome, self._gone)
        if closed.final is None:
            frames = {c: self._frame(Kind.PROTOCOL, c, r + 1, *p) for c, p in closed.next.items()}
            self._publish(r + 1, frames)
            self._expected = set(frames)
            return False
        notify = waiting | closed.also_notify
        self._publish_final(r + 1, dict.fromkeys(notify, closed.final))
        return True

    def _frame(
        self, kind: Kind, client: int, round_: int, *payload: bytes | memoryview
    ) -> list[bytes]:
        """A frame as the gRPC messages that carry it."""
        parts = framing.encode(kind, self.protocol, client, self._number, round_, *payload)
        return list(framing.chunks(parts, self.options.chunk_size))

    def _publish(self, round_: int, frames: dict[int, list[bytes]]) -> None:
        self._round = round_
        self._answered = set()
        self._outbox[self._number, round_] = frames
        for key in [k for k in self._outbox if k[0] < self._number - 1]:
            del self._outbox[key]  # nobody can still wait for those
        self._opened.notify_all()

    def _publish_final(
        self, round_: int, what: Mapping[int, tuple[Kind, Sequence[bytes | memoryview]]]
    ) -> None:
        # Every client gets the same payload: cut it into messages once, and give each
        # client its own header in front of the shared chunks (no copy per client).
        shared: dict[int, tuple[int, list[bytes]]] = {}
        frames: dict[int, list[bytes]] = {}
        for c, (kind, payload) in what.items():
            if id(payload) not in shared:
                length = sum(len(memoryview(p).cast("B")) for p in payload)
                shared[id(payload)] = (
                    length,
                    list(framing.chunks(payload, self.options.chunk_size)),
                )
            length, chunks = shared[id(payload)]
            head = framing.header(kind, self.protocol, c, self._number, round_, length)
            frames[c] = [head, *chunks]
        # Only clients blocked on this round's answer will fetch theirs: a frame for one
        # that never answered (dead, or late) must not hold up the shutdown.
        self._undelivered[self._number] = len(frames.keys() & (self._answered - self._gone))
        self._publish(round_, frames)
        self._expected = set()
        self._over = True  # the clients' JOIN calls (their presence) may end now
        self._ended.notify_all()

    # ---- the RPC handler ---------------------------------------------------------------------

    def _exchange(
        self, requests: Iterator[bytes], context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        import grpc  # type: ignore[import-untyped, unused-ignore]

        token = object()  # this call's claim on its client's in-flight slot
        holder: int | None = None
        try:
            try:
                if self._mutual:
                    # Unenrolled certificates are refused before a single chunk is read:
                    # a stalled upload from one could otherwise hold a worker thread.
                    holder = self._certificate_id(context)
                    self._claim(holder, token, context)
                frame = self._read_frame(requests, context)
                if frame is None:
                    return  # the client went away mid-upload, or stalled: nothing to answer
                client = self._identify(frame, context)
                if holder is None:
                    holder = client
                    self._claim(client, token, context)
                if frame.protocol != self.protocol:
                    raise _Refuse(
                        "FAILED_PRECONDITION",
                        f"this server runs {self.protocol.name}, not {frame.protocol.name}",
                    )
                call = _Call(client)
                if frame.kind is Kind.JOIN:
                    self._check_join(client, frame.payload)
                    parts = self._join(call, context)
                elif frame.kind is Kind.SUBMIT:
                    parts = self._submit(call, frame, context)
                elif frame.kind is Kind.LEAVE:
                    self._leave(client, frame)
                    return  # nothing to answer: the call ends OK
                else:
                    raise _Refuse("INVALID_ARGUMENT", f"a client cannot send {frame.kind.name}")
            except _Refuse as exc:
                context.abort(getattr(grpc.StatusCode, exc.code), exc.details)
                return  # abort raises: the call ends with that status
            if parts is None:
                if self._stopped and context.is_active():
                    context.abort(grpc.StatusCode.UNAVAILABLE, self._shutdown_reason())
                return  # the client has gone: nobody to answer
            present = frame.kind is Kind.JOIN and framing.kind_of(parts) is Kind.PROTOCOL
            if present:
                # The JOIN call stays open for the session: the client's presence. Its
                # round calls take the in-flight slot, from before it reads the frame
                # that lets it send its first one (it does not wait for this call's end).
                self._release(client, token)
                holder = None
            yield from self._answer(frame.session, parts)
            if present:
                self._stay(call, context)
        finally:
            if holder is not None:
                self._release(holder, token)

    def _shutdown_reason(self) -> str:
        if self._last is not None and self._number >= self._last:
            return (
                f"the server has run its {len(self.outcomes)} session"
                f"{'' if len(self.outcomes) == 1 else 's'} and is shutting down"
            )
        return "the server is shutting down"

    def _stay(self, call: _Call, context: grpc.ServicerContext) -> None:
        """Hold a JOIN call open while its session runs (the client's presence), so
        that its end, when the client dies or gives up, is seen at once."""
        with self._cv:
            while (
                self._number == call.session
                and not self._over
                and not self._stopped
                and context.is_active()
            ):
                # The call's end is noticed by its callback (_watch_presence); this wait
                # only frees the thread once the session is over.
                self._ended.wait(2.0)

    def _answer(self, session: int, parts: list[bytes]) -> Iterator[bytes]:
        """Stream ``parts``; count a final frame as delivered once it is sent."""
        final = framing.kind_of(parts) in (Kind.RESULT, Kind.ABORT)
        try:
            yield from parts
        finally:
            if final:
                self._delivered(session)

    def _read_frame(
        self, requests: Iterator[bytes], context: grpc.ServicerContext
    ) -> framing.Frame | None:
        """Assemble the call's frame within ``round_timeout``; ``None`` if the client
        went away or was too slow (then the call has ended with ``DEADLINE_EXCEEDED``).

        Raises
        ------
        _Refuse
            ``INVALID_ARGUMENT`` if the frame is malformed.
        """
        # A client that announces a frame and never sends it (slowloris) would hold a
        # worker thread for as long as it likes: cut the upload off at the deadline.
        timer = threading.Timer(self.options.round_timeout, _cut_off, (context,))
        timer.daemon = True
        timer.start()
        try:
            return framing.assemble(requests, self._limit)
        except InvalidMessage as exc:
            raise _Refuse("INVALID_ARGUMENT", f"malformed frame: {exc}") from None
        except Exception:  # the client went away mid-upload, or was cut off
            return None
        finally:
            timer.cancel()

    def _claim(self, client: int, token: object, context: grpc.ServicerContext) -> None:
        """Take ``client``'s single in-flight slot for this call (``token``).

        Raises
        ------
        _Refuse
            ``ALREADY_EXISTS`` if another call of the same client is in flight.
        """
        with self._cv:
            # One id's parallel calls (a flood of stalled streams) must not starve the
            # worker pool that every enrolled client's long-poll needs.
            if client in self._in_flight:
                raise _Refuse("ALREADY_EXISTS", f"client {client} already has a call in flight")
            self._in_flight[client] = token
        context.add_callback(lambda: self._release(client, token))

    def _release(self, client: int, token: object) -> None:
        with self._cv:
            if self._in_flight.get(client) is token:
                del self._in_flight[client]

    def _certificate_id(self, context: grpc.ServicerContext) -> int:
        """The enrolled client id that the mutual-TLS certificate names.

        Raises
        ------
        _Refuse
            ``PERMISSION_DENIED`` if the certificate names no single client id, or one
            that is not enrolled.
        """
        names: Any = context.auth_context().get("x509_common_name", [])
        ids = {parse_client_id(bytes(n).decode("utf-8", "replace")) for n in names}
        if len(ids) != 1:
            raise _Refuse("PERMISSION_DENIED", "the client certificate names no single client")
        (client,) = ids
        if client is None or client not in self.enrolled:
            raise _Refuse("PERMISSION_DENIED", f"client {client} is not enrolled")
        return client

    def _check_join(self, client: int, payload: memoryview) -> None:
        """Refuse a client whose declared session options (or DP plan) differ from the
        server's, naming each difference, before it takes a seat.

        Raises
        ------
        _Refuse
            ``INVALID_ARGUMENT`` for a malformed JOIN, ``FAILED_PRECONDITION`` naming
            every differing option (the client's value and the server's).
        """
        try:
            request = parse_join(payload)
        except InvalidMessage as exc:
            raise _Refuse("INVALID_ARGUMENT", f"malformed JOIN: {exc}") from None
        # A client encoding with another DP plan (noise, scale, rotation) would corrupt
        # the ring sum without failing any protocol check: refuse it before it joins.
        if request.dp != self._join_token:
            if not self._join_token:
                why = "this server runs without differential privacy; the client has a DP plan"
            elif not request.dp:
                why = "this server runs with differential privacy; the client has no DP plan"
            else:
                why = (
                    "the client's DP plan differs from the server's (epsilon, delta, clip, "
                    "mechanism, dropout rate, rounds, bits, clients and dimension must match)"
                )
            self._refuse_join(client, "its DP plan differs", why)
        differences: list[tuple[str, str, str]] = []
        try:
            differences = self.session.join_differences(request)
        except ConfigError as exc:
            self._refuse_join(client, "its configuration does not decode", str(exc))
        if request.dimension is not None and request.dimension != self._dimension:
            differences.append(("--dim", str(request.dimension), str(self._dimension)))
        if differences:
            names = ", ".join(option.split(" ")[0] for option, _, _ in differences)
            told = "; ".join(f"{o}: this client {c}, the server {s}" for o, c, s in differences)
            logged = "; ".join(f"{o}: client {c}, server {s}" for o, c, s in differences)
            self._refuse_join(
                client,
                f"its session options differ: {names}",
                f"this client's session options differ from the server's: {told}",
                logged,
            )

    def _refuse_join(self, client: int, short: str, told: str, logged: str | None = None) -> None:
        """Refuse a JOIN: remember why (a session does not wait for a refused client
        until it joins with matching options), log it, and end the call.

        Raises
        ------
        _Refuse
            Always (``FAILED_PRECONDITION`` with ``told``).
        """
        with self._cv:
            self._refused[client] = short
            self._cv.notify_all()
            log.warning(
                "session %d: refused client %d: %s",
                self._number,
                client,
                f"{short.removeprefix('its ')}: {logged}" if logged else told,
            )
        raise _Refuse("FAILED_PRECONDITION", told)

    def _leave(self, client: int, frame: framing.Frame) -> None:
        """A client that stops taking part (it failed a check): gone at once, with its
        reason; a LEAVE for a session that is not running changes nothing."""
        reason = _text(frame.payload) or "no reason given"
        with self._cv:
            if frame.session != self._number or self._accepting or self._over:
                return
            if client not in self._members or client in self._gone:
                return
            self._gone.add(client)
            self._depart(client, f"it left: {reason}")
            self._cv.notify_all()

    def _delivered(self, session: int) -> None:
        with self._cv:
            left = self._undelivered.get(session, 0) - 1
            self._undelivered[session] = left
            if left <= 0:
                del self._undelivered[session]
                outcome = self._outcomes.get(session)
                if outcome is not None:
                    outcome.delivered = time.perf_counter()
            self._cv.notify_all()

    def _identify(self, frame: framing.Frame, context: grpc.ServicerContext) -> int:
        claimed = frame.client_id
        # A certificate names exactly one client; the frame must not claim another.
        if self._mutual and claimed != self._certificate_id(context):
            raise _Refuse(
                "PERMISSION_DENIED",
                f"the client certificate does not identify client {claimed}",
            )
        if claimed not in self.enrolled:
            raise _Refuse("PERMISSION_DENIED", f"client {claimed} is not enrolled")
        if not self._mutual or (frame.signature and claimed in self._identity_keys):
            self._verify_signature(frame)
        return claimed

    def _verify_signature(self, frame: framing.Frame) -> None:
        """Check the frame's signature by the claimed client's enrolled identity key.

        Raises
        ------
        _Refuse
            ``UNAUTHENTICATED`` if the frame is unsigned, the id has no enrolled key, or
            the signature does not verify.
        """
        claimed = frame.client_id
        # Without mutual TLS nothing else ties a frame to its sender: an outsider with
        # only the CA certificate could otherwise join or submit as an enrolled client.
        key = self._identity_keys.get(claimed)
        if key is None:
            raise _Refuse("UNAUTHENTICATED", f"client {claimed} has no enrolled identity key")
        if not frame.signature:
            raise _Refuse("UNAUTHENTICATED", f"the frame for client {claimed} is not signed")
        # The payload was hashed as it streamed in (framing.assemble): no second pass.
        payload_hash = frame.payload_sha256 or hashlib.sha256(frame.payload).digest()
        digest = framing.signing_digest(frame.raw_header, payload_hash)
        try:
            key.verify(frame.signature, digest)
        except InvalidSignature:
            raise _Refuse(
                "UNAUTHENTICATED",
                f"the frame's signature is not client {claimed}'s enrolled identity key",
            ) from None

    def _watch(self, call: _Call, context: grpc.ServicerContext) -> bool:
        """Mark the client gone if its round call ends before its answer is sent; False
        if the call has ended already."""

        def ended() -> None:
            with self._cv:
                if not call.answered and call.session == self._number and not self._over:
                    if call.client not in self._gone:
                        self._gone.add(call.client)
                        self._depart(call.client, "its connection closed")
                    self._cv.notify_all()

        added: bool = context.add_callback(ended)
        return added

    def _watch_presence(self, call: _Call, context: grpc.ServicerContext) -> bool:
        """When the JOIN call ends before its session does, the client is gone: it
        leaves the join phase, or the running session (no round waits for it). False
        if the call has ended already."""

        def ended() -> None:
            with self._cv:
                if call.session != self._number or self._over:
                    return  # its session is over: the call's end says nothing
                client = call.client
                if self._accepting:
                    if self._joining.get(client) is call:
                        del self._joining[client]
                        log.info(
                            "session %d: client %d left before it started", call.session, client
                        )
                        if not self._joining:
                            # Nobody is left: the join window starts again with the next.
                            self._first_join = 0.0
                            self._idle_since = time.monotonic()
                elif client in self._members and client not in self._gone:
                    self._gone.add(client)
                    self._depart(client, "its connection closed")
                self._cv.notify_all()

        added: bool = context.add_callback(ended)
        return added

    def _join(self, call: _Call, context: grpc.ServicerContext) -> list[bytes] | None:
        client = call.client
        with self._cv:
            # Wait for a session that accepts joins (the current one may be running).
            while not self._accepting:
                if self._last is not None and self._number >= self._last:
                    raise _Refuse("FAILED_PRECONDITION", self._no_more_sessions())
                if not self._wait(context):
                    return None
            if client in self._joining:
                raise _Refuse("ALREADY_EXISTS", f"client {client} has already joined")
            call.session = self._number
            if not self._watch_presence(call, context):
                return None
            self._joining[client] = call
            # A client that left (gave up, or was restarted) and came back takes its
            # seat again: nothing of its earlier call counts against it.
            self._gone.discard(client)
            self._refused.pop(client, None)
            if not self._first_join:
                self._first_join = time.monotonic()
            self._cv.notify_all()
            number = self._number
            while self._number == number and self._round < 0:
                if not self._wait(context):
                    return None
            call.answered = True
            parts = self._outbox.get((number, 0), {}).get(client)
            if parts is None:
                raise _Refuse("UNAVAILABLE", f"session {number} was cancelled")
            return parts

    def _no_more_sessions(self) -> str:
        count = self._last or 0
        return (
            f"this server runs {count} session{'' if count == 1 else 's'} and session "
            f"{self._number} is its last: it will start no other"
        )

    def _submit(
        self, call: _Call, frame: framing.Frame, context: grpc.ServicerContext
    ) -> list[bytes] | None:
        client = call.client
        call.session = frame.session
        with self._cv:
            self._check_turn(client, frame)
            run = self._run
        assert run is not None
        # Decoding (the large masked vector) needs no lock.
        try:
            message = run.decode(client, frame.payload)
        except Refused as exc:
            if exc.rejection is not None:
                with self._cv:
                    if self._run is run:
                        run.reject(client, exc.rejection)
            raise _Refuse(exc.code, exc.details) from None
        with self._cv:
            self._check_turn(client, frame)
            try:
                run.accept(client, message)
            except Refused as exc:
                raise _Refuse(exc.code, exc.details) from None
            self._answered.add(client)
            self._cv.notify_all()
            if not self._watch(call, context):
                # Its call ended already: nobody will take its next frame, and the next
                # round must not wait its full deadline for an answer that cannot come.
                self._gone.add(client)
                self._depart(client, "its connection closed")
                return None
            r = frame.round
            while self._round == r and self._number == frame.session:
                if not self._wait(context):
                    return None
            call.answered = True
            parts = self._outbox.get((frame.session, r + 1), {}).get(client)
            if parts is None:
                return self._frame(
                    Kind.DROPPED,
                    client,
                    r + 1,
                    f"the server dropped client {client} from session {frame.session} "
                    f"after round {r}".encode(),
                )
            return parts

    def _check_turn(self, client: int, frame: framing.Frame) -> None:
        # Late, replayed or foreign-session frames are refused by number, before decoding.
        if frame.session != self._number or frame.round != self._round:
            raise _Refuse(
                "FAILED_PRECONDITION",
                f"session {frame.session} round {frame.round} is not open (open: session "
                f"{self._number} round {self._round}); a late client has dropped out",
            )
        if client not in self._expected or client in self._gone:
            raise _Refuse("FAILED_PRECONDITION", f"client {client} is not expected this round")
        if client in self._answered:
            raise _Refuse("ALREADY_EXISTS", f"client {client} has already answered this round")

    def _wait(self, context: grpc.ServicerContext) -> bool:
        """Wait for a change (lock held); False if the call or the server ended."""
        if self._stopped or not context.is_active():
            return False
        remaining = context.time_remaining()
        self._opened.wait(0.5 if remaining is None else max(0.0, min(0.5, remaining)))
        return not self._stopped and bool(context.is_active())


def _text(payload: memoryview) -> str:
    """A client's reason, as one printable line of at most 300 characters."""
    text = bytes(payload[:300]).decode("utf-8", "replace")
    return "".join(ch if ch.isprintable() else " " for ch in text).strip()
