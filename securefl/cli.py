"""The ``securefl`` command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="securefl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="one secure aggregation round over synthetic hospital updates",
        description="Simulated hospitals run a full SecAgg+ session (one drops out); "
        "the server recovers only the weighted mean of their updates.",
    )
    demo.add_argument("--clients", type=int, default=8)
    demo.add_argument("--dim", type=int, default=1_000_000)
    demo.add_argument("--bits", type=int, default=32)
    demo.add_argument("--clip", type=float, default=1.0)

    bench = sub.add_parser(
        "bench",
        help="time one SecAgg / SecAgg+ round in-process",
        description="One secure aggregation round with simulated clients: seconds per "
        "phase, bytes per client, error against the plain weighted mean.",
    )
    bench.add_argument("--clients", type=int, default=50)
    bench.add_argument("--dim", type=int, default=1_000_000)
    bench.add_argument(
        "--dropout", type=float, default=0.1, help="fraction of clients that vanish after ShareKeys"
    )
    bench.add_argument("--graph", choices=["complete", "harary"], default="harary")
    bench.add_argument("--degree", type=int, default=10, help="k for the Harary graph")
    bench.add_argument("--threshold", type=int, default=None, help="t (default k // 2 + 1)")
    bench.add_argument("--bits", type=int, default=32)
    bench.add_argument(
        "--processes", type=int, default=None, help="run clients in this many worker processes"
    )
    bench.add_argument("--memory", action="store_true", help="measure server peak memory")
    bench.add_argument("--json", metavar="PATH", help="also write the results as JSON")

    args = parser.parse_args(argv)
    if args.command == "bench":
        from securefl.bench.secagg import Scenario, format_table
        from securefl.bench.secagg import run as run_bench

        outcome = run_bench(
            Scenario(
                clients=args.clients,
                dimension=args.dim,
                dropout=args.dropout,
                graph=args.graph,
                degree=args.degree,
                threshold=args.threshold,
                bits=args.bits,
                processes=args.processes,
                measure_memory=args.memory,
            )
        )
        print(format_table(outcome))
        if args.json:
            with open(args.json, "w") as f:
                f.write(outcome.to_json())
        return 0 if outcome.completed else 1
    if args.command == "demo":
        from securefl.demo.masked_sum import run

        return run(clients=args.clients, dim=args.dim, bits=args.bits, clip=args.clip)
    return 2  # pragma: no cover - argparse enforces a command
