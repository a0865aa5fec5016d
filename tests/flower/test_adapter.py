"""The adapter's message handling, in-process (no Ray): FedAvg values, dropouts in
each protocol round, tampered, replayed and foreign replies on the server side, and
malformed or out-of-round requests on the client side."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)

from flower import sim_app
from securefl.errors import InvalidMessage
from securefl.secagg import codec
from securefl.secagg.config import GraphKind, SecAggConfig
from securefl.secagg.messages import (
    AdvertiseKeys,
    MaskedInput,
    SessionStart,
    ShareKeys,
    ShareRouting,
    Stage,
    UnmaskingResponse,
)
from securefl.transports.flower import (
    ERROR_CODE,
    RECORD_KEY,
    ClientPolicy,
    SecAggFedAvg,
    make_secagg_mod,
)
from securefl.transports.flower.local_grid import Intercept, LocalGrid, task_identity
from securefl.transports.flower.mod import STATE_KEY
from securefl.transports.flower.records import (
    NEXT_RECORD_KEY,
    Envelope,
    pack_config,
    read_envelope,
    read_weight,
    unpack_config,
    write_envelope,
)

NODES = 5


def _sessions(context: Context) -> list[Any]:
    """The securefl session records a node holds."""
    return [r for k, r in context.state.config_records.items() if k.startswith(STATE_KEY)]


MAX_WEIGHT = 100


@pytest.fixture(autouse=True)
def _identity() -> Iterator[None]:
    with task_identity():
        yield


def _run(
    rounds: int, *, faults: bool = False, intercept: Intercept | None = None, **options: Any
) -> tuple[SecAggFedAvg, list[dict[str, np.ndarray]], LocalGrid]:
    grid = LocalGrid.for_app(sim_app.make_client_app(faults=faults), NODES, intercept)
    strategy = sim_app.strategy(NODES, MAX_WEIGHT, **options)
    return strategy, sim_app.start(strategy, grid, rounds, faults=faults), grid


def _kind(reply: Message) -> type | None:
    if reply.has_error():
        return None
    return type(codec.decode(read_envelope(reply.content).message))


def _partition(node: int) -> int:
    return node - 1000


@pytest.mark.parametrize(
    ("prefetch", "faults", "exchanges"),
    [
        (False, True, 4 + 4 + 4),
        # The next round's key setup rides on this round's ShareRouting and Unmasking:
        # two exchanges per round after the first...
        (True, False, 4 + 2 + 2),
        # ... three when a node failed on the last ShareRouting, which carried its
        # SessionStart: it gets it again, so it can still take part in the next round.
        (True, True, 4 + 3 + 3),
    ],
)
def test_rounds_with_failures_match_fedavg(prefetch: bool, faults: bool, exchanges: int) -> None:
    strategy, history, grid = _run(3, faults=faults, prefetch_keys=prefetch)
    assert grid.exchanges == exchanges
    if not faults:
        sim_app.check_models(
            strategy.reports, history, {r: list(range(NODES)) for r in (1, 2, 3)}, MAX_WEIGHT
        )
        return
    participants = {r: sim_app.participants_with_faults(r, NODES) for r in (1, 2, 3)}
    sim_app.check_models(strategy.reports, history, participants, MAX_WEIGHT)
    # No session state is left on any node once its session is over.
    assert not any(_sessions(c) for c in grid.contexts.values())


@pytest.mark.parametrize("stage", [AdvertiseKeys, ShareKeys, MaskedInput, UnmaskingResponse])
def test_a_node_vanishing_before_any_round_leaves_the_others_aggregate(stage: type) -> None:
    gone = 3

    def drop(node: int, reply: Message) -> Message | None:
        return None if _partition(node) == gone and _kind(reply) is stage else reply

    strategy, history, _ = _run(1, intercept=drop)
    report = strategy.reports[0]
    assert report.stage is Stage.COMPLETED
    # A node lost after sending its masked input is still in the sum (Unmasking needs
    # only t of its neighbours); before that, it is left out.
    parts = list(range(NODES)) if stage is UnmaskingResponse else [0, 1, 2, 4]
    sim_app.check_models(strategy.reports, history, {1: parts}, MAX_WEIGHT)


def test_replies_carry_only_protocol_messages() -> None:
    seen: list[Message] = []

    def watch(node: int, reply: Message) -> Message:
        seen.append(reply)
        return reply

    _run(2, intercept=watch)
    assert len(seen) == 4 * NODES + 2 * NODES
    for reply in seen:
        # No arrays, no metrics (not even the weight): securefl's records only, each
        # with three fields (the second: the next round's AdvertiseKeys or ShareKeys).
        assert set(reply.content.keys()) <= {RECORD_KEY, NEXT_RECORD_KEY}
        for record in reply.content.config_records.values():
            assert set(record.keys()) == {"version", "session", "message"}
    assert sum(NEXT_RECORD_KEY in r.content for r in seen) == 2 * NODES


def _truncate_masked_input(p: int, kind: type | None, record: Any, sent: dict) -> None:
    if p == 1 and kind is MaskedInput:
        record["message"] = record["message"][:-7]


def _replay_advertise_in_share_keys(p: int, kind: type | None, record: Any, sent: dict) -> None:
    if p == 1 and kind is ShareKeys:
        record["message"] = sent[AdvertiseKeys]


def _foreign_session_in_unmasking(p: int, kind: type | None, record: Any, sent: dict) -> None:
    if p == 1 and kind is UnmaskingResponse:
        record["session"] = bytes(16)


def _unsampled_sender(p: int, kind: type | None, record: Any, sent: dict) -> None:
    pass  # see the intercept below: the reply claims another source node


@pytest.mark.parametrize(
    ("tamper", "reason", "in_sum"),
    [
        (_truncate_masked_input, "undecodable", False),
        (_replay_advertise_in_share_keys, "", False),  # the server's out-of-round reason
        (_foreign_session_in_unmasking, "another session", True),
        (_unsampled_sender, "unsampled node", True),
    ],
)
def test_tampered_replayed_and_foreign_replies_are_rejected(
    tamper: Any, reason: str, in_sum: bool
) -> None:
    """Node 1's reply is damaged: it is rejected with a reason and node 1 counts as
    dropped from that round on; the aggregate of the others is exact. A node lost at
    Unmasking stays in the sum (t others unmask it)."""
    sent: dict[type, bytes] = {}

    def intercept(node: int, reply: Message) -> Message:
        p, kind = _partition(node), _kind(reply)
        record = reply.content[RECORD_KEY]
        if p == 1 and kind is not None:
            sent[kind] = record["message"]
        tamper(p, kind, record, sent)
        if tamper is _unsampled_sender and p == 1 and kind is MaskedInput:
            reply.metadata.__dict__["_src_node_id"] = 999  # a node outside the session
        return reply

    strategy, history, _ = _run(1, intercept=intercept)
    report = strategy.reports[0]
    assert report.stage is Stage.COMPLETED
    rejected = [r for r in report.rejections if r.sender in (1, -1)]
    assert len(rejected) == 1 and reason in rejected[0].reason
    parts = list(range(NODES)) if in_sum else [0, 2, 3, 4]
    if tamper is _unsampled_sender:
        parts = [0, 2, 3, 4]  # its masked input was refused
    sim_app.check_models(strategy.reports, history, {1: parts}, MAX_WEIGHT)


def test_too_many_dropouts_abort_and_keep_the_model() -> None:
    def drop(node: int, reply: Message) -> Message | None:
        return None if _partition(node) < 3 and _kind(reply) is MaskedInput else reply

    strategy, history, grid = _run(1, intercept=drop)
    report = strategy.reports[0]
    assert report.stage is Stage.ABORTED and report.abort_reason
    for k, v in history[1].items():
        np.testing.assert_array_equal(v, history[0][k])
    # The abort notice reached the survivors: no session state is left anywhere.
    assert not any(_sessions(c) for c in grid.contexts.values())


# ---- client side: the mod faces a bad or malicious server ------------------------------


def _context() -> Context:
    return Context(
        run_id=1, node_id=7, node_config={"partition-id": 0}, state=RecordDict(), run_config={}
    )


def _request(envelope: Envelope, *, arrays: bool = False) -> Message:
    content = RecordDict()
    if arrays:
        content["arrays"] = ArrayRecord({"w": Array(np.zeros(3, np.float32))})
    write_envelope(content, envelope)
    return Message(content, dst_node_id=7, message_type=MessageType.TRAIN)


def _never(msg: Message, context: Context) -> Message:
    raise AssertionError("the user's train function must not run")


def _passthrough(msg: Message, context: Context) -> Message:
    return Message(RecordDict({"seen": ConfigRecord({"ok": True})}), reply_to=msg)


def _passthrough_train(msg: Message, context: Context) -> Message:
    """A train function that returns the model unchanged, with a weight."""
    arrays = msg.content["arrays"]
    metrics = MetricRecord({"num-examples": 1})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


# At the default ClientPolicy: corruption_rate 0.1 (c = 0 of 3), 2t > k + c = 2.
RATE = 0.1
CONFIG = SecAggConfig(num_clients=3, threshold=2, dimension=3, corruption_rate=RATE)


def _start(config: SecAggConfig = CONFIG, session: bytes = b"s" * 16) -> Envelope:
    return Envelope(
        session, codec.encode(SessionStart(bytes(32), config.digest())), 0, pack_config(config)
    )


def _error_reason(reply: Message) -> str:
    assert reply.has_error() and reply.error.code == ERROR_CODE
    return reply.error.reason or ""


def test_mod_passes_other_messages_through() -> None:
    mod = make_secagg_mod()
    evaluate = Message(RecordDict(), dst_node_id=7, message_type=MessageType.EVALUATE)
    assert "seen" in mod(evaluate, _context(), _passthrough).content
    plain_train = Message(RecordDict(), dst_node_id=7, message_type=MessageType.TRAIN)
    assert "seen" in mod(plain_train, _context(), _passthrough).content


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda r: r.__setitem__("message", b"SFL\x01\x01junk"), "malformed request"),
        (lambda r: r.__setitem__("version", True), "malformed request"),
        (lambda r: r.__setitem__("session", b"short"), "malformed request"),
        (lambda r: r.pop("config"), "refused session"),
        (lambda r: r.__setitem__("config", b"\x00" * 10), "refused session"),
    ],
)
def test_mod_refuses_malformed_requests(change: Any, reason: str) -> None:
    msg = _request(_start())
    change(msg.content[RECORD_KEY])
    context = _context()
    assert reason in _error_reason(make_secagg_mod()(msg, context, _never))
    assert not _sessions(context)


def test_mod_refuses_out_of_session_and_out_of_round_messages() -> None:
    mod, context = make_secagg_mod(), _context()
    routing = Envelope(b"s" * 16, codec.encode(ShareRouting(())))
    assert "no session" in _error_reason(mod(_request(routing, arrays=True), context, _never))
    reply = mod(_request(_start()), context, _never)
    assert _kind(reply) is AdvertiseKeys
    (saved,) = [dict(r) for r in _sessions(context)]
    # Another session's message is refused and the running session is untouched.
    foreign = Envelope(b"t" * 16, routing.message)
    assert "another session" in _error_reason(mod(_request(foreign, arrays=True), context, _never))
    assert [dict(r) for r in _sessions(context)] == [saved]
    # ShareRouting before KeyDirectory: the client aborts and forgets the session,
    # without running the train function.
    assert "left the session" in _error_reason(mod(_request(routing, arrays=True), context, _never))
    assert not _sessions(context)


def test_session_state_holds_a_32_byte_secret_seed_and_no_update() -> None:
    """Context.state holds the session's secret seed (as Flower's SecAgg+ mod keeps its
    secret keys there), never the update."""
    context = _context()
    make_secagg_mod()(_request(_start()), context, _never)
    (record,) = _sessions(context)
    assert set(record.keys()) == {"session", "seed", "client-id", "config", "history"}
    assert len(record["seed"]) == 32


def test_records_round_trip_and_reject_bad_fields() -> None:
    content = RecordDict()
    write_envelope(content, Envelope(b"x" * 16, b"payload", 5, pack_config(CONFIG)))
    envelope = read_envelope(content)
    assert (envelope.session, envelope.message, envelope.client_id) == (b"x" * 16, b"payload", 5)
    assert unpack_config(envelope.config or b"").digest() == CONFIG.digest()
    assert "payload" not in repr(envelope)
    with pytest.raises(InvalidMessage):
        read_envelope(RecordDict())
    for key, value in [("client-id", -1), ("client-id", 2**32), ("message", "text"), ("config", 3)]:
        content[RECORD_KEY][key] = value
        with pytest.raises(InvalidMessage):
            read_envelope(content)
        write_envelope(content, Envelope(b"x" * 16, b"payload", 5, pack_config(CONFIG)))
    with pytest.raises(InvalidMessage):
        unpack_config(pack_config(CONFIG)[:-1])
    bad = bytearray(pack_config(CONFIG))
    bad[9:13] = (9).to_bytes(4, "little")  # threshold above the neighbourhood size
    with pytest.raises(InvalidMessage, match="threshold t=9"):
        unpack_config(bytes(bad))
    # A DP session's plan digest travels with its SessionStart, 32 bytes exactly.
    write_envelope(content, Envelope(b"x" * 16, b"payload", 5, pack_config(CONFIG), b"d" * 32))
    assert read_envelope(content).dp_plan == b"d" * 32
    for digest in (b"d" * 31, "d" * 32):
        content[RECORD_KEY]["dp-plan"] = digest
        with pytest.raises(InvalidMessage, match="dp-plan"):
            read_envelope(content)


def test_the_config_record_carries_every_field_of_a_dp_session() -> None:
    """The finding of issue 11: the packed configuration dropped min_survivors, so a DP
    session was refused by its own clients. It is SecAggConfig's one wire form now."""
    config = SecAggConfig(
        num_clients=6,
        threshold=3,
        dimension=1024,
        bits=20,
        max_weight=100,
        graph=GraphKind.HARARY,
        degree=4,
        ring_input=True,
        min_survivors=5,
        corruption_rate=0.1,
        security_bits=48,
    )
    back = unpack_config(pack_config(config))
    # Equal but for frac_bits, which the wire form writes resolved.
    assert back.to_bytes() == config.to_bytes() and back.digest() == config.digest()
    assert (back.ring_input, back.min_survivors, back.corruption_rate, back.security_bits) == (
        True,
        5,
        0.1,
        48,
    )


def test_context_repr_shows_no_session_seed() -> None:
    """Flower's repr(Context) prints every value of Context.state; the session seed the
    mod keeps there is not among them: not in the Context the mod leaves behind, not in
    the one the user's function sees, not after pickling (how Ray moves a Context), and
    again not once the mod has seen a Context that went through Flower's protobuf form
    (a SuperNode's ClientApp process), which knows only plain bytes."""
    import pickle

    from flwr.common.serde import context_from_proto, context_to_proto

    context = _context()
    assert _kind(make_secagg_mod()(_request(_start()), context, _never)) is AdvertiseKeys
    (record,) = _sessions(context)
    seed = bytes(record["seed"])
    assert len(seed) == 32
    leaks = (repr(seed), repr(seed)[2:-1], seed.hex())

    def clean(context: Context) -> bool:
        return not any(leak in text for leak in leaks for text in (repr(context), str(context)))

    assert clean(context)
    assert clean(pickle.loads(pickle.dumps(context)))
    proto = context_from_proto(context_to_proto(context))
    assert bytes(proto.state[_state_keys(proto)[0]]["seed"]) == seed
    assert not clean(proto)  # the exposure docs/FLOWER.md names: before the mod runs
    seen: list[bool] = []

    def evaluate(msg: Message, context: Context) -> Message:
        seen.append(clean(context))
        return _passthrough(msg, context)

    message = Message(RecordDict(), dst_node_id=7, message_type=MessageType.EVALUATE)
    make_secagg_mod()(message, proto, evaluate)
    assert seen == [True] and clean(proto)


def _state_keys(context: Context) -> list[str]:
    return [k for k in context.state.config_records if k.startswith(STATE_KEY)]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (7, True),
        (7.0, True),
        (100, True),
        (0, False),
        (101, False),
        (7.5, False),
        (float("nan"), False),
        (float("inf"), False),
    ],
)
def test_weight_must_be_an_integer_in_range(value: Any, ok: bool) -> None:
    content = RecordDict({"metrics": MetricRecord({"num-examples": value})})
    if ok:
        assert read_weight(content, "num-examples", 100) == int(value)
    else:
        with pytest.raises(InvalidMessage):
            read_weight(content, "num-examples", 100)


def test_session_rng_is_the_hkdf_keyed_aes_ctr_stream_and_keeps_its_key() -> None:
    """A session is reproduced from its seed as before: the key is HKDF-SHA256 of the
    seed (no salt, info the mod's label), the bytes are AES-128-CTR's keystream from
    counter block 0, computed here with ``cryptography`` directly; any split of the
    reads gives the same stream (a rebuilt client may not depend on it)."""
    import pickle

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.hashes import SHA256
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from securefl.transports.flower.mod import _session_rng

    seed = bytes(range(32))
    label = b"securefl/flower/client-session-rng/v1"
    key = HKDF(algorithm=SHA256(), length=16, salt=None, info=label).derive(seed)
    whole = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(9000))
    rng = _session_rng(seed)
    # 4967 crosses the generator's first 4096-byte chunk.
    assert rng(3) + rng(29) + rng(1) + rng(4967) + rng(4000) == whole
    assert _session_rng(bytes(32))(100) != whole[:100]
    assert "secret" in repr(rng) and seed.hex() not in repr(rng)
    with pytest.raises(TypeError):
        pickle.dumps(rng)


def test_a_bad_prefetched_advertisement_leaves_the_node_out_of_the_next_round() -> None:
    def tamper(node: int, reply: Message) -> Message:
        if node - 1000 == 1 and NEXT_RECORD_KEY in reply.content:
            reply.content[NEXT_RECORD_KEY]["message"] = b"junk"
        return reply

    strategy, history, _ = _run(2, intercept=tamper)
    first, second = strategy.reports
    assert len(first.contributors) == NODES  # round 1 itself is untouched
    # Rejected twice: on ShareRouting, then again when its SessionStart is resent.
    assert {r.sender for r in second.rejections} == {1}
    assert all("undecodable" in r.reason for r in second.rejections)
    sim_app.check_models(strategy.reports, history, {1: [0, 1, 2, 3, 4], 2: [0, 2, 3, 4]}, 100)


def test_mod_takes_only_key_setup_as_the_next_envelope() -> None:
    mod, context = make_secagg_mod(), _context()
    msg = _request(_start())
    # A second envelope that would train (or unmask) is not acted upon.
    write_envelope(
        msg.content, Envelope(b"n" * 16, codec.encode(ShareRouting(()))), NEXT_RECORD_KEY
    )
    reply = mod(msg, context, _never)
    assert _kind(reply) is AdvertiseKeys and NEXT_RECORD_KEY not in reply.content
    assert len(_sessions(context)) == 1
    # A next SessionStart alongside the current session's message keeps both sessions.
    follow = _request(_start(session=b"n" * 16))
    follow.content.config_records[NEXT_RECORD_KEY] = follow.content.config_records.pop(RECORD_KEY)
    reply = mod(follow, context, _never)
    assert NEXT_RECORD_KEY in reply.content and RECORD_KEY not in reply.content
    assert len(_sessions(context)) == 1  # a lone SessionStart replaces unfinished sessions


def test_after_an_aborted_round_the_next_round_starts_afresh() -> None:
    """Round 1 aborts (three nodes lost at MaskedInput, with the AdvertiseKeys of round
    2 that rode on that exchange); round 2 cannot use its prefetched keys and opens a
    new session with all five nodes."""

    def drop(node: int, reply: Message) -> Message | None:
        first_round = _kind(reply) is MaskedInput and NEXT_RECORD_KEY in reply.content
        return None if node - 1000 < 3 and first_round else reply

    strategy, history, grid = _run(2, intercept=drop)
    first, second = strategy.reports
    assert first.stage is Stage.ABORTED and second.stage is Stage.COMPLETED
    assert len(second.contributors) == NODES
    for k, v in history[1].items():
        np.testing.assert_array_equal(v, history[0][k])
    sim_app.check_models(strategy.reports, history, {2: list(range(NODES))}, MAX_WEIGHT)
    assert not any(_sessions(c) for c in grid.contexts.values())


def test_mod_refuses_a_next_session_with_the_running_sessions_tag() -> None:
    """A "next" SessionStart reusing the tag of the session in the same message would
    overwrite that session's record: refused, the running session is kept."""
    mod, context = make_secagg_mod(), _context()
    msg = _request(_start())
    write_envelope(msg.content, _start(), NEXT_RECORD_KEY)
    reply = mod(msg, context, _never)
    assert _kind(reply) is AdvertiseKeys and NEXT_RECORD_KEY not in reply.content
    (record,) = _sessions(context)
    assert len(record["history"]) == 1  # the SessionStart answered in this message


@pytest.mark.parametrize("dimension", [2**62, 2**40, 2**28 + 1])
def test_mod_refuses_a_dimension_above_its_maximum(dimension: int) -> None:
    config = SecAggConfig(num_clients=3, threshold=2, dimension=dimension, corruption_rate=RATE)
    context = _context()
    reply = make_secagg_mod()(_request(_start(config)), context, _never)
    assert f"dimension: the server's d={dimension}, this client's maximum {2**28}" in (
        _error_reason(reply)
    )
    assert not _sessions(context)


def test_mod_accepts_a_dimension_up_to_its_maximum() -> None:
    mod = make_secagg_mod(policy=ClientPolicy(max_dimension=3))
    assert _kind(mod(_request(_start()), _context(), _never)) is AdvertiseKeys
    reply = make_secagg_mod(policy=ClientPolicy(max_dimension=2))(
        _request(_start()), _context(), _never
    )
    assert "dimension: the server's d=3, this client's maximum 2" in _error_reason(reply)
    with pytest.raises(ValueError, match="max_dimension"):
        ClientPolicy(max_dimension=0)


def test_mod_answers_an_unbuildable_session_with_an_error_reply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the bound, a client that cannot be built (too big for numpy, or for the
    node's memory) is an error reply, not an exception."""
    huge = SecAggConfig(num_clients=3, threshold=2, dimension=2**62, corruption_rate=RATE)
    context = _context()
    mod = make_secagg_mod(policy=ClientPolicy(max_dimension=2**62))
    reply = mod(_request(_start(huge)), context, _never)
    assert "cannot run it" in _error_reason(reply)
    assert not _sessions(context)

    def out_of_memory(*args: Any, **kwargs: Any) -> None:
        raise MemoryError

    monkeypatch.setattr("securefl.transports.flower.mod.SecAggClient", out_of_memory)
    reply = make_secagg_mod()(_request(_start()), context, _never)
    assert "MemoryError" in _error_reason(reply)
    assert not _sessions(context)


def test_the_stored_client_gets_a_zero_view_not_a_zero_vector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client the mod keeps between messages has no input: a read-only broadcast
    view stands in for the update, not a d-sized zero vector."""
    import securefl.transports.flower.mod as mod

    updates: list[Any] = []

    class Recording(mod.SecAggClient):
        def __init__(self, client_id: int, config: SecAggConfig, update: Any, *a: Any, **k: Any):
            updates.append(update)
            super().__init__(client_id, config, update, *a, **k)

    monkeypatch.setattr(mod, "SecAggClient", Recording)
    config = SecAggConfig(num_clients=3, threshold=2, dimension=2**20, corruption_rate=RATE)
    assert _kind(make_secagg_mod()(_request(_start(config)), _context(), _never)) is AdvertiseKeys
    (update,) = updates
    assert update.shape == (2**20,) and update.strides == (0,) and not update.flags.writeable
