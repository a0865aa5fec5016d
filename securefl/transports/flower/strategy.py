"""The server side of securefl inside Flower: a FedAvg Strategy that aggregates with
SecAgg / SecAgg+ (Bonawitz et al. 2017; Bell et al. 2020, sparse neighbourhoods).

One Flower training round is one aggregation session. ``configure_train`` samples the
nodes as :class:`flwr.serverapp.strategy.FedAvg` does, opens a :class:`SecAggServer`
and sends each node the session's ``SessionStart`` (a train message; with prefetched
keys, the round's first pending request instead). The replies are
the clients' ``AdvertiseKeys``; ``aggregate_train`` then runs the remaining protocol
rounds itself through the Grid (``send_and_receive``, one call per round, with
``round_timeout``), as Flower's own ``SecAggPlusWorkflow`` runs several exchanges
inside one FL round. The global model and the train config travel with ShareRouting,
where the clients train, so an update exists only while it is being masked (the
client mod keeps no copy). A node that answers with an error or not at all before the
timeout has dropped; the protocol tolerates it while every neighbourhood keeps t
members. The result is the global model plus the weighted mean of the survivors'
updates (FedAvg), to the fixed-point precision of the session.

Key setup runs one FL round ahead (``prefetch_keys``): round r + 1's SessionStart
rides on round r's ShareRouting exchange and its KeyDirectory on round r's Unmasking
exchange, in a second record (``securefl-next``), so that every round after the first
takes two exchanges: masked inputs, then unmasking, which no round can do without.

Clients send updates relative to the global model they received, so ``clip`` bounds
how far one round may move each coordinate, not the weights themselves.

With a DP plan (``dp=``, :mod:`securefl.dp`) each session is a ring-input session
(:func:`securefl.dp.secagg_config`'s form: the plan's padded dimension, ring bits,
clients and minimum of survivors n_min); every client encodes its update with the plan
(L2 clip, weight, rotation, rounding and its share of the noise, inside the ring),
and the strategy decodes the unmasked ring sum with :func:`securefl.dp.decode_aggregate`,
so the new global model is the previous one plus the plan's noisy weighted mean. The
rotation's public round seed is the session's SessionStart nonce; the plan's digest
travels with the SessionStart and each client refuses any plan but its own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result
from flwr.supercore import log

from securefl import vectors
from securefl.encoding import FixedPointEncoder, RingSum
from securefl.errors import ConfigError, InvalidMessage
from securefl.secagg import codec
from securefl.secagg.config import SecAggConfig
from securefl.secagg.defaults import DEFAULT_CORRUPTION_RATE, default_config
from securefl.secagg.messages import ServerMessage, SessionStart, ShareRouting, Stage
from securefl.secagg.server import Rejection, SecAggServer
from securefl.transports.flower.records import (
    NEXT_RECORD_KEY,
    RECORD_KEY,
    SESSION_BYTES,
    Envelope,
    dp_mismatch,
    pack_config,
    read_envelope,
    write_envelope,
)

if TYPE_CHECKING:
    from securefl.dp import DPPlan

__all__ = ["RoundReport", "SecAggFedAvg"]

_AFTER = {Stage.ADVERTISE_KEYS: Stage.SHARE_KEYS, Stage.SHARE_KEYS: Stage.MASKED_INPUT_COLLECTION}
"""The stage a session reaches when the given one closes without abort."""

ConfigFactory = Callable[[int, int], SecAggConfig]
"""``factory(num_clients, dimension) -> SecAggConfig`` for one round's session (with a
DP plan: the plan's number of clients and padded dimension)."""


@dataclass
class RoundReport:
    """What the server saw in one FL round's aggregation session."""

    server_round: int
    stage: Stage
    abort_reason: str | None
    sampled: tuple[int, ...]
    """Node ids sent the train message."""
    config: SecAggConfig | None = None
    """The session's parameters (precision: ``config.fixed_point.frac_bits``)."""
    contributors: tuple[int, ...] = ()
    """Node ids whose update is in the aggregate (U3)."""
    dropped: tuple[int, ...] = ()
    """Node ids that shared keys but sent no masked input (their masks were removed)."""
    total_weight: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    seconds: dict[Stage, float] = field(default_factory=dict)
    """Wall time of each protocol round at the server, replies and close included."""


@dataclass
class _Opened:
    """A session whose SessionStart is out (or about to be): the server state machine,
    the session tag, and protocol client id -> node id."""

    server_round: int
    server: SecAggServer
    start: SessionStart
    session: bytes
    node_of: dict[int, int]
    packed_config: bytes
    dp_digest: bytes | None = None
    """The DP plan's digest, sent with the SessionStart (DP sessions only)."""
    prefetched: Stage | None = None
    """The last round run ahead on the previous FL round's exchanges: AdvertiseKeys
    (SessionStart sent, answers collected) or ShareKeys (KeyDirectory sent too)."""
    advertised: set[int] = field(default_factory=set)
    """Clients whose AdvertiseKeys the server accepted."""
    sent_to: set[int] = field(default_factory=set)
    """Nodes that got an envelope of this session on the current exchange."""

    def envelopes(self) -> dict[int, Envelope]:
        """Each sampled node's SessionStart envelope, by node id."""
        payload = codec.encode(self.start)
        return {
            node: Envelope(self.session, payload, cid, self.packed_config, self.dp_digest)
            for cid, node in self.node_of.items()
        }


@dataclass
class _Round:
    server_round: int
    server: SecAggServer
    session: bytes
    node_of: dict[int, int]
    arrays: ArrayRecord
    train_config: ConfigRecord
    global_flat: npt.NDArray[np.float64]
    layout: vectors.Layout
    grid: Grid
    started: float
    nonce: bytes
    """The SessionStart nonce: public; the DP rotation's round seed."""
    upcoming: _Opened | None = None
    """The next round's session, if its key setup rode on ``configure_train``'s messages."""


class SecAggFedAvg(FedAvg):
    """FedAvg whose ``aggregate_train`` never sees an individual update.

    Use it with :func:`~securefl.transports.flower.secagg_mod` on the clients. The
    sampling, evaluation and record keys are FedAvg's; training replies carry only
    protocol messages, so client train metrics are not aggregated: the returned
    MetricRecord holds the total weight and the numbers of contributing and dropped
    nodes.

    Parameters
    ----------
    clip:
        c: each coordinate of a client's update (trained minus global model) is
        clipped to [-c, c].
    max_weight:
        W: the largest integer weight (``weighted_by_key`` metric) a client may use.
        The mean's rounding error is below 2^-p W / (mean weight), p the precision.
    bits:
        b: the ring Z_2^b of the masked vectors (32 or 64; 64 doubles the bytes and
        buys about 32 more bits of precision).
    dropout_rate, corruption_rate:
        Tolerated fraction of nodes that drop out during a round and that collude with
        the server; with them securefl chooses the SecAgg+ neighbourhood size k and the
        threshold t (Bell et al. 2020), or the complete graph (SecAgg) where a sparse
        one would not be smaller. The defaults are every entry point's
        (:mod:`securefl.secagg.defaults`): 10 % of the nodes dropping out and at least
        one (``dropout_rate=None``), and 10 % colluding.
    round_timeout:
        Seconds each protocol round waits for replies; later nodes have dropped.
    config_factory:
        Overrides the parameter choice: ``factory(num_clients, dimension)`` returns
        the :class:`SecAggConfig` of a round. The clients check it against their own
        :class:`~securefl.transports.flower.ClientPolicy` and refuse a session below it.
    dp:
        A :class:`securefl.dp.DPPlan` (``calibrate(DPConfig(...), d)``, d the number
        of model parameters): distributed differential privacy in every round (see
        the module docstring). The plan fixes the ring bits (``bits`` is unused), the
        L2 clip of each update (``clip`` is unused) and the most clients per round,
        ``plan.config.num_clients``; a round samples between the plan's n_min and
        that many nodes, or is skipped with the reason in its report. The clients
        need ``ClientPolicy(dp=plan)``. ``config_factory`` then gets the plan's
        number of clients and padded dimension and must return a configuration that
        carries the plan (:func:`securefl.dp.secagg_config`'s fields).
    threads:
        Threads for the server's sum and unmasking (``None``: all cores).
    prefetch_keys:
        Run the next FL round's key setup on this round's exchanges: its
        ``SessionStart`` rides with this round's ``ShareRouting`` and its
        ``KeyDirectory`` with this round's ``UnmaskingRequest`` (nodes for round r + 1
        are sampled then, as FedAvg would sample them in ``configure_train``). Every
        round after the first then needs two exchanges instead of four: ShareRouting
        with the model (training, masked input) and Unmasking. The two sessions are
        independent (fresh keys, their own session ids). Only under :meth:`start`,
        which tells the strategy which round is the last.
    **fedavg:
        Passed to :class:`flwr.serverapp.strategy.FedAvg` (``fraction_train``,
        ``min_train_nodes``, ``weighted_by_key``, ...).

    Attributes
    ----------
    reports:
        One :class:`RoundReport` per training round.
    """

    def __init__(
        self,
        *,
        clip: float = 1.0,
        max_weight: int = 1000,
        bits: int = 32,
        dropout_rate: float | None = None,
        corruption_rate: float = DEFAULT_CORRUPTION_RATE,
        round_timeout: float = 600.0,
        config_factory: ConfigFactory | None = None,
        threads: int | None = None,
        prefetch_keys: bool = True,
        dp: DPPlan | None = None,
        **fedavg: Any,
    ) -> None:
        if dp is not None:
            from securefl.dp import DPPlan

            if not isinstance(dp, DPPlan):
                raise ConfigError(f"dp must be a securefl.dp.DPPlan, got {type(dp).__name__}")
        super().__init__(**fedavg)
        self.dp = dp
        self.round_timeout = round_timeout
        self.threads = threads
        self.prefetch_keys = prefetch_keys
        self.reports: list[RoundReport] = []
        self._round: _Round | None = None
        self._next: _Opened | None = None
        self._last_round: int | None = None

        def default_factory(num_clients: int, dimension: int) -> SecAggConfig:
            # The defaults every entry point shares (securefl.secagg.defaults); with DP
            # the ring-input session of securefl.dp.secagg_config, same graph and t.
            ring: dict[str, Any] = (
                {"bits": dp.config.bits, "ring_input": True,
                 "min_survivors": dp.config.min_survivors}
                if dp is not None
                else {"bits": bits, "clip": clip}
            )  # fmt: skip
            return default_config(
                num_clients,
                dimension,
                dropout_rate=dropout_rate,
                corruption_rate=corruption_rate,
                max_weight=max_weight,
                **ring,
            )

        self.config_factory = config_factory or default_factory

    def summary(self) -> None:
        """Log FedAvg's summary and the secure-aggregation settings."""
        super().summary()
        log(INFO, "\t└──> Secure aggregation: securefl SecAgg/SecAgg+ per training round")

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """FedAvg's ``start``; knowing ``num_rounds`` lets rounds prefetch keys."""
        self._last_round, self._next = num_rounds, None
        try:
            return super().start(
                grid,
                initial_arrays,
                num_rounds,
                timeout,
                train_config,
                evaluate_config,
                evaluate_fn,
            )
        finally:
            self._last_round, self._next = None, None

    def _sample(self, server_round: int, grid: Grid) -> list[int]:
        """Node ids FedAvg samples for training (its messages are discarded)."""
        messages = super().configure_train(server_round, ArrayRecord(), ConfigRecord(), grid)
        return sorted(m.metadata.dst_node_id for m in messages)

    def _open(self, server_round: int, sampled: list[int], dimension: int) -> _Opened:
        """A new session for ``sampled``.

        Raises
        ------
        ConfigError
            If no secure configuration exists for that many nodes and this dimension.
        """
        config = self._config(len(sampled), dimension)
        packed = pack_config(config)
        server = SecAggServer(config, threads=self.threads)
        start = server.start()
        session = os.urandom(SESSION_BYTES)
        digest = None if self.dp is None else self.dp.digest()
        return _Opened(
            server_round, server, start, session, dict(enumerate(sampled)), packed, digest
        )

    def _session_dimension(self, dimension: int) -> int:
        """The session's vector length for a d-parameter model (DP pads it to D)."""
        if self.dp is not None and dimension == self.dp.dimension:
            return self.dp.padded_dimension
        return dimension

    def _config(self, sampled: int, dimension: int) -> SecAggConfig:
        """The session's configuration for ``sampled`` nodes and a d-parameter model.

        Raises
        ------
        ConfigError
            If it cannot be built, or (with DP) the model, the number of nodes or the
            factory's configuration does not fit the plan.
        """
        plan = self.dp
        if plan is None:
            return _no_identity_keys(self.config_factory(sampled, dimension))
        if dimension != plan.dimension:
            raise ConfigError(
                f"the model has d={dimension} parameters, the DP plan is for d={plan.dimension}"
            )
        n, n_min = plan.config.num_clients, plan.config.min_survivors
        # More nodes than the plan's n would overflow its ring; fewer than n_min could
        # never be unmasked (SecAgg's min_survivors), so no node should do the work.
        if not n_min <= sampled <= n:
            raise ConfigError(
                f"{sampled} nodes sampled, the DP plan needs between n_min={n_min} and n={n}"
            )
        config = _no_identity_keys(self.config_factory(n, plan.padded_dimension))
        mismatch = dp_mismatch(config, plan)
        if mismatch is not None:
            raise ConfigError(f"the session cannot carry the DP plan: {mismatch}")
        return config

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Open this round's aggregation session: send the SessionStart to the nodes
        FedAvg samples or, when the previous round prefetched them, the KeyDirectory."""
        self._round = None
        prefetched, self._next = self._next, None
        global_flat, layout = vectors.flatten({k: a.numpy() for k, a in arrays.items()})

        def make_round(opened: _Opened) -> _Round:
            return _Round(
                server_round,
                opened.server,
                opened.session,
                opened.node_of,
                arrays,
                config,
                global_flat.astype(np.float64),
                layout,
                grid,
                time.perf_counter(),
                opened.start.nonce,
            )

        if (
            prefetched is not None
            and prefetched.prefetched is not None
            and prefetched.server_round == server_round
            and prefetched.server.config.dimension == self._session_dimension(layout.size)
        ):
            # Its last prefetched round came with the previous FL round: close it now
            # and go on with KeyDirectory, or straight to ShareRouting and training.
            outgoing = prefetched.server.close_round()
            if prefetched.server.stage is _AFTER[prefetched.prefetched]:
                state = self._round = make_round(prefetched)
                config["server-round"] = server_round  # as FedAvg.configure_train does
                messages = self._messages(state, outgoing)
                if prefetched.server.stage is Stage.MASKED_INPUT_COLLECTION:
                    state.upcoming = self._prefetch(state, messages)
                return messages
            log(WARNING, "securefl: prefetched session failed: %s", prefetched.server.abort_reason)
        sampled = self._sample(server_round, grid)
        config["server-round"] = server_round
        if not sampled:
            return []
        try:
            opened = self._open(server_round, sampled, layout.size)
        except ConfigError as exc:
            log(WARNING, "securefl: round %s skipped, no secure session: %s", server_round, exc)
            self.reports.append(RoundReport(server_round, Stage.ABORTED, str(exc), tuple(sampled)))
            return []
        self._round = make_round(opened)
        messages = []
        for node_id, envelope in opened.envelopes().items():
            content = RecordDict()
            write_envelope(content, envelope)
            messages.append(Message(content, dst_node_id=node_id, message_type=MessageType.TRAIN))
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Run the session's remaining rounds and return the new global model.

        Returns ``(None, None)`` when the session aborts (too many dropouts, corrupt
        input): Flower then keeps the previous global model.
        """
        state, self._round = self._round, None
        if state is None or state.server_round != server_round:
            return None, None
        server = state.server
        report = RoundReport(
            server_round,
            server.stage or Stage.ABORTED,
            None,
            tuple(state.node_of.values()),
            server.config,
        )
        self.reports.append(report)
        if state.upcoming is not None:
            replies = self._split_prefetched(state.upcoming, state, list(replies))
        t0 = state.started
        while True:
            stage = server.stage
            assert stage is not None
            _collect(server, state.session, state.node_of, replies)
            outgoing = server.close_round()
            report.seconds[stage] = time.perf_counter() - t0
            if server.stage not in (
                Stage.SHARE_KEYS,
                Stage.MASKED_INPUT_COLLECTION,
                Stage.CONSISTENCY_CHECK,
                Stage.UNMASKING,
            ):
                break
            t0 = time.perf_counter()
            messages = self._messages(state, outgoing)
            upcoming = None
            if server.stage in (Stage.MASKED_INPUT_COLLECTION, Stage.UNMASKING):
                upcoming = self._prefetch(state, messages)
            replies = state.grid.send_and_receive(messages, timeout=self.round_timeout)
            if upcoming is not None:
                replies = self._split_prefetched(upcoming, state, list(replies))
        report.stage = server.stage or Stage.ABORTED
        report.rejections = list(server.rejections)
        if server.result is None:
            report.abort_reason = server.abort_reason
            log(WARNING, "securefl: round %s aborted: %s", server_round, server.abort_reason)
            if outgoing:  # tell the clients still there, so they drop their session state
                state.grid.send_and_receive(
                    self._messages(state, outgoing), timeout=self.round_timeout
                )
            return None, None
        result = server.result
        report.contributors = tuple(state.node_of[c] for c in result.contributors)
        report.dropped = tuple(state.node_of[c] for c in result.dropped)
        report.total_weight = result.total_weight
        if self.dp is not None:
            decoded = self._dp_decode(state, result)
        else:
            # SecAgg returns the ring sum; the session's fixed-point encoder decodes it.
            try:
                decoded = FixedPointEncoder.for_config(server.config).decode(result)
            except ValueError as exc:
                decoded = f"unmasked aggregate is corrupted: {exc}"
        if isinstance(decoded, str):
            report.stage, report.abort_reason = Stage.ABORTED, decoded
            log(WARNING, "securefl: round %s: %s", server_round, decoded)
            return None, None
        mean = decoded
        log(
            INFO,
            "securefl: aggregated %s updates (%s dropped)",
            len(result.contributors),
            len(result.dropped),
        )
        updated = vectors.unflatten(state.global_flat + mean, state.layout)
        assert isinstance(updated, dict)
        arrays = ArrayRecord({str(k): Array(np.asarray(v)) for k, v in updated.items()})
        metrics = MetricRecord(
            {
                self.weighted_by_key: result.total_weight,
                "securefl-contributors": len(result.contributors),
                "securefl-dropped": len(result.dropped),
            }
        )
        return arrays, metrics

    def _dp_decode(self, state: _Round, result: RingSum) -> npt.NDArray[np.float64] | str:
        """The noisy weighted mean behind the ring sum (the DP encoder every transport
        uses), or why there is none."""
        from securefl.dp import DPEncoder

        plan = self.dp
        assert plan is not None
        encoder = DPEncoder(
            plan,
            round_seed=state.nonce,
            max_weight=state.server.config.max_weight,
            threads=self.threads,
        )
        try:
            return encoder.decode(result)
        except (ConfigError, ValueError) as exc:
            # Fewer survivors than the noise is calibrated for (SecAgg's min_survivors
            # stops that first), or a corrupt sum: nothing is released.
            return f"differential privacy: {exc}"

    def _prefetch(self, state: _Round, messages: list[Message]) -> _Opened | None:
        """Run round r + 1's next key-setup step on this exchange: open its session and
        add its SessionStart, or close its AdvertiseKeys and add its KeyDirectory, to
        ``messages`` (nodes without a message of this round get one of their own)."""
        if not self.prefetch_keys or self._last_round is None:
            return None
        if state.server_round >= self._last_round:
            return None
        upcoming = self._next
        if upcoming is None:
            sampled = self._sample(state.server_round + 1, state.grid)
            if not sampled:
                return None
            try:
                upcoming = self._open(state.server_round + 1, sampled, state.layout.size)
            except ConfigError:
                return None  # configure_train will say why
            envelopes = upcoming.envelopes()
            upcoming.prefetched = Stage.ADVERTISE_KEYS
        elif upcoming.prefetched is Stage.ADVERTISE_KEYS:
            missing = set(upcoming.node_of) - upcoming.advertised
            if missing:
                # A node that failed on the last exchange (its SessionStart rode on a
                # request it could not answer) gets its SessionStart again: it can still
                # join round r + 1, whose KeyDirectory then goes out in configure_train.
                everyone = upcoming.envelopes()
                envelopes = {upcoming.node_of[c]: everyone[upcoming.node_of[c]] for c in missing}
            else:
                outgoing = upcoming.server.close_round()
                if upcoming.server.stage is not Stage.SHARE_KEYS:
                    self._next = None  # too few keys: configure_train starts afresh
                    return None
                envelopes = {
                    upcoming.node_of[cid]: Envelope(upcoming.session, codec.encode(message))
                    for cid, message in outgoing.items()
                }
                upcoming.prefetched = Stage.SHARE_KEYS
        else:
            return None
        upcoming.sent_to = set(envelopes)
        by_node = {m.metadata.dst_node_id: m for m in messages}
        for node, envelope in envelopes.items():
            message = by_node.get(node)
            if message is None:
                message = Message(RecordDict(), dst_node_id=node, message_type=MessageType.TRAIN)
                messages.append(message)
            write_envelope(message.content, envelope, NEXT_RECORD_KEY)
        return upcoming

    def _split_prefetched(
        self, upcoming: _Opened, state: _Round, replies: list[Message]
    ) -> list[Message]:
        """Hand the AdvertiseKeys of round r + 1 to its server; return the replies for
        this round (all but those of nodes that only had the SessionStart)."""
        self._next = upcoming
        only_next = upcoming.sent_to - set(state.node_of.values())
        mine = [r for r in replies if r.metadata.src_node_id in upcoming.sent_to]
        accepted = _collect(
            upcoming.server, upcoming.session, upcoming.node_of, mine, NEXT_RECORD_KEY
        )
        if upcoming.prefetched is Stage.ADVERTISE_KEYS:
            upcoming.advertised |= accepted
        return [r for r in replies if r.metadata.src_node_id not in only_next]

    def _messages(self, state: _Round, outgoing: dict[int, ServerMessage]) -> list[Message]:
        messages = []
        for client_id, message in outgoing.items():
            content = RecordDict()
            if isinstance(message, ShareRouting):  # the clients train now: send the model
                content[self.arrayrecord_key] = state.arrays
                content[self.configrecord_key] = state.train_config
            write_envelope(content, Envelope(state.session, codec.encode(message)))
            messages.append(
                Message(
                    content, dst_node_id=state.node_of[client_id], message_type=MessageType.TRAIN
                )
            )
        return messages


def _no_identity_keys(config: SecAggConfig) -> SecAggConfig:
    """``config``, unless it asks for authenticated mode.

    Raises
    ------
    ConfigError
        For authenticated mode: it needs enrolled identity keys, which the adapter does
        not provision (the clients refuse it too).
    """
    if config.authenticated:
        raise ConfigError(
            "authenticated mode needs enrolled identity keys, which the Flower adapter "
            "does not provision"
        )
    return config


def _collect(
    server: SecAggServer,
    session: bytes,
    node_of: dict[int, int],
    replies: Iterable[Message],
    key: str = RECORD_KEY,
) -> set[int]:
    """Hand each valid reply to ``server``; record why any other is ignored.

    Returns the client ids whose message the server accepted.
    """
    accepted: set[int] = set()
    client_of = {node: cid for cid, node in node_of.items()}
    stage = server.stage or Stage.ADVERTISE_KEYS
    for reply in replies:
        node = reply.metadata.src_node_id
        client_id = client_of.get(node)
        if client_id is None:  # a node outside this session cannot inject messages
            server.rejections.append(Rejection(-1, stage, f"reply from unsampled node {node}"))
            continue
        if reply.has_error():  # the node left the round: it is a dropout
            server.rejections.append(
                Rejection(client_id, stage, f"error reply: {reply.error.reason}")
            )
            continue
        try:
            envelope = read_envelope(reply.content, key)
            if envelope.session != session:
                raise InvalidMessage("reply for another session")
            message = codec.decode_from_client(
                envelope.message, max_dimension=server.config.dimension + 1
            )
        except InvalidMessage as exc:
            server.rejections.append(Rejection(client_id, stage, f"undecodable: {exc}"))
            continue
        if server.receive(client_id, message):
            accepted.add(client_id)
    return accepted
