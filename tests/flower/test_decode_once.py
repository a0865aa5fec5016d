"""The mod decodes each incoming protocol message once and rebuilds no client for its
readiness check: counts of ``codec.decode`` calls, clients built and ``handle`` calls
over whole FL rounds (in-process, no Ray), and the same sessions when every message
lands in a new process, when two processes take turns, and when a node's Context is
rolled back behind what the process has cached."""

from __future__ import annotations

import copy
import gc
import pickle
import types
import weakref
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from flwr.app import Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable, Mod

import securefl.transports.flower.mod as mod
from flower import sim_app
from securefl.secagg import codec
from securefl.secagg.config import SecAggConfig
from securefl.secagg.messages import MaskedInput, SessionStart
from securefl.transports.flower import RECORD_KEY, secagg_mod
from securefl.transports.flower.local_grid import LocalGrid, task_identity
from securefl.transports.flower.records import (
    NEXT_RECORD_KEY,
    Envelope,
    pack_config,
    write_envelope,
)

NODES, ROUNDS, MAX_WEIGHT = 5, 2, 100


@pytest.fixture(autouse=True)
def _identity(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # A fresh process: no session decoded yet.
    monkeypatch.setattr(mod, "_DECODED", mod._DecodedSessions(mod._CACHED_SESSIONS))
    with task_identity():
        yield


class Counts:
    """What the mod does, by the kind of the protocol message in flight."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.by_kind: dict[str, Counter[str]] = {}
        self.kind = "none"
        counts = self

        def decode(data: Any, **kwargs: Any) -> Any:
            counts.add("decode")
            return codec.decode(data, **kwargs)

        class Counting(mod.SecAggClient):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                counts.add("build")
                super().__init__(*args, **kwargs)

            def handle(self, message: Any) -> Any:
                counts.add("handle")
                return super().handle(message)

        # The mod's own view of the codec: the strategy's decodes are not counted.
        monkeypatch.setattr(mod, "codec", types.SimpleNamespace(decode=decode, encode=codec.encode))
        monkeypatch.setattr(mod, "SecAggClient", Counting)

    def add(self, what: str, n: int = 1) -> None:
        self.by_kind.setdefault(self.kind, Counter())[what] += n

    def total(self, what: str) -> int:
        return sum(c[what] for c in self.by_kind.values())

    def watch(self, msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        """A mod before securefl's: names the message in flight (and counts envelopes)."""
        kinds = [
            type(codec.decode(msg.content[key]["message"])).__name__  # type: ignore[arg-type]
            for key in (RECORD_KEY, NEXT_RECORD_KEY)
            if key in msg.content.config_records
        ]
        self.kind = "+".join(kinds) or "none"
        self.add("envelopes", len(kinds))
        try:
            return call_next(msg, context)
        finally:
            self.kind = "none"


def _run(grid: LocalGrid, *, prefetch: bool = True) -> None:
    """Two FL rounds without faults; the models must be FedAvg's."""
    strategy = sim_app.strategy(NODES, MAX_WEIGHT, prefetch_keys=prefetch)
    history = sim_app.start(strategy, grid, ROUNDS, faults=False)
    sim_app.check_models(
        strategy.reports, history, {r: list(range(NODES)) for r in range(1, ROUNDS + 1)}, MAX_WEIGHT
    )


def _app(*mods: Mod) -> ClientApp:
    """The test app (sim_app's train function) with ``mods`` before securefl's."""
    app = ClientApp(mods=[*mods, secagg_mod])
    app.train()(sim_app.train)
    return app


@pytest.mark.parametrize("prefetch", [True, False])
def test_each_message_is_decoded_once_and_two_clients_are_built_per_round(
    monkeypatch: pytest.MonkeyPatch, prefetch: bool
) -> None:
    """Per node and FL round, in one process: four protocol messages, four decodes;
    two clients built (one without input at SessionStart; the one with the update at
    ShareRouting, stored from then on); six ``handle`` calls. Replaying the record for
    every message (the mod before issue 13) decoded 18 to 19, built five clients and
    made twelve calls."""
    counts = Counts(monkeypatch)
    _run(LocalGrid.for_app(_app(counts.watch), NODES), prefetch=prefetch)
    node_rounds = NODES * ROUNDS
    assert counts.total("envelopes") == 4 * node_rounds
    assert counts.total("decode") == counts.total("envelopes")
    assert counts.total("build") == 2 * node_rounds
    assert counts.total("handle") == 6 * node_rounds


def test_share_routing_is_decoded_once_and_its_readiness_needs_no_replay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ShareRouting message: one decode of it (and one of the next round's
    SessionStart riding on it), one client built, the one with the update, which
    handles SessionStart, KeyDirectory and the ShareRouting; the readiness check
    reads the stored client's stage. Before: six decodes and two clients."""
    counts = Counts(monkeypatch)
    _run(LocalGrid.for_app(_app(counts.watch), NODES))
    routing = counts.by_kind["ShareRouting"]  # the last round's: nothing rides on it
    assert routing == Counter(envelopes=NODES, decode=NODES, build=NODES, handle=3 * NODES)
    riding = counts.by_kind["ShareRouting+SessionStart"]
    assert riding == Counter(
        envelopes=2 * NODES, decode=2 * NODES, build=2 * NODES, handle=4 * NODES
    )
    # KeyDirectory alone (round 1) is answered by the stored client: no build, no replay.
    assert counts.by_kind["KeyDirectory"] == Counter(envelopes=NODES, decode=NODES, handle=NODES)


def test_a_new_process_for_every_message_rebuilds_each_session_from_its_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As under a SuperNode's subprocess isolation: the process forgets everything
    between messages, the record in Context.state is all there is, and the rounds
    are still FedAvg's (the replayed client re-derives the same keys and shares)."""
    counts = Counts(monkeypatch)

    def new_process(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        mod._DECODED.clear()
        return call_next(msg, context)

    grid = LocalGrid.for_app(_app(counts.watch, new_process), NODES)
    _run(grid, prefetch=False)
    # Each message decodes itself and replays the record: 1 + 2 + 3 + 4 per round
    # (SessionStart, KeyDirectory, ShareRouting, Unmasking), one rebuild each, and
    # ShareRouting two (its readiness, then the client with the update).
    assert counts.total("decode") == (1 + 2 + 3 + 4) * NODES * ROUNDS
    assert counts.total("build") == (1 + 1 + 2 + 1) * NODES * ROUNDS
    assert not any(k.startswith(mod.STATE_KEY) for c in grid.contexts.values() for k in c.state)


def test_two_processes_taking_turns_decode_each_message_at_most_once_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As Ray's simulation does with two actors: a node's messages land on either
    process; each catches up from the record on what the other answered."""
    counts = Counts(monkeypatch)
    processes = [mod._DecodedSessions(8), mod._DecodedSessions(8)]
    turn = iter(range(10**6))

    def either(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        monkeypatch.setattr(mod, "_DECODED", processes[next(turn) % 2])
        return call_next(msg, context)

    _run(LocalGrid.for_app(_app(counts.watch, either), NODES))
    assert counts.total("envelopes") < counts.total("decode") <= 2 * counts.total("envelopes")


class _Redelivering(LocalGrid):
    """Delivers each message twice, rolling the node's Context back in between (a
    SuperNode that lost the first reply): the process's cache is then ahead of the
    record and must not be used as it is."""

    def deliver(self, message: Message) -> Message | None:
        _, context = self.nodes[message.metadata.dst_node_id]
        kinds = {
            type(codec.decode(record["message"]))  # type: ignore[arg-type]
            for record in message.content.config_records.values()
            if "message" in record
        }
        if SessionStart in kinds:  # a new session draws a new seed: not reproducible
            return super().deliver(message)
        saved = copy.deepcopy(context.state)
        first = super().deliver(message)
        context.state = saved
        second = super().deliver(message)
        assert first is not None and second is not None and not second.has_error()
        assert bytes(first.content[RECORD_KEY]["message"]) == bytes(  # type: ignore[arg-type]
            second.content[RECORD_KEY]["message"]  # type: ignore[arg-type]
        )
        return second


def test_a_rolled_back_context_is_answered_from_its_record_not_from_the_cache() -> None:
    _run(_Redelivering.for_app(sim_app.make_client_app(faults=False), NODES), prefetch=False)


def test_the_mod_pickles_as_its_settings_and_the_process_cache_never() -> None:
    """Ray ships the ClientApp with its mods by pickle: the mod carries no session
    state; the cache of decoded sessions (the clients' keys) refuses pickling and no
    repr shows the seed."""
    context = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})
    config = SecAggConfig(num_clients=3, threshold=2, dimension=3, corruption_rate=0.1)
    content = RecordDict()
    start = SessionStart(bytes(32), config.digest())
    write_envelope(content, Envelope(b"s" * 16, codec.encode(start), 0, pack_config(config)))
    request = Message(content, dst_node_id=7, message_type=MessageType.TRAIN)
    reply = secagg_mod(request, context, lambda m, c: Message(RecordDict(), reply_to=m))
    assert not reply.has_error()
    (record,) = context.state.config_records.values()
    seed = bytes(record["seed"])  # type: ignore[arg-type]
    (decoded,) = mod._DECODED._entries.values()
    for text in (repr(mod._DECODED), repr(decoded), repr(secagg_mod)):
        assert seed.hex() not in text and repr(seed)[2:-1] not in text
    copied = pickle.loads(pickle.dumps(secagg_mod))
    assert repr(copied) == repr(secagg_mod)
    for holder in (mod._DECODED, decoded):
        with pytest.raises(TypeError):
            pickle.dumps(holder)


def test_the_update_is_freed_once_masked_while_the_client_is_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between ShareRouting and Unmasking the process keeps the client that masked the
    update, but not the update: no reference to it is left once the reply is out."""
    updates: list[weakref.ref[Any]] = []

    class Recording(mod.SecAggClient):
        def __init__(self, client_id: int, config: SecAggConfig, update: Any, *a: Any, **k: Any):
            if update.strides != (0,):  # not the zero view: the trained update
                updates.append(weakref.ref(update))
            super().__init__(client_id, config, update, *a, **k)

    monkeypatch.setattr(mod, "SecAggClient", Recording)
    checked: list[int] = []

    def after_masking(node: int, reply: Message) -> Message:
        message = codec.decode(reply.content[RECORD_KEY]["message"])  # type: ignore[arg-type]
        if isinstance(message, MaskedInput):
            gc.collect()
            assert len(updates) == len(checked) + 1 and updates[-1]() is None
            assert len(mod._DECODED._entries) == NODES  # every session is still cached
            checked.append(node)
        return reply

    strategy = sim_app.strategy(NODES, MAX_WEIGHT, prefetch_keys=False)
    grid = LocalGrid.for_app(_app(), NODES, intercept=after_masking)
    sim_app.start(strategy, grid, 1, faults=False)
    assert len(checked) == NODES
