"""Distributed differential privacy over the network service (docs/SERVICE.md).

Each client encodes its update with the DP plan (clip, weight, rotation, rounding, its
share of the noise) using the session's nonce as the public round seed; the server
unmasks the ring sum and decodes the noisy mean, and so does every client from the
result frame. The server thread and client processes are those of test_sessions.py.
"""

from __future__ import annotations

import argparse
import functools
import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from securefl.cli.service import add_commands, dp_plan
from securefl.cli.service import secagg_config as cli_config
from securefl.dp import DPConfig, DPPlan, calibrate, secagg_config
from securefl.errors import ConfigError, InvalidMessage
from securefl.secagg.config import SecAggConfig
from securefl.secagg.messages import Stage
from securefl.transports.service import AggregationClient, ClientTLS, SecAggSession, framing

from .client_proc import update_for
from .conftest import finish

N = 5
D = 1000
MAX_WEIGHT = 10
# dropout_rate 0.2 of 5 clients: the noise is calibrated for 5 - 1 = 4 survivors.
DP = {
    "epsilon": 10.0,
    "delta": 1e-5,
    "clip": 1.0,
    "num_clients": N,
    "dropout_rate": 0.2,
    "bits": 20,
}
# corruption_rate 0.1 is the command line's default (--corruption-rate): c = 0 of 4
# neighbours at n = 5, so t = 2 is allowed.
SECAGG = {"threshold": 2, "max_weight": MAX_WEIGHT, "corruption_rate": 0.1}


@functools.cache
def plan_for(**changes: object) -> DPPlan:
    return calibrate(DPConfig(**{**DP, **changes}), D)


def saved(plan: DPPlan, path: Path) -> str:
    """The plan pickled for client_proc.py (the plan is public)."""
    path.write_bytes(pickle.dumps(plan))
    return str(path)


def dp_session(plan: DPPlan) -> SecAggSession:
    return SecAggSession(secagg_config(plan, **SECAGG), dp=plan)


def clipped_mean(seed: int, round_: int, contributors) -> tuple[np.ndarray, float]:
    """The plain weighted mean of the contributors' L2-clipped updates (the quantity
    DP noises), and their total public weight sum n_k / W."""
    total = np.zeros(D)
    weight = 0.0
    for c in contributors:
        update, w = update_for(seed, c, round_, D)
        norm = float(np.linalg.norm(update))
        total += (w / MAX_WEIGHT) * update * min(1.0, DP["clip"] / norm)
        weight += w / MAX_WEIGHT
    return total / weight, weight


def test_dp_sessions_give_the_same_noisy_mean_everywhere(serve, clients, tmp_path) -> None:
    """Five client processes, two DP sessions: every client decodes the same noisy
    mean as the server, bit for bit; its error from the plain mean has the plan's noise."""
    plan = plan_for()
    assert plan.config.min_survivors == N - 1
    running = serve(dp_session(plan), sessions=2)
    path = saved(plan, tmp_path / "plan.pickle")
    procs = [
        clients(i, running.target, dp_plan=path, secagg=SECAGG, rounds=2, seed=3) for i in range(N)
    ]
    reports = [finish(p) for p in procs]
    running.join()
    outcomes = running.server.outcomes
    assert [o.stage for o in outcomes] == [Stage.COMPLETED] * 2
    for r, outcome in enumerate(outcomes, 1):
        assert outcome.contributors == tuple(range(N))
        assert outcome.dp is not None and outcome.dp.survivors == N
        for cid in range(N):
            assert reports[cid][r - 1]["contributors"] == list(range(N))
            mean = np.load(tmp_path / f"mean-{cid}-{r}.npy")
            np.testing.assert_array_equal(mean, outcome.dp.mean)
        want, weight = clipped_mean(3, r, range(N))
        assert outcome.dp.total_weight == pytest.approx(weight)
        error = outcome.dp.mean - want
        # Per coordinate of the sum (the rotation is orthogonal): each survivor's noise,
        # client_noise_std, and its unbiased rounding error, at most gamma / 2 in std.
        noise = plan.client_noise_std * math.sqrt(N) / weight
        rounding = plan.gamma / 2 * math.sqrt(N) / weight
        assert np.max(np.abs(error)) <= 6 * math.hypot(noise, rounding)
        # Noise was added: the error is the noise's size, far above rounding alone.
        assert rounding < 0.01 * noise
        assert 0.85 * noise <= float(np.std(error)) <= 1.15 * math.hypot(noise, rounding)


def test_too_few_survivors_for_the_noise_abort_without_a_result(serve, clients, tmp_path) -> None:
    """Two of five clients die before sending their masked input: SecAgg (t = 2) could
    unmask the three others' sum, but the noise is calibrated for four survivors, so the
    session's min_survivors aborts it before unmasking: nothing is unmasked or kept, and
    every live client gets the abort and its reason."""
    plan = plan_for()
    running = serve(dp_session(plan), round_timeout=1.5)
    path = saved(plan, tmp_path / "plan.pickle")
    die = {0: [1, "MaskedInputCollection"], 1: [1, "MaskedInputCollection"]}
    procs = {
        i: clients(i, running.target, dp_plan=path, secagg=SECAGG, die_at=die.get(i))
        for i in range(N)
    }
    reports = {i: finish(p) for i, p in procs.items()}
    running.join()
    (outcome,) = running.server.outcomes
    assert outcome.stage is Stage.ABORTED
    assert outcome.dp is None and outcome.result is None
    assert outcome.contributors == ()  # no survivor set was ever unmasked
    assert "min_survivors=4" in (outcome.abort_reason or "")
    for i in (0, 1):
        assert procs[i].returncode == -9
    for i in range(2, N):
        (record,) = reports[i]
        assert record["error"] == "ProtocolAbort"
        assert "min_survivors=4" in record["message"]
        assert procs[i].returncode == 3


def test_secagg_session_checks_the_plan_against_its_config() -> None:
    plan = plan_for()
    config = secagg_config(plan, **SECAGG)
    assert SecAggSession(config, dp=plan).dp is plan
    floats = SecAggConfig(N, 2, plan.padded_dimension, bits=20, max_weight=MAX_WEIGHT)
    with pytest.raises(ConfigError, match="ring_input"):
        SecAggSession(floats, dp=plan)
    for field, value in (("dimension", D), ("bits", 24), ("num_clients", N + 1)):
        options = {**SECAGG, "num_clients": N, "dimension": plan.padded_dimension, "bits": 20}
        wrong = SecAggConfig(**{**options, field: value}, ring_input=True)
        with pytest.raises(ConfigError, match=field):
            SecAggSession(wrong, dp=plan)
    # Right shape, but SecAgg would unmask fewer survivors than the noise assumes.
    options = {**SECAGG, "num_clients": N, "dimension": plan.padded_dimension, "bits": 20}
    for minimum in (None, plan.config.min_survivors - 1):
        lax = SecAggConfig(**options, ring_input=True, min_survivors=minimum)
        with pytest.raises(ConfigError, match="min_survivors"):
            SecAggSession(lax, dp=plan)


def test_dp_client_refuses_ckks_a_mismatched_config_and_bad_updates(pki) -> None:
    plan = plan_for()
    tls = ClientTLS.from_files(
        str(pki / "ca.pem"), str(pki / "client-0.pem"), str(pki / "client-0.key")
    )
    with pytest.raises(ConfigError, match="not CKKS"):
        AggregationClient("127.0.0.1:1", 0, tls, ckks_context=object(), dp=plan)
    plain = SecAggConfig(N, 2, D, max_weight=MAX_WEIGHT)
    with pytest.raises(ConfigError, match="ring_input"):
        AggregationClient("127.0.0.1:1", 0, tls, config=plain, dp=plan)
    # A bad update or weight is refused before the client joins (nothing listens here).
    client = AggregationClient("127.0.0.1:1", 0, tls, config=secagg_config(plan, **SECAGG), dp=plan)
    with client:
        with pytest.raises(ValueError, match="the DP plan"):
            client.aggregate(np.zeros(plan.padded_dimension))
        with pytest.raises(ValueError, match="NaN"):
            client.aggregate(np.full(D, np.nan))
        with pytest.raises(ValueError, match="weight"):
            client.aggregate(np.zeros(D), weight=MAX_WEIGHT + 1)


def test_a_ring_input_result_travels_as_its_ring_sum() -> None:
    """A DP session's result is SecAgg's ring sum, sent as ring elements and given back
    as the same integers; a value outside Z_2^b, or the sum sent as float64, is refused."""
    plan = plan_for()
    config = secagg_config(plan, **SECAGG)
    ring = (np.arange(plan.padded_dimension) * 1000).astype(np.uint32)
    result = framing.Result(ring.astype(np.float64), 37, (0, 1, 2, 3), (4,), ring)
    payload = b"".join(bytes(p) for p in framing.encode_result(result))
    decoded = framing.decode_result(memoryview(payload), config)
    assert decoded.ring_sum is not None
    np.testing.assert_array_equal(decoded.ring_sum, ring)
    assert (decoded.total_weight, decoded.contributors) == (37, (0, 1, 2, 3))
    too_big = ring.copy()
    too_big[7] = 2**config.bits
    parts = framing.encode_result(
        framing.Result(ring.astype(np.float64), 37, (0, 1, 2, 3), (), too_big)
    )
    with pytest.raises(InvalidMessage, match=r"\[0, 2\^20\)"):
        framing.decode_result(memoryview(b"".join(bytes(p) for p in parts)), config)
    parts = framing.encode_result(framing.Result(ring.astype(np.float64), 37, (0, 1, 2, 3), ()))
    with pytest.raises(InvalidMessage, match="sent as its ring sum"):
        framing.decode_result(memoryview(b"".join(bytes(p) for p in parts)), config)


def parse(command: str, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args([command, *argv])


CLI_SESSION = ["--protocol", "secagg", "--clients", str(N), "--threshold", "2", "--dim", str(D)]
CLI_SESSION += ["--max-weight", str(MAX_WEIGHT), "--bits", "20"]
CLI_DP = ["--dp-epsilon", "10", "--dp-dropout", "0.2"]


def test_cli_options_build_the_plan_and_its_config() -> None:
    """serve and join compute the same plan as the Python API, and its ring-input
    configuration with the session's graph and threshold."""
    for command in ("serve", "join"):
        extra = ["--id", "0", "--update", "u.npy"] if command == "join" else []
        args = parse(command, *CLI_SESSION, *CLI_DP, *extra)
        plan = dp_plan(args)
        assert plan is not None and plan.digest() == plan_for().digest()
        assert cli_config(args, plan) == secagg_config(plan_for(), **SECAGG)
    assert dp_plan(parse("serve", *CLI_SESSION)) is None
    args = parse("serve", *CLI_SESSION, "--dp-epsilon", "3", "--dp-mechanism", "skellam")
    args.dp_rounds, args.dp_clip = 4, 2.0
    plan = dp_plan(args)
    assert plan is not None
    assert (plan.config.mechanism, plan.config.rounds, plan.config.clip) == ("skellam", 4, 2.0)
    # The default --dp-dropout plans for 10 % of the clients and at least one: 4 of 5.
    assert plan.config.min_survivors == N - 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--protocol", "ckks", "--dim", "10", "--dp-epsilon", "1"], "not CKKS"),
        (["--clients", "5", "--dim", "100000", "--bits", "8", "--dp-epsilon", "0.1"], "bits"),
    ],
)
def test_cli_refuses_dp_it_cannot_run(pki, capsys, argv: list[str], message: str) -> None:
    """DP with CKKS, or a target the ring cannot meet: exit status 2 and the reason."""
    args = parse("serve", "--pki", str(pki), "--ckks-context", str(pki / "ca.pem"), *argv)
    assert args.handler(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("securefl serve: error:") and message in err


def test_securefl_join_with_another_plan_is_refused_at_join(serve, pki, tmp_path) -> None:
    """Five `securefl join --dp-epsilon` processes; client 0 asks for epsilon 5 instead
    of 10: refused at join (FAILED_PRECONDITION, exit 4), while the four others (the
    plan's worst case) complete and write the server's noisy mean."""
    running = serve(dp_session(plan_for()), join_timeout=2.0)
    procs = []
    for i in range(N):
        update, _ = update_for(6, i, 1, D)
        np.save(tmp_path / f"u{i}.npy", update)
        command = [sys.executable, "-m", "securefl", "join", "--pki", str(pki), "--id", str(i)]
        command += ["--server", running.target, "--update", str(tmp_path / f"u{i}.npy")]
        command += ["--out", str(tmp_path / f"m{i}.npy"), "--timeout", "20", *CLI_SESSION]
        command += ["--dp-epsilon", "5" if i == 0 else "10", "--dp-dropout", "0.2"]
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    results = [proc.communicate(timeout=60) for proc in procs]
    running.join()
    assert procs[0].returncode == 4
    assert b"FAILED_PRECONDITION" in results[0][1] and b"DP plan differs" in results[0][1]
    (outcome,) = running.server.outcomes
    assert outcome.stage is Stage.COMPLETED
    assert outcome.members == outcome.contributors == (1, 2, 3, 4)
    for i in range(1, N):
        assert procs[i].returncode == 0, results[i][1].decode()
        np.testing.assert_array_equal(np.load(tmp_path / f"m{i}.npy"), outcome.dp.mean)
