"""A deterministic Flower app for the adapter's tests: every client's update is a
known function of its partition id and the round, so a test can compute the exact
FedAvg result and compare the secure one to it.

Faults, by round: in round 1 the node of partition :data:`DROP_PARTITION` fails while
answering ShareRouting (after sharing its keys, before sending its masked input), so
its masks must be removed by reconstruction; in round 2 the train function of
partition :data:`RAISE_PARTITION` raises, so that node never joins the session.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

from securefl.secagg import codec
from securefl.secagg.messages import ShareRouting
from securefl.transports.flower import RECORD_KEY, secagg_mod

SHAPES = {"w": (3, 4), "b": (4,)}
DROP_PARTITION = 2
RAISE_PARTITION = 4
CLIP = 0.5


def initial_arrays() -> dict[str, npt.NDArray[np.float32]]:
    return {
        name: np.linspace(-1.0, 1.0, int(np.prod(shape)), dtype=np.float32).reshape(shape)
        for name, shape in SHAPES.items()
    }


def update(partition: int, server_round: int) -> dict[str, npt.NDArray[np.float64]]:
    """The change partition ``partition`` makes to the model in ``server_round``."""
    out = {}
    for i, (name, shape) in enumerate(SHAPES.items()):
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
    if server_round == 2 and partition == RAISE_PARTITION:
        raise RuntimeError("simulated training failure")
    arrays = msg.content["arrays"]
    assert isinstance(arrays, ArrayRecord)
    delta = update(partition, server_round)
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


def make_client_app() -> ClientApp:
    app = ClientApp(mods=[fault_mod, secagg_mod])
    app.train()(train)
    return app
