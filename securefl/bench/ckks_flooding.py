"""``python -m securefl.bench.ckks_flooding``: the decryption flood's effect on the error.

The numbers of docs/CKKS.md ("Noise flooding at decryption") come from this script.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from securefl.ckks import wire
from securefl.ckks.client import decrypt_aggregate, encrypt_update
from securefl.ckks.flooding import (
    FLOOD_BITS,
    _decrypt,
    error_bound,
    flood_std,
    fresh_noise_std,
    slot_std,
)
from securefl.ckks.keys import CKKSParams, ClientContext
from securefl.ckks.server import Aggregator


def main(argv: list[str] | None = None) -> None:
    """Encrypt, sum and decrypt synthetic updates; print the errors with and without the
    flood, the bound, and the decryption times."""
    parser = argparse.ArgumentParser(prog="python -m securefl.bench.ckks_flooding")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--dim", type=int, default=100_000)
    parser.add_argument("--flood-bits", type=int, nargs="+", default=[FLOOD_BITS])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = np.random.default_rng(args.seed)  # synthetic updates, not key material
    context = ClientContext.generate(CKKSParams())
    weights = [int(w) for w in data.integers(10, 1000, args.clients)]
    updates = [data.normal(0, 0.01, args.dim) for _ in weights]
    server = Aggregator(context.server_context())
    start = time.perf_counter()
    for k, (u, w) in enumerate(zip(updates, weights, strict=True)):
        server.add(f"c{k}", encrypt_update(context, u, w)[0])
    encrypt_s = (time.perf_counter() - start) / len(weights)
    aggregate = server.result()
    want = sum(w * u for u, w in zip(updates, weights, strict=True))
    total = sum(weights)
    vector = wire.decode(aggregate)
    start = time.perf_counter()
    exact = _decrypt(context, vector, None).values[:-1]
    exact_s = time.perf_counter() - start
    spec = context.spec
    n = args.clients
    print(
        f"N = {spec.poly_modulus_degree}, scale 2^{math.log2(spec.scale):.0f}, {n} clients, "
        f"d = {args.dim}, weights 10..1000 (total {total}), updates N(0, 0.01); "
        f"encrypt_update + add {encrypt_s:.3f} s per client"
    )
    fresh = slot_std(spec, math.sqrt(n) * fresh_noise_std(spec))
    worst = float(np.max(np.abs(exact - want)))
    print(
        f"no flood:  sum error std {np.std(exact - want):.3g} (estimate {fresh:.3g}), "
        f"max {worst:.3g}; mean max {worst / total:.3g}; exact decryption {exact_s:.3f} s"
    )
    for bits in args.flood_bits:
        start = time.perf_counter()
        result = decrypt_aggregate(context, aggregate, flood_bits=bits)
        seconds = time.perf_counter() - start
        error = result.weighted_sum - want
        mean_error = np.max(np.abs(result.mean - want / total))
        sigma = slot_std(spec, flood_std(spec, n, bits))
        print(
            f"flood {bits:2d}: sum error std {np.std(error):.3g} (flood {sigma:.3g}), "
            f"max {np.max(np.abs(error)):.3g}, bound {error_bound(spec, n, bits):.3g}; "
            f"mean max {mean_error:.3g}; decrypt_aggregate {seconds:.3f} s"
        )


if __name__ == "__main__":
    main()
