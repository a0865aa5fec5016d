"""Run the example app in Flower's simulation engine, securely and in plaintext.

    python examples/flower_app/run.py [--rounds 5] [--plain]

Four supernodes play the four hospitals. With securefl the server sees only the
weighted mean of the updates; the script then runs plain Flower FedAvg on the same
app and prints the largest difference between the two global models (the fixed-point
rounding of the secure aggregate, propagated through training).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # silence a Ray FutureWarning

from flwr.simulation import run_simulation
from securefl_app.client_app import app as client_app
from securefl_app.server_app import make_server_app

import securefl.transports.flower  # noqa: F401  (imports flwr quietly)

BACKEND = {"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 2}}


def simulate(*, secure: bool, rounds: int = 5) -> dict[str, Any]:
    """One simulated run; returns the final arrays, per-round metrics and strategy."""
    results: dict[str, Any] = {}
    run_simulation(
        server_app=make_server_app(secure=secure, rounds=rounds, results=results),
        client_app=client_app,
        num_supernodes=4,
        backend_config=BACKEND,
    )
    return results


def max_difference(a: Any, b: Any) -> float:
    return max(float(np.max(np.abs(a[k].numpy() - b[k].numpy()))) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="FL rounds (default 5)")
    parser.add_argument("--plain", action="store_true", help="also run plaintext FedAvg")
    args = parser.parse_args()
    # Ray puts the driver's working directory first on its workers' sys.path: started
    # from a securefl checkout, they would import the source tree (without its compiled
    # core) instead of the installed package.
    os.chdir(Path(__file__).resolve().parent)
    secure = simulate(secure=True, rounds=args.rounds)
    for server_round, metrics in secure["metrics"].items():
        print(f"round {server_round}: {dict(metrics)}")
    for report in secure["strategy"].reports:
        print(
            f"round {report.server_round}: {report.stage.value}, "
            f"{len(report.contributors)} updates, total weight {report.total_weight}"
        )
    if args.plain:
        plain = simulate(secure=False, rounds=args.rounds)
        diff = max_difference(secure["arrays"], plain["arrays"])
        print(f"max |secure - plaintext| over the final weights: {diff:.3g}")


if __name__ == "__main__":
    main()
