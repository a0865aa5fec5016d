"""Fault tests: real processes on loopback, the command line's defaults (issue 12).

A ``securefl serve`` process with the default session options (only ``--clients``,
``--dim`` and the deadlines are given), client processes (``client_proc.py``, or
``securefl join`` itself), and one fault each: a client SIGKILLed in each protocol round
and restarted, a client stopped with SIGSTOP, a client that gave up joining and came
back, a client with other options, a second server on the port, client certificates
the server cannot accept (another CA, none), a server certificate the client cannot
accept, a key that does not match its certificate, and no server at all.

Each test asserts the outcome (the weighted mean of the survivors, or a named error),
the exit codes, and time bounds stated as multiples of the configured deadlines, never
in absolute seconds: a round that closed in less than its deadline T did not wait for
an answer that could not come.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from securefl.cli.service import add_commands, secagg_config
from securefl.secagg.config import SecAggConfig

from .client_proc import update_for
from .conftest import assert_secagg_mean, finish

D = 50
T = 20.0
"""The round deadline (``--round-timeout``) of the tests in which no round should wait
for it: a round that takes less than T closed on the answers, not on its deadline."""
J = 30.0
"""The join window (``--join-timeout``)."""
STAGES = ("AdvertiseKeys", "ShareKeys", "MaskedInputCollection", "Unmasking")
"""The rounds of a session with the default (unauthenticated) options."""
GRPC_LOG = re.compile(r"ssl_transport_security|Handshake failed|add_port\.cc|^[EIW]\d{4} ", re.M)
"""What gRPC's C core writes to stderr when its logging is not silenced."""


def cli_config(n: int, *options: str) -> SecAggConfig:
    """The configuration `securefl serve --clients n --dim D` (and `join`) builds."""
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    return secagg_config(
        parser.parse_args(["serve", "--clients", str(n), "--dim", str(D), *options])
    )


@dataclass
class Served:
    """A `securefl serve` process."""

    proc: subprocess.Popen[str]
    port: int
    json_path: Path
    started: float

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def records(self) -> list[dict]:
        return json.loads(self.json_path.read_text()) if self.json_path.exists() else []

    def finish(self, timeout: float) -> tuple[str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return out, err


def serve_command(pki: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "securefl", "serve", "--pki", str(pki), *options]


@pytest.fixture
def server(pki: Path, tmp_path: Path):
    """Start `securefl serve --clients n --dim D` with the other session options at
    their defaults; returns once it listens."""
    started: list[Served] = []

    def start(
        n: int,
        *options: str,
        rounds: int = 1,
        round_timeout: float = T,
        join_timeout: float = J,
        name: str = "server",
    ) -> Served:
        port_file, json_path = tmp_path / f"{name}.port", tmp_path / f"{name}.json"
        command = serve_command(pki, "--clients", str(n), "--dim", str(D), *options)
        command += ["--address", "127.0.0.1:0", "--port-file", str(port_file)]
        command += ["--json", str(json_path), "--rounds", str(rounds)]
        command += ["--round-timeout", str(round_timeout), "--join-timeout", str(join_timeout)]
        now = time.monotonic()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() - now < J, "the server did not start"
            time.sleep(0.05)
        served = Served(proc, int(port_file.read_text()), json_path, now)
        started.append(served)
        return served

    yield start
    for served in started:
        if served.proc.poll() is None:
            served.proc.kill()
        served.proc.communicate()


def join_command(
    pki: Path, target: str, cid: int, n: int, tmp_path: Path, *options: str
) -> list[str]:
    """`securefl join` for client ``cid`` with update_for(0, cid, 1)'s update and weight."""
    update, weight = update_for(0, cid, 1, D)
    np.save(tmp_path / f"update-{cid}.npy", update)
    command = [sys.executable, "-m", "securefl", "join", "--pki", str(pki), "--id", str(cid)]
    command += ["--server", target, "--clients", str(n), "--dim", str(D)]
    command += ["--update", str(tmp_path / f"update-{cid}.npy"), "--weight", str(weight)]
    command += ["--out", str(tmp_path / f"join-mean-{cid}.npy"), *options]
    return command


def popen(command: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_rounds_did_not_wait(record: dict, deadline: float, waited: str | None = None) -> None:
    """Every round of the session closed before ``deadline`` (none waited for it),
    except ``waited``, which waited for it once: at least the deadline, less than two."""
    assert record["round_seconds"], record
    for stage, (collecting, _closing) in record["round_seconds"].items():
        if stage == waited:
            assert deadline <= collecting < 2 * deadline, (stage, collecting)
        else:
            assert collecting < deadline, (stage, collecting)
    if waited is None:
        assert record["seconds"] < deadline, record


# ---- 1. the defaults survive one failure in every round ----------------------------------


@pytest.mark.parametrize("n", [4, 5, 10])
def test_defaults_survive_a_client_killed_in_each_round_and_restarted(
    n: int, server, clients, tmp_path: Path
) -> None:
    """Four sessions with the defaults; in session s one client is SIGKILLed as the
    message of round s reaches it (AdvertiseKeys, ShareKeys, MaskedInputCollection,
    Unmasking) and restarted at once. Every session completes with the weighted mean
    of those whose masked input is in the sum (everyone but the victim, and in the
    Unmasking session everyone); a restarted client takes its seat in the next session;
    no round waits for its deadline T (the dead client's connection closed), so every
    session takes less than T."""
    served = server(n, rounds=4)
    config = cli_config(n)
    victim = {s: s % n for s in range(1, 5)}  # session -> the client killed in it
    dies = {v: [s, STAGES[s - 1]] for s, v in victim.items()}
    procs = {
        i: clients(
            i, served.target, config=config, rounds=4, seed=n, die_at=dies.get(i), timeout=3 * T
        )
        for i in range(n)
    }
    restarted = {}
    for s in range(1, 5):
        v = victim[s]
        assert procs[v].wait(timeout=J + 4 * T) == -signal.SIGKILL
        if s < 4:  # back for the remaining sessions, with the same id and certificate
            restarted[v] = clients(
                v,
                served.target,
                config=config,
                rounds=4 - s,
                first_round=s + 1,
                seed=n,
                timeout=3 * T,
            )
    reports = {i: finish(p, timeout=J + 4 * T) for i, p in procs.items() if i not in dies}
    reports.update({(v, "again"): finish(p, timeout=J + 4 * T) for v, p in restarted.items()})
    out, err = served.finish(timeout=J)
    assert served.proc.returncode == 0, out + err
    records = served.records()
    assert [r["session"] for r in records] == [1, 2, 3, 4]
    for s, record in enumerate(records, 1):
        everyone = set(range(n))
        contributors = everyone if STAGES[s - 1] == "Unmasking" else everyone - {victim[s]}
        assert record["stage"] == "Completed", record
        assert record["contributors"] == sorted(contributors), record
        assert_rounds_did_not_wait(record, T)
        for cid in contributors - {victim[s]}:
            mean = np.load(tmp_path / f"mean-{cid}-{s}.npy")
            assert_secagg_mean(config, mean, sorted(contributors), seed=n, round_=s)
    for key, report in reports.items():
        assert all("error" not in r for r in report), (key, report)


def test_three_clients_are_refused_by_default_and_a_kill_aborts_at_once(
    pki: Path, server, clients, tmp_path: Path
) -> None:
    """n = 3 cannot survive a dropout with t >= 2 (one loss leaves a client one share
    holder): `serve` and `join` refuse the defaults at start (exit 2) with the reason
    and the smallest setting that would. Asked explicitly (--threshold 2), a kill at
    ShareKeys aborts the session at once, well before T: both survivors get the reason
    (exit 3), and the server goes on to session 2, says whom it waits for, and exits 1
    after its idle timeout I instead of waiting forever."""
    refused = subprocess.run(
        serve_command(pki, "--clients", "3", "--dim", str(D)),
        capture_output=True,
        text=True,
        timeout=J,
    )
    assert refused.returncode == 2
    assert "tolerate no dropout" in refused.stderr and "--clients 4" in refused.stderr
    join = join_command(pki, "127.0.0.1:1", 0, 3, tmp_path)
    refused = subprocess.run(join, capture_output=True, text=True, timeout=J)
    assert refused.returncode == 2 and "--clients 4" in refused.stderr, refused.stderr

    idle = 3.0
    served = server(3, "--threshold", "2", "--idle-timeout", str(idle), rounds=2)
    config = cli_config(3, "--threshold", "2")
    procs = {
        i: clients(i, served.target, config=config, die_at=[1, "ShareKeys"] if i == 1 else None)
        for i in range(3)
    }
    for i in (0, 2):
        (record,) = finish(procs[i], timeout=J + T)
        assert procs[i].returncode == 3
        assert record["error"] == "ProtocolAbort"
        assert "only 2 clients shared keys; need at least t + 1 = 3" in record["message"]
    aborted = time.monotonic()
    out, err = served.finish(timeout=idle + T)
    assert served.proc.returncode == 1
    assert time.monotonic() - aborted < idle + T
    (record,) = served.records()
    assert record["stage"] == "Aborted" and record["seconds"] < T
    assert "session 2: waiting for clients 0, 1, 2" in out
    assert f"no client joined session 2 within {idle:g} s" in err


# ---- 2. a stall costs one deadline; a client that gave up and came back takes its seat --


@pytest.mark.parametrize(
    ("n", "stage"), [(4, "ShareKeys"), (5, "MaskedInputCollection"), (10, "Unmasking")]
)
def test_a_stopped_client_costs_its_round_one_deadline(
    n: int, stage: str, server, clients, tmp_path: Path
) -> None:
    """Client 0 is stopped with SIGSTOP as the message of ``stage`` reaches it: its
    connection stays open and nothing answers, so that round (and only that one)
    waits for its deadline T_s, then closes without it; the others receive the mean
    of the contributors. Resumed after the server has gone, it fails at once."""
    stall = 3.0
    served = server(n, round_timeout=stall)
    config = cli_config(n)
    procs = {
        i: clients(i, served.target, config=config, seed=7, stop_at=[1, stage] if i == 0 else None)
        for i in range(n)
    }
    contributors = list(range(n)) if stage == "Unmasking" else list(range(1, n))
    for i in range(1, n):
        (record,) = finish(procs[i], timeout=J + 4 * stall)
        assert procs[i].returncode == 0 and record["contributors"] == contributors
        assert_secagg_mean(config, np.load(tmp_path / f"mean-{i}-1.npy"), contributors, 7, 1)
    out, err = served.finish(timeout=J)
    assert served.proc.returncode == 0, out + err
    (record,) = served.records()
    assert record["contributors"] == contributors
    assert_rounds_did_not_wait(record, stall, waited=stage)
    procs[0].send_signal(signal.SIGCONT)
    resumed = time.monotonic()
    (record,) = finish(procs[0], timeout=J)
    assert time.monotonic() - resumed < stall
    assert procs[0].returncode == 3 and record["error"] == "ServiceError"


def test_a_client_that_gave_up_joining_takes_its_seat_when_it_comes_back(
    pki: Path, server, tmp_path: Path
) -> None:
    """`securefl join --id 1 --join-timeout 2` alone gives up (exit 4, saying that no
    session started); the five real clients then join and client 1 takes its seat: all
    exit 0 with the mean of five, and the session takes less than T."""
    served = server(5)
    early = subprocess.run(
        join_command(pki, served.target, 1, 5, tmp_path, "--join-timeout", "2"),
        capture_output=True,
        text=True,
        timeout=J,
    )
    assert early.returncode == 4
    assert "no session started within 2 s" in early.stderr, early.stderr
    procs = [popen(join_command(pki, served.target, i, 5, tmp_path)) for i in range(5)]
    for proc in procs:
        out, err = proc.communicate(timeout=J + 5 * T)
        assert proc.returncode == 0, err
        assert "mean of 5 clients" in out
    served.finish(timeout=J)
    (record,) = served.records()
    assert record["contributors"] == [0, 1, 2, 3, 4]
    assert_rounds_did_not_wait(record, T)
    config = cli_config(5)
    mean = np.load(tmp_path / "join-mean-1.npy")
    assert_secagg_mean(config, mean, range(5), seed=0, round_=1)


# ---- 4. errors that say what and where ----------------------------------------------------


def test_a_client_with_other_options_is_refused_naming_each_one(
    pki: Path, server, tmp_path: Path
) -> None:
    """Client 4 joins with --bits 24 --clip 2 against the defaults (32, 1): it is refused
    at the door (exit 4) with both options, its value and the server's; the server logs
    the refusal and does not wait out its join window J for client 4: the four others
    complete with their mean within J."""
    served = server(5)
    begun = time.monotonic()
    procs = {
        i: popen(
            join_command(
                pki,
                served.target,
                i,
                5,
                tmp_path,
                *(["--bits", "24", "--clip", "2"] if i == 4 else []),
            )
        )
        for i in range(5)
    }
    out, err = procs[4].communicate(timeout=J)
    assert procs[4].returncode == 4
    assert "--bits: this client 24, the server 32" in err, err
    assert "--clip: this client 2, the server 1" in err, err
    for i in range(4):
        out, err = procs[i].communicate(timeout=J + 5 * T)
        assert procs[i].returncode == 0, err
        assert "mean of 4 clients" in out
    assert time.monotonic() - begun < J
    out, err = served.finish(timeout=J)
    assert "refused client 4" in out and "--bits" in out, out
    # The banner in words: the parameters and the dropouts they survive, no reprs.
    assert "n = 5, t = 3, tolerates 1 dropout" in out and "object at 0x" not in out
    (record,) = served.records()
    assert record["contributors"] == [0, 1, 2, 3]
    assert_secagg_mean(cli_config(5), np.load(tmp_path / "join-mean-0.npy"), range(4), 0, 1)


def test_when_every_client_is_refused_the_server_says_so_and_exits(
    pki: Path, server, tmp_path: Path
) -> None:
    """Every client with --bits 24: each is refused at once (exit 4); the server names
    the refusals and, with nobody left to come, exits 1 after its idle timeout."""
    idle = 3.0
    served = server(4, "--idle-timeout", str(idle))
    procs = [
        popen(join_command(pki, served.target, i, 4, tmp_path, "--bits", "24")) for i in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=J)
        assert proc.returncode == 4 and "--bits: this client 24, the server 32" in err
    _, err = served.finish(timeout=idle + T)
    assert served.proc.returncode == 1
    assert "no client joined session 1 within 3 s" in err
    assert "refused: clients 0, 1, 2, 3" in err, err
    assert served.records() == []


def test_a_second_server_on_the_port_fails_at_start(
    pki: Path, server, clients, monkeypatch
) -> None:
    """A second `securefl serve` on the first one's address exits 2 at once naming the
    address in use; the clients all reach the first, whose session completes. gRPC's
    own lines stay silent even when the parent set GRPC_VERBOSITY (importing Flower
    does: it made this test fail in a full run)."""
    monkeypatch.setenv("GRPC_VERBOSITY", "error")
    served = server(4)
    begun = time.monotonic()
    second = subprocess.run(
        serve_command(pki, "--clients", "4", "--dim", str(D), "--address", served.target),
        capture_output=True,
        text=True,
        timeout=J,
    )
    assert time.monotonic() - begun < T
    assert second.returncode == 2
    assert f"{served.target} is already in use" in second.stderr, second.stderr
    assert not GRPC_LOG.search(second.stderr), second.stderr
    config = cli_config(4)
    procs = [clients(i, served.target, config=config) for i in range(4)]
    reports = [finish(proc) for proc in procs]
    assert [r[0]["contributors"] for r in reports] == [[0, 1, 2, 3]] * 4
    served.finish(timeout=J)
    assert served.proc.returncode == 0


def test_tls_failures_are_reported_in_seconds_with_their_cause(
    pki: Path, server, tmp_path: Path
) -> None:
    """Against a mutual-TLS server: a client certificate from another CA, no client
    certificate, a server certificate from a CA the client does not trust (each exit 4),
    and a key that does not match its certificate (exit 2, checked before connecting)
    each end within T (not after the 120 s join timeout) with the likely cause; neither
    side prints gRPC's own log lines."""
    served = server(4, "--idle-timeout", str(T))
    cert, key = str(pki / "client-0.pem"), str(pki / "client-0.key")
    cases = {
        "foreign": (
            [
                "--cert",
                str(pki / "foreign-client-0.pem"),
                "--key",
                str(pki / "foreign-client-0.key"),
            ],
            4,
            "another CA",
        ),
        "no-cert": ([], 4, "needs a client certificate"),
        "untrusted": (
            ["--ca", str(pki / "foreign-ca.pem"), "--cert", cert, "--key", key],
            4,
            "not signed by the CA",
        ),
        "mismatch": (
            ["--cert", cert, "--key", str(pki / "client-1.key")],
            2,
            "does not match the certificate",
        ),
    }
    begun = time.monotonic()
    procs = {}
    for name, (options, _, _) in cases.items():
        command = join_command(pki, served.target, 0, 4, tmp_path, *options)
        command.remove("--pki")
        command.remove(str(pki))
        if "--ca" not in options:
            command += ["--ca", str(pki / "ca.pem")]
        procs[name] = popen(command)
    for name, (_, code, cause) in cases.items():
        _, err = procs[name].communicate(timeout=J)
        assert procs[name].returncode == code, (name, err)
        assert cause in err, (name, err)
        assert not GRPC_LOG.search(err), (name, err)
    assert time.monotonic() - begun < T
    served.proc.terminate()
    _, err = served.finish(timeout=J)
    assert not GRPC_LOG.search(err), err


def test_no_server_is_reported_with_the_address(pki: Path, tmp_path: Path) -> None:
    """No server listening: `securefl join` says at once that it is waiting for the
    server, keeps trying for its join timeout, then exits 4 naming the address and
    "connection refused"."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        target = f"127.0.0.1:{probe.getsockname()[1]}"
    window = 2.0
    begun = time.monotonic()
    proc = popen(join_command(pki, target, 0, 4, tmp_path, "--join-timeout", str(window)))
    out, err = proc.communicate(timeout=J)
    elapsed = time.monotonic() - begun
    assert proc.returncode == 4
    assert f"waiting for the server at {target}" in out, out
    assert f"no server at {target}" in err and "connection refused" in err, err
    # It retries until its join timeout: its own clock starts after this one, and its
    # last wait may end a back-off step early, so allow it half a window of slack.
    assert window / 2 <= elapsed < window + T
    assert not GRPC_LOG.search(err), err


def test_clients_that_want_more_sessions_than_the_server_runs_are_told_at_once(
    pki: Path, server, tmp_path: Path
) -> None:
    """`serve --rounds 1` against four `join --rounds 2`: session 1 completes and every
    client writes its mean; each then learns within T, not after its 120 s join timeout,
    that no second session will come (exit 4), and no client sees a bare CANCELLED."""
    served = server(4)
    procs = [
        popen(join_command(pki, served.target, i, 4, tmp_path, "--rounds", "2")) for i in range(4)
    ]
    served.finish(timeout=J + 5 * T)
    ended = time.monotonic()
    (record,) = served.records()
    assert record["stage"] == "Completed"
    for proc in procs:
        out, err = proc.communicate(timeout=J + T)
        assert proc.returncode == 4, err
        assert "session 1: mean of 4 clients" in out
        told = ("session 1 is its last", "has run its 1 session", "the server has gone")
        assert any(words in err for words in told), err
        assert "CANCELLED" not in err
    assert time.monotonic() - ended < T
    assert_secagg_mean(cli_config(4), np.load(tmp_path / "join-mean-2.npy"), range(4), 0, 1)
