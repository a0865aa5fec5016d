"""``securefl bench --compare``: the same scenario through other libraries, in this process.

Two baselines, each run on the scenario's own inputs right after securefl's round:

* ``flower``: Flower 1.42's SecAgg+ -- its real ``SecAggPlusWorkflow`` driving a
  ``ClientApp(mods=[secaggplus_mod])`` per client (:mod:`securefl.bench.flower`), with the same
  updates, weights, neighbourhood size k (``num_shares = k + 1``), threshold and dropped clients,
  at the same bit budget (ring 2^b, quantization range 2^(b - 10): Flower's own defaults for
  b = 32, headroom for 1024 summands). Both rounds run single-threaded in one process unless
  ``--threads`` says otherwise for securefl.
* ``tenseal``: CKKS FedAvg's server sum at FLARE's parameters, TenSEAL's own ``+`` on its
  serialized vectors (what NVIDIA FLARE's server does, :mod:`securefl.ckks.tenseal_baseline`)
  against securefl's ``ckks.Aggregator`` on the *same ciphertexts* in securefl's packed format.
  Encrypting a 1M-value vector takes about a second, so at most :data:`CKKS_DISTINCT` distinct
  client vectors are encrypted and the survivors cycle through them (the server cannot tell;
  its cost depends only on the shapes). The two sums must be bit-identical.

Ratios are ``baseline / securefl``: above 1 means securefl is faster (or smaller).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from securefl.bench.secagg import Inputs, Outcome, Scenario, inputs
from securefl.errors import BackendUnavailable

__all__ = ["BASELINES", "CKKS_DISTINCT", "Comparison", "compare", "format_comparisons"]

BASELINES = ("flower", "tenseal")
CKKS_DISTINCT = 4


@dataclass
class Comparison:
    """securefl against one baseline on one scenario."""

    baseline: str
    what: str
    securefl_seconds: float
    baseline_seconds: float
    securefl_upload_bytes: int
    baseline_upload_bytes: int
    securefl_max_error: float | None = None
    baseline_max_error: float | None = None
    versions: dict[str, str] = field(default_factory=dict)
    notes: str = ""

    @property
    def speedup(self) -> float:
        return self.baseline_seconds / self.securefl_seconds

    @property
    def upload_ratio(self) -> float:
        return self.baseline_upload_bytes / self.securefl_upload_bytes

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["speedup"] = self.speedup
        out["upload_ratio"] = self.upload_ratio
        return out


@contextlib.contextmanager
def _quiet_flower() -> Iterator[None]:
    """Flower logs every stage at INFO; the comparison prints its own summary."""
    logger = logging.getLogger("flwr")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def compare(
    scenario: Scenario, outcome: Outcome, baselines: list[str], data: Inputs | None = None
) -> list[Comparison]:
    """Run ``baselines`` on ``scenario`` and attach the results to ``outcome``.

    Parameters
    ----------
    scenario, outcome:
        The scenario and securefl's measured round (from :func:`securefl.bench.secagg.run`).
    data:
        The scenario's inputs if the caller holds them (else generated again, identically).
    baselines:
        Names from :data:`BASELINES`.

    Raises
    ------
    ValueError
        For an unknown baseline name, or ``flower`` on a CKKS scenario (Flower's SecAgg+
        is compared with securefl's SecAgg round).
    BackendUnavailable
        If Flower or TenSEAL is not installed (the ``bench`` extra installs both).
    """
    unknown = set(baselines) - set(BASELINES)
    if unknown:
        raise ValueError(f"unknown baselines {sorted(unknown)}; expected some of {BASELINES}")
    if "flower" in baselines and scenario.protocol == "ckks":
        raise ValueError("--compare flower compares SecAgg rounds: use --protocol secagg(+)")
    data = inputs(scenario) if data is None else data
    results = []
    for name in baselines:
        if name == "flower":
            _progress("comparing with Flower's SecAgg+ (same inputs)...")
            results.append(_flower(scenario, outcome, data))
        else:
            _progress("comparing with TenSEAL's CKKS aggregation (same inputs)...")
            results.append(_tenseal(scenario, data))
    outcome.comparisons = [c.to_dict() for c in results]
    return results


def _flower(scenario: Scenario, outcome: Outcome, data: Inputs) -> Comparison:
    try:
        from securefl.bench import flower
    except ImportError as exc:
        raise BackendUnavailable(
            f"--compare flower needs flwr==1.42.0: pip install 'securefl[bench]' ({exc})"
        ) from None
    import flwr

    config = scenario.config()
    k = config.neighbourhood_size
    rnd = flower.flower_prepare_round(
        updates=list(data.updates),
        weights=data.weights,
        dropped=data.dropped,
        num_shares=k + 1,
        threshold=config.threshold,
        clipping_range=scenario.clip,
        quantization_range=2 ** (scenario.bits - 10),
        modulus_range=2**scenario.bits,
        max_weight=float(scenario.max_weight),
    )
    with _quiet_flower():
        t0 = time.perf_counter()
        result = flower.flower_run_round(rnd)
        seconds = time.perf_counter() - t0
    # Flower clips the *weighted* value (dq_i x_i, dq_i = n_i / W) and securefl the value,
    # so each is compared with the exact weighted mean of what it computes.
    expected, _ = flower.flower_expected_average(
        rnd.updates,
        rnd.weights,
        result.survivors,
        clipping_range=rnd.clipping_range,
        quantization_range=rnd.quantization_range,
        max_weight=rnd.max_weight,
    )
    error = float(
        max(np.max(np.abs(a - e)) for a, e in zip(result.aggregate, expected, strict=True))
    )
    uploaded: dict[int, int] = result.extra["uploaded"]
    return Comparison(
        baseline="flower",
        what=f"SecAgg+ full round, n={scenario.clients}, k={k}, t={config.threshold}",
        securefl_seconds=outcome.wall_seconds,
        baseline_seconds=seconds,
        securefl_upload_bytes=outcome.upload_bytes_per_client,
        baseline_upload_bytes=max(uploaded[i] for i in result.survivors),
        securefl_max_error=outcome.max_abs_error,
        baseline_max_error=error,
        versions={"flwr": flwr.__version__},
        notes="Flower's upload counts only the bytes values of its replies (no framing)",
    )


def _tenseal(scenario: Scenario, data: Inputs) -> Comparison:
    from securefl.ckks import Aggregator, ClientContext, ServerContext, tenseal_baseline, wire
    from securefl.ckks.tenseal_format import from_tenseal

    tenseal_version = tenseal_baseline.version()  # BackendUnavailable without the ckks extra
    context = ClientContext.generate()
    server = ServerContext.from_bytes(context.server_bytes())
    survivors = data.survivors
    distinct = survivors[:CKKS_DISTINCT]
    tenseal_msgs = [
        tenseal_baseline.encrypt_update(context, data.updates[i], data.weights[i]) for i in distinct
    ]
    ours = [wire.encode(from_tenseal(m, context.spec), "packed") for m in tenseal_msgs]
    order = [k % len(distinct) for k in range(len(survivors))]
    arrivals = [tenseal_msgs[k] for k in order]

    t0 = time.perf_counter()
    baseline_out = tenseal_baseline.server_sum(server, arrivals)
    baseline_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    aggregator = Aggregator(server)
    for slot, k in enumerate(order):
        aggregator.add(f"client-{slot}", ours[k])
    our_out = aggregator.result("packed")
    our_seconds = time.perf_counter() - t0

    theirs = from_tenseal(baseline_out, server.spec).coeffs
    if not np.array_equal(wire.decode(our_out).coeffs, theirs):
        raise RuntimeError("securefl's CKKS sum differs from TenSEAL's")
    return Comparison(
        baseline="tenseal",
        what=f"CKKS server sum of {len(survivors)} clients (FLARE's parameters)",
        securefl_seconds=our_seconds,
        baseline_seconds=baseline_seconds,
        securefl_upload_bytes=len(ours[0]),
        baseline_upload_bytes=len(tenseal_msgs[0]),
        versions={"tenseal": tenseal_version},
        notes=f"{len(distinct)} distinct ciphertext vectors cycled; sums bit-identical",
    )


def format_comparisons(results: list[Comparison]) -> str:
    """A table: seconds, upload per client and error of securefl and of each baseline."""
    lines = [
        f"{'baseline':<9}{'what':<52}{'securefl':>13}{'baseline':>13}{'ratio':>9}",
    ]
    for c in results:
        lines.append(
            f"{c.baseline:<9}{c.what:<52}{c.securefl_seconds:>12.3f}s{c.baseline_seconds:>12.3f}s"
            f"{c.speedup:>8.1f}x"
        )
        lines.append(
            f"{'':<9}{'upload per client (bytes)':<52}{c.securefl_upload_bytes:>13,}"
            f"{c.baseline_upload_bytes:>13,}{c.upload_ratio:>8.2f}x"
        )
        if c.securefl_max_error is not None and c.baseline_max_error is not None:
            lines.append(
                f"{'':<9}{'max |aggregate - exact weighted mean|':<52}"
                f"{c.securefl_max_error:>13.2e}{c.baseline_max_error:>13.2e}"
            )
        if c.notes:
            lines.append(f"{'':<9}({c.notes})")
    return "\n".join(lines)
