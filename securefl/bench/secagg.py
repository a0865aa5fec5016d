"""One SecAgg / SecAgg+ round as a benchmark scenario: time per phase, bytes per client,
error against the plain weighted mean, and (optionally) the server's peak memory."""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

import securefl
from securefl.secagg.config import GraphKind, SecAggConfig
from securefl.secagg.messages import Stage
from securefl.transports.inmemory import run_session

__all__ = ["Scenario", "format_table", "run"]


@dataclass(frozen=True)
class Scenario:
    clients: int = 50
    dimension: int = 1_000_000
    dropout: float = 0.1
    graph: str = "harary"
    degree: int = 10
    threshold: int | None = None
    bits: int = 32
    clip: float = 1.0
    max_weight: int = 1000
    processes: int | None = None
    measure_memory: bool = False

    def config(self) -> SecAggConfig:
        kind = GraphKind(self.graph)
        k = self.clients - 1 if kind is GraphKind.COMPLETE else self.degree
        threshold = self.threshold if self.threshold is not None else k // 2 + 1
        return SecAggConfig(
            num_clients=self.clients,
            threshold=threshold,
            dimension=self.dimension,
            bits=self.bits,
            clip=self.clip,
            max_weight=self.max_weight,
            graph=kind,
            degree=None if kind is GraphKind.COMPLETE else self.degree,
        )


@dataclass
class Outcome:
    scenario: dict[str, Any]
    completed: bool
    abort_reason: str | None
    survivors: int
    wall_seconds: float
    round_seconds: dict[str, float] = field(default_factory=dict)
    client_seconds_per_client: dict[str, float] = field(default_factory=dict)
    server_seconds: dict[str, float] = field(default_factory=dict)
    upload_bytes_per_client: int = 0
    download_bytes_per_client: int = 0
    upload_over_float32: float = 0.0
    max_abs_error: float | None = None
    server_peak_bytes: int | None = None
    environment: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def run(scenario: Scenario) -> Outcome:
    """Run the scenario once; dropped clients vanish after ShareKeys (the costly case)."""
    config = scenario.config()
    n, d = scenario.clients, scenario.dimension
    data = np.random.default_rng(0)  # benchmark data, not masks
    base = data.normal(0.0, 0.2, d).astype(np.float32)
    updates = [base * np.float32(1 + i / n) for i in range(n)]
    weights = [1 + (37 * i) % scenario.max_weight for i in range(n)]
    dropped = math.floor(scenario.dropout * n)
    step = n / dropped if dropped else 0
    schedule = {int(i * step): Stage.MASKED_INPUT_COLLECTION for i in range(dropped)}
    t0 = time.perf_counter()
    report = run_session(
        config,
        updates,
        weights,
        dropouts=schedule,
        processes=scenario.processes,
        measure_memory=scenario.measure_memory,
        threads=1 if scenario.processes else None,
    )
    wall = time.perf_counter() - t0
    outcome = Outcome(
        scenario=asdict(scenario),
        completed=report.stage is Stage.COMPLETED,
        abort_reason=report.abort_reason,
        survivors=len(report.result.contributors) if report.result else 0,
        wall_seconds=wall,
        environment={
            "securefl": securefl.__version__,
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
        },
    )
    outcome.round_seconds = {s.value: t for s, t in report.wall_seconds.items()}
    outcome.client_seconds_per_client = {s.value: t / n for s, t in report.client_seconds.items()}
    outcome.server_seconds = {s.value: t for s, t in report.server_seconds.items()}
    live = [i for i in range(n) if i not in schedule]
    outcome.upload_bytes_per_client = max(report.bytes_up[i] for i in live)
    outcome.download_bytes_per_client = max(report.bytes_down[i] for i in live)
    outcome.upload_over_float32 = outcome.upload_bytes_per_client / (4 * d)
    outcome.server_peak_bytes = report.server_peak_bytes
    if report.result is not None:
        survivors = report.result.contributors
        plain = np.zeros(d)
        for i in survivors:
            plain += weights[i] * np.clip(
                updates[i].astype(np.float64), -scenario.clip, scenario.clip
            )
        plain /= sum(weights[i] for i in survivors)
        outcome.max_abs_error = float(np.max(np.abs(report.result.weighted_mean - plain)))
    return outcome


def format_table(outcome: Outcome) -> str:
    s = outcome.scenario
    lines = [
        f"SecAgg{'+' if s['graph'] == 'harary' else ''}: n={s['clients']} d={s['dimension']:,} "
        f"dropout={s['dropout']:.0%} graph={s['graph']} b={s['bits']}",
        f"{'phase':<24}{'round wall s':>14}{'client s/client':>17}{'server s':>11}",
    ]
    for phase, wall in outcome.round_seconds.items():
        lines.append(
            f"{phase:<24}{wall:>14.4f}{outcome.client_seconds_per_client[phase]:>17.4f}"
            f"{outcome.server_seconds[phase]:>11.4f}"
        )
    lines.append(f"total wall {outcome.wall_seconds:.3f} s; survivors {outcome.survivors}")
    lines.append(
        f"upload {outcome.upload_bytes_per_client:,} B/client "
        f"({outcome.upload_over_float32:.3f} x the float32 update); "
        f"download {outcome.download_bytes_per_client:,} B/client"
    )
    if outcome.max_abs_error is not None:
        lines.append(f"max |secure - plain weighted mean| = {outcome.max_abs_error:.3e}")
    if outcome.server_peak_bytes is not None:
        lines.append(f"server peak heap growth {outcome.server_peak_bytes / 2**20:.1f} MiB")
    if not outcome.completed:
        lines.append(f"ABORTED: {outcome.abort_reason}")
    return "\n".join(lines)
