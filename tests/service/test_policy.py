"""A client's own policy (docs/SERVICE.md, "Client policy"): a session below it is refused
with a PolicyError (or, for what the server reports at the end, a ProtocolAbort) that
names the parameter with the session's and the policy's values; a session exactly at
the policy runs."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from securefl.cli.service import add_commands, client_policy
from securefl.errors import ConfigError, ProtocolAbort, ServiceError
from securefl.secagg.config import GraphKind, SecAggConfig
from securefl.secagg.messages import Stage
from securefl.transports.service import (
    AggregationClient,
    ClientPolicy,
    ClientTLS,
    PolicyError,
    SecAggSession,
    framing,
)

from .conftest import enrolled_keys, in_threads, join_all


def tls_of(pki: Path, cid: int) -> ClientTLS:
    return ClientTLS.from_files(
        str(pki / "ca.pem"), str(pki / f"client-{cid}.pem"), str(pki / f"client-{cid}.key")
    )


def harary(security_bits: int) -> SecAggConfig:
    """SecAgg+, n = 40, k = 10, corruption rate 0.1: t = 5 is allowed at sigma = 20 or 40."""
    return SecAggConfig(
        40,
        5,
        10,
        graph=GraphKind.HARARY,
        degree=10,
        corruption_rate=0.1,
        security_bits=security_bits,
    )


# (parameter, policy, a configuration exactly at it, one below it, what the message shows)
CASES = [
    (
        "threshold",
        ClientPolicy(min_threshold=4),
        SecAggConfig(6, 4, 10),
        SecAggConfig(6, 3, 10),
        "the session has t=3, this client's policy requires t >= 4 (min_threshold)",
    ),
    (
        "authenticated",
        ClientPolicy(require_authenticated=True),
        SecAggConfig(5, 3, 10, authenticated=True),
        SecAggConfig(5, 3, 10),
        "the session has authenticated=False, this client's policy requires the "
        "authenticated mode (require_authenticated)",
    ),
    (
        "corruption_rate",
        ClientPolicy(min_corruption_rate=0.2),
        SecAggConfig(10, 3, 10, corruption_rate=0.2),
        SecAggConfig(10, 3, 10, corruption_rate=0.1),
        "the session has corruption_rate=0.1 (t=3 tolerates c=1 corrupt neighbours), this "
        "client's policy requires corruption_rate >= 0.2 (min_corruption_rate)",
    ),
    (
        "security_bits",
        ClientPolicy(min_corruption_rate=0.1, min_security_bits=40),
        harary(40),
        harary(20),
        "the session has security_bits=20, this client's policy requires security_bits >= 40 "
        "(min_security_bits)",
    ),
    (
        "dimension",
        ClientPolicy(max_dimension=100),
        SecAggConfig(5, 3, 100),
        SecAggConfig(5, 3, 101),
        "the session has d=101, this client's policy requires d <= 100 (max_dimension)",
    ),
    (
        "min_survivors",
        ClientPolicy(min_survivors=4),
        SecAggConfig(5, 3, 10, min_survivors=4),
        SecAggConfig(5, 3, 10, min_survivors=3),
        "the session has min_survivors=3, this client's policy requires min_survivors >= 4",
    ),
]


@pytest.mark.parametrize(
    ("parameter", "policy", "at", "below", "shown"), CASES, ids=[c[0] for c in CASES]
)
def test_each_policy_parameter_refuses_below_and_accepts_at(
    pki, parameter: str, policy: ClientPolicy, at: SecAggConfig, below: SecAggConfig, shown: str
) -> None:
    """Checked when the client is created, before it connects (nothing listens at the
    target): the configuration is the only one the server can run with it (digest)."""
    tls = tls_of(pki, 0)
    AggregationClient("127.0.0.1:1", 0, tls, config=at, policy=policy).close()
    with pytest.raises(PolicyError) as info:
        AggregationClient("127.0.0.1:1", 0, tls, config=below, policy=policy)
    assert info.value.parameter == parameter
    assert str(info.value) == f"{parameter}: {shown}"
    assert isinstance(info.value, ConfigError)


def test_min_survivors_refuses_a_configuration_without_one(pki) -> None:
    with pytest.raises(PolicyError, match="min_survivors: the session has no min_survivors"):
        AggregationClient(
            "127.0.0.1:1",
            0,
            tls_of(pki, 0),
            config=SecAggConfig(5, 3, 10),
            policy=ClientPolicy(min_survivors=4),
        )


def test_ckks_policy_refuses_what_ckks_cannot_give_and_too_long_updates(pki) -> None:
    """CKKS has no authenticated mode and tolerates no client colluding with the
    server: a policy that asks for either is refused at once; an update longer than
    max_dimension is refused before the client joins."""
    tls = tls_of(pki, 0)
    for policy, parameter in (
        (ClientPolicy(require_authenticated=True), "authenticated"),
        (ClientPolicy(min_corruption_rate=0.1), "corruption_rate"),
    ):
        with pytest.raises(PolicyError) as info:
            AggregationClient("127.0.0.1:1", 0, tls, ckks_context=object(), policy=policy)
        assert info.value.parameter == parameter and "CKKS" in str(info.value)
    client = AggregationClient(
        "127.0.0.1:1", 0, tls, ckks_context=object(), policy=ClientPolicy(max_dimension=8)
    )
    with client, pytest.raises(PolicyError, match=r"d=9, this client's policy requires d <= 8"):
        client.aggregate(np.zeros(9))


@pytest.mark.parametrize(
    "fields",
    [
        {"min_threshold": 1},
        {"min_corruption_rate": 1.0},
        {"min_corruption_rate": True},
        {"max_dimension": 0},
        {"min_survivors": True},
        {"min_contributors": 1},
    ],
)
def test_policy_fields_are_checked(fields: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(fields))):
        ClientPolicy(**fields)


# Authenticated SecAgg, n = 5, corruption_rate 0.2 (c = 1: 2t > 4 + 1 needs t = 3).
AT_POLICY = SecAggConfig(
    5, 3, 30, max_weight=10, authenticated=True, corruption_rate=0.2, min_survivors=5
)
POLICY = ClientPolicy(
    min_threshold=3,
    min_corruption_rate=0.2,
    require_authenticated=True,
    max_dimension=30,
    min_survivors=5,
    min_contributors=5,
)


def authenticated_hospitals(
    target: str, pki: Path, config: SecAggConfig, policy: ClientPolicy | None
) -> dict[int, object]:
    """Clients 0-4: client c sends 0.1 * c with weight c + 1; its result or error."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    keys = {i: k for i, k in enrolled_keys(pki).items() if i < 5}
    results: dict[int, object] = {}

    def hospital(cid: int) -> None:
        raw = bytes.fromhex((pki / f"client-{cid}.ed25519").read_text())
        client = AggregationClient(
            target,
            cid,
            tls_of(pki, cid),
            config=config,
            identity_key=Ed25519PrivateKey.from_private_bytes(raw),
            identity_public_keys=keys,
            timeout=20,
            threads=1,
            **({} if policy is None else {"policy": policy}),
        )
        with client:
            try:
                results[cid] = client.aggregate(np.full(30, 0.1 * cid), weight=cid + 1)
            except (ProtocolAbort, ServiceError) as exc:
                results[cid] = exc

    join_all(in_threads(hospital, range(5)))
    return results


def test_a_session_exactly_at_the_policy_completes(serve, pki) -> None:
    """Every parameter of the policy at its bound: the session runs and every client
    receives the weighted mean."""
    keys = {i: k for i, k in enrolled_keys(pki).items() if i < 5}
    running = serve(SecAggSession(AT_POLICY, keys), round_timeout=5.0)
    results = authenticated_hospitals(running.target, pki, AT_POLICY, POLICY)
    running.join()
    (outcome,) = running.server.outcomes
    assert outcome.stage is Stage.COMPLETED
    want = sum(0.1 * c * (c + 1) for c in range(5)) / sum(c + 1 for c in range(5))
    for cid in range(5):
        np.testing.assert_allclose(results[cid].weighted_mean, want, atol=1e-6)
        assert results[cid].contributors == (0, 1, 2, 3, 4)


@pytest.mark.parametrize("authenticated", [False, True], ids=["complete-graph", "authenticated"])
def test_a_result_that_names_other_contributors_is_refused(
    serve, pki, monkeypatch, authenticated: bool
) -> None:
    """A deviating server unmasks the sum of all five clients but reports client 0 as
    dropped (passing a sum off as that of fewer clients, or one client's exclusion off as
    its dropout): every client refuses the result, which contradicts the survivor set it
    was shown (client 0: the result omits it)."""
    config = dataclasses.replace(AT_POLICY, authenticated=authenticated, min_survivors=None)
    keys = {i: k for i, k in enrolled_keys(pki).items() if i < 5}
    running = serve(SecAggSession(config, keys if authenticated else None), round_timeout=5.0)
    honest = framing.encode_result

    def lying(result: framing.Result) -> list:
        forged = dataclasses.replace(
            result, contributors=result.contributors[1:], dropped=(result.contributors[0],)
        )
        return honest(forged)

    monkeypatch.setattr(framing, "encode_result", lying)
    results = authenticated_hospitals(running.target, pki, config, None)
    running.join()
    assert running.server.outcomes[0].stage is Stage.COMPLETED  # the server has the sum
    for cid in range(5):
        assert isinstance(results[cid], ProtocolAbort), (cid, results[cid])
        if cid == 0:
            assert "omits this client (0)" in results[cid].reason
        else:
            assert "sorted, repeats or also names dropouts" not in results[cid].reason
            assert "names 4 contributors, the survivor set this client was shown has 5" in (
                results[cid].reason
            )


def test_a_result_below_min_survivors_is_refused() -> None:
    """What the server reports at the end is checked too: fewer contributors than the
    policy's min_survivors or min_contributors, with both counts in the reason."""
    policy = ClientPolicy(min_survivors=4, min_contributors=3)
    policy.check_contributors((0, 1, 2, 3), 7)
    with pytest.raises(ProtocolAbort, match="min_survivors: the server's result has 3 "):
        policy.check_contributors((0, 1, 2), 7)
    with pytest.raises(ProtocolAbort, match=r"min_contributors: .* requires at least 3"):
        policy.check_contributors((0, 1), 7)


def parse_join(*argv: str):
    import argparse

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["join", "--id", "0", "--update", "u.npy", *argv])


def test_join_policy_options() -> None:
    assert client_policy(parse_join()) == ClientPolicy()  # defaults: the library's rules
    args = parse_join(
        "--min-threshold",
        "4",
        "--min-corruption-rate",
        "0.2",
        "--min-security-bits",
        "60",
        "--require-authenticated",
        "--max-dim",
        "1000",
        "--min-survivors",
        "8",
        "--min-clients",
        "3",
    )
    assert client_policy(args) == ClientPolicy(
        min_threshold=4,
        min_corruption_rate=0.2,
        min_security_bits=60,
        require_authenticated=True,
        max_dimension=1000,
        min_survivors=8,
        min_contributors=3,
    )


def test_securefl_join_below_its_policy_exits_2_naming_the_parameter(pki, tmp_path) -> None:
    """`securefl join --threshold 3 --min-threshold 4`: refused before it connects
    (nothing listens at --server), exit 2, the parameter and both values on stderr."""
    np.save(tmp_path / "u.npy", np.zeros(10))
    command = [sys.executable, "-m", "securefl", "join", "--pki", str(pki), "--id", "0"]
    command += ["--server", "127.0.0.1:1", "--update", str(tmp_path / "u.npy")]
    command += ["--protocol", "secagg", "--clients", "5", "--dim", "10", "--threshold", "3"]
    done = subprocess.run([*command, "--min-threshold", "4"], capture_output=True, timeout=60)
    assert done.returncode == 2
    assert (
        b"securefl join: refused by this client's policy: threshold: the session has t=3, "
        b"this client's policy requires t >= 4 (min_threshold)" in done.stderr
    )
