"""The network service against the in-process simulator (issue 6 target: service
overhead < 2x for n = 20 clients, d = 1M).

One SecAgg+ round (Harary graph, k = 10, t = 6, 32-bit ring) with the same inputs, two
ways, in the same run:

- service: ``securefl serve``'s server (:class:`AggregationServer`, in this process) and
  20 ``securefl join`` client processes on loopback, TLS with client certificates; the
  server runs ``ROUNDS`` sessions back to back and the time of a session is from its
  first round opening to the last client having received the aggregate (processes are
  started and warm before the first session);
- in-process: :func:`securefl.transports.inmemory.run_session`, every client in this
  process one after another, every message through the codec.

The benchmark checks that both aggregates are the plain weighted mean within the
quantization bound, and records both medians and their ratio in ``extra_info``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("grpc")

from securefl.secagg.config import GraphKind, SecAggConfig
from securefl.secagg.messages import Stage
from securefl.transports.inmemory import run_session
from securefl.transports.service import (
    AggregationServer,
    SecAggSession,
    ServerTLS,
    ServiceOptions,
    SessionOutcome,
    write_pki,
)

N = int(os.environ.get("SECUREFL_BENCH_SERVICE_N", "20"))
D = int(os.environ.get("SECUREFL_BENCH_SERVICE_D", "1000000"))
ROUNDS = int(os.environ.get("SECUREFL_BENCH_SERVICE_ROUNDS", "5"))
K = 10 if N > 11 else N - 1  # small N (quick checks): the complete graph
T = K // 2 + 1


def config() -> SecAggConfig:
    return SecAggConfig(
        num_clients=N,
        threshold=T,
        dimension=D,
        bits=32,
        clip=1.0,
        max_weight=1000,
        graph=GraphKind.HARARY if K < N - 1 else GraphKind.COMPLETE,
        degree=K if K < N - 1 else None,
    )


def inputs() -> tuple[list[np.ndarray], list[int]]:
    data = np.random.default_rng(0)  # benchmark data, not masks
    base = data.normal(0.0, 0.2, D).astype(np.float32)
    return [base * np.float32(1 + i / N) for i in range(N)], [100 + i for i in range(N)]


def check(cfg: SecAggConfig, mean: np.ndarray, total_weight: int) -> None:
    updates, weights = inputs()
    want = sum(
        w * np.clip(u.astype(np.float64), -1, 1) for u, w in zip(updates, weights, strict=True)
    )
    want /= sum(weights)
    assert total_weight == sum(weights)
    bound = cfg.fixed_point.precision * N * cfg.max_weight / total_weight
    assert np.max(np.abs(mean - want)) <= bound * (1 + 1e-9)


def service_rounds(tmp: Path, between: Callable[[], object] = lambda: None) -> list[float]:
    """Per-session seconds of ROUNDS sessions over the service (plus one warm-up).

    ``between`` runs after each session has been delivered and before the next opens,
    while every client process waits idle to join: the in-process round runs there, so
    that each service session and its in-process counterpart see the same machine load.
    """
    cfg = config()
    pki = write_pki(tmp / "pki", range(N))
    updates, weights = inputs()
    for i, u in enumerate(updates):
        np.save(tmp / f"update-{i}.npy", u)
    tls = ServerTLS.from_files(
        str(pki / "server.pem"), str(pki / "server.key"), str(pki / "ca.pem")
    )
    server = AggregationServer(
        SecAggSession(cfg), tls, options=ServiceOptions(round_timeout=120, join_timeout=120)
    )

    def after(outcome: SessionOutcome) -> None:
        deadline = time.monotonic() + 60
        while not outcome.delivered and time.monotonic() < deadline:
            time.sleep(0.001)  # the last result is still on its way to a client
        between()

    thread = threading.Thread(
        target=server.run, args=(ROUNDS + 1,), kwargs={"on_outcome": after}, daemon=True
    )
    thread.start()
    args = ["--protocol", "secagg+", "--clients", str(N), "--threshold", str(T)]
    args += ["--degree", str(K), "--dim", str(D), "--max-weight", "1000"]  # == config()
    args += ["--threads", os.environ.get("SECUREFL_BENCH_SERVICE_CLIENT_THREADS", "1")]
    procs = []
    for i in range(N):
        command = [sys.executable, "-m", "securefl", "join", "--pki", str(pki), "--id", str(i)]
        command += ["--server", server.address, "--update", str(tmp / f"update-{i}.npy")]
        command += ["--weight", str(weights[i]), "--rounds", str(ROUNDS + 1), "--timeout", "300"]
        command += args
        if i == 0:
            command += ["--out", str(tmp / "mean-{round}.npy")]
        procs.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        )
    for proc in procs:
        _, err = proc.communicate(timeout=1200)
        assert proc.returncode == 0, err
    thread.join(60)
    outcomes = server.outcomes
    assert [o.stage for o in outcomes] == [Stage.COMPLETED] * (ROUNDS + 1)
    for r, outcome in enumerate(outcomes, 1):
        assert outcome.result is not None
        check(cfg, outcome.result.weighted_mean, outcome.result.total_weight)
        check(cfg, np.load(tmp / f"mean-{r}.npy"), outcome.result.total_weight)
    return [o.delivered - o.started for o in outcomes[1:]]  # the first one warms up


def test_bench_service_vs_in_process(benchmark, tmp_path: Path) -> None:
    """One round, n = 20 processes, d = 1M: the service's median over the in-process
    median (target < 2x)."""
    cfg = config()
    updates, weights = inputs()
    local: list[float] = []

    def in_process() -> float:
        t0 = time.perf_counter()
        report = run_session(cfg, updates, weights)
        seconds = time.perf_counter() - t0
        assert report.result is not None
        check(cfg, report.result.weighted_mean, report.result.total_weight)
        return seconds

    # Interleaved: service session k, then in-process round k (the first pair warms up).
    service = service_rounds(tmp_path, between=lambda: local.append(in_process()))
    local = local[1:]
    benchmark.pedantic(in_process, rounds=1, iterations=1)
    # Context: the simulator with its clients in 20 worker processes (pipes, no TLS);
    # its per-round wall times exclude starting the workers.
    pooled_report = run_session(cfg, updates, weights, processes=N)
    assert pooled_report.result is not None
    check(cfg, pooled_report.result.weighted_mean, pooled_report.result.total_weight)
    pooled = sum(pooled_report.wall_seconds.values())
    median_service = statistics.median(service)
    median_local = statistics.median(local)
    ratio = median_service / median_local
    pair_ratio = statistics.median(a / b for a, b in zip(service, local, strict=True))
    benchmark.extra_info.update(
        {
            "clients": N,
            "dimension": D,
            "service_seconds": service,
            "in_process_seconds": local,
            "service_median": median_service,
            "in_process_median": median_local,
            "ratio": ratio,
            "median_pair_ratio": pair_ratio,
            "simulator_20_processes_seconds": pooled,
        }
    )
    print(
        f"\nservice n={N} d={D:,}: median {median_service:.3f} s over {ROUNDS} sessions "
        f"{[round(s, 3) for s in service]}; in-process run_session median "
        f"{median_local:.3f} s {[round(s, 3) for s in local]}; ratio {ratio:.2f}x, "
        f"median of interleaved pair ratios {pair_ratio:.2f}x; simulator with {N} worker "
        f"processes: {pooled:.3f} s"
    )
