"""A hospital's side of the network service (``securefl join``).

:class:`AggregationClient` connects to an :class:`~securefl.transports.service.server.
AggregationServer` over TLS and, for each call of :meth:`AggregationClient.aggregate`,
joins the next session, runs the protocol's client state machine round by round
(:class:`securefl.secagg.SecAggClient`, or CKKS encryption and decryption) and returns
the aggregate. The update and every secret stay in this process; only the protocol's
messages leave it.

Every call has a deadline, so a client never hangs: a dead server, a refused
certificate, a dropped client or a late answer raise :class:`securefl.errors.
ServiceError`; a session the server (or this client) aborted raises
:class:`securefl.errors.ProtocolAbort` with the reason.

The JOIN call stays open while the session runs: the server's sign that this client is
alive, so that its end (the process died, the connection broke) counts this client out
at once. A client that fails a check during a session tells the server with a LEAVE
frame, and its reason, before it raises.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from securefl import vectors
from securefl.encoding import FixedPointEncoder
from securefl.errors import (
    ConfigError,
    DecryptionError,
    InvalidMessage,
    ProtocolAbort,
    ServiceError,
)
from securefl.secagg import codec
from securefl.secagg.client import SecAggClient
from securefl.secagg.config import GraphKind, SecAggConfig
from securefl.secagg.messages import Abort, SessionStart, Stage, UnmaskingRequest
from securefl.transports.service import framing
from securefl.transports.service.framing import Frame, Kind, Protocol
from securefl.transports.service.policy import ClientPolicy
from securefl.transports.service.server import METHOD, METHOD_SMALL
from securefl.transports.service.sessions import (
    JoinRequest,
    check_dp_config,
    ckks_frame_limit,
    decode_ckks_result,
    join_payload,
    join_token,
    secagg_frame_limit,
)
from securefl.transports.service.tls import ClientTLS

if TYPE_CHECKING:
    import grpc  # type: ignore[import-untyped, unused-ignore]
    import numpy as np
    import numpy.typing as npt

    from securefl.ckks.keys import ClientContext
    from securefl.dp import DPEncoder, DPPlan
    from securefl.encoding import RingInput, RingVector

__all__ = ["AggregationClient", "ServiceResult"]

_STATUS_HINTS = {
    "UNAVAILABLE": "the server is unreachable, went away, or refused the TLS handshake",
    "DEADLINE_EXCEEDED": "no answer from the server within the deadline",
    "PERMISSION_DENIED": "the server refused this client (not enrolled)",
    "UNAUTHENTICATED": "the server refused this client's credentials",
    "INVALID_ARGUMENT": "the server rejected the message",
    "FAILED_PRECONDITION": "the server is not in the expected session or round",
    "RESOURCE_EXHAUSTED": (
        "the server is out of capacity (too many concurrent calls) or the message "
        "exceeds its size limit"
    ),
    "ALREADY_EXISTS": "this client is already taking part, or has another call in flight",
    "CANCELLED": "the server ended the call (it is shutting down)",
}


@dataclass(frozen=True)
class ServiceResult:
    """A session's outcome as a client receives it."""

    mean: vectors.Update
    """The weighted mean of the contributors' updates, in the update's structure (with
    differential privacy: the noisy weighted mean of their clipped updates)."""
    total_weight: int
    contributors: tuple[int, ...]
    dropped: tuple[int, ...]
    session: int
    """The server's session number (one per training round)."""
    weighted_mean: npt.NDArray[np.float64] = field(repr=False)
    """The same mean, flat."""


class AggregationClient:
    """Client of the aggregation service.

    Parameters
    ----------
    target:
        The server's ``host:port``.
    client_id:
        This client's enrolled id (also the common name of its certificate).
    tls:
        The CA of the server's certificate and, for mutual TLS, this client's
        certificate and key.
    config:
        SecAgg: the session configuration, the same as the server's (clients verify it
        by digest before doing any work).
    ckks_context:
        CKKS: the clients' context with the secret key.
    identity_key, identity_public_keys:
        Authenticated SecAgg: this client's Ed25519 key and every enrolled client's
        public key.
    dp:
        Distributed differential privacy (SecAgg only; docs/PRIVACY.md): the plan the
        server's session holds (``config`` must be its ring-input configuration,
        :func:`securefl.dp.secagg_config`). Each session, the update is clipped to
        ``dp.config.clip``, weighted by ``weight / config.max_weight`` and noised
        inside the ring before it is masked; the session's public nonce is the round
        seed. The server refuses a client whose plan differs (by digest, at join).
    policy:
        This client's own requirements (:class:`~securefl.transports.service.policy.
        ClientPolicy`; default: the library's rules only). ``config`` is checked
        against it here, before anything is sent; each result's contributors when it
        arrives.
    timeout:
        Seconds any single exchange with the server may take: the server's round
        deadline plus its time to close a round. A server that does not answer within
        it raises :class:`ServiceError`.
    join_timeout:
        Seconds to wait for a session to start (the server may still be starting, or
        waiting for other clients); default ``timeout``.
    server_name:
        Name to check the server's certificate against, if not the host in ``target``.
    chunk_size, max_message:
        Bytes per streamed gRPC message, and the per-message limit.
    threads:
        Threads for masking (``None``: all cores).
    progress:
        Called with a short description of each step (for logs and tests); never with
        secrets.

    Raises
    ------
    ConfigError
        If neither or both of ``config`` and ``ckks_context`` are given, ``dp`` comes
        with CKKS or with a ``config`` that does not carry its encodings, or the TLS
        material is unusable (:meth:`ClientTLS.check`: a key that is not its
        certificate's, an expired certificate), all checked before connecting.
    PolicyError
        (a ``ConfigError``) If the session is below ``policy``; it names the parameter,
        the session's value and the policy's.

    Security
    --------
    The update, the CKKS secret key and the identity key never leave this process;
    :func:`repr` shows none of them, and the client cannot be pickled.
    """

    def __init__(
        self,
        target: str,
        client_id: int,
        tls: ClientTLS,
        *,
        config: SecAggConfig | None = None,
        ckks_context: ClientContext | None = None,
        identity_key: Ed25519PrivateKey | None = None,
        identity_public_keys: Mapping[int, bytes] | None = None,
        dp: DPPlan | None = None,
        policy: ClientPolicy | None = None,
        timeout: float = 120.0,
        join_timeout: float | None = None,
        server_name: str | None = None,
        chunk_size: int = 1 << 20,
        max_message: int = 4 << 20,
        threads: int | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        import grpc  # type: ignore[import-untyped, unused-ignore]

        if (config is None) == (ckks_context is None):
            raise ConfigError("give exactly one of config (SecAgg) and ckks_context (CKKS)")
        if timeout <= 0:
            raise ConfigError("timeout must be positive")
        tls.check()
        if dp is not None:
            if config is None:
                raise ConfigError("differential privacy needs SecAgg (config=), not CKKS")
            check_dp_config(config, dp)
        self.policy = policy or ClientPolicy()
        # The server must run exactly this configuration (SessionStart's digest), so
        # checking it here checks every session this client can take part in.
        if config is not None:
            self.policy.check_secagg(config)
        else:
            self.policy.check_ckks()
        self.dp = dp
        self.target = target
        self._tls = tls
        self.client_id = client_id
        self._contacted = False  # a session was joined: a refused connection now means gone
        self.config = config
        self._ckks = ckks_context
        self._identity_key = identity_key
        self._identity_public_keys = identity_public_keys
        self.timeout = timeout
        self.join_timeout = timeout if join_timeout is None else join_timeout
        self._chunk_size = chunk_size
        self._threads = threads
        self._progress = progress
        self.protocol = Protocol.SECAGG if config is not None else Protocol.CKKS
        self._dimension: int | None = config.dimension if config is not None else None
        if dp is not None:
            self._dimension = dp.dimension  # the update's size; config has the padded one
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", max_message),
            ("grpc.enable_retries", 0),
        ]
        if server_name is not None:
            options.append(("grpc.ssl_target_name_override", server_name))
        credentials = grpc.ssl_channel_credentials(
            root_certificates=tls.server_ca,
            private_key=tls.private_key,
            certificate_chain=tls.certificate,
        )
        self._channel = grpc.secure_channel(target, credentials, options=options)
        self._call: Any = self._channel.stream_stream(METHOD)
        self._call_small: Any = self._channel.unary_stream(METHOD_SMALL)

    def __repr__(self) -> str:
        return (
            f"AggregationClient(target={self.target!r}, id={self.client_id}, "
            f"protocol={self.protocol.name})"
        )

    def __reduce__(self) -> Any:
        raise TypeError("AggregationClient holds secret keys and cannot be pickled")

    def close(self) -> None:
        """Close the connection."""
        self._channel.close()

    def __enter__(self) -> AggregationClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- one session ------------------------------------------------------------------------

    def aggregate(self, update: vectors.Update, weight: int = 1) -> ServiceResult:
        """Join the next session with ``update`` and return the aggregate.

        Parameters
        ----------
        update:
            A numpy array, a dict/list of arrays or a torch ``state_dict``; every client
            uses the same structure.
        weight:
            This client's integer weight (its number of examples), 1 .. max_weight.

        Returns
        -------
        ServiceResult
            The weighted mean of the contributors' updates.

        Raises
        ------
        ServiceError
            The server is unreachable or went away, refused this client, dropped it from
            the session (it answered too late), or did not answer within the timeout.
        ProtocolAbort
            The session aborted (too many dropouts, or a failed protocol check here or
            on the server); ``reason`` says why.
        ValueError, TypeError
            If the update or weight does not fit the configuration.
        """
        flat, layout = self._prepare(update)
        if self._ckks is not None:
            return self._run_ckks(self._ckks, flat, layout, weight)
        config = self.config
        assert config is not None
        machine: SecAggClient | None = None
        pending: npt.NDArray[np.floating] | None = None  # DP: encoded at SessionStart
        if self.dp is None:
            # SecAgg adds integers: the session's fixed-point encoder makes them.
            encoder = FixedPointEncoder.for_config(config, threads=self._threads)
            machine = self._secagg_client(encoder.encode(flat, weight), weight)
        else:
            # The encoding needs the session's nonce (the round seed): check what can be
            # checked now, and build the state machine when SessionStart arrives.
            import numpy as np

            if flat.size != self.dp.dimension:
                raise ValueError(f"update has {flat.size} values, the DP plan {self.dp.dimension}")
            if not np.all(np.isfinite(flat)):
                raise ValueError("update contains NaN or infinity")
            if not 1 <= weight <= config.max_weight:
                raise ValueError(f"weight must be in [1, {config.max_weight}], got {weight}")
            pending = flat
        del flat
        frame, seat = self._join(JoinRequest(config=config.to_bytes(), dp=join_token(self.dp)))
        with seat:
            return self._run_secagg(frame, seat, machine, pending, layout, weight)

    def _run_secagg(
        self,
        frame: Frame,
        seat: _Seat,
        machine: SecAggClient | None,
        flat: npt.NDArray[np.floating] | None,
        layout: vectors.Layout,
        weight: int,
    ) -> ServiceResult:
        """The rounds of a SecAgg session, from its first frame; ``machine`` is
        ``None`` with DP (built from ``flat`` when SessionStart brings the nonce)."""
        config = self.config
        assert config is not None
        session = frame.session
        nonce = b""
        request: UnmaskingRequest | None = None  # the survivor set this client was shown
        while frame.kind is Kind.PROTOCOL:
            seat.round = frame.round
            self._check_session(frame, session)
            try:
                # A read-only view of the frame: the masked vector is not copied.
                message = codec.decode_from_server(frame.payload)
            except InvalidMessage as exc:
                raise ServiceError(f"undecodable message from the server: {exc}") from None
            if machine is None:
                if not isinstance(message, SessionStart):
                    raise ServiceError(f"the session opened with {type(message).__name__}")
                nonce = message.nonce
                self._say(f"session {session}: dp-encode")
                assert flat is not None
                machine = self._secagg_client(self._dp_encode(flat, nonce, weight), weight)
                flat = None
            if isinstance(message, UnmaskingRequest):
                request = message
            stage = machine.stage
            self._say(f"session {session}: {stage.value}")
            reply = machine.handle(message)
            if reply is None:
                # The state machine refused the server's message: it has aborted.
                raise ProtocolAbort(machine.abort_reason or f"no answer in stage {stage.value}")
            frame = self._exchange(Kind.SUBMIT, session, frame.round, codec.encode(reply))
        self._check_session(frame, session)
        seat.over = True  # a final frame: the server has ended this client's session
        if frame.kind is Kind.ABORT:
            reason = _text(frame.payload)
            if machine is not None:
                machine.handle(Abort(reason))  # forget the secrets it holds
            raise ProtocolAbort(f"server aborted session {session}: {reason}")
        if frame.kind is Kind.DROPPED:
            raise ServiceError(_text(frame.payload), "DROPPED")
        if frame.kind is not Kind.RESULT:
            raise ServiceError(f"unexpected {frame.kind.name} frame from the server")
        if machine is None or machine.stage is not Stage.COMPLETED:
            # Only a client that answered Unmasking can be owed a result.
            where = "AdvertiseKeys" if machine is None else machine.stage.value
            raise ServiceError(f"a result arrived in stage {where}")
        try:
            result = framing.decode_result(frame.payload, config)
        except InvalidMessage as exc:
            raise ServiceError(f"malformed result from the server: {exc}") from None
        self._check_secagg_result(result, request, weight, session)
        mean = result.weighted_mean
        if self.dp is not None:
            mean = self._dp_decode(result, nonce)
        self._say(f"session {session}: result")
        return ServiceResult(
            vectors.unflatten(mean, layout),
            result.total_weight,
            result.contributors,
            result.dropped,
            session,
            mean,
        )

    def _secagg_client(self, vector: RingInput, weight: int) -> SecAggClient:
        assert self.config is not None
        return SecAggClient(
            self.client_id,
            self.config,
            vector,
            weight,
            identity_key=self._identity_key,
            identity_public_keys=self._identity_public_keys,
            rng=os.urandom,
            threads=self._threads,
        )

    def _check_secagg_result(
        self,
        result: framing.Result,
        request: UnmaskingRequest | None,
        weight: int,
        session: int,
    ) -> None:
        """Check who the server says contributed against what this client saw.

        A server that names other contributors than the survivors it unmasked (fewer,
        to pass a sum of few updates off as many, or more) is caught where this client
        saw the survivor set: the set every survivor signed (authenticated mode), every
        other survivor (the complete graph), or its own neighbours (SecAgg+).

        Raises
        ------
        ProtocolAbort
            If the contributors are not a strictly increasing list that includes this
            client and matches the survivors it was shown, the total weight cannot be
            theirs, or the count is below the policy.
        """
        assert self.config is not None
        cfg = self.config
        contributors = result.contributors
        me = self.client_id
        ids = set(contributors)

        def refuse(why: str) -> ProtocolAbort:
            return ProtocolAbort(f"refused the result of session {session}: {why}")

        if list(contributors) != sorted(ids) or ids & set(result.dropped):
            raise refuse("its contributor list is not sorted, repeats or also names dropouts")
        # This client answered Unmasking: its masked input is in the sum.
        if me not in ids:
            raise refuse(f"it omits this client ({me}), whose masked input is in the sum")
        if request is not None:
            seen = set(request.survivors) | {me}
            if cfg.authenticated and request.all_survivors:
                exact: set[int] | None = set(request.all_survivors)
            elif cfg.graph is GraphKind.COMPLETE:
                exact = seen
            else:
                exact = None
            if exact is not None and ids != exact:
                raise refuse(
                    f"it names {len(ids)} contributors, the survivor set this client was "
                    f"shown has {len(exact)}"
                )
            if not seen <= ids or ids & set(request.dropped):
                raise refuse("its contributors contradict this client's surviving neighbours")
        m, total, most = len(contributors), result.total_weight, cfg.max_weight
        # Every contributor's weight is in [1, W], and this client's is known exactly.
        if not weight + (m - 1) <= total <= weight + (m - 1) * most:
            raise refuse(
                f"a total weight of {total} cannot be {m} contributors' (this one's is "
                f"{weight}, each is in [1, {most}])"
            )
        self.policy.check_contributors(contributors, session)

    def _dp_encoder(self, nonce: bytes) -> DPEncoder:
        """This session's DP encoder, with its public nonce as the round seed; the
        secret coins of each encoding are drawn from the OS and never leave it."""
        from securefl.dp import DPEncoder

        assert self.dp is not None and self.config is not None
        return DPEncoder(
            self.dp, round_seed=nonce, max_weight=self.config.max_weight, threads=self._threads
        )

    def _dp_encode(self, flat: npt.NDArray[np.floating], nonce: bytes, weight: int) -> RingVector:
        """Clip, weight, rotate, round and noise the update into the ring (securefl.dp)."""
        return self._dp_encoder(nonce).encode(flat, weight, client_id=self.client_id)

    def _dp_decode(self, result: framing.Result, nonce: bytes) -> npt.NDArray[np.float64]:
        """The noisy weighted mean behind the ring sum the server sent: the same
        decoding as the server's (``SessionOutcome.dp``), bit for bit."""
        try:
            return self._dp_encoder(nonce).decode(result)
        except ConfigError as exc:
            # A server that sends a result for too few survivors broke the DP contract.
            raise ProtocolAbort(f"differential privacy: {exc}") from None
        except ValueError as exc:
            raise ServiceError(f"malformed result from the server: {exc}") from None

    def _prepare(self, update: vectors.Update) -> tuple[npt.NDArray[np.floating], vectors.Layout]:
        """Flatten the update (with differential privacy, :meth:`_dp_encode` then
        encodes it once the session's nonce is known)."""
        flat, layout = vectors.flatten(update)
        self.policy.check_dimension(layout.size)
        if self._dimension is None:
            self._dimension = layout.size
        return flat, layout

    def _run_ckks(
        self,
        context: ClientContext,
        flat: npt.NDArray[np.floating],
        layout: vectors.Layout,
        weight: int,
    ) -> ServiceResult:
        from securefl.ckks.client import decrypt_aggregate, encrypt_update

        frame, seat = self._join(JoinRequest(dimension=layout.size))
        with seat:
            session = frame.session
            self._check_session(frame, session)
            if frame.kind is Kind.PROTOCOL:
                self._say(f"session {session}: encrypt")
                message, _ = encrypt_update(context, flat, weight)
                frame = self._exchange(Kind.SUBMIT, session, frame.round, message)
                self._check_session(frame, session)
            seat.over = True
        if frame.kind is Kind.ABORT:
            raise ProtocolAbort(f"server aborted session {session}: {_text(frame.payload)}")
        if frame.kind is Kind.DROPPED:
            raise ServiceError(_text(frame.payload), "DROPPED")
        if frame.kind is not Kind.RESULT:
            raise ServiceError(f"unexpected {frame.kind.name} frame from the server")
        try:
            contributors, aggregate = decode_ckks_result(frame.payload)
        except InvalidMessage as exc:
            raise ServiceError(f"malformed result from the server: {exc}") from None
        # Before decrypting: a "sum" of one ciphertext is that client's update.
        self._check_ckks_contributors(contributors, session)
        try:
            # The tags inside the ciphertext count the contributions: the policy's
            # minimum is checked against them, not only against the server's list.
            decrypted = decrypt_aggregate(
                context, aggregate, min_contributors=self.policy.min_contributors
            )
        except (InvalidMessage, DecryptionError) as exc:
            # An aggregate that does not decrypt or verify is a failed check here.
            raise ProtocolAbort(f"refused the result of session {session}: {exc}") from None
        if decrypted.contributions != len(contributors):
            raise ProtocolAbort(
                f"refused the result of session {session}: the server names "
                f"{len(contributors)} contributors but the aggregate sums "
                f"{decrypted.contributions} tagged contributions"
            )
        self._check_ckks_weight(contributors, decrypted.total_weight, weight, session)
        if decrypted.weighted_sum.size != layout.size:
            raise ServiceError(
                f"the aggregate holds {decrypted.weighted_sum.size} values, "
                f"the update {layout.size}"
            )
        mean = decrypted.mean
        self._say(f"session {session}: result")
        return ServiceResult(
            vectors.unflatten(mean, layout),
            decrypted.total_weight,
            contributors,
            (),
            session,
            mean,
        )

    def _check_ckks_contributors(self, contributors: tuple[int, ...], session: int) -> None:
        """Refuse a CKKS result whose contributor list is malformed, omits this client
        or is shorter than the policy allows (before anything is decrypted).

        Raises
        ------
        ProtocolAbort
            Naming what is wrong (and the policy parameter, with both values).
        """
        ids = set(contributors)
        if list(contributors) != sorted(ids):
            raise ProtocolAbort(
                f"refused the result of session {session}: its contributor list is not "
                "sorted or repeats a client"
            )
        self.policy.check_contributors(contributors, session)
        # This client uploaded and was answered: its ciphertext must be in the sum.
        if self.client_id not in ids:
            raise ProtocolAbort(
                f"refused the result of session {session}: it omits this client "
                f"({self.client_id}), whose ciphertext the server accepted"
            )

    def _check_ckks_weight(
        self, contributors: tuple[int, ...], total: int, weight: int, session: int
    ) -> None:
        """The decrypted total weight must be this client's plus at least 1 for each
        other contributor: a server that passes fewer ciphertexts (one peer's) off as
        the sum of ``contributors`` is caught unless their weights make up the gap.

        Raises
        ------
        ProtocolAbort
            If the total weight cannot be the named contributors'.
        """
        from securefl.ckks.client import MAX_WEIGHT

        m = len(contributors)
        if not weight + (m - 1) <= total <= weight + (m - 1) * (MAX_WEIGHT - 1):
            raise ProtocolAbort(
                f"refused the result of session {session}: a total weight of {total} "
                f"cannot be {m} contributors' (this one's is {weight}, each at least 1)"
            )

    # ---- transport ----------------------------------------------------------------------------

    def _limit(self) -> int:
        if self.config is not None:
            return secagg_frame_limit(self.config)
        assert self._ckks is not None and self._dimension is not None
        return ckks_frame_limit(self._ckks.spec, self._dimension, 1 << 16)

    def _check_session(self, frame: Frame, session: int) -> None:
        # A frame of another session or protocol would feed the wrong state machine.
        if frame.session != session or frame.protocol is not self.protocol:
            raise ServiceError(
                f"the server answered for session {frame.session} ({frame.protocol.name}), "
                f"expected session {session} ({self.protocol.name})"
            )
        if frame.client_id != self.client_id:
            raise ServiceError(f"the server sent client {frame.client_id}'s frame")

    def _join(self, request: JoinRequest) -> tuple[Frame, _Seat]:
        """Join the next session: its first frame, and this client's seat (the open
        JOIN call). A server that cannot be connected to (not started yet) is retried
        until ``join_timeout``, with a word that this client waits; one that answers,
        even with an error, is not; a TLS handshake that fails is reported with its
        likely cause after a few tries, in seconds. Once a session was joined, a
        server that cannot be connected to has gone: that is reported at once.

        Raises
        ------
        ServiceError
            ``UNAVAILABLE`` (no server, a failed handshake, the server has gone),
            ``DEADLINE_EXCEEDED`` (no session started within ``join_timeout``), or the
            server's refusal (``FAILED_PRECONDITION`` names each session option that
            differs from the server's, ``PERMISSION_DENIED``, ...).
        """
        payload = join_payload(request)
        deadline = time.monotonic() + self.join_timeout
        delay = 0.1
        said = False
        handshakes = 0
        while True:
            left = deadline - time.monotonic()
            try:
                frame, presence = self._open_join(payload, max(left, 0.001))
            except _Unreached as exc:
                if self._contacted:
                    # It answered this client before: not a server that is starting.
                    raise ServiceError(
                        f"{self.target}: the server has gone ({exc.detail}); it may have "
                        "run all its sessions",
                        "UNAVAILABLE",
                    ) from None
                if exc.handshake is not None:
                    # Not a server that is starting: a refused certificate, or one that
                    # this client does not trust. A retry or two rules out a fluke.
                    handshakes += 1
                    if handshakes >= 3 or left <= delay:
                        raise exc.handshake from None
                elif left <= delay:
                    raise ServiceError(
                        f"no server at {self.target} ({exc.detail}) within the join "
                        f"timeout of {self.join_timeout:g} s",
                        "UNAVAILABLE",
                    ) from None
                elif not said:
                    self._say(
                        f"waiting for the server at {self.target} ({exc.detail}); trying "
                        f"for up to {self.join_timeout:g} s"
                    )
                    said = True
                time.sleep(delay)
                delay = min(2 * delay, 1.0)
                continue
            self._contacted = True
            return frame, _Seat(self, presence, frame.session)

    def _open_join(self, payload: bytes, left: float) -> tuple[Frame, Any]:
        """Send a JOIN and read the session's first frame; the call stays open.

        Raises
        ------
        _Unreached
            If no connection was made, or the TLS handshake failed.
        ServiceError
            For any other failure (the server's refusal, no session within ``left``).
        """
        import grpc  # type: ignore[import-untyped, unused-ignore]

        parts = framing.encode(
            Kind.JOIN, self.protocol, self.client_id, 0, 0, payload, signing_key=self._identity_key
        )
        requests = list(framing.chunks(parts, self._chunk_size))
        # The call lives as long as the session (the longest one: every round's exchange
        # at its timeout); the timer ends only the wait for the session to start.
        lifetime = left + 8 * self.timeout
        if len(requests) == 1:
            call: Any = self._call_small(requests[0], timeout=lifetime)
        else:
            call = self._call(iter(requests), timeout=lifetime)
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            call.cancel()

        timer = threading.Timer(left, expire)
        timer.daemon = True
        timer.start()
        try:
            frame = framing.read_frame(call, self._limit())
        except grpc.RpcError as exc:
            call.cancel()
            if expired.is_set():
                raise ServiceError(
                    f"{self.target}: no session started within {self.join_timeout:g} s (the "
                    "server waits for its other clients, or runs another session; see "
                    "--join-timeout)",
                    "DEADLINE_EXCEEDED",
                ) from None
            code = exc.code() if hasattr(exc, "code") else None
            if self._contacted and code is not None and code.name in ("CANCELLED", "UNAVAILABLE"):
                # It served this client before: not a server that is starting, but one
                # that is stopping (it ended the call) or has stopped.
                raise _Unreached(_gone_detail(exc)) from None
            raise _joining_error(exc, self.target, self._tls) from None
        except InvalidMessage as exc:
            call.cancel()
            raise ServiceError(f"malformed frame from the server: {exc}") from None
        finally:
            timer.cancel()
        return frame, call

    def _leave(self, session: int, round_: int, reason: str) -> None:
        """Tell the server that this client stops taking part (best effort: the end of
        its JOIN call tells the server too, without the reason)."""
        parts = framing.encode(
            Kind.LEAVE,
            self.protocol,
            self.client_id,
            session,
            round_,
            reason.encode("utf-8", "replace")[:300],
            signing_key=self._identity_key,
        )
        try:
            requests = list(framing.chunks(parts, self._chunk_size))
            if len(requests) == 1:
                list(self._call_small(requests[0], timeout=_LEAVE_TIMEOUT))
            else:
                list(self._call(iter(requests), timeout=_LEAVE_TIMEOUT))
        except Exception:  # the server is gone or refuses: nothing more to tell it
            return

    def _exchange(
        self,
        kind: Kind,
        session: int,
        round_: int,
        payload: bytes,
        timeout: float | None = None,
    ) -> Frame:
        """Send one frame and wait for the server's answer (the next round's frame)."""
        import grpc  # type: ignore[import-untyped, unused-ignore]

        timeout = self.timeout if timeout is None else timeout
        # With an identity key every frame is signed: without mutual TLS the signature
        # is what proves to the server that this frame comes from this enrolled client.
        parts = framing.encode(
            kind,
            self.protocol,
            self.client_id,
            session,
            round_,
            payload,
            signing_key=self._identity_key,
        )
        requests: list[bytes] = list(framing.chunks(parts, self._chunk_size))
        try:
            if len(requests) == 1:
                responses = self._call_small(requests[0], timeout=timeout)
            else:
                responses = self._call(iter(requests), timeout=timeout)
            return framing.assemble(responses, self._limit())
        except grpc.RpcError as exc:
            raise _service_error(exc, self.target, timeout) from None
        except InvalidMessage as exc:
            raise ServiceError(f"malformed frame from the server: {exc}") from None

    def _say(self, text: str) -> None:
        if self._progress is not None:
            self._progress(text)


def _text(payload: memoryview) -> str:
    return bytes(payload[:4096]).decode("utf-8", "replace")


_LEAVE_TIMEOUT = 2.0
"""Seconds a LEAVE may take: it is a courtesy, the client's session is over either way."""


class _Seat:
    """This client's seat in a session: its open JOIN call (its presence) and where it
    stands. Used as a context manager around the session's rounds: an error raised
    here before the server ended the session sends LEAVE with the reason, and the JOIN
    call is closed in every case."""

    def __init__(self, client: AggregationClient, presence: Any, session: int) -> None:
        self.client = client
        self.presence = presence
        self.session = session
        self.round = 0
        self.over = False
        """Set once a final frame (result, abort, dropped) arrived."""

    def __enter__(self) -> _Seat:
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        try:
            if exc is not None and not self.over:
                reason = str(exc) or type(exc).__name__
                self.client._leave(self.session, self.round, reason)
        finally:
            self.presence.cancel()


class _Unreached(Exception):
    """A JOIN that made no connection (``handshake`` is None: retry until the join
    timeout) or failed the TLS handshake (``handshake``: the error to raise)."""

    def __init__(self, detail: str, handshake: ServiceError | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.handshake = handshake


_NOT_CONNECTED = (
    ("connection refused", "connection refused"),
    ("no route to host", "no route to host"),
    ("network is unreachable", "network unreachable"),
    ("connection timed out", "connection timed out"),
    ("dns resolution failed", "the name does not resolve"),
    ("name not found", "the name does not resolve"),
    ("errors resolving", "the name does not resolve"),
)
_HANDSHAKE = (
    "handshake",
    "ssl",
    "tls",
    "certificate",
    "socket closed",
    "connection reset",
    "hostname verification",
    "peer name",
)


def _gone_detail(exc: grpc.RpcError) -> str:
    """How a server that served this client before is gone, in a few words."""
    details = str(exc.details() if hasattr(exc, "details") else exc).lower()
    for words, meaning in _NOT_CONNECTED:
        if words in details:
            return meaning
    return "it is shutting down"


def _tls_hint(details: str, tls: ClientTLS, target: str) -> str:
    """The likely cause of a failed TLS handshake, from gRPC's words and what this
    client holds."""
    d = details.lower()
    if "hostname verification" in d or "peer name" in d:
        return (
            f"the server's certificate does not name the host of {target}: connect by a "
            "name it holds (serve --pki-hosts), or give that name (join --server-name)"
        )
    if "security handshaker" in d:
        return "this client's TLS credentials cannot be used (is the key its certificate's?)"
    if any(
        w in d for w in ("tls handshake failed", "ssl handshake failed", "certificate", "signature")
    ):
        return (
            f"the server's certificate is not signed by the CA in {tls.ca_name}, which "
            "this client trusts (is it this deployment's CA?)"
        )
    if tls.certificate is None:
        return (
            "the server closed the connection in the TLS handshake: it needs a client "
            "certificate (mutual TLS) and this client has none (join --cert and --key, "
            "or --pki)"
        )
    return (
        "the server refused this client's certificate in the TLS handshake: it is most "
        "likely issued by another CA than the one the server trusts for clients"
    )


def _joining_error(exc: grpc.RpcError, target: str, tls: ClientTLS) -> Exception:
    """What a failed JOIN means: no connection, a failed handshake (both
    :class:`_Unreached`), or the server's answer (a :class:`ServiceError`)."""
    code = exc.code() if hasattr(exc, "code") else None
    details = str(exc.details() if hasattr(exc, "details") else exc)
    if code is not None and code.name == "UNAVAILABLE":
        lowered = details.lower()
        for words, meaning in _NOT_CONNECTED:
            if words in lowered:
                return _Unreached(meaning)
        if "failed to connect" in lowered and any(w in lowered for w in _HANDSHAKE):
            hint = _tls_hint(details, tls, target)
            message = f"{target}: TLS handshake failed: {hint} (UNAVAILABLE: {details})"
            return _Unreached("TLS handshake failed", ServiceError(message, "UNAVAILABLE"))
    if code is not None and code.name == "FAILED_PRECONDITION":
        return ServiceError(
            f"{target}: the server refused to seat this client (FAILED_PRECONDITION: {details})",
            "FAILED_PRECONDITION",
        )
    return _service_error(exc, target, 0.0)


def _service_error(exc: grpc.RpcError, target: str, timeout: float) -> ServiceError:
    code = exc.code() if hasattr(exc, "code") else None
    name = code.name if code is not None else "UNKNOWN"
    details = exc.details() if hasattr(exc, "details") else str(exc)
    hint = _STATUS_HINTS.get(name, "the call failed")
    if name == "DEADLINE_EXCEEDED":
        hint = f"no answer from the server within {timeout:g} s"
    return ServiceError(f"{target}: {hint} ({name}: {details})", name)
