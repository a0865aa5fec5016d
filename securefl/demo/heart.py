"""`securefl demo`: federated training across the four hospitals of the UCI Heart
Disease data, with plaintext FedAvg and with each secure aggregation protocol.

Each hospital trains a PyTorch model (logistic regression, or a small MLP) on its own
training split; every round the global model is the weighted mean of the hospitals'
models (weights: training examples), computed in plaintext or by SecAgg, SecAgg+ or
CKKS. The same hospitals drop out of the same rounds in every run, so the secure runs
must reproduce plaintext FedAvg up to quantization: the table shows accuracy and
ROC-AUC on each hospital's held-out split, wall time, bytes per client per round, and
the largest difference between the secure and the plaintext global weights.

With ``--dp-epsilon`` the demo instead compares non-private FedAvg with DP-FedSGD under
distributed differential privacy (``securefl.dp``: the distributed discrete Gaussian of
Kairouz, Liu, Steinke, ICML 2021, or Skellam of Agarwal, Kairouz, Liu, NeurIPS 2021)
at each epsilon, and prints accuracy / AUC against epsilon.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

import securefl
from securefl.demo.datasets import HOSPITALS, HospitalData, load_hospitals
from securefl.primitives.keystream_rng import KeystreamRng, seeded
from securefl.secagg.messages import Stage

__all__ = ["DPOptions", "DemoOptions", "run", "run_dp"]

SECURE = ("secagg", "secagg+", "ckks")


@dataclass(frozen=True)
class DemoOptions:
    protocols: tuple[str, ...] = SECURE
    rounds: int = 20
    local_epochs: int = 2
    mu: float = 0.0
    dropout: float = 0.0
    seed: int = 0
    model: Literal["logreg", "mlp"] = "logreg"
    clip: float = 16.0
    bits: int = 32

    def __post_init__(self) -> None:
        if self.model not in ("logreg", "mlp"):
            raise ValueError(f"model must be 'logreg' or 'mlp', got {self.model!r}")


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
                message, own = ckks.encrypt_update(ctx, state, int(weights[i]))
                # The sum would add different parameters' coordinates and decode under
                # one hospital's names: refuse, as securefl.aggregate does.
                diff: str | None = (
                    None
                    if layout is None
                    else own.difference(layout, this=f"hospital {i}", that="the first")
                )
                if diff is not None:
                    raise ValueError(f"hospital {i}'s model does not match the others': {diff}")
                layout = layout or own
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


def _federated(
    hospitals: Mapping[str, HospitalData],
    protocol: str,
    opts: DemoOptions,
    schedule: list[set[int]],
) -> tuple[Any, float, dict[str, Any]]:
    """FedAvg / FedProx through ``protocol``: (global state_dict, seconds, log with the
    bytes per client and round and the seconds spent aggregating)."""
    from securefl.demo.fl import federated_training

    log: dict[str, Any] = {"bytes": []}
    t0 = time.perf_counter()
    result = federated_training(
        hospitals,
        rounds=opts.rounds,
        local_epochs=opts.local_epochs,
        mu=opts.mu,
        aggregate=_aggregator(protocol, opts, schedule, log),
        progress=_progress(protocol, opts.rounds),
        model=opts.model,
        seed=opts.seed,
    )
    log["aggregate_seconds"] = float(sum(result.aggregate_seconds))
    return result.state_dict, time.perf_counter() - t0, log


def run_demo(opts: DemoOptions) -> list[Row]:
    """Train every baseline and protocol; return one row per method."""
    from securefl.demo.fl import (
        centralized,
        evaluate,
        evaluate_local,
        local_only,
        predictions_equal,
    )

    hospitals = load_hospitals(seed=opts.seed)
    schedule = _dropout_schedule(opts, len(hospitals))
    kind = opts.model
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

    plain_state, plain_seconds, plain_log = _federated(hospitals, "plain", opts, schedule)
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
        state, seconds, log = _federated(hospitals, protocol, opts, schedule)
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


# ---- distributed differential privacy (`securefl demo --dp-epsilon ...`) -------------

DP_NAME = "DP-FedSGD"


@dataclass(frozen=True)
class DPOptions:
    """The DP study: DP full-batch federated gradient descent at several epsilons.

    Privacy unit: one patient (example-level DP, add/remove one record). Each round a
    hospital sums its patients' per-example gradients, each clipped to L2 norm
    ``example_clip``; its vector then has norm <= m_k * example_clip (c of the DP plan,
    with hospital sizes public) and changes by <= example_clip when one patient is
    added or removed (the plan's ``sensitivity``). The hospitals add distributed
    discrete Gaussian (or Skellam) noise inside SecAgg's ring; the server divides the
    noisy sum by the public number of training examples and takes a gradient step.
    epsilon is for the whole run (all ``rounds``), at ``delta``.
    """

    epsilons: tuple[float, ...] = (1.0, 3.0, 8.0, float("inf"))
    delta: float = 1e-5
    rounds: int = 60
    lr: float = 2.0
    example_clip: float = 1.0
    bits: int = 32
    mechanism: str = "discrete_gaussian"
    plot: str | None = None
    reproducible_noise: bool = False
    """Draw every hospital's noise secret from a seeded AES-CTR stream (the demo's
    seed, the epsilon and the round), so that a run can be repeated exactly. For
    experiments only: whoever knows the seed can recompute and remove the noise, so
    such a run has no privacy at all."""


def _flat_params(net: Any) -> np.ndarray:
    import torch

    with torch.no_grad():
        return torch.cat([p.detach().reshape(-1) for p in net.parameters()]).double().numpy()


def _set_params(net: Any, flat: np.ndarray) -> None:
    import torch

    with torch.no_grad():
        offset = 0
        for p in net.parameters():
            size = p.numel()
            chunk = torch.from_numpy(flat[offset : offset + size].copy()).reshape(p.shape)
            p.copy_(chunk.to(p.dtype))
            offset += size


def _clipped_gradient_sum(net: Any, x: np.ndarray, y: np.ndarray, clip: float) -> np.ndarray:
    """Sum over a hospital's examples of each example's loss gradient, clipped to ``clip``."""
    import torch
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in net.named_parameters()}

    def loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logit = functional_call(net, p, (xi.unsqueeze(0),)).reshape(())
        return torch.nn.functional.binary_cross_entropy_with_logits(logit, yi)

    grads = vmap(grad(loss), in_dims=(None, 0, 0))(params, torch.from_numpy(x), torch.from_numpy(y))
    flat = torch.cat([grads[k].reshape(x.shape[0], -1) for k in params], dim=1).double()
    scale = torch.clamp(clip / (flat.norm(dim=1, keepdim=True) + 1e-12), max=1.0)
    return (flat * scale).sum(dim=0).numpy()


def _experiment_rng(seed: int, epsilon: float, r: int) -> KeystreamRng:
    # A seeded stream makes every key, mask and noise secret of the round public to
    # whoever knows the seed: DPOptions.reproducible_noise documents that.
    return seeded(f"securefl/demo/dp/{seed}/{epsilon!r}/{r}")


def dp_training(
    hospitals: Mapping[str, Any],
    epsilon: float,
    dp: DPOptions,
    opts: DemoOptions,
    schedule: list[set[int]],
) -> tuple[Any, Any, float]:
    """Train with DP-FedSGD through SecAgg + distributed DP; return (model, plan, seconds)."""
    from securefl.demo.fl.training import make_model
    from securefl.dp import DPConfig, calibrate

    names = list(hospitals)
    data = [hospitals[h] for h in names]
    net = make_model(data[0].x_train.shape[1], opts.model, seed=opts.seed)
    largest = max(h.x_train.shape[0] for h in data)
    config = DPConfig(
        epsilon=epsilon,
        delta=dp.delta,
        clip=largest * dp.example_clip,
        num_clients=len(data),
        rounds=dp.rounds,
        dropout_rate=0.25 if opts.dropout > 0 else 0.0,  # the schedule drops <= n - 3
        bits=dp.bits,
        mechanism=dp.mechanism,  # type: ignore[arg-type]
        sensitivity=dp.example_clip,
    )
    theta = _flat_params(net)
    plan = calibrate(config, theta.size)
    progress = _progress(f"eps={epsilon:g}"[:10], dp.rounds)
    t0 = time.perf_counter()
    for r in range(dp.rounds):
        sums = [_clipped_gradient_sum(net, h.x_train, h.y_train, dp.example_clip) for h in data]
        dropped = schedule[r % len(schedule)] if schedule else set()
        result = securefl.aggregate(
            sums,
            protocol="secagg",
            dp=plan,
            dropouts=dict.fromkeys(dropped, Stage.MASKED_INPUT_COLLECTION),
            rng=_experiment_rng(opts.seed, epsilon, r) if dp.reproducible_noise else None,
        )
        # The mean over the survivors times their number: the noisy sum of gradients.
        noisy_sum = np.asarray(result.aggregate) * len(result.contributors)
        survivors_examples = sum(data[i].x_train.shape[0] for i in result.contributors)
        theta = theta - dp.lr * noisy_sum / survivors_examples
        _set_params(net, theta)
        progress(r + 1, dp.rounds)
    return net, plan, time.perf_counter() - t0


def run_dp_study(opts: DemoOptions, dp: DPOptions) -> list[Row]:
    """Non-private FedAvg (the reference), then DP-FedSGD at each epsilon."""
    from securefl.demo.fl import evaluate

    hospitals = load_hospitals(seed=opts.seed)
    schedule = _dropout_schedule(opts, len(hospitals))
    plain_state, plain_seconds, _ = _federated(hospitals, "plain", opts, schedule)
    rows = [
        Row(
            "FedAvg plain",
            evaluate(plain_state, hospitals),
            plain_seconds,
            extra={"epsilon": math.inf, "private": False},
        )
    ]
    dp_schedule = _dropout_schedule(replace(opts, rounds=dp.rounds), len(hospitals))
    for epsilon in dp.epsilons:
        net, plan, seconds = dp_training(hospitals, epsilon, dp, opts, dp_schedule)
        rows.append(
            Row(
                f"{DP_NAME} eps={epsilon:g}",
                evaluate(net, hospitals),
                seconds,
                extra={
                    "epsilon": epsilon,
                    "epsilon_per_round": plan.epsilon_per_round,
                    "private": True,
                    "noise_std_per_hospital": plan.client_noise_std,
                    "gamma": plan.gamma,
                    "mechanism": plan.config.mechanism,
                },
            )
        )
    return rows


def format_dp_table(rows: list[Row], dp: DPOptions) -> str:
    """Accuracy / AUC per hospital against epsilon."""
    columns = [*HOSPITALS, "overall"]
    short = {"VA Long Beach": "VA"}
    head = f"{'method':<22}{'epsilon':>9}{'eps/round':>10}" + "".join(
        f"{short.get(c, c):>14}" for c in columns
    )
    lines = [
        f"accuracy / ROC-AUC against epsilon: {DP_NAME}, example-level (one patient) DP at "
        f"delta={dp.delta:g} over the whole run ({dp.rounds} rounds, per-example clip "
        f"{dp.example_clip:g}, {dp.mechanism} noise added by the hospitals inside SecAgg)",
        head,
    ]
    for row in rows:
        eps = row.extra.get("epsilon", math.inf)
        per_round = row.extra.get("epsilon_per_round")
        cells = "".join(
            f"{row.metrics[c]['accuracy']:>8.3f}/{row.metrics[c]['auc']:.3f}"[-14:].rjust(14)
            for c in columns
        )
        label = "non-private" if not row.extra.get("private") else f"{eps:g}"
        pr = f"{per_round:>10.3g}" if per_round is not None else f"{'':>10}"
        lines.append(f"{row.method:<22}{label:>9}{pr}{cells}")
    reference = rows[0].metrics["overall"]["accuracy"]
    for row in rows[1:]:
        gap = 100 * (row.metrics["overall"]["accuracy"] - reference)
        lines.append(f"  {row.method}: overall accuracy {gap:+.1f} points vs non-private FedAvg")
    return "\n".join(lines)


def plot_dp(rows: list[Row], path: str) -> None:
    """Overall accuracy and AUC against epsilon (log axis; infinity drawn at the right).

    Raises
    ------
    BackendUnavailable
        If matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from securefl.errors import BackendUnavailable

        raise BackendUnavailable("--plot needs matplotlib: pip install 'securefl[bench]'") from None
    private = [r for r in rows if r.extra.get("private")]
    finite = [r.extra["epsilon"] for r in private if math.isfinite(r.extra["epsilon"])]
    right = 4 * max(finite) if finite else 10.0
    xs = [r.extra["epsilon"] if math.isfinite(r.extra["epsilon"]) else right for r in private]
    fig, ax = plt.subplots(figsize=(6, 4))
    for metric, marker in (("accuracy", "o"), ("auc", "s")):
        ys = [r.metrics["overall"][metric] for r in private]
        (line,) = ax.plot(xs, ys, marker=marker, label=f"{DP_NAME} {metric}")
        ax.axhline(
            rows[0].metrics["overall"][metric],
            linestyle="--",
            color=line.get_color(),
            label=f"non-private FedAvg {metric}",
        )
    ax.set_xscale("log")
    ticks = sorted(set(xs))
    has_inf = len(finite) < len(private)
    ax.set_xticks(ticks, ["inf" if has_inf and x == right else f"{x:g}" for x in ticks])
    ax.set_xlabel("epsilon (whole run, delta fixed)")
    ax.set_ylabel("overall test score")
    ax.set_title("UCI Heart Disease, 4 hospitals: utility against privacy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_dp(opts: DemoOptions, dp: DPOptions, json_path: str | None = None) -> int:
    """`securefl demo --dp-epsilon ...`: print (and optionally plot) the DP table."""
    import torch

    torch.set_num_threads(1)
    print(
        f"securefl demo --dp-epsilon: UCI Heart Disease, 4 hospitals, {opts.model}; "
        f"non-private FedAvg ({opts.rounds} rounds x {opts.local_epochs} local epochs) vs "
        f"{DP_NAME} ({dp.rounds} rounds, lr {dp.lr:g}) with distributed DP, dropout "
        f"{opts.dropout:.0%} per hospital and round"
    )
    rows = run_dp_study(opts, dp)
    print(format_dp_table(rows, dp))
    if dp.plot:
        plot_dp(rows, dp.plot)
        print(f"plot written to {dp.plot}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(
                {
                    "schema": 1,
                    "options": asdict(opts),
                    "dp": asdict(dp),
                    "rows": [asdict(r) for r in rows],
                    "securefl": securefl.__version__,
                },
                f,
                indent=2,
                default=str,
            )
    return 0
