"""The ClientApp: a plain Flower train function, with securefl's mod added.

Nothing in ``train`` knows about secure aggregation; ``secagg_mod`` takes the returned
arrays and ``num-examples``, masks the update and runs the SecAgg+ rounds.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from securefl.transports.flower import secagg_mod
from securefl_app import task

app = ClientApp(mods=[secagg_mod])  # <- the only securefl line on the client


@app.train()
def train(msg: Message, context: Context) -> Message:
    partition = int(context.node_config["partition-id"])
    data = task.hospital(partition)
    config = msg.content["config"]
    server_round = int(config["server-round"])
    state = task.train(
        msg.content["arrays"].to_torch_state_dict(),
        data,
        epochs=int(config.get("local-epochs", 2)),
        lr=float(config.get("learning-rate", 0.1)),
        seed=1000 * server_round + partition,
    )
    metrics = MetricRecord({"num-examples": data.n_train})
    return Message(RecordDict({"arrays": ArrayRecord(state), "metrics": metrics}), reply_to=msg)
