"""CKKS FedAvg inside Flower (in-process Grid): the server sums ciphertexts and never
holds the model in the clear after round 1; the model the clients decrypt is FedAvg
of their trained models, also when a node fails; bad replies stay out of the sum."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message
from flwr.clientapp import ClientApp

from flower import sim_app
from securefl.transports.flower.local_grid import Intercept, LocalGrid, task_identity

pytest.importorskip("tenseal")

from securefl.ckks import ClientContext, TooFewContributors, encrypt_update
from securefl.errors import ConfigError, DecryptionError
from securefl.transports.flower import (
    CKKSFedAvg,
    context_from_file,
    decrypt_arrays,
    make_ckks_mod,
)
from securefl.transports.flower.ckks import AGGREGATE_KEY, CKKS_RECORD_KEY, LAYOUT_KEY

NODES = 5


@pytest.fixture(autouse=True)
def _identity() -> Iterator[None]:
    with task_identity():
        yield


@pytest.fixture(scope="module")
def key() -> ClientContext:
    return ClientContext.generate()


def _run(
    key: ClientContext,
    tmp_path: Path,
    rounds: int,
    intercept: Intercept | None = None,
    *,
    strategy_class: type[CKKSFedAvg] = CKKSFedAvg,
    mod_options: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[CKKSFedAvg, list[ArrayRecord]]:
    path = tmp_path / "ckks-context.bin"
    path.write_bytes(key.to_bytes())
    app = ClientApp(mods=[make_ckks_mod(context_from_file(path), **(mod_options or {}))])
    app.train()(sim_app.train)
    grid = LocalGrid.for_app(app, NODES, intercept)
    strategy = strategy_class(
        key.server_bytes(),
        fraction_evaluate=0.0,
        min_train_nodes=NODES,
        min_available_nodes=NODES,
        **options,
    )
    history: list[ArrayRecord] = []
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord({k: Array(v) for k, v in sim_app.initial_arrays().items()}),
        num_rounds=rounds,
        train_config=ConfigRecord({"faults": True}),
        evaluate_fn=lambda r, a: history.append(a),
    )
    return strategy, history


def _check(
    key: ClientContext, history: list[ArrayRecord], participants: dict[int, list[int]]
) -> None:
    for server_round, parts in participants.items():
        before = decrypt_arrays(key, history[server_round - 1])
        after = decrypt_arrays(key, history[server_round])
        total = sum(sim_app.weight(p) for p in parts)
        for k, value in after.items():
            prev = before[k].numpy().astype(np.float64)
            # Each client trains from the decrypted model and returns float32 weights.
            models = [(prev + sim_app.update(p, server_round)[k]).astype(np.float32) for p in parts]
            expected = sum(
                sim_app.weight(p) * m.astype(np.float64) for p, m in zip(parts, models, strict=True)
            )
            err = np.max(np.abs(value.numpy().astype(np.float64) - expected / total))
            assert err < 1e-5, (server_round, k, err)


def test_ckks_rounds_match_fedavg_and_the_server_sees_only_ciphertext(
    key: ClientContext, tmp_path: Path
) -> None:
    strategy, history = _run(key, tmp_path, 3)
    # After round 1 the server's model is the encrypted aggregate, never plaintext.
    for arrays in history[1:]:
        assert set(arrays.keys()) == {"securefl-ckks-aggregate", "securefl-ckks-layout"}
    participants = {r: sim_app.participants_with_faults(r, NODES) for r in (1, 2, 3)}
    participants[1] = list(range(NODES))  # the dropout of round 1 is a SecAgg test mod
    _check(key, history, participants)
    assert [len(r.contributors) for r in strategy.reports] == [5, 4, 5]
    # Another key cannot read the model.
    with pytest.raises(DecryptionError):
        decrypt_arrays(ClientContext.generate(), history[-1])


def test_ckks_bad_replies_are_left_out(key: ClientContext, tmp_path: Path) -> None:
    stale: dict[str, Any] = {}

    def tamper(node: int, reply: Message) -> Message:
        p = node - 1000
        if reply.has_error():
            return reply
        record = reply.content[CKKS_RECORD_KEY]
        if p == 0:
            record["update"] = record["update"][:-8]  # truncated ciphertext
        if p == 1:
            record["session"] = bytes(16)  # a reply of another round
        if p == 3:
            record["layout"] = stale.setdefault("layout", b"garbage")
        return reply

    strategy, history = _run(key, tmp_path, 1, tamper)
    report = strategy.reports[0]
    assert sorted(n - 1000 for n, _ in report.rejections) == [0, 1, 3]
    _check(key, history, {1: [2, 4]})


def _fail_all_but(keep: set[int]) -> Intercept:
    def intercept(node: int, reply: Message) -> Message:
        if node - 1000 in keep:
            return reply
        return Message(Error(0, "simulated failure"), reply_to=reply)

    return intercept


@pytest.mark.parametrize(("survivors", "released"), [({3}, False), (set(), False), ({1, 3}, True)])
def test_ckks_round_with_too_few_contributors_keeps_the_model(
    key: ClientContext, tmp_path: Path, survivors: set[int], released: bool
) -> None:
    strategy, history = _run(key, tmp_path, 2, _fail_all_but(survivors))
    first, second = strategy.reports
    assert len(first.contributors) == len(survivors)
    if released:
        assert first.skipped is None
        _check(key, history, {1: sorted(survivors)})
        return
    # One node's "aggregate" is its own trained model: it is never released.
    assert first.skipped and "min_contributors" in first.skipped
    assert second.skipped
    for arrays in history[1:]:
        assert set(arrays.keys()) == set(history[0].keys())
        for k, value in arrays.items():
            np.testing.assert_array_equal(value.numpy(), history[0][k].numpy())


def test_ckks_min_contributors_is_at_least_two(key: ClientContext) -> None:
    with pytest.raises(ValueError, match="min_contributors"):
        CKKSFedAvg(key.server_bytes(), min_contributors=1)
    assert CKKSFedAvg(key.server_bytes(), min_contributors=3).min_contributors == 3


def test_ckks_replies_must_have_the_global_models_layout_and_length(
    key: ClientContext, tmp_path: Path
) -> None:
    """Node 0 (answering first) sends a valid ciphertext of another model; node 2 one
    of the right layout but a longer vector. Both are rejected, whatever the order;
    the others' sum is exact."""
    other, other_layout = encrypt_update(key, {"v": np.ones(7, np.float32)}, 1)
    model = sim_app.initial_arrays()
    longer, _ = encrypt_update(key, {**model, "extra": np.ones(2, np.float32)}, 1)

    def tamper(node: int, reply: Message) -> Message:
        record = reply.content[CKKS_RECORD_KEY]
        if node - 1000 == 0:
            record["update"], record["layout"] = other, other_layout.to_bytes()
        if node - 1000 == 2:
            record["update"] = longer
        return reply

    strategy, history = _run(key, tmp_path, 1, tamper)
    rejections = dict(strategy.reports[0].rejections)
    assert set(rejections) == {1000, 1002}
    assert "layout" in rejections[1000] and "values" in rejections[1002]
    _check(key, history, {1: [1, 3, 4]})


def _u8(data: bytes) -> Array:
    return Array(np.frombuffer(data, dtype=np.uint8).copy())


class OneNodeAsTheAggregate(CKKSFedAvg):
    """A deviating ServerApp: in round 1 it skips the sum and hands node 1000's encrypted
    model to every node as the global model (CKKSFedAvg's own min_contributors bypassed)."""

    def aggregate_train(self, server_round: int, replies: Any) -> Any:
        replies = list(replies)
        if server_round != 1:
            return super().aggregate_train(server_round, replies)
        super().aggregate_train(server_round, replies)  # the report of round 1
        (victim,) = [r for r in replies if r.metadata.src_node_id == 1000]
        record = victim.content[CKKS_RECORD_KEY]
        arrays = ArrayRecord(
            {AGGREGATE_KEY: _u8(record["update"]), LAYOUT_KEY: _u8(record["layout"])}
        )
        return arrays, None


def test_ckks_mod_refuses_one_nodes_model_as_the_global_model(
    key: ClientContext, tmp_path: Path
) -> None:
    """Every node refuses to decrypt it, with an error reply that names the count and the
    minimum; no node trains on node 1000's model, so no reply of round 2 enters a sum."""
    strategy, history = _run(key, tmp_path, 2, strategy_class=OneNodeAsTheAggregate)
    # The key holder's view: decrypt_arrays refuses it too, typed.
    with pytest.raises(TooFewContributors) as info:
        decrypt_arrays(key, history[1])
    assert (info.value.count, info.value.minimum) == (1, 2)
    second = strategy.reports[1]
    assert second.contributors == ()
    assert sorted(node for node, _ in second.rejections) == [1000 + p for p in range(NODES)]
    for _, reason in second.rejections:
        assert "cannot decrypt the global model" in reason
        assert "sums 1 contribution(s)" in reason and "min_contributors = 2" in reason
    assert second.skipped and "min_contributors" in second.skipped


def test_ckks_mod_applies_the_nodes_own_minimum(key: ClientContext, tmp_path: Path) -> None:
    """An honest sum of the 2 surviving nodes' models, below the nodes' policy of 3, is
    refused by every node in round 2, whatever the strategy's own minimum (2)."""
    strategy, _ = _run(key, tmp_path, 2, _fail_all_but({1, 3}), mod_options={"min_contributors": 3})
    first, second = strategy.reports
    assert len(first.contributors) == 2 and first.skipped is None
    refused = [reason for _, reason in second.rejections if "min_contributors = 3" in reason]
    assert len(refused) == 2 and all("sums 2 contribution(s)" in r for r in refused)
    with pytest.raises(ConfigError, match="min_contributors must be >= 2"):
        make_ckks_mod(lambda _: key, min_contributors=1)
