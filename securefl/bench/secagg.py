"""One SecAgg / SecAgg+ round as a benchmark scenario: time per phase, bytes per client,
error against the plain weighted mean, and (optionally) the server's peak memory."""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

import securefl
from securefl import vectors
from securefl.primitives import default_backend
from securefl.secagg.config import SecAggConfig
from securefl.secagg.defaults import DEFAULT_CORRUPTION_RATE
from securefl.secagg.messages import Stage
from securefl.transports.inmemory import run_session

__all__ = [
    "PROTOCOLS",
    "TOML_KEYS",
    "Inputs",
    "Outcome",
    "Scenario",
    "cpu_model",
    "format_table",
    "inputs",
    "load_scenarios",
    "plot",
    "run",
    "sweep",
]


PROTOCOLS = ("secagg", "secagg+", "ckks")


@dataclass(frozen=True)
class Scenario:
    """One benchmark round. ``protocol`` ``None`` follows ``graph`` (harary: SecAgg+,
    complete: SecAgg); ``"secagg"`` / ``"secagg+"`` set the graph; ``"ckks"`` runs CKKS
    FedAvg (TenSEAL encryption, securefl's server sum; ``graph``, ``degree``, ``threshold``,
    ``bits`` and ``clip`` do not apply)."""

    clients: int = 50
    dimension: int = 1_000_000
    dropout: float = 0.1
    graph: str = "harary"
    degree: int | None = None
    """k; ``None``: the parameter chooser's for ``dropout`` and ``corruption``."""
    threshold: int | None = None
    corruption: float = DEFAULT_CORRUPTION_RATE
    """The corruption rate the chooser's (k, t) tolerate (SecAgg+ without a degree)."""
    bits: int = 32
    clip: float = 1.0
    max_weight: int = 1000
    processes: int | None = None
    threads: int | None = None
    measure_memory: bool = False
    protocol: str | None = None

    def __post_init__(self) -> None:
        if self.protocol is not None and self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.protocol in ("secagg", "secagg+"):
            graph = "complete" if self.protocol == "secagg" else "harary"
            object.__setattr__(self, "graph", graph)
        if self.graph not in ("complete", "harary"):
            raise ValueError(f"graph must be 'complete' or 'harary', got {self.graph!r}")

    @property
    def name(self) -> str:
        """The protocol's display name."""
        if self.protocol == "ckks":
            return "CKKS"
        return "SecAgg+" if self.graph == "harary" else "SecAgg"

    def config(self) -> SecAggConfig:
        """The round's configuration.

        The defaults of every entry point (:mod:`securefl.secagg.defaults`): SecAgg+
        without a degree takes k and t from the parameter chooser (Bell et al. 2020)
        for the scenario's corruption rate and its floor(dropout n) dropouts (at least
        the defaults' 10 % and one), so every client keeps t surviving neighbours; a
        degree of n - 1 or more is the complete graph.

        Raises
        ------
        ConfigError
            If no parameters fit (for example fewer than 3 clients).
        """
        from securefl.secagg.defaults import default_config, planned_dropouts

        n = self.clients
        scheduled = math.floor(self.dropout * n)
        # The shared defaults, planned for the scheduled dropouts where they are more.
        rate = Fraction(scheduled, n) if scheduled > planned_dropouts(n) else None
        return default_config(
            n,
            self.dimension,
            complete=self.graph == "complete",
            threshold=self.threshold,
            degree=self.degree,
            dropout_rate=rate,
            corruption_rate=self.corruption,
            bits=self.bits,
            clip=self.clip,
            max_weight=self.max_weight,
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
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    """Filled by ``securefl.bench.compare`` (``--compare``): one entry per baseline."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


@dataclass(frozen=True)
class Inputs:
    """A scenario's client updates, integer weights and the clients that drop."""

    updates: list[npt.NDArray[np.float32]]
    weights: list[int]
    dropped: list[int]

    @property
    def survivors(self) -> list[int]:
        gone = set(self.dropped)
        return [i for i in range(len(self.updates)) if i not in gone]

    def plain_mean(self, clip: float, survivors: Sequence[int]) -> npt.NDArray[np.float64]:
        """The weighted mean of the ``survivors``' clipped updates, in float64."""
        return vectors.weighted_mean(
            [self.updates[i] for i in survivors], [self.weights[i] for i in survivors], clip=clip
        )


def inputs(scenario: Scenario) -> Inputs:
    """Deterministic benchmark data (not masks): every run and baseline gets the same."""
    n, d = scenario.clients, scenario.dimension
    data = np.random.default_rng(0)
    base = data.normal(0.0, 0.2, d).astype(np.float32)
    dropped = math.floor(scenario.dropout * n)
    step = n / dropped if dropped else 0
    return Inputs(
        updates=[base * np.float32(1 + i / n) for i in range(n)],
        weights=[1 + (37 * i) % scenario.max_weight for i in range(n)],
        dropped=sorted({int(i * step) for i in range(dropped)}),
    )


def _environment() -> dict[str, str]:
    return {
        "securefl": securefl.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu": cpu_model(),
        "aes_backend": default_backend(),
    }


def _run_ckks(scenario: Scenario, data: Inputs) -> Outcome:
    """CKKS FedAvg: every survivor encrypts, the server sums, one client decrypts."""
    d = scenario.dimension
    t0 = time.perf_counter()
    result = securefl.aggregate(
        data.updates,
        data.weights,
        protocol="ckks",
        dropouts=dict.fromkeys(data.dropped, Stage.MASKED_INPUT_COLLECTION),
        threads=scenario.threads,
    )
    wall = time.perf_counter() - t0
    phases = result.phase_seconds
    survivors = len(result.contributors)
    outcome = Outcome(
        scenario=asdict(scenario),
        completed=True,
        abort_reason=None,
        survivors=survivors,
        wall_seconds=wall,
        environment=_environment(),
    )
    outcome.round_seconds = {
        "Keys": phases["setup:keys"],
        "Encrypt": phases["client:encrypt"],
        "Sum": phases["server:sum"],
        "Decrypt": phases["client:decrypt"],
    }
    outcome.client_seconds_per_client = {
        "Keys": 0.0,
        "Encrypt": phases["client:encrypt"] / survivors,
        "Sum": 0.0,
        "Decrypt": phases["client:decrypt"],
    }
    outcome.server_seconds = {
        "Keys": 0.0,
        "Encrypt": 0.0,
        "Sum": phases["server:sum"],
        "Decrypt": 0.0,
    }
    outcome.upload_bytes_per_client = max(result.bytes_sent.values())
    outcome.download_bytes_per_client = max(result.bytes_received.values())
    outcome.upload_over_float32 = outcome.upload_bytes_per_client / (4 * d)
    mean = np.asarray(result.aggregate, dtype=np.float64)
    plain = data.plain_mean(np.inf, result.contributors)  # CKKS does not clip
    outcome.max_abs_error = float(np.max(np.abs(mean - plain)))
    return outcome


def run(scenario: Scenario, data: Inputs | None = None) -> Outcome:
    """Run the scenario once; dropped clients vanish after ShareKeys (the costly case).

    ``data``: the scenario's :func:`inputs`, when the caller already has them (to hand
    the same arrays to a baseline without generating them twice).
    """
    data = inputs(scenario) if data is None else data
    if scenario.protocol == "ckks":
        return _run_ckks(scenario, data)
    config = scenario.config()
    n, d = scenario.clients, scenario.dimension
    updates, weights = data.updates, data.weights
    schedule = {i: Stage.MASKED_INPUT_COLLECTION for i in data.dropped}
    t0 = time.perf_counter()
    report = run_session(
        config,
        updates,
        weights,
        dropouts=schedule,
        processes=scenario.processes,
        measure_memory=scenario.measure_memory,
        threads=scenario.threads if scenario.threads or not scenario.processes else 1,
    )
    wall = time.perf_counter() - t0
    outcome = Outcome(
        scenario=asdict(scenario),
        completed=report.stage is Stage.COMPLETED,
        abort_reason=report.abort_reason,
        survivors=len(report.result.contributors) if report.result else 0,
        wall_seconds=wall,
        environment=_environment(),
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
        plain = data.plain_mean(scenario.clip, report.result.contributors)
        outcome.max_abs_error = float(np.max(np.abs(report.result.weighted_mean - plain)))
    return outcome


def format_table(outcome: Outcome) -> str:
    s = outcome.scenario
    lines = [
        f"{Scenario(**s).name}: n={s['clients']} d={s['dimension']:,} dropout={s['dropout']:.0%}"
        + ("" if s["protocol"] == "ckks" else f" graph={s['graph']} b={s['bits']}"),
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


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sweep(base: Scenario, clients: list[int], dimensions: list[int]) -> list[Scenario]:
    """Every combination of the given client counts and dimensions."""
    from dataclasses import replace

    return [replace(base, clients=n, dimension=d) for n in clients for d in dimensions]


TOML_KEYS = {
    "clients": "clients",
    "dim": "dimension",
    "dropout": "dropout",
    "protocol": "protocol",
    "graph": "graph",
    "degree": "degree",
    "threshold": "threshold",
    "corruption_rate": "corruption",
    "bits": "bits",
    "processes": "processes",
    "threads": "threads",
    "memory": "measure_memory",
    "clip": "clip",
    "max_weight": "max_weight",
}
"""Scenario file keys -> :class:`Scenario` fields: each bench flag's name (``--dim`` is
``dim``, ``--corruption-rate`` is ``corruption_rate``), plus ``clip`` and
``max_weight``, which have no flag."""


def load_scenarios(path: str) -> list[Scenario]:
    """Scenarios from a TOML file: optional ``[defaults]``, then ``[[scenario]]`` tables
    whose keys are the bench flags' names (:data:`TOML_KEYS`); ``clients`` and ``dim``
    may be lists.

    Raises
    ------
    ValueError
        For unknown keys or a file without scenarios.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise ValueError("TOML scenario files need Python >= 3.11 (tomllib)") from None

    with open(path, "rb") as f:
        data = tomllib.load(f)
    defaults = data.get("defaults", {})
    tables = data.get("scenario", [])
    if not tables:
        raise ValueError(f"{path} has no [[scenario]] tables")
    out: list[Scenario] = []
    for table in tables:
        merged = {**defaults, **table}
        unknown = set(merged) - set(TOML_KEYS)
        if unknown:
            raise ValueError(
                f"unknown scenario keys in {path}: {', '.join(sorted(unknown))} "
                f"(the keys are the bench flags' names: {', '.join(TOML_KEYS)})"
            )
        merged = {TOML_KEYS[k]: v for k, v in merged.items()}
        clients = merged.pop("clients", Scenario.clients)
        dims = merged.pop("dimension", Scenario.dimension)
        base = Scenario(**merged)
        out += sweep(
            base,
            clients if isinstance(clients, list) else [clients],
            dims if isinstance(dims, list) else [dims],
        )
    return out


def plot(outcomes: list[Outcome], path: str) -> None:
    """PNG with two panels: round wall time vs clients, and vs dimension.

    Raises
    ------
    BackendUnavailable
        If matplotlib is not installed (it comes with the ``bench`` extra).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from securefl.errors import BackendUnavailable

        raise BackendUnavailable("--plot needs matplotlib: pip install 'securefl[bench]'") from None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, x_key, series_key in ((left, "clients", "dimension"), (right, "dimension", "clients")):
        groups: dict[int, list[tuple[int, float]]] = {}
        for o in outcomes:
            groups.setdefault(o.scenario[series_key], []).append(
                (o.scenario[x_key], o.wall_seconds)
            )
        for key, points in sorted(groups.items()):
            points.sort()
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                marker="o",
                label=f"{series_key} = {key:,}",
            )
        ax.set_xlabel(x_key)
        ax.set_ylabel("round wall time (s)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    title = " / ".join(sorted({Scenario(**o.scenario).name for o in outcomes}))
    fig.suptitle(f"securefl {title}: one round, in-process")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
