"""Fixtures of the network-service tests: a test PKI, a server on a loopback port in a
thread of the test process, and client processes (real processes, so that SIGKILL is
real) running ``client_proc.py``."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from securefl.secagg.config import SecAggConfig
from securefl.transports.service import (
    AggregationServer,
    CKKSSession,
    SecAggSession,
    ServerTLS,
    ServiceOptions,
    write_pki,
)
from securefl.transports.service.tls import client_common_name, issue

from .client_proc import update_for

HERE = Path(__file__).resolve().parent
ENROLLED = range(12)
UNENROLLED = 42


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CA, server and client certificates for ids 0..11, identity keys and enrollment;
    a CA-signed certificate for the unenrolled id 42, and a foreign CA (its ca.pem and
    client 0)."""
    out = write_pki(tmp_path_factory.mktemp("pki"), ENROLLED)
    ca_cert, ca_key = (out / "ca.pem").read_bytes(), (out / "ca.key").read_bytes()
    cert, key = issue(ca_cert, ca_key, client_common_name(UNENROLLED))
    (out / f"client-{UNENROLLED}.pem").write_bytes(cert)
    (out / f"client-{UNENROLLED}.key").write_bytes(key)
    foreign = write_pki(tmp_path_factory.mktemp("foreign-pki"), [0])
    (out / "foreign-client-0.pem").write_bytes((foreign / "client-0.pem").read_bytes())
    (out / "foreign-client-0.key").write_bytes((foreign / "client-0.key").read_bytes())
    (out / "foreign-ca.pem").write_bytes((foreign / "ca.pem").read_bytes())
    return out


def enrolled_keys(pki: Path) -> dict[int, bytes]:
    data = json.loads((pki / "enrollment.json").read_text())
    return {int(k): bytes.fromhex(v) for k, v in data["clients"].items()}


@dataclass
class Running:
    """A server serving in a background thread."""

    server: AggregationServer
    thread: threading.Thread
    outcomes: list = field(default_factory=list)

    @property
    def target(self) -> str:
        return self.server.address

    def join(self, timeout: float = 60.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the server did not finish its sessions"


@pytest.fixture
def serve(pki: Path) -> Iterator:
    """Start an AggregationServer for ``sessions`` sessions in a thread."""
    started: list[Running] = []

    def start(
        session: SecAggSession | CKKSSession,
        sessions: int = 1,
        *,
        round_timeout: float = 10.0,
        join_timeout: float = 20.0,
        enrolled: range | None = None,
        mutual: bool = True,
    ) -> Running:
        tls = ServerTLS.from_files(
            str(pki / "server.pem"),
            str(pki / "server.key"),
            str(pki / "ca.pem") if mutual else None,
        )
        server = AggregationServer(
            session,
            tls,
            enrolled=enrolled,
            options=ServiceOptions(
                round_timeout=round_timeout, join_timeout=join_timeout, threads=1
            ),
        )
        running = Running(
            server, threading.Thread(target=server.run, args=(sessions,), daemon=True)
        )
        running.thread.start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.server.stop(grace=0)
        running.thread.join(10)


def config_spec(config: SecAggConfig) -> str:
    """The configuration for client_proc.py: its one wire form (SecAggConfig.to_bytes),
    so that no field (corruption_rate, min_survivors, ...) can be dropped on the way."""
    return config.to_bytes().hex()


@pytest.fixture
def clients(pki: Path, tmp_path: Path) -> Iterator:
    """Spawn client processes; returns a function (id, target, **spec) -> Popen."""
    procs: list[subprocess.Popen[str]] = []

    def spawn(cid: int, target: str, **spec: object) -> subprocess.Popen[str]:
        full = {"id": cid, "target": target, "pki": str(pki), "out": str(tmp_path), **spec}
        if "config" in full and isinstance(full["config"], SecAggConfig):
            full["config"] = config_spec(full["config"])
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "client_proc.py"), json.dumps(full)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def finish(proc: subprocess.Popen[str], timeout: float = 60.0) -> list[dict]:
    """Wait for a client process (a hang fails the test) and parse its JSON lines."""
    out, err = proc.communicate(timeout=timeout)
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert proc.returncode in (0, 3, -9), err
    return [line for line in lines if "progress" not in line]


def expected_mean(
    d: int, seed: int, round_: int, contributors, clip: float
) -> tuple[np.ndarray, int]:
    """The plain weighted mean of the contributors' clipped updates, and their weight."""
    total = np.zeros(d)
    weight = 0
    for c in contributors:
        update, w = update_for(seed, c, round_, d)
        total += w * np.clip(update, -clip, clip)
        weight += w
    return total / weight, weight


def assert_secagg_mean(config: SecAggConfig, mean: np.ndarray, contributors, seed, round_) -> None:
    """The mean equals numpy's within the quantization bound (docs/PROTOCOL.md)."""
    want, weight = expected_mean(config.dimension, seed, round_, contributors, config.clip)
    bound = config.fixed_point.precision * len(contributors) * config.max_weight / weight
    assert np.max(np.abs(mean - want)) <= bound * (1 + 1e-9)


def in_threads(target: Callable[[int], None], ids: Iterable[int]) -> list[threading.Thread]:
    """Start ``target(id)`` for each id, each in its own thread (in-process clients)."""
    threads = [threading.Thread(target=target, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    return threads


def join_all(threads: list[threading.Thread], timeout: float = 60.0) -> None:
    """Wait for the threads of :func:`in_threads`."""
    for t in threads:
        t.join(timeout)
