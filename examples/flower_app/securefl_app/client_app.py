"""The ClientApp: a plain Flower train function, with securefl's mod added.

Nothing in ``train`` knows about secure aggregation; securefl's mod takes the returned
arrays and ``num-examples``, masks the update and runs the SecAgg+ rounds. Its policy
is this hospital's own: it refuses a session below it (a weak threshold, a corruption
rate below 0.1, a larger model than the one it trains, ...) before doing any work.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from securefl.transports.flower import ClientPolicy, make_secagg_mod
from securefl_app import task

MODEL_SIZE = sum(int(t.numel()) for t in task.initial_state().values())
# The only securefl line on the client (``secagg_mod`` has the default policy, d <= 2^28).
app = ClientApp(mods=[make_secagg_mod(policy=ClientPolicy(max_dimension=MODEL_SIZE))])


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
