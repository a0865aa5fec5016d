"""What `make demo` runs until the training demo lands: one secure aggregation round.

Simulated hospitals hold model updates (synthetic data) and example counts. They run a
full SecAgg+ session (Bell et al., CCS 2020) through the in-memory transport: keys
advertised and shared, updates quantized and masked, one hospital vanishing after
sharing its keys, the server unmasking only the weighted mean. The demo prints what
each phase cost and how close the secure mean is to the plain one.
"""

from __future__ import annotations

import numpy as np

from securefl.secagg.config import GraphKind, SecAggConfig
from securefl.secagg.messages import Stage
from securefl.transports.inmemory import run_session


def run(*, clients: int = 8, dim: int = 1_000_000, bits: int = 32, clip: float = 1.0) -> int:
    if clients < 3:
        # t >= 2 shares need two neighbours: secure aggregation starts at 3 clients.
        raise SystemExit("securefl round: needs at least 3 clients (t >= 2 needs 2 neighbours)")
    degree = min(clients - 1, 6)
    graph = GraphKind.HARARY if degree < clients - 1 else GraphKind.COMPLETE
    # One hospital vanishes when every neighbourhood keeps t after losing one; with 3
    # clients (t = 2 of 2 neighbours) nobody can.
    vanishes = degree - (degree // 2 + 1) >= 1
    # The total weight n W must fit the ring: a narrow ring gets smaller weights.
    max_weight = max(1, min(1000, (2**bits - 1) // clients))
    config = SecAggConfig(
        num_clients=clients,
        threshold=degree // 2 + 1,
        dimension=dim,
        bits=bits,
        clip=clip,
        max_weight=max_weight,
        graph=graph,
        degree=degree if graph is GraphKind.HARARY else None,
    )
    fp = config.fixed_point
    print(
        f"securefl secure aggregation demo: {clients} hospitals, {dim:,} parameters, "
        f"{'SecAgg+ k=' + str(degree) if graph is GraphKind.HARARY else 'SecAgg'}, "
        f"t={config.threshold}, ring Z_2^{bits}, clip {clip}, precision 2^-{fp.frac_bits}"
    )
    # Synthetic "model updates" and example counts: data, not randomness for masks.
    data_rng = np.random.default_rng(2026)
    updates = [data_rng.normal(0.0, 0.1, dim).astype(np.float32) for _ in range(clients)]
    weights = [int(w) for w in data_rng.integers(1, max_weight + 1, clients)]
    vanished = clients - 1
    dropouts = {vanished: Stage.MASKED_INPUT_COLLECTION} if vanishes else {}
    report = run_session(config, updates, weights, dropouts=dropouts)
    if report.result is None:
        print(f"FAILED: the session aborted: {report.abort_reason}")
        return 1
    result = report.result
    survivors = result.contributors
    plain = np.zeros(dim)
    for i in survivors:
        plain += weights[i] * np.clip(updates[i].astype(np.float64), -clip, clip)
    plain /= sum(weights[i] for i in survivors)
    err = float(np.max(np.abs(result.weighted_mean - plain)))
    bound = fp.precision * len(survivors) * config.max_weight / result.total_weight

    gone = f"hospital {vanished} vanished after sharing its keys" if vanishes else "nobody left"
    print(f"  {gone}; {len(survivors)} updates in the mean")
    print(f"  {'round':<24}{'client ms (each)':>18}{'server ms':>12}")
    for stage, seconds in report.server_seconds.items():
        per_client = 1e3 * report.client_seconds[stage] / clients
        print(f"  {stage.value:<24}{per_client:>18.2f}{1e3 * seconds:>12.2f}")
    upload = report.bytes_up[0]
    print(f"  upload per hospital {upload:,} bytes ({upload / (4 * dim):.3f} x a float32 update)")
    print(f"  total weight {result.total_weight} (the server learns only this sum)")
    print(f"  max |secure - plain clipped mean| {err:.3e}   (bound {bound:.3e})")
    print(f"  plain mean[:3]  = {np.array2string(plain[:3], precision=6)}")
    print(f"  secure mean[:3] = {np.array2string(result.weighted_mean[:3], precision=6)}")
    if err > bound:
        print("FAILED: the secure mean is off by more than the quantization bound")
        return 1
    print("OK: the server recovered the weighted mean and saw only masked vectors")
    return 0
