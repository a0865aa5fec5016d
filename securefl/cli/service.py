"""``securefl serve`` and ``securefl join``: the network service on the command line.

:func:`add_commands` registers both subcommands; their handlers import grpc (and
TenSEAL for CKKS) only when they run, so the rest of the CLI works without them.
Both sides take the same session options (``--protocol``, ``--clients``, ``--dim``,
...): the client checks the server's configuration by digest before doing any work.
``--dp-epsilon`` and the other ``--dp-*`` options add distributed differential privacy
(SecAgg / SecAgg+): both sides calibrate the same plan, and the server refuses a client
whose plan differs when it joins. ``join``'s policy options (``--min-threshold``,
``--require-authenticated``, ...) are the client's own floor, not session options: a
session below them is refused (:class:`~securefl.transports.service.policy.ClientPolicy`).

The parameters derived from the defaults survive one dropout in every round
(:func:`check_dropouts`): for n up to 10 a SecAgg+ session is planned for at least one
dropout, and a complete graph's default t is at most k - 1; where no allowed t does
(n <= 3), both commands refuse to start, naming the smallest setting that would.
gRPC's own log lines are silenced unless ``--verbose``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from securefl.secagg.defaults import (
    DEFAULT_CORRUPTION_RATE,
    DEFAULT_DROPOUT_RATE,
    planned_dropout_rate,
)

if TYPE_CHECKING:
    from securefl.dp import DPPlan
    from securefl.secagg.config import SecAggConfig
    from securefl.transports.service.policy import ClientPolicy
    from securefl.transports.service.server import SessionOutcome

__all__ = [
    "add_commands",
    "check_dropouts",
    "client_policy",
    "dp_plan",
    "quiet_grpc",
    "seats",
    "secagg_config",
]

EXIT_ABORTED = 3
EXIT_SERVICE = 4


def add_commands(sub: Any) -> None:
    """Register ``serve`` and ``join`` on an ``argparse`` subparsers object; each sets
    ``handler`` to a function of the parsed arguments returning the exit code."""
    serve = sub.add_parser(
        "serve",
        help="run an aggregation server (gRPC over TLS) for enrolled clients",
        description="Runs secure aggregation sessions back to back, one per training "
        "round, for the clients enrolled in the PKI. Start it first, then one "
        "`securefl join` per client.",
    )
    _session_args(serve)
    serve.add_argument("--address", default="127.0.0.1:7443", help="host:port (port 0: any)")
    serve.add_argument("--port-file", metavar="PATH", help="write the bound port here")
    serve.add_argument("--rounds", type=int, default=1, help="sessions to run (0: forever)")
    serve.add_argument("--round-timeout", type=float, default=30.0, help="seconds per round")
    serve.add_argument(
        "--join-timeout",
        type=float,
        default=60.0,
        help="seconds after the first join to wait for the other clients",
    )
    serve.add_argument(
        "--idle-timeout",
        type=float,
        default=600.0,
        help="seconds a session waits for its first client before the server gives up "
        "and exits 1 (0: wait forever)",
    )
    serve.add_argument(
        "--verbose", action="store_true", help="also print gRPC's own log lines (its C core)"
    )
    serve.add_argument("--pki", metavar="DIR", help="ca.pem, server.pem/.key, enrollment.json")
    serve.add_argument("--cert", help="server certificate (PEM)")
    serve.add_argument("--key", help="server private key (PEM)")
    serve.add_argument("--client-ca", help="CA of client certificates: mutual TLS")
    serve.add_argument(
        "--no-mutual-tls",
        action="store_true",
        help="accept clients without certificates (authenticated SecAgg mode only)",
    )
    serve.add_argument("--enrollment", help="JSON: enrolled ids and identity public keys")
    serve.add_argument(
        "--init-pki",
        metavar="DIR",
        help="create a test CA, server and client certificates, identity keys (and CKKS "
        "contexts) for --clients ids in DIR, then exit",
    )
    serve.add_argument(
        "--pki-hosts",
        default="localhost,127.0.0.1",
        help="with --init-pki: names and addresses in the server certificate (comma-separated)",
    )
    serve.add_argument("--json", metavar="PATH", help="write each session's outcome as JSON")
    serve.set_defaults(handler=_serve)

    join = sub.add_parser(
        "join",
        help="join aggregation sessions as a client (a hospital)",
        description="Connects to `securefl serve`, joins --rounds sessions, each with the "
        "update read from --update, and writes the aggregate to --out. In paths, {round} "
        "is replaced by the round number (1, 2, ...).",
    )
    _session_args(join)
    join.add_argument("--server", default="127.0.0.1:7443", help="the server's host:port")
    join.add_argument("--id", type=int, required=True, help="this client's enrolled id")
    join.add_argument("--update", required=True, help=".npy file of the update")
    join.add_argument("--weight", type=int, default=1, help="number of examples")
    join.add_argument("--out", help=".npy file for the weighted mean")
    join.add_argument("--rounds", type=int, default=1)
    join.add_argument("--timeout", type=float, default=120.0, help="seconds per exchange")
    join.add_argument("--join-timeout", type=float, default=None, help="seconds to wait to join")
    join.add_argument("--pki", metavar="DIR", help="ca.pem, client-<id>.pem/.key/.ed25519")
    join.add_argument("--ca", help="CA of the server certificate (PEM)")
    join.add_argument("--cert", help="client certificate (PEM)")
    join.add_argument("--key", help="client private key (PEM)")
    join.add_argument("--identity-key", help="Ed25519 identity key (hex), authenticated mode")
    join.add_argument("--enrollment", help="JSON: enrolled ids and identity public keys")
    join.add_argument("--server-name", help="name in the server certificate, if not the host")
    join.add_argument("--threads", type=int, default=None, help="masking threads (default: all)")
    join.add_argument(
        "--verbose", action="store_true", help="also print gRPC's own log lines (its C core)"
    )
    _policy_args(join)
    join.set_defaults(handler=_join)


def _policy_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "policy (this client's own requirements: a session below them is refused, naming "
        "the parameter; defaults: the library's rules only)"
    )
    g.add_argument(
        "--min-threshold", type=int, default=2, help="SecAgg: the smallest t accepted (2)"
    )
    g.add_argument(
        "--min-corruption-rate",
        type=float,
        default=0.0,
        help="SecAgg: the session must tolerate at least this fraction of clients colluding "
        "with the server (its --corruption-rate; 0). CKKS tolerates none: refused if > 0",
    )
    g.add_argument(
        "--min-security-bits",
        type=int,
        default=40,
        help="SecAgg+ with --min-corruption-rate > 0: the smallest sigma accepted (40)",
    )
    g.add_argument(
        "--require-authenticated",
        action="store_true",
        help="SecAgg: refuse a session without the authenticated mode (CKKS: always refused)",
    )
    g.add_argument(
        "--max-dim", type=int, default=None, help="the largest update or session d (no limit)"
    )
    g.add_argument(
        "--min-survivors",
        type=int,
        default=None,
        help="SecAgg: the session's min_survivors (with DP: the plan's n_min) must be at "
        "least this, and so must a result's contributors (none)",
    )


def _session_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("session (identical on the server and every client)")
    g.add_argument("--protocol", choices=["secagg", "secagg+", "ckks"], default="secagg+")
    g.add_argument("--clients", type=int, default=5, help="n, the most clients per session")
    g.add_argument("--dim", type=int, default=None, help="d, the update's length")
    g.add_argument("--threshold", type=int, default=None, help="t (default: n/2+1 or k/2+1)")
    g.add_argument("--degree", type=int, default=None, help="SecAgg+: k (default: from rates)")
    g.add_argument(
        "--dropout-rate",
        type=float,
        default=None,
        help="SecAgg+ without --degree: the dropout rate the graph is planned for (default: "
        f"{DEFAULT_DROPOUT_RATE:g}, and at least one client)",
    )
    g.add_argument(
        "--corruption-rate",
        type=float,
        default=DEFAULT_CORRUPTION_RATE,
        help="fraction of clients that may collude with the server: it sets the smallest "
        "allowed threshold (and, without --degree, the SecAgg+ graph)",
    )
    g.add_argument("--bits", type=int, default=32)
    g.add_argument("--clip", type=float, default=1.0)
    g.add_argument("--max-weight", type=int, default=1000)
    g.add_argument("--authenticated", action="store_true", help="sign with identity keys")
    g.add_argument(
        "--min-clients",
        type=int,
        default=2,
        help="CKKS: fewest contributions (server); every client refuses a result of fewer",
    )
    g.add_argument("--ckks-context", help="CKKS context (server: public, client: secret)")
    g.add_argument(
        "--dp-epsilon",
        type=float,
        default=None,
        help="distributed differential privacy (SecAgg/SecAgg+): epsilon over --dp-rounds "
        "(inf: the DP encoding without noise); --bits is the ring, e.g. 20..32",
    )
    g.add_argument("--dp-delta", type=float, default=1e-5, help="DP: delta")
    g.add_argument("--dp-clip", type=float, default=1.0, help="DP: L2 clip of each update")
    g.add_argument(
        "--dp-rounds", type=int, default=1, help="DP: rounds epsilon covers (composition)"
    )
    g.add_argument(
        "--dp-mechanism", choices=["discrete_gaussian", "skellam"], default="discrete_gaussian"
    )
    g.add_argument(
        "--dp-dropout",
        type=float,
        default=None,
        help="DP: tolerated dropout rate; fewer survivors abort the session (default: "
        f"{DEFAULT_DROPOUT_RATE:g}, and at least one client)",
    )


def dp_plan(args: argparse.Namespace) -> DPPlan | None:
    """The differential-privacy plan the ``--dp-*`` options describe (``None`` without
    ``--dp-epsilon``).

    Raises
    ------
    ConfigError
        With CKKS, without ``--dim``, or if the target cannot be met (the reason says
        why, e.g. the ring bits that would suffice).
    """
    from securefl.errors import ConfigError

    if args.dp_epsilon is None:
        return None
    if args.protocol not in ("secagg", "secagg+"):
        raise ConfigError("differential privacy needs --protocol secagg or secagg+, not CKKS")
    if args.dim is None:
        raise ConfigError("--dim is required")
    from securefl.dp import DPConfig, calibrate

    dropout = args.dp_dropout
    if dropout is None:
        # The noise is calibrated for the survivors: planning for none lost would make
        # the first dropout abort the session.
        dropout = planned_dropout_rate(args.clients)
    config = DPConfig(
        epsilon=args.dp_epsilon,
        delta=args.dp_delta,
        clip=args.dp_clip,
        num_clients=args.clients,
        rounds=args.dp_rounds,
        dropout_rate=dropout,
        bits=args.bits,
        mechanism=args.dp_mechanism,
    )
    return calibrate(config, args.dim)


def secagg_config(args: argparse.Namespace, plan: DPPlan | None = None) -> SecAggConfig:
    """The SecAgg configuration the session options describe; with a DP ``plan``, the
    plan's ring-input configuration with the same graph and threshold."""
    from securefl.errors import ConfigError

    if args.dim is None:
        raise ConfigError("--dim is required")
    if plan is None:
        return _secagg_config(args, args.dim)
    from securefl import dp

    base = _secagg_config(args, plan.padded_dimension)
    config: SecAggConfig = dp.secagg_config(
        plan,
        threshold=base.threshold,
        graph=base.graph,
        degree=base.degree,
        max_weight=base.max_weight,
        authenticated=base.authenticated,
        corruption_rate=base.corruption_rate,
        security_bits=base.security_bits,
    )
    return config


def _secagg_config(args: argparse.Namespace, dimension: int) -> SecAggConfig:
    from securefl.errors import ConfigError
    from securefl.secagg.defaults import default_config

    n = args.clients
    if n < 3 and args.threshold is None:
        raise ConfigError(
            f"--clients {n} is too few for SecAgg: t >= 2 shares of each client's "
            f"secrets must be held by its n - 1 = {n - 1} peer{'' if n == 2 else 's'}, so "
            "it would tolerate no dropout either; the smallest setting that tolerates one "
            "is --clients 4"
        )
    return default_config(
        n,
        dimension,
        complete=args.protocol != "secagg+",
        threshold=args.threshold,
        degree=args.degree,
        dropout_rate=args.dropout_rate,
        corruption_rate=float(args.corruption_rate),
        authenticated=args.authenticated,
        bits=args.bits,
        clip=args.clip,
        max_weight=args.max_weight,
    )


def check_dropouts(args: argparse.Namespace, config: SecAggConfig) -> None:
    """Refuse derived parameters that do not survive one dropout.

    Parameters the operator chose (``--threshold``, ``--dropout-rate`` or
    ``--dp-dropout`` given) are run as asked, however fragile.

    Raises
    ------
    ConfigError
        If ``config`` was derived from the defaults and one dropout in some round would
        abort it; the message gives the reason and the smallest setting that would
        survive one (more clients, or a larger ``--degree``).
    """
    from securefl.errors import ConfigError
    from securefl.secagg.config import GraphKind
    from securefl.transports.service.sessions import tolerated_dropouts

    explicit = (args.threshold, args.dropout_rate, getattr(args, "dp_dropout", None))
    if any(v is not None for v in explicit) or tolerated_dropouts(config) >= 1:
        return
    n, k, t = config.num_clients, config.neighbourhood_size, config.threshold
    graph = "complete graph" if config.graph is GraphKind.COMPLETE else f"Harary graph, degree {k}"
    if k - t < 1:
        why = (
            f"one lost client leaves each of its neighbours {k - 1} share holder"
            f"{'' if k - 1 == 1 else 's'}, fewer than t = {t} (the least the threshold "
            f"rules allow here)"
        )
    else:
        why = f"the noise is calibrated for all {config.min_survivors} clients surviving"
    fix = _smallest_tolerant(args)
    raise ConfigError(
        f"the parameters derived for --clients {n} ({graph}, t = {t}) tolerate no dropout: "
        f"{why}; the smallest setting that tolerates one is {fix} (or give --threshold "
        f"{t} to run without tolerating any)"
    )


def _tolerates_one(args: argparse.Namespace) -> bool:
    from securefl.errors import ConfigError
    from securefl.transports.service.sessions import tolerated_dropouts

    try:
        return tolerated_dropouts(secagg_config(args, dp_plan(args))) >= 1
    except ConfigError:
        return False


def _smallest_tolerant(args: argparse.Namespace) -> str:
    """The smallest change of ``args`` whose derived parameters survive one dropout."""
    n = args.clients
    if args.protocol == "secagg+" and args.degree is not None and args.degree < n - 1:
        for degree in range(args.degree + 2, n - 1, 2):
            if _tolerates_one(argparse.Namespace(**{**vars(args), "degree": degree})):
                return f"--degree {degree}"
    for more in range(n + 1, n + 11):
        if _tolerates_one(argparse.Namespace(**{**vars(args), "clients": more})):
            return f"--clients {more}"
    return "more clients"


def quiet_grpc(verbose: bool) -> None:
    """Silence gRPC's C core (its own log lines on stderr: handshake failures, "Invalid
    private key", bind errors) unless ``verbose``; the service reports every failure
    itself. Takes effect only before grpc is imported. ``--verbose`` is the switch: a
    GRPC_VERBOSITY inherited from the environment is overridden, because libraries set
    it for their own processes (importing Flower sets it to "error", and a child
    process of such a program would print gRPC's lines again)."""
    os.environ["GRPC_VERBOSITY"] = "DEBUG" if verbose else "NONE"
    if not verbose:
        os.environ["GRPC_TRACE"] = ""


def client_policy(args: argparse.Namespace) -> ClientPolicy:
    """The client policy that ``securefl join``'s policy options describe
    (``--min-clients`` is its ``min_contributors``).

    Raises
    ------
    ConfigError
        If an option is out of range.
    """
    from securefl.transports.service.policy import ClientPolicy

    return ClientPolicy(
        min_threshold=args.min_threshold,
        min_corruption_rate=args.min_corruption_rate,
        min_security_bits=args.min_security_bits,
        require_authenticated=args.require_authenticated,
        max_dimension=args.max_dim,
        min_survivors=args.min_survivors,
        min_contributors=args.min_clients,
    )


def _pki(args: argparse.Namespace, name: str, default: str | None) -> str | None:
    explicit: str | None = getattr(args, name)
    if explicit is not None or args.pki is None or default is None:
        return explicit
    return str(Path(args.pki) / default)


def _enrollment(path: str | None) -> dict[int, bytes]:
    from securefl.errors import ConfigError

    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text())
        return {int(k): bytes.fromhex(v) for k, v in data["clients"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"cannot read the enrollment file {path}: {exc}") from None


def seats(enrolled: dict[int, bytes], num_clients: int) -> dict[int, bytes]:
    """The enrolled ids (and identity keys) that have a seat in a session of
    ``num_clients`` clients, ids 0 .. num_clients - 1.

    Raises
    ------
    ConfigError
        If the enrollment is not empty but names none of those ids.
    """
    from securefl.errors import ConfigError

    # An id beyond the session's seats would be admitted and counted towards the
    # session's quorum, then refused by the protocol's state machine.
    kept = {i: k for i, k in enrolled.items() if 0 <= i < num_clients}
    if enrolled and not kept:
        raise ConfigError(f"the enrollment names no client id below --clients {num_clients}")
    return kept


def _init_pki(args: argparse.Namespace) -> int:
    from securefl.transports.service.tls import write_pki

    hosts = [h.strip() for h in args.pki_hosts.split(",") if h.strip()]
    out = write_pki(args.init_pki, range(args.clients), hosts=hosts)
    if args.protocol == "ckks":
        from securefl.ckks.keys import ClientContext

        ctx = ClientContext.generate()
        (out / "ckks-server.ctx").write_bytes(ctx.server_bytes())
        secret = out / "ckks-client.ctx"
        secret.touch(mode=0o600)
        secret.write_bytes(ctx.to_bytes())
    print(f"wrote a test PKI for clients 0..{args.clients - 1} to {out}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    quiet_grpc(args.verbose)  # before anything imports grpc
    from securefl.errors import ConfigError, SecureFLError

    if args.init_pki:
        return _init_pki(args)
    # The server's own log: whom it waits for, who dropped out and how, refusals.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("securefl serve: %(message)s"))
    service_log = logging.getLogger("securefl.transports.service")
    service_log.addHandler(handler)
    service_log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return _run_server(args)
    except (ConfigError, SecureFLError, OSError) as exc:
        print(f"securefl serve: error: {exc}", file=sys.stderr)
        return 2


def _run_server(args: argparse.Namespace) -> int:
    from securefl.errors import ConfigError
    from securefl.transports.service.server import AggregationServer, ServiceOptions
    from securefl.transports.service.sessions import CKKSSession, SecAggSession
    from securefl.transports.service.tls import ServerTLS

    cert, key = _pki(args, "cert", "server.pem"), _pki(args, "key", "server.key")
    client_ca = None if args.no_mutual_tls else _pki(args, "client_ca", "ca.pem")
    if cert is None or key is None:
        raise ConfigError("the server needs --cert and --key (or --pki)")
    tls = ServerTLS.from_files(cert, key, client_ca)
    enrolled = _enrollment(_pki(args, "enrollment", "enrollment.json"))
    session: SecAggSession | CKKSSession
    if args.protocol == "ckks":
        from securefl.ckks.keys import ServerContext

        dp_plan(args)  # refuses --dp-epsilon with CKKS
        context = _pki(args, "ckks_context", "ckks-server.ctx")
        if context is None or args.dim is None:
            raise ConfigError("CKKS needs --ckks-context (the public context) and --dim")
        session = CKKSSession(
            ServerContext.from_bytes(Path(context).read_bytes()),
            args.clients,
            args.dim,
            args.min_clients,
        )
    else:
        plan = dp_plan(args)
        config = secagg_config(args, plan)
        check_dropouts(args, config)
        keys = seats(enrolled, config.num_clients)
        session = SecAggSession(config, keys if config.authenticated else None, dp=plan)
    ids = sorted(seats(enrolled, session.num_clients)) if enrolled else None
    options = ServiceOptions(
        round_timeout=args.round_timeout,
        join_timeout=args.join_timeout,
        idle_timeout=args.idle_timeout or None,
    )
    server = AggregationServer(session, tls, enrolled=ids, options=options, address=args.address)
    if args.port_file:
        Path(args.port_file).write_text(f"{server.port}\n")
    mutual = "mutual TLS" if tls.client_ca is not None else "server-side TLS only"
    print(
        f"securefl serve: listening on {server.address} ({mutual}), {args.rounds or 'unlimited'} "
        f"session(s); round timeout {args.round_timeout:g} s, join timeout "
        f"{args.join_timeout:g} s",
        flush=True,
    )
    print(f"securefl serve: {session.describe()}", flush=True)
    if isinstance(session, SecAggSession) and session.dp is not None:
        print(f"securefl serve: differential privacy: {session.dp.describe()}", flush=True)
    records: list[dict[str, Any]] = []

    def report(outcome: SessionOutcome) -> None:
        line = (
            f"session {outcome.session}: {outcome.stage.value}, "
            f"{len(outcome.contributors)} of {len(outcome.members)} clients contributed, "
            f"{outcome.closed - outcome.started:.3f} s"
        )
        if outcome.abort_reason:
            line += f" ({outcome.abort_reason})"
        print(line, flush=True)
        records.append(
            {
                "session": outcome.session,
                "stage": outcome.stage.value,
                "members": list(outcome.members),
                "contributors": list(outcome.contributors),
                "abort_reason": outcome.abort_reason,
                "seconds": outcome.closed - outcome.started,
                "round_seconds": outcome.round_seconds,
                "departures": {str(c): how for c, how in sorted(outcome.departures.items())},
                "rejections": [f"{r.sender}: {r.reason}" for r in outcome.rejections],
            }
        )
        if args.json:
            Path(args.json).write_text(json.dumps(records, indent=2) + "\n")

    try:
        outcomes = server.run(args.rounds or None, on_outcome=report)
    except KeyboardInterrupt:
        server.stop()
        return 130
    if server.stop_reason is not None:
        done = (
            f"after {len(outcomes)} of {args.rounds}" if args.rounds else f"after {len(outcomes)}"
        )
        print(
            f"securefl serve: stopping {done} sessions: {server.stop_reason}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    completed = [o for o in outcomes if o.stage.value == "Completed"]
    return 0 if outcomes and len(completed) == len(outcomes) else 1


def _join(args: argparse.Namespace) -> int:
    quiet_grpc(args.verbose)  # before anything imports grpc
    from securefl.errors import ConfigError, ProtocolAbort, ServiceError
    from securefl.transports.service.policy import PolicyError

    try:
        return _run_client(args)
    except PolicyError as exc:
        print(f"securefl join: refused by this client's policy: {exc}", file=sys.stderr)
        return 2
    except ProtocolAbort as exc:
        print(f"securefl join: aborted: {exc.reason}", file=sys.stderr)
        return EXIT_ABORTED
    except ServiceError as exc:
        print(f"securefl join: service error: {exc}", file=sys.stderr)
        return EXIT_SERVICE
    except (ConfigError, ValueError, TypeError, OSError) as exc:
        print(f"securefl join: error: {exc}", file=sys.stderr)
        return 2


def _run_client(args: argparse.Namespace) -> int:
    import numpy as np
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from securefl.errors import ConfigError
    from securefl.transports.service.client import AggregationClient
    from securefl.transports.service.tls import ClientTLS

    cid = args.id
    ca = _pki(args, "ca", "ca.pem")
    if ca is None:
        raise ConfigError("the client needs --ca (or --pki)")
    tls = ClientTLS.from_files(
        ca, _pki(args, "cert", f"client-{cid}.pem"), _pki(args, "key", f"client-{cid}.key")
    )
    kwargs: dict[str, Any] = {"policy": client_policy(args)}
    if args.protocol == "ckks":
        from securefl.ckks.keys import ClientContext

        dp_plan(args)  # refuses --dp-epsilon with CKKS
        context = _pki(args, "ckks_context", "ckks-client.ctx")
        if context is None:
            raise ConfigError("CKKS needs --ckks-context (the clients' secret context)")
        kwargs["ckks_context"] = ClientContext.from_bytes(Path(context).read_bytes())
    else:
        plan = dp_plan(args)
        config = secagg_config(args, plan)
        check_dropouts(args, config)
        kwargs["config"] = config
        kwargs["dp"] = plan
        if config.authenticated:
            key_path = _pki(args, "identity_key", f"client-{cid}.ed25519")
            if key_path is None:
                raise ConfigError("authenticated mode needs --identity-key (or --pki)")
            raw = bytes.fromhex(Path(key_path).read_text().strip())
            kwargs["identity_key"] = Ed25519PrivateKey.from_private_bytes(raw)
            kwargs["identity_public_keys"] = _enrollment(
                _pki(args, "enrollment", "enrollment.json")
            )
    # Imported modules and keys live until exit: freezing them keeps the cyclic garbage
    # collector, which gRPC's allocations trigger often, from traversing them each time.
    gc.freeze()
    with AggregationClient(
        args.server,
        cid,
        tls,
        timeout=args.timeout,
        join_timeout=args.join_timeout,
        server_name=args.server_name,
        threads=args.threads,
        progress=lambda text: print(f"client {cid}: {text}", flush=True),
        **kwargs,
    ) as client:
        for r in range(1, args.rounds + 1):
            update = np.load(args.update.format(round=r), allow_pickle=False)
            result = client.aggregate(update, args.weight)
            print(
                f"client {cid}: session {result.session}: mean of {len(result.contributors)} "
                f"clients, total weight {result.total_weight}",
                flush=True,
            )
            if args.out:
                np.save(args.out.format(round=r), result.weighted_mean, allow_pickle=False)
    return 0
