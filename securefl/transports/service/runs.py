"""One session of a protocol as the service's server runs it.

The gRPC server (:mod:`securefl.transports.service.server`) owns the transport: it
listens, authenticates, streams frames and keeps time. What a protocol does with the
frames is a *run*, built by the session object (:meth:`SecAggSession.start`,
:meth:`CKKSSession.start`): the server asks it for the first round's payloads, hands it
each client's upload (decoded outside the server's lock, accepted under it), tells it
when a round's collection window has closed, and publishes what it returns. Adding a
protocol means one session class with a ``start`` and one run class; the transport does
not change.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from securefl.encoding import decoded, encoder_for
from securefl.errors import ConfigError, InvalidMessage
from securefl.secagg import codec
from securefl.secagg.messages import ROUNDS, Stage
from securefl.secagg.server import Rejection, SecAggServer
from securefl.transports.service import framing
from securefl.transports.service.framing import Kind

if TYPE_CHECKING:
    from securefl.ckks.server import Aggregator
    from securefl.transports.service.server import SessionOutcome
    from securefl.transports.service.sessions import CKKSSession, SecAggSession

__all__ = ["CKKSRun", "Refused", "RoundClosed", "SecAggRun", "ServerRun"]

# The server's logger: what a run logs reads as the server's own lines.
log = logging.getLogger("securefl.transports.service.server")


Payload = Sequence[bytes | memoryview]


class Refused(Exception):
    """An upload the run refuses: the gRPC status ``code`` and the ``details`` the
    client is told; ``rejection``, if set, is recorded as the client's rejection."""

    def __init__(self, code: str, details: str, rejection: str | None = None) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.rejection = rejection


@dataclass
class RoundClosed:
    """What closing a round gives the transport to publish."""

    next: dict[int, Payload] = field(default_factory=dict)
    """The next round's payload per client (empty when the session is over)."""
    final: tuple[Kind, Payload] | None = None
    """The session is over: the frame (RESULT or ABORT) every waiting client receives."""
    also_notify: frozenset[int] = frozenset()
    """Clients, beyond those waiting on this round, that receive ``final`` too."""


class ServerRun(Protocol):
    """One running session of a protocol (the transport's side of it)."""

    @property
    def rejections(self) -> list[Rejection]:
        """Uploads refused so far (the outcome reports them)."""
        ...

    def open(self) -> dict[int, Payload]:
        """The first round's payload for each member."""
        ...

    def decode(self, client: int, payload: memoryview) -> Any:
        """Parse an upload, without the server's lock (it may be large).

        Raises
        ------
        Refused
            If it is malformed or cannot be this session's.
        """
        ...

    def accept(self, client: int, message: Any) -> None:
        """Take a decoded upload (the server's lock held).

        Raises
        ------
        Refused
            If the protocol refuses it.
        """
        ...

    def reject(self, client: int, reason: str) -> None:
        """Record a refused upload (the server's lock held)."""
        ...

    def close_round(self, outcome: SessionOutcome, gone: set[int]) -> RoundClosed:
        """The open round's window has closed: the next round, or the end (recorded in
        ``outcome``). ``gone``: members known to have left."""
        ...


class SecAggRun:
    """A SecAgg / SecAgg+ session (with or without DP) over the service."""

    def __init__(self, session: SecAggSession, members: frozenset[int], threads: int | None):
        self.session = session
        self.members = members
        self.threads = threads
        self.machine = SecAggServer(
            session.config,
            identity_public_keys=session.identity_public_keys,
            threads=threads,
        )
        self.nonce = b""
        """The session's nonce: DP's public round seed."""

    @property
    def rejections(self) -> list[Rejection]:
        return self.machine.rejections

    def open(self) -> dict[int, Payload]:
        opening = self.machine.start()
        # The nonce is fresh, public and reaches every client before it encodes its
        # update: DP uses it as the round seed of the shared rotation.
        self.nonce = opening.nonce
        start = codec.encode(opening)
        return {c: [start] for c in self.members}

    def decode(self, client: int, payload: memoryview) -> Any:
        try:
            # A read-only view of the frame: the codec decodes the masked vector as a
            # view into it, without a copy.
            return codec.decode_from_client(
                payload, max_dimension=self.session.config.dimension + 1
            )
        except InvalidMessage as exc:
            raise Refused(
                "INVALID_ARGUMENT", f"undecodable message: {exc}", f"undecodable: {exc}"
            ) from None

    def accept(self, client: int, message: Any) -> None:
        if not self.machine.receive(client, message):
            raise Refused("INVALID_ARGUMENT", f"rejected: {self.machine.rejections[-1].reason}")

    def reject(self, client: int, reason: str) -> None:
        stage = self.machine.stage or Stage.ADVERTISE_KEYS
        self.machine.rejections.append(Rejection(client, stage, reason))

    def close_round(self, outcome: SessionOutcome, gone: set[int]) -> RoundClosed:
        machine = self.machine
        messages = machine.close_round()
        stage = machine.stage
        assert stage is not None
        outcome.stage = stage
        if stage in ROUNDS:
            return RoundClosed(
                next={c: [codec.encode(m)] for c, m in messages.items() if c not in gone}
            )
        if stage is not Stage.COMPLETED:
            outcome.abort_reason = machine.abort_reason
            text = (machine.abort_reason or "aborted").encode()
            return RoundClosed(
                final=(Kind.ABORT, [text]), also_notify=frozenset(set(messages) - gone)
            )
        assert machine.result is not None
        outcome.contributors = machine.result.contributors
        # SecAgg returns the ring sum; the session's encoder decodes it (a DP session's,
        # below, is securefl.dp's).
        try:
            result = decoded(machine.result, encoder_for(machine.config, threads=self.threads))
        except ValueError as exc:
            refusal: str | None = f"unmasked aggregate is corrupted: {exc}"
        else:
            # A last line behind SecAgg's own min_survivors check (the state machine
            # aborts before unmasking): an under-noised sum is neither kept nor sent.
            refusal = self._decode_dp(outcome, result)
        if refusal is not None:
            # The ring sum is withheld: it would release less noise than promised, or it
            # is no honest sum.
            outcome.stage = Stage.ABORTED
            outcome.abort_reason = refusal
            return RoundClosed(final=(Kind.ABORT, [refusal.encode()]))
        outcome.result = result
        payload = framing.encode_result(
            framing.Result(
                result.weighted_mean,
                result.total_weight,
                result.contributors,
                result.dropped,
                result.ring_sum,
            )
        )
        return RoundClosed(final=(Kind.RESULT, payload))

    def _decode_dp(self, outcome: SessionOutcome, result: Any) -> str | None:
        """With DP, decode the ring sum into ``outcome.dp``; the reason to abort instead
        if the survivors are fewer than the plan's noise is calibrated for."""
        plan = self.session.dp
        if plan is None:
            return None
        from securefl.dp import DPEncoder

        encoder = DPEncoder(
            plan,
            round_seed=self.nonce,
            max_weight=self.session.config.max_weight,
            threads=self.threads,
        )
        try:
            outcome.dp = encoder.decode_aggregate(result)
        except ConfigError as exc:
            log.warning("session %d: %s", outcome.session, exc)
            return f"differential privacy: {exc}"
        return None


class CKKSRun:
    """A CKKS FedAvg session over the service: one upload round, then the sum."""

    def __init__(self, session: CKKSSession, members: frozenset[int], threads: int | None):
        from securefl.ckks.server import Aggregator

        self.session = session
        self.members = members
        self.machine: Aggregator = Aggregator(session.context, threads=threads)
        self._rejections: list[Rejection] = []

    @property
    def rejections(self) -> list[Rejection]:
        return self._rejections

    def open(self) -> dict[int, Payload]:
        return {c: [] for c in self.members}

    def decode(self, client: int, payload: memoryview) -> Any:
        """Refuse an ``SFCK`` ciphertext that does not hold the session's d + 1 values."""
        from securefl.ckks.wire import read_header

        try:
            length = read_header(payload).length
        except InvalidMessage as exc:
            raise Refused("INVALID_ARGUMENT", f"rejected: {exc}") from None
        # The aggregator adopts the first ciphertext's length: one client with a short
        # ciphertext would otherwise make every honest client's submission fail.
        d = self.session.dimension
        if length != d + 1:
            raise Refused(
                "INVALID_ARGUMENT",
                f"rejected: the ciphertext holds {length} values; the session's "
                f"{d} and the weight make {d + 1}",
            )
        return payload

    def accept(self, client: int, message: Any) -> None:
        try:
            self.machine.add(str(client), message)
        except InvalidMessage as exc:
            raise Refused("INVALID_ARGUMENT", f"rejected: {exc}") from None

    def reject(self, client: int, reason: str) -> None:
        self._rejections.append(Rejection(client, Stage.ADVERTISE_KEYS, reason))

    def close_round(self, outcome: SessionOutcome, gone: set[int]) -> RoundClosed:
        from securefl.transports.service.sessions import encode_ckks_result

        contributors = tuple(sorted(int(c) for c in self.machine.clients))
        outcome.contributors = contributors
        need = self.session.min_clients
        if len(contributors) < need:
            reason = f"only {len(contributors)} clients sent an update; need {need}"
            outcome.stage = Stage.ABORTED
            outcome.abort_reason = reason
            return RoundClosed(final=(Kind.ABORT, [reason.encode()]))
        outcome.stage = Stage.COMPLETED
        return RoundClosed(
            final=(Kind.RESULT, encode_ckks_result(contributors, self.machine.result()))
        )
