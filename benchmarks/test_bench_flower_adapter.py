"""securefl's Flower adapter against Flower's own SecAgg+ on the same simulation.

Both run in Flower's simulation engine (``flwr.simulation.run_simulation``, Ray
backend, 10 supernodes on two single-CPU actors) with the same app: a model of one
float32 array of d = 1M values, a train function that adds a fixed, per-node update
(0.01 sin), and FedAvg weights 10 (n + 1). Each FL round is timed at the ServerApp,
from the end of one round's aggregation to the end of the next (``evaluate_fn``
timestamps; evaluation itself is off); the first round also pays Ray's actor start
and imports, so the ratio is taken over the medians of rounds 2..R. Two scenarios:
all ten clients, and one client whose train function raises every round (after it
shared its keys: both servers must then remove its pairwise masks).

- securefl: :class:`securefl.transports.flower.SecAggFedAvg` + ``secagg_mod``, SecAgg+
  parameters chosen for n = 10, 20% dropout, 10% corruption (k = 6, t = 4), 32-bit ring.
- Flower: ``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(num_shares=7,
  reconstruction_threshold=4))`` with the legacy FedAvg and a NumPyClient behind
  ``secaggplus_mod`` (Flower's documented SecAgg+ setup; 6 neighbours + itself, t = 4).

Flower's plaintext FedAvg runs on the same app too, as the floor: in this engine every
server<->client exchange waits on two 0.1 s polling loops (``InMemoryGrid.pull_interval``
and the simulation's message queue), and a SecAgg round needs four exchanges where
FedAvg needs one. All three global models are checked against the float64 FedAvg of
the known updates.

Run: ``pytest benchmarks/test_bench_flower_adapter.py --benchmark-only -s``.
"""

from __future__ import annotations

import gc
import itertools
import statistics
import sys
import time
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from ray import cloudpickle as ray_cloudpickle

import securefl.transports.flower as sfl  # first import of flwr (silences click's warning)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg as LegacyFedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

# Ray's workers cannot import this module (it lives outside the installed package, and
# the source tree must stay off their sys.path): ship its functions by value.
ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])

N, D, ROUNDS = 10, 1_000_000, 8
BACKEND = {"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 2}}


def _delta(partition: int, server_round: int) -> npt.NDArray[np.float64]:
    return 0.01 * np.sin(np.arange(D) * (partition + 1) * 1e-3 + server_round)


def _weight(partition: int) -> int:
    return 10 * (partition + 1)


def _parts(failing: int | None) -> list[int]:
    return [p for p in range(N) if p != failing]


def _expected(rounds: int, failing: int | None) -> npt.NDArray[np.float64]:
    model = np.zeros(D, np.float64)
    total = sum(_weight(p) for p in _parts(failing))
    for r in range(1, rounds + 1):
        model += sum(_weight(p) * _delta(p, r) for p in _parts(failing)) / total
    return model


def _simulate(server: ServerApp, client: ClientApp) -> None:
    run_simulation(server_app=server, client_app=client, num_supernodes=N, backend_config=BACKEND)
    gc.collect()  # Ray's helper-process handles, under this test's ResourceWarning filter


def _fedavg_run(
    *, secure: bool, failing: int | None
) -> tuple[list[float], npt.NDArray[np.float32], list[Any]]:
    """securefl's adapter (``secure``) or Flower's plaintext FedAvg on the same app;
    partition ``failing`` raises in its train function every round."""
    # One masking thread per client: each Ray actor already holds one of the two CPUs.
    client = ClientApp(mods=[sfl.make_secagg_mod(threads=1)] if secure else [])

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        partition = int(context.node_config["partition-id"])
        server_round = int(msg.content["config"]["server-round"])  # type: ignore[index]
        if partition == failing:
            raise RuntimeError("simulated training failure")
        model = msg.content["arrays"]["model"].numpy()  # type: ignore[index, union-attr]
        trained = (model + _delta(partition, server_round)).astype(np.float32)
        metrics = MetricRecord({"num-examples": _weight(partition)})
        reply = RecordDict({"arrays": ArrayRecord({"model": Array(trained)}), "metrics": metrics})
        return Message(reply, reply_to=msg)

    stamps: list[float] = []
    out: dict[str, Any] = {}
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        common = {"fraction_evaluate": 0.0, "min_train_nodes": N, "min_available_nodes": N}
        strategy = (
            sfl.SecAggFedAvg(max_weight=1000, threads=1, **common) if secure else FedAvg(**common)
        )

        def evaluate(server_round: int, arrays: ArrayRecord) -> None:
            stamps.append(time.perf_counter())
            out["model"] = arrays["model"].numpy()

        initial = ArrayRecord({"model": Array(np.zeros(D, np.float32))})
        strategy.start(grid=grid, initial_arrays=initial, num_rounds=ROUNDS, evaluate_fn=evaluate)
        out["reports"] = getattr(strategy, "reports", [])

    _simulate(server, client)
    assert all(r.total_weight == sum(_weight(p) for p in _parts(failing)) for r in out["reports"])
    return [b - a for a, b in itertools.pairwise(stamps)], out["model"], out["reports"]


class _FlowerClient(NumPyClient):  # type: ignore[misc]
    def __init__(self, partition: int, failing: int | None) -> None:
        self.partition = partition
        self.failing = failing

    def fit(self, parameters: list[Any], config: dict[str, Any]) -> Any:
        server_round = int(config["server_round"])
        if self.partition == self.failing:
            raise RuntimeError("simulated training failure")
        trained = (parameters[0] + _delta(self.partition, server_round)).astype(np.float32)
        return [trained], _weight(self.partition), {}


def _flower_run(failing: int | None) -> tuple[list[float], npt.NDArray[np.float32]]:
    def client_fn(context: Context) -> Any:
        return _FlowerClient(int(context.node_config["partition-id"]), failing).to_client()

    client = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
    stamps: list[float] = []
    out: dict[str, Any] = {}
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        def evaluate(server_round: int, parameters: list[Any], config: Any) -> None:
            stamps.append(time.perf_counter())
            out["model"] = parameters[0]

        strategy = LegacyFedAvg(
            fraction_evaluate=0.0,
            min_fit_clients=N,
            min_available_clients=N,
            initial_parameters=ndarrays_to_parameters([np.zeros(D, np.float32)]),
            evaluate_fn=evaluate,
            on_fit_config_fn=lambda r: {"server_round": r},
        )
        legacy = LegacyContext(context, config=ServerConfig(num_rounds=ROUNDS), strategy=strategy)
        workflow = DefaultWorkflow(
            fit_workflow=SecAggPlusWorkflow(num_shares=7, reconstruction_threshold=4)
        )
        workflow(grid, legacy)

    _simulate(server, client)
    return [b - a for a, b in itertools.pairwise(stamps)], out["model"]


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings(
    "ignore::DeprecationWarning:flwr"
)  # the legacy API Flower's SecAgg+ needs
@pytest.mark.parametrize("failing", [None, 0], ids=["all-clients", "one-fails-each-round"])
def test_flower_adapter_round_vs_flower_secaggplus(
    monkeypatch: pytest.MonkeyPatch, benchmark, failing: int | None
) -> None:
    """``failing``: a node whose train function raises every round, after it shared its
    keys (both protocols train at their third exchange), so both servers must
    reconstruct its key and remove its pairwise masks."""
    monkeypatch.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # else Ray's FutureWarning
    monkeypatch.setenv("RAY_DEDUP_LOGS", "0")
    results: dict[str, Any] = {}

    def interleaved() -> None:
        # A B B A: the machine is shared, so a slow spell must hit both sides alike.
        results["securefl"] = [_fedavg_run(secure=True, failing=failing)]
        results["flower"] = [_flower_run(failing), _flower_run(failing)]
        results["securefl"].append(_fedavg_run(secure=True, failing=failing))
        results["plaintext"] = _fedavg_run(secure=False, failing=failing)

    benchmark.pedantic(interleaved, rounds=1, iterations=1)
    expected = _expected(ROUNDS, failing)
    # Per-round seconds of rounds 2..R of both runs; the first round of a run also pays
    # Ray's actor start and the imports.
    ours = [t for run in results["securefl"] for t in run[0][1:]]
    flower = [t for run in results["flower"] for t in run[0][1:]]
    plain = results["plaintext"][0][1:]
    reports = [r for run in results["securefl"] for r in run[2][1:]]
    # securefl: 2^-27 precision at W = 1000 (mean weight 55): error ~1e-6 per round at most.
    for run in results["securefl"]:
        assert np.max(np.abs(run[1] - expected)) < 1e-5
    # Flower: 2^22 levels over [-8, 8], same weight folding: a few 1e-5 per round.
    for run in results["flower"]:
        assert np.max(np.abs(run[1] - expected)) < 1e-3
    assert np.max(np.abs(results["plaintext"][1] - expected)) < 1e-5
    ours_median = statistics.median(ours)
    flower_median = statistics.median(flower)
    plain_median = statistics.median(plain)
    # Where securefl's round goes: wall time per protocol round (medians).
    stages = {
        stage.value: statistics.median(r.seconds[stage] for r in reports)
        for stage in reports[0].seconds
    }
    benchmark.extra_info.update(
        {
            "securefl_round_seconds": ours,
            "flower_round_seconds": flower,
            "plaintext_round_seconds": plain,
            "securefl_median_s": ours_median,
            "flower_median_s": flower_median,
            "plaintext_median_s": plain_median,
            "securefl_stage_median_s": stages,
            "ratio": flower_median / ours_median,
        }
    )
    print(
        f"\n[{'all clients' if failing is None else 'one client fails each round'}] "
        f"per-round seconds, n={N}, d={D}: securefl {[f'{s:.2f}' for s in ours]} "
        f"median {ours_median:.2f}; Flower SecAgg+ {[f'{s:.2f}' for s in flower]} "
        f"median {flower_median:.2f}; ratio {flower_median / ours_median:.2f}x; "
        f"plaintext FedAvg {[f'{s:.2f}' for s in plain]} median {plain_median:.2f}; "
        f"securefl stages { ({k: round(v, 3) for k, v in stages.items()}) }"
    )
