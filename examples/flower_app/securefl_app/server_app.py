"""The ServerApp: FedAvg with securefl's SecAgg+ (or plain Flower FedAvg, to compare)."""

from __future__ import annotations

from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from securefl.transports.flower import SecAggFedAvg
from securefl_app import task


def make_server_app(
    *, secure: bool = True, rounds: int | None = None, results: dict[str, Any] | None = None
) -> ServerApp:
    """The ServerApp; ``rounds`` overrides the run config's ``num-server-rounds``;
    ``results`` (if given) receives the final arrays, metrics and strategy."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        num_rounds = rounds or int(context.run_config.get("num-server-rounds", 5))
        common = {"fraction_evaluate": 0.0, "min_train_nodes": 4, "min_available_nodes": 4}
        strategy: FedAvg
        if secure:
            # Updates (trained minus global weights) are clipped to [-clip, clip] per
            # coordinate; FedAvg weights (num-examples) must not exceed max_weight.
            clip = float(context.run_config.get("clip", 1.0))
            strategy = SecAggFedAvg(clip=clip, max_weight=1000, **common)
        else:
            strategy = FedAvg(**common)

        def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            return MetricRecord(task.test_metrics(arrays.to_torch_state_dict()))

        train_config = ConfigRecord(
            {
                "local-epochs": int(context.run_config.get("local-epochs", 2)),
                "learning-rate": float(context.run_config.get("learning-rate", 0.1)),
            }
        )
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(task.initial_state()),
            num_rounds=num_rounds,
            train_config=train_config,
            evaluate_fn=central,
        )
        if results is not None:
            results["arrays"] = result.arrays
            results["metrics"] = result.evaluate_metrics_serverapp
            results["strategy"] = strategy

    return app


app = make_server_app()
