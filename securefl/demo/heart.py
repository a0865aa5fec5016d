"""`securefl demo`: federated training across the four hospitals of the UCI Heart
Disease data, with plaintext FedAvg and with each secure aggregation protocol.

Each hospital trains a PyTorch model (logistic regression, or a small MLP) on its own
training split; every round the global model is the weighted mean of the hospitals'
models (weights: training examples), computed in plaintext or by SecAgg, SecAgg+ or
CKKS. The same hospitals drop out of the same rounds in every run, so the secure runs
must reproduce plaintext FedAvg up to quantization: the table shows accuracy and
ROC-AUC on each hospital's held-out split, wall time, bytes per client per round, and
the largest difference between the secure and the plaintext global weights.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

import securefl
from securefl.datasets import HOSPITALS, load_hospitals
from securefl.secagg.messages import Stage

__all__ = ["DemoOptions", "run"]

SECURE = ("secagg", "secagg+", "ckks")


@dataclass(frozen=True)
class DemoOptions:
    protocols: tuple[str, ...] = SECURE
    rounds: int = 20
    local_epochs: int = 2
    mu: float = 0.0
    dropout: float = 0.0
    seed: int = 0
    model: str = "logreg"
    clip: float = 16.0
    bits: int = 32


@dataclass
class Row:
    method: str
    metrics: Mapping[str, Any]
    seconds: float | None = None
    aggregate_seconds: float | None = None
    bytes_per_client_round: float | None = None
    max_weight_difference: float | None = None
    same_predictions: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _progress(label: str, rounds: int) -> Callable[[int, int], None]:
    interactive = sys.stderr.isatty()

    def show(done: int, total: int) -> None:
        if not interactive:  # a log file gets one line per run, not a redrawn bar
            if done >= total:
                sys.stderr.write(f"  {label:<10} {total} rounds done\n")
            return
        width = 20
        filled = width * done // max(total, 1)
        sys.stderr.write(
            f"\r  {label:<10} [{'#' * filled}{'.' * (width - filled)}] round {done}/{total}"
        )
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def _dropout_schedule(opts: DemoOptions, n: int) -> list[set[int]]:
    """Which hospitals miss each round: independent coin flips per hospital and round
    (simulation data, not cryptographic randomness), at most n - 3 per round so that
    SecAgg with threshold 2 of 3 neighbours can still finish."""
    coins = np.random.default_rng(opts.seed + 7919)
    schedule = []
    for _ in range(opts.rounds):
        missing = [i for i in range(n) if coins.random() < opts.dropout]
        schedule.append(set(missing[: n - 3]))
    return schedule


def _aggregator(
    protocol: str, opts: DemoOptions, schedule: list[set[int]], log: dict[str, Any]
) -> Callable[[Sequence[Any], Sequence[int], int], Any]:
    """An ``aggregate(state_dicts, weights, round)`` for federated_training."""
    import torch

    if protocol == "ckks":
        from securefl import ckks

        ctx = ckks.ClientContext.generate()  # one key authority, keys reused every round
        server_ctx = ckks.ServerContext.from_bytes(ctx.server_bytes())

    def aggregate(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[int], r: int) -> Any:
        dropped = schedule[r]
        if protocol == "ckks":
            server = ckks.Aggregator(server_ctx)
            sent = []
            layout = None
            for i, state in enumerate(states):
                if i in dropped:
                    continue
                message, layout = ckks.encrypt_update(ctx, state, int(weights[i]))
                server.add(f"hospital-{i}", message)
                sent.append(len(message))
            assert layout is not None
            mean = ckks.decrypt_mean(ctx, server.result(), layout)
            log["bytes"].append(float(np.mean(sent)))
            return mean
        result = securefl.aggregate(
            list(states),
            list(weights),
            protocol=protocol,  # type: ignore[arg-type]
            dropouts=dict.fromkeys(dropped, Stage.MASKED_INPUT_COLLECTION),
            clip=opts.clip,
            bits=opts.bits,
            max_weight=max(weights),
        )
        log["bytes"].append(float(np.mean([result.bytes_sent[i] for i in result.contributors])))
        return result.aggregate

    return aggregate


def _max_difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def run_demo(opts: DemoOptions) -> list[Row]:
    """Train every baseline and protocol; return one row per method."""
    from securefl.fl import (
        centralized,
        evaluate,
        evaluate_local,
        federated_training,
        local_only,
        predictions_equal,
    )

    hospitals = load_hospitals(seed=opts.seed)
    n = len(hospitals)
    schedule = _dropout_schedule(opts, n)
    kind: Literal["logreg", "mlp"] = "mlp" if opts.model == "mlp" else "logreg"
    rows: list[Row] = []

    t0 = time.perf_counter()
    local_models = local_only(
        hospitals, epochs=opts.rounds * opts.local_epochs, model=kind, seed=opts.seed
    )
    rows.append(
        Row("local-only", evaluate_local(local_models, hospitals), time.perf_counter() - t0)
    )
    t0 = time.perf_counter()
    pooled = centralized(
        hospitals, epochs=opts.rounds * opts.local_epochs, model=kind, seed=opts.seed
    )
    rows.append(Row("pooled", evaluate(pooled, hospitals), time.perf_counter() - t0))

    def train(protocol: str) -> tuple[Any, float, dict[str, Any]]:
        log: dict[str, Any] = {"bytes": []}
        t0 = time.perf_counter()
        result = federated_training(
            hospitals,
            rounds=opts.rounds,
            local_epochs=opts.local_epochs,
            mu=opts.mu,
            aggregate=_aggregator(protocol, opts, schedule, log),
            progress=_progress(protocol, opts.rounds),
            model=kind,
            seed=opts.seed,
        )
        log["aggregate_seconds"] = float(sum(result.aggregate_seconds))
        return result.state_dict, time.perf_counter() - t0, log

    plain_state, plain_seconds, plain_log = train("plain")
    name = "FedProx" if opts.mu > 0 else "FedAvg"
    rows.append(
        Row(
            f"{name} plain",
            evaluate(plain_state, hospitals),
            plain_seconds,
            plain_log["aggregate_seconds"],
            float(np.mean(plain_log["bytes"])),
            0.0,
            True,
        )
    )
    for protocol in opts.protocols:
        state, seconds, log = train(protocol)
        rows.append(
            Row(
                f"{name} {protocol}",
                evaluate(state, hospitals),
                seconds,
                log["aggregate_seconds"],
                float(np.mean(log["bytes"])),
                _max_difference(state, plain_state),
                predictions_equal(state, plain_state, hospitals),
                {"overhead_vs_plain": seconds / plain_seconds - 1.0},
            )
        )
    return rows


def format_table(rows: list[Row]) -> str:
    columns = [*HOSPITALS, "overall"]
    short = {
        "Cleveland": "Cleveland",
        "Hungary": "Hungary",
        "VA Long Beach": "VA",
        "Switzerland": "Switzerland",
        "overall": "overall",
    }
    head = f"{'method':<18}" + "".join(f"{short[c]:>14}" for c in columns)
    head += f"{'time s':>8}{'agg s':>8}{'B/client/rd':>12}{'max|dw|':>10}{'same pred':>10}"
    lines = ["accuracy / ROC-AUC on each hospital's held-out test split", head]
    for row in rows:
        cells = "".join(
            f"{row.metrics[c]['accuracy']:>8.3f}/{row.metrics[c]['auc']:.3f}"[-14:].rjust(14)
            for c in columns
        )
        t = f"{row.seconds:>8.2f}" if row.seconds is not None else f"{'':>8}"
        a = f"{row.aggregate_seconds:>8.3f}" if row.aggregate_seconds is not None else f"{'':>8}"
        b = (
            f"{row.bytes_per_client_round:>12,.0f}"
            if row.bytes_per_client_round is not None
            else f"{'':>12}"
        )
        d = (
            f"{row.max_weight_difference:>10.1e}"
            if row.max_weight_difference is not None
            else f"{'':>10}"
        )
        s = f"{row.same_predictions!s:>10}" if row.same_predictions is not None else f"{'':>10}"
        lines.append(f"{row.method:<18}{cells}{t}{a}{b}{d}{s}")
    for row in rows:
        if "overhead_vs_plain" in row.extra:
            overhead = 100 * row.extra["overhead_vs_plain"]
            lines.append(f"  {row.method}: wall time {overhead:+.1f}% vs plaintext")
    return "\n".join(lines)


def run(opts: DemoOptions, json_path: str | None = None) -> int:
    import torch

    # The models are tiny: intra-op threads only add synchronisation, and on a busy
    # machine their spinning slows training many times over.
    torch.set_num_threads(1)
    print(
        f"securefl demo: UCI Heart Disease, 4 hospitals, {opts.model}, "
        f"{'FedProx mu=' + str(opts.mu) if opts.mu > 0 else 'FedAvg'}, {opts.rounds} rounds x "
        f"{opts.local_epochs} local epochs, dropout {opts.dropout:.0%} per hospital and round"
    )
    rows = run_demo(opts)
    print(format_table(rows))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(
                {
                    "schema": 1,
                    "options": asdict(opts),
                    "rows": [asdict(r) for r in rows],
                    "securefl": securefl.__version__,
                },
                f,
                indent=2,
            )
    ok = all(r.same_predictions is not False for r in rows)
    if not ok:
        print("WARNING: a secure run's predictions differ from plaintext FedAvg")
    return 0 if ok else 1
