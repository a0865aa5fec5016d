"""The ``securefl`` command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="securefl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="end-to-end masked aggregation of synthetic hospital updates",
        description="Clients agree pairwise keys (X25519 + HKDF), quantize and mask "
        "their updates with the native core; the server sums the masked vectors and "
        "recovers only the weighted mean.",
    )
    demo.add_argument("--clients", type=int, default=4)
    demo.add_argument("--dim", type=int, default=1_000_000)
    demo.add_argument("--bits", type=int, default=32)
    demo.add_argument("--clip", type=float, default=1.0)

    args = parser.parse_args(argv)
    if args.command == "demo":
        from securefl.demo.masked_sum import run

        return run(clients=args.clients, dim=args.dim, bits=args.bits, clip=args.clip)
    return 2  # pragma: no cover - argparse enforces a command
