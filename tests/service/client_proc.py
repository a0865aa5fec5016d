"""A hospital client in its own process, for the service tests.

Usage: python client_proc.py SPEC_JSON

Runs ``rounds`` sessions through :class:`AggregationClient` with deterministic updates
(:func:`update_for`) and prints one JSON line per session (or per error) on stdout.
Test hooks: ``die_at`` = [session, stage] kills this process with SIGKILL when the
server's message for that stage arrives (before it answers); ``stall_at`` sleeps there
instead, holding the connection open without answering; ``stop_at`` stops this process
there with SIGSTOP (a hung machine: the connection stays open, nothing answers, until
the test sends SIGCONT). ``first_round`` numbers the sessions of a restarted client (its
updates are those of training rounds first_round, first_round + 1, ...). ``dp_plan`` (a
pickled ``DPPlan``) with ``secagg`` (other SecAggConfig fields) runs distributed DP.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import numpy as np


def update_for(seed: int, client: int, round_: int, d: int) -> tuple[np.ndarray, int]:
    """Client ``client``'s update and weight in training round ``round_`` (test data)."""
    data = np.random.default_rng([seed, client, round_])
    return data.uniform(-1.2, 1.2, d), int(data.integers(1, 11))


def main() -> int:
    from securefl.errors import ProtocolAbort, ServiceError
    from securefl.secagg.config import SecAggConfig
    from securefl.transports.service import AggregationClient, ClientTLS

    spec = json.loads(sys.argv[1])
    cid, pki = spec["id"], spec["pki"]
    tls = ClientTLS.from_files(
        f"{pki}/ca.pem", f"{pki}/client-{cid}.pem", f"{pki}/client-{cid}.key"
    )
    kwargs: dict = {}
    if spec.get("ckks"):
        from securefl.ckks.keys import ClientContext

        with open(f"{pki}/ckks-client.ctx", "rb") as f:
            kwargs["ckks_context"] = ClientContext.from_bytes(f.read())
        d = spec["dim"]
    elif spec.get("dp_plan"):
        # Distributed DP: the test's calibrated plan (pickled: calibrating in every
        # process would cost a second each), and its ring-input SecAgg config.
        import pickle

        from securefl.dp import secagg_config

        with open(spec["dp_plan"], "rb") as f:
            plan = pickle.load(f)
        d = plan.dimension
        kwargs["dp"] = plan
        kwargs["config"] = secagg_config(plan, **spec.get("secagg", {}))
    else:
        config = SecAggConfig.from_bytes(bytes.fromhex(spec["config"]))
        kwargs["config"] = config
        d = config.dimension
        if config.authenticated:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            with open(f"{pki}/client-{cid}.ed25519") as f:
                kwargs["identity_key"] = Ed25519PrivateKey.from_private_bytes(
                    bytes.fromhex(f.read().strip())
                )
            with open(f"{pki}/enrollment.json") as f:
                enrolled = json.load(f)["clients"]
            kwargs["identity_public_keys"] = {int(k): bytes.fromhex(v) for k, v in enrolled.items()}
    die_at = tuple(spec.get("die_at") or ())
    stall_at = tuple(spec.get("stall_at") or ())
    stop_at = tuple(spec.get("stop_at") or ())

    def progress(text: str) -> None:
        print(json.dumps({"progress": text}), flush=True)
        where = tuple(text.replace("session ", "").split(": "))
        if where == tuple(str(x) for x in die_at):
            os.kill(os.getpid(), signal.SIGKILL)
        if where == tuple(str(x) for x in stall_at):
            time.sleep(3600)
        if where == tuple(str(x) for x in stop_at):
            os.kill(os.getpid(), signal.SIGSTOP)

    client = AggregationClient(
        spec["target"], cid, tls, timeout=spec.get("timeout", 20.0), progress=progress, **kwargs
    )
    first = spec.get("first_round", 1)
    for r in range(first, first + spec.get("rounds", 1)):
        update, weight = update_for(spec.get("seed", 0), cid, r, d)
        try:
            result = client.aggregate(update, weight)
        except (ProtocolAbort, ServiceError) as exc:
            code = getattr(exc, "code", None)
            print(json.dumps({"error": type(exc).__name__, "message": str(exc), "code": code}))
            return 3
        np.save(f"{spec['out']}/mean-{cid}-{r}.npy", result.weighted_mean)
        record = {
            "round": r,
            "session": result.session,
            "contributors": list(result.contributors),
            "total_weight": result.total_weight,
        }
        print(json.dumps(record), flush=True)
    client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
