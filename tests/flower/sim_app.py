"""A deterministic Flower app for the adapter's tests: every client's update is a
known function of its partition id and the round, so a test can compute the exact
FedAvg result and compare the secure one to it.

Faults, by round: in round 1 the node of partition :data:`DROP_PARTITION` fails while
answering ShareRouting (after sharing its keys, before sending its masked input), so
its masks must be removed by reconstruction; in round 2 the train function of
partition :data:`RAISE_PARTITION` raises, so that node never joins the session.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from securefl.secagg import codec
from securefl.secagg.messages import ShareRouting
from securefl.transports.flower import RECORD_KEY, RoundReport, SecAggFedAvg, secagg_mod

SHAPES = {"w": (3, 4), "b": (4,)}
DROP_PARTITION = 2
RAISE_PARTITION = 4
CLIP = 0.5


Shapes = dict[str, tuple[int, ...]]


def initial_arrays(shapes: Shapes = SHAPES) -> dict[str, npt.NDArray[np.float32]]:
    return {
        name: np.linspace(-1.0, 1.0, int(np.prod(shape)), dtype=np.float32).reshape(shape)
        for name, shape in shapes.items()
    }


def update(
    partition: int, server_round: int, shapes: Shapes = SHAPES
) -> dict[str, npt.NDArray[np.float64]]:
    """The change partition ``partition`` makes to the model in ``server_round`` (a
    model of any ``shapes``: the train function uses the global model's)."""
    out = {}
    for i, (name, shape) in enumerate(shapes.items()):
        size = int(np.prod(shape))
        x = np.sin(np.arange(size) * (partition + 1) + server_round + i) * 0.1 * (partition + 1)
        out[name] = x.reshape(shape)
    return out


def weight(partition: int) -> int:
    return 10 * (partition + 1)


def train(msg: Message, context: Context) -> Message:
    """The user's train function: it knows nothing about securefl."""
    partition = int(context.node_config["partition-id"])
    config = msg.content["config"]
    assert isinstance(config, ConfigRecord)
    server_round = int(config["server-round"])  # type: ignore[arg-type]
    if server_round == 2 and partition == RAISE_PARTITION and config.get("faults", True):
        raise RuntimeError("simulated training failure")
    arrays = msg.content["arrays"]
    assert isinstance(arrays, ArrayRecord)
    delta = update(partition, server_round, {k: tuple(a.shape) for k, a in arrays.items()})
    trained = {
        k: Array((a.numpy().astype(np.float64) + delta[k]).astype(np.float32))
        for k, a in arrays.items()
    }
    metrics = MetricRecord({"num-examples": weight(partition), "train-loss": 0.5})
    return Message(RecordDict({"arrays": ArrayRecord(trained), "metrics": metrics}), reply_to=msg)


def fault_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Drops partition DROP_PARTITION's node in round 1 at MaskedInputCollection."""
    record = msg.content.config_records.get(RECORD_KEY)
    if "config" in msg.content.config_records:
        context.state.config_records["test-round"] = ConfigRecord(
            {"round": msg.content.config_records["config"]["server-round"]}
        )
    round_record = context.state.config_records.get("test-round")
    if (
        record is not None
        and round_record is not None
        and round_record["round"] == 1
        and int(context.node_config["partition-id"]) == DROP_PARTITION
        and isinstance(codec.decode(record["message"]), ShareRouting)  # type: ignore[arg-type]
    ):
        raise ConnectionError("simulated dropout before MaskedInputCollection")
    return call_next(msg, context)


def make_client_app(*, faults: bool = True, mod: Mod = secagg_mod) -> ClientApp:
    """The test ClientApp with securefl's ``mod``; ``faults=False`` leaves out the
    dropout of round 1 (the server can turn off the failure of round 2 with
    ``"faults": False`` in the train config)."""
    app = ClientApp(mods=[fault_mod, mod] if faults else [mod])
    app.train()(train)
    return app


History = list[dict[str, npt.NDArray[np.float32]]]


def strategy(nodes: int, max_weight: int, **options: Any) -> SecAggFedAvg:
    """SecAggFedAvg training on all ``nodes`` every round, clipping at :data:`CLIP`."""
    return SecAggFedAvg(
        fraction_evaluate=0.0,
        min_train_nodes=nodes,
        min_available_nodes=nodes,
        clip=CLIP,
        max_weight=max_weight,
        **options,
    )


def start(
    strategy: Strategy,
    grid: Grid,
    rounds: int,
    *,
    shapes: Shapes = SHAPES,
    faults: bool | None = None,
) -> History:
    """Run ``strategy`` on ``grid`` for ``rounds`` FL rounds from :func:`initial_arrays`
    (``faults``: the train config's ``"faults"``, when given). Returns the global model
    before the first round and after each."""
    history: History = []
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord({k: Array(v) for k, v in initial_arrays(shapes).items()}),
        num_rounds=rounds,
        train_config=None if faults is None else ConfigRecord({"faults": faults}),
        evaluate_fn=lambda r, a: history.append({k: x.numpy().copy() for k, x in a.items()}),
    )
    return history


def participants_with_faults(server_round: int, num_nodes: int) -> list[int]:
    """The partitions whose update is in round ``server_round``'s aggregate."""
    gone = {1: DROP_PARTITION, 2: RAISE_PARTITION}.get(server_round)
    return [p for p in range(num_nodes) if p != gone]


def check_models(
    reports: list[RoundReport],
    history: list[dict[str, npt.NDArray[np.float32]]],
    participants: dict[int, list[int]],
    max_weight: int,
) -> None:
    """Assert each round's global model is FedAvg over ``participants[round]``'s known
    updates, within the quantization bound; ``history[r]`` is the model after round r."""
    for server_round, parts in sorted(participants.items()):
        report = reports[server_round - 1]
        assert report.config is not None
        total = sum(weight(p) for p in parts)
        assert report.total_weight == total
        assert len(report.contributors) == len(parts)
        before = history[server_round - 1]
        for k, value in history[server_round].items():
            mean = sum(weight(p) * np.clip(update(p, server_round)[k], -CLIP, CLIP) for p in parts)
            # The server adds the mean to the float32 model in float64 and stores float32.
            expected = (before[k].astype(np.float64) + mean / total).astype(np.float32)
            # Each client's n_u x_u / W is rounded to 2^-p: the mean's error is below
            # 2^-p |U3| W / N; the two float32 roundings differ by at most one ulp.
            bound = 2.0**-report.config.fixed_point.frac_bits * len(parts) * max_weight / total
            ulp = np.spacing(np.max(np.abs(expected)))
            assert value.dtype == np.float32
            err = np.max(np.abs(value.astype(np.float64) - expected))
            assert err <= bound + ulp, (server_round, k, err, bound)
        # The updates did move the model, so this check can fail.
        assert not np.allclose(history[server_round]["w"], history[server_round - 1]["w"])


def dp_errors(
    history: list[dict[str, npt.NDArray[np.float32]]],
    participants: dict[int, list[int]],
    *,
    clip: float,
    max_weight: int,
) -> dict[int, tuple[npt.NDArray[np.float64], float]]:
    """Per round: the global model's step minus the plain weighted mean of the
    participants' updates, each clipped to L2 norm ``clip`` as securefl.dp clips them
    (flat, over all arrays), and the total public weight sum n_k / W it divides by."""
    out = {}
    for server_round, parts in sorted(participants.items()):
        before, after = history[server_round - 1], history[server_round]
        shapes = {k: tuple(v.shape) for k, v in before.items()}
        total = {k: np.zeros(v.shape) for k, v in before.items()}
        weight_sum = 0.0
        for p in parts:
            delta = update(p, server_round, shapes)
            norm = float(np.sqrt(sum(np.sum(x * x) for x in delta.values())))
            scale = (weight(p) / max_weight) * min(1.0, clip / norm)
            for k in total:
                total[k] += scale * delta[k]
            weight_sum += weight(p) / max_weight
        error = [
            after[k].astype(np.float64) - before[k].astype(np.float64) - total[k] / weight_sum
            for k in before
        ]
        out[server_round] = (np.concatenate([e.ravel() for e in error]), weight_sum)
    return out
