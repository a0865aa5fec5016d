"""A server that dies mid-session: every client fails with a clear error, none hangs."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from securefl.errors import ServiceError
from securefl.secagg.config import SecAggConfig
from securefl.transports.service import (
    AggregationClient,
    AggregationServer,
    ClientTLS,
    SecAggSession,
    ServerTLS,
)

from .conftest import finish


def test_server_killed_mid_session_fails_every_client(pki: Path, clients, tmp_path: Path) -> None:
    """`securefl serve` in its own process is SIGKILLed while four clients wait for
    ShareKeys to close (a fifth stalls, so the round stays open for 60 s): each of the
    four gets a ServiceError (UNAVAILABLE) long before that deadline."""
    port_file = tmp_path / "port"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "securefl",
            "serve",
            "--pki",
            str(pki),
            "--protocol",
            "secagg",
            "--clients",
            "5",
            "--threshold",
            "3",
            "--dim",
            "64",
            "--max-weight",
            "10",
            "--address",
            "127.0.0.1:0",
            "--port-file",
            str(port_file),
            "--round-timeout",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip():
                break
            assert server.poll() is None, server.communicate()
            time.sleep(0.05)
        target = f"127.0.0.1:{port_file.read_text().strip()}"
        # corruption_rate 0.1: `securefl serve`'s default --corruption-rate.
        config = SecAggConfig(
            num_clients=5, threshold=3, dimension=64, max_weight=10, corruption_rate=0.1
        )
        procs = [
            clients(
                i, target, config=config, timeout=90, stall_at=[1, "ShareKeys"] if i == 4 else None
            )
            for i in range(5)
        ]
        # Wait until the four live clients have reached ShareKeys (they then submit and wait).
        for proc in procs[:4]:
            assert proc.stdout is not None
            for line in proc.stdout:
                if json.loads(line).get("progress") == "session 1: ShareKeys":
                    break
        time.sleep(0.5)
        server.send_signal(signal.SIGKILL)
        server.communicate(timeout=10)
        for proc in procs[:4]:
            # Far below the 60 s round deadline and the 90 s call timeout: no hang.
            (record,) = finish(proc, timeout=30)
            assert record["error"] == "ServiceError"
            assert record["code"] == "UNAVAILABLE"
            assert "unreachable, went away" in record["message"]
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()


def test_server_stopping_answers_waiting_clients(serve, pki: Path) -> None:
    """A server stopped while a client waits for its session to start tells it so."""
    config = SecAggConfig(num_clients=3, threshold=2, dimension=10)
    running = serve(SecAggSession(config), join_timeout=30)
    tls = ClientTLS.from_files(
        str(pki / "ca.pem"), str(pki / "client-0.pem"), str(pki / "client-0.key")
    )
    client = AggregationClient(running.target, 0, tls, config=config, timeout=20)
    stopper = threading.Timer(1.0, running.server.stop)
    stopper.start()
    with client, pytest.raises(ServiceError, match="shutting down") as info:
        client.aggregate(np.zeros(10))
    stopper.join()
    assert info.value.code == "UNAVAILABLE"


def test_client_waits_for_a_server_that_starts_later(pki: Path) -> None:
    """Clients started first keep trying to connect until join_timeout; a server that
    comes up meanwhile runs their session."""
    # The smallest session the threshold rules allow: t >= 2 needs k = n - 1 >= 2.
    config = SecAggConfig(num_clients=3, threshold=2, dimension=10)
    with socket.socket() as probe:  # a free port, bound by nobody until the server starts
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results: dict[int, np.ndarray] = {}

    def hospital(cid: int) -> None:
        tls = ClientTLS.from_files(
            str(pki / "ca.pem"), str(pki / f"client-{cid}.pem"), str(pki / f"client-{cid}.key")
        )
        with AggregationClient(f"127.0.0.1:{port}", cid, tls, config=config, timeout=20) as c:
            results[cid] = c.aggregate(np.full(10, 0.25 * (cid + 1))).weighted_mean

    threads = [threading.Thread(target=hospital, args=(cid,)) for cid in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    tls = ServerTLS.from_files(
        str(pki / "server.pem"), str(pki / "server.key"), str(pki / "ca.pem")
    )
    server = AggregationServer(
        SecAggSession(config), tls, enrolled=range(3), address=f"127.0.0.1:{port}"
    )
    serving = threading.Thread(target=server.run, args=(1,))
    serving.start()
    for t in threads:
        t.join(30)
    serving.join(30)
    assert not serving.is_alive()
    for cid in range(3):
        np.testing.assert_allclose(results[cid], 0.5, atol=1e-6)  # (0.25 + 0.5 + 0.75) / 3
